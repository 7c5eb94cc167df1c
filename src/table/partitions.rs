//! A federated table's partitions: one per member and a DEFAULT, each a copy of this node's
//! partition's structure, guarded and recorded in the catalog; and the node column that
//! routes local writes to this node's partition.

use super::guards;
use super::{inspect, Table};
use crate::catalog;
use crate::errors::{FedError, FedResult};
use crate::naming::partition_name;
use crate::spi::{self, qualified, quote_ident, quote_literal};
use pgrx::prelude::*;

/// Creates the partition of `t` owned by `owner` (None: DEFAULT) as a copy of the template
/// partition's structure (columns, indexes, primary key, CHECKs), attaches it, guards it and
/// records it. Returns its name.
pub fn create_partition(
    t: &Table,
    col: &str,
    owner: Option<&str>,
    template: pg_sys::Oid,
    local_part_sql: &str,
) -> FedResult<String> {
    let (name, oid, part_sql) = make_partition(t, owner, template)?;
    guards::install(&part_sql, owner, &t.qualified(), col, local_part_sql)?;
    catalog::as_extension_owner(|| catalog::insert_partition(t.oid, owner, oid))?;
    Ok(name)
}

/// The partition of `t` for `owner` (None: DEFAULT), copied from the template partition
/// (columns, indexes, primary key, CHECKs, replica identity), owned like `t` and attached.
/// Returns (name, oid, qualified SQL name). No guards, no catalog row: callers add those.
pub fn make_partition(
    t: &Table,
    owner: Option<&str>,
    template: pg_sys::Oid,
) -> FedResult<(String, pg_sys::Oid, String)> {
    let name = partition_name(&t.name, owner);
    inspect::check_name_free(&t.schema, &name, t)?;
    let part_sql = qualified(&t.schema, &name);
    spi::exec(&format!(
        "CREATE TABLE {part_sql} (LIKE {} INCLUDING ALL EXCLUDING IDENTITY)",
        super::oid_sql(template)?
    ))?;
    spi::exec(&format!(
        "ALTER TABLE {part_sql} OWNER TO {}",
        quote_ident(&t.owner)
    ))?;
    copy_replica_identity(template, &part_sql, &t.schema, &name)?;
    let bound = match owner {
        Some(n) => format!("FOR VALUES IN ({})", quote_literal(n)),
        None => "DEFAULT".to_string(),
    };
    spi::exec(&format!(
        "ALTER TABLE {} ATTACH PARTITION {part_sql} {bound}",
        t.qualified()
    ))?;
    describe(&part_sql, &t.qualified(), owner)?;
    let oid = super::relation_oid(&t.schema, &name)?;
    Ok((name, oid, part_sql))
}

/// What pg_federation made of a partition, for psql's `\dt+` and `\d+`: the same text on
/// every node. pg_federation's own statement: it stays on this node (every member comments
/// its own partitions as it makes them).
pub fn describe(part_sql: &str, table_sql: &str, owner: Option<&str>) -> FedResult<()> {
    let text = match owner {
        Some(n) => format!(
            "pg_federation: the rows of node \"{n}\" of federated table {table_sql}; written on node \"{n}\" only, \
             replicated to every member (federation.tables, docs/enable.md)"
        ),
        None => format!(
            "pg_federation: DEFAULT partition of federated table {table_sql}: rows in the name of no member; \
             normally empty (federation.status() names rows found here)"
        ),
    };
    crate::own_ddl::run(|| {
        spi::exec(&format!(
            "COMMENT ON TABLE {part_sql} IS {}",
            quote_literal(&text)
        ))
    })
}

/// The comment of relation `oid`, if it has one.
pub fn comment(oid: pg_sys::Oid) -> FedResult<Option<String>> {
    spi::one::<String>(
        "SELECT pg_catalog.obj_description($1, 'pg_class')",
        &[oid.into()],
    )
}

/// Whether relation `oid` carries a description [`describe`] wrote.
pub fn is_described(oid: pg_sys::Oid) -> FedResult<bool> {
    Ok(comment(oid)?.is_some_and(|c| c.starts_with("pg_federation: ")))
}

/// REPLICA IDENTITY FULL or USING INDEX carries over to a partition copied with LIKE.
fn copy_replica_identity(
    template: pg_sys::Oid,
    part_sql: &str,
    schema: &str,
    part_name: &str,
) -> FedResult<()> {
    let ident = spi::one::<String>(
        "SELECT relreplident::text FROM pg_catalog.pg_class WHERE oid = $1",
        &[template.into()],
    )?
    .unwrap_or_default();
    match ident.as_str() {
        "f" => spi::exec(&format!("ALTER TABLE {part_sql} REPLICA IDENTITY FULL")),
        "i" => {
            let part = super::relation_oid(schema, part_name)?;
            let idx = spi::one::<String>(
                "SELECT c2.relname::text FROM pg_catalog.pg_index i1
                 JOIN pg_catalog.pg_index i2 ON i2.indrelid = $2 AND i2.indkey::text = i1.indkey::text AND i2.indisunique
                 JOIN pg_catalog.pg_class c2 ON c2.oid = i2.indexrelid
                 WHERE i1.indrelid = $1 AND i1.indisreplident LIMIT 1",
                &[template.into(), part.into()],
            )?
            .ok_or_else(|| FedError::internal(format!("no index on {part_sql} matches the replica identity index")))?;
            spi::exec(&format!(
                "ALTER TABLE {part_sql} REPLICA IDENTITY USING INDEX {}",
                quote_ident(&idx)
            ))
        }
        _ => Ok(()),
    }
}

/// Creates the partitions members are missing (a member added since enable()). Returns the
/// nodes it added partitions for.
pub fn ensure_member_partitions(t: &Table, col: &str, me: &str) -> FedResult<Vec<String>> {
    let parts = catalog::partitions(t.oid)?;
    let Some((_, local)) = parts.iter().find(|(n, _)| n.as_deref() == Some(me)) else {
        return Err(FedError::prerequisite(format!(
            "federated table {} has no partition for this node \"{me}\"",
            t.qualified()
        ))
        .detail("This node's name has changed since the table was federated.")
        .hint("Restore federation.node_name to the name this node had, and reload."));
    };
    let local_sql = super::oid_sql(*local)?;
    let mut added = vec![];
    for n in catalog::other_members()? {
        if !parts.iter().any(|(o, _)| o.as_deref() == Some(n.as_str())) {
            create_partition(t, col, Some(&n), *local, &local_sql)?;
            added.push(n);
        }
    }
    Ok(added)
}

/// Gives every federated table here a partition for every member that lacks one.
pub fn partitions_for_members(me: &str) -> FedResult<()> {
    for (oid, col) in catalog::federated_tables()? {
        Table::lock_for_new_partitions(oid)?;
        let t = Table::load(oid)?;
        ensure_member_partitions(&t, &col, me)?;
    }
    Ok(())
}

/// What [`claim_node_column`] must do besides setting the default.
pub struct ClaimNodeColumn {
    /// Rows without a node become this node's.
    pub fill_nulls: bool,
    /// The column becomes NOT NULL.
    pub set_not_null: bool,
}

/// The node column of an enrolled table: filled and made NOT NULL as `claim` says, and its
/// default `federation.node_name()`, which routes every local insert to this node's partition.
pub fn claim_node_column(
    table_sql: &str,
    qcol: &str,
    me: &str,
    claim: ClaimNodeColumn,
) -> FedResult<()> {
    if claim.fill_nulls {
        spi::exec_args(
            &format!("UPDATE {table_sql} SET {qcol} = $1 WHERE {qcol} IS NULL"),
            &[me.into()],
        )?;
    }
    if claim.set_not_null {
        spi::exec(&format!(
            "ALTER TABLE {table_sql} ALTER COLUMN {qcol} SET NOT NULL"
        ))?;
    }
    spi::exec(&format!(
        "ALTER TABLE {table_sql} ALTER COLUMN {qcol} SET DEFAULT federation.node_name()"
    ))
}
