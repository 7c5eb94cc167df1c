//! `federation.wait_ready()`: blocks until every member is wired both ways and every initial
//! copy is done, or raises a clear error on a failed step or on timeout.

use crate::catalog::{self, MemberState};
use crate::errors::{timeout_arg, FedError, FedResult, OrRaise};
use crate::wait::nap;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::{Duration, Instant};

/// A failed step is reported once it has failed this many times in a row (the worker keeps
/// retrying: a peer that restarts mid-join recovers by itself).
const FAILED_AFTER: i32 = 12;

/// How long wait_ready() looks every 20 ms before every 100 ms.
const QUICK_LOOKS_FOR: Duration = Duration::from_secs(10);

#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn wait_ready_ms(timeout_ms: Option<i64>) {
    wait_ready(timeout_arg(
        timeout_ms,
        "SELECT federation.wait_ready('5 min');",
    ))
    .or_raise()
}

pub fn wait_ready(timeout: Duration) -> FedResult<()> {
    if catalog::members_written_by_this_transaction()? {
        return Err(FedError::prerequisite(
            "federation.wait_ready() cannot wait for a join made in the same transaction",
        )
        .detail("The join completes after COMMIT, in pg_federation's background worker.")
        .hint("COMMIT, then call federation.wait_ready()."));
    }
    let has_xid = crate::spi::one::<bool>(
        "SELECT pg_catalog.txid_current_if_assigned() IS NOT NULL",
        &[],
    )?
    .unwrap_or(false);
    if has_xid {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION,
            "federation.wait_ready() cannot run in a transaction that has written something",
        )
        .detail("Creating the replication slots of a join waits for every transaction on this node that has written, this one included.")
        .hint("COMMIT first, then call federation.wait_ready() on its own."));
    }
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let s = catalog::members_progress_fresh()?;
        let tables_pending = catalog::pending_tables_fresh()?;
        if s.iter().all(|m| m.state == MemberState::Ready) && tables_pending == 0 {
            return Ok(());
        }
        if let Some(f) = s
            .iter()
            .find(|m| m.attempts >= FAILED_AFTER && m.last_error.is_some())
        {
            return Err(FedError::prerequisite(format!("joining node \"{}\" keeps failing: {}", f.name, f.last_error.clone().unwrap_or_default()))
                .detail(format!("The step has failed {} times in a row; pg_federation's worker keeps retrying it.", f.attempts))
                .hint("Fix the cause (federation.nodes shows the last error); the join then completes by itself."));
        }
        if Instant::now() >= deadline {
            let pending: Vec<String> = s
                .iter()
                .filter(|m| m.state != MemberState::Ready)
                .map(|m| {
                    format!(
                        "{} ({}{})",
                        m.name,
                        m.state,
                        m.last_error
                            .as_ref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                format!("timed out after {:?} waiting for the federation to be ready", timeout),
            )
            .detail(format!("Not ready: {}.", pending.join(", ")))
            .hint("Initial copies of large tables take time: call federation.wait_ready() again with a longer timeout, and see federation.nodes."));
        }
        // Every 20 ms for the first seconds (a join's last step is a catalog row the
        // worker writes; the look is a read of two small tables), then every 100 ms.
        nap(if started.elapsed() < QUICK_LOOKS_FOR {
            20
        } else {
            100
        });
    }
}
