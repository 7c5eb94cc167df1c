//! Reading and writing pg_federation's catalog (sql/catalog.sql).
//!
//! The catalog and this node's publication belong to the extension's owner. A table owner
//! who is not a superuser may still enable() and disable() their tables: the catalog and
//! publication steps (and only those) run as the extension's owner through
//! [`as_extension_owner`]; the table's own DDL runs as the caller.

use crate::errors::FedResult;
use crate::sql;
use pgrx::prelude::*;

/// Runs `f` with the extension owner's privileges (like a SECURITY DEFINER function), then
/// restores the caller's. An ERROR in `f` aborts the transaction, which restores the user
/// id by itself.
/// Whether pg_federation is installed in this database (the worker checks before each pass).
pub fn extension_installed() -> FedResult<bool> {
    Ok(sql::one::<bool>(
        "SELECT true FROM pg_catalog.pg_extension WHERE extname = 'pg_federation'",
        &[],
    )?
    .unwrap_or(false))
}

pub fn as_extension_owner<T>(f: impl FnOnce() -> FedResult<T>) -> FedResult<T> {
    let owner = sql::one::<pg_sys::Oid>(
        "SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'pg_federation'",
        &[],
    )?
    .ok_or_else(|| {
        crate::errors::FedError::internal("pg_federation is not installed in this database")
    })?;
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_ctx: i32 = 0;
    // SAFETY: the standard save/switch/restore of PostgreSQL's security-restricted operations.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_ctx);
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let r = f();
    // SAFETY: restores what was saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_ctx) };
    r
}

/// Members of the federation other than this node, by name.
pub fn other_members() -> FedResult<Vec<String>> {
    Ok(sql::rows(
        "SELECT node_name FROM federation.node ORDER BY node_name",
        &[],
        |r| r.get::<String>(1),
    )?
    .into_iter()
    .flatten()
    .collect())
}

/// The node column of a federated table, or None when the table is not federated.
pub fn node_column(relid: pg_sys::Oid) -> FedResult<Option<String>> {
    sql::one::<String>(
        "SELECT node_column::text FROM federation.federated_table WHERE relid = $1",
        &[relid.into()],
    )
}

pub fn insert_table(relid: pg_sys::Oid, node_column: &str, adopted: bool) -> FedResult<()> {
    sql::exec_args(
        "INSERT INTO federation.federated_table (relid, node_column, adopted) VALUES ($1::oid::regclass, $2, $3)",
        &[relid.into(), node_column.into(), adopted.into()],
    )
}

pub fn insert_partition(
    relid: pg_sys::Oid,
    node: Option<&str>,
    partition: pg_sys::Oid,
) -> FedResult<()> {
    sql::exec_args(
        "INSERT INTO federation.partition (relid, node_name, partition) VALUES ($1::oid::regclass, $2, $3::oid::regclass)",
        &[relid.into(), node.into(), partition.into()],
    )
}

/// A federated table's partitions: (owning node or None for DEFAULT, partition oid).
pub fn partitions(relid: pg_sys::Oid) -> FedResult<Vec<(Option<String>, pg_sys::Oid)>> {
    sql::rows(
        "SELECT node_name, partition::oid FROM federation.partition WHERE relid = $1 ORDER BY node_name NULLS LAST",
        &[relid.into()],
        |r| Ok((r.get::<String>(1)?, r.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid))),
    )
}

/// Forgets a federated table (its partitions go with it, ON DELETE CASCADE).
pub fn delete_table(relid: pg_sys::Oid) -> FedResult<()> {
    sql::exec_args(
        "DELETE FROM federation.federated_table WHERE relid = $1",
        &[relid.into()],
    )
}

/// This node's recorded name and address, once it has federated a table or joined.
/// (Readable by everyone as "joined or not": conninfo IS NOT NULL hides the string itself.)
pub fn local_node() -> FedResult<Option<(String, Option<String>)>> {
    // SAFETY: reads this backend's user id.
    let q = if unsafe { pg_sys::superuser() } {
        "SELECT node_name, conninfo FROM federation.local_node"
    } else {
        "SELECT node_name, CASE WHEN federation.local_node_joined() THEN '(hidden)' END FROM federation.local_node"
    };
    Ok(sql::rows(q, &[], |r| {
        Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?))
    })?
    .into_iter()
    .next())
}

/// Records this node's name the first time it matters (enable or join). A different name
/// recorded earlier means the node was renamed under its partitions and slots: refused.
pub fn claim_local_name(me: &str) -> FedResult<()> {
    match local_node()? {
        Some((recorded, _)) if recorded != me => Err(crate::identity::renamed_error(&recorded, me)),
        Some(_) => Ok(()),
        None => sql::exec_args(
            "INSERT INTO federation.local_node (node_name) VALUES ($1)",
            &[me.into()],
        ),
    }
}

pub fn set_local_conninfo(conninfo: &str) -> FedResult<()> {
    sql::exec_args(
        "UPDATE federation.local_node SET conninfo = $1",
        &[conninfo.into()],
    )
}

/// A member as this node knows it.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub conninfo: String,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// This node's worker wires it (false: the member's worker does).
    pub wired_here: bool,
}

pub fn members() -> FedResult<Vec<Member>> {
    sql::rows(
        "SELECT node_name, conninfo, state, attempts, last_error, wired_here FROM federation.node ORDER BY node_name",
        &[],
        |r| {
            Ok(Member {
                name: r.get::<String>(1)?.unwrap_or_default(),
                conninfo: r.get::<String>(2)?.unwrap_or_default(),
                state: r.get::<String>(3)?.unwrap_or_default(),
                attempts: r.get::<i32>(4)?.unwrap_or(0),
                last_error: r.get::<String>(5)?,
                wired_here: r.get::<bool>(6)?.unwrap_or(true),
            })
        },
    )
}

/// Adds or updates a member (joining until its wiring is done); `wired_here`: whether this
/// node's worker does the wiring (false when the member's worker registered itself here).
pub fn upsert_member(name: &str, conninfo: &str, state: &str, wired_here: bool) -> FedResult<()> {
    sql::exec_args(
        "INSERT INTO federation.node (node_name, conninfo, state, wired_here) VALUES ($1, $2, $3, $4)
         ON CONFLICT (node_name) DO UPDATE SET conninfo = EXCLUDED.conninfo,
             state = CASE WHEN federation.node.state = 'ready' AND EXCLUDED.state = 'joining' THEN 'ready' ELSE EXCLUDED.state END,
             wired_here = CASE WHEN federation.node.state = 'ready' THEN federation.node.wired_here ELSE EXCLUDED.wired_here END",
        &[name.into(), conninfo.into(), state.into(), wired_here.into()],
    )
}

pub fn set_member_state(name: &str, state: &str) -> FedResult<()> {
    sql::exec_args(
        "UPDATE federation.node SET state = $2, attempts = 0, last_error = NULL, last_error_at = NULL WHERE node_name = $1",
        &[name.into(), state.into()],
    )
}

pub fn record_member_error(name: &str, error: &str) -> FedResult<()> {
    sql::exec_args(
        "UPDATE federation.node SET attempts = attempts + 1, last_error = $2, last_error_at = pg_catalog.now() WHERE node_name = $1",
        &[name.into(), error.into()],
    )
}

pub fn delete_member(name: &str) -> FedResult<()> {
    sql::exec_args(
        "DELETE FROM federation.node WHERE node_name = $1",
        &[name.into()],
    )
}
