//! A node upgraded in place with pg_upgrade stays the node.
//!
//! pg_upgrade gives the new cluster a new system identifier, so the node's recorded
//! `local_node.server_id` no longer matches and, by that alone, the node would take itself for
//! a restored copy of itself (catalog::copy_problem: every write refused). From PostgreSQL 17
//! on, pg_upgrade also carries the server's logical replication slots (only slots that had
//! confirmed all of the old cluster's WAL: nothing was left unsent) and its subscriptions with
//! their replication origins: the upgraded server is the node, exactly where it was, and the
//! federation can carry on with no copy and no repair.
//!
//! A copy is told apart by what it cannot have: a pg_dump restored elsewhere (or at the
//! node's address, in place of a lost node) has no replication slots, and a copy on another
//! server does not answer at the node's address. So the worker takes the new identity as the
//! node's own only when all of these hold:
//! - the database is the one the state was made in (pg_upgrade keeps database OIDs);
//! - every ready member's slot on this node (the one it streams this node's partitions from)
//!   is here;
//! - the server that answers at the node's address (`local_node.conninfo`) is this one.
//!
//! It then records the new identity (catalog::stamp_server) and logs it. A pg_upgrade from
//! PostgreSQL 15 or 16 carries no slots and stays refused, as docs/runbook.md says (leave,
//! upgrade, join).

use crate::catalog::{self, MemberState};
use crate::errors::FedResult;
use crate::naming::subscription_name;
use crate::remote::Remote;
use crate::spi;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::time::Duration;

/// What this server would need to be the node whose state says it was made on `recorded`.
struct Evidence {
    me: String,
    conninfo: String,
    /// The node's ready members whose slot here is missing.
    missing_slots: Vec<String>,
    ready_members: usize,
    same_database: bool,
}

fn evidence(recorded: &str) -> FedResult<Option<Evidence>> {
    let Some((me, Some(conninfo))) = catalog::local_node()? else {
        return Ok(None);
    };
    let here: Vec<String> = spi::rows(
        "SELECT slot_name::text FROM pg_catalog.pg_replication_slots
         WHERE database = pg_catalog.current_database() AND slot_type = 'logical'",
        &[],
        |r| r.get::<String>(1),
    )?
    .into_iter()
    .flatten()
    .collect();
    let ready: Vec<String> = catalog::members()?
        .into_iter()
        .filter(|m| m.state == MemberState::Ready)
        .map(|m| m.name)
        .collect();
    let missing_slots = ready
        .iter()
        .filter(|m| !here.contains(&subscription_name(&me, m)))
        .cloned()
        .collect();
    let database = catalog::server_id();
    let database = database.split('/').nth(1);
    Ok(Some(Evidence {
        me,
        conninfo,
        missing_slots,
        ready_members: ready.len(),
        same_database: recorded.split('/').nth(1) == database,
    }))
}

/// Called by the worker when local_node.server_id (`recorded`) is not this server's: takes the
/// new identity as the node's own when pg_upgrade made it (module docs). True when it did.
pub fn adopt_after_pg_upgrade(recorded: &str) -> bool {
    let rec = recorded.to_string();
    let found = BackgroundWorker::transaction(move || evidence(&rec));
    let ev = match found {
        Ok(Some(ev)) => ev,
        Ok(None) => return false,
        Err(e) => {
            warning!("pg_federation worker: {e}");
            return false;
        }
    };
    if !ev.same_database || ev.ready_members == 0 || !ev.missing_slots.is_empty() {
        return false;
    }
    let Ok(mut at_address) =
        Remote::connect_within(&ev.conninfo, "this node's address", Duration::from_secs(3))
    else {
        return false;
    };
    let mine = catalog::server_id();
    let there = at_address
        .scalar(
            "SELECT system_identifier::text FROM pg_catalog.pg_control_system()",
            &[],
        )
        .ok()
        .flatten();
    if there.as_deref() != mine.split('/').next() {
        return false;
    }
    let me = ev.me.clone();
    let adopted = BackgroundWorker::transaction(move || {
        catalog::stamp_server()?;
        // Every session re-reads its identity at its next statement.
        spi::one::<bool>("SELECT pg_catalog.pg_reload_conf()", &[]).map(|_| ())
    });
    match adopted {
        Ok(()) => {
            log!("pg_federation: this server's identity changed from {recorded} to {mine} while it kept node \"{me}\"'s database, the replication slots its {} member(s) stream from and its address (pg_upgrade from PostgreSQL 17 on): it is node \"{me}\" still, and carries on where it was", ev.ready_members);
            true
        }
        Err(e) => {
            warning!("pg_federation worker: recording this server's new identity: {e}");
            false
        }
    }
}
