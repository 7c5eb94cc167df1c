//! Schema changes left prepared on this node (src/ddl/spread.rs): a node that changes a
//! federated table prepares the change on every member, commits itself, then commits the
//! members' prepared transactions. A member that did not hear the outcome (it restarted, the
//! link was cut, the origin crashed) keeps the prepared transaction, and with it the table's
//! locks, until this worker asks the origin what became of its transaction:
//! committed -> COMMIT PREPARED here; aborted (or the origin crashed before committing) ->
//! ROLLBACK PREPARED; still running -> ask again later.

use crate::catalog;
use crate::ddl::GID_PREFIX;
use crate::errors::FedResult;
use crate::remote::Remote;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::time::Duration;

// twophase.h, which pgrx does not bind; called through pgrx's FFI guard.
unsafe extern "C-unwind" {
    fn FinishPreparedTransaction(gid: *const std::os::raw::c_char, is_commit: bool);
}

/// A prepared change younger than this is left to its origin, which commits it right away.
const GRACE: &str = "5 seconds";

struct Orphan {
    gid: String,
    origin: String,
    xid: String,
    conninfo: Option<String>,
}

fn orphans() -> FedResult<Vec<Orphan>> {
    if !catalog::extension_installed()? {
        return Ok(vec![]);
    }
    let rows = crate::spi::rows(
        "SELECT p.gid, n.conninfo FROM pg_catalog.pg_prepared_xacts p
         LEFT JOIN federation.node n ON n.node_name = split_part(p.gid, ':', 2)
         WHERE p.gid LIKE $1 AND p.database = current_database()
           AND p.prepared < pg_catalog.now() - $2::interval",
        &[format!("{GID_PREFIX}%").as_str().into(), GRACE.into()],
        |r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?)),
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|(gid, conninfo)| {
            let rest = gid.strip_prefix(GID_PREFIX)?;
            let (origin, xid) = rest.rsplit_once(':')?;
            Some(Orphan {
                gid: gid.clone(),
                origin: origin.to_string(),
                xid: xid.to_string(),
                conninfo,
            })
        })
        .collect())
}

/// One pass: resolves what can be resolved; never raises.
pub fn resolve_orphans() {
    let found = BackgroundWorker::transaction(orphans);
    let list = match found {
        Ok(l) => l,
        Err(e) => {
            warning!("pg_federation worker: reading prepared schema changes: {e}");
            return;
        }
    };
    for o in list {
        let Some(conninfo) = o.conninfo.clone() else {
            warning!(
                "pg_federation: schema change {} is prepared here but node \"{}\" is not a member; resolve it by hand (COMMIT PREPARED or ROLLBACK PREPARED; docs/migrations.md)",
                o.gid,
                o.origin
            );
            continue;
        };
        let what = format!("node \"{}\"", o.origin);
        let status =
            Remote::connect_within(&conninfo, &what, Duration::from_secs(3)).and_then(|mut r| {
                r.scalar(
                    "SELECT pg_catalog.pg_xact_status($1::xid8)",
                    &[Some(&o.xid)],
                )
            });
        let commit = match status {
            Ok(Some(s)) if s == "committed" => true,
            Ok(Some(s)) if s == "aborted" => false,
            Ok(_) => continue,  // in progress, or too old to know: ask again later
            Err(_) => continue, // unreachable: ask again later
        };
        let gid = o.gid.clone();
        let done = BackgroundWorker::transaction(move || {
            // The origin may have finished it meanwhile.
            let still = crate::spi::one::<bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts WHERE gid = $1)",
                &[gid.as_str().into()],
            );
            if !matches!(still, Ok(Some(true))) {
                return;
            }
            let c = std::ffi::CString::new(gid).unwrap_or_default();
            // SAFETY: what COMMIT/ROLLBACK PREPARED runs, in a transaction of its own.
            unsafe {
                pg_sys::ffi::pg_guard_ffi_boundary(|| FinishPreparedTransaction(c.as_ptr(), commit))
            };
        });
        let _ = done;
        log!(
            "pg_federation: {} schema change {} prepared here ({} is {})",
            if commit { "committed" } else { "rolled back" },
            o.gid,
            what,
            if commit { "committed" } else { "aborted" }
        );
    }
}
