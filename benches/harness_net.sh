# The address ranges benchmarks may use, in one place (sourced by the bench scripts; the same
# ranges are named for tests in tests/support/net.rs, and tests/example_addresses.rs checks that
# the two agree).
# - The SSH fleet benchmark's hosts live on this /24, configured only inside network namespaces
#   the benchmark creates (never on the machine's own network).
HARNESS_BENCH_FLEET_NET=10.77.0
# - The 500-host benchmark (fleet500.sh) needs more than a /24: this /23 (10.77.2.0 to
#   10.77.3.255), again only inside the benchmark's own namespaces.
HARNESS_BENCH_FLEET500_NET=10.77.2.0/23
# - The config-change benchmark B5 (b5.sh), on a /24 of its own so that it never meets the
#   other benchmarks' namespaces.
HARNESS_BENCH_B5_NET=10.77.4
# - The generated 10,000-server fleet (gen_fleet.py) uses RFC 2544's benchmarking range,
#   198.18.0.0/15; it is only ever planned with --assume-empty-hosts, never contacted.
HARNESS_GENERATED_FLEET_RANGE=198.18.0.0/15
