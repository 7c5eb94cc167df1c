#!/usr/bin/env bash
# Runs pg_federation's benchmarks against the release build (installed first).
#   scripts/bench.sh              every benchmark
#   scripts/bench.sh node_name    one of: node_name, insert, join, operations, repair, failover, restore, status, keys, large_txn, ddl, scale
#   PG_MAJOR=18 scripts/bench.sh  on PostgreSQL 18 (default 15)
# Results are printed as Markdown tables; BENCHMARKS.md keeps them with their dates.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# What only the benchmarks use: callgrind (instruction counts), gnuplot (scripts/plot_scale.sh).
for p in valgrind gnuplot-nox; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$p" >/dev/null
done
use_major "${PG_MAJOR:-15}"
install_extension --release >/dev/null
for b in "${@:-node_name insert join operations repair failover restore status keys large_txn ddl scale}"; do
    for name in $b; do
        say "benchmark: $name"
        cargo run --release -q -p pg_test --example "bench_$name"
    done
done
