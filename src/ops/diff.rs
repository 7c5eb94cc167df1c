//! Repair by difference (`federation.resync(node, mode => 'diff')`, and the worker's healing
//! after a failover): this node's copies of an owner's partitions are made equal to the
//! owner's by moving only the rows that differ, instead of emptying and copying them whole.
//!
//! 1. This node's subscription to the owner is dropped (its slot kept), and the slot is made
//!    anew over a replication connection that exports the snapshot it starts from
//!    (`CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')`, as PostgreSQL's own table
//!    synchronisation does). The owner keeps writing; what it writes after the snapshot
//!    reaches this node through the new slot.
//! 2. Each copy is compared with the owner's partition as of that snapshot, narrowing down:
//!    rows are grouped into buckets by a hash of their key (about 64 rows a bucket; the key
//!    types' own hash functions where they have them, [`bucket_hash`]), and each side
//!    computes every bucket's row count and XOR of row hashes ([`Copy::digest_sql`]: the
//!    aggregate of ops::digest where both servers have it), both at once; only the rows of
//!    buckets that differ are read,
//!    as (key, row hash); and only the owner's rows this copy lacks or holds otherwise are
//!    read in full.
//! 3. In one transaction here: the rows this copy holds that the owner lacks or holds
//!    otherwise move to federation.set_aside (a repair never deletes a row: the owner may
//!    have lost it in a failover, docs/runbook.md), and the owner's versions of the missing
//!    and differing rows are inserted.
//! 4. The subscription is created again on the new slot without an initial copy.
//!
//! Rows are hashed through their binary form (`hashtextextended` of `record_send`'s bytes,
//! in hex: about 1.5x faster than their text) where every column has a built-in type and both
//! servers run the same major (the binary form then is the same on both), else through their
//! text, as verify() does; columns in name order, the same on every node. Not through the
//! types' own hash functions: those are made for hash tables, not to tell values apart
//! (numeric's ignores the sign). Two rows that differ but hash the same (about 2^-64 per
//! pair) would be missed.

use crate::catalog;
use crate::errors::{FedError, FedResult, OrRaise};
use crate::remote::Remote;
use crate::replication;
use crate::spi::{self, quote_ident, quote_literal};
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};

/// Why a row is in federation.set_aside after a repair by difference.
const DIFFERED: &str = "held by this node's copy when resync (diff) compared it with the owner's partition; the owner lacks it or holds it otherwise";

/// The advisory lock a repair holds (with the subscription's name hashed) while this node's
/// subscription to the owner is away; status() reads it (sql/status.sql).
const REPAIR_LOCK: i32 = crate::locks::REPAIR;
const REPAIR_LOCK_KEY: &str = crate::locks::NAMED_KEY;

/// Whether a repair by difference of the copies that `subscription` carries holds its lock on
/// this server (on the repairing node and on the owner): status() says "repairing" then.
#[pg_extern(stable, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn repair_in_progress(subscription: &str) -> bool {
    crate::locks::named_held(REPAIR_LOCK, subscription).or_raise()
}

/// Rows per bucket aimed at: the narrower the buckets, the fewer equal rows the second
/// pass reads around each difference, the more digests the first pass exchanges. 16: for
/// 1,000,000 rows with 1,000 differences the second pass halves against 64 (0.18 -> 0.09 s)
/// while the digests stay at 0.4 s; at 8 the digests grow more than the pass gains
/// (BENCHMARKS.md, "Narrower buckets").
const ROWS_PER_BUCKET: f64 = 16.0;
const MIN_BUCKETS: u64 = 1 << 10;
/// For the digests' aggregation (one group per bucket) on both servers, for this repair only:
/// PostgreSQL's default 4MB spills to disk from about 30,000 buckets.
const WORK_MEM: &str = "64MB";
const MAX_BUCKETS: u64 = 1 << 20;

/// What a repair found and did, for its NOTICE and the benchmark.
#[derive(Default, Debug)]
pub struct Report {
    pub rows_compared: i64,
    pub buckets: u64,
    pub buckets_differing: usize,
    pub rows_copied: usize,
    pub rows_set_aside: usize,
    /// Where the new slot starts: the copies equal the owner's partitions as of this LSN.
    pub from_lsn: String,
    /// Seconds spent in each step, in order.
    pub steps: Vec<(&'static str, f64)>,
    /// Whether the repair had the new subscription's apply worker started (PostgreSQL 15, its
    /// launcher throttled: replication::hasten_apply_worker).
    pub worker_started_here: bool,
}

impl Report {
    fn step(&mut self, name: &'static str, since: &mut std::time::Instant) {
        self.steps.push((name, since.elapsed().as_secs_f64()));
        *since = std::time::Instant::now();
    }

    /// The steps' times, for the NOTICE ("slot 0.02 s, digests 0.61 s, ...").
    pub fn steps_shown(&self) -> String {
        self.steps
            .iter()
            .map(|(n, s)| format!("{n} {s:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
            + if self.worker_started_here {
                "; the apply worker started by the repair, the launcher being throttled"
            } else {
                ""
            }
    }
}

/// One copy on this node of one of the owner's partitions.
pub(crate) struct Copy {
    pub(crate) relid: pg_sys::Oid,
    /// The federated table, schema-qualified (names the owner's partition there).
    pub(crate) table: String,
    /// This node's copy, as SQL.
    pub(crate) copy: String,
    /// The columns that identify a row, and every stored column, quoted, in name order; each
    /// stored column's name and type as SQL (for moving rows through their text, exactly).
    pub(crate) key: Vec<String>,
    pub(crate) columns: Vec<String>,
    pub(crate) names: Vec<String>,
    pub(crate) types: Vec<String>,
    /// Whether rows are hashed through their binary form (module docs), else their text.
    pub(crate) binary: bool,
    /// A hash of the key's columns without the node column (the same in every row of a
    /// partition) by the types' own hash functions, when each has a built-in type with one
    /// ([`bucket_hash`]): 3x (several columns) to 15x (one) cheaper than hashing the key's
    /// binary form. Only with `binary` (same major: the same hash functions on both).
    pub(crate) bucket_hash: Option<String>,
}

impl Copy {
    /// A hash of the row `ROW(cols)`, through its binary form or its text.
    fn hash_of(&self, cols: &[String], seed: u8) -> String {
        let cols = cols.join(", ");
        if self.binary {
            format!("pg_catalog.hashtextextended(pg_catalog.encode(pg_catalog.record_send(ROW({cols})), 'hex'), {seed})")
        } else {
            format!("pg_catalog.hashtextextended(ROW({cols})::text, {seed})")
        }
    }

    /// The bucket of a row: a hash of its key, masked. A bucket only groups rows: two keys in
    /// one bucket are still told apart by the rows' own hashes, and a key that fell into
    /// another bucket on the other server would make both buckets differ (and be read), so
    /// the types' hashes are good enough here, where they are not for the rows.
    fn bucket(&self, mask: u64) -> String {
        match (&self.bucket_hash, self.binary) {
            (Some(hash), true) => format!("({hash} & {mask})"),
            _ => format!("({} & {mask})", self.hash_of(&self.key, 1)),
        }
    }

    /// A row's hash.
    fn row_hash(&self) -> String {
        self.hash_of(&self.columns, 0)
    }

    /// A row's key as text (how rows are matched across the two servers).
    fn key_text(&self, alias: &str) -> String {
        let keyed: Vec<String> = self.key.iter().map(|k| format!("{alias}.{k}")).collect();
        format!("ROW({})::text", keyed.join(", "))
    }

    /// A row of alias `r` as a jsonb object of its columns' text: moved this way, every value
    /// arrives exactly as the owner holds it (json keeps its spacing, numeric its scale).
    fn row_as_text(&self) -> String {
        let names: Vec<String> = self.names.iter().map(|n| quote_literal(n)).collect();
        let values: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("r.{c}::text"))
            .collect();
        format!(
            "pg_catalog.jsonb_object(ARRAY[{}]::text[], ARRAY[{}]::text[])",
            names.join(", "),
            values.join(", ")
        )
    }

    /// The columns of an element `e` of [`Copy::row_as_text`]'s array, typed again.
    fn row_from_text(&self) -> String {
        self.names
            .iter()
            .zip(&self.types)
            .map(|(n, t)| format!("(e ->> {})::{t}", quote_literal(n)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Moves the rows of this copy at the ctids `$1` (a tid[]) to federation.set_aside, in
    /// the name of node `$4`, for table `$2` (oid) / `$3` (name), with reason `$5`.
    pub(crate) fn set_aside_sql(&self) -> String {
        format!(
            "WITH moved AS (DELETE FROM ONLY {} t WHERE t.ctid = ANY ($1::tid[]) RETURNING t)
             INSERT INTO federation.set_aside (relid, table_name, node, row_data, reason)
             SELECT $2::oid, $3, $4, pg_catalog.to_jsonb(m.t), $5 FROM moved m",
            self.copy
        )
    }

    /// Inserts into this copy the rows of `$1`, a jsonb array of [`Copy::row_as_text`]
    /// objects, as they are (identity columns included; generated ones computed here).
    pub(crate) fn insert_sql(&self) -> String {
        self.insert_from_sql("SELECT pg_catalog.jsonb_array_elements($1::jsonb)")
    }

    /// Inserts into this copy the rows `query` returns, one [`Copy::row_as_text`] object
    /// (jsonb) each.
    pub(crate) fn insert_from_sql(&self, query: &str) -> String {
        format!(
            "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE
             SELECT {} FROM ({query}) r(e)",
            self.copy,
            self.columns.join(", "),
            self.row_from_text()
        )
    }

    /// Every row of `part` as (key, row hash, the row as [`Copy::row_as_text`]).
    pub(crate) fn all_rows_sql(&self, part: &str) -> String {
        format!(
            "SELECT {}, {}::text, {}::text FROM ONLY {part} r",
            self.key_text("r"),
            self.row_hash(),
            self.row_as_text()
        )
    }

    /// (ctid, key, row hash) of every row of `part`.
    pub(crate) fn keys_sql(&self, part: &str) -> String {
        format!(
            "SELECT r.ctid::text, {}, {}::text FROM ONLY {part} r",
            self.key_text("r"),
            self.row_hash()
        )
    }

    /// Every bucket's rows and XOR of row hashes in `part`, as one text
    /// ("bucket:rows:xor,..."): one value to send, whatever the number of buckets. With
    /// `aggregate` (federation_internal.bucket_digest on both servers: ops::digest) in one
    /// array and from each row's bytes; else by GROUP BY and each row's hash as SQL computes
    /// it. Both sides of a comparison must use the same.
    fn digest_sql(&self, part: &str, mask: u64, aggregate: bool) -> String {
        if aggregate {
            let cols = self.columns.join(", ");
            let row = if self.binary {
                format!("pg_catalog.record_send(ROW({cols}))")
            } else {
                format!("pg_catalog.convert_to(ROW({cols})::text, 'UTF8')")
            };
            return format!(
                "SELECT coalesce(federation_internal.bucket_digest({}, {row}, {}), '') FROM ONLY {part}",
                self.bucket(mask),
                mask + 1
            );
        }
        format!(
            "SELECT coalesce(pg_catalog.string_agg(b || ':' || n || ':' || x, ','), '') FROM (
                 SELECT b, count(*) AS n, pg_catalog.bit_xor(h) AS x FROM (
                     SELECT {} AS b, {} AS h FROM ONLY {part}) d GROUP BY b) e",
            self.bucket(mask),
            self.row_hash()
        )
    }

    /// (ctid, key, row hash) of the rows of `part` in the buckets `$1`. The ctid finds the
    /// row again, without a scan, while the snapshot (the owner) or the stopped subscription
    /// (this node) holds the partition still.
    fn rows_sql(&self, part: &str, mask: u64) -> String {
        format!(
            "SELECT r.ctid::text, {}, {}::text FROM ONLY {part} r WHERE {} = ANY ($1::bigint[])",
            self.key_text("r"),
            self.row_hash(),
            self.bucket(mask)
        )
    }
}

/// This node's copies of `owner`'s partitions, with what the comparison needs.
/// `same_major`: both servers run the same PostgreSQL major (binary forms compare).
pub(crate) fn copies_of(owner: &str, same_major: bool) -> FedResult<Vec<Copy>> {
    let rows = spi::rows(
        "SELECT p.relid, pg_catalog.format('%I.%I', tn.nspname, t.relname),
                pg_catalog.format('%I.%I', cn.nspname, c.relname), p.partition::oid
         FROM federation.partition p
         JOIN pg_catalog.pg_class c ON c.oid = p.partition JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
         JOIN pg_catalog.pg_class t ON t.oid = p.relid JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
         WHERE p.node_name = $1 ORDER BY 2",
        &[owner.into()],
        |r| {
            Ok((
                r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<pg_sys::Oid>(4)?.unwrap_or(pg_sys::InvalidOid),
            ))
        },
    )?;
    let mut out = vec![];
    for (relid, table, copy, part) in rows {
        let stored: Vec<(String, String)> = spi::text_pairs(
            "SELECT attname::text, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attname",
            &[part.into()],
        )?;
        let columns: Vec<String> = stored.iter().map(|(c, _)| quote_ident(c)).collect();
        let names: Vec<String> = stored.iter().map(|(c, _)| c.clone()).collect();
        let types: Vec<String> = stored.into_iter().map(|(_, t)| t).collect();
        // The primary key, else the replica identity's index, else the whole row.
        let key_columns = key_columns(part)?;
        let key: Vec<String> = key_columns.iter().map(|(c, _)| quote_ident(c)).collect();
        let key = if key.is_empty() { columns.clone() } else { key };
        // Every column of a built-in type (record_send writes each column's type OID).
        let builtin = spi::one::<bool>(
            "SELECT coalesce(pg_catalog.bool_and(a.atttypid < 16384), true) FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            &[part.into()],
        )?
        .unwrap_or(false);
        let bucket_hash = bucket_hash(relid, &key_columns)?;
        out.push(Copy {
            relid,
            table,
            copy,
            key,
            columns,
            names,
            types,
            binary: builtin && same_major,
            bucket_hash,
        });
    }
    Ok(out)
}

/// The key columns of partition `part`, in name order, with their types (a domain's base
/// type): its primary key's, else its replica identity index's; none without either.
fn key_columns(part: pg_sys::Oid) -> FedResult<Vec<(String, String)>> {
    spi::text_pairs(
        "SELECT a.attname::text, (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END)::pg_catalog.regtype::text
         FROM pg_catalog.pg_index i
         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
         WHERE i.indrelid = $1 AND i.indexrelid = (
             SELECT x.indexrelid FROM pg_catalog.pg_index x WHERE x.indrelid = $1 AND (x.indisprimary OR x.indisreplident)
             ORDER BY x.indisprimary DESC LIMIT 1)
         ORDER BY a.attname",
        &[part.into()],
    )
}

/// Key column types with a built-in extended hash function (a domain over one counts as it),
/// and that function where it takes exactly the type (date's and timestamptz's take another,
/// so a key of one of those goes through `hash_record_extended`, which calls theirs): the key
/// columns that may put rows in buckets ([`Copy::bucket`]).
const HASHABLE_KEY_TYPES: [(&str, Option<&str>); 14] = [
    ("int2", Some("hashint2extended")),
    ("int4", Some("hashint4extended")),
    ("int8", Some("hashint8extended")),
    ("oid", Some("hashoidextended")),
    ("uuid", Some("uuid_hash_extended")),
    ("text", Some("hashtextextended")),
    ("varchar", Some("hashtextextended")),
    ("bpchar", Some("hashbpcharextended")),
    ("name", Some("hashnameextended")),
    ("numeric", Some("hash_numeric_extended")),
    ("date", None),
    ("timestamp", Some("timestamp_hash_extended")),
    ("timestamptz", None),
    ("interval", Some("interval_hash_extended")),
];

/// The bucket hash of a partition of federated table `relid` ([`Copy::bucket_hash`]): its
/// `key` columns ([`key_columns`]) without the node column, when every one
/// has a type of [`HASHABLE_KEY_TYPES`]: that type's hash function for one column,
/// `hash_record_extended` of them all for several. None otherwise (or before PostgreSQL 14,
/// which lacks `hash_record_extended`).
fn bucket_hash(relid: pg_sys::Oid, key: &[(String, String)]) -> FedResult<Option<String>> {
    if pg_sys::PG_VERSION_NUM < 140000 {
        return Ok(None);
    }
    let node_column = catalog::node_column(relid)?;
    let cols: Vec<&(String, String)> = key
        .iter()
        .filter(|(c, _)| Some(c) != node_column.as_ref())
        .collect();
    let hash_fn = |t: &str| {
        let t = match t {
            "smallint" => "int2",
            "integer" => "int4",
            "bigint" => "int8",
            "character varying" => "varchar",
            "character" => "bpchar",
            "timestamp without time zone" => "timestamp",
            "timestamp with time zone" => "timestamptz",
            other => other,
        };
        HASHABLE_KEY_TYPES
            .iter()
            .find(|(ty, _)| *ty == t)
            .map(|(_, f)| *f)
    };
    let Some(fns) = cols
        .iter()
        .map(|(_, t)| hash_fn(t))
        .collect::<Option<Vec<Option<&str>>>>()
    else {
        return Ok(None);
    };
    let quoted: Vec<String> = cols.iter().map(|(c, _)| quote_ident(c)).collect();
    Ok(match (quoted.as_slice(), fns.as_slice()) {
        ([], _) => None,
        ([col], [Some(f)]) => Some(format!("pg_catalog.{f}({col}, 1)")),
        (cols, _) => Some(format!(
            "pg_catalog.hash_record_extended(ROW({}), 1)",
            cols.join(", ")
        )),
    })
}

/// Whether the server behind `on` has federation_internal.bucket_digest (0.9.0 on).
fn has_digest_aggregate(on: &mut Remote) -> FedResult<bool> {
    Ok(on
        .scalar(
            "SELECT (pg_catalog.to_regprocedure('federation_internal.bucket_digest(bigint,bytea,integer)') IS NOT NULL)::text",
            &[],
        )?
        .as_deref()
        == Some("true"))
}

type Digests = HashMap<u64, (u64, i64)>;

/// The buckets of a digest ([`Copy::digest_sql`]).
fn digests(text: Option<String>) -> Digests {
    text.unwrap_or_default()
        .split(',')
        .filter_map(|e| {
            let mut f = e.split(':');
            Some((
                f.next()?.parse().ok()?,
                (f.next()?.parse().ok()?, f.next()?.parse().ok()?),
            ))
        })
        .collect()
}

/// Makes this node's copies of `owner`'s partitions equal to the owner's by moving only
/// what differs, and subscribes again from there (the module's steps). `here` is this node
/// (its own address), `there` the owner; `sub` the subscription (and slot) by which this
/// node receives the owner's partitions.
pub fn repair(
    here: &mut Remote,
    there: &mut Remote,
    owner: &str,
    owner_conninfo: &str,
    sub: &str,
) -> FedResult<Report> {
    if !catalog::has_relation("federation.set_aside")? {
        return Err(FedError::prerequisite(format!(
            "a repair by difference sets rows aside, and this database's pg_federation {} cannot",
            catalog::extension_version()?
        ))
        .hint("Update the extension first (ALTER EXTENSION pg_federation UPDATE), or resync without mode => 'diff'."));
    }
    let mut t = std::time::Instant::now();
    let mut steps = Report::default();
    let major = |r: &mut Remote| replication::server_version_num(r).map(|v| v / 10000);
    let same_major = major(here)? == major(there)?;
    let copies = copies_of(owner, same_major)?;
    // While the subscription is away, status() here says "repairing" (sql/status.sql), not
    // "no subscription"; held by this session, so it ends with it whatever happens.
    // The same on the owner, whose status() would say "slot gone" while it is made anew.
    for on in [&mut *here, &mut *there] {
        on.query(
            &format!("SELECT pg_catalog.pg_advisory_lock({REPAIR_LOCK}, {REPAIR_LOCK_KEY})"),
            &[Some(sub)],
        )?;
    }
    replication::drop_subscription_keep_slot(here, sub)?;
    crate::wait::poll_until(
        &format!("the old replication slot on \"{owner}\" to be released"),
        std::time::Duration::from_secs(60),
        "Run the resync again once the old slot is released.",
        || Ok(!replication::slot_active(there, sub)?),
    )?;
    let slot = replication::slot_with_snapshot(
        there,
        owner_conninfo,
        &format!("member \"{owner}\""),
        sub,
    )?;
    let mut snap = Remote::connect(owner_conninfo, &format!("member \"{owner}\""))?;
    snap.exec(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {};
         SET LOCAL work_mem = '{WORK_MEM}'; SET LOCAL jit = off",
        quote_literal(&slot.snapshot)
    ))?;
    here.exec(&format!("SET work_mem = '{WORK_MEM}'; SET jit = off"))?;
    // Keys are matched, and rows moved, through their text: alike on both sides.
    here.same_text()?;
    snap.same_text()?;
    // The digest aggregate where both servers have it (a member still on 0.8.0 has not).
    let aggregate = has_digest_aggregate(here)? && has_digest_aggregate(&mut snap)?;
    steps.step("new slot", &mut t);
    let mut report = Report {
        from_lsn: slot.lsn.clone(),
        steps: steps.steps,
        ..Report::default()
    };
    drop(slot);
    let mut patches = vec![];
    for c in &copies {
        let Some(part) = snap.partition_of(&c.table, owner)? else {
            return Err(FedError::prerequisite(format!(
                "\"{owner}\" has no partition of {} to compare this node's copy {} with",
                c.table, c.copy
            ))
            .hint("federation.verify() shows the copies; a schema change still spreading finishes first."));
        };
        let estimate = snap
            .scalar(
                "SELECT greatest(c.reltuples, 0)::bigint::text FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1)",
                &[Some(&part)],
            )?
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        let buckets = ((estimate / ROWS_PER_BUCKET) as u64)
            .next_power_of_two()
            .clamp(MIN_BUCKETS, MAX_BUCKETS);
        let mask = buckets - 1;
        report.buckets += buckets;
        // Both sides at once.
        snap.send(&c.digest_sql(&part, mask, aggregate), &[])?;
        here.send(&c.digest_sql(&c.copy, mask, aggregate), &[])?;
        let theirs = digests(
            snap.receive()?
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next().flatten()),
        );
        let mine = digests(
            here.receive()?
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next().flatten()),
        );
        report.step("bucket digests", &mut t);
        report.rows_compared += theirs.values().map(|(n, _)| *n as i64).sum::<i64>();
        let differing: Vec<u64> = theirs
            .keys()
            .chain(mine.keys())
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|b| theirs.get(b) != mine.get(b))
            .collect();
        report.buckets_differing += differing.len();
        if differing.is_empty() {
            continue;
        }
        let list = format!(
            "{{{}}}",
            differing
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        // The rows of those buckets, by key: (ctid, row hash) from both sides at once.
        snap.send(&c.rows_sql(&part, mask), &[Some(&list)])?;
        here.send(&c.rows_sql(&c.copy, mask), &[Some(&list)])?;
        let theirs = by_key(snap.receive()?);
        let mine = by_key(here.receive()?);
        report.step("rows of differing buckets", &mut t);
        // Mine that the owner lacks or holds otherwise: set aside. Theirs that I lack or
        // hold otherwise: copied (their rows read in full, only those).
        let set_aside: Vec<&str> = mine
            .iter()
            .filter(|(k, (_, h))| theirs.get(*k).map(|(_, h)| h) != Some(h))
            .map(|(_, (tid, _))| tid.as_str())
            .collect();
        let wanted: Vec<&str> = theirs
            .iter()
            .filter(|(k, (_, h))| mine.get(*k).map(|(_, h)| h) != Some(h))
            .map(|(_, (tid, _))| tid.as_str())
            .collect();
        let copy_in = if wanted.is_empty() {
            "[]".to_string()
        } else {
            snap.scalar(
                &format!(
                    "SELECT coalesce(pg_catalog.jsonb_agg({}), '[]')::text FROM ONLY {part} r
                     WHERE r.ctid = ANY ($1::tid[])",
                    c.row_as_text()
                ),
                &[Some(&tid_array(&wanted))],
            )?
            .unwrap_or_else(|| "[]".into())
        };
        report.step("rows to copy", &mut t);
        report.rows_set_aside += set_aside.len();
        report.rows_copied += wanted.len();
        patches.push(Patch {
            copy: c,
            set_aside: tid_array(&set_aside),
            copy_in,
        });
    }
    apply(here, owner, &patches)?;
    snap.exec("COMMIT")?;
    report.step("patch", &mut t);
    replication::subscribe_from_snapshot(here, sub, owner, owner_conninfo)?;
    // "Repairing" until the apply worker runs: a status() that read the catalog before the
    // subscription was committed must not find the lock gone (it would say "no
    // subscription"), and the worker starting is what "replication resumes" means. Should it
    // not start within the bound, status() tells why in its own words. PostgreSQL 15's
    // launcher may hold the worker back for up to wal_retrieve_retry_interval after a
    // failover: then the repair has it started (replication::hasten_apply_worker).
    let started_here =
        replication::hasten_apply_worker(here, sub, std::time::Duration::from_secs(10))?;
    // And until no status() here still judges from a snapshot taken before the subscription
    // was made (it reads the lock live).
    crate::wait::older_statements_ended(here)?;
    for on in [&mut *here, &mut *there] {
        on.query(
            &format!("SELECT pg_catalog.pg_advisory_unlock({REPAIR_LOCK}, {REPAIR_LOCK_KEY})"),
            &[Some(sub)],
        )?;
    }
    report.worker_started_here = started_here;
    report.step("subscription", &mut t);
    Ok(report)
}

/// What one copy gets: its rows to set aside (a tid[]), the owner's rows to insert (a jsonb
/// array).
struct Patch<'a> {
    copy: &'a Copy,
    set_aside: String,
    copy_in: String,
}

/// The rows of [`Copy::rows_sql`] by key: (ctid, row hash).
fn by_key(rows: Vec<Vec<Option<String>>>) -> HashMap<String, (String, String)> {
    rows.into_iter()
        .map(|r| {
            let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            (get(1), (get(0), get(2)))
        })
        .collect()
}

/// A tid[] literal of ctids as text ("(0,1)").
pub(crate) fn tid_array(tids: &[&str]) -> String {
    let quoted: Vec<String> = tids.iter().map(|t| format!("\"{t}\"")).collect();
    format!("{{{}}}", quoted.join(","))
}

/// Every copy's patch in one transaction on this node (its own address): all or nothing,
/// committed before the subscription resumes on the new slot. Replica mode passes the guards.
fn apply(here: &mut Remote, owner: &str, patches: &[Patch]) -> FedResult<()> {
    if patches.is_empty() {
        return Ok(());
    }
    here.exec("BEGIN; SET LOCAL session_replication_role = replica")?;
    let r = (|| -> FedResult<()> {
        for p in patches {
            let c = p.copy;
            here.query(
                &c.set_aside_sql(),
                &[
                    Some(&p.set_aside),
                    Some(&c.relid.to_u32().to_string()),
                    Some(&c.table),
                    Some(owner),
                    Some(DIFFERED),
                ],
            )?;
            here.query(&c.insert_sql(), &[Some(&p.copy_in)])?;
        }
        Ok(())
    })();
    match r {
        Ok(()) => here.exec("COMMIT"),
        Err(e) => {
            let _ = here.exec("ROLLBACK");
            Err(e)
        }
    }
}
