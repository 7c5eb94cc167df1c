//! `federation.verify()`: compares every node's copy of every partition with the owner's copy:
//! row count and an order-independent hash of the rows, computed by each server over its own
//! rows (nothing is fetched: a million-row partition costs one aggregate per node).
//!
//! A replica is compared once it has confirmed the owner's WAL up to the point of the owner's
//! count, so rows still in flight are not reported as missing; a partition written to while
//! it is verified is compared again (up to three times) before a mismatch is reported.

use super::duplicates;
use crate::catalog;
use crate::errors::{FedError, FedResult, OrRaise};
use crate::naming::subscription_name;
use crate::preconditions::require_superuser_for;
use crate::remote::Remote;
use crate::replication;
use crate::spi::{self, quote_ident};
use crate::table::{self, inspect};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// How long a replica may take to confirm the owner's position before it is compared anyway.
const CATCH_UP: Duration = Duration::from_secs(30);
/// How often a partition that differs (it may be written to meanwhile) is compared.
const ATTEMPTS: usize = 3;

/// One row of federation.verify(): one node's copy of one owner's partition.
struct CopyCheck {
    table: String,
    partition: String,
    owner: String,
    node: String,
    rows: Option<i64>,
    owner_rows: Option<i64>,
    status: &'static str,
    detail: Option<String>,
}

type CopyCheckRow = (
    String,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
);

impl CopyCheck {
    fn into_row(self) -> CopyCheckRow {
        (
            self.table,
            self.partition,
            self.owner,
            self.node,
            self.rows,
            self.owner_rows,
            self.status.to_string(),
            self.detail,
        )
    }
}

/// A copy's verdict before it becomes a [`CopyCheck`].
struct Verdict {
    node: String,
    rows: Option<i64>,
    status: &'static str,
    detail: Option<String>,
}

#[pg_extern(volatile, schema = "federation_internal")]
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
    TableIterator::new(verify(tbl).or_raise().into_iter().map(CopyCheck::into_row))
}

/// A node of the federation and this node's connection to it (or why there is none).
struct NodeConn {
    name: String,
    conn: Result<Remote, String>,
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
    let Some(part) = r.partition_of(table, owner)? else {
        return Ok(None);
    };
    Ok(Some(parse_digest(r.query(&digest_sql(&part, cols), &[])?)))
}

/// Waits (bounded) until `replica` has confirmed `owner`'s WAL up to `lsn`; false on timeout
/// or when its slot is missing or lost.
fn caught_up(owner_conn: &mut Remote, owner: &str, replica: &str, lsn: &str) -> FedResult<bool> {
    let slot = subscription_name(owner, replica);
    Ok(
        replication::wait_confirmed(owner_conn, &slot, lsn, Instant::now() + CATCH_UP)?
            == Some(true),
    )
}

/// Members are asked with a shorter connect timeout than the default: verify() reports an
/// unreachable member rather than waiting long for it.
const MEMBER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn verify(tbl: Option<pg_sys::Oid>) -> FedResult<Vec<CopyCheck>> {
    require_superuser_for(
        "federation.verify()",
        "It reads every member over the connection strings only superusers may read.",
    )?;
    let Some((me, Some(my_conninfo))) = catalog::local_node()? else {
        return Err(FedError::prerequisite("this node is not in a federation")
            .hint("federation.verify() compares the members' copies; join a federation first (federation.join())."));
    };
    // Each table with its columns, by name (the hash reads them in the same order everywhere).
    let mut tables = vec![];
    for (oid, name, _) in catalog::federated_tables_named()? {
        if tbl.is_none_or(|t| t == oid) {
            let cols: Vec<String> = inspect::columns(oid, None)?
                .into_iter()
                .map(|(c, _)| quote_ident(&c))
                .collect();
            tables.push((oid, name, cols.join(", ")));
        }
    }
    if let (Some(oid), true) = (tbl, tables.is_empty()) {
        let name =
            spi::one::<String>("SELECT $1::regclass::text", &[oid.into()])?.unwrap_or_default();
        return Err(FedError::invalid_value(format!("table \"{name}\" is not federated"))
            .hint("federation.tables lists the federated tables; verify() with no argument checks them all."));
    }
    // Rows are hashed through their text: every server writes it under the same settings.
    let comparing = |conn: FedResult<Remote>| {
        conn.and_then(|mut r| r.same_text().map(|_| r))
            .map_err(|e| e.to_string())
    };
    let mut nodes = vec![NodeConn {
        name: me.clone(),
        conn: comparing(Remote::connect(&my_conninfo, "this node")),
    }];
    for m in catalog::members()? {
        let conn = comparing(Remote::connect_within(
            &m.conninfo,
            &format!("member \"{}\"", m.name),
            MEMBER_CONNECT_TIMEOUT,
        ));
        nodes.push(NodeConn { name: m.name, conn });
    }
    let mut out = vec![];
    for (_, table, cols) in &tables {
        let owners: Vec<String> = nodes.iter().map(|p| p.name.clone()).collect();
        for owner in &owners {
            out.extend(verify_partition(&mut nodes, table, cols, owner)?);
        }
    }
    // What is wrong, for status() until a later verify() or a resync() (a copy that matched,
    // or could not be reached, clears or leaves nothing).
    let problems: Vec<catalog::CopyProblem> = out
        .iter()
        .filter(|c| c.status == "mismatch" || c.status == "missing")
        .filter_map(|c| {
            let relid = tables.iter().find(|(_, name, _)| *name == c.table)?.0;
            Some(catalog::CopyProblem {
                relid,
                owner: &c.owner,
                node: &c.node,
                status: c.status,
                rows: c.rows,
                owner_rows: c.owner_rows,
                detail: c.detail.as_deref(),
            })
        })
        .collect();
    let verified: Vec<pg_sys::Oid> = tables.iter().map(|(oid, _, _)| *oid).collect();
    catalog::as_extension_owner(|| catalog::record_copy_checks(&verified, &problems))?;
    // Key values held by more than one node (this node's copy of every partition; 0.3.0 on).
    let check_keys = catalog::sql_0_3_installed()?;
    for (oid, _, _) in tables.iter().filter(|_| check_keys) {
        let found = duplicates::check(*oid)?;
        if let (Some(key), Some(first)) = (&found.key, found.duplicates.first()) {
            out.push(CopyCheck {
                table: found.table.clone(),
                partition: "(all)".into(),
                owner: first.nodes.join(", "),
                node: me.clone(),
                rows: Some(found.duplicates.len() as i64),
                owner_rows: None,
                status: "duplicate keys",
                detail: Some(format!(
                    "{} value(s) of ({key}) exist in more than one node's partition, for example {} on {}: SELECT * FROM federation.duplicate_keys('{}');",
                    found.duplicates.len(),
                    first.value,
                    first.nodes.join(" and "),
                    found.table.replace('\'', "''")
                )),
            });
        }
    }
    Ok(out)
}

/// Rows for one owner's partition of `table`: the owner's own row, then one per other node.
fn verify_partition(
    nodes: &mut [NodeConn],
    table: &str,
    cols: &str,
    owner: &str,
) -> FedResult<Vec<CopyCheck>> {
    // As this node names it (each node resolves its own name for the owner's partition).
    let part = match catalog::partition_of(table, owner)? {
        Some(oid) => table::oid_sql(oid)?,
        None => format!("{table} ({owner})"),
    };
    let check = |node: &str,
                 rows: Option<i64>,
                 owner_rows: Option<i64>,
                 status: &'static str,
                 detail: Option<String>| CopyCheck {
        table: table.to_string(),
        partition: part.clone(),
        owner: owner.to_string(),
        node: node.to_string(),
        rows,
        owner_rows,
        status,
        detail,
    };
    let oi = nodes.iter().position(|p| p.name == owner).unwrap_or(0);
    let mut verdicts: Vec<Verdict> = vec![];
    let mut owner_digest: Option<(i64, String, String)> = None;
    for _ in 0..ATTEMPTS {
        let Ok(owner_conn) = nodes[oi].conn.as_mut() else {
            break;
        };
        owner_digest = digest(owner_conn, table, owner, cols)?;
        let Some((o_rows, o_hash, o_lsn)) = owner_digest.clone() else {
            break;
        };
        verdicts.clear();
        // Each copy once its node has confirmed the owner's position; the copies' scans run
        // at once, one per node.
        let mut asked: Vec<(usize, bool, bool)> = vec![]; // (node, confirmed, has a partition)
        for i in 0..nodes.len() {
            if i == oi {
                continue;
            }
            if let Err(e) = &nodes[i].conn {
                verdicts.push(Verdict {
                    node: nodes[i].name.clone(),
                    rows: None,
                    status: "unreachable",
                    detail: Some(e.clone()),
                });
                continue;
            }
            let name = nodes[i].name.clone();
            let confirmed = caught_up(
                nodes[oi]
                    .conn
                    .as_mut()
                    .map_err(|e| FedError::internal(e.clone()))?,
                owner,
                &name,
                &o_lsn,
            )?;
            let r = nodes[i]
                .conn
                .as_mut()
                .map_err(|e| FedError::internal(e.clone()))?;
            let copy = r.partition_of(table, owner)?;
            if let Some(copy) = &copy {
                r.send(&digest_sql(copy, cols), &[])?;
            }
            asked.push((i, confirmed, copy.is_some()));
        }
        for (i, confirmed, has_copy) in asked {
            let node = nodes[i].name.clone();
            if !has_copy {
                verdicts.push(Verdict {
                    node,
                    rows: None,
                    status: "missing",
                    detail: Some(format!("no partition for {owner} there")),
                });
                continue;
            }
            let r = nodes[i]
                .conn
                .as_mut()
                .map_err(|e| FedError::internal(e.clone()))?;
            let (rows, hash, _) = parse_digest(r.receive()?);
            if rows == o_rows && hash == o_hash {
                verdicts.push(Verdict {
                    node,
                    rows: Some(rows),
                    status: "match",
                    detail: None,
                });
                continue;
            }
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
            verdicts.push(Verdict {
                node,
                rows: Some(rows),
                status: "mismatch",
                detail: Some(why),
            });
        }
        verdicts.sort_by_key(|v| nodes.iter().position(|p| p.name == v.node));
        if verdicts.iter().all(|v| v.status != "mismatch") {
            break;
        }
    }
    let mut out = vec![];
    match (&nodes[oi].conn, &owner_digest) {
        (Err(e), _) => {
            out.push(check(
                owner,
                None,
                None,
                "unreachable",
                Some(format!("the owner is unreachable: {e}")),
            ));
            for p in nodes.iter().filter(|p| p.name != owner) {
                out.push(check(
                    &p.name,
                    None,
                    None,
                    "unknown",
                    Some("the owner could not be read".into()),
                ));
            }
        }
        (Ok(_), None) => out.push(check(
            owner,
            None,
            None,
            "missing",
            Some("the owner has no partition of its own".into()),
        )),
        (Ok(_), Some((o_rows, _, _))) => {
            out.push(check(owner, Some(*o_rows), Some(*o_rows), "owner", None));
            for v in verdicts {
                out.push(check(&v.node, v.rows, Some(*o_rows), v.status, v.detail));
            }
        }
    }
    Ok(out)
}
