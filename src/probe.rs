//! What the background worker samples every few seconds for federation.status(): for each
//! member, this node's slot there (how far this node has confirmed, the WAL the member keeps
//! for it, whether the slot was lost) and the error counters of this node's subscription to
//! it. PostgreSQL keeps only counters, so the worker notes when a counter grows: that is the
//! "when" of the last error; its message is in this server's log.

use crate::catalog::{self, Member};
use crate::errors::FedResult;
use crate::membership::subscription_name;
use crate::remote::Remote;
use crate::sql;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

/// One member's sample.
struct Sample {
    name: String,
    reachable: bool,
    error: Option<String>,
    peer_lsn: Option<String>,
    slot_found: Option<bool>,
    wal_status: Option<String>,
    confirmed: Option<String>,
    retained: Option<String>,
    estimates: Option<String>,
    /// The member's ready members (name, conninfo).
    their_members: Vec<(String, String)>,
}

/// Probes every member and records the samples; never raises (a failed probe is itself the
/// finding).
pub fn probe_members() {
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
        return;
    };
    let mut samples: Vec<Sample> = members.iter().map(|m| sample(&me, m)).collect();
    // Same rhythm and connections, other concern: members this node should know but does
    // not, as the ready members see them.
    let seen: Vec<(String, String)> = members
        .iter()
        .zip(samples.iter_mut())
        .filter(|(m, _)| m.state == "ready")
        .flat_map(|(_, s)| std::mem::take(&mut s.their_members))
        .collect();
    let me2 = me.clone();
    let r = BackgroundWorker::transaction(move || record(&me2, &samples));
    if let Err(e) = r {
        warning!("pg_federation worker: recording the probe: {e}");
    }
    crate::discovery::discover(&me, &members, &seen);
}

fn sample(me: &str, m: &Member) -> Sample {
    let mut s = Sample {
        name: m.name.clone(),
        reachable: false,
        error: None,
        peer_lsn: None,
        slot_found: None,
        wal_status: None,
        confirmed: None,
        retained: None,
        estimates: None,
        their_members: vec![],
    };
    // A short connect timeout: a member behind a cut link must not hold up the worker.
    let probe = (|| -> FedResult<()> {
        let mut r = Remote::connect(
            &format!("connect_timeout=3 {}", m.conninfo),
            &format!("member \"{}\"", m.name),
        )?;
        let rows = r.query(
            "SELECT pg_catalog.pg_current_wal_lsn()::text, s.slot_name IS NOT NULL, s.wal_status, s.confirmed_flush_lsn::text,
                    (pg_catalog.pg_current_wal_lsn() - s.restart_lsn)::text
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
        // How many rows the member's own partitions hold, by name, for the progress of copies.
        s.estimates = r.scalar(
            "SELECT coalesce(pg_catalog.jsonb_object_agg(pg_catalog.format('%I.%I', n.nspname, c.relname), s.n_live_tup), '{}')::text
             FROM federation.partition p JOIN pg_catalog.pg_class c ON c.oid = p.partition
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid
             WHERE p.node_name = $1",
            &[Some(&m.name)],
        )?;
        // The members it knows as ready, for crate::discovery.
        s.their_members = r
            .query(
                "SELECT node_name, conninfo FROM federation.node WHERE state = 'ready' ORDER BY 1",
                &[],
            )?
            .into_iter()
            .filter_map(|row| Some((row[0].clone()?, row[1].clone()?)))
            .collect();
        s.reachable = true;
        Ok(())
    })();
    if let Err(e) = probe {
        s.error = Some(e.to_string());
    }
    s
}

fn record(me: &str, samples: &[Sample]) -> FedResult<()> {
    sql::exec_args(
        "DELETE FROM federation.peer_probe p WHERE NOT EXISTS (SELECT 1 FROM federation.node n WHERE n.node_name = p.node_name)",
        &[],
    )?;
    for s in samples {
        sql::exec_args(
            "WITH st AS (
                 SELECT coalesce(max(apply_error_count), 0) AS apply_errors, coalesce(max(sync_error_count), 0) AS sync_errors
                 FROM pg_catalog.pg_stat_subscription_stats WHERE subname = $9)
             INSERT INTO federation.peer_probe AS p (node_name, probed_at, reachable, probe_error, unreachable_since, peer_lsn,
                     slot_found, slot_wal_status, slot_confirmed_lsn, slot_retained_bytes, apply_errors, sync_errors, errors_seen_at,
                     row_estimates)
             SELECT $1, pg_catalog.clock_timestamp(), $2, $3, CASE WHEN $2 THEN NULL ELSE pg_catalog.clock_timestamp() END,
                    $4::pg_lsn, $5, $6, $7::pg_lsn, $8::numeric, st.apply_errors, st.sync_errors, NULL,
                    $10::jsonb FROM st
             ON CONFLICT (node_name) DO UPDATE SET probed_at = EXCLUDED.probed_at, reachable = EXCLUDED.reachable,
                 probe_error = EXCLUDED.probe_error,
                 unreachable_since = CASE WHEN EXCLUDED.reachable THEN NULL ELSE coalesce(p.unreachable_since, EXCLUDED.probed_at) END, peer_lsn = EXCLUDED.peer_lsn, slot_found = EXCLUDED.slot_found,
                 slot_wal_status = EXCLUDED.slot_wal_status, slot_confirmed_lsn = EXCLUDED.slot_confirmed_lsn,
                 slot_retained_bytes = EXCLUDED.slot_retained_bytes, row_estimates = EXCLUDED.row_estimates,
                 error_streak = CASE WHEN EXCLUDED.apply_errors + EXCLUDED.sync_errors > p.apply_errors + p.sync_errors
                                     THEN p.error_streak + 1 ELSE 0 END,
                 errors_seen_at = CASE WHEN EXCLUDED.apply_errors + EXCLUDED.sync_errors > p.apply_errors + p.sync_errors
                                       THEN EXCLUDED.probed_at ELSE p.errors_seen_at END,
                 apply_errors = EXCLUDED.apply_errors, sync_errors = EXCLUDED.sync_errors",
            &[
                s.name.as_str().into(),
                s.reachable.into(),
                s.error.clone().into(),
                s.peer_lsn.clone().into(),
                s.slot_found.into(),
                s.wal_status.clone().into(),
                s.confirmed.clone().into(),
                s.retained.clone().into(),
                subscription_name(&s.name, me).into(),
                s.estimates.clone().into(),
            ],
        )?;
    }
    Ok(())
}
