#!/usr/bin/env bash
# Installs everything pg_federation needs to build, test and run on Debian 12, idempotently
# and without prompts: PostgreSQL 15 and its headers, sudo (cargo pgrx test uses it to run the
# test server as 'postgres'), clang for bindgen, the pinned cargo-pgrx, and `cargo pgrx init`
# against the system PostgreSQL. Sourced by scripts/test.sh and scripts/demo.sh.
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
PGRX_VERSION=$(sed -n 's/^pgrx = "=\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml")
[ -n "$PGRX_VERSION" ] || { echo "setup: could not read the pinned pgrx version from Cargo.toml" >&2; exit 1; }

say() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

packages=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-contrib sudo
          libclang-dev clang pkg-config build-essential libssl-dev iproute2 procps)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian starts a default cluster on port 5432 when postgresql-15 is installed; we never use
# it, and we leave it alone.

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
    say "installing cargo-pgrx $PGRX_VERSION (takes about 5 minutes)"
    cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked
fi

if ! grep -qs "pg$PG_MAJOR = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    say "cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
    cargo pgrx init "--pg$PG_MAJOR" "$PG_CONFIG"
fi

# install_extension [--release]: builds pg_federation and installs it into the system
# PostgreSQL (with sudo when not root).
install_extension() {
    local flags=("$@")
    [ "$(id -u)" = 0 ] || flags+=(--sudo)
    cargo pgrx install --pg-config "$PG_CONFIG" "${flags[@]}"
}
