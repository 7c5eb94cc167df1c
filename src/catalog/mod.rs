//! Reading and writing pg_federation's catalog (sql/catalog.sql). Every query of the
//! federation.* tables that runs on this node goes through here.
//!
//! The catalog and this node's publication belong to the extension's owner. A table owner
//! who is not a superuser may still enable() and disable() their tables: the catalog and
//! publication steps (and only those) run as the extension's owner through
//! [`as_extension_owner`]; the table's own DDL runs as the caller.

mod checks;
mod keys;
mod member;
mod probe;

pub use checks::*;
pub use keys::*;
pub use member::*;
pub use probe::*;

use crate::errors::{FedError, FedResult};
use crate::spi;
use pgrx::prelude::*;

/// Whether pg_federation is installed in this database (the worker checks before each pass).
pub fn extension_installed() -> FedResult<bool> {
    Ok(spi::one::<bool>(
        "SELECT true FROM pg_catalog.pg_extension WHERE extname = 'pg_federation'",
        &[],
    )?
    .unwrap_or(false))
}

/// The schema of pg_federation's internal functions (the plumbing under the API in schema
/// federation: the verbs' bodies, the guards, what nodes call on each other), from 0.7.0's SQL.
pub const INTERNAL_SCHEMA: &str = "federation_internal";

/// The schema-qualified name of internal function `func` here: in [`INTERNAL_SCHEMA`], or in
/// federation while this database still has the SQL of a release before 0.7.0 (the library is
/// updated first during an upgrade).
pub fn internal(func: &str) -> FedResult<String> {
    Ok(format!("{}.{func}", internal_schema()?))
}

/// The schema of the internal functions here ([`internal`]), asked once for several names.
pub fn internal_schema() -> FedResult<&'static str> {
    Ok(if sql_0_7_installed()? {
        INTERNAL_SCHEMA
    } else {
        "federation"
    })
}

/// The version of pg_federation installed in this database (its SQL objects; the library may
/// be newer during an upgrade).
pub fn extension_version() -> FedResult<String> {
    spi::one::<String>(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_federation'",
        &[],
    )?
    .ok_or_else(|| FedError::internal("pg_federation is not installed in this database"))
}

/// Runs `f` with the extension owner's privileges (like a SECURITY DEFINER function), then
/// restores the caller's. An ERROR in `f` aborts the transaction, which restores the user
/// id by itself.
pub fn as_extension_owner<T>(f: impl FnOnce() -> FedResult<T>) -> FedResult<T> {
    let owner = spi::one::<pg_sys::Oid>(
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

/// The node column of a federated table, or None when the table is not federated.
pub fn node_column(relid: pg_sys::Oid) -> FedResult<Option<String>> {
    spi::one::<String>(
        "SELECT node_column::text FROM federation.federated_table WHERE relid = $1",
        &[relid.into()],
    )
}

pub fn insert_table(relid: pg_sys::Oid, node_column: &str, adopted: bool) -> FedResult<()> {
    spi::exec_args(
        "INSERT INTO federation.federated_table (relid, node_column, adopted) VALUES ($1::oid::regclass, $2, $3)",
        &[relid.into(), node_column.into(), adopted.into()],
    )
}

pub fn insert_partition(
    relid: pg_sys::Oid,
    node: Option<&str>,
    partition: pg_sys::Oid,
) -> FedResult<()> {
    spi::exec_args(
        "INSERT INTO federation.partition (relid, node_name, partition) VALUES ($1::oid::regclass, $2, $3::oid::regclass)",
        &[relid.into(), node.into(), partition.into()],
    )
}

/// A federated table's partitions: (owning node or None for DEFAULT, partition oid).
pub fn partitions(relid: pg_sys::Oid) -> FedResult<Vec<(Option<String>, pg_sys::Oid)>> {
    spi::rows(
        "SELECT node_name, partition::oid FROM federation.partition WHERE relid = $1 ORDER BY node_name NULLS LAST",
        &[relid.into()],
        |r| Ok((r.get::<String>(1)?, r.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid))),
    )
}

/// Forgets a federated table (its partitions go with it, ON DELETE CASCADE).
pub fn delete_table(relid: pg_sys::Oid) -> FedResult<()> {
    spi::exec_args(
        "DELETE FROM federation.federated_table WHERE relid = $1",
        &[relid.into()],
    )
}

/// This node's recorded name and address, once it has federated a table or joined.
/// (Readable by everyone as "joined or not": conninfo IS NOT NULL hides the string itself.)
pub fn local_node() -> FedResult<Option<(String, Option<String>)>> {
    // SAFETY: reads this backend's user id.
    let q = if unsafe { pg_sys::superuser() } {
        "SELECT node_name, conninfo FROM federation.local_node".to_string()
    } else {
        format!(
            "SELECT node_name, CASE WHEN {}() THEN '(hidden)' END FROM federation.local_node",
            internal("local_node_joined")?
        )
    };
    Ok(spi::rows(&q, &[], |r| {
        Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?))
    })?
    .into_iter()
    .next())
}

/// Records this node's name the first time it matters (enable or join). A different name
/// recorded earlier means the node was renamed under its partitions and slots: refused.
pub fn claim_local_name(me: &str) -> FedResult<()> {
    match local_node()? {
        Some((recorded, _)) if recorded != me => Err(renamed_error(&recorded, me)),
        Some(_) => Ok(()),
        None => {
            spi::exec_args(
                "INSERT INTO federation.local_node (node_name) VALUES ($1)",
                &[me.into()],
            )?;
            stamp_server()
        }
    }
}

pub fn set_local_conninfo(conninfo: &str) -> FedResult<()> {
    spi::exec_args(
        "UPDATE federation.local_node SET conninfo = $1",
        &[conninfo.into()],
    )?;
    stamp_server()
}

/// This server and database, as local_node.server_id records them: the cluster's system
/// identifier and the database's OID. A pg_dump restored on another server, or into another
/// database, differs; a physical copy (a standby, a base backup) does not.
pub fn server_id() -> String {
    // SAFETY: reads the control file's identifier and this backend's database.
    unsafe {
        format!(
            "{}/{}",
            pg_sys::GetSystemIdentifier(),
            pg_sys::MyDatabaseId.to_u32()
        )
    }
}

/// The timeline this server writes WAL on now (a promoted standby, a point-in-time restore
/// starts a new one). From the current WAL file's name: pg_control's checkpoint timeline
/// lags until the first checkpoint after a promotion.
pub fn current_timeline() -> FedResult<i64> {
    Ok(spi::one::<i64>(
        "SELECT ('x' || substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::bigint",
        &[],
    )?
    .unwrap_or(0))
}

/// The timeline local_node.timeline records: the one this node's replication state was
/// known good on. None when not recorded yet, or where this database's pg_federation
/// predates the column (0.5.0).
pub fn recorded_timeline() -> FedResult<Option<i64>> {
    if !local_node_has("timeline")? {
        return Ok(None);
    }
    spi::one::<i64>("SELECT timeline::bigint FROM federation.local_node", &[])
}

pub fn record_timeline(timeline: i64) -> FedResult<()> {
    if !local_node_has("timeline")? {
        return Ok(());
    }
    spi::exec_args(
        "UPDATE federation.local_node SET timeline = $1::integer",
        &[timeline.into()],
    )
}

pub fn local_node_has(column: &str) -> FedResult<bool> {
    Ok(spi::one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                        WHERE attrelid = pg_catalog.to_regclass('federation.local_node') AND attname = $1 AND NOT attisdropped)",
        &[column.into()],
    )?
    .unwrap_or(false))
}

/// SQL face of [`server_id`], for the upgrade script.
#[pg_extern(stable, name = "server_id")]
fn server_id_sql() -> String {
    server_id()
}

/// Records this server as the one the local state belongs to (join, and a claim of the name).
pub fn stamp_server() -> FedResult<()> {
    if !sql_0_4_installed()? {
        return Ok(());
    }
    spi::exec_args(
        "UPDATE federation.local_node SET server_id = $1",
        &[server_id().as_str().into()],
    )
}

/// On a node of a federation whose state was made on another server or database (a pg_dump
/// restored elsewhere): the error every write and federation operation gets there. None on
/// the node itself, on a node in no federation, or before 0.4.0's SQL.
pub fn copy_problem(name: &str) -> FedResult<Option<FedError>> {
    if !sql_0_4_installed()? {
        return Ok(None);
    }
    let recorded = spi::one::<String>("SELECT server_id FROM federation.local_node", &[])?;
    let joined = spi::one::<bool>(&format!("SELECT {}()", internal("local_node_joined")?), &[])?
        .unwrap_or(false);
    match recorded {
        Some(r) if joined && r != server_id() => Ok(Some(
            FedError::prerequisite(format!(
                "this database is a copy of node \"{name}\" of a federation (its pg_federation state was made on another server or database); writes to federated tables and federation operations are refused here"
            ))
            .detail(format!("The state was made on {r}; this is {}. Acting as \"{name}\" here would change the real node's place in the federation.", server_id()))
            .hint("To use the copy on its own, detach it without touching the federation: docs/runbook.md, \"A restored copy of a node\". If this is the node itself after pg_upgrade: from PostgreSQL 17 on its worker takes it as the node within seconds of its start (once it has found the members' slots here); from 15 or 16, see docs/runbook.md section 9."),
        )),
        _ if joined => Ok(superseded()?.map(|why| {
            FedError::prerequisite(format!(
                "this server is no longer node \"{name}\": {why}; writes to federated tables and federation operations are refused here"
            ))
            .detail("A standby promoted in this server's place serves the node now (an old primary that came back), or federation.node_conninfo names another server.")
            .hint("Rebuild this server as a standby of the node's new primary (pg_rewind or a new base backup), as the HA manager does; or, if federation.node_conninfo is wrong, correct it and reload: the worker checks again within seconds.")
        })),
        _ => Ok(None),
    }
}

/// Why the worker found that another server answers at this node's address
/// (local_node.superseded, 0.5.0), if it did.
pub fn superseded() -> FedResult<Option<String>> {
    if !local_node_has("superseded")? {
        return Ok(None);
    }
    spi::one::<String>("SELECT superseded FROM federation.local_node", &[])
}

/// Records (or clears) that another server answers at this node's address.
pub fn set_superseded(why: Option<&str>) -> FedResult<()> {
    if !local_node_has("superseded")? {
        return Ok(());
    }
    spi::exec_args(
        "UPDATE federation.local_node SET superseded = $1 WHERE superseded IS DISTINCT FROM $1",
        &[why.into()],
    )
}

/// This node's address once it has joined a federation (None: standalone).
pub fn joined_conninfo() -> FedResult<Option<String>> {
    Ok(local_node()?.and_then(|(_, c)| c))
}

/// Forgets this node's address (it has left its federation).
pub fn clear_local_conninfo() -> FedResult<()> {
    spi::exec("UPDATE federation.local_node SET conninfo = NULL")
}

/// Every federated table: (oid, node column).
pub fn federated_tables() -> FedResult<Vec<(pg_sys::Oid, String)>> {
    spi::rows(
        "SELECT relid::oid, node_column::text FROM federation.federated_table ORDER BY relid::text",
        &[],
        |r| {
            Ok((
                r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                r.get::<String>(2)?.unwrap_or_default(),
            ))
        },
    )
}

/// Every federated table: (oid, qualified name, node column), by name.
pub fn federated_tables_named() -> FedResult<Vec<(pg_sys::Oid, String, String)>> {
    spi::rows(
        "SELECT t.relid::oid, pg_catalog.format('%I.%I', n.nspname, c.relname), t.node_column::text
         FROM federation.federated_table t JOIN pg_catalog.pg_class c ON c.oid = t.relid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY 2",
        &[],
        |r| {
            Ok((
                r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
            ))
        },
    )
}

/// Whether a federated table is federated on every member yet (`Ready`), or waits for the
/// worker to federate it there (`Pending`: enabled here on a running federation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshState {
    Pending,
    Ready,
}

impl MeshState {
    pub fn as_str(self) -> &'static str {
        match self {
            MeshState::Pending => "pending",
            MeshState::Ready => "ready",
        }
    }
}

/// Sets the mesh state of the federated table named `table` (by name: after enable() of an
/// ordinary table, its old OID belongs to this node's partition).
pub fn set_mesh_state(table: &str, state: MeshState) -> FedResult<()> {
    spi::exec_args(
        "UPDATE federation.federated_table SET mesh_state = $2 WHERE relid = pg_catalog.to_regclass($1)",
        &[table.into(), state.as_str().into()],
    )?;
    set_spread_error(table, None)
}

/// Records (or clears) the worker's last failure federating `table` on the members, for
/// status(). A no-op where this database's pg_federation predates it (0.5.0).
pub fn set_spread_error(table: &str, error: Option<&str>) -> FedResult<()> {
    if !has_relation("federation.spread_failure")? {
        return Ok(());
    }
    match error {
        None => spi::exec_args(
            "DELETE FROM federation.spread_failure WHERE relid = pg_catalog.to_regclass($1)",
            &[table.into()],
        ),
        Some(e) => spi::exec_args(
            "INSERT INTO federation.spread_failure (relid, error)
             SELECT pg_catalog.to_regclass($1), $2
             ON CONFLICT (relid) DO UPDATE SET error = EXCLUDED.error, failed_at = EXCLUDED.failed_at
             WHERE federation.spread_failure.error IS DISTINCT FROM EXCLUDED.error",
            &[table.into(), e.into()],
        ),
    }
}

/// Tables enabled here on a running federation, still to federate on the members:
/// (qualified name, node column).
pub fn pending_tables() -> FedResult<Vec<(String, String)>> {
    spi::text_pairs(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), t.node_column::text
         FROM federation.federated_table t JOIN pg_catalog.pg_class c ON c.oid = t.relid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE t.mesh_state = $1",
        &[MeshState::Pending.as_str().into()],
    )
}

/// How many tables are pending, under a fresh snapshot (for a waiting loop).
pub fn pending_tables_fresh() -> FedResult<i64> {
    Ok(spi::rows_fresh(
        "SELECT count(*) FROM federation.federated_table WHERE mesh_state = 'pending'",
    )?
    .first()
    .and_then(|r| r[0].as_deref().and_then(|v| v.parse::<i64>().ok()))
    .unwrap_or(0))
}

/// The partitions `node` owns, of federated table `of_table` or of every one: (oid,
/// qualified name), by name.
pub fn partitions_of_node(
    node: &str,
    of_table: Option<pg_sys::Oid>,
) -> FedResult<Vec<(pg_sys::Oid, String)>> {
    spi::rows(
        "SELECT partition::oid, pg_catalog.format('%I.%I', n.nspname, c.relname) FROM federation.partition p
         JOIN pg_catalog.pg_class c ON c.oid = p.partition JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE p.node_name = $1 AND ($2::oid IS NULL OR p.relid = $2) ORDER BY 2",
        &[node.into(), of_table.into()],
        |r| Ok((r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid), r.get::<String>(2)?.unwrap_or_default())),
    )
}

/// `node`'s partition of the federated table named `table` (None: not federated here).
pub fn partition_of(table: &str, node: &str) -> FedResult<Option<pg_sys::Oid>> {
    spi::one::<pg_sys::Oid>(
        "SELECT p.partition::oid FROM federation.partition p WHERE p.relid = pg_catalog.to_regclass($1) AND p.node_name = $2",
        &[table.into(), node.into()],
    )
}

/// Forgets one partition (it is about to be dropped).
pub fn delete_partition(partition: pg_sys::Oid) -> FedResult<()> {
    spi::exec_args(
        "DELETE FROM federation.partition WHERE partition = $1",
        &[partition.into()],
    )
}

/// The federated table named `table` (None: not federated here).
pub fn federated_table_named(table: &str) -> FedResult<Option<pg_sys::Oid>> {
    spi::one::<pg_sys::Oid>(
        "SELECT t.relid::oid FROM federation.federated_table t WHERE t.relid = pg_catalog.to_regclass($1)",
        &[table.into()],
    )
}

/// The federated table `relation` is, or is a partition of: (its oid, its name as SQL).
pub fn federated_table_of(relation: pg_sys::Oid) -> FedResult<Option<(pg_sys::Oid, String)>> {
    Ok(spi::rows(
        "SELECT t.relid::oid, pg_catalog.format('%I.%I', n.nspname, c.relname) FROM federation.federated_table t
         JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE t.relid = $1 OR EXISTS (SELECT 1 FROM federation.partition p WHERE p.relid = t.relid AND p.partition = $1)",
        &[relation.into()],
        |r| Ok((r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid), r.get::<String>(2)?.unwrap_or_default())),
    )?
    .into_iter()
    .next())
}

/// Whether this database has pg_federation's catalog relation `name` (e.g.
/// "federation.set_aside"): the library may be newer than the SQL objects during a rolling
/// upgrade, or the extension not installed yet. Read-only SPI (works on a standby).
pub fn has_relation(name: &str) -> FedResult<bool> {
    Ok(spi::one::<bool>(
        "SELECT pg_catalog.to_regclass($1) IS NOT NULL",
        &[name.into()],
    )?
    .unwrap_or(false))
}

/// The name this node recorded when it first federated a table or joined, if it did.
pub fn recorded_name() -> FedResult<Option<String>> {
    // Read-only SPI: pgrx's Spi::get_one would assign a transaction id (and fail on a standby).
    if !has_relation("federation.local_node")? {
        return Ok(None);
    }
    Ok(spi::one::<String>(
        "SELECT node_name FROM federation.local_node",
        &[],
    )?)
}

/// The error for a node whose name changed after it federated tables or joined.
pub fn renamed_error(recorded: &str, now: &str) -> FedError {
    FedError::prerequisite(format!("this node's name changed from \"{recorded}\" to \"{now}\"; writes to federated tables are refused"))
        .detail(format!("Its partitions, publication and replication slots were made for \"{recorded}\"; rows written now would go to another node's partition."))
        .hint(format!("Restore the name (ALTER SYSTEM SET federation.node_name = '{recorded}'; SELECT pg_reload_conf();). To rename a node: federation.leave(), change the name, federation.join()."))
}
