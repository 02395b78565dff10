//! The example repository and the docs point at no real network. Every server of
//! `example-config-repo` that is not a local sandbox has documentation addresses only (RFC 5737),
//! every IPv4 address written anywhere in the example, `docs/` and `README.md` is a documentation
//! address, loopback, or one of the ranges the harness creates inside its own namespaces
//! (`tests/support/net.rs`), and the reconciler refuses to connect to a documentation address,
//! so `--profile prod` on the example fails without a packet sent.

mod support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::net::{self, Range};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every dotted quad in `text` (a run of digits and dots that parses as an IPv4 address and is
/// not part of a longer dotted run such as a version `1.2.3.4.5`), with its line number.
fn ipv4_literals(text: &str) -> Vec<(usize, Ipv4Addr)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() && (i == 0 || !is_word(bytes[i - 1])) {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
                let run = line[start..i].trim_end_matches('.');
                let followed_by_word = i < bytes.len() && is_word(bytes[i]);
                if !followed_by_word && let Ok(ip) = run.parse::<Ipv4Addr>() {
                    found.push((n + 1, ip));
                }
            } else {
                i += 1;
            }
        }
    }
    found
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-'
}

fn is_documentation(ip: Ipv4Addr) -> bool {
    net::DOCUMENTATION.iter().any(|r| r.contains(ip))
}

#[test]
fn the_scanner_finds_addresses_and_ignores_versions() {
    let found = ipv4_literals(
        "a 10.1.2.3:22 and http://192.0.2.7/x, v1.2.3.4 2.5.0-demo 1.2.3.4.5 0.0.0.0",
    );
    let ips: Vec<String> = found.iter().map(|(_, ip)| ip.to_string()).collect();
    assert_eq!(ips, ["10.1.2.3", "192.0.2.7", "0.0.0.0"]);
    assert!(Range::new("t", [10, 77, 0, 0], 24).contains("10.77.0.250".parse().unwrap()));
    assert!(!Range::new("t", [10, 77, 0, 0], 24).contains("10.78.0.1".parse().unwrap()));
    assert!(net::BENCHMARKING.contains("198.19.255.1".parse().unwrap()));
    assert!(net::allowed_range("10.41.0.11".parse().unwrap()).is_none());
    assert!(net::allowed_range("172.16.0.1".parse().unwrap()).is_none());
}

#[test]
fn every_non_sandbox_server_of_the_example_has_documentation_addresses_only() {
    let mut servers = Vec::new();
    for client in std::fs::read_dir(root().join("example-config-repo/clients")).unwrap() {
        let dir = client.unwrap().path().join("servers");
        for file in std::fs::read_dir(&dir).unwrap() {
            servers.push(file.unwrap().path());
        }
    }
    assert!(servers.len() >= 10, "found only {servers:?}");
    let mut problems = Vec::new();
    let mut remote = 0;
    for file in &servers {
        let text = std::fs::read_to_string(file).unwrap();
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let local = doc["agent"]["transport"] == "local";
        let mut addresses: Vec<&str> = doc["ip_addresses"]
            .as_array()
            .map(|a| a.iter().filter_map(|a| a["address"].as_str()).collect())
            .unwrap_or_default();
        addresses.extend(doc["agent"]["ssh"]["address"].as_str());
        if !local {
            remote += 1;
            assert!(!addresses.is_empty(), "{} has no address", file.display());
        }
        for address in addresses {
            let ok = match address.parse::<Ipv4Addr>() {
                Ok(ip) => is_documentation(ip) || (local && net::LOOPBACK.contains(ip)),
                // A name must be one reserved for documentation (RFC 2606).
                Err(_) => [
                    ".example",
                    ".example.net",
                    ".example.com",
                    ".example.org",
                    ".invalid",
                    ".test",
                ]
                .iter()
                .any(|suffix| address.ends_with(suffix)),
            };
            if !ok {
                problems.push(format!("{}: {address}", file.display()));
            }
        }
    }
    assert!(
        remote >= 8,
        "expected the example's staging/prod/dev servers, found {remote}"
    );
    assert!(
        problems.is_empty(),
        "servers that exist only on paper must use RFC 5737 addresses (192.0.2.0/24, \
         198.51.100.0/24, 203.0.113.0/24) or RFC 2606 names:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_address_in_the_example_docs_and_readme_is_documentation_loopback_or_the_harness() {
    let mut files = vec![root().join("README.md")];
    files_under(&root().join("example-config-repo"), &mut files);
    files_under(&root().join("docs"), &mut files);
    let mut problems = Vec::new();
    let mut seen = 0;
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue; // binary files (keys, archives) hold no written addresses
        };
        for (line, ip) in ipv4_literals(&text) {
            seen += 1;
            let ok = ip.is_unspecified()
                || is_documentation(ip)
                || net::LOOPBACK.contains(ip)
                || net::HARNESS.iter().any(|r| r.contains(ip));
            if !ok {
                problems.push(format!(
                    "{}:{line}: {ip}",
                    file.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        seen > 20,
        "the scan found only {seen} addresses: is it reading the files?"
    );
    assert!(
        problems.is_empty(),
        "addresses outside the documentation ranges, loopback and the harness ranges \
         (tests/support/net.rs):\n{}",
        problems.join("\n")
    );
}

#[test]
fn tests_benchmarks_and_scripts_name_no_address_outside_the_allowed_ranges() {
    // The example's paper servers are never a target: no test, benchmark or script names one,
    // and every other address they name is one of the ranges in tests/support/net.rs.
    let mut files = Vec::new();
    for dir in ["tests", "benches", "scripts"] {
        files_under(&root().join(dir), &mut files);
    }
    let mut problems = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root()).unwrap();
        // Fixtures are validated and planned, never contacted (nothing in them is a local or
        // ssh target a test reaches); this file names bad addresses on purpose.
        if rel.starts_with("tests/fixtures") || rel == Path::new("tests/example_addresses.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (line, ip) in ipv4_literals(&text) {
            if !(ip.is_unspecified() || net::allowed_range(ip).is_some()) {
                problems.push(format!("{}:{line}: {ip}", rel.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "addresses outside tests/support/net.rs:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_shell_benchmarks_name_the_same_ranges_as_the_test_support() {
    let text = std::fs::read_to_string(root().join("benches/harness_net.sh")).unwrap();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing from benches/harness_net.sh"))
            .to_string()
    };
    let [a, b, c, _] = net::BENCH_FLEET.base.octets();
    assert_eq!(value("HARNESS_BENCH_FLEET_NET"), format!("{a}.{b}.{c}"));
    assert_eq!(net::BENCH_FLEET.prefix, 24);
    assert_eq!(
        value("HARNESS_BENCH_FLEET500_NET"),
        format!(
            "{}/{}",
            net::BENCH_FLEET500.base,
            net::BENCH_FLEET500.prefix
        )
    );
    let [a, b, c, _] = net::BENCH_B5.base.octets();
    assert_eq!(value("HARNESS_BENCH_B5_NET"), format!("{a}.{b}.{c}"));
    assert_eq!(net::BENCH_B5.prefix, 24);
    assert_eq!(
        value("HARNESS_GENERATED_FLEET_RANGE"),
        format!("{}/{}", net::BENCHMARKING.base, net::BENCHMARKING.prefix)
    );
}

#[test]
fn the_examples_prod_profile_is_refused_before_any_connection() {
    // One mistaken flag away from the demo: --profile prod without --assume-empty-hosts. Every
    // ssh host is refused as a documentation address, with a hint, and the run fails.
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(support::clarity_bin())
        .args([
            "--repo",
            root().join("example-config-repo").to_str().unwrap(),
        ])
        .args(["--profile", "prod", "--dry-run", "--allow-unreachable"])
        .args(["--work-dir", work.path().to_str().unwrap()])
        .env("NO_COLOR", "1")
        .env_remove("CLARITY_AGE_IDENTITY")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("is a documentation address"), "{text}");
    assert!(text.contains("--assume-empty-hosts"), "{text}");
    assert!(
        !text.contains("cannot connect"),
        "a connection was attempted:\n{text}"
    );
}

#[test]
fn the_examples_paper_profiles_plan_with_assume_empty_hosts() {
    // The documented way to look at the example's staging, prod and dev profiles: nothing is
    // contacted, every paper server gets a plan, and the run says changes are pending.
    let work = tempfile::tempdir().unwrap();
    for profile in ["dev", "staging", "prod"] {
        let out = Command::new(support::clarity_bin())
            .args([
                "--repo",
                root().join("example-config-repo").to_str().unwrap(),
            ])
            .args(["--profile", profile, "--dry-run", "--assume-empty-hosts"])
            .args(["--work-dir", work.path().to_str().unwrap()])
            .env("NO_COLOR", "1")
            .env_remove("CLARITY_AGE_IDENTITY")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{profile}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("0 unreachable, 0 failed"),
            "{profile}: {text}"
        );
        assert!(!text.contains("documentation address"), "{profile}: {text}");
    }
}
