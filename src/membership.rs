//! Membership: `federation.join()`, `leave()`, `drop_node()`, and the functions nodes call on
//! each other over libpq while they wire the mesh.
//!
//! join() runs in the caller's transaction. It connects to the peer and to every member the
//! peer knows, checks everything it can (extension and version, names, settings, privileges,
//! tables, reachability of this node from the peer), then records the members in this node's
//! catalog and creates their partitions here. Nothing is created on another node and no slot
//! or subscription exists until the transaction commits: then this node's background worker
//! (worker.rs) registers it with every member and creates the subscriptions both ways.
//! A ROLLBACK therefore leaves no trace anywhere.

use crate::catalog;
use crate::enable;
use crate::errors::{FedError, FedResult, OrRaise};
use crate::gucs;
use crate::identity::{self, validate_node_name};
use crate::publication;
use crate::remote::{mask, Remote};
use crate::sql::{self, quote_ident};
use crate::table::Table;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde::{Deserialize, Serialize};

/// The extension version nodes must share (major.minor).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Node names must stay distinct once '-' becomes '_' (replication slot names allow no '-').
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The subscription on `subscriber` to `publisher`'s publication, and its slot on `publisher`.
pub fn subscription_name(publisher: &str, subscriber: &str) -> String {
    format!(
        "federation_{}_{}",
        canonical(publisher),
        canonical(subscriber)
    )
}

/// SQL face of [`subscription_name`], for federation.status().
#[pg_extern(immutable, strict, parallel_safe, name = "subscription_name")]
fn subscription_name_sql(publisher: &str, subscriber: &str) -> String {
    subscription_name(publisher, subscriber)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableShape {
    pub table: String,
    pub node_column: String,
    pub columns: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberInfo {
    pub node_name: String,
    pub conninfo: String,
}

/// What a node tells a joining node about itself (federation.peer_info()).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    pub node_name: String,
    pub version: String,
    pub node_conninfo: Option<String>,
    pub wal_level: String,
    pub max_replication_slots: i64,
    pub used_replication_slots: i64,
    pub max_wal_senders: i64,
    pub max_logical_replication_workers: i64,
    pub is_superuser: bool,
    pub worker_running: bool,
    pub members: Vec<MemberInfo>,
    pub tables: Vec<TableShape>,
}

fn setting_i64(name: &str) -> FedResult<i64> {
    Ok(
        sql::one::<String>("SELECT pg_catalog.current_setting($1)", &[name.into()])?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

fn local_tables() -> FedResult<Vec<TableShape>> {
    let tables = sql::rows(
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
    )?;
    let mut out = vec![];
    for (oid, table, node_column) in tables {
        let columns = sql::rows(
            "SELECT attname::text, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attname",
            &[oid.into()],
            |r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default())),
        )?;
        out.push(TableShape {
            table,
            node_column,
            columns,
        });
    }
    Ok(out)
}

pub fn local_info() -> FedResult<PeerInfo> {
    let me = identity::current_name()?;
    let recorded = catalog::local_node()?;
    let node_conninfo = recorded
        .and_then(|(_, c)| c)
        .or_else(|| gucs::get_str(&gucs::NODE_CONNINFO));
    Ok(PeerInfo {
        node_name: me,
        version: VERSION.to_string(),
        node_conninfo,
        wal_level: sql::one::<String>("SELECT pg_catalog.current_setting('wal_level')", &[])?
            .unwrap_or_default(),
        max_replication_slots: setting_i64("max_replication_slots")?,
        used_replication_slots: sql::one::<i64>(
            "SELECT count(*) FROM pg_catalog.pg_replication_slots",
            &[],
        )?
        .unwrap_or(0),
        max_wal_senders: setting_i64("max_wal_senders")?,
        max_logical_replication_workers: setting_i64("max_logical_replication_workers")?,
        is_superuser: sql::one::<bool>(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )?
        .unwrap_or(false),
        worker_running: crate::worker::is_running()?,
        members: catalog::members()?
            .into_iter()
            .map(|m| MemberInfo {
                node_name: m.name,
                conninfo: m.conninfo,
            })
            .collect(),
        tables: local_tables()?,
    })
}

/// For peers: this node's identity, settings, members (with their connection strings:
/// superuser only) and federated tables, as JSON.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn peer_info() -> pgrx::JsonB {
    require_superuser("federation.peer_info()").or_raise();
    pgrx::JsonB(serde_json::to_value(local_info().or_raise()).unwrap())
}

/// For peers: connects to `conninfo` from this node and returns the node name found there, so
/// a joining node proves that its peers can reach it.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn check_reachable(conninfo: &str) -> String {
    require_superuser("federation.check_reachable()").or_raise();
    let mut r = Remote::connect(conninfo, "the joining node").or_raise();
    let row = r
        .query(
            "SELECT federation.node_name(), (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)::text",
            &[],
        )
        .or_raise();
    let (name, superuser) = row
        .first()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    if superuser != "true" {
        FedError::privilege(format!("the role in the joining node's connection string ({}) is not a superuser", mask(conninfo)))
            .hint("PostgreSQL 15 lets only superusers create subscriptions: name a superuser in federation.node_conninfo.")
            .raise();
    }
    name
}

/// For the joining node's worker: registers `name` as a member of this node's federation and
/// gives every federated table a partition for it. Idempotent.
/// `your_conninfo` is how the joining node reaches this node: recorded as this node's own
/// address when it has none (federation.node_conninfo unset).
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn add_member(name: &str, conninfo: &str, your_conninfo: &str) {
    require_superuser("federation.add_member()").or_raise();
    add_member_impl(name, conninfo, your_conninfo).or_raise()
}

fn add_member_impl(name: &str, conninfo: &str, your_conninfo: &str) -> FedResult<()> {
    validate_node_name(name, "the joining node")?;
    let me = identity::current_name()?;
    catalog::claim_local_name(&me)?;
    if catalog::local_node()?.and_then(|(_, c)| c).is_none() {
        let mine = gucs::get_str(&gucs::NODE_CONNINFO).unwrap_or_else(|| your_conninfo.to_string());
        catalog::set_local_conninfo(&mine)?;
    }
    publication::ensure_exists(&me)?;
    catalog::upsert_member(name, conninfo, "joining", false)?;
    partitions_for_members(&me)?;
    Ok(())
}

/// Gives every federated table here a partition for every member that lacks one.
pub fn partitions_for_members(me: &str) -> FedResult<()> {
    for (oid, col) in federated_tables()? {
        Table::lock_for_new_partitions(oid)?;
        let t = Table::load(oid)?;
        enable::ensure_member_partitions(&t, &col, me)?;
    }
    Ok(())
}

fn federated_tables() -> FedResult<Vec<(pg_sys::Oid, String)>> {
    sql::rows(
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

/// For the joining node's worker: marks a member ready once both directions replicate.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn set_member_ready(name: &str) {
    require_superuser("federation.set_member_ready()").or_raise();
    catalog::set_member_state(name, "ready").or_raise()
}

/// For a leaving node or drop_node(): forgets a member. Its partitions stay (with the rows
/// replicated so far) unless `drop_partitions`.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn remove_member(name: &str, drop_partitions: bool) {
    require_superuser("federation.remove_member()").or_raise();
    remove_member_impl(name, drop_partitions).or_raise()
}

fn remove_member_impl(name: &str, drop_partitions: bool) -> FedResult<()> {
    catalog::delete_member(name)?;
    if drop_partitions {
        let parts = sql::rows(
            "SELECT partition::oid, pg_catalog.format('%I.%I', n.nspname, c.relname) FROM federation.partition p
             JOIN pg_catalog.pg_class c ON c.oid = p.partition JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE p.node_name = $1",
            &[name.into()],
            |r| Ok((r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid), r.get::<String>(2)?.unwrap_or_default())),
        )?;
        for (oid, qname) in parts {
            sql::exec_args(
                "DELETE FROM federation.partition WHERE partition = $1",
                &[oid.into()],
            )?;
            sql::exec(&format!("DROP TABLE {qname}"))?;
        }
    }
    Ok(())
}

/// Superuser check with the reason this call needs it.
pub fn require_superuser_for(what: &str, why: &str) -> FedResult<()> {
    // SAFETY: reads this backend's user id.
    if unsafe { pg_sys::superuser() } {
        return Ok(());
    }
    Err(FedError::privilege(format!("permission denied for {what}"))
        .detail(why.to_string())
        .hint("Run it as a superuser."))
}

pub fn require_superuser(what: &str) -> FedResult<()> {
    require_superuser_for(
        what,
        "Joining, leaving and dropping nodes create and drop subscriptions, which PostgreSQL 15 allows only to superusers.",
    )
}

fn in_transaction_block() -> bool {
    // SAFETY: reads transaction state.
    unsafe { pg_sys::IsTransactionBlock() }
}

fn peer_info_from(r: &mut Remote, what: &str) -> FedResult<PeerInfo> {
    let ext = r.scalar(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_federation'",
        &[],
    )?;
    let Some(version) = ext else {
        return Err(FedError::prerequisite(format!("pg_federation is not installed on {what} ({})", r.target))
            .hint("Install it there first: CREATE EXTENSION pg_federation; (with shared_preload_libraries = 'pg_federation')."));
    };
    if major_minor(&version) != major_minor(VERSION) {
        return Err(FedError::prerequisite(format!("{what} runs pg_federation {version}, this node runs {VERSION}"))
            .hint("Upgrade both to the same version (ALTER EXTENSION pg_federation UPDATE) before joining."));
    }
    let json = r
        .scalar("SELECT federation.peer_info()::text", &[])?
        .unwrap_or_default();
    serde_json::from_str(&json).map_err(|e| {
        FedError::internal(format!(
            "{what} answered peer_info() with something unexpected: {e}"
        ))
    })
}

fn major_minor(v: &str) -> String {
    v.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The federation.join() SQL function: see sql/api.sql for the signature.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn join_federation(peer_conninfo: Option<&str>, node_conninfo: Option<&str>) {
    let peer = crate::errors::required(
        peer_conninfo,
        "the peer's connection string",
        "SELECT federation.join('host=east.example port=5432 dbname=app user=federation');",
    );
    join(peer, node_conninfo).or_raise()
}

pub fn join(peer_conninfo: &str, node_conninfo: Option<&str>) -> FedResult<()> {
    require_superuser("federation.join()")?;
    let me = identity::current_name()?;
    let my_conninfo = node_conninfo.map(str::to_string).filter(|s| !s.trim().is_empty()).or_else(|| gucs::get_str(&gucs::NODE_CONNINFO)).ok_or_else(|| {
        FedError::prerequisite(format!("this node (\"{me}\") has no address for its peers"))
            .detail("The other members connect back to this node to replicate its rows; they need its address as they see it (on Kubernetes, a Service name, not localhost).")
            .hint("Set it and reload: ALTER SYSTEM SET federation.node_conninfo = 'host=east.example port=5432 dbname=app user=federation'; SELECT pg_reload_conf(); or pass it: federation.join(peer, node_conninfo => '...').")
    })?;
    if peer_conninfo.trim().is_empty() {
        return Err(FedError::invalid_value("the peer's connection string is empty")
            .hint("Give the address of any member of the federation to join, for example 'host=east.example port=5432 dbname=app user=federation'."));
    }
    crate::remote::parse(&my_conninfo)?;
    crate::remote::parse(peer_conninfo)?;
    let mine = local_info()?;
    if mine.wal_level != "logical" {
        return Err(FedError::prerequisite(format!(
            "wal_level is {} on this node, not logical",
            mine.wal_level
        ))
        .hint("Set wal_level = logical in postgresql.conf and restart the server."));
    }
    if !mine.worker_running {
        return Err(FedError::prerequisite("pg_federation's background worker is not running on this node")
            .detail("It completes a join after COMMIT; it starts when pg_federation is in shared_preload_libraries and federation.database names this database.")
            .hint(format!("Set shared_preload_libraries = 'pg_federation' and federation.database = '{}' in postgresql.conf, and restart.", current_database()?)));
    }

    // The peer, and through it every member of its federation.
    let mut peer = Remote::connect(peer_conninfo, "the peer")?;
    let whoami = "SELECT system_identifier::text || '/' || current_database() FROM pg_catalog.pg_control_system()";
    if peer.scalar(whoami, &[])? == sql::one::<String>(whoami, &[])? {
        return Err(FedError::invalid_value(format!("the peer's connection string ({}) leads to this node itself", mask(peer_conninfo)))
            .hint("Give the address of another node: the member of the federation to join, or the node to form one with."));
    }
    let pinfo = peer_info_from(&mut peer, "the peer")?;
    let known: Vec<String> = catalog::members()?.into_iter().map(|m| m.name).collect();
    if known.contains(&pinfo.node_name) {
        FedError::new(
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!(
                "this node is already a member of {}'s federation; nothing to do",
                pinfo.node_name
            ),
        )
        .report(PgLogLevel::NOTICE);
        return Ok(());
    }
    if !known.is_empty() {
        return Err(FedError::prerequisite(format!("this node already belongs to a federation (with {})", known.join(", ")))
            .hint("Join the other federation's nodes from a node that is in no federation, or call federation.leave() first."));
    }
    let mut infos = vec![(peer_conninfo.to_string(), pinfo.clone())];
    for m in &pinfo.members {
        let what = format!("member \"{}\" of the peer's federation", m.node_name);
        let mut r = Remote::connect(&m.conninfo, &what).map_err(|e| {
            e.hint(format!("Every member must be reachable from this node during join; bring \"{}\" back, or remove it with federation.drop_node('{}') on the peer.", m.node_name, m.node_name))
        })?;
        infos.push((m.conninfo.clone(), peer_info_from(&mut r, &what)?));
    }
    let size = infos.len() as i64 + 1;

    // Names: distinct, also once '-' becomes '_' (slot names).
    for (_, i) in &infos {
        if canonical(&i.node_name) == canonical(&me) {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                format!("node name \"{me}\" is already taken in the peer's federation (by \"{}\" at {})", i.node_name, mask(&conninfo_of(i, peer_conninfo))),
            )
            .hint("Give this node another name (federation.node_name), reload, and join again."));
        }
    }
    // Settings and privileges on every node, for one more member.
    check_capacity(&me, &mine, size, true)?;
    for (ci, i) in &infos {
        if i.wal_level != "logical" {
            return Err(FedError::prerequisite(format!(
                "wal_level is {} on node \"{}\", not logical",
                i.wal_level, i.node_name
            ))
            .hint("Set wal_level = logical in its postgresql.conf and restart it."));
        }
        if !i.is_superuser {
            return Err(FedError::privilege(format!("the role in the connection string for node \"{}\" ({}) is not a superuser", i.node_name, mask(ci)))
                .detail("This node creates a subscription there, which PostgreSQL 15 allows only to superusers; a role without REPLICATION cannot replicate either.")
                .hint("Connect as a superuser (with a password file rather than a password in the string)."));
        }
        if !i.worker_running {
            return Err(FedError::prerequisite(format!("pg_federation's background worker is not running on node \"{}\"", i.node_name))
                .hint("Set shared_preload_libraries = 'pg_federation' and federation.database there, and restart it."));
        }
        check_capacity(&i.node_name, i, size, false)?;
    }
    // The same federated tables with the same columns everywhere.
    for (_, i) in &infos {
        compare_tables(&me, &mine.tables, &i.node_name, &i.tables)?;
    }
    // The peer can reach this node at the address it will be given.
    let seen = peer.scalar("SELECT federation.check_reachable($1)", &[Some(&my_conninfo)]).map_err(|e| {
        let msg = e.message.clone();
        e.hint("Set federation.node_conninfo to an address the peer can reach (on Kubernetes, this pod's Service name).").detail(format!("The peer tried this node's address and failed: {msg}"))
    })?;
    if seen.as_deref() != Some(me.as_str()) {
        return Err(FedError::invalid_value(format!(
            "federation.node_conninfo ({}) leads the peer to node \"{}\", not to this node \"{me}\"",
            mask(&my_conninfo),
            seen.unwrap_or_default()
        ))
        .hint("Fix federation.node_conninfo so that it names this server."));
    }
    drop(peer);

    // Everything checked: record the federation here. The worker does the rest after COMMIT.
    catalog::claim_local_name(&me)?;
    catalog::set_local_conninfo(&my_conninfo)?;
    publication::ensure_exists(&me)?;
    for (ci, i) in &infos {
        catalog::upsert_member(&i.node_name, &conninfo_of(i, ci), "joining", true)?;
    }
    partitions_for_members(&me)?;
    crate::worker::wake();
    Ok(())
}

/// The address the federation uses for a node: what it advertises, else how we reached it.
fn conninfo_of(i: &PeerInfo, reached_with: &str) -> String {
    i.node_conninfo
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| reached_with.to_string())
}

fn current_database() -> FedResult<String> {
    Ok(sql::one::<String>("SELECT current_database()::text", &[])?.unwrap_or_default())
}

fn check_capacity(node: &str, i: &PeerInfo, size: i64, joining: bool) -> FedResult<()> {
    let peers = size - 1;
    let need_slots = if joining {
        i.used_replication_slots + peers
    } else {
        i.used_replication_slots + 1
    };
    let short = |setting: &str, have: i64, need: i64| {
        FedError::prerequisite(format!("{setting} is {have} on node \"{node}\"; a federation of {size} nodes needs at least {need}"))
            .hint(format!("Raise {setting} in that node's postgresql.conf and restart it (see README: settings)."))
    };
    if i.max_replication_slots < need_slots {
        return Err(short(
            "max_replication_slots",
            i.max_replication_slots,
            need_slots,
        ));
    }
    if i.max_wal_senders < peers + 1 {
        return Err(short("max_wal_senders", i.max_wal_senders, peers + 1));
    }
    if i.max_logical_replication_workers < peers + 1 {
        return Err(short(
            "max_logical_replication_workers",
            i.max_logical_replication_workers,
            peers + 1,
        ));
    }
    Ok(())
}

fn compare_tables(
    me: &str,
    mine: &[TableShape],
    other: &str,
    theirs: &[TableShape],
) -> FedResult<()> {
    for t in mine {
        match theirs.iter().find(|x| x.table == t.table) {
            None => {
                return Err(FedError::prerequisite(format!("federated table {} is missing on node \"{other}\"", t.table))
                    .hint(format!("Create the table on \"{other}\" with the same columns and run SELECT federation.enable('{}'); there.", t.table)))
            }
            Some(x) if x.columns != t.columns || x.node_column != t.node_column => {
                let diff: Vec<String> = t
                    .columns
                    .iter()
                    .filter(|c| !x.columns.contains(c))
                    .map(|(n, ty)| format!("{n} {ty} on \"{me}\""))
                    .chain(x.columns.iter().filter(|c| !t.columns.contains(c)).map(|(n, ty)| format!("{n} {ty} on \"{other}\"")))
                    .collect();
                return Err(FedError::new(
                    PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                    format!("federated table {} differs between node \"{me}\" and node \"{other}\"", t.table),
                )
                .detail(format!("Columns that differ: {}.", diff.join(", ")))
                .hint("Make the columns the same on every node, then join again."));
            }
            _ => {}
        }
    }
    for x in theirs {
        if !mine.iter().any(|t| t.table == x.table) {
            return Err(FedError::prerequisite(format!("federated table {} of node \"{other}\" is not federated on this node", x.table))
                .hint(format!("Create it here with the same columns and run SELECT federation.enable('{}'); then join again.", x.table)));
        }
    }
    Ok(())
}

/// For a node enabling a table on a running federation: the table's columns here, as
/// [[name, type], ...] without the node column, or NULL when there is no such table.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn table_shape(tbl: &str, node_column: &str) -> Option<pgrx::JsonB> {
    require_superuser("federation.table_shape()").or_raise();
    let oid = sql::one::<pg_sys::Oid>("SELECT pg_catalog.to_regclass($1)::oid", &[tbl.into()])
        .or_raise()?;
    Some(pgrx::JsonB(
        serde_json::to_value(columns_without(oid, node_column).or_raise()).unwrap(),
    ))
}

fn columns_without(oid: pg_sys::Oid, node_column: &str) -> FedResult<Vec<(String, String)>> {
    sql::rows(
        "SELECT attname::text, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
         WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attname <> $2 ORDER BY attname",
        &[oid.into(), node_column.into()],
        |r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default())),
    )
}

/// For the worker of a node that enabled a table on a running federation: federates the
/// same table here (without propagating further).
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn enable_here(tbl: &str, node_column: &str) {
    require_superuser("federation.enable_here()").or_raise();
    let oid = sql::one::<pg_sys::Oid>("SELECT pg_catalog.to_regclass($1)::oid", &[tbl.into()])
        .or_raise()
        .unwrap_or_else(|| {
            FedError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("table {tbl} does not exist on this node"),
            )
            .hint("Create it with the same columns as on the other members.")
            .raise()
        });
    enable::enable_with(oid, node_column, false).or_raise()
}

/// enable() on a node with members: the table must exist on every member with the same
/// columns (the node column aside), checked before anything changes.
pub fn check_table_on_members(t: &Table, node_column: &str) -> FedResult<()> {
    let mine = columns_without(t.oid, node_column)?;
    let members = catalog::as_extension_owner(catalog::members)?;
    for m in members {
        let mut r = Remote::connect(&m.conninfo, &format!("member \"{}\"", m.name))
            .map_err(|e| e.hint(format!("Every member must be reachable to federate a table on a running federation; bring \"{}\" back and enable again.", m.name)))?;
        let shape = r.scalar(
            "SELECT federation.table_shape($1, $2)::text",
            &[Some(&t.display()), Some(node_column)],
        )?;
        let Some(shape) = shape else {
            return Err(FedError::prerequisite(format!("table {} does not exist on member \"{}\"", t.display(), m.name))
                .detail("On a running federation, enable() federates the table on every member, so it must exist everywhere.")
                .hint(format!("Create {} on \"{}\" with the same columns, then call enable() again.", t.display(), m.name)));
        };
        let theirs: Vec<(String, String)> = serde_json::from_str(&shape).unwrap_or_default();
        if theirs != mine {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                format!(
                    "table {} differs between this node and member \"{}\"",
                    t.display(),
                    m.name
                ),
            )
            .detail(format!(
                "Here: {}. There: {}.",
                fmt_cols(&mine),
                fmt_cols(&theirs)
            ))
            .hint("Make the columns the same on every node, then call enable() again."));
        }
    }
    Ok(())
}

fn fmt_cols(c: &[(String, String)]) -> String {
    c.iter()
        .map(|(n, t)| format!("{n} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The federation.leave() SQL function.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn leave_federation(drop_rows: Option<bool>) {
    let drop_rows = crate::errors::required(
        drop_rows,
        "drop_rows",
        "SELECT federation.leave(drop_rows => false);",
    );
    leave(drop_rows).or_raise()
}

pub fn must_run_alone(what: &str) -> FedResult<()> {
    if in_transaction_block() {
        return Err(FedError::new(PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION, format!("{what} cannot run inside a transaction block"))
            .detail("It drops subscriptions and replication slots on other nodes, which a ROLLBACK could not undo.")
            .hint("Run it on its own, outside BEGIN ... COMMIT."));
    }
    Ok(())
}

pub fn leave(drop_rows: bool) -> FedResult<()> {
    require_superuser("federation.leave()")?;
    must_run_alone("federation.leave()")?;
    let me = identity::current_name()?;
    let members = catalog::members()?;
    if members.is_empty() {
        return Err(
            FedError::prerequisite(format!("node \"{me}\" is not in a federation"))
                .hint("federation.nodes lists the members this node knows."),
        );
    }
    let my_conninfo = catalog::local_node()?
        .and_then(|(_, c)| c)
        .unwrap_or_default();
    // Reach everyone first: leaving half-way would strand slots.
    let mut conns = vec![];
    for m in &members {
        let r = Remote::connect(&m.conninfo, &format!("member \"{}\"", m.name))
            .map_err(|e| e.hint(format!("Every member must be reachable to leave cleanly; if \"{}\" is gone for good, run federation.drop_node('{}') on a survivor first.", m.name, m.name)))?;
        conns.push(r);
    }
    let mut me_conn = Remote::connect(&my_conninfo, "this node")?;
    for (m, r) in members.iter().zip(conns.iter_mut()) {
        r.exec(&format!(
            "DROP SUBSCRIPTION IF EXISTS {}",
            quote_ident(&subscription_name(&me, &m.name))
        ))?;
        r.query(
            "SELECT federation.remove_member($1, $2)",
            &[Some(&me), Some(if drop_rows { "true" } else { "false" })],
        )?;
        me_conn.exec(&format!(
            "DROP SUBSCRIPTION IF EXISTS {}",
            quote_ident(&subscription_name(&m.name, &me))
        ))?;
    }
    // Slots on this node that members may not have dropped (a subscription dropped without
    // its slot).
    me_conn.exec(&format!(
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots
         WHERE slot_name LIKE 'federation\\_{}\\_%' AND NOT active",
        canonical(&me)
    ))?;
    for m in &members {
        catalog::delete_member(&m.name)?;
    }
    sql::exec("UPDATE federation.local_node SET conninfo = NULL")?;
    Ok(())
}

/// The federation.drop_node() SQL function.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn drop_federation_node(name: Option<&str>, drop_rows: Option<bool>) {
    let name = crate::errors::required(
        name,
        "the node to drop",
        "SELECT federation.drop_node('south');",
    );
    let drop_rows = crate::errors::required(
        drop_rows,
        "drop_rows",
        "SELECT federation.drop_node('south', drop_rows => false);",
    );
    drop_node(name, drop_rows).or_raise()
}

pub fn drop_node(name: &str, drop_rows: bool) -> FedResult<()> {
    require_superuser("federation.drop_node()")?;
    must_run_alone("federation.drop_node()")?;
    let me = identity::current_name()?;
    if name == me {
        return Err(FedError::invalid_value(format!("\"{name}\" is this node"))
            .hint("To take this node out, run federation.leave() on it."));
    }
    let members = catalog::members()?;
    if !members.iter().any(|m| m.name == name) {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("node \"{name}\" is not a member of this node's federation"),
        )
        .hint("federation.nodes lists the members."));
    }
    let my_conninfo = catalog::local_node()?
        .and_then(|(_, c)| c)
        .unwrap_or_default();
    let mut survivors: Vec<(String, Remote)> =
        vec![(me.clone(), Remote::connect(&my_conninfo, "this node")?)];
    for m in members.iter().filter(|m| m.name != name) {
        survivors.push((
            m.name.clone(),
            Remote::connect(&m.conninfo, &format!("member \"{}\"", m.name))?,
        ));
    }
    for (survivor, r) in survivors.iter_mut() {
        let sub = quote_ident(&subscription_name(name, survivor));
        // The dead node cannot drop its slot: detach the subscription from it first.
        let exists = r.scalar(
            "SELECT count(*) FROM pg_catalog.pg_subscription WHERE subname = $1",
            &[Some(&subscription_name(name, survivor))],
        )?;
        if exists.as_deref() == Some("1") {
            r.exec(&format!("ALTER SUBSCRIPTION {sub} DISABLE"))?;
            r.exec(&format!("ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)"))?;
            r.exec(&format!("DROP SUBSCRIPTION {sub}"))?;
        }
        // The slot the dead node's subscription held here: WAL stops piling up.
        r.query(
            "SELECT pg_catalog.pg_terminate_backend(active_pid) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND active",
            &[Some(&subscription_name(survivor, name))],
        )?;
        r.query(
            "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[Some(&subscription_name(survivor, name))],
        )?;
        r.query(
            "SELECT federation.remove_member($1, $2)",
            &[Some(name), Some(if drop_rows { "true" } else { "false" })],
        )?;
    }
    Ok(())
}
