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

use crate::catalog;
use crate::errors::{FedError, FedResult, OrRaise};
use crate::membership::{must_run_alone, require_superuser_for, subscription_name};
use crate::ready::nap;
use crate::remote::Remote;
use crate::sql::{self, quote_ident, quote_literal};
use crate::worker;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::{Duration, Instant};

#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn resync_node(node: Option<&str>, tbl: Option<pg_sys::Oid>, timeout_ms: Option<i64>) {
    let node = crate::errors::required(
        node,
        "the node to resync from",
        "SELECT federation.resync('east');",
    );
    let ms = crate::errors::required(
        timeout_ms,
        "the timeout",
        "SELECT federation.resync('east', timeout => '30 min');",
    );
    if ms < 0 {
        FedError::invalid_value(format!("the timeout must not be negative ({ms} ms)"))
            .hint("For example: SELECT federation.resync('east', timeout => '30 min');")
            .raise()
    }
    let timeout = Duration::from_millis(ms as u64);
    resync(node, tbl, timeout).or_raise()
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
fn wait_for(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> FedResult<bool>,
) -> FedResult<()> {
    let deadline = Instant::now() + timeout;
    while !cond()? {
        if Instant::now() >= deadline {
            return Err(FedError::new(PgSqlErrorCode::ERRCODE_QUERY_CANCELED, format!("timed out after {timeout:?} waiting for {what}"))
                .hint("The resync goes on in the background: federation.status() shows its progress (tables_syncing, rows_copied)."));
        }
        nap(100);
    }
    Ok(())
}

pub fn resync(node: &str, tbl: Option<pg_sys::Oid>, timeout: Duration) -> FedResult<()> {
    require_superuser_for("federation.resync()", "It drops and creates subscriptions and replication slots, which PostgreSQL 15 allows only to superusers.")?;
    must_run_alone("federation.resync()")?;
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
    if member.state != "ready" {
        return Err(FedError::prerequisite(format!("node \"{node}\" is {}, not ready", member.state))
            .hint("Wait for the join to complete (federation.wait_ready()); a join copies everything anyway."));
    }
    // This node's copies of the owner's partitions to rebuild.
    let copies = sql::rows(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM federation.partition p
         JOIN pg_catalog.pg_class c ON c.oid = p.partition JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE p.node_name = $1 AND ($2 IS NULL OR p.relid = $2) ORDER BY 1",
        &[node.into(), tbl.into()],
        |r| Ok(r.get::<String>(1)?.unwrap_or_default()),
    )?;
    if let (Some(oid), true) = (tbl, copies.is_empty()) {
        let name =
            sql::one::<String>("SELECT $1::regclass::text", &[oid.into()])?.unwrap_or_default();
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
    let slot = there.query(
        "SELECT wal_status FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        &[Some(&sub)],
    )?;
    let slot_usable = matches!(slot.first(), Some(r) if r[0].as_deref() != Some("lost"));
    let sub_exists = worker::sync_state(&mut here, &sub)?.is_some();
    let started = Instant::now();
    if tbl.is_some() && slot_usable && sub_exists {
        resync_tables(&mut here, &sub, &copies, timeout)?;
    } else {
        if tbl.is_some() {
            notice!("pg_federation: this node's replication slot on \"{node}\" is gone or invalidated: every table's copy of \"{node}\"'s partitions is rebuilt");
        }
        rebuild_subscription(
            &mut here,
            &mut there,
            &sub,
            node,
            &member.conninfo,
            sub_exists,
            timeout,
        )?;
    }
    wait_for(
        &format!("the copies of \"{node}\"'s partitions"),
        timeout.saturating_sub(started.elapsed()),
        || Ok(worker::copies_pending(&mut here, &mut there, &sub)? == Some(0)),
    )?;
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
    let paused = wait_for(
        "the subscription's workers to stop",
        timeout.min(Duration::from_secs(60)),
        || {
            Ok(here.scalar(
            "SELECT count(*) FROM pg_catalog.pg_stat_subscription w JOIN pg_catalog.pg_subscription s ON s.oid = w.subid
             WHERE s.subname = $1 AND w.pid IS NOT NULL",
            &[Some(sub)],
        )?
        .as_deref()
            == Some("0"))
        },
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
    let marked = here.exec(&format!(
        "SET session_replication_role = replica;
         TRUNCATE {};
         UPDATE pg_catalog.pg_subscription_rel SET srsubstate = 'i', srsublsn = NULL
          WHERE srsubid = (SELECT oid FROM pg_catalog.pg_subscription WHERE subname = {}) AND srrelid IN ({});
         RESET session_replication_role;",
        copies.join(", "),
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
    sub_exists: bool,
    timeout: Duration,
) -> FedResult<()> {
    if sub_exists {
        let s = quote_ident(sub);
        here.exec(&format!("ALTER SUBSCRIPTION {s} DISABLE"))?;
        here.exec(&format!("ALTER SUBSCRIPTION {s} SET (slot_name = NONE)"))?;
        here.exec(&format!("DROP SUBSCRIPTION {s}"))?;
    }
    // The old slot's walsender ends once the subscription's worker has.
    wait_for(
        &format!("the old replication slot on \"{node}\" to be released"),
        timeout.min(Duration::from_secs(60)),
        || {
            Ok(there.scalar("SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND active", &[Some(sub)])?.as_deref()
            == Some("0"))
        },
    )?;
    worker::fresh_slot(there, sub)?;
    let copies = worker::copies_of(here, node)?;
    worker::create_subscriptions(
        here,
        &[(
            sub.to_string(),
            node.to_string(),
            conninfo.to_string(),
            copies,
        )],
    )
}
