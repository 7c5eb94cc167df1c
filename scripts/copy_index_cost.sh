#!/usr/bin/env bash
# What a join's copy spends on the primary key: 1,000,000 rows shaped like bench_join's
# (uuid, numeric, timestamptz, node text) sent from one server to another with
# COPY ... TO STDOUT | COPY ... FROM STDIN, (a) into a table with its primary key (id, node),
# as a table sync fills a copy and as bench_join's baseline COPY fills its table, and (b) into
# the same table without any index, then ADD PRIMARY KEY (a sorted build). Plain PostgreSQL,
# no pg_federation. Side by side, alternating, three runs each (BENCHMARKS.md, "Joining
# 1,000,000 rows on PostgreSQL 18: what the copy itself spends").
#   scripts/copy_index_cost.sh [rows] [runs]    (PG_MAJOR=15 or 18, default 18)
# Both servers are stopped at the end, pass or fail.
set -euo pipefail
ROWS=${1:-1000000}
RUNS=${2:-3}
cd "$(dirname "$0")/.."
source scripts/setup.sh
use_major "${PG_MAJOR:-18}" >/dev/null
WORK=$(mktemp -d /tmp/copy_index_cost.XXXXXX)
chown postgres "$WORK"
as_pg() { runuser -u postgres -- "$@"; }
SRC_PORT=$((20000 + RANDOM % 20000)); DST_PORT=$((SRC_PORT + 1))
cleanup() {
    for d in src dst; do
        [ -f "$WORK/$d/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$WORK/$d" stop -m immediate >/dev/null 2>&1
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
for d in src:$SRC_PORT dst:$DST_PORT; do
    name=${d%%:*} port=${d##*:}
    as_pg "$PG_BIN/initdb" -D "$WORK/$name" >/dev/null
    printf "port = %s\nfsync = off\nmax_wal_size = '4GB'\nwal_level = logical\nunix_socket_directories = '%s'\nlisten_addresses = ''\n" \
        "$port" "$WORK" >> "$WORK/$name/postgresql.conf"
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/$name" -l "$WORK/$name.log" -w start >/dev/null
done
export PGOPTIONS="-c client_min_messages=warning"
src() { as_pg "$PG_BIN/psql" -h "$WORK" -p "$SRC_PORT" -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
dst() { as_pg "$PG_BIN/psql" -h "$WORK" -p "$DST_PORT" -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
src -c "CREATE TABLE h AS SELECT gen_random_uuid() AS id, random()::numeric AS value, clock_timestamp() AS created_at, 'east'::text AS node FROM generate_series(1, $ROWS)" \
    -c "VACUUM ANALYZE h"
now() { date +%s.%N; }
echo "| run | (a) COPY into the table with its primary key, s | (b) COPY into it without an index, s | (b) + ADD PRIMARY KEY, s | (b total) / (a) |"
echo "|---:|---:|---:|---:|---:|"
for i in $(seq 1 "$RUNS"); do
    declare -A took=()
    for v in a b; do
        key=""; [ "$v" = a ] && key=", PRIMARY KEY (id, node)"
        dst -c "DROP TABLE IF EXISTS t" \
            -c "CREATE TABLE t (id uuid NOT NULL, value numeric, created_at timestamptz NOT NULL, node text COLLATE \"C\" NOT NULL$key)" \
            -c "CHECKPOINT"
        t0=$(now)
        src -c "COPY h TO STDOUT" | dst -c "COPY t FROM STDIN"
        t1=$(now)
        [ "$v" = b ] && dst -c "ALTER TABLE t ADD PRIMARY KEY (id, node)"
        t2=$(now)
        took[$v.copy]=$(echo "$t1 - $t0" | bc)
        took[$v.total]=$(echo "$t2 - $t0" | bc)
        [ "$(dst -c "SELECT count(*) FROM t")" = "$ROWS" ] || { echo "run $i ($v): not every row arrived" >&2; exit 1; }
    done
    printf "| %d | %.2f | %.2f | %.2f | %.2f |\n" "$i" "${took[a.total]}" "${took[b.copy]}" "${took[b.total]}" \
        "$(echo "${took[b.total]} / ${took[a.total]}" | bc -l)"
done
