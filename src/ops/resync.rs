//! `federation.resync(node, tbl)`: rebuilds this node's copy of another node's partitions
//! from their owner: the stale copy is emptied and copied afresh, and the change stream
//! resumes from the point of the copy. Other partitions, and local writers to this node's own
//! partition, are not touched.
//!
//! Two ways, both PostgreSQL's own machinery:
//! - one table, while this node's replication slot on the owner is intact: the subscription
//!   is paused, the copy emptied and its table marked for a new initial copy (state 'i' in
//!   pg_subscription_rel, as ALTER SUBSCRIPTION ... REFRESH PUBLICATION marks a new table),
//!   and resumed; the apply worker skips that table's changes until its copy has caught up;
//! - every table of the owner, or when the slot is gone or was invalidated: the subscription
//!   is dropped (detached from its slot), a fresh slot made, and the subscription created
//!   again with an initial copy of every partition of the owner, as join() does.

use crate::catalog::{self, MemberState};
use crate::errors::{required, timeout_arg, FedError, FedResult, OrRaise};
use crate::naming::subscription_name;
use crate::preconditions::{must_run_alone, require_superuser_for};
use crate::remote::Remote;
use crate::replication::{self, NewSubscription};
use crate::spi::{self, quote_ident, quote_literal};
use crate::wait::poll_until;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::{Duration, Instant};

/// What a resync that ran out of time leaves behind.
const STILL_RUNNING: &str = "The resync goes on in the background: federation.status() shows its progress (tables_syncing, rows_copied).";

#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn resync_node(
    node: Option<&str>,
    tbl: Option<pg_sys::Oid>,
    timeout_ms: Option<i64>,
    mode: Option<&str>,
) {
    let node = required(
        node,
        "the node to resync from",
        "SELECT federation.resync('east');",
    );
    let timeout = timeout_arg(
        timeout_ms,
        "SELECT federation.resync('east', timeout => '30 min');",
    );
    let mode = match mode {
        None | Some("copy") => Mode::Copy,
        Some("diff") => Mode::Diff,
        Some(other) => Err(FedError::invalid_value(format!("resync mode \"{other}\" is not one of copy, diff"))
            .hint("mode => 'copy' (the default) copies the owner's partitions afresh; mode => 'diff' copies only the rows that differ.")).or_raise(),
    };
    resync_with(node, tbl, timeout, Wait::UntilCopied, mode).or_raise()
}

/// How a copy is rebuilt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Emptied (what it held kept aside) and copied afresh by the subscription's initial copy.
    Copy,
    /// Compared with the owner's partition on the new slot's snapshot; only what differs moves
    /// (ops::diff). Every table of the owner: the slot is made anew for all of them.
    Diff,
}

/// Whether resync waits for the fresh copies.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The DBA's call: until every copy is done (or `timeout`).
    UntilCopied,
    /// The worker healing a node after a failover (worker::heal): start the copies and go on;
    /// status() shows their progress.
    No,
}

pub fn resync_with(
    node: &str,
    tbl: Option<pg_sys::Oid>,
    timeout: Duration,
    wait: Wait,
    mode: Mode,
) -> FedResult<()> {
    require_superuser_for("federation.resync()", "It drops and creates subscriptions and replication slots, which PostgreSQL 15 allows only to superusers.")?;
    must_run_alone("federation.resync()")?;
    // Not on a renamed node or a restored copy: it would drop and make slots as the real node.
    crate::identity::current_name()?;
    let Some((me, Some(my_conninfo))) = catalog::local_node()? else {
        return Err(FedError::prerequisite("this node is not in a federation").hint("federation.resync() repairs a copy of a member's partitions; join a federation first."));
    };
    if node == me {
        return Err(FedError::invalid_value(format!("\"{node}\" is this node; resync() rebuilds this node's copy of another node's partitions"))
            .hint(format!("To repair a member's copy of this node's partitions, run SELECT federation.resync('{me}'); on that member.")));
    }
    let members = catalog::members()?;
    let Some(member) = members.iter().find(|m| m.name == node) else {
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("node \"{node}\" is not a member of this node's federation"),
        )
        .hint(format!(
            "Members: {}. federation.nodes lists them.",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )));
    };
    if member.state != MemberState::Ready {
        return Err(FedError::prerequisite(format!("node \"{node}\" is {}, not ready", member.state))
            .hint("Wait for the join to complete (federation.wait_ready()); a join copies everything anyway."));
    }
    // This node's copies of the owner's partitions to rebuild.
    let copies: Vec<String> = catalog::partitions_of_node(node, tbl)?
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    if let (Some(oid), true) = (tbl, copies.is_empty()) {
        let name =
            spi::one::<String>("SELECT $1::regclass::text", &[oid.into()])?.unwrap_or_default();
        return Err(FedError::invalid_value(format!("table \"{name}\" is not federated (it has no partition of node \"{node}\" here)"))
            .hint("federation.tables lists the federated tables; resync() with no table rebuilds them all."));
    }
    let mut here = Remote::connect(&my_conninfo, "this node (federation.node_conninfo)")?;
    let mut there =
        Remote::connect(&member.conninfo, &format!("member \"{node}\"")).map_err(|e| {
            e.hint(format!(
                "The owner must be reachable to copy from it; retry once \"{node}\" is up."
            ))
        })?;
    let sub = subscription_name(node, &me);
    let slot_usable = matches!(replication::slot_wal_status(&mut there, &sub)?, Some(status) if status.as_deref() != Some("lost"));
    let sub_exists = replication::subscription_exists(&mut here, &sub)?;
    let started = Instant::now();
    if mode == Mode::Diff {
        if tbl.is_some() {
            notice!("pg_federation: a resync by difference compares every table's copy of \"{node}\"'s partitions (the slot is made anew for all of them); equal copies move nothing");
        }
        let report = super::diff::repair(&mut here, &mut there, node, &member.conninfo, &sub)?;
        catalog::as_extension_owner(|| catalog::clear_copy_checks(&me, node, None))?;
        let done = format!(
            "pg_federation: repaired this node's copy of \"{node}\"'s partitions ({}) by difference in {:.2} s: {} rows compared in {} buckets, {} differing; {} rows copied, {} set aside (federation.set_aside); replication resumes from {} (steps: {})",
            copies.join(", "),
            started.elapsed().as_secs_f64(),
            report.rows_compared,
            report.buckets,
            report.buckets_differing,
            report.rows_copied,
            report.rows_set_aside,
            report.from_lsn,
            report.steps_shown()
        );
        // In the server log too: the worker's repairs after a failover have no client.
        log!("{done}");
        notice!("{done}");
        return Ok(());
    }
    if tbl.is_some() && slot_usable && sub_exists {
        resync_tables(&mut here, &sub, &copies, timeout)?;
    } else {
        if tbl.is_some() {
            notice!("pg_federation: this node's replication slot on \"{node}\" is gone or invalidated: every table's copy of \"{node}\"'s partitions is rebuilt");
        }
        rebuild_subscription(&mut here, &mut there, &sub, node, &member.conninfo, timeout)?;
        // PostgreSQL 15's launcher may hold the new subscription's worker back.
        replication::hasten_apply_worker(&mut here, &sub, Duration::ZERO)?;
    }
    if wait == Wait::No {
        return Ok(());
    }
    poll_until(
        &format!("the copies of \"{node}\"'s partitions"),
        timeout.saturating_sub(started.elapsed()),
        STILL_RUNNING,
        || Ok(replication::copies_pending(&mut here, &mut there, &sub)? == Some(0)),
    )?;
    // What verify() recorded about these copies is repaired.
    catalog::as_extension_owner(|| catalog::clear_copy_checks(&me, node, tbl))?;
    notice!(
        "pg_federation: rebuilt this node's copy of \"{node}\"'s partitions ({}) in {:.1} s",
        copies.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One or more tables, slot intact: pause, empty, mark for a new initial copy, resume.
fn resync_tables(
    here: &mut Remote,
    sub: &str,
    copies: &[String],
    timeout: Duration,
) -> FedResult<()> {
    here.exec(&format!("ALTER SUBSCRIPTION {} DISABLE", quote_ident(sub)))?;
    let paused = poll_until(
        "the subscription's workers to stop",
        timeout.min(Duration::from_secs(60)),
        STILL_RUNNING,
        || Ok(replication::subscription_workers(here, sub)? == 0),
    );
    if let Err(e) = paused {
        here.exec(&format!("ALTER SUBSCRIPTION {} ENABLE", quote_ident(sub)))?;
        return Err(e);
    }
    let rels: Vec<String> = copies
        .iter()
        .map(|c| format!("{}::regclass", quote_literal(c)))
        .collect();
    // One implicit transaction: the copies are emptied and marked together. Replica mode
    // passes the guards (ordinary triggers); the copies are in no publication of this node.
    let keep = replication::keeps_copies(here)?;
    let marked = here.exec(&format!(
        "SET session_replication_role = replica;
         {}
         UPDATE pg_catalog.pg_subscription_rel SET srsubstate = 'i', srsublsn = NULL
          WHERE srsubid = (SELECT oid FROM pg_catalog.pg_subscription WHERE subname = {}) AND srrelid IN ({});
         RESET session_replication_role;",
        replication::empty_copies_sql(copies, keep),
        quote_literal(sub),
        rels.join(", ")
    ));
    here.exec(&format!("ALTER SUBSCRIPTION {} ENABLE", quote_ident(sub)))?;
    marked
}

/// Every table of the owner, or a lost slot: the subscription anew on a fresh slot.
fn rebuild_subscription(
    here: &mut Remote,
    there: &mut Remote,
    sub: &str,
    node: &str,
    conninfo: &str,
    timeout: Duration,
) -> FedResult<()> {
    // Detached from its slot first: the slot may be lost, or the owner slow to drop it.
    replication::drop_subscription_keep_slot(here, sub)?;
    // The old slot's walsender ends once the subscription's worker has.
    poll_until(
        &format!("the old replication slot on \"{node}\" to be released"),
        timeout.min(Duration::from_secs(60)),
        STILL_RUNNING,
        || Ok(!replication::slot_active(there, sub)?),
    )?;
    replication::fresh_slot(there, sub)?;
    let copies = here.copies_of(node)?;
    replication::create_subscriptions(
        here,
        &[NewSubscription {
            name: sub.to_string(),
            publisher: node.to_string(),
            publisher_conninfo: conninfo.to_string(),
            copies,
            copy_data: true,
        }],
    )
}
