//! The federation functions other nodes call on this node over libpq while they wire the
//! mesh, enable or disable a table everywhere, or leave (src/remote/peer.rs is the calling
//! side). Each is superuser-only (sql/api.sql revokes them from PUBLIC), idempotent, and
//! runs in the caller's remote transaction.

use crate::catalog::{self, MemberState};
use crate::enable::{self, Spread};
use crate::errors::{FedError, FedResult, OrRaise};
use crate::gucs;
use crate::identity::{self, validate_node_name};
use crate::preconditions::require_superuser;
use crate::remote::{mask, MemberInfo, PeerInfo, Remote, TableShape, VERSION};
use crate::spi;
use crate::table::{self, inspect, partitions, publication, sequences};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

fn setting_i64(name: &str) -> FedResult<i64> {
    Ok(
        spi::one::<String>("SELECT pg_catalog.current_setting($1)", &[name.into()])?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

fn local_tables() -> FedResult<Vec<TableShape>> {
    catalog::federated_tables_named()?
        .into_iter()
        .map(|(oid, table, node_column)| {
            Ok(TableShape {
                table,
                node_column,
                columns: inspect::columns(oid, None)?,
            })
        })
        .collect()
}

pub fn local_info() -> FedResult<PeerInfo> {
    let me = identity::current_name()?;
    let node_conninfo = catalog::joined_conninfo()?.or_else(gucs::node_conninfo);
    Ok(PeerInfo {
        node_name: me,
        version: VERSION.to_string(),
        node_conninfo,
        wal_level: spi::one::<String>("SELECT pg_catalog.current_setting('wal_level')", &[])?
            .unwrap_or_default(),
        max_replication_slots: setting_i64("max_replication_slots")?,
        used_replication_slots: spi::one::<i64>(
            "SELECT count(*) FROM pg_catalog.pg_replication_slots",
            &[],
        )?
        .unwrap_or(0),
        max_wal_senders: setting_i64("max_wal_senders")?,
        max_logical_replication_workers: setting_i64("max_logical_replication_workers")?,
        is_superuser: spi::one::<bool>(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )?
        .unwrap_or(false),
        // Right after the server or the database started, the launcher may not have started
        // the worker yet: wait for it a little.
        worker_running: crate::worker::wait_running(std::time::Duration::from_secs(15))?,
        members: catalog::members()?
            .into_iter()
            .map(|m| MemberInfo {
                node_name: m.name,
                conninfo: m.conninfo,
            })
            .collect(),
        tables: local_tables()?,
        node_number: catalog::node_number()?,
        numbers_issued: catalog::numbers_issued()?,
    })
}

/// For peers: this node's identity, settings, members (with their connection strings:
/// superuser only) and federated tables, as JSON.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn peer_info() -> pgrx::JsonB {
    require_superuser("federation_internal.peer_info()").or_raise();
    pgrx::JsonB(serde_json::to_value(local_info().or_raise()).unwrap())
}

/// For peers: connects to `conninfo` from this node and returns the node name found there, so
/// a joining node proves that its peers can reach it.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn check_reachable(conninfo: &str) -> String {
    require_superuser("federation_internal.check_reachable()").or_raise();
    let mut r = Remote::connect(conninfo, "the joining node").or_raise();
    let (name, superuser) = r.name_and_superuser().or_raise();
    if !superuser {
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
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn add_member(name: &str, conninfo: &str, your_conninfo: &str) {
    require_superuser("federation_internal.add_member()").or_raise();
    add_member_impl(name, conninfo, your_conninfo).or_raise()
}

fn add_member_impl(name: &str, conninfo: &str, your_conninfo: &str) -> FedResult<()> {
    validate_node_name(name, "the joining node")?;
    let me = identity::current_name()?;
    catalog::claim_local_name(&me)?;
    if catalog::joined_conninfo()?.is_none() {
        let mine = gucs::node_conninfo().unwrap_or_else(|| your_conninfo.to_string());
        catalog::set_local_conninfo(&mine)?;
    }
    publication::ensure_exists(&me)?;
    catalog::upsert_member(name, conninfo, MemberState::Joining, false)?;
    partitions::partitions_for_members(&me)?;
    Ok(())
}

/// For a joining node (during join()): records node number `number` as given out here,
/// unless this node has seen it or a higher one given out (then false: another join took it;
/// the joining node retries). `yours`: this node's own number when it has none yet (the
/// node a federation is formed with); its federated tables' sequences move to that range.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn reserve_node_number(number: i32, yours: Option<i32>) -> bool {
    require_superuser("federation_internal.reserve_node_number()").or_raise();
    (|| -> FedResult<bool> {
        let me = identity::current_name()?;
        catalog::claim_local_name(&me)?;
        if let Some(y) = yours {
            if catalog::node_number()?.is_none() && catalog::reserve_number(y)? {
                catalog::set_node_number(y)?;
                sequences::number_all()?;
            }
        }
        catalog::reserve_number(number)
    })()
    .or_raise()
}

/// For the joining node's worker: marks a member ready once both directions replicate.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn set_member_ready(name: &str) {
    require_superuser("federation_internal.set_member_ready()").or_raise();
    catalog::set_member_state(name, MemberState::Ready).or_raise()
}

/// For a leaving node or drop_node(): forgets a member. Its partitions stay (with the rows
/// replicated so far) unless `drop_partitions`.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn remove_member(name: &str, drop_partitions: bool) {
    require_superuser("federation_internal.remove_member()").or_raise();
    remove_member_impl(name, drop_partitions).or_raise()
}

fn remove_member_impl(name: &str, drop_partitions: bool) -> FedResult<()> {
    catalog::delete_member(name)?;
    if drop_partitions {
        for (oid, qname) in catalog::partitions_of_node(name, None)? {
            catalog::delete_partition(oid)?;
            crate::own_ddl::run(|| spi::exec(&format!("DROP TABLE {qname}")))?;
        }
    }
    Ok(())
}

/// For a node enabling a table on a running federation: the table's columns here, as
/// [[name, type], ...] without the node column, or NULL when there is no such table.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn table_shape(tbl: &str, node_column: &str) -> Option<pgrx::JsonB> {
    require_superuser("federation_internal.table_shape()").or_raise();
    let oid = spi::one::<pg_sys::Oid>("SELECT pg_catalog.to_regclass($1)::oid", &[tbl.into()])
        .or_raise()?;
    Some(pgrx::JsonB(
        serde_json::to_value(inspect::columns(oid, Some(node_column)).or_raise()).unwrap(),
    ))
}

/// For a node enabling a table on a running federation, before it changes anything: raises
/// what enable() of that table would refuse here. Changes nothing.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn enable_check(tbl: &str, node_column: &str) {
    require_superuser("federation_internal.enable_check()").or_raise();
    enable::check_only(table_here(tbl), node_column).or_raise()
}

fn table_here(tbl: &str) -> pg_sys::Oid {
    spi::one::<pg_sys::Oid>("SELECT pg_catalog.to_regclass($1)::oid", &[tbl.into()])
        .or_raise()
        .unwrap_or_else(|| {
            FedError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("table {tbl} does not exist on this node"),
            )
            .hint("Create it with the same columns as on the other members.")
            .raise()
        })
}

/// For the worker of a node that enabled a table on a running federation: federates the
/// same table here (without propagating further).
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn enable_here(tbl: &str, node_column: &str) {
    require_superuser("federation_internal.enable_here()").or_raise();
    enable::enable_with(table_here(tbl), node_column, Spread::HereOnly).or_raise()
}

/// For disable on a federation: takes this node's partition of `tbl` out of its publication
/// and returns this node's WAL position after that. No-op (position only) when not federated.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn unpublish_here(tbl: &str) -> String {
    require_superuser("federation_internal.unpublish_here()").or_raise();
    (|| -> FedResult<String> {
        let me = identity::current_name()?;
        if let Some(local) = catalog::partition_of(tbl, &me)? {
            let local_sql = table::oid_sql(local)?;
            publication::remove(&me, local, &local_sql)?;
        }
        spi::one::<String>("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])?
            .ok_or_else(|| FedError::internal("no WAL position"))
    })()
    .or_raise()
}

/// For disable on a federation: turns `tbl` back into an ordinary table on this node (no-op
/// when it is not federated here).
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn disable_here(tbl: &str) {
    require_superuser("federation_internal.disable_here()").or_raise();
    if let Some(oid) = catalog::federated_table_named(tbl).or_raise() {
        table::disable::to_ordinary(oid).or_raise();
    }
}

/// A node that joins without one of the federation's tables asks for its definition:
/// `{"before": [...], "after": [...]}`, the statements to run before and after enable()
/// there (src/table/definition.rs).
#[pg_extern(volatile, strict, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn table_definition(tbl: &str) -> String {
    require_superuser("federation_internal.table_definition()").or_raise();
    let oid = catalog::federated_table_named(tbl)
        .or_raise()
        .ok_or_else(|| FedError::prerequisite(format!("table {tbl} is not federated on this node")))
        .or_raise();
    let (before, after) = table::definition::statements(oid).or_raise();
    serde_json::json!({ "before": before, "after": after }).to_string()
}

/// Starts the apply worker of this server's subscription `subscription` unless one runs:
/// called by the node that just made the subscription here over a connection, when
/// PostgreSQL 15's launcher has not started it within 20 ms (it starts workers at most once
/// per wal_retrieve_retry_interval across the server: replication::hasten_apply_worker).
/// True when it started one; always false on PostgreSQL 16+, which needs none of this.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn start_apply_worker(subscription: &str) -> bool {
    require_superuser("federation_internal.start_apply_worker()").or_raise();
    start_apply_worker_impl(subscription).or_raise()
}

fn start_apply_worker_impl(subscription: &str) -> FedResult<bool> {
    let ours = spi::one::<bool>(
        "SELECT s.subname::text LIKE 'federation\\_%' FROM pg_catalog.pg_subscription s
         WHERE s.subname = $1 AND s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())",
        &[subscription.into()],
    )?;
    match ours {
        None => Err(FedError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!(
                "subscription {} does not exist in this database",
                spi::quote_ident(subscription)
            ),
        )
        .hint("pg_catalog.pg_subscription lists this database's subscriptions.")),
        Some(false) => Err(FedError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "subscription {} is not one of pg_federation's",
                spi::quote_ident(subscription)
            ),
        )
        .hint("Only the federation's own subscriptions (named federation_<publisher>_<subscriber>) are started this way; PostgreSQL's launcher starts the others.")),
        Some(true) => crate::replication::start_apply_worker_here(subscription),
    }
}
