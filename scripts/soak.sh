#!/usr/bin/env bash
# The soak (not part of scripts/test.sh): three nodes, steady writes on all three, then proof
# of convergence. Prints lag per minute and memory at start and end.
#   scripts/soak.sh [minutes]     (default 10; PG_MAJOR=18 for PostgreSQL 18)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
use_major "${PG_MAJOR:-15}"
install_extension --release >/dev/null
say "soak: ${1:-10} minutes"
cargo run --release -q -p pg_test --example soak -- "${1:-10}"
