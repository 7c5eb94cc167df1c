//! Self-healing after a node's failover, switchover or restore in place (issue 14), on
//! PostgreSQL 15, where logical slots do not follow a promotion: the promoted standby serves
//! at the node's address without any of the slots its members stream from, and its own
//! subscriptions resume from whatever its replication origins replayed, which may be behind
//! what the members' slots already confirmed to the old primary.
//!
//! Three findings, each repaired by the worker of the node that holds the broken copy, with
//! the same machinery as federation.resync(..., mode => 'diff') (ops::diff: only the rows
//! that differ move; a full copy afresh if that fails), which never deletes a row a copy
//! held (table::set_aside):
//! - **this node's slot on a ready member is gone** (two probes in a row, the member
//!   reachable): the member was promoted or restored; this node's copy of its partitions is
//!   rebuilt from it (a fresh slot there, a fresh copy here);
//! - **this node writes on a new WAL timeline** (local_node.timeline records the last known
//!   good one): this node is the promoted standby or a point-in-time restore; its copies of
//!   every member's partitions are rebuilt from their owners, since its origins cannot be
//!   trusted;
//! - **a member has applied this node's WAL past where it is now**, on the same timeline: this
//!   server went back in time without a promotion (a base backup or a volume snapshot started
//!   as it is); its slots are dropped (the members then repair their copies of it) and its
//!   copies of every member's partitions are rebuilt, as after a promotion.
//!
//! And a server that is not the node any more stops acting as it (catalog::superseded):
//! another server answers at its recorded address (its standby promoted there), or its
//! members reach the node at another address where another server acts as it (the node
//! moved: membership::address). A node whose recorded address answers no more while its
//! federation.node_conninfo names another has its members follow that address.
//!
//! Rows a copy held that the owner lacks (a lagging standby lost them) stay in
//! federation.set_aside, named by health(); deciding whether the owner deleted them or lost
//! them is the DBA's (docs/runbook.md, "Failover").

use super::probe::SlotSeen;
use crate::catalog;
use crate::ops::resync::{self, Mode, Wait};
use crate::remote::SERVER_INSTANCE as SELF_SQL;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Probes in a row that must see a slot missing before its copy is rebuilt (a slot is
/// missing for a moment while a join or a resync replaces it).
const MISSING_PROBES: u32 = 2;
/// How a server whose node moved to another address (where another server acts as it) says
/// why it is no longer the node.
const MOVED_AWAY: &str = "its members reach node";

/// After a failed rebuild of one member's copy, the next try waits this long.
const RETRY_EVERY: Duration = Duration::from_secs(30);
/// How long a rebuild may take to start (drop the old subscription, make a slot).
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Healer {
    missing: HashMap<String, u32>,
    last_rebuild: HashMap<String, Instant>,
    /// The new WAL timeline whose repairs are under way (recorded once they all started).
    promotion: Option<i64>,
    /// A repair was made since the last [`Healer::repaired`]: what the last probe saw of the
    /// slots is out of date (a repair by difference is complete when it returns).
    repaired: bool,
    /// When each member's slot was first seen missing in the current streak.
    first_missing: HashMap<String, std::time::SystemTime>,
    /// Members whose address answers with a server that does not act as them (said once).
    not_the_node: HashSet<String>,
    /// Members seen to have applied this node's WAL past where it is now, with that
    /// position: the going back in time they showed has been acted on.
    went_back: HashMap<String, String>,
    /// Members whose copies here are still to be repaired after a promotion or after this
    /// server went back in time.
    to_repair: HashSet<String>,
    /// Why members did not follow this node's new address (each logged once).
    move_refusals: HashSet<String>,
    /// The node moved to another address, where another server acts as it (what the last
    /// probe found): this server is no longer the node.
    moved_away: Option<String>,
}

impl Healer {
    /// After a probe: rebuilds this node's copy of every member whose slot for this node is
    /// gone; then, on a new timeline, every copy.
    pub fn after_probe(&mut self, seen: &[SlotSeen]) {
        self.moved_away = self
            .moved_elsewhere(seen)
            .or(self.moved_away.take().filter(|_| {
                // No member reachable says nothing: the last finding stands.
                seen.iter().all(|s| s.knows_me_at.is_none())
            }));
        if self.moved_away.is_some() {
            // Not the node any more: nothing is repaired from here (check_address stops it).
            return;
        }
        for s in seen {
            let entry = self.missing.entry(s.member.clone()).or_default();
            *entry = if s.slot_found == Some(false) {
                *entry + 1
            } else {
                0
            };
            let streak = *entry;
            if streak == 1 {
                self.first_missing
                    .insert(s.member.clone(), std::time::SystemTime::now());
            }
            if streak >= MISSING_PROBES && !self.same_membership(&s.member) {
                // The member left and joined again since the slot was first seen missing (a
                // rejoin makes its slots anew): not a failover; look again.
                self.missing.insert(s.member.clone(), 0);
                continue;
            }
            if streak >= MISSING_PROBES {
                let why = format!(
                    "this node's replication slot on \"{}\" is gone (the member was promoted, restored or its slot dropped)",
                    s.member
                );
                if self.rebuild(&s.member, &why) {
                    self.missing.insert(s.member.clone(), 0);
                }
            }
        }
        // Not in a federation (probe_members saw no ready member): nothing to heal.
        if !seen.is_empty() {
            if self.after_promotion(seen) {
                // A promotion went back in time too (a lagging standby): already repaired as
                // one; what the members applied past this node is not a second finding.
                for s in seen {
                    if let Some((applied, _)) = &s.applied_past_me {
                        self.went_back.insert(s.member.clone(), applied.clone());
                    }
                }
            } else {
                self.after_going_back(seen);
            }
        }
    }

    /// A member has applied this node's WAL past where this node's WAL is now: this server
    /// went back in time on the same timeline, which a promotion never does (a new timeline
    /// is after_promotion's): a base backup started without recovery, a volume snapshot, a
    /// restore that kept the timeline. Its own subscriptions would resume from replication
    /// origins older than what its members' slots confirmed, skipping what the members wrote
    /// meanwhile, and the members' would skip what it writes now up to the WAL position they
    /// had already applied. So, once per such finding: its pg_federation slots are dropped
    /// (every member finds its slot gone and repairs its copy of this node by difference; the
    /// rows only the members hold go to their federation.set_aside, named by health()) and its
    /// copies of every member's partitions are repaired from their owners.
    fn after_going_back(&mut self, seen: &[SlotSeen]) {
        // A finding that no longer holds (the member has repaired) is forgotten.
        self.went_back.retain(|m, _| {
            seen.iter()
                .any(|s| s.member == *m && s.applied_past_me.is_some())
        });
        let new: Vec<(&str, &(String, String))> = seen
            .iter()
            .filter_map(|s| Some((s.member.as_str(), s.applied_past_me.as_ref()?)))
            .filter(|(m, (applied, _))| self.went_back.get(*m) != Some(applied))
            .collect();
        if let Some((member, (applied, mine))) = new.first() {
            log!("pg_federation: member \"{member}\" has applied this node's WAL up to {applied}, past where this node's WAL is now ({mine}): this server went back in time (restored from a backup without a new timeline, or a snapshot); dropping its replication slots so that every member repairs its copy of this node, and repairing its copies of every member's partitions from their owners (rows only the members hold go to their federation.set_aside)");
            drop_stale_slots(
                "from before this server went back in time (their positions are past its WAL now)",
            );
            for (m, (applied, _)) in &new {
                self.went_back.insert(m.to_string(), applied.clone());
            }
            self.to_repair = seen.iter().map(|s| s.member.clone()).collect();
        }
        self.repair_pending("this server went back in time");
    }

    /// Repairs this node's copies of the members still to repair ([`Healer::to_repair`]);
    /// those that fail are tried again at a later probe.
    fn repair_pending(&mut self, cause: &str) {
        let pending: Vec<String> = self.to_repair.iter().cloned().collect();
        for member in pending {
            let why = format!("{cause}: its copy of \"{member}\"'s partitions may miss changes it had applied before");
            if self.rebuild(&member, &why) {
                self.to_repair.remove(&member);
            }
        }
    }

    /// Whether this node is on a new WAL timeline (it was promoted or restored with
    /// point-in-time recovery): then its copies of every member are repaired.
    fn after_promotion(&mut self, seen: &[SlotSeen]) -> bool {
        let timelines = BackgroundWorker::transaction(|| {
            Ok::<_, crate::errors::FedError>((
                catalog::recorded_timeline()?,
                catalog::current_timeline()?,
            ))
        });
        let (recorded, current) = match timelines {
            Ok(t) => t,
            Err(e) => {
                warning!("pg_federation worker: reading the WAL timeline: {e}");
                return false;
            }
        };
        match recorded {
            Some(r) if r == current => return false,
            None => {
                // First look (a new node, an upgrade): this is the known good timeline.
                self.record(current);
                return false;
            }
            Some(r) => {
                if self.promotion != Some(current) {
                    log!("pg_federation: this node writes on WAL timeline {current}, not {r}: it was promoted from a standby or restored; repairing its copies of every member's partitions from their owners (rows they hold that the owners lack or hold otherwise go to federation.set_aside)");
                    drop_stale_slots("from before this server's promotion (their positions belong to a rewound history)");
                    self.promotion = Some(current);
                    self.to_repair = seen.iter().map(|s| s.member.clone()).collect();
                }
            }
        }
        // Every ready member's copy; the timeline is recorded once all of them are under way.
        self.repair_pending(&format!(
            "this node writes on a new WAL timeline ({current})"
        ));
        if self.to_repair.is_empty() {
            self.record(current);
            self.promotion = None;
        }
        true
    }

    /// Whether this server is the one that answers at its own address (local_node.conninfo):
    /// an old primary that comes back after its standby was promoted in its place finds the new
    /// primary there, and stops acting as the node (catalog::superseded: writes and
    /// federation operations refused, the worker idle, health() CRITICAL). Compared by system
    /// identifier and postmaster start time; an address this server cannot reach says nothing.
    pub fn check_address(&mut self) {
        let mine = BackgroundWorker::transaction(|| {
            if !catalog::extension_installed()? || !catalog::has_relation("federation.local_node")?
            {
                return Ok((None, None, None, None));
            }
            // A restored copy elsewhere never contacts the real node (catalog::copy_problem).
            // (local_node.server_id exists since 0.4.0; the library may be newer than the SQL.)
            let recorded = if catalog::local_node_has("server_id")? {
                crate::spi::one::<String>("SELECT server_id FROM federation.local_node", &[])?
            } else {
                None
            };
            if let Some(r) = recorded.filter(|r| *r != catalog::server_id()) {
                return Ok((None, None, None, Some(r)));
            }
            Ok::<_, crate::errors::FedError>((
                catalog::local_node()?.and_then(|(_, c)| c),
                crate::spi::one::<String>(SELF_SQL, &[])?,
                catalog::superseded()?,
                None,
            ))
        });
        let (conninfo, me, was, made_elsewhere) = match mine {
            Ok(m) => m,
            Err(e) => {
                warning!("pg_federation worker: {e}");
                return;
            }
        };
        let (Some(conninfo), Some(me)) = (conninfo, me) else {
            // Made on another server: a copy, or this node after pg_upgrade (worker::upgraded).
            if let Some(recorded) = made_elsewhere {
                super::upgraded::adopt_after_pg_upgrade(&recorded);
            }
            return;
        };
        let there = crate::remote::Remote::connect_within(
            &conninfo,
            "this node's address",
            Duration::from_secs(3),
        )
        .ok()
        .and_then(|mut r| r.scalar(SELF_SQL, &[]).ok().flatten());
        if there.is_none() && was.is_none() && self.moved_away.is_none() {
            // Nobody at the recorded address (a primary lost, its standby promoted behind a
            // new one): the members may follow federation.node_conninfo. (While the recorded
            // address reaches this server, it stays: join(node_conninfo => ...) may have
            // given one other than the setting on purpose.)
            self.follow_address(&conninfo);
        }
        let now = match &there {
            Some(there) if *there != me => Some(format!(
                "another server answers at its address (system {there}; this one is {me})"
            )),
            // Found by a probe; the worker probes no more once superseded, so the finding
            // stays until the server is rebuilt (as a standby of the node's new primary).
            _ => self
                .moved_away
                .clone()
                .or_else(|| was.clone().filter(|w| w.starts_with(MOVED_AWAY))),
        };
        // An address this server cannot reach says nothing.
        if there.is_none() && now.is_none() {
            return;
        }
        if now == was {
            return;
        }
        match &now {
            Some(why) => warning!("pg_federation: this server is no longer the node: {why}; it refuses writes to federated tables and federation operations, and its subscriptions are disabled, until it is rebuilt as a standby of the new primary"),
            None => log!("pg_federation: this server answers at its address again; it acts as the node"),
        }
        let superseded = now.is_some();
        let saved = BackgroundWorker::transaction(move || {
            catalog::set_superseded(now.as_deref())?;
            // Its subscriptions stream from the same slots on the members as the node's new
            // primary: whatever they consumed there, the new primary would never receive.
            // Disabled while it is not the node; enabled again if it is once more.
            let subscriptions = crate::spi::rows(
                "SELECT s.subname::text FROM pg_catalog.pg_subscription s
                 WHERE s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
                   AND s.subname LIKE 'federation\\_%' AND s.subslotname IS NOT NULL AND s.subenabled = $1",
                &[superseded.into()],
                |r| r.get::<String>(1),
            )?;
            for sub in subscriptions.into_iter().flatten() {
                crate::spi::exec(&format!(
                    "ALTER SUBSCRIPTION {} {}",
                    crate::spi::quote_ident(&sub),
                    if superseded { "DISABLE" } else { "ENABLE" }
                ))?;
            }
            // Every session re-reads its identity at its next statement.
            crate::spi::one::<bool>("SELECT pg_catalog.pg_reload_conf()", &[]).map(|_| ())
        });
        if let Err(e) = saved {
            warning!("pg_federation worker: {e}");
        }
    }

    /// Whether the members reach this node at another address than this server's recorded
    /// one, where another server acts as this node: the node moved there
    /// (worker::address) and this server is an old primary back at the old address. Why,
    /// if so.
    fn moved_elsewhere(&self, seen: &[SlotSeen]) -> Option<String> {
        let addresses: HashSet<&String> =
            seen.iter().filter_map(|s| s.knows_me_at.as_ref()).collect();
        if addresses.is_empty() {
            return None;
        }
        let mine = BackgroundWorker::transaction(|| {
            Ok::<_, crate::errors::FedError>((
                catalog::local_node()?,
                crate::spi::one::<String>(SELF_SQL, &[])?,
            ))
        });
        let Ok((Some((me, Some(recorded))), Some(self_id))) = mine else {
            return None;
        };
        for address in addresses.into_iter().filter(|a| **a != recorded) {
            let Ok(mut r) = crate::remote::Remote::connect_within(
                address,
                "this node's address on its members",
                Duration::from_secs(3),
            ) else {
                continue;
            };
            let other = r.scalar(SELF_SQL, &[]).ok().flatten();
            if let Some(other) = other.filter(|o| *o != self_id) {
                if r.acting_as().ok().as_deref() == Some(me.as_str()) {
                    return Some(format!(
                        "{MOVED_AWAY} \"{me}\" at {}, where another server acts as it (system {other}; this one is {self_id})",
                        crate::remote::mask(address)
                    ));
                }
            }
        }
        None
    }

    /// Has the members follow federation.node_conninfo when it names another address than
    /// `recorded` (worker::address); each refusal is logged once.
    fn follow_address(&mut self, recorded: &str) {
        match super::address::follow_setting(recorded) {
            Ok(None) => {}
            Ok(Some(new)) => {
                self.move_refusals.clear();
                log!("pg_federation: this node's address is now {new} (federation.node_conninfo); every member reaches it there");
            }
            Err(refusals) => {
                for r in refusals {
                    if self.move_refusals.insert(r.clone()) {
                        warning!("pg_federation: federation.node_conninfo names a new address for this node, but {r}; trying again every few seconds");
                    }
                }
            }
        }
    }

    fn record(&self, timeline: i64) {
        if let Err(e) = BackgroundWorker::transaction(move || catalog::record_timeline(timeline)) {
            warning!("pg_federation worker: recording the WAL timeline: {e}");
        }
    }

    /// Whether `member` is ready now and was ready already when its slot was first seen
    /// missing: the same membership throughout the streak (a member that left and joined
    /// again meanwhile has new slots, and a probe of the old membership is no finding).
    fn same_membership(&self, member: &str) -> bool {
        let Some(first) = self.first_missing.get(member) else {
            return false;
        };
        let d = first
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let at = format!("{}.{:06}", d.as_secs(), d.subsec_micros());
        let m = member.to_string();
        BackgroundWorker::transaction(move || {
            crate::spi::one::<bool>(
                "SELECT ready_at <= pg_catalog.to_timestamp($2::float8) FROM federation.node
                 WHERE node_name = $1 AND state = 'ready'",
                &[m.as_str().into(), at.as_str().into()],
            )
        })
        .ok()
        .flatten()
            == Some(true)
    }

    /// Whether a member's slot was seen missing at the last probe but not yet long enough to
    /// repair: the worker then probes again sooner.
    pub fn suspects(&self) -> bool {
        self.missing.values().any(|&n| n > 0 && n < MISSING_PROBES)
    }

    /// Whether a repair was made since the last call: the worker then probes again at once,
    /// so that status() shows the repaired slots now rather than at the next probe.
    pub fn repaired(&mut self) -> bool {
        std::mem::take(&mut self.repaired)
    }

    /// Starts rebuilding this node's copy of `member`'s partitions; true once it has started.
    fn rebuild(&mut self, member: &str, why: &str) -> bool {
        if self
            .last_rebuild
            .get(member)
            .is_some_and(|t| t.elapsed() < RETRY_EVERY)
        {
            return false;
        }
        // Only from the node itself: a new server put at a lost node's address, or a
        // restored dump of it there, is not the node, and a repair from it would set this
        // node's copy (the node's rows, maybe the only ones left) aside.
        if let Err(what) = acts_as_member(member) {
            if self.not_the_node.insert(member.to_string()) {
                warning!("pg_federation: this node's replication slot on \"{member}\" is gone, but the server at its address does not act as node \"{member}\" of this federation ({what}): nothing is repaired from it. If \"{member}\"'s server was lost, run federation.restore() on its replacement (docs/runbook.md, \"Restore a node\")");
            }
            return false;
        }
        self.not_the_node.remove(member);
        self.last_rebuild.insert(member.to_string(), Instant::now());
        log!(
            "pg_federation: {why}; repairing this node's copy of \"{member}\"'s partitions from it"
        );
        // Only what differs (ops::diff); should that fail, the whole copy afresh.
        let m = member.to_string();
        let by_difference = BackgroundWorker::transaction(move || {
            resync::resync_with(&m, None, START_TIMEOUT, Wait::No, Mode::Diff)
        });
        if let Err(e) = &by_difference {
            warning!("pg_federation worker: repairing this node's copy of \"{member}\"'s partitions by difference: {e}; copying them afresh instead");
        }
        let m = member.to_string();
        match by_difference.or_else(|_| {
            BackgroundWorker::transaction(move || {
                resync::resync_with(&m, None, START_TIMEOUT, Wait::No, Mode::Copy)
            })
        }) {
            Ok(()) => {
                // The pause is for failing repairs: the member's next failover is repaired at
                // once (a switchover back after a failover comes within seconds).
                self.last_rebuild.remove(member);
                self.repaired = true;
                true
            }
            Err(e) => {
                warning!("pg_federation worker: rebuilding this node's copy of \"{member}\"'s partitions: {e}; retrying");
                false
            }
        }
    }
}

/// Whether the server at `member`'s address acts as that member of this federation: it
/// answers federation.node_name() with that name (a restored copy, or a server with no name,
/// raises there) and knows this node as a member. Else what it is instead.
fn acts_as_member(member: &str) -> Result<(), String> {
    let m = member.to_string();
    let found = BackgroundWorker::transaction(move || {
        let me = crate::identity::current_name()?;
        let conninfo = catalog::members()?
            .into_iter()
            .find(|x| x.name == m)
            .map(|x| x.conninfo);
        Ok::<_, crate::errors::FedError>((me, conninfo))
    });
    let (me, conninfo) = match found {
        Ok((me, Some(c))) => (me, c),
        Ok((_, None)) => return Err("it is no member".into()),
        Err(e) => return Err(e.to_string()),
    };
    let mut r = crate::remote::Remote::connect_within(
        &conninfo,
        &format!("member \"{member}\""),
        Duration::from_secs(3),
    )
    .map_err(|e| e.to_string())?;
    match r.acting_as()? {
        name if name == member => {}
        other => return Err(format!("it is node \"{other}\"")),
    }
    match r.knows(&me) {
        Ok((Some(_), _)) => Ok(()),
        Ok((None, _)) => Err(format!("it does not know \"{me}\" as a member")),
        Err(e) => Err(e.message),
    }
}

/// After a promotion: the logical slots of pg_federation on this server that did not come
/// through it as synced failover slots (PostgreSQL 17+) are from an earlier life of this
/// server. An old primary made a standby of its successor without a rewind (a clean
/// switchover needs none) and promoted again has them, at positions of a history that went
/// on elsewhere, holding back WAL and a catalog horizon that nobody kept for them (a copy of a
/// data directory taken from the old primary has them too; pg_rewind from PostgreSQL 14 on
/// empties pg_replslot). A member streaming from one whose confirmed position lies past
/// where this server's WAL is would start there and skip, silently, the changes below it.
/// Dropped, the members find their slot gone and repair their copies by difference (which
/// also mends anything a member streamed from such a slot in the moment before).
fn drop_stale_slots(from: &str) {
    let dropped = BackgroundWorker::transaction(|| {
        let synced = crate::spi::one::<bool>(
            "SELECT pg_catalog.current_setting('server_version_num')::int >= 170000",
            &[],
        )?
        .unwrap_or(false);
        let stale = format!(
            "FROM pg_catalog.pg_replication_slots WHERE slot_type = 'logical'
               AND database = pg_catalog.current_database() AND slot_name LIKE 'federation\\_%'{}",
            if synced { " AND NOT synced" } else { "" }
        );
        crate::spi::rows(&format!("SELECT slot_name::text {stale}"), &[], |r| {
            r.get::<String>(1)
        })
        .map(|names| names.into_iter().flatten().collect::<Vec<_>>())
    });
    let names = match dropped {
        Ok(n) => n,
        Err(e) => {
            warning!("pg_federation worker: looking for replication slots {from}: {e}");
            return;
        }
    };
    for name in names {
        // A walsender just terminated may hold it for a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = name.clone();
            let r = BackgroundWorker::transaction(move || {
                // The member reconnects within a second of its walsender's end: end it (and
                // wait until it has ended) at every try, then drop the slot if it is free.
                crate::spi::exec_args(
                    "SELECT pg_catalog.pg_terminate_backend(active_pid, 5000) FROM pg_catalog.pg_replication_slots
                     WHERE slot_name = $1 AND active",
                    &[n.as_str().into()],
                )?;
                crate::spi::exec_args(
                    "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots
                     WHERE slot_name = $1 AND NOT active",
                    &[n.as_str().into()],
                )?;
                crate::spi::one::<bool>(
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)",
                    &[n.as_str().into()],
                )
            });
            match r {
                Ok(Some(false)) => {
                    log!("pg_federation: dropped replication slot \"{name}\", left {from}; the member streaming from it repairs its copy by difference");
                    break;
                }
                Err(e) if Instant::now() >= deadline => {
                    warning!(
                        "pg_federation worker: dropping replication slot \"{name}\" {from}: {e}"
                    );
                    break;
                }
                _ if Instant::now() >= deadline => {
                    warning!("pg_federation worker: replication slot \"{name}\" {from} stays in use; drop it by hand (SELECT pg_drop_replication_slot('{name}'))");
                    break;
                }
                _ => crate::wait::nap(100),
            }
        }
    }
}
