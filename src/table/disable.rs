//! disable() on one node: a federated table becomes an ordinary table again, holding every
//! row of every partition present here.

use super::dressing::Dressing;
use super::{guards, inspect, keys, partitions, publication, sequences, Table};
use crate::catalog::{self, KeyConstraint};
use crate::errors::{FedError, FedResult};
use crate::identity;
use crate::spi::{self, quote_ident, quote_literal};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

pub fn not_federated(t: &Table) -> FedError {
    FedError::prerequisite(format!("table {} is not federated", t.qualified()))
        .hint("federation.tables lists the federated tables on this node.")
}

/// Turns the table back into an ordinary one on this node only (on a federation,
/// crate::disable runs this on every member in turn).
pub fn to_ordinary(relid: pg_sys::Oid) -> FedResult<()> {
    let me = identity::current_name()?;
    Table::lock_exclusive(relid)?;
    let t = Table::load(relid)?;
    inspect::check_owner(&t, "disable")?;
    let Some(col) = catalog::node_column(relid)? else {
        return Err(not_federated(&t));
    };
    let parts = catalog::partitions(relid)?;
    let Some((_, local)) = parts
        .iter()
        .find(|(n, _)| n.as_deref() == Some(me.as_str()))
        .cloned()
    else {
        return Err(FedError::prerequisite(format!("federated table {} has no partition for this node \"{me}\"", t.qualified()))
            .hint("Restore federation.node_name to the name this node had when the table was federated, and reload."));
    };
    let table_sql = t.qualified();
    let local_sql = super::oid_sql(local)?;
    let columns: Vec<String> = spi::rows(
        "SELECT pg_catalog.quote_ident(attname) FROM pg_catalog.pg_attribute
         WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        &[local.into()],
        |r| r.get::<String>(1),
    )?
    .into_iter()
    .flatten()
    .collect();
    let original_keys = catalog::original_keys(relid)?;
    check_no_key_collisions(&t, local, &parts, original_keys.as_deref(), &col)?;

    // Checked; now change.
    let dressing = Dressing::capture(relid, &table_sql)?;
    catalog::as_extension_owner(|| publication::remove(&me, local, &local_sql))?;
    dressing.strip_triggers(&table_sql)?;
    // Detach everything first: a partition keeps its partition constraint until detached.
    let part_sql: Vec<(pg_sys::Oid, String)> = parts
        .iter()
        .map(|(_, oid)| Ok((*oid, super::oid_sql(*oid)?)))
        .collect::<FedResult<_>>()?;
    for (_, psql) in &part_sql {
        spi::exec(&format!("ALTER TABLE {table_sql} DETACH PARTITION {psql}"))?;
    }
    let cols = columns.join(", ");
    for (oid, psql) in &part_sql {
        if *oid != local {
            guards::remove(psql)?;
            spi::exec(&format!(
                "INSERT INTO {local_sql} ({cols}) SELECT {cols} FROM {psql}"
            ))?;
            crate::own_ddl::run(|| spi::exec(&format!("DROP TABLE {psql}")))?;
        }
    }
    catalog::as_extension_owner(|| catalog::delete_table(relid))?;
    crate::own_ddl::run(|| spi::exec(&format!("DROP TABLE {table_sql}")))?;
    spi::exec(&format!(
        "ALTER TABLE {local_sql} RENAME TO {}",
        quote_ident(&t.name)
    ))?;
    // The table is ordinary again: its node column keeps its values, and defaults to this
    // node's name as a constant (no dependency on pg_federation).
    spi::exec(&format!(
        "ALTER TABLE {table_sql} ALTER COLUMN {} SET DEFAULT {}",
        quote_ident(&col),
        quote_literal(&me)
    ))?;
    dressing.add_identities(&table_sql)?;
    // The keys as they were before enable(), and sequences with their ordinary bounds.
    if let Some(ks) = &original_keys {
        keys::restore(local, &table_sql, ks, &col)?;
    }
    sequences::restore_ordinary(local, &table_sql)?;
    spi::exec(&format!("REVOKE ALL ON TABLE {table_sql} FROM PUBLIC"))?;
    // The local partition's description (partitions::describe) goes with the partitioning;
    // the table's own comment, if it had one, comes back below.
    if partitions::is_described(local)? {
        spi::exec(&format!("COMMENT ON TABLE {table_sql} IS NULL"))?;
    }
    dressing.restore_grants_and_comment(&table_sql)?;
    dressing.restore_triggers(&table_sql)
}

/// disable() merges every partition into one table: refuse up front when two nodes hold
/// rows with the same primary key (or the same values of a unique constraint it restores).
fn check_no_key_collisions(
    t: &Table,
    local: pg_sys::Oid,
    parts: &[(Option<String>, pg_sys::Oid)],
    original: Option<&[KeyConstraint]>,
    node_column: &str,
) -> FedResult<()> {
    if parts.len() < 2 {
        return Ok(());
    }
    let mut checks = vec![keys::identifying_columns(original, local, node_column)?];
    for k in original.unwrap_or(&[]).iter().filter(|k| !k.primary) {
        checks.push(k.columns.clone());
    }
    for cols in checks.into_iter().filter(|c| !c.is_empty()) {
        let k = cols
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let union: Vec<String> = parts
            .iter()
            .map(|(_, oid)| Ok(format!("SELECT {k} FROM {}", super::oid_sql(*oid)?)))
            .collect::<FedResult<_>>()?;
        let q = format!(
            "SELECT ({k})::text FROM ({}) u WHERE ({k}) IS NOT NULL GROUP BY {k} HAVING count(*) > 1 LIMIT 1",
            union.join(" UNION ALL ")
        );
        if let Some(dup) = spi::one::<String>(&q, &[])? {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
                format!("cannot disable {}: ({k}) = {dup} exists in more than one node's partition", t.qualified()),
            )
            .detail("disable() merges every node's rows into one ordinary table, whose primary key and unique constraints must hold over all of them.")
            .hint("Delete or renumber the duplicate rows on the nodes that own them (SELECT * FROM federation.duplicate_keys(); lists them), then call disable() again."));
        }
    }
    Ok(())
}
