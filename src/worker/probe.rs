//! What the background worker samples every few seconds for federation.status(): for each
//! member, this node's slot there (how far this node has confirmed, the WAL the member keeps
//! for it, whether the slot was lost) and the error counters of this node's subscription to
//! it. PostgreSQL keeps only counters, so the worker notes when a counter grows: that is the
//! "when" of the last error; its message is in this server's log.

use crate::catalog::{self, Member, MemberState, ProbeSample};
use crate::errors::FedResult;
use crate::naming::subscription_name;
use crate::remote::Remote;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::time::Duration;

/// A member behind a cut link must not hold up the worker.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One member's sample, and the members it knows as ready (for discovery).
struct Sample {
    recorded: ProbeSample,
    /// The member's ready members (name, conninfo).
    their_members: Vec<(String, String)>,
    /// See [`SlotSeen::applied_past_me`].
    applied_past_me: Option<(String, String)>,
}

/// What one probe saw of a ready member's slot for this node, for worker::heal.
pub struct SlotSeen {
    pub member: String,
    /// Reachable, and this node's slot there is missing (Some(false)) or present.
    pub slot_found: Option<bool>,
    /// How far the member has applied this node's WAL, when that is past where this node's
    /// WAL is now (the member's LSN, and this node's): this server went back in time.
    pub applied_past_me: Option<(String, String)>,
    /// The address by which the member reaches this node (when it knows it as ready).
    pub knows_me_at: Option<String>,
}

/// Probes every member and records the samples; never raises (a failed probe is itself the
/// finding). Returns what it saw of this node's slot on each ready member.
pub fn probe_members() -> Vec<SlotSeen> {
    let loaded = BackgroundWorker::transaction(|| -> FedResult<Option<(String, Vec<Member>)>> {
        if !catalog::extension_installed()? {
            return Ok(None);
        }
        let Some((me, Some(_))) = catalog::local_node()? else {
            return Ok(None);
        };
        Ok(Some((me, catalog::members()?)))
    });
    let Ok(Some((me, members))) = loaded else {
        return vec![];
    };
    let mut samples: Vec<Sample> = members.iter().map(|m| sample(&me, m)).collect();
    // The address by which each member reaches this node (worker::heal: moved elsewhere?).
    let knows_me_at: Vec<Option<String>> = samples
        .iter()
        .map(|s| {
            s.their_members
                .iter()
                .find(|(name, _)| *name == me)
                .map(|(_, conninfo)| conninfo.clone())
        })
        .collect();
    // Same rhythm and connections, other concern: members this node should know but does
    // not, as the ready members see them.
    let seen: Vec<(String, String)> = members
        .iter()
        .zip(samples.iter_mut())
        .filter(|(m, _)| m.state == MemberState::Ready)
        .flat_map(|(_, s)| std::mem::take(&mut s.their_members))
        .collect();
    let past: Vec<Option<(String, String)>> = samples
        .iter_mut()
        .map(|s| s.applied_past_me.take())
        .collect();
    let recorded: Vec<ProbeSample> = samples.into_iter().map(|s| s.recorded).collect();
    let slots: Vec<SlotSeen> = members
        .iter()
        .zip(&recorded)
        .zip(past)
        .zip(knows_me_at)
        .filter(|(((m, _), _), _)| m.state == MemberState::Ready)
        .map(|(((m, s), past), knows_me_at)| SlotSeen {
            member: m.name.clone(),
            slot_found: if s.reachable { s.slot_found } else { None },
            applied_past_me: past,
            knows_me_at,
        })
        .collect();
    let r = BackgroundWorker::transaction(move || catalog::record_probe(&recorded));
    if let Err(e) = r {
        warning!("pg_federation worker: recording the probe: {e}");
    }
    super::discovery::discover(&me, &members, &seen);
    slots
}

/// Probes member `m` alone and records what it saw: the worker does before it loads its
/// copies of `m`'s partitions (worker::load), so that status() has the member's row
/// estimates for the load's progress at once. Never raises.
pub fn probe_one(me: &str, m: &Member) {
    let recorded = sample(me, m).recorded;
    if let Err(e) = BackgroundWorker::transaction(move || catalog::record_probe(&[recorded])) {
        warning!("pg_federation worker: recording the probe: {e}");
    }
}

fn sample(me: &str, m: &Member) -> Sample {
    let mut s = ProbeSample {
        name: m.name.clone(),
        looked_at: std::time::SystemTime::now(),
        subscription: subscription_name(&m.name, me),
        reachable: false,
        error: None,
        peer_lsn: None,
        slot_found: None,
        wal_status: None,
        confirmed: None,
        retained: None,
        estimates: None,
        started_at: None,
        schema_diff: None,
    };
    let mut their_members = vec![];
    let mut applied_past_me = None;
    let probe = (|| -> FedResult<()> {
        let mut r = Remote::connect_within(
            &m.conninfo,
            &format!("member \"{}\"", m.name),
            PROBE_CONNECT_TIMEOUT,
        )?;
        let rows = r.query(
            "SELECT pg_catalog.pg_current_wal_lsn()::text, s.slot_name IS NOT NULL, s.wal_status, s.confirmed_flush_lsn::text,
                    (pg_catalog.pg_current_wal_lsn() - s.restart_lsn)::text,
                    EXTRACT(epoch FROM pg_catalog.pg_postmaster_start_time())::text
             FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1",
            &[Some(&subscription_name(&m.name, me))],
        )?;
        let row = rows.into_iter().next().unwrap_or_default();
        let get = |i: usize| row.get(i).cloned().flatten();
        s.peer_lsn = get(0);
        s.slot_found = Some(get(1).as_deref() == Some("t"));
        s.wal_status = get(2);
        s.confirmed = get(3);
        s.retained = get(4);
        s.started_at = get(5);
        // How many rows the member's own partitions hold, by name, for the progress of copies.
        s.estimates = r.row_estimates(&m.name)?;
        // Tables whose columns differ from this node's (a change made on one node only).
        let theirs = r.query(catalog::SCHEMA_DIGEST_SQL, &[])?;
        let mine = BackgroundWorker::transaction(catalog::schema_digest)?;
        let differ: Vec<String> = mine
            .iter()
            .filter(|(t, d)| {
                theirs.iter().any(|row| {
                    row.first().cloned().flatten().as_deref() == Some(t.as_str())
                        && row.get(1).cloned().flatten().as_deref() != Some(d.as_str())
                })
            })
            .map(|(t, _)| t.clone())
            .collect();
        if !differ.is_empty() {
            s.schema_diff = Some(differ.join(", "));
        }
        // How far the member has applied this node's WAL, then where this node's WAL is:
        // read in that order, a server that did not go back in time is always ahead.
        if let Some(applied) = r
            .scalar(
                "SELECT o.remote_lsn::text FROM pg_catalog.pg_subscription s
             JOIN pg_catalog.pg_replication_origin_status o ON o.external_id = 'pg_' || s.oid
             WHERE s.subname = $1",
                &[Some(&subscription_name(me, &m.name))],
            ) // (superusers only: a member reached otherwise just gives no answer)
            .ok()
            .flatten()
        {
            let a = applied.clone();
            let mine = BackgroundWorker::transaction(move || {
                crate::spi::one::<String>(
                    "SELECT pg_catalog.pg_current_wal_lsn()::text WHERE pg_catalog.pg_current_wal_lsn() < $1::pg_lsn",
                    &[a.as_str().into()],
                )
            })?;
            applied_past_me = mine.map(|mine| (applied, mine));
        }
        // The members it knows as ready, for discovery.
        their_members = r.ready_members()?;
        s.reachable = true;
        Ok(())
    })();
    if let Err(e) = probe {
        s.error = Some(e.to_string());
    }
    Sample {
        recorded: s,
        their_members,
        applied_past_me,
    }
}
