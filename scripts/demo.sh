#!/usr/bin/env bash
# The pg_federation demo: builds and installs the extension, starts a local federation of
# PostgreSQL servers on this machine (east, central, west), shows each node's name, and
# leaves the servers running so you can connect with psql.
#
#   scripts/demo.sh          start the demo (stops an earlier demo first)
#   scripts/demo.sh stop     stop every demo server and remove its data
#
# Servers listen on 127.0.0.1 ports 5441 (east), 5442 (central), 5443 (west); data lives
# under $DEMO_DIR (default /tmp/pg_federation_demo). As root, servers run as 'postgres'.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-/tmp/pg_federation_demo}
NODES=(east:5441 central:5442 west:5443)
PG_BIN=/usr/lib/postgresql/${PG_MAJOR:-15}/bin

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop_all() {
    for entry in "${NODES[@]}" south:5444; do
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

source scripts/setup.sh
say "building and installing pg_federation (release)"
install_flags=()
[ "$(id -u)" = 0 ] || install_flags=(--sudo)
cargo pgrx install --release --pg-config "$PG_CONFIG" "${install_flags[@]}"

stop_all >/dev/null
mkdir -p "$DEMO_DIR"
[ "$(id -u)" = 0 ] && chown postgres: "$DEMO_DIR"

psql_on() { # port sql
    as_pg "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d postgres "${@:2}"
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
shared_preload_libraries = 'pg_federation'
CONF
    # central takes its name from a Kubernetes-style labels file; the others from the GUC.
    if [ "$name" = central ]; then
        printf 'app="hippo"\npg-cluster="%s"\n' "$name" | as_pg tee "$dir/labels" >/dev/null
        echo "federation.labels_path = '$dir/labels'" | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
    else
        echo "federation.node_name = '$name'" | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
    fi
    as_pg "$PG_BIN/pg_ctl" start -w -D "$dir/data" -l "$dir/server.log" >/dev/null
    psql_on "$port" -q -c "CREATE EXTENSION pg_federation"
}

say "starting nodes"
for entry in "${NODES[@]}"; do
    start_node "${entry%%:*}" "${entry##*:}"
    echo "started ${entry%%:*} on 127.0.0.1:${entry##*:}"
done

say "each node's name"
for entry in "${NODES[@]}"; do
    port=${entry##*:}
    echo "\$ psql -h 127.0.0.1 -p $port -U postgres -c 'SELECT federation.node_name(), federation.node_name_source()'"
    psql_on "$port" -c "SELECT federation.node_name(), federation.node_name_source()"
done

cat <<MSG

The nodes are running. Connect with:
  psql -h 127.0.0.1 -p 5441 -U postgres    # east
  psql -h 127.0.0.1 -p 5442 -U postgres    # central
  psql -h 127.0.0.1 -p 5443 -U postgres    # west
Stop them all (and remove their data) with:
  scripts/demo.sh stop
MSG
