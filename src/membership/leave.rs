//! `federation.leave()` (this node goes, cleanly, with every member reachable) and
//! `federation.drop_node()` (a dead node is removed from every survivor).

use crate::catalog;
use crate::errors::{required, FedError, FedResult, OrRaise};
use crate::identity;
use crate::naming::subscription_name;
use crate::preconditions::{must_run_alone, require_superuser};
use crate::remote::Remote;
use crate::replication;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// The federation.leave() SQL function.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn leave_federation(drop_rows: Option<bool>) {
    let drop_rows = required(
        drop_rows,
        "drop_rows",
        "SELECT federation.leave(drop_rows => false);",
    );
    leave(drop_rows).or_raise()
}

pub fn leave(drop_rows: bool) -> FedResult<()> {
    require_superuser("federation.leave()")?;
    must_run_alone("federation.leave()")?;
    let me = identity::current_name()?;
    let members = catalog::members()?;
    if members.is_empty() {
        return Err(
            FedError::prerequisite(format!("node \"{me}\" is not in a federation"))
                .hint("federation.nodes lists the members this node knows."),
        );
    }
    let my_conninfo = catalog::joined_conninfo()?.unwrap_or_default();
    // Reach everyone first: leaving half-way would strand slots.
    let mut conns = vec![];
    for m in &members {
        let r = Remote::connect(&m.conninfo, &format!("member \"{}\"", m.name))
            .map_err(|e| e.hint(format!("Every member must be reachable to leave cleanly; if \"{}\" is gone for good, run federation.drop_node('{}') on a survivor first.", m.name, m.name)))?;
        conns.push(r);
    }
    let mut me_conn = Remote::connect(&my_conninfo, "this node")?;
    // Said first, and committed at once (over the connection to this node): while the slots
    // and subscriptions go, status() here reports a node leaving, not lost slots; if leave()
    // stops half-way, it keeps saying so until leave() runs again.
    if catalog::sql_0_3_installed()? {
        me_conn.query("UPDATE federation.node SET state = 'leaving'", &[])?;
        crate::wait::older_statements_ended(&mut me_conn)?;
    }
    // A join this node's worker is wiring (loading its copies, making subscriptions both
    // ways) finishes its pass first; no later pass wires a node that is leaving. What it made
    // goes below with the rest.
    crate::locks::wiring_ended(&mut me_conn)?;
    for (m, r) in members.iter().zip(conns.iter_mut()) {
        // On each member, this node goes from its catalog before its subscription or slot
        // does, and the member's statements that read the catalog before have ended: a
        // status() there never sees this node as a member whose subscription or slot is
        // gone (a false CRITICAL on a node that is not leaving). Its partitions there, when
        // asked, go last, once nothing applies into them.
        r.remove_member(&me, false)?;
        crate::wait::older_statements_ended(r)?;
        replication::drop_subscription(r, &subscription_name(&me, &m.name))?;
        replication::drop_subscription(&mut me_conn, &subscription_name(&m.name, &me))?;
        if drop_rows {
            r.remove_member(&me, true)?;
        }
    }
    // Slots on this node that members may not have dropped (a subscription dropped without
    // its slot).
    replication::drop_idle_slots_with_prefix(&mut me_conn, &subscription_name(&me, ""))?;
    for m in &members {
        catalog::delete_member(&m.name)?;
    }
    catalog::clear_local_conninfo()?;
    Ok(())
}

/// The federation.drop_node() SQL function.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn drop_federation_node(name: Option<&str>, drop_rows: Option<bool>) {
    let name = required(
        name,
        "the node to drop",
        "SELECT federation.drop_node('south');",
    );
    let drop_rows = required(
        drop_rows,
        "drop_rows",
        "SELECT federation.drop_node('south', drop_rows => false);",
    );
    drop_node(name, drop_rows).or_raise()
}

pub fn drop_node(name: &str, drop_rows: bool) -> FedResult<()> {
    require_superuser("federation.drop_node()")?;
    must_run_alone("federation.drop_node()")?;
    let me = identity::current_name()?;
    if name == me {
        return Err(FedError::invalid_value(format!("\"{name}\" is this node"))
            .hint("To take this node out, run federation.leave() on it."));
    }
    let members = catalog::members()?;
    if !members.iter().any(|m| m.name == name) {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("node \"{name}\" is not a member of this node's federation"),
        )
        .hint("federation.nodes lists the members."));
    }
    let my_conninfo = catalog::joined_conninfo()?.unwrap_or_default();
    let mut survivors: Vec<(String, Remote)> =
        vec![(me.clone(), Remote::connect(&my_conninfo, "this node")?)];
    for m in members.iter().filter(|m| m.name != name) {
        survivors.push((
            m.name.clone(),
            Remote::connect(&m.conninfo, &format!("member \"{}\"", m.name))?,
        ));
    }
    for (survivor, r) in survivors.iter_mut() {
        forget(r, survivor, name, drop_rows)?;
    }
    Ok(())
}

/// On `survivor` (behind `r`): forgets the dead node `name`, which may never answer again.
pub(super) fn forget(r: &mut Remote, survivor: &str, name: &str, drop_rows: bool) -> FedResult<()> {
    // The dead node cannot drop its slot: detach the subscription from it first.
    replication::drop_subscription_keep_slot(r, &subscription_name(name, survivor))?;
    // The slot the dead node's subscription held here: WAL stops piling up.
    replication::drop_slot(r, &subscription_name(survivor, name))?;
    r.remove_member(name, drop_rows)
}
