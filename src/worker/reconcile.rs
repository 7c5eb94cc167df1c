//! One pass of the worker: finishes the joins this node wires, and spreads tables enabled
//! on a running federation to every member.
//!
//! For each member still `joining` that this node wires (it called join(); the members it
//! joined leave the pair to it), idempotently: registers this node with that member
//! (federation_internal.add_member there: catalog row and partitions for this node), creates this
//! node's subscription to the member's publication, then (once every copy into this node is
//! committed) the member's subscription to this node's publication, and once every table of
//! both subscriptions is ready and both stream, marks the member ready on both sides. A
//! failed step is recorded in federation.node (last_error, attempts) and retried on a later
//! pass; a restart of either server only delays it.
//!
//! Slots are made before their subscriptions, on the publishers, with
//! pg_create_logical_replication_slot() over autocommit connections; then the subscriptions,
//! with create_slot = false, over libpq connections to the member and back to this node
//! itself (CREATE SUBSCRIPTION is a top-level statement there). No transaction of this
//! worker is open while it waits, and no CREATE SUBSCRIPTION waits for a slot, so the two
//! directions never wait on each other.

use super::load;
use crate::catalog::{self, Member, MemberState, MeshState};
use crate::errors::FedResult;
use crate::identity;
use crate::naming::subscription_name;
use crate::remote::Remote;
use crate::replication::{self, NewSubscription};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// How long one pass keeps watching a join's copies and hand-overs, at intervals of 5 to
/// 20 ms, before it ends (the worker's next pass comes 100 ms later).
const WATCH_FOR: Duration = Duration::from_secs(1);

struct Work {
    me: String,
    my_conninfo: String,
    joining: Vec<Member>,
    ready: Vec<Member>,
    /// Tables enabled here on a running federation, to federate everywhere: (name, column).
    pending_tables: Vec<(String, String)>,
}

fn load_work() -> FedResult<Option<Work>> {
    // SAFETY: reads shared recovery state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Ok(None);
    }
    if !catalog::extension_installed()? {
        return Ok(None);
    }
    let Some((recorded, Some(my_conninfo))) = catalog::local_node()? else {
        return Ok(None);
    };
    let me = identity::current_name()?;
    if me != recorded {
        return Ok(None); // renamed: identity::current_name() already refuses writes
    }
    let (joining, ready): (Vec<Member>, Vec<Member>) = catalog::members()?
        .into_iter()
        .partition(|m| m.state == MemberState::Joining);
    let pending_tables = catalog::pending_tables()?;
    Ok(Some(Work {
        me,
        my_conninfo,
        joining,
        ready,
        pending_tables,
    }))
}

/// One pass; true while there is work in progress.
pub fn reconcile_once() -> bool {
    let work = BackgroundWorker::transaction(load_work);
    let work = match work {
        Ok(Some(w)) => w,
        Ok(None) => return false,
        Err(e) => {
            warning!("pg_federation worker: {e}");
            return false;
        }
    };
    // Pairs this node wires; the others are wired by the joining member's worker, which
    // orders the copies (see reconcile_joins) and marks the pair ready here when done.
    let mine: Vec<Member> = work
        .joining
        .iter()
        .filter(|m| m.wired_here)
        .cloned()
        .collect();
    if !mine.is_empty() {
        reconcile_joins(&work.me, &work.my_conninfo, &mine);
    }
    // Tables enabled on a running federation, once no join is in progress.
    if work.joining.is_empty() {
        for (table, col) in &work.pending_tables {
            match spread_table(&work.my_conninfo, &work.ready, table, col) {
                Ok(true) => {
                    let t = table.clone();
                    let r = BackgroundWorker::transaction(move || {
                        catalog::set_mesh_state(&t, MeshState::Ready)
                    });
                    match r {
                        Ok(()) => log!("pg_federation: table {table} is federated on every member"),
                        Err(e) => warning!("pg_federation worker: {e}"),
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    warning!("pg_federation: federating {table} on the members: {e}");
                    let (t, why) = (table.clone(), e.to_string());
                    if let Err(e) = BackgroundWorker::transaction(move || {
                        catalog::set_spread_error(&t, Some(&why))
                    }) {
                        warning!("pg_federation worker: {e}");
                    }
                }
            }
        }
    }
    !work.joining.is_empty() || !work.pending_tables.is_empty()
}

/// Federates `table` on every member (federation_internal.enable_here there) and refreshes every
/// federation subscription on every node, so each picks up the new partitions (with their
/// existing rows). Idempotent; true once every subscription has finished its copies.
fn spread_table(my_conninfo: &str, members: &[Member], table: &str, col: &str) -> FedResult<bool> {
    let mut conns = vec![Remote::connect(
        my_conninfo,
        "this node (federation.node_conninfo)",
    )?];
    for m in members {
        let mut r = Remote::connect(&m.conninfo, &format!("member \"{}\"", m.name))?;
        r.enable_here(table, col)?;
        conns.push(r);
    }
    let mut all_ready = true;
    for r in conns.iter_mut() {
        for sub in replication::federation_subscriptions(r)? {
            replication::refresh_subscription(r, &sub)?;
            if replication::pending_tables(r, &sub)? != Some(0) {
                all_ready = false;
            }
        }
    }
    Ok(all_ready)
}

fn retry_due(m: &Member) -> bool {
    let wait = Duration::from_millis((500 * m.attempts.min(20) as u64).min(10_000));
    let name = m.name.clone();
    let ms = wait.as_millis() as i64;
    BackgroundWorker::transaction(move || catalog::last_error_older_than(&name, ms)).unwrap_or(true)
}

/// Wires this node with every joining member, both ways, in three phases: per member,
/// register this node there and make the slot of this node's subscription to it; then all of
/// this node's new subscriptions in one transaction; then, once every copy *into* this node
/// is committed, per member the slot here and the member's subscription to this node, and
/// once every copy both ways is ready, mark the member ready on both sides.
///
/// Inbound copies first: a slot decodes all of its server's WAL, including the rows an
/// initial copy writes into other nodes' partitions (only to skip them, after spilling a
/// large copy to disk). Slots on this node made only after its inbound copies have committed
/// never read them; on a two-core machine that was a third of a large join's time. A
/// failure is recorded against the member it concerns, and retried on a later pass.
fn reconcile_joins(me: &str, my_conninfo: &str, joining: &[Member]) {
    let mut failures: Vec<(String, String)> = vec![];
    let mut here = match Remote::connect(my_conninfo, "this node (federation.node_conninfo)")
        .and_then(|mut h| crate::locks::hold_wiring(&mut h).map(|()| h))
    {
        Ok(h) => h,
        Err(e) => {
            joining
                .iter()
                .for_each(|m| failures.push((m.name.clone(), e.to_string())));
            record_failures(joining, &failures);
            return;
        }
    };
    let mut wired: Vec<(&Member, Remote)> = vec![];
    let mut inbound: Vec<NewSubscription> = vec![];
    for m in joining {
        // A failing member is retried with a growing pause (up to ~10 s between attempts).
        if m.attempts > 0 && !retry_due(m) {
            continue;
        }
        match prepare(&mut here, me, my_conninfo, m) {
            Ok((there, need_in)) => {
                if let Some(copy_data) = need_in {
                    match here.copies_of(&m.name) {
                        Ok(copies) => inbound.push(NewSubscription {
                            name: subscription_name(&m.name, me),
                            publisher: m.name.clone(),
                            publisher_conninfo: m.conninfo.clone(),
                            copies,
                            copy_data,
                        }),
                        Err(e) => failures.push((m.name.clone(), e.to_string())),
                    }
                }
                wired.push((m, there));
            }
            Err(e) => failures.push((m.name.clone(), e.to_string())),
        }
    }
    if !inbound.is_empty() {
        match replication::create_subscriptions(&mut here, &inbound) {
            Ok(()) => {
                for s in &inbound {
                    hasten(&mut here, &s.name);
                }
            }
            Err(e) => {
                for s in &inbound {
                    failures.push((s.publisher.clone(), e.to_string()));
                }
            }
        }
    }
    wired.retain(|(m, _)| !failures.iter().any(|(n, _)| n == &m.name));
    // A copy finishing, and what follows it (the apply workers marking the tables ready,
    // the members' subscriptions to this node, their first replies), is watched here every
    // 5 to 20 ms for up to WATCH_FOR, over the connections already open, rather than one
    // step per pass (passes come every 100 ms, each connecting anew to every member).
    let watch_until = Instant::now() + WATCH_FOR;
    let mut pause = Duration::from_millis(5);
    while !advance(&mut here, &mut wired, me, my_conninfo, &mut failures)
        && Instant::now() < watch_until
        && super::pause_in_pass(pause)
    {
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    record_failures(joining, &failures);
}

/// One look at every pair in `wired`: once every copy into this node is known to be
/// committed, wires each pair's other direction ([`complete`]), and once those copies are
/// ready too, marks it ready. Pairs that are ready or failed leave `wired`; true when none
/// is left.
fn advance(
    here: &mut Remote,
    wired: &mut Vec<(&Member, Remote)>,
    me: &str,
    my_conninfo: &str,
    failures: &mut Vec<(String, String)>,
) -> bool {
    // Every subscription into this node, in one query.
    let states = match replication::sync_states(here) {
        Ok(states) => states,
        Err(e) => {
            // This node's own connection failed: every pair waits for a later pass.
            let why = format!("reading this node's subscriptions: {e}");
            failures.extend(wired.iter().map(|(m, _)| (m.name.clone(), why.clone())));
            wired.clear();
            return true;
        }
    };
    // Every table copied into this node (committed: the copies' WAL is behind any slot
    // made here now), and every one of them ready.
    let (mut inbound_copied, mut inbound_ready) = (true, true);
    for (m, there) in wired.iter_mut() {
        let Some(s) = states.get(&subscription_name(&m.name, me)) else {
            (inbound_copied, inbound_ready) = (false, false);
            continue;
        };
        inbound_copied &= s.copying == 0;
        inbound_ready &= s.pending == 0;
        if let Err(e) = s.nudge_if_done(there) {
            failures.push((m.name.clone(), e.to_string()));
        }
    }
    wired.retain(|(m, _)| !failures.iter().any(|(n, _)| n == &m.name));
    // Also the copies from members not wired in this pass (one that failed a step and waits
    // for its retry while its copy, restarted, runs): a slot made here now would wait for
    // that copy's transaction, holding the whole pass.
    if !inbound_copied || states.values().any(|s| s.copying_now > 0) {
        return false;
    }
    let mut ready: Vec<String> = vec![];
    for (m, there) in wired.iter_mut() {
        match complete(here, there, me, my_conninfo, m, inbound_ready) {
            Ok(true) => {
                ready.push(m.name.clone());
                let name = m.name.clone();
                match BackgroundWorker::transaction(move || {
                    catalog::set_member_state(&name, MemberState::Ready)
                }) {
                    Ok(()) => log!(
                        "pg_federation: node \"{}\" and this node \"{me}\" replicate both ways",
                        m.name
                    ),
                    Err(e) => warning!("pg_federation worker: {e}"),
                }
            }
            Ok(false) => {}
            Err(e) => failures.push((m.name.clone(), e.to_string())),
        }
    }
    wired.retain(|(m, _)| !ready.contains(&m.name) && !failures.iter().any(|(n, _)| n == &m.name));
    wired.is_empty()
}

fn record_failures(joining: &[Member], failures: &[(String, String)]) {
    for (name, msg) in failures {
        let previous = joining
            .iter()
            .find(|m| &m.name == name)
            .and_then(|m| m.last_error.clone());
        if previous.as_deref() != Some(msg.as_str()) {
            warning!("pg_federation: joining node \"{name}\": {msg}");
        }
        let (name, msg) = (name.clone(), msg.clone());
        if let Err(e) =
            BackgroundWorker::transaction(move || catalog::record_member_error(&name, &msg))
        {
            warning!("pg_federation worker: {e}");
        }
    }
}

/// Phase one for member `m`, until this node's subscription to it exists: registers this
/// node there and makes the slot of this node's
/// subscription to it (slots first: a CREATE SUBSCRIPTION that made its own slot would hold a
/// transaction on one node while slot creation on the other waits for running transactions,
/// and the two directions could wait on each other). A member that holds rows: this node
/// loads its copies and makes the subscription in one transaction (worker::load), where the
/// copies allow it. Returns the connection to the member and, when this node still needs its
/// subscription to it, whether that subscription must copy (false: the member published no
/// row once the slot was made, replication::publishes_no_rows).
fn prepare(
    here: &mut Remote,
    me: &str,
    my_conninfo: &str,
    m: &Member,
) -> FedResult<(Remote, Option<bool>)> {
    let mut there = Remote::connect(&m.conninfo, &format!("member \"{}\"", m.name))?;
    let inbound = subscription_name(&m.name, me); // on this node, from m
    if replication::subscription_exists(here, &inbound)? {
        return Ok((there, None));
    }
    // Once per pair, not every pass: add_member() locks the member's federated tables
    // (SHARE UPDATE EXCLUSIVE) to give them partitions for this node. The subscription
    // is created only after it succeeded, so its existence says it was done.
    there.add_member(me, my_conninfo, &m.conninfo)?;
    replication::fresh_slot(&mut there, &inbound)?;
    if replication::publishes_no_rows(&mut there, &m.name) {
        return Ok((there, Some(false)));
    }
    // The member holds rows: this node loads its copies itself where it can (worker::load),
    // and makes the subscription with them; else the subscription's table sync copies.
    let copies = here.copies_of(&m.name)?;
    if !load::loadable(here, &copies)? {
        return Ok((there, Some(true)));
    }
    let what = format!("member \"{}\"", m.name);
    super::probe::probe_one(me, m);
    let slot = replication::slot_with_snapshot(&mut there, &m.conninfo, &what, &inbound)?;
    load::load_and_subscribe(my_conninfo, me, m, &copies, slot)?;
    hasten(here, &inbound);
    Ok((there, None))
}

/// Phase three for member `m`, once every copy into this node is committed: makes the slot
/// here and the member's subscription to this node; true once every copy into this node is
/// ready (`inbound_ready`), that subscription has finished its copy too, both directions
/// stream and the member has marked this node ready.
fn complete(
    here: &mut Remote,
    there: &mut Remote,
    me: &str,
    my_conninfo: &str,
    m: &Member,
    inbound_ready: bool,
) -> FedResult<bool> {
    let outbound = subscription_name(me, &m.name); // on m, from this node
    match replication::copies_pending(there, here, &outbound)? {
        None => {
            replication::fresh_slot(here, &outbound)?;
            let copy_data = !replication::publishes_no_rows(here, me);
            let copies = there.copies_of(me)?;
            replication::create_subscriptions(
                there,
                &[NewSubscription {
                    name: outbound.clone(),
                    publisher: me.to_string(),
                    publisher_conninfo: my_conninfo.to_string(),
                    copies,
                    copy_data,
                }],
            )?;
            hasten(there, &outbound);
            Ok(false)
        }
        // Copied (or nothing to copy), and streaming both ways.
        Some(0)
            if inbound_ready
                && replication::streaming(here, &outbound)?
                && replication::streaming(there, &subscription_name(&m.name, me))? =>
        {
            there.set_member_ready(me)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// A subscription just made on the server behind `on`: its apply worker started there at
/// once, not when PostgreSQL 15's launcher next may (replication::hasten_apply_worker). A
/// failure only costs that wait: logged, not raised.
fn hasten(on: &mut Remote, sub: &str) {
    if let Err(e) = replication::hasten_apply_worker(on, sub, Duration::ZERO) {
        log!("pg_federation worker: starting the apply worker of {sub}: {e}");
    }
}
