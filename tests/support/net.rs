//! The only network addresses tests and benchmarks may use, named in one place: loopback, the
//! private ranges the harness configures inside network namespaces it creates itself (never on
//! the machine's own network), and the documentation ranges examples use for servers that do
//! not exist. `tests/example_addresses.rs` holds every address in the example repository and the
//! docs to this list; `benches/harness_net.sh` repeats the benchmark range for shell scripts.

use std::net::Ipv4Addr;

/// An IPv4 range with what it is for.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub name: &'static str,
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Range {
    pub const fn new(name: &'static str, base: [u8; 4], prefix: u8) -> Range {
        let [a, b, c, d] = base;
        Range {
            name,
            base: Ipv4Addr::new(a, b, c, d),
            prefix,
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.base) & mask
    }
}

/// The nspawn testbed's bridge network (`tests/support/nspawn.rs`), only inside its namespaces.
pub const TESTBED: Range = Range::new(
    "nspawn testbed (tests/support/nspawn.rs)",
    [10, 231, 0, 0],
    24,
);

/// The link between the reconciler's own namespace and the bastion in the ProxyJump test
/// (`tests/fleet_bastion.rs`), only inside that test's namespaces.
pub const BASTION_LINK: Range =
    Range::new("bastion link (tests/fleet_bastion.rs)", [10, 231, 1, 0], 24);

/// The SSH fleet benchmark's network (`benches/fleet_ssh.sh`, `FLEET_SSH_NET`), only inside the
/// benchmark's namespaces.
pub const BENCH_FLEET: Range = Range::new(
    "SSH fleet benchmark (benches/harness_net.sh)",
    [10, 77, 0, 0],
    24,
);

/// The 500-host benchmark's network (`benches/fleet500.sh`): a /23, as 500 hosts do not fit in
/// a /24; only inside the benchmark's namespaces.
pub const BENCH_FLEET500: Range = Range::new(
    "500-host benchmark (benches/harness_net.sh)",
    [10, 77, 2, 0],
    23,
);

/// The config-change benchmark's network (`benches/b5.sh`), only inside its namespaces.
pub const BENCH_B5: Range = Range::new(
    "config-change benchmark B5 (benches/harness_net.sh)",
    [10, 77, 4, 0],
    24,
);

/// Ranges the harness creates inside namespaces of its own.
pub const HARNESS: [Range; 5] = [TESTBED, BASTION_LINK, BENCH_FLEET, BENCH_FLEET500, BENCH_B5];

/// RFC 5737: reserved for documentation, routed nowhere. Every server that exists only on
/// paper (the example repository's non-`mock` servers, addresses in docs) uses these.
pub const DOCUMENTATION: [Range; 3] = [
    Range::new("TEST-NET-1 (RFC 5737)", [192, 0, 2, 0], 24),
    Range::new("TEST-NET-2 (RFC 5737)", [198, 51, 100, 0], 24),
    Range::new("TEST-NET-3 (RFC 5737)", [203, 0, 113, 0], 24),
];

/// RFC 2544's benchmarking range: the generated 10,000-server fleet (`benches/gen_fleet.py`),
/// which is only ever planned with `--assume-empty-hosts`.
pub const BENCHMARKING: Range = Range::new("benchmarking (RFC 2544)", [198, 18, 0, 0], 15);

pub const LOOPBACK: Range = Range::new("loopback", [127, 0, 0, 0], 8);

/// The range an address belongs to, among every range tests, benchmarks and docs may name.
pub fn allowed_range(ip: Ipv4Addr) -> Option<Range> {
    DOCUMENTATION
        .iter()
        .chain(HARNESS.iter())
        .chain([BENCHMARKING, LOOPBACK].iter())
        .find(|r| r.contains(ip))
        .copied()
}
