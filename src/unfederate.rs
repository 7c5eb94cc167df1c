//! `federation.disable(table)` on a node of a federation: the table stops being federated on
//! every member at once, and each member keeps an ordinary table with every row it holds.
//!
//! Order matters, because a member's subscription fails (all its tables) if a change arrives
//! for a partition that is gone:
//! 1. every node takes its own partition out of its publication (no more changes of this
//!    table leave any node) and reports its WAL position;
//! 2. every subscriber confirms each publisher's position (everything sent before is applied);
//! 3. every node turns the table back into an ordinary one (members first, this node last,
//!    so that a failure leaves the table federated here and a new call finishes the job).
//!
//! Each step runs on each node through its own connection (this node's too, through
//! `federation.node_conninfo`), so it cannot run inside a transaction block. Rows written
//! while it runs stay on the node that wrote them.

use crate::catalog;
use crate::errors::{FedError, FedResult, OrRaise};
use crate::identity;
use crate::membership::{must_run_alone, require_superuser, subscription_name};
use crate::progress;
use crate::publication;
use crate::remote::Remote;
use crate::sql;
use crate::table::Table;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::{Duration, Instant};

/// How long subscribers may take to confirm the publishers' positions.
const CONFIRM_WITHIN: Duration = Duration::from_secs(120);

pub fn disable_everywhere(t: &Table) -> FedResult<()> {
    must_run_alone(&format!(
        "federation.disable({}) on a federation",
        t.display()
    ))?;
    let table = t.qualified();
    let Some((me, Some(my_conninfo))) = catalog::local_node()? else {
        return Err(FedError::internal(
            "disable_everywhere on a node that has not joined",
        ));
    };
    let members = catalog::as_extension_owner(catalog::members)?;
    if let Some(j) = members.iter().find(|m| m.state != "ready") {
        return Err(FedError::prerequisite(format!("cannot disable {table} on the federation while node \"{}\" is {}", j.name, j.state))
            .hint("Wait until the membership settles (SELECT federation.wait_ready();), then disable again."));
    }
    let mut nodes: Vec<(String, Remote)> = vec![];
    for m in &members {
        let r = Remote::connect(&m.conninfo, &format!("member \"{}\"", m.name)).map_err(|e| {
            e.hint(format!("Every member must be reachable to disable a table on the federation; bring \"{}\" back, or drop it (federation.drop_node('{}')), and disable again.", m.name, m.name))
        })?;
        nodes.push((m.name.clone(), r));
    }
    for (name, r) in nodes.iter_mut() {
        let federated = r.scalar("SELECT count(*) FROM federation.federated_table WHERE relid = pg_catalog.to_regclass($1)", &[Some(&table)])?;
        if federated.as_deref() != Some("1") {
            return Err(FedError::prerequisite(format!("table {table} is not federated on member \"{name}\""))
                .hint("The members disagree about this table: see federation.tables on each. disable() changes nothing until they agree."));
        }
    }
    nodes.push((
        me.clone(),
        Remote::connect(&my_conninfo, "this node (federation.node_conninfo)")?,
    ));

    // 1. No node publishes the table any more; each reports where its WAL stands.
    let mut positions = vec![];
    for (name, r) in nodes.iter_mut() {
        let lsn = r
            .scalar("SELECT federation.unpublish_here($1)", &[Some(&table)])?
            .unwrap_or_default();
        positions.push((name.clone(), lsn));
    }
    // 2. Every subscriber has applied everything each publisher sent before that.
    let deadline = Instant::now() + CONFIRM_WITHIN;
    for (i, (publisher, lsn)) in positions.iter().enumerate() {
        for (subscriber, _) in positions.iter().filter(|(n, _)| n != publisher) {
            let slot = subscription_name(publisher, subscriber);
            // No slot: no subscriber there to wait for.
            if progress::wait_confirmed(&mut nodes[i].1, &slot, lsn, deadline)? == Some(false) {
                return Err(FedError::new(PgSqlErrorCode::ERRCODE_QUERY_CANCELED, format!("timed out waiting for \"{subscriber}\" to confirm \"{publisher}\"'s changes of {table}"))
                        .detail("No node publishes the table any more; no node has disabled it yet.")
                        .hint(format!("See federation.status on \"{subscriber}\"; once it replicates, run federation.disable('{table}') again to finish.")));
            }
        }
    }
    // 3. Every node turns it back into an ordinary table; this node last.
    for (_, r) in nodes.iter_mut() {
        r.query("SELECT federation.disable_here($1)", &[Some(&table)])?;
    }
    notice!("pg_federation: {table} is an ordinary table again on {} node(s); each keeps every row it held", nodes.len());
    Ok(())
}

/// For disable on a federation: takes this node's partition of `tbl` out of its publication
/// and returns this node's WAL position after that. No-op (position only) when not federated.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn unpublish_here(tbl: &str) -> String {
    require_superuser("federation.unpublish_here()").or_raise();
    (|| -> FedResult<String> {
        let me = identity::current_name()?;
        let local = sql::one::<pg_sys::Oid>(
            "SELECT p.partition::oid FROM federation.partition p WHERE p.relid = pg_catalog.to_regclass($1) AND p.node_name = $2",
            &[tbl.into(), me.as_str().into()],
        )?;
        if let Some(local) = local {
            let local_sql = sql::one::<String>("SELECT $1::regclass::text", &[local.into()])?.unwrap_or_default();
            publication::remove(&me, local, &local_sql)?;
        }
        sql::one::<String>("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])?.ok_or_else(|| FedError::internal("no WAL position"))
    })()
    .or_raise()
}

/// For disable on a federation: turns `tbl` back into an ordinary table on this node (no-op
/// when it is not federated here).
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn disable_here(tbl: &str) {
    require_superuser("federation.disable_here()").or_raise();
    let oid = sql::one::<pg_sys::Oid>(
        "SELECT t.relid::oid FROM federation.federated_table t WHERE t.relid = pg_catalog.to_regclass($1)",
        &[tbl.into()],
    )
    .or_raise();
    if let Some(oid) = oid {
        crate::enable::disable_here(oid).or_raise();
    }
}
