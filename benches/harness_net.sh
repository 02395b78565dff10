# The address ranges benchmarks may use, in one place (sourced by the bench scripts; the same
# ranges are named for tests in tests/support/net.rs, and tests/example_addresses.rs checks that
# the two agree).
# - The SSH fleet benchmark's hosts live on this /24, configured only inside network namespaces
#   the benchmark creates (never on the machine's own network).
HARNESS_BENCH_FLEET_NET=10.77.0
# - The generated 10,000-server fleet (gen_fleet.py) uses RFC 2544's benchmarking range,
#   198.18.0.0/15; it is only ever planned with --assume-empty-hosts, never contacted.
HARNESS_GENERATED_FLEET_RANGE=198.18.0.0/15
