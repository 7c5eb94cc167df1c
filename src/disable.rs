//! `federation.disable(table)`: on a node alone, the table becomes ordinary here
//! (table::disable). On a node of a federation, it stops being federated on every member at
//! once, and each member keeps an ordinary table with every row it holds.
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
//!
//! Since 0.4.0 (its SQL installed), disable() on a federation runs in the caller's
//! transaction instead, as a schema change (src/ddl/): the table is locked on every node and
//! every member caught up (the same guarantee as steps 1 and 2), then every node turns it
//! into an ordinary table, committed everywhere or nowhere. A table that is not federated is
//! a NOTICE, not an error: a downgrade may run disable() on every node.

use crate::catalog::{self, MemberState};
use crate::errors::{required, FedError, FedResult, OrRaise};
use crate::naming::subscription_name;
use crate::preconditions::must_run_alone;
use crate::remote::Remote;
use crate::replication;
use crate::table::{self, inspect, Table};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::{Duration, Instant};

#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn disable_table(relid: Option<pg_sys::Oid>) {
    let relid = required(
        relid,
        "the table to disable",
        "SELECT federation.disable('public.hippos');",
    );
    disable(relid).or_raise()
}

pub fn disable(relid: pg_sys::Oid) -> FedResult<()> {
    // On a joined node the members replicate into this table's partitions here, and this
    // node into theirs: the table is disabled on every member at once.
    let joined = catalog::joined_conninfo()?.is_some();
    if joined && !catalog::other_members()?.is_empty() {
        let t = Table::load(relid)?;
        inspect::check_owner(&t, "disable")?;
        if catalog::node_column(relid)?.is_none() {
            return not_federated_here(&t);
        }
        if catalog::sql_0_4_installed()? {
            // Since 0.4.0: in the caller's transaction, on every member (src/ddl/).
            return crate::ddl::disable_everywhere(relid, &t.qualified());
        }
        return disable_everywhere(&t);
    }
    if catalog::node_column(relid)?.is_none() && catalog::sql_0_4_installed()? {
        let t = Table::load(relid)?;
        inspect::check_owner(&t, "disable")?;
        return not_federated_here(&t);
    }
    table::disable::to_ordinary(relid)
}

/// disable() of a table that is not federated (any more): nothing to do, so that a migration's
/// downgrade may run it on every node, or again.
fn not_federated_here(t: &Table) -> FedResult<()> {
    if !catalog::sql_0_4_installed()? {
        return Err(table::disable::not_federated(t));
    }
    notice!(
        "pg_federation: table {} is not federated here; nothing to do",
        t.qualified()
    );
    Ok(())
}

/// How long subscribers may take to confirm the publishers' positions.
const CONFIRM_WITHIN: Duration = Duration::from_secs(120);

fn disable_everywhere(t: &Table) -> FedResult<()> {
    must_run_alone(&format!(
        "federation.disable({}) on a federation",
        t.qualified()
    ))?;
    let table = t.qualified();
    let Some((me, Some(my_conninfo))) = catalog::local_node()? else {
        return Err(FedError::internal(
            "disable_everywhere on a node that has not joined",
        ));
    };
    let members = catalog::as_extension_owner(catalog::members)?;
    if let Some(j) = members.iter().find(|m| m.state != MemberState::Ready) {
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
        if !r.is_federated(&table)? {
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
        positions.push((name.clone(), r.unpublish_here(&table)?));
    }
    // 2. Every subscriber has applied everything each publisher sent before that.
    let deadline = Instant::now() + CONFIRM_WITHIN;
    for (i, (publisher, lsn)) in positions.iter().enumerate() {
        for (subscriber, _) in positions.iter().filter(|(n, _)| n != publisher) {
            let slot = subscription_name(publisher, subscriber);
            // No slot: no subscriber there to wait for.
            if replication::wait_confirmed(&mut nodes[i].1, &slot, lsn, deadline)? == Some(false) {
                return Err(FedError::new(PgSqlErrorCode::ERRCODE_QUERY_CANCELED, format!("timed out waiting for \"{subscriber}\" to confirm \"{publisher}\"'s changes of {table}"))
                        .detail("No node publishes the table any more; no node has disabled it yet.")
                        .hint(format!("See federation.status on \"{subscriber}\"; once it replicates, run federation.disable('{table}') again to finish.")));
            }
        }
    }
    // 3. Every node turns it back into an ordinary table; this node last.
    for (_, r) in nodes.iter_mut() {
        r.disable_here(&table)?;
    }
    notice!("pg_federation: {table} is an ordinary table again on {} node(s); each keeps every row it held", nodes.len());
    Ok(())
}
