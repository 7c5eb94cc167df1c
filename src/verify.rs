//! `federation.verify()`: compares every node's copy of every partition with the owner's copy:
//! row count and an order-independent hash of the rows, computed by each server over its own
//! rows (nothing is fetched: a million-row partition costs one aggregate per node).
//!
//! A replica is compared once it has confirmed the owner's WAL up to the point of the owner's
//! count, so rows still in flight are not reported as missing; a partition written to while
//! it is verified is compared again (up to three times) before a mismatch is reported.

use crate::catalog::{self, Member};
use crate::errors::{FedError, FedResult, OrRaise};
use crate::membership::{require_superuser_for, subscription_name};
use crate::progress;
use crate::remote::Remote;
use crate::sql;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// How long a replica may take to confirm the owner's position before it is compared anyway.
const CATCH_UP: Duration = Duration::from_secs(30);
const ATTEMPTS: usize = 3;

type Row = (
    String,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
);

#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn verify_tables(
    tbl: Option<pg_sys::Oid>,
) -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(partition, String),
        name!(owner, String),
        name!(node, String),
        name!(rows, Option<i64>),
        name!(owner_rows, Option<i64>),
        name!(status, String),
        name!(detail, Option<String>),
    ),
> {
    TableIterator::new(verify(tbl).or_raise())
}

struct Peer {
    name: String,
    conn: Result<Remote, String>,
}

/// The owner's partition of `table` as `r`'s server names it, if it has one.
fn partition_on(r: &mut Remote, table: &str, owner: &str) -> FedResult<Option<String>> {
    r.scalar(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM federation.partition p
         JOIN pg_catalog.pg_class c ON c.oid = p.partition JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE p.relid = pg_catalog.to_regclass($1) AND p.node_name = $2",
        &[Some(table), Some(owner)],
    )
}

/// Count, order-independent hash, and the server's WAL position after reading.
fn digest_sql(part: &str, cols: &str) -> String {
    format!(
        "SELECT count(*)::text, coalesce(sum(pg_catalog.hashtextextended(ROW({cols})::text, 0)::numeric), 0)::text,
                pg_catalog.pg_current_wal_lsn()::text FROM ONLY {part}"
    )
}

fn parse_digest(rows: Vec<Vec<Option<String>>>) -> (i64, String, String) {
    let row = rows.into_iter().next().unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    (get(0).parse().unwrap_or(0), get(1), get(2))
}

/// (count, hash, WAL position) of the owner's partition of `table` on `r`; None without one.
fn digest(
    r: &mut Remote,
    table: &str,
    owner: &str,
    cols: &str,
) -> FedResult<Option<(i64, String, String)>> {
    let Some(part) = partition_on(r, table, owner)? else {
        return Ok(None);
    };
    Ok(Some(parse_digest(r.query(&digest_sql(&part, cols), &[])?)))
}

/// Waits (bounded) until `replica` has confirmed `owner`'s WAL up to `lsn`; false on timeout
/// or when its slot is missing or lost.
fn caught_up(owner_conn: &mut Remote, owner: &str, replica: &str, lsn: &str) -> FedResult<bool> {
    let slot = subscription_name(owner, replica);
    Ok(progress::wait_confirmed(owner_conn, &slot, lsn, Instant::now() + CATCH_UP)? == Some(true))
}

pub fn verify(tbl: Option<pg_sys::Oid>) -> FedResult<Vec<Row>> {
    require_superuser_for(
        "federation.verify()",
        "It reads every member over the connection strings only superusers may read.",
    )?;
    let Some((me, Some(my_conninfo))) = catalog::local_node()? else {
        return Err(FedError::prerequisite("this node is not in a federation")
            .hint("federation.verify() compares the members' copies; join a federation first (federation.join())."));
    };
    let tables = sql::rows(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname),
                (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attname)
                 FROM pg_catalog.pg_attribute a WHERE a.attrelid = t.relid AND a.attnum > 0 AND NOT a.attisdropped)
         FROM federation.federated_table t JOIN pg_catalog.pg_class c ON c.oid = t.relid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE $1 IS NULL OR t.relid = $1 ORDER BY 1",
        &[tbl.into()],
        |r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default())),
    )?;
    if let (Some(oid), true) = (tbl, tables.is_empty()) {
        let name =
            sql::one::<String>("SELECT $1::regclass::text", &[oid.into()])?.unwrap_or_default();
        return Err(FedError::invalid_value(format!("table \"{name}\" is not federated"))
            .hint("federation.tables lists the federated tables; verify() with no argument checks them all."));
    }
    let members: Vec<Member> = catalog::members()?;
    let mut peers = vec![Peer {
        name: me.clone(),
        conn: Remote::connect(&my_conninfo, "this node").map_err(|e| e.to_string()),
    }];
    for m in &members {
        let conn = Remote::connect(
            &format!("connect_timeout=5 {}", m.conninfo),
            &format!("member \"{}\"", m.name),
        )
        .map_err(|e| e.to_string());
        peers.push(Peer {
            name: m.name.clone(),
            conn,
        });
    }
    let mut out = vec![];
    for (table, cols) in &tables {
        let owners: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
        for owner in &owners {
            out.extend(verify_partition(&mut peers, table, cols, owner)?);
        }
    }
    Ok(out)
}

/// Rows for one owner's partition of `table`: the owner's own row, then one per other node.
fn verify_partition(
    peers: &mut [Peer],
    table: &str,
    cols: &str,
    owner: &str,
) -> FedResult<Vec<Row>> {
    let row = |node: &str,
               part: &str,
               rows: Option<i64>,
               owner_rows: Option<i64>,
               status: &str,
               detail: Option<String>| {
        (
            table.to_string(),
            part.to_string(),
            owner.to_string(),
            node.to_string(),
            rows,
            owner_rows,
            status.to_string(),
            detail,
        )
    };
    // As this node names it (each node resolves its own name for the owner's partition).
    let part = sql::one::<String>(
        "SELECT p.partition::text FROM federation.partition p WHERE p.relid = pg_catalog.to_regclass($1) AND p.node_name = $2",
        &[table.into(), owner.into()],
    )?
    .unwrap_or_else(|| format!("{table} ({owner})"));
    let oi = peers.iter().position(|p| p.name == owner).unwrap_or(0);
    let mut verdict: Vec<(String, Option<i64>, String, Option<String>)> = vec![];
    let mut owner_digest: Option<(i64, String, String)> = None;
    for _ in 0..ATTEMPTS {
        let Ok(owner_conn) = peers[oi].conn.as_mut() else {
            break;
        };
        owner_digest = digest(owner_conn, table, owner, cols)?;
        let Some((o_rows, o_hash, o_lsn)) = owner_digest.clone() else {
            break;
        };
        verdict.clear();
        // Each copy once its node has confirmed the owner's position; the copies' scans run
        // at once, one per node.
        let mut asked: Vec<(usize, bool, bool)> = vec![]; // (peer, confirmed, has a partition)
        for i in 0..peers.len() {
            if i == oi {
                continue;
            }
            if let Err(e) = &peers[i].conn {
                verdict.push((
                    peers[i].name.clone(),
                    None,
                    "unreachable".into(),
                    Some(e.clone()),
                ));
                continue;
            }
            let name = peers[i].name.clone();
            let confirmed = caught_up(
                peers[oi]
                    .conn
                    .as_mut()
                    .map_err(|e| FedError::internal(e.clone()))?,
                owner,
                &name,
                &o_lsn,
            )?;
            let r = peers[i]
                .conn
                .as_mut()
                .map_err(|e| FedError::internal(e.clone()))?;
            let part = partition_on(r, table, owner)?;
            if let Some(part) = &part {
                r.send(&digest_sql(part, cols), &[])?;
            }
            asked.push((i, confirmed, part.is_some()));
        }
        for (i, confirmed, has_part) in asked {
            let name = peers[i].name.clone();
            if !has_part {
                verdict.push((
                    name,
                    None,
                    "missing".into(),
                    Some(format!("no partition for {owner} there")),
                ));
                continue;
            }
            let r = peers[i]
                .conn
                .as_mut()
                .map_err(|e| FedError::internal(e.clone()))?;
            match parse_digest(r.receive()?) {
                (rows, hash, _) if rows == o_rows && hash == o_hash => {
                    verdict.push((name, Some(rows), "match".into(), None))
                }
                (rows, _, _) => {
                    let why = if rows != o_rows {
                        format!("{rows} rows, the owner has {o_rows}")
                    } else {
                        "same row count, different contents".to_string()
                    };
                    let why = if confirmed {
                        why
                    } else {
                        format!(
                            "{why} (it had not confirmed the owner's changes within {} s)",
                            CATCH_UP.as_secs()
                        )
                    };
                    verdict.push((name, Some(rows), "mismatch".into(), Some(why)));
                }
            }
        }
        verdict.sort_by_key(|v| peers.iter().position(|p| p.name == v.0));
        if verdict.iter().all(|v| v.2 != "mismatch") {
            break;
        }
    }
    let mut out = vec![];
    match (&peers[oi].conn, &owner_digest) {
        (Err(e), _) => {
            out.push(row(
                owner,
                &part,
                None,
                None,
                "unreachable",
                Some(format!("the owner is unreachable: {e}")),
            ));
            for p in peers.iter().filter(|p| p.name != owner) {
                out.push(row(
                    &p.name,
                    &part,
                    None,
                    None,
                    "unknown",
                    Some("the owner could not be read".into()),
                ));
            }
        }
        (Ok(_), None) => out.push(row(
            owner,
            &part,
            None,
            None,
            "missing",
            Some("the owner has no partition of its own".into()),
        )),
        (Ok(_), Some((o_rows, _, _))) => {
            out.push(row(
                owner,
                &part,
                Some(*o_rows),
                Some(*o_rows),
                "owner",
                None,
            ));
            for (node, rows, status, detail) in verdict {
                out.push(row(&node, &part, rows, Some(*o_rows), &status, detail));
            }
        }
    }
    Ok(out)
}
