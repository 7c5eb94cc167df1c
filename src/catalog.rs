//! Reading and writing pg_federation's catalog (sql/catalog.sql).

use crate::errors::FedResult;
use crate::sql;
use pgrx::prelude::*;

/// Members of the federation other than this node, by name.
pub fn other_members() -> FedResult<Vec<String>> {
    Ok(sql::rows("SELECT node_name FROM federation.node ORDER BY node_name", &[], |r| r.get::<String>(1))?
        .into_iter()
        .flatten()
        .collect())
}

/// The node column of a federated table, or None when the table is not federated.
pub fn node_column(relid: pg_sys::Oid) -> FedResult<Option<String>> {
    sql::one::<String>("SELECT node_column::text FROM federation.federated_table WHERE relid = $1", &[relid.into()])
}

pub fn insert_table(relid: pg_sys::Oid, node_column: &str, adopted: bool) -> FedResult<()> {
    sql::exec_args(
        "INSERT INTO federation.federated_table (relid, node_column, adopted) VALUES ($1::oid::regclass, $2, $3)",
        &[relid.into(), node_column.into(), adopted.into()],
    )
}

pub fn insert_partition(relid: pg_sys::Oid, node: Option<&str>, partition: pg_sys::Oid) -> FedResult<()> {
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
    sql::exec_args("DELETE FROM federation.federated_table WHERE relid = $1", &[relid.into()])
}
