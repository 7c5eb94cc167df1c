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

/// The advisory lock (class, key) the worker holds on its connection to its own node while a
/// pass wires joins (worker::reconcile: the loads, the slots, the subscriptions both ways).
const WIRING_LOCK: (i32, i32) = (1_718_379_894, 0);

/// For the worker: holds [`WIRING_LOCK`] for as long as the connection `here` (to this node)
/// stays open, or until a [`wiring_ended`] there.
pub fn hold_wiring(here: &mut crate::remote::Remote) -> FedResult<()> {
    here.exec(&format!(
        "SELECT pg_catalog.pg_advisory_lock({}, {})",
        WIRING_LOCK.0, WIRING_LOCK.1
    ))
}

/// Waits, over `me_conn` (to this node), until no pass of the worker wires a join: leave()
/// calls it once 'leaving' is committed, so that what a pass begun before made (a subscription
/// the load created, a member's subscription to this node) exists when leave() drops it, and
/// no later pass wires anything.
pub fn wiring_ended(me_conn: &mut crate::remote::Remote) -> FedResult<()> {
    me_conn.exec(&format!(
        "SELECT pg_catalog.pg_advisory_lock({k}, {v}); SELECT pg_catalog.pg_advisory_unlock({k}, {v})",
        k = WIRING_LOCK.0,
        v = WIRING_LOCK.1
    ))
}

/// The second key of an advisory lock named by a text `$1` (a subscription's name), in the
/// class of what holds it: a repair by difference (ops::diff), a load (worker::load).
pub const NAMED_LOCK_KEY: &str = "pg_catalog.hashtext($1) & 2147483647";

/// Whether some session on this server holds the advisory lock (`class`, `name` hashed):
/// status() asks it to tell what runs now.
pub fn named_lock_held(class: i32, name: &str) -> FedResult<bool> {
    Ok(crate::spi::one::<bool>(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks k
                            WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 2
                              AND k.classid = {class}::oid
                              AND k.objid::bigint = ({NAMED_LOCK_KEY}))"
        ),
        &[name.into()],
    )?
    .unwrap_or(false))
}
