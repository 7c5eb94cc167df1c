//! `federation.passfile`: the replication role's password from a file that libpq itself would
//! refuse, as Kubernetes mounts a Secret (mode 0640 through the pod's fsGroup: libpq ignores a
//! password file with any group or world access, and join() fails with "no password
//! supplied").
//!
//! The file is never read into a connection string. At server start the postmaster points
//! `PGPASSFILE`, for every process it starts (backends, pg_federation's worker, the apply
//! workers of the subscriptions), at a private copy in the data directory (mode 0600, owned
//! by the server's user), and the launcher refreshes that copy within a second whenever the
//! source changes (a rotated Secret). A source that others than its owner and group may read,
//! that is not a regular file or cannot be read is refused: no copy is made from it, the log
//! says why once, and status() shows it (federation_internal.passfile_problem()). Its contents are
//! never logged or shown.

use crate::gucs;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::time::SystemTime;

/// The private copy, in the data directory.
const COPY_NAME: &str = "pg_federation.pgpass";

fn copy_path() -> Option<PathBuf> {
    // SAFETY: DataDir is set by the postmaster before any library is loaded, never freed.
    let dir = unsafe { pg_sys::DataDir };
    if dir.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string owned by the postmaster.
    let dir = unsafe { CStr::from_ptr(dir) }
        .to_string_lossy()
        .into_owned();
    Some(PathBuf::from(dir).join(COPY_NAME))
}

/// What is wrong with `path` as a password file, if anything.
fn problem_with(path: &str) -> Option<String> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return Some(format!(
                "federation.passfile \"{path}\" cannot be read: {e}"
            ))
        }
    };
    if !meta.is_file() {
        return Some(format!(
            "federation.passfile \"{path}\" is not a regular file"
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Some(format!(
            "federation.passfile \"{path}\" may be read by every user of the machine (mode {mode:04o}): make it readable by its owner and group only (0640 or 0600)"
        ));
    }
    None
}

/// In the postmaster, from _PG_init: every process it starts finds the password through the
/// private copy; the copy is made now if the file is good.
pub fn init_in_postmaster() {
    let (Some(_), Some(copy)) = (gucs::passfile(), copy_path()) else {
        return;
    };
    // SAFETY: the postmaster is single-threaded while it loads shared_preload_libraries.
    unsafe { std::env::set_var("PGPASSFILE", &copy) };
    let mut state = Refresher::default();
    state.refresh();
}

/// Keeps the private copy equal to federation.passfile (the launcher calls it every second).
#[derive(Default)]
pub struct Refresher {
    /// (path, modified, size, inode, status change) of the source last copied or refused.
    seen: Option<(String, Option<SystemTime>, u64, u64, i64)>,
}

impl Refresher {
    pub fn refresh(&mut self) {
        let (Some(source), Some(copy)) = (gucs::passfile(), copy_path()) else {
            return;
        };
        let stamp = fs::metadata(&source)
            .map(|m| {
                (
                    source.clone(),
                    m.modified().ok(),
                    m.len(),
                    m.ino(),
                    m.ctime(),
                )
            })
            .unwrap_or((source.clone(), None, 0, 0, 0));
        if self.seen.as_ref() == Some(&stamp) {
            return;
        }
        self.seen = Some(stamp);
        if let Some(p) = problem_with(&source) {
            warning!(
                "pg_federation: {p}; connections to the members use the last good copy, if any"
            );
            return;
        }
        match write_copy(&source, &copy) {
            Ok(()) => log!(
                "pg_federation: password file \"{source}\" is in use (a private copy, mode 0600)"
            ),
            Err(e) => warning!(
                "pg_federation: could not copy federation.passfile \"{source}\" to \"{}\": {e}",
                copy.display()
            ),
        }
    }
}

fn write_copy(source: &str, copy: &PathBuf) -> std::io::Result<()> {
    let contents = fs::read(source)?;
    let tmp = copy.with_extension("pgpass.tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&contents)?;
    f.sync_all()?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, copy)
}

/// For status(): what is wrong with federation.passfile now; NULL when it is fine or not set.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn passfile_problem() -> Option<String> {
    gucs::passfile().and_then(|p| problem_with(&p))
}
