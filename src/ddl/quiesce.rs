//! Before a schema change that alters what rows carry (columns, constraints), every node's
//! earlier rows of the table must have reached every member: a member that dropped a column
//! cannot apply a row still carrying it ("target relation is missing replicated column"), and
//! a constraint must be checked against every row it will hold.
//!
//! So, in name order on every node (this one included, each in the schema change's
//! transaction): lock the table and the node's own partition in SHARE ROW EXCLUSIVE mode
//! (local writers of the table and other schema changes of it wait; the apply workers, which
//! write only the other nodes' partitions, do not), then mark the node's WAL position; then wait until every member's subscription to each node
//! has applied up to that node's mark. Name order on every node means two schema changes of
//! the same table queue behind each other instead of deadlocking; `federation.ddl_timeout`
//! bounds every wait.

use crate::catalog;
use crate::errors::{FedError, FedResult, OrRaise};
use crate::identity;
use crate::naming;
use crate::preconditions::require_superuser;
use crate::replication::SLOT_WALSENDER;
use crate::spi::{self, quote_ident};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Locks the table and this node's own partition of it (waiting at most lock_timeout)
/// and returns this node's WAL position after the lock: every row of the partition committed
/// before the lock lies before it.
pub fn here(table: pg_sys::Oid) -> FedResult<String> {
    let me = identity::current_name()?;
    let own = spi::one::<String>(
        "SELECT p.partition::text FROM federation.partition p WHERE p.relid = $1 AND p.node_name = $2",
        &[table.into(), me.as_str().into()],
    )?
    .ok_or_else(|| {
        FedError::prerequisite(format!(
            "table {} has no partition of node \"{me}\" here",
            crate::table::oid_sql(table).unwrap_or_default()
        ))
    })?;
    // The parent first, as a writer's INSERT into the parent locks it (then routes the row
    // to the partition); the partition too, for writes addressed to it directly. Apply
    // workers write the other nodes' partitions directly and take neither lock.
    // SHARE ROW EXCLUSIVE, not SHARE: it also conflicts with itself, so that two schema
    // changes of the table queue at the first node in name order instead of both going on
    // and each waiting for the other's lock on its own node.
    spi::exec(&format!(
        "LOCK TABLE ONLY {} IN SHARE ROW EXCLUSIVE MODE; LOCK TABLE ONLY {own} IN SHARE ROW EXCLUSIVE MODE",
        crate::table::oid_sql(table)?
    ))?;
    // A record of its own, so that the mark is the end of a record the walsenders decode
    // (pgoutput does not send it); a WAL position at a page start would never be "reached".
    let lsn = spi::one::<String>(
        "SELECT pg_catalog.pg_logical_emit_message(false, 'pg_federation', 'schema change')::text",
        &[],
    )?
    .unwrap_or_default();
    // Written now, so that the walsenders can read it now rather than at the WAL writer's
    // next round.
    if let Some(pos) = parse_lsn(&lsn) {
        // SAFETY: flushing WAL up to a position that was inserted.
        unsafe { pg_sys::XLogFlush(pos) };
    }
    Ok(lsn)
}

fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The members whose subscription to this node has not applied this node's WAL up to `lsn`
/// (or is not streaming at all). Runs inside the schema change's transaction, polled: the
/// walsenders are read live ([`SLOT_WALSENDER`]), or one started after the transaction's first
/// look at the server's backends (a member's apply worker reconnected) would never be found,
/// and the change refused after `federation.ddl_timeout` with every member caught up.
pub fn lagging(lsn: &str) -> FedResult<Vec<String>> {
    let me = identity::current_name()?;
    let members = catalog::as_extension_owner(catalog::members)?;
    let mut behind = vec![];
    for m in members {
        let slot = naming::subscription_name(&me, &m.name);
        let ok = spi::one::<bool>(
            &format!("SELECT w.replay_lsn >= $2::pg_lsn {SLOT_WALSENDER}"),
            &[slot.as_str().into(), lsn.into()],
        )?;
        if ok != Some(true) {
            behind.push(m.name);
        }
    }
    Ok(behind)
}

/// The schema change's node calls this on each member, in the change's transaction there.
#[pg_extern(volatile, strict, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn ddl_quiesce_here(tbl: &str) -> String {
    require_superuser("federation_internal.ddl_quiesce_here()").or_raise();
    let oid = catalog::federated_table_named(tbl)
        .or_raise()
        .ok_or_else(|| {
            FedError::prerequisite(format!("table {tbl} is not federated on this member"))
                .hint("Every member federates the same tables; see federation.status().")
        })
        .or_raise();
    here(oid).or_raise()
}

/// The schema change's node calls this on each member while it waits.
#[pg_extern(volatile, strict, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn ddl_lagging(lsn: &str) -> Vec<String> {
    require_superuser("federation_internal.ddl_lagging()").or_raise();
    lagging(lsn).or_raise()
}

/// One node's mark: where its WAL stood after it locked its partition.
pub struct Mark {
    pub node: String,
    pub lsn: String,
}

/// Waits until no node's mark is ahead of any member's subscription to it. `ask(node, lsn)`
/// returns who lags behind `node`.
pub fn wait_caught_up(
    table: &str,
    marks: &[Mark],
    mut ask: impl FnMut(&str, &str) -> FedResult<Vec<String>>,
) -> FedResult<()> {
    let timeout = crate::gucs::ddl_timeout();
    let deadline = std::time::Instant::now() + timeout;
    let mut pending: Vec<&Mark> = marks.iter().collect();
    loop {
        let mut still = vec![];
        let mut last = (String::new(), vec![]);
        for m in pending {
            let behind = ask(&m.node, &m.lsn)?;
            if !behind.is_empty() {
                last = (m.node.clone(), behind);
                still.push(m);
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let (node, behind) = last;
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
                format!(
                    "cannot change {table}: member(s) {} have not applied the rows node \"{node}\" wrote before the change (waited {} s)",
                    behind.iter().map(|b| format!("\"{b}\"")).collect::<Vec<_>>().join(", "),
                    timeout.as_secs()
                ),
            )
            .detail("A schema change waits until every member has every node's earlier rows of the table, so that no member has to apply a row the new schema no longer fits. Nothing was changed on any node.")
            .hint(format!("Check SELECT * FROM federation.status(); on {} (replication must be running both ways), then run the change again. SET federation.ddl_timeout raises the wait.", quote_ident(&node))));
        }
        pending = still;
        crate::wait::nap(10);
    }
}
