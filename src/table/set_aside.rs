//! Rows set aside (federation.set_aside, sql/catalog.sql): rows this node holds in another
//! node's name that it must not claim and must not drop. Today: a table enabled again after
//! a federation-wide disable() (every node kept every node's rows, as an ordinary table).
//!
//! enable() moves such rows here before the table becomes partitioned ([`move_rows`]); the
//! owner's own copy then arrives through its subscription. The worker drops a set-aside row
//! only once an identical row is in the owner's partition here ([`settle`]): that row is the
//! owner's, so nothing acknowledged is lost. A row that differs (changed on this node after
//! the disable, or gone from the owner) stays, and status() names it
//! (federation_internal.set_aside_state()) until a DBA resolves it (docs/enable.md).

use crate::catalog;
use crate::errors::{FedError, FedResult, OrRaise};
use crate::spi::{self, quote_ident};
use pgrx::prelude::*;

/// Moves every row of the ordinary table `table_sql` (oid `relid`) whose node column `col`
/// names one of `owners` into federation.set_aside, in the caller's transaction. Returns how
/// many rows of each owner moved, by owner name.
pub fn move_rows(
    relid: pg_sys::Oid,
    table_sql: &str,
    col: &str,
    owners: &[String],
    reason: &str,
) -> FedResult<Vec<(String, i64)>> {
    if owners.is_empty() {
        return Ok(vec![]);
    }
    if !exists()? {
        return Err(FedError::prerequisite(format!(
            "cannot federate {table_sql}: it holds rows in other members' names, and this database's pg_federation {} cannot set them aside",
            catalog::extension_version()?
        ))
        .hint("Update the extension first: ALTER EXTENSION pg_federation UPDATE;"));
    }
    let qcol = quote_ident(col);
    let moved = format!(
        "WITH moved AS (DELETE FROM ONLY {table_sql} t WHERE t.{qcol} = ANY($1) RETURNING t)
         , kept AS (INSERT INTO federation.set_aside (relid, table_name, node, row_data, reason)
                    SELECT $2, $3, (m.t).{qcol}, pg_catalog.to_jsonb(m.t), $4 FROM moved m
                    RETURNING node)
         SELECT node, count(*) FROM kept GROUP BY node ORDER BY node"
    );
    catalog::as_extension_owner(|| {
        spi::rows(
            &moved,
            &[
                owners.to_vec().into(),
                relid.into(),
                table_sql.into(),
                reason.into(),
            ],
            |r| {
                Ok((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<i64>(2)?.unwrap_or(0),
                ))
            },
        )
    })
}

/// The rows set aside under `from` belong to `to` now (enable() replaced the ordinary table
/// by a partitioned parent of the same name).
pub fn retarget(from: pg_sys::Oid, to: pg_sys::Oid) -> FedResult<()> {
    if !exists()? {
        return Ok(());
    }
    catalog::as_extension_owner(|| {
        spi::exec_args(
            "UPDATE federation.set_aside SET relid = $2 WHERE relid = $1",
            &[from.into(), to.into()],
        )
    })
}

/// Whether this database's pg_federation has the table (0.5.0 on; the library may be newer
/// than the SQL objects during a rolling upgrade).
fn exists() -> FedResult<bool> {
    catalog::has_relation("federation.set_aside")
}

/// (federated table, owner, its partition here) for every group of rows set aside.
fn groups() -> FedResult<Vec<(pg_sys::Oid, String, String, pg_sys::Oid)>> {
    spi::rows(
        "SELECT DISTINCT s.relid, s.table_name, s.node, p.partition::oid
         FROM federation.set_aside s
         JOIN federation.partition p ON p.relid::oid = s.relid AND p.node_name = s.node
         ORDER BY 2, 3",
        &[],
        |r| {
            Ok((
                r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<pg_sys::Oid>(4)?.unwrap_or(pg_sys::InvalidOid),
            ))
        },
    )
}

/// The set-aside rows of (`relid`, `node`) that an identical row of the owner's partition
/// `part` now holds. Looked up by the partition's key where [`key_match`] can (an index scan
/// per set-aside row), else by turning every row of the partition into jsonb (a scan of the
/// whole partition: seconds for millions of rows, at every status() and every probe).
fn matched_sql(verb: &str, part: pg_sys::Oid, part_sql: &str) -> FedResult<String> {
    Ok(match key_match(part)? {
        Some(key) => format!(
            "{verb} federation.set_aside s WHERE s.relid = $1 AND s.node = $2
             AND EXISTS (SELECT 1 FROM ONLY {part_sql} p
                         WHERE {key} AND pg_catalog.to_jsonb(p) = s.row_data)"
        ),
        None => format!(
            "{verb} federation.set_aside s WHERE s.relid = $1 AND s.node = $2
             AND s.row_data IN (SELECT pg_catalog.to_jsonb(p) FROM ONLY {part_sql} p)"
        ),
    })
}

/// `p.k = <the set-aside row's k>` for every column of the partition's primary key, when
/// each is of a type whose value is read back from the row's jsonb without any chance of an
/// error (a key whose type changed since the row was set aside simply matches nothing); None
/// for other keys.
fn key_match(part: pg_sys::Oid) -> FedResult<Option<String>> {
    let columns = spi::text_pairs(
        "SELECT a.attname::text, t.typname::text FROM pg_catalog.pg_index i
         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
         WHERE i.indrelid = $1 AND i.indisprimary",
        &[part.into()],
    )?;
    if columns.is_empty() {
        return Ok(None);
    }
    let mut conditions = vec![];
    for (name, ty) in columns {
        let value = format!("(s.row_data ->> {})", spi::quote_literal(&name));
        let pattern = match ty.as_str() {
            "int2" => "^-?[0-9]{1,4}$",
            "int4" => "^-?[0-9]{1,9}$",
            "int8" => "^-?[0-9]{1,18}$",
            "uuid" => "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
            "text" | "varchar" => "",
            _ => return Ok(None),
        };
        let column = spi::quote_ident(&name);
        conditions.push(if pattern.is_empty() {
            format!("p.{column} = {value}")
        } else {
            format!(
                "p.{column} = CASE WHEN {value} ~ '{pattern}' THEN {value}::pg_catalog.{ty} END"
            )
        });
    }
    Ok(Some(conditions.join(" AND ")))
}

/// The worker: drops every set-aside row that its owner's partition here now holds as it is.
/// Returns how many went.
pub fn settle() -> FedResult<usize> {
    if !exists()? {
        return Ok(0);
    }
    compare_kept_copies()?;
    let any = spi::one::<bool>("SELECT EXISTS (SELECT 1 FROM federation.set_aside)", &[])?;
    if any != Some(true) {
        return Ok(0);
    }
    let mut settled = 0;
    for (relid, table, node, part) in groups()? {
        let part_sql = super::oid_sql(part)?;
        let n = spi::exec_count(
            &matched_sql("DELETE FROM", part, &part_sql)?,
            &[relid.into(), node.clone().into()],
        )?;
        if n > 0 {
            log!("pg_federation: {n} row(s) of {table} set aside in node \"{node}\"'s name are in its own copy now; no longer kept aside");
        }
        settled += n;
    }
    Ok(settled)
}

/// Why a row is in federation.set_aside after its copy was made afresh.
const KEPT_FROM_COPY: &str =
    "held by this node's copy before join() or resync() copied it afresh; the fresh copy does not hold it as it was";

/// Whether the fresh copy into partition `copy` is complete here (a subscription has it
/// 'ready').
const COPY_COMPLETE: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel
                                            WHERE srrelid = $1 AND srsubstate = 'r')";

/// The copies emptied by join() or resync() (federation.kept_copy): once the fresh copy is
/// complete, the rows the old one held that the fresh one does not hold as they are go to
/// federation.set_aside, and the kept table is dropped. Compared as typed rows where the
/// columns are the same and sortable, else as jsonb (a column added meanwhile then shows as
/// a difference rather than an error).
fn compare_kept_copies() -> FedResult<()> {
    if !catalog::has_relation("federation.kept_copy")? {
        return Ok(());
    }
    let kept = spi::rows(
        "SELECT k.kept::oid, k.kept::text, k.relid, k.relid::regclass::text, k.node, k.copy
         FROM federation.kept_copy k ORDER BY k.kept_at",
        &[],
        |r| {
            Ok((
                r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<pg_sys::Oid>(3)?.unwrap_or(pg_sys::InvalidOid),
                r.get::<String>(4)?.unwrap_or_default(),
                r.get::<String>(5)?.unwrap_or_default(),
                r.get::<pg_sys::Oid>(6)?.unwrap_or(pg_sys::InvalidOid),
            ))
        },
    )?;
    for (kept_oid, kept_sql, relid, table, node, copy) in kept {
        let copy_sql = spi::one::<String>(
            "SELECT c.oid::regclass::text FROM pg_catalog.pg_class c WHERE c.oid = $1",
            &[copy.into()],
        )?;
        let fresh = match &copy_sql {
            Some(_) => spi::one::<bool>(COPY_COMPLETE, &[copy.into()])? == Some(true),
            None => true, // the copy is gone: everything kept differs
        };
        if !fresh {
            continue;
        }
        let missing = match &copy_sql {
            // The same columns, all sortable: compared as they are (only what differs is
            // turned into jsonb).
            Some(c) if comparable(kept_oid, copy)? => format!(
                "SELECT pg_catalog.to_jsonb(d) AS j FROM (SELECT * FROM {kept_sql} EXCEPT ALL SELECT * FROM ONLY {c}) d"
            ),
            Some(c) => format!(
                "SELECT pg_catalog.to_jsonb(k) AS j FROM {kept_sql} k EXCEPT ALL SELECT pg_catalog.to_jsonb(c) FROM ONLY {c} c"
            ),
            None => format!("SELECT pg_catalog.to_jsonb(k) AS j FROM {kept_sql} k"),
        };
        let moved = spi::exec_count(
            &format!(
                "INSERT INTO federation.set_aside (relid, table_name, node, row_data, reason)
                 SELECT $1, $2, $3, m.j, $4 FROM ({missing}) m"
            ),
            &[
                relid.into(),
                table.as_str().into(),
                node.as_str().into(),
                KEPT_FROM_COPY.into(),
            ],
        )?;
        spi::exec_args(
            "DELETE FROM federation.kept_copy WHERE kept = $1::oid::regclass",
            &[kept_oid.into()],
        )?;
        spi::exec(&format!("DROP TABLE {kept_sql}"))?;
        log!("pg_federation: the fresh copy of \"{node}\"'s partition of {table} is complete; {moved} row(s) the old copy held are not in it as they were and stay in federation.set_aside");
    }
    Ok(())
}

/// Whether the kept table and the copy have the same columns (names, types, order) and every
/// type is a plain, enum or domain type with a default btree operator class, so that EXCEPT
/// ALL can compare their rows as they are (arrays and composites go through jsonb).
fn comparable(kept: pg_sys::Oid, copy: pg_sys::Oid) -> FedResult<bool> {
    Ok(spi::one::<bool>(
        "WITH cols AS (
             SELECT a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod FROM pg_catalog.pg_attribute a
             WHERE a.attrelid IN ($1, $2) AND a.attnum > 0 AND NOT a.attisdropped)
         SELECT (SELECT array_agg(format('%s %s %s', attname, atttypid, atttypmod) ORDER BY attnum) FROM cols WHERE attrelid = $1)
                = (SELECT array_agg(format('%s %s %s', attname, atttypid, atttypmod) ORDER BY attnum) FROM cols WHERE attrelid = $2)
            AND NOT EXISTS (
                SELECT 1 FROM cols c JOIN pg_catalog.pg_type t ON t.oid = c.atttypid
                WHERE c.attrelid = $1 AND NOT EXISTS (
                    SELECT 1 FROM pg_catalog.pg_opclass oc JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod
                    WHERE am.amname = 'btree' AND oc.opcdefault
                      AND t.typcategory <> 'A' AND t.typtype IN ('b', 'e', 'd')
                      AND oc.opcintype = CASE WHEN t.typtype = 'e' THEN 'anyenum'::regtype
                                              WHEN t.typtype = 'd' THEN t.typbasetype
                                              ELSE t.oid END))",
        &[kept.into(), copy.into()],
    )?
    .unwrap_or(false))
}

/// For status(): each group of rows still set aside, how many of them the owner's partition
/// here does not hold as they are, and whether that partition still waits for its copy.
/// One group of rows still set aside: a table, an owner, how many rows, how many of them the
/// owner's copy here does not hold as they are, and whether that copy is still coming.
struct Kept {
    table: String,
    node: String,
    rows: i64,
    differing: i64,
    waiting: bool,
}

#[pg_extern(stable, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn set_aside_state() -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(node, String),
        name!(set_aside, i64),
        name!(differing, i64),
        name!(waiting, bool),
    ),
> {
    TableIterator::new(
        state()
            .or_raise()
            .into_iter()
            .map(|k| (k.table, k.node, k.rows, k.differing, k.waiting)),
    )
}

fn state() -> FedResult<Vec<Kept>> {
    let any = spi::one::<bool>("SELECT EXISTS (SELECT 1 FROM federation.set_aside)", &[])?;
    let mut out = vec![];
    let groups = if any == Some(true) { groups()? } else { vec![] };
    for (relid, table, node, part) in groups {
        if !super::share_lock_if_exists(part) {
            continue; // the partition was dropped after this statement's snapshot
        }
        let part_sql = super::oid_sql(part)?;
        let rows = spi::one::<i64>(
            "SELECT count(*) FROM federation.set_aside WHERE relid = $1 AND node = $2",
            &[relid.into(), node.clone().into()],
        )?
        .unwrap_or(0);
        let matched = spi::one::<i64>(
            &matched_sql("SELECT count(*) FROM", part, &part_sql)?,
            &[relid.into(), node.clone().into()],
        )?
        .unwrap_or(0);
        // The copy of the owner's partition is complete once a subscription has it 'ready'.
        let waiting = spi::one::<bool>(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel
                                WHERE srrelid = $1 AND srsubstate = 'r')",
            &[part.into()],
        )?
        .unwrap_or(true);
        if rows > matched {
            out.push(Kept {
                table,
                node,
                rows,
                differing: rows - matched,
                waiting,
            });
        }
    }
    // Copies emptied by join() or resync() whose fresh copy is still coming: their old rows
    // wait in a kept table (compare_kept_copies).
    if catalog::has_relation("federation.kept_copy")? {
        let waiting = spi::rows(
            "SELECT k.relid::regclass::text, k.node, k.kept::oid FROM federation.kept_copy k ORDER BY 1, 2",
            &[],
            |r| {
                Ok((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<pg_sys::Oid>(3)?.unwrap_or(pg_sys::InvalidOid),
                ))
            },
        )?;
        for (table, node, kept) in waiting {
            // The worker drops a kept table once it has compared it (compare_kept_copies),
            // possibly after this statement's snapshot read federation.kept_copy.
            if !super::share_lock_if_exists(kept) {
                continue;
            }
            let kept_sql = super::oid_sql(kept)?;
            let rows =
                spi::one::<i64>(&format!("SELECT count(*) FROM {kept_sql}"), &[])?.unwrap_or(0);
            if rows > 0 {
                out.push(Kept {
                    table,
                    node,
                    rows,
                    differing: rows,
                    waiting: true,
                });
            }
        }
    }
    // Rows of tables no longer federated (dropped, disabled) are reported as differing.
    let orphans = spi::rows(
        "SELECT s.table_name, s.node, count(*) FROM federation.set_aside s
         WHERE NOT EXISTS (SELECT 1 FROM federation.partition p
                           WHERE p.relid::oid = s.relid AND p.node_name = s.node)
         GROUP BY 1, 2 ORDER BY 1, 2",
        &[],
        |r| {
            let rows = r.get::<i64>(3)?.unwrap_or(0);
            Ok(Kept {
                table: r.get::<String>(1)?.unwrap_or_default(),
                node: r.get::<String>(2)?.unwrap_or_default(),
                rows,
                differing: rows,
                waiting: false,
            })
        },
    )?;
    out.extend(orphans);
    Ok(out)
}
