//! What the worker's probe last saw of each member (table federation.peer_probe), which
//! federation.status() reads.

use crate::errors::FedResult;
use crate::spi;

/// One member as the probe saw it.
pub struct ProbeSample {
    pub name: String,
    /// When the worker looked at the member (not when it wrote the sample): a member that
    /// became ready after this is judged by the next sample.
    pub looked_at: std::time::SystemTime,
    /// This node's subscription to the member (its error counters are recorded).
    pub subscription: String,
    pub reachable: bool,
    pub error: Option<String>,
    pub peer_lsn: Option<String>,
    pub slot_found: Option<bool>,
    pub wal_status: Option<String>,
    pub confirmed: Option<String>,
    pub retained: Option<String>,
    pub estimates: Option<String>,
    /// The member's pg_postmaster_start_time(), when reached: a change between two probes is a
    /// restart, whose end of stream this node's apply worker counted as an error.
    pub started_at: Option<String>,
    /// Federated tables whose columns differ between this node and the member (None: the
    /// same, or not compared).
    pub schema_diff: Option<String>,
}

/// The columns of every federated table, as (qualified name, digest of its columns' names,
/// types and NOT NULL): the same query here and on a member, comparable across versions.
pub const SCHEMA_DIGEST_SQL: &str = "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname),
        pg_catalog.md5(pg_catalog.string_agg(a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
                       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, ',' ORDER BY a.attname))
 FROM federation.federated_table t JOIN pg_catalog.pg_class c ON c.oid = t.relid
 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 JOIN pg_catalog.pg_attribute a ON a.attrelid = t.relid AND a.attnum > 0 AND NOT a.attisdropped
 GROUP BY 1 ORDER BY 1";

/// This node's [`SCHEMA_DIGEST_SQL`].
pub fn schema_digest() -> FedResult<Vec<(String, String)>> {
    spi::rows(SCHEMA_DIGEST_SQL, &[], |r| {
        Ok((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
        ))
    })
}

/// A time as timestamptz input: seconds since the epoch, for to_timestamp().
fn looked_at_sql(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

/// The upsert of one probe sample into federation.peer_probe. From 0.7.0's SQL it also tells
/// the apply errors that are only a member going away (a clean shutdown, a restart) from the
/// others (sql/catalog.sql, peer_probe): those are not counted, and only confirmed errors
/// (the next probe found the member up and not restarted) make an error streak.
fn record_probe_sql(apart: bool) -> String {
    // The member went away around this probe: unreachable now or last time, or started again.
    let gone = "(NOT EXCLUDED.reachable OR NOT p.reachable
                 OR (EXCLUDED.peer_started_at IS NOT NULL AND p.peer_started_at IS NOT NULL
                     AND EXCLUDED.peer_started_at <> p.peer_started_at))";
    let reset = "EXCLUDED.apply_errors < p.apply_errors";
    let (columns, values, set, grew) = if apart {
        (
            ", peer_started_at",
            // As seconds since 1970: the member's text of a timestamp follows its DateStyle,
            // which this server may read otherwise, or not at all.
            ", pg_catalog.to_timestamp($12::float8)",
            format!(
                ", peer_started_at = coalesce(EXCLUDED.peer_started_at, p.peer_started_at),
                 disconnect_errors = CASE WHEN {reset} THEN 0
                     WHEN {gone} THEN p.disconnect_errors + p.unconfirmed_errors + EXCLUDED.apply_errors - p.apply_errors
                     ELSE p.disconnect_errors END,
                 unconfirmed_errors = CASE WHEN {reset} OR {gone} THEN 0
                     ELSE EXCLUDED.apply_errors - p.apply_errors END"
            ),
            format!("(EXCLUDED.sync_errors > p.sync_errors OR (p.unconfirmed_errors > 0 AND NOT {gone} AND NOT {reset}))"),
        )
    } else {
        (
            "",
            "",
            String::new(),
            "EXCLUDED.apply_errors + EXCLUDED.sync_errors > p.apply_errors + p.sync_errors"
                .to_string(),
        )
    };
    format!(
        "WITH st AS (
             SELECT coalesce(max(apply_error_count), 0) AS apply_errors, coalesce(max(sync_error_count), 0) AS sync_errors
             FROM pg_catalog.pg_stat_subscription_stats WHERE subname = $9)
         INSERT INTO federation.peer_probe AS p (node_name, probed_at, reachable, probe_error, unreachable_since, peer_lsn,
                 slot_found, slot_wal_status, slot_confirmed_lsn, slot_retained_bytes, apply_errors, sync_errors, errors_seen_at,
                 row_estimates{columns})
         SELECT $1, pg_catalog.to_timestamp($11::float8), $2, $3, CASE WHEN $2 THEN NULL ELSE pg_catalog.to_timestamp($11::float8) END,
                $4::pg_lsn, $5, $6, $7::pg_lsn, $8::numeric, st.apply_errors, st.sync_errors, NULL,
                $10::jsonb{values} FROM st
         ON CONFLICT (node_name) DO UPDATE SET probed_at = EXCLUDED.probed_at, reachable = EXCLUDED.reachable,
             probe_error = EXCLUDED.probe_error,
             unreachable_since = CASE WHEN EXCLUDED.reachable THEN NULL ELSE coalesce(p.unreachable_since, EXCLUDED.probed_at) END, peer_lsn = EXCLUDED.peer_lsn, slot_found = EXCLUDED.slot_found,
             slot_wal_status = EXCLUDED.slot_wal_status, slot_confirmed_lsn = EXCLUDED.slot_confirmed_lsn,
             slot_retained_bytes = EXCLUDED.slot_retained_bytes, row_estimates = EXCLUDED.row_estimates,
             error_streak = CASE WHEN {grew} THEN p.error_streak + 1 ELSE 0 END,
             errors_seen_at = CASE WHEN {grew} THEN EXCLUDED.probed_at ELSE p.errors_seen_at END{set},
             apply_errors = EXCLUDED.apply_errors, sync_errors = EXCLUDED.sync_errors"
    )
}

/// Records the samples (and forgets members that are gone), with this node's error counters
/// of its subscription to each member.
pub fn record_probe(samples: &[ProbeSample]) -> FedResult<()> {
    spi::exec_args(
        "DELETE FROM federation.peer_probe p WHERE NOT EXISTS (SELECT 1 FROM federation.node n WHERE n.node_name = p.node_name)",
        &[],
    )?;
    let upsert = record_probe_sql(crate::catalog::sql_0_7_installed()?);
    for s in samples {
        spi::exec_args(
            &upsert,
            &[
                s.name.as_str().into(),
                s.reachable.into(),
                s.error.clone().into(),
                s.peer_lsn.clone().into(),
                s.slot_found.into(),
                s.wal_status.clone().into(),
                s.confirmed.clone().into(),
                s.retained.clone().into(),
                s.subscription.as_str().into(),
                s.estimates.clone().into(),
                looked_at_sql(s.looked_at).into(),
                s.started_at.clone().into(),
            ],
        )?;
        if crate::catalog::sql_0_4_installed()? {
            spi::exec_args(
                "UPDATE federation.peer_probe SET schema_diff = $2,
                        schema_diff_since = CASE WHEN $2 IS NULL THEN NULL ELSE coalesce(schema_diff_since, probed_at) END
                 WHERE node_name = $1",
                &[s.name.as_str().into(), s.schema_diff.clone().into()],
            )?;
        }
    }
    Ok(())
}
