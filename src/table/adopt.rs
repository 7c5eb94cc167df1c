//! enable() of a table already LIST-partitioned by the node column (the original recipe's
//! tables): adopted as it is; missing node partitions and DEFAULT are added.

use super::partitions::{self, ClaimNodeColumn};
use super::{guards, inspect, publication, sequences, Table};
use crate::catalog;
use crate::errors::{notice, FedError, FedResult};
use crate::identity::validate_node_name;
use crate::naming::partition_name;
use crate::spi::{self, qualified, quote_ident};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Partitions of a partitioned table: (oid, name, relkind, bound expression, is default).
fn child_partitions(oid: pg_sys::Oid) -> FedResult<Vec<(pg_sys::Oid, String, String, String)>> {
    spi::rows(
        "SELECT c.oid, c.relname::text, c.relkind::text, pg_catalog.pg_get_expr(c.relpartbound, c.oid)
         FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = $1 ORDER BY c.relname",
        &[oid.into()],
        |r| {
            Ok((
                r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
            ))
        },
    )
}

/// `FOR VALUES IN ('east')` -> Some("east"); DEFAULT -> None; anything else is refused.
fn single_list_value(bound: &str) -> Result<Option<String>, ()> {
    if bound == "DEFAULT" {
        return Ok(None);
    }
    let inner = bound
        .strip_prefix("FOR VALUES IN ('")
        .and_then(|r| r.strip_suffix("')"))
        .ok_or(())?;
    // A single literal: quotes inside are doubled; a "', '" would mean several values.
    if inner.replace("''", "").contains('\'') {
        return Err(());
    }
    Ok(Some(inner.replace("''", "'")))
}

pub fn adopt_partitioned(t: &Table, col: &str, me: &str) -> FedResult<()> {
    let name = t.qualified();
    let key = spi::rows(
        "SELECT p.partstrat::text, p.partnatts::int4, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
         FROM pg_catalog.pg_partitioned_table p
         LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
         WHERE p.partrelid = $1",
        &[t.oid.into()],
        |r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<i32>(2)?.unwrap_or(0), r.get::<String>(3)?, r.get::<String>(4)?)),
    )?;
    let Some((strat, natts, attname, atttype)) = key.into_iter().next() else {
        return Err(FedError::internal(format!(
            "{name} is partitioned but has no partition key"
        )));
    };
    if strat != "l" || natts != 1 || attname.as_deref() != Some(col) {
        return Err(FedError::unsupported(format!("cannot federate {name}: it is partitioned, but not by LIST ({})", quote_ident(col)))
            .detail("A federated table is LIST-partitioned by its node column, one partition per node.")
            .hint("Name the partition key column with node_column => '...', or federate an ordinary table."));
    }
    if atttype.as_deref() != Some("text") {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!(
                "cannot federate {name}: its node column {} is of type {}, not text",
                quote_ident(col),
                atttype.unwrap_or_default()
            ),
        )
        .hint("The node column of a federated table must be text."));
    }

    // Every partition: an ordinary table for one valid node name, or DEFAULT.
    let children = child_partitions(t.oid)?;
    let mut owned: Vec<(Option<String>, pg_sys::Oid, String)> = vec![];
    for (oid, pname, kind, bound) in &children {
        let pdisplay = qualified(&t.schema, pname);
        if kind != "r" {
            return Err(FedError::unsupported(format!(
                "cannot federate {name}: its partition {pdisplay} is not an ordinary table"
            ))
            .hint("Sub-partitioned and foreign partitions cannot be federated."));
        }
        let node = single_list_value(bound).map_err(|_| {
            FedError::unsupported(format!("cannot federate {name}: partition {pdisplay} is {bound}, not one node"))
                .hint("Each partition of a federated table holds exactly one node's rows: FOR VALUES IN ('<node>').")
        })?;
        if let Some(n) = &node {
            validate_node_name(n, &format!("partition {pdisplay}"))?;
        }
        let pt = Table::load(*oid)?;
        inspect::check_replica_identity(&pt, &format!("its partition {pdisplay}"))?;
        owned.push((node, *oid, pdisplay));
    }
    let template = owned
        .iter()
        .find(|(n, _, _)| n.as_deref() == Some(me))
        .or_else(|| owned.iter().find(|(n, _, _)| n.is_some()))
        .map(|(_, oid, _)| *oid)
        .ok_or_else(|| {
            FedError::prerequisite(format!("cannot federate {name}: it has no node partition to copy"))
                .hint(format!("Create this node's partition first: CREATE TABLE ... PARTITION OF {name} FOR VALUES IN ('{me}') with a primary key."))
        })?;
    let others = catalog::other_members()?;
    for n in others.iter().map(String::as_str).chain([me]) {
        if !owned.iter().any(|(o, _, _)| o.as_deref() == Some(n)) {
            inspect::check_name_free(&t.schema, &partition_name(&t.name, Some(n)), t)?;
        }
    }
    if !owned.iter().any(|(o, _, _)| o.is_none()) {
        inspect::check_name_free(&t.schema, &partition_name(&t.name, None), t)?;
    }
    sequences::check_numberable(t)?;

    // Checked; now change. Rows without a node (in DEFAULT) belong to this node.
    let table_sql = t.qualified();
    let qcol = quote_ident(col);
    catalog::as_extension_owner(|| catalog::insert_table(t.oid, col, true))?;
    let mut local_sql = owned
        .iter()
        .find(|(n, _, _)| n.as_deref() == Some(me))
        .map(|(_, _, s)| s.clone());
    if local_sql.is_none() {
        let (_, oid, part_sql) = partitions::make_partition(t, Some(me), template)?;
        owned.push((Some(me.to_string()), oid, part_sql.clone()));
        local_sql = Some(part_sql);
    }
    let local_sql = local_sql.unwrap();
    partitions::claim_node_column(
        &table_sql,
        &qcol,
        me,
        ClaimNodeColumn {
            fill_nulls: true,
            set_not_null: true,
        },
    )?;

    for (node, oid, psql) in &owned {
        if node.as_deref() != Some(me) {
            guards::install(psql, node.as_deref(), &name, col, &local_sql)?;
        }
        catalog::as_extension_owner(|| catalog::insert_partition(t.oid, node.as_deref(), *oid))?;
        // The recipe's own partitions: described unless their owner described them already.
        if partitions::comment(*oid)?.is_none() {
            partitions::describe(psql, &name, node.as_deref())?;
        }
    }
    let local_oid = owned
        .iter()
        .find(|(n, _, _)| n.as_deref() == Some(me))
        .map(|(_, o, _)| *o)
        .unwrap();
    for n in &others {
        if !owned
            .iter()
            .any(|(o, _, _)| o.as_deref() == Some(n.as_str()))
        {
            partitions::create_partition(t, col, Some(n), local_oid, &local_sql)?;
        }
    }
    if !owned.iter().any(|(o, _, _)| o.is_none()) {
        partitions::create_partition(t, col, None, local_oid, &local_sql)?;
    }
    if let Some(k) = catalog::node_number()? {
        sequences::number(t, k)?;
    }
    warn_about_recipe_triggers(t)?;
    catalog::as_extension_owner(|| publication::add(me, local_oid, &local_sql))
}

/// The original recipe's AFTER INSERT statement trigger rewrites every inserted row; with
/// enable() the node column defaults to this node, so it only costs. Say so; leave it.
fn warn_about_recipe_triggers(t: &Table) -> FedResult<()> {
    let trigs = spi::rows(
        "SELECT tgname::text FROM pg_catalog.pg_trigger
         WHERE tgrelid = $1 AND NOT tgisinternal AND tgparentid = 0
           AND (tgtype & 1) = 0 AND (tgtype & 2) = 0 AND (tgtype & 4) <> 0",
        &[t.oid.into()],
        |r| r.get::<String>(1),
    )?;
    for name in trigs.into_iter().flatten() {
        notice(format!(
            "trigger {} on {} runs after every INSERT statement; the node column now defaults to this node, so it may no longer be needed (DROP TRIGGER {} ON {};)",
            quote_ident(&name), t.qualified(), quote_ident(&name), t.qualified()
        ));
    }
    Ok(())
}
