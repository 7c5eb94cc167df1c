#!/usr/bin/env bash
# Runs every test of pg_federation on a fresh Debian 12 machine (as root or with sudo):
# installs what is missing, runs the in-database tests (cargo pgrx test), installs the
# extension into the system PostgreSQL, and runs the multi-node scenario tests (pg_test).
# Exits non-zero on any failure. Extra arguments go to the scenario tests' filter.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

say "in-database tests: cargo pgrx test pg$PG_MAJOR"
# The test server runs as 'postgres'; its data directory must be owned by that user.
pgrx_data=${TMPDIR:-/tmp}/pg_federation_pgrx_test
as_root mkdir -p "$pgrx_data"
as_root chown postgres: "$pgrx_data"
runas=()
[ "$(id -u)" = 0 ] && runas=(--runas postgres --pgdata "$pgrx_data")
cargo pgrx test "pg$PG_MAJOR" "${runas[@]}"
as_root rm -rf "$pgrx_data"

say "installing pg_federation into $(dirname "$PG_CONFIG")"
install_extension

say "multi-node scenario tests: cargo test -p pg_test"
cargo test -p pg_test -- --test-threads="${PG_TEST_THREADS:-2}" "$@"
