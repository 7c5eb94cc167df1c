//! Waiting inside a backend: on its own latch, so that a cancel or terminate request ends
//! the wait, and polling a condition with a deadline.

use crate::errors::{FedError, FedResult};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::{Duration, Instant};

/// Waits `ms` milliseconds on this backend's latch (or until it is set), then resets it.
/// Interrupts are not checked here: [`nap`] checks them; a background worker's pass reads
/// its own shutdown flag instead (`worker::pause_in_pass`).
pub fn latch_wait(ms: i64) {
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
}

/// Waits `ms` milliseconds on this backend's latch; a cancel or terminate request interrupts it.
pub fn nap(ms: i64) {
    latch_wait(ms);
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
    // 10 ms at first, then up to 100 ms: most conditions hold within a few milliseconds.
    let mut pause = 10;
    while !cond()? {
        if Instant::now() >= deadline {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                format!("timed out after {timeout:?} waiting for {what}"),
            )
            .hint(hint));
        }
        nap(pause);
        pause = (pause * 2).min(100);
    }
    Ok(())
}

/// Waits (at most 2 s) until every client statement on the server behind `me_conn` that
/// started before now has ended: a status() whose snapshot predates a change just committed
/// there would otherwise judge the old catalog against what it reads live (slots, locks), a
/// false CRITICAL (leave(): 'leaving' and the slots going; a repair by difference: the new
/// subscription and the repair's lock released). Statements that start later see the change.
/// This session's own statement (the caller itself) is not waited for.
pub fn older_statements_ended(me_conn: &mut crate::remote::Remote) -> FedResult<()> {
    let Some(mark) = me_conn.scalar("SELECT pg_catalog.clock_timestamp()::text", &[])? else {
        return Ok(());
    };
    let mine = crate::spi::one::<i32>("SELECT pg_catalog.pg_backend_pid()", &[])?
        .unwrap_or(0)
        .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let older = me_conn.count(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity
             WHERE state = 'active' AND backend_type = 'client backend'
               AND pid NOT IN (pg_catalog.pg_backend_pid(), $2::int) AND query_start < $1::timestamptz",
            &[Some(&mark), Some(&mine)],
        )?;
        if older == 0 {
            break;
        }
        crate::wait::nap(10);
    }
    Ok(())
}
