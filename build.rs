//! Links pg_federation against the libpq of the PostgreSQL it is built for, and makes it load
//! that same libpq at run time.
//!
//! Why: PostgreSQL loads extension libraries with RTLD_GLOBAL, so the libpq this library
//! brings becomes the first place where every later library looks up PQ* symbols: the
//! server's walreceiver, postgres_fdw and dblink included. With Debian's libpq 15 in a
//! PostgreSQL 18 server, the walreceiver ran on libpq 15, and postgres_fdw/dblink would make
//! their connections with libpq 15 but cancel them with their own libpq 18 (PQcancelCreate
//! and friends, which 15 lacks): two libpqs working on one connection. With the server's own
//! libpq there is one version in the process. docs/postgres-versions.md has the details;
//! src/tests/libpq_tests.rs and pg_test/tests/libpq.rs check it.
//!
//! pq-sys (the libpq binding) links whatever it finds first (PQ_LIB_DIR, pkg-config,
//! pg_config on PATH), so this script works out the libpq directory of the PostgreSQL that
//! cargo-pgrx builds for (`pg_config --libdir` of the pgNN feature in pgrx's config.toml),
//! refuses to build against another one, and adds that directory to the library's run path.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PQ_LIB_DIR");
    println!("cargo:rerun-if-env-changed=PGRX_HOME");
    println!("cargo:rerun-if-env-changed=PGRX_PG_CONFIG_PATH");
    let Some(pg_config) = active_pg_config() else {
        // No pgrx configuration for this major (a plain `cargo check` on a machine without
        // `cargo pgrx init`): pgrx itself will say what is missing.
        return;
    };
    let Some(libdir) = pg_config_value(&pg_config, "--libdir") else {
        return;
    };
    if !Path::new(&libdir).join("libpq.so").exists()
        && !Path::new(&libdir).join("libpq.so.5").exists()
    {
        return; // no libpq there (a server-only install): nothing to pin
    }
    let linked = env::var("PQ_LIB_DIR").ok().or_else(system_libpq_dir);
    let same = linked
        .as_deref()
        .is_some_and(|l| canonical(l) == canonical(&libdir));
    if !same {
        panic!(
            "pg_federation must be linked against the libpq of the PostgreSQL it is built for \
             ({pg_config}: {libdir}), but pq-sys would link {}.\n\
             Set PQ_LIB_DIR to that directory, for example:\n    PQ_LIB_DIR=$({pg_config} --libdir) cargo pgrx install --pg-config {pg_config}\n\
             (scripts/setup.sh does this for the test, demo and bench scripts.)",
            linked.unwrap_or_else(|| "an unknown libpq".into())
        );
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
}

/// The pg_config of the major this build is for: PGRX_PG_CONFIG_PATH, else the `pgNN` entry
/// of pgrx's config.toml for the enabled `pgNN` feature.
fn active_pg_config() -> Option<String> {
    if let Ok(p) = env::var("PGRX_PG_CONFIG_PATH") {
        return Some(p);
    }
    let major = (13..=18).find(|m| env::var_os(format!("CARGO_FEATURE_PG{m}")).is_some())?;
    let home = env::var_os("PGRX_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgrx")))?;
    let config = home.join("config.toml");
    println!("cargo:rerun-if-changed={}", config.display());
    let text = std::fs::read_to_string(config).ok()?;
    let key = format!("pg{major}");
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

fn pg_config_value(pg_config: &str, arg: &str) -> Option<String> {
    let out = Command::new(pg_config).arg(arg).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Where pq-sys finds libpq without PQ_LIB_DIR: pkg-config first.
fn system_libpq_dir() -> Option<String> {
    let out = Command::new("pkg-config")
        .args(["--variable=libdir", "libpq"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn canonical(p: &str) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p))
}
