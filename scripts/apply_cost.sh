#!/usr/bin/env bash
# Instructions the walsender (publisher) and the apply worker (subscriber) spend per replicated
# row (callgrind), for the three shapes a row travels from and into: an ordinary table (native
# logical replication), a partition of a LIST-partitioned table (what every federated
# partition and copy is), and the same partition with pg_federation's guard triggers on the
# subscriber's copy (which apply does not fire). Plain PostgreSQL, no pg_federation loaded: the
# figures are PostgreSQL's own. Instruction counts do not move with machine noise.
#   scripts/apply_cost.sh [rows]        (default 5000; PG_BIN defaults to Debian's 15)
# Both postmasters run under valgrind --tool=callgrind (children followed); each walsender's
# and apply worker's counters are dumped before and after the rows travel (callgrind_control),
# so start-up is not counted. Both servers are stopped at the end,
# pass or fail.
set -euo pipefail
ROWS=${1:-5000}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
command -v valgrind >/dev/null || apt-get install -y -q valgrind >/dev/null
WORK=$(mktemp -d /tmp/apply_cost.XXXXXX)
chown postgres "$WORK"
as_pg() { runuser -u postgres -- "$@"; }
PUB_PORT=$((20000 + RANDOM % 20000)); SUB_PORT=$((PUB_PORT + 1))
cleanup() {
    for d in pub sub; do
        if [ -f "$WORK/$d/postmaster.pid" ]; then
            kill -9 "$(head -1 "$WORK/$d/postmaster.pid")" 2>/dev/null || true
        fi
        pkill -9 -f "valgrind.*$WORK/$d" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
for d in pub sub; do
    as_pg "$PG_BIN/initdb" -D "$WORK/$d" -A trust >/dev/null
    printf "wal_level = logical\nfsync = off\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nmax_worker_processes = 16\n" "$WORK" >> "$WORK/$d/postgresql.conf"
done
echo "port = $PUB_PORT" >> "$WORK/pub/postgresql.conf"
echo "port = $SUB_PORT" >> "$WORK/sub/postgresql.conf"
for d in pub sub; do
    (cd "$WORK" && as_pg valgrind --tool=callgrind --trace-children=yes \
        --callgrind-out-file="$WORK/cg.%p" "$PG_BIN/postgres" -D "$WORK/$d" >"$WORK/$d.log" 2>&1 &)
done
psql_pub() { as_pg "$PG_BIN/psql" -h "$WORK" -p "$PUB_PORT" -d postgres -Atq -v ON_ERROR_STOP=1 "$@"; }
psql_sub() { as_pg "$PG_BIN/psql" -h "$WORK" -p "$SUB_PORT" -d postgres -Atq -v ON_ERROR_STOP=1 "$@"; }
for _ in $(seq 1 600); do psql_pub -c "SELECT 1" >/dev/null 2>&1 && psql_sub -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.5; done
SCHEMA="
CREATE TABLE native (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), value numeric, created_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE recipe (id uuid NOT NULL DEFAULT gen_random_uuid(), value numeric, created_at timestamptz NOT NULL DEFAULT clock_timestamp(), node_name text COLLATE \"C\" NOT NULL DEFAULT 'east') PARTITION BY LIST (node_name);
CREATE TABLE recipe_east PARTITION OF recipe (PRIMARY KEY (id, node_name)) FOR VALUES IN ('east');
CREATE TABLE recipe_default PARTITION OF recipe DEFAULT;
CREATE TABLE guarded (LIKE recipe INCLUDING ALL) PARTITION BY LIST (node_name);
CREATE TABLE guarded_east PARTITION OF guarded (PRIMARY KEY (id, node_name)) FOR VALUES IN ('east');
CREATE TABLE guarded_default PARTITION OF guarded DEFAULT;"
psql_pub -c "$SCHEMA" -c "CREATE PUBLICATION p_native FOR TABLE native; CREATE PUBLICATION p_recipe FOR TABLE recipe_east; CREATE PUBLICATION p_guarded FOR TABLE guarded_east;"
psql_sub -c "$SCHEMA" -c "
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \$\$BEGIN RAISE EXCEPTION 'not here'; END\$\$;
CREATE TRIGGER guard BEFORE INSERT OR UPDATE OR DELETE ON guarded_east FOR EACH ROW EXECUTE FUNCTION refuse();
CREATE TRIGGER guard_truncate BEFORE TRUNCATE ON guarded_east FOR EACH STATEMENT EXECUTE FUNCTION refuse();"
for t in native recipe guarded; do
    psql_sub -c "CREATE SUBSCRIPTION s_$t CONNECTION 'host=127.0.0.1 port=$PUB_PORT dbname=postgres' PUBLICATION p_$t"
done
wait_for() { # what, SQL returning t when done
    for _ in $(seq 1 1200); do [ "$(psql_sub -c "$2")" = t ] && return 0; sleep 0.5; done
    echo "timed out waiting for $1" >&2; exit 1
}
wait_for "the apply workers" "SELECT count(*) = 3 FROM pg_stat_subscription WHERE pid IS NOT NULL AND relid IS NULL"
wait_for "the initial copies" "SELECT count(*) = 0 FROM pg_subscription_rel WHERE srsubstate <> 'r'"
# One warm-up row each (relation caches), then count from here.
for t in native recipe guarded; do psql_pub -c "INSERT INTO $t (value) VALUES (0)"; done
wait_for "the warm-up rows" "SELECT (SELECT count(*) FROM native) + (SELECT count(*) FROM recipe_east) + (SELECT count(*) FROM guarded_east) = 3"
declare -A pid wpid
for t in native recipe guarded; do
    pid[$t]=$(psql_sub -c "SELECT s.pid FROM pg_stat_subscription s WHERE s.subname = 's_$t' AND s.relid IS NULL")
    wpid[$t]=$(psql_pub -c "SELECT pid FROM pg_stat_replication WHERE application_name = 's_$t'")
done
dump() { # pid -> instructions since its previous dump (callgrind zeroes its counters at a dump)
    local n f
    n=$(find "$WORK" -maxdepth 1 -name "cg.$1*" | wc -l)
    as_pg callgrind_control -d "$1" >/dev/null   # as the user valgrind runs as (its vgdb pipe)
    for _ in $(seq 1 300); do
        [ "$(find "$WORK" -maxdepth 1 -name "cg.$1*" | wc -l)" -gt "$n" ] && break
        sleep 0.1   # callgrind writes the dump when the process next runs
    done
    f=$(find "$WORK" -maxdepth 1 -name "cg.$1*" -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)
    grep -m1 '^summary:' "$f" | awk '{print $2}'
}
declare -A after wafter
for t in native recipe guarded; do dump "${pid[$t]}" >/dev/null; dump "${wpid[$t]}" >/dev/null; done
# The same single-row transactions, one table after the other.
for t in native recipe guarded; do
    psql_pub -c "DO \$\$BEGIN FOR i IN 1..$ROWS LOOP INSERT INTO $t (value) VALUES (i); COMMIT; END LOOP; END\$\$"
done
wait_for "every row" "SELECT (SELECT count(*) FROM native) + (SELECT count(*) FROM recipe_east) + (SELECT count(*) FROM guarded_east) = 3 + 3 * $ROWS"
for t in native recipe guarded; do after[$t]=$(dump "${pid[$t]}"); wafter[$t]=$(dump "${wpid[$t]}"); done
echo "| path | walsender, per row | / native | apply worker, per row | / native |"
echo "|---|---:|---:|---:|---:|"
n=$(( after[native] / ROWS ))
wn=$(( wafter[native] / ROWS ))
for t in native recipe guarded; do
    v=$(( after[$t] / ROWS ))
    w=$(( wafter[$t] / ROWS ))
    case $t in
        native) label="ordinary table to ordinary table (native)" ;;
        recipe) label="partition to partition of a LIST-partitioned table" ;;
        guarded) label="the same, with pg_federation's guard triggers on the copy (not fired)" ;;
    esac
    printf '| %s | %d | %s | %d | %s |\n' "$label" "$w" "$(awk -v a="$w" -v b="$wn" 'BEGIN { printf "%.3f", a / b }')" \
        "$v" "$(awk -v a="$v" -v b="$n" 'BEGIN { printf "%.3f", a / b }')"
done
