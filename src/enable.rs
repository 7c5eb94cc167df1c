//! `federation.enable(table)`: enrolls a table in the caller's transaction.
//!
//! An ordinary table is converted (table::convert), a table already LIST-partitioned by the
//! node column is adopted (table::adopt); then every other member gets an empty partition, a
//! DEFAULT partition is added, guards go on every partition but this node's, and this node's
//! partition joins this node's publication. On a running federation the table must exist on
//! every member with the same columns (checked before anything changes); the worker
//! federates it there after COMMIT.
//!
//! Locks, in order: ACCESS EXCLUSIVE on the table (before anything about it is read), then the
//! catalog rows of pg_federation, then the new relations as they are created. A ROLLBACK
//! undoes everything.

use crate::catalog::{self, Member, MemberState, MeshState};
use crate::errors::{notice, required, FedError, FedResult, OrRaise};
use crate::identity;
use crate::remote::Remote;
use crate::spi::quote_ident;
use crate::table::{adopt, convert, inspect, partitions, sequences, Table};
use crate::worker;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn enable_table(relid: Option<pg_sys::Oid>, node_column: Option<&str>) {
    let relid = required(
        relid,
        "the table to enable",
        "SELECT federation.enable('public.hippos');",
    );
    let node_column = required(
        node_column,
        "the node column",
        "SELECT federation.enable('hippos', node_column => 'node_name');",
    );
    enable(relid, node_column).or_raise()
}

pub fn enable(relid: pg_sys::Oid, node_column: &str) -> FedResult<()> {
    enable_with(relid, node_column, Spread::ToMembers)
}

/// Whether enable() on a node of a running federation spreads the table to the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// The DBA's call: check the table on every member first, and have the worker federate
    /// it there after COMMIT.
    ToMembers,
    /// The worker's call on a member (federation_internal.enable_here()): this node only.
    HereOnly,
}

pub fn enable_with(relid: pg_sys::Oid, node_column: &str, spread: Spread) -> FedResult<()> {
    inspect::check_node_column_name(node_column)?;
    let me = identity::current_name()?;
    // Already federated: only partitions may be added, under the lighter lock.
    if catalog::node_column(relid)?.is_some() {
        Table::lock_for_new_partitions(relid)?;
    } else {
        Table::lock_exclusive(relid)?;
    }
    let t = Table::load(relid)?;
    inspect::check_owner(&t, "federate")?;
    catalog::as_extension_owner(|| catalog::claim_local_name(&me))?;
    if let Some(existing) = catalog::node_column(relid)? {
        if existing != node_column {
            return Err(FedError::prerequisite(format!(
                "table {} is already federated by column {}",
                t.qualified(),
                quote_ident(&existing)
            ))
            .hint(format!(
                "Call federation.enable('{}') without node_column, or disable it first.",
                t.qualified()
            )));
        }
        let added = partitions::ensure_member_partitions(&t, &existing, &me)?;
        // Sequences left outside this node's range (federated before 0.3.0) move into it.
        let numbered = match catalog::node_number()? {
            Some(k) => sequences::number(&t, k)?,
            None => 0,
        };
        if numbered > 0 {
            notice(format!(
                "table {}: {numbered} sequence(s) now draw from this node's range",
                t.qualified()
            ));
        }
        if added.is_empty() && numbered == 0 {
            notice(format!(
                "table {} is already federated; nothing to do",
                t.qualified()
            ));
        } else {
            notice(format!(
                "table {} is already federated; added partitions for {}",
                t.qualified(),
                added.join(", ")
            ));
        }
        return Ok(());
    }
    inspect::check_enrollable(&t)?;
    // Only a node that joined a federation (it has an address) spreads the table; members
    // recorded without a join (tests, a node being built) get partitions only.
    let members = if spread == Spread::ToMembers && catalog::joined_conninfo()?.is_some() {
        catalog::as_extension_owner(catalog::members)?
    } else {
        vec![]
    };
    if !members.is_empty() {
        let joining: Vec<&str> = members
            .iter()
            .filter(|m| m.state == MemberState::Joining)
            .map(|m| m.name.as_str())
            .collect();
        if !joining.is_empty() {
            return Err(FedError::prerequisite(format!(
                "cannot federate {} while node(s) {} are joining",
                t.qualified(),
                joining.join(", ")
            ))
            .detail("A join wires the tables federated when it began; a table federated meanwhile would miss partitions or subscriptions on the joining node.")
            .hint("Wait until the join completes (SELECT federation.wait_ready();), then enable the table."));
        }
        check_table_on_members(&t, node_column, &members)?;
    }
    match t.kind {
        'r' => convert::convert_ordinary(&t, node_column, &me)?,
        _ => adopt::adopt_partitioned(&t, node_column, &me)?,
    }
    if !members.is_empty() {
        // The worker federates it on every member and refreshes every subscription.
        catalog::as_extension_owner(|| {
            catalog::set_mesh_state(&t.qualified(), MeshState::Pending)
        })?;
        worker::wake();
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        notice(format!(
            "table {} is federated here; after COMMIT the background worker federates it on {} and copies their rows: SELECT federation.wait_ready(); waits until it is done",
            t.qualified(),
            names.join(", ")
        ));
    }
    Ok(())
}

/// What a member checks when asked whether it can federate a table too (before the node the
/// DBA called enable() on changes anything): every check enable() makes there, nothing
/// changed. A table already federated there passes (enable_here only adds partitions).
pub fn check_only(relid: pg_sys::Oid, node_column: &str) -> FedResult<()> {
    inspect::check_node_column_name(node_column)?;
    if catalog::node_column(relid)?.is_some() {
        return Ok(());
    }
    let me = identity::current_name()?;
    let t = Table::load(relid)?;
    inspect::check_enrollable(&t)?;
    match t.kind {
        'r' => convert::check(&t, node_column, &me).map(|_| ()),
        _ => sequences::check_numberable(&t),
    }
}

/// enable() on a node with members: the table must exist on every member with the same
/// columns (the node column aside), and every member must be able to federate it (each runs
/// its own checks), before anything changes anywhere.
fn check_table_on_members(t: &Table, node_column: &str, members: &[Member]) -> FedResult<()> {
    let mine = inspect::columns(t.oid, Some(node_column))?;
    let my_version = catalog::extension_version()?;
    for m in members {
        let mut r = Remote::connect(&m.conninfo, &format!("member \"{}\"", m.name))
            .map_err(|e| e.hint(format!("Every member must be reachable to federate a table on a running federation; bring \"{}\" back and enable again.", m.name)))?;
        // Every member federates the table as this version does (keys, sequences).
        r.check_version(&format!("member \"{}\"", m.name), &my_version)?;
        let Some(theirs) = r.table_shape(&t.qualified(), node_column)? else {
            // Created in this transaction (a migration that creates and enables a table):
            // created there too, in this transaction, from the same statements.
            if crate::ddl::create_on_member(t.oid, &t.qualified(), &m.name)? {
                continue;
            }
            return Err(FedError::prerequisite(format!("table {} does not exist on member \"{}\"", t.qualified(), m.name))
                .detail("On a running federation, enable() federates the table on every member, so it must exist everywhere.")
                .hint(format!("Create {} on \"{}\" with the same columns, then call enable() again; or create the table and enable it in one transaction, and the members get it from this node (docs/migrations.md).", t.qualified(), m.name)));
        };
        if theirs != mine {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                format!(
                    "table {} differs between this node and member \"{}\"",
                    t.qualified(),
                    m.name
                ),
            )
            .detail(format!(
                "Here: {}. There: {}.",
                fmt_cols(&mine),
                fmt_cols(&theirs)
            ))
            .hint("Make the columns the same on every node, then call enable() again."));
        }
        r.enable_check(&t.qualified(), node_column).map_err(|e| {
            let reason = match e.message.strip_prefix("on ") {
                Some(rest) => rest.split_once(": ").map_or(rest, |(_, r)| r).to_string(),
                None => e.message.clone(),
            };
            FedError {
                message: format!(
                    "member \"{}\" cannot federate {}: {reason}",
                    m.name,
                    t.qualified()
                ),
                ..e
            }
        })?;
    }
    Ok(())
}

fn fmt_cols(c: &[(String, String)]) -> String {
    c.iter()
        .map(|(n, t)| format!("{n} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}
