//! `federation.wait_ready()`: blocks until every member is wired both ways and every initial
//! copy is done, or raises a clear error on a failed step or on timeout.

use crate::errors::{FedError, FedResult, OrRaise};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::{Duration, Instant};

/// A failed step is reported once it has failed this many times in a row (the worker keeps
/// retrying: a peer that restarts mid-join recovers by itself).
const FAILED_AFTER: i32 = 12;

struct State {
    name: String,
    state: String,
    attempts: i32,
    last_error: Option<String>,
}

/// Reads with a fresh snapshot each call, so a loop sees the worker's commits.
fn states() -> FedResult<Vec<State>> {
    Ok(crate::sql::rows_fresh(
        "SELECT node_name, state, attempts, last_error FROM federation.node ORDER BY node_name",
    )?
    .into_iter()
    .map(|r| State {
        name: r[0].clone().unwrap_or_default(),
        state: r[1].clone().unwrap_or_default(),
        attempts: r[2].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
        last_error: r[3].clone(),
    })
    .collect())
}

#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn wait_ready_ms(timeout_ms: Option<i64>) {
    let ms = crate::errors::required(
        timeout_ms,
        "the timeout",
        "SELECT federation.wait_ready('5 min');",
    );
    if ms < 0 {
        FedError::invalid_value(format!("the timeout must not be negative ({ms} ms)"))
            .hint("For example: SELECT federation.wait_ready('5 min');")
            .raise()
    }
    wait_ready(Duration::from_millis(ms as u64)).or_raise()
}

pub fn wait_ready(timeout: Duration) -> FedResult<()> {
    let uncommitted = crate::sql::one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM federation.node WHERE xmin::text = pg_catalog.txid_current_if_assigned()::text)",
        &[],
    )?
    .unwrap_or(false);
    if uncommitted {
        return Err(FedError::prerequisite(
            "federation.wait_ready() cannot wait for a join made in the same transaction",
        )
        .detail("The join completes after COMMIT, in pg_federation's background worker.")
        .hint("COMMIT, then call federation.wait_ready()."));
    }
    let has_xid = crate::sql::one::<bool>(
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
    let deadline = Instant::now() + timeout;
    loop {
        let s = states()?;
        let tables_pending = crate::sql::rows_fresh(
            "SELECT count(*) FROM federation.federated_table WHERE mesh_state = 'pending'",
        )?
        .first()
        .and_then(|r| r[0].as_deref().and_then(|v| v.parse::<i64>().ok()))
        .unwrap_or(0);
        if s.iter().all(|m| m.state == "ready") && tables_pending == 0 {
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
                .filter(|m| m.state != "ready")
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
        nap(100);
    }
}

/// Waits `ms` milliseconds on this backend's latch; a cancel or terminate request interrupts it.
pub fn nap(ms: i64) {
    // SAFETY: waiting on our own latch, with a timeout.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// A connection string without its password, for views.
#[pg_extern(immutable, strict, parallel_safe)]
fn mask_conninfo(conninfo: &str) -> String {
    crate::remote::mask(conninfo)
}
