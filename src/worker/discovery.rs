//! Members that joined at the same time through other nodes. Two joins at once each learn
//! the federation as it was before the other: afterwards, each new node is a member of every
//! old one but not of the other new one. The worker closes such gaps: every few seconds its probe
//! (crate::probe) asks each ready member for its ready members, and records any it does not know as
//! joining, so the usual join steps wire the pair.
//!
//! Exactly one side of a pair must wire it. A node that is wiring a pair knows the other side
//! with `wired_here = true`, so before recording a discovered node the worker asks it how it
//! knows this node: wiring it (skip: its add_member() call will register the pair here),
//! waiting for this node to wire it (record, and wire), or not at all (record; the node whose
//! name sorts first wires).

use crate::catalog::{self, Member, MemberState};
use crate::errors::{FedError, FedResult};
use crate::remote::Remote;
use crate::table::partitions;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::time::Duration;

/// As the probe's: a node behind a cut link must not hold up the worker.
const ASK_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Records the nodes in `seen` (the ready members' ready members, as the probe found them)
/// that this node does not know; never raises (a node it cannot ask is asked again at the
/// next round).
pub fn discover(me: &str, members: &[Member], seen: &[(String, String)]) {
    let mut found: Vec<(String, String, bool)> = vec![]; // (name, conninfo, wired_here)
    let known = |name: &str, found: &[(String, String, bool)]| {
        name == me || members.iter().any(|m| m.name == name) || found.iter().any(|f| f.0 == name)
    };
    for (name, conninfo) in seen {
        if known(name, &found) {
            continue;
        }
        match how_it_knows_me(conninfo, name, me) {
            Ok(Some(true)) => {} // it wires the pair and will register it here
            Ok(Some(false)) => found.push((name.clone(), conninfo.clone(), true)),
            Ok(None) => found.push((name.clone(), conninfo.clone(), me < name.as_str())),
            Err(_) => {} // unreachable, or it has left: next round
        }
    }
    if found.is_empty() {
        return;
    }
    let me2 = me.to_string();
    let recorded = found.clone();
    let r = BackgroundWorker::transaction(move || -> FedResult<()> {
        for (name, conninfo, wired_here) in &recorded {
            catalog::upsert_member(name, conninfo, MemberState::Joining, *wired_here)?;
        }
        partitions::partitions_for_members(&me2)
    });
    match r {
        Ok(()) => {
            for (name, _, wired_here) in found {
                log!(
                    "pg_federation: discovered node \"{name}\" through another member; {} wires the pair",
                    if wired_here { "this node" } else { "that node" }
                );
            }
        }
        Err(e) => warning!("pg_federation worker: recording discovered members: {e}"),
    }
}

/// How `name` (at `conninfo`) knows this node: Ok(Some(wired_here there)), Ok(None) when it
/// does not, Err when it cannot be asked or is in no federation (it has left, or is leaving).
fn how_it_knows_me(conninfo: &str, name: &str, me: &str) -> FedResult<Option<bool>> {
    let mut r = Remote::connect_within(conninfo, &format!("node \"{name}\""), ASK_CONNECT_TIMEOUT)?;
    let (wired_here, ready_members) = r.knows(me)?;
    if ready_members == 0 {
        return Err(FedError::prerequisite(format!(
            "node \"{name}\" is in no federation"
        )));
    }
    Ok(wired_here)
}
