//! Waiting inside a backend: on its own latch, so that a cancel or terminate request ends
//! the wait, and polling a condition with a deadline.

use crate::errors::{FedError, FedResult};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::{Duration, Instant};

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

/// Polls `cond` every 100 ms until it holds or `timeout` passes; then the error says what
/// it waited for, with `hint`.
pub fn poll_until(
    what: &str,
    timeout: Duration,
    hint: &str,
    mut cond: impl FnMut() -> FedResult<bool>,
) -> FedResult<()> {
    let deadline = Instant::now() + timeout;
    while !cond()? {
        if Instant::now() >= deadline {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                format!("timed out after {timeout:?} waiting for {what}"),
            )
            .hint(hint));
        }
        nap(100);
    }
    Ok(())
}
