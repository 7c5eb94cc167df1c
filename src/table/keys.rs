//! The primary key and unique constraints of a converted table, on its parent (docs/keys.md).
//!
//! PostgreSQL requires a partitioned table's unique constraints to include the partition
//! key, so enable() widens the table's primary key and plain unique constraints by the node
//! column and puts them on the new parent: pg_dump, psql, ORMs and `ON CONFLICT (id,
//! node_name)` see a key on the table itself, and every partition gets the same key (its
//! replica identity). The originals are recorded; disable() puts them back.

use crate::catalog::{self, KeyConstraint};
use crate::errors::FedResult;
use crate::spi::{self, quote_ident};
use pgrx::prelude::*;

/// The table's primary key and unique constraints that can move to the parent: plain
/// column lists without INCLUDE, not the replica identity index. Others stay on the
/// partition (they still hold per node).
/// None before 0.3.0's SQL is installed (keys stay on the partitions, as 0.2.0 made them).
pub fn movable(oid: pg_sys::Oid) -> FedResult<Vec<KeyConstraint>> {
    if !catalog::sql_0_3_installed()? {
        return Ok(vec![]);
    }
    let keys = spi::rows(
        "SELECT c.conname::text, c.contype = 'p', c.condeferrable, c.condeferred,
                i.indnullsnotdistinct,
                (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum)
         FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_index i ON i.indexrelid = c.conindid
         WHERE c.conrelid = $1 AND c.contype IN ('p', 'u') AND NOT i.indisreplident
           AND i.indnkeyatts = i.indnatts AND i.indexprs IS NULL AND i.indpred IS NULL
         ORDER BY c.contype = 'p' DESC, c.conname",
        &[oid.into()],
        |r| {
            Ok(KeyConstraint {
                name: r.get::<String>(1)?.unwrap_or_default(),
                primary: r.get::<bool>(2)?.unwrap_or(false),
                deferrable: r.get::<bool>(3)?.unwrap_or(false),
                deferred: r.get::<bool>(4)?.unwrap_or(false),
                nulls_not_distinct: r.get::<bool>(5)?.unwrap_or(false),
                columns: r.get::<Vec<String>>(6)?.unwrap_or_default(),
            })
        },
    )?;
    Ok(keys)
}

fn definition(k: &KeyConstraint, columns: &[String]) -> String {
    let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let kind = if k.primary {
        "PRIMARY KEY".to_string()
    } else if k.nulls_not_distinct {
        "UNIQUE NULLS NOT DISTINCT".to_string()
    } else {
        "UNIQUE".to_string()
    };
    let defer = match (k.deferrable, k.deferred) {
        (true, true) => " DEFERRABLE INITIALLY DEFERRED",
        (true, false) => " DEFERRABLE",
        _ => "",
    };
    format!(
        "CONSTRAINT {} {kind} ({}){defer}",
        quote_ident(&k.name),
        cols.join(", ")
    )
}

fn widened(k: &KeyConstraint, node_column: &str) -> Vec<String> {
    let mut cols = k.columns.clone();
    if !cols.iter().any(|c| c == node_column) {
        cols.push(node_column.to_string());
    }
    cols
}

/// Drops `keys` from the table that becomes this node's partition (before it is attached).
pub fn drop_from(part_sql: &str, keys: &[KeyConstraint]) -> FedResult<()> {
    for k in keys {
        spi::exec(&format!(
            "ALTER TABLE {part_sql} DROP CONSTRAINT {}",
            quote_ident(&k.name)
        ))?;
    }
    Ok(())
}

/// Adds `keys`, widened by the node column, to the (still empty) parent: attaching a
/// partition then builds the same key on it.
pub fn add_widened(parent_sql: &str, keys: &[KeyConstraint], node_column: &str) -> FedResult<()> {
    for k in keys {
        spi::exec(&format!(
            "ALTER TABLE {parent_sql} ADD {}",
            definition(k, &widened(k, node_column))
        ))?;
    }
    Ok(())
}

/// After disable(): the widened keys on the now ordinary table give way to the originals.
pub fn restore(
    oid: pg_sys::Oid,
    table_sql: &str,
    keys: &[KeyConstraint],
    node_column: &str,
) -> FedResult<()> {
    for k in keys {
        let wide = widened(k, node_column);
        let existing = spi::one::<String>(
            "SELECT c.conname::text FROM pg_catalog.pg_constraint c
             WHERE c.conrelid = $1 AND c.contype = $2
               AND (SELECT array_agg(a.attname::text ORDER BY x.ord) FROM unnest(c.conkey) WITH ORDINALITY x(attnum, ord)
                    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = x.attnum) = $3",
            &[
                oid.into(),
                (if k.primary { "p" } else { "u" }).into(),
                wide.clone().into(),
            ],
        )?;
        match existing {
            // The node column was part of the key already: only the name changes back.
            Some(name) if wide == k.columns => {
                if name != k.name {
                    spi::exec(&format!(
                        "ALTER TABLE {table_sql} RENAME CONSTRAINT {} TO {}",
                        quote_ident(&name),
                        quote_ident(&k.name)
                    ))?;
                }
                continue;
            }
            Some(name) => spi::exec(&format!(
                "ALTER TABLE {table_sql} DROP CONSTRAINT {}",
                quote_ident(&name)
            ))?,
            None => {}
        }
        spi::exec(&format!(
            "ALTER TABLE {table_sql} ADD {}",
            definition(k, &k.columns)
        ))?;
    }
    Ok(())
}

/// The columns that identify a row across the federation: the original primary key, else
/// the partition's primary key without the node column.
pub fn identifying_columns(
    keys: Option<&[KeyConstraint]>,
    partition: pg_sys::Oid,
    node_column: &str,
) -> FedResult<Vec<String>> {
    if let Some(pk) = keys.and_then(|ks| ks.iter().find(|k| k.primary)) {
        return Ok(pk.columns.clone());
    }
    Ok(spi::rows(
        "SELECT a.attname::text FROM pg_catalog.pg_index i
         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = $1 AND i.indisprimary AND a.attname <> $2
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
        &[partition.into(), node_column.into()],
        |r| r.get::<String>(1),
    )?
    .into_iter()
    .flatten()
    .collect())
}
