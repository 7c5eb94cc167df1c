//! How far a subscriber has got: the WAL nudge an idle publisher needs so that its
//! subscribers report their position, and waiting until a subscriber has confirmed one.
//! Used by the join steps (a finished table copy), verify() and disable() on a federation.

use crate::errors::FedResult;
use crate::ready::nap;
use crate::remote::Remote;
use std::time::Instant;

/// Writes one WAL record on the publisher: a transactional logical message (its commit
/// flushes the WAL; PostgreSQL 15 does not flush a non-transactional one). The walsenders
/// read it, skip it, and answer with a keepalive carrying their position, so an idle
/// subscriber confirms where it is, and marks a finished table copy ready, at once instead
/// of at its next wakeup.
pub fn nudge(publisher: &mut Remote) -> FedResult<()> {
    publisher.query(
        "SELECT pg_catalog.pg_logical_emit_message(true, 'pg_federation', 'progress')",
        &[],
    )?;
    Ok(())
}

/// Waits, until `deadline`, for the subscriber that uses `slot` on `publisher` to confirm
/// `lsn`, nudging the publisher. Some(true): confirmed; Some(false): not by the deadline (an
/// invalidated slot never confirms); None: there is no such slot.
pub fn wait_confirmed(
    publisher: &mut Remote,
    slot: &str,
    lsn: &str,
    deadline: Instant,
) -> FedResult<Option<bool>> {
    loop {
        let done = publisher.query(
            "SELECT confirmed_flush_lsn >= $2::pg_lsn AND wal_status IS DISTINCT FROM 'lost'
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[Some(slot), Some(lsn)],
        )?;
        match done.first().map(|r| r[0].as_deref() == Some("t")) {
            None => return Ok(None),
            Some(true) => return Ok(Some(true)),
            Some(false) if Instant::now() >= deadline => return Ok(Some(false)),
            Some(false) => {}
        }
        nudge(publisher)?;
        nap(100);
    }
}
