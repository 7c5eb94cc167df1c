//! `federation.duplicate_keys()`: key values present in more than one node's partition
//! (docs/keys.md). Sequence values cannot collide across nodes (table::sequences), but keys
//! an application supplies, UUIDs, and rows written before a node joined can. The check
//! reads this node's copy of every partition (one aggregate over the table) and records what
//! it found in federation.key_check, which health() reads.

use crate::catalog;
use crate::errors::{FedError, FedResult, OrRaise};
use crate::spi::{self, quote_ident};
use crate::table::{self, keys};
use pgrx::prelude::*;

/// One key value held by more than one node.
pub struct Duplicate {
    pub table: String,
    pub key: String,
    pub value: String,
    pub nodes: Vec<String>,
}

/// What a check of one table found.
pub struct Found {
    pub table: String,
    /// The key's columns, as SQL; None when the table has no key to check.
    pub key: Option<String>,
    pub duplicates: Vec<Duplicate>,
}

/// Checks one federated table and records the result.
pub fn check(oid: pg_sys::Oid) -> FedResult<Found> {
    let table = table::oid_sql(oid)?;
    let Some(col) = catalog::node_column(oid)? else {
        return Err(FedError::invalid_value(format!("table {table} is not federated"))
            .hint("federation.tables lists the federated tables; duplicate_keys() with no argument checks them all."));
    };
    let me = crate::identity::current_name()?;
    let local = catalog::partitions(oid)?
        .into_iter()
        .find(|(n, _)| n.as_deref() == Some(me.as_str()))
        .map(|(_, p)| p);
    let original = catalog::original_keys(oid)?;
    let cols = match local {
        Some(p) => keys::identifying_columns(original.as_deref(), p, &col)?,
        None => vec![],
    };
    if cols.is_empty() {
        return Ok(Found {
            table,
            key: None,
            duplicates: vec![],
        });
    }
    let k = cols
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let q = format!(
        "SELECT ({k})::text, pg_catalog.array_agg(DISTINCT {qcol} ORDER BY {qcol})::text[]
         FROM {table} GROUP BY {k} HAVING count(DISTINCT {qcol}) > 1 ORDER BY 1",
        qcol = quote_ident(&col)
    );
    let duplicates: Vec<Duplicate> = spi::rows(&q, &[], |r| {
        Ok(Duplicate {
            table: table.clone(),
            key: k.clone(),
            value: r.get::<String>(1)?.unwrap_or_default(),
            nodes: r.get::<Vec<String>>(2)?.unwrap_or_default(),
        })
    })?;
    catalog::as_extension_owner(|| {
        catalog::record_key_check(
            oid,
            &k,
            duplicates.len() as i64,
            duplicates.first().map(|d| d.value.as_str()),
        )
    })?;
    Ok(Found {
        table,
        key: Some(k),
        duplicates,
    })
}

#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn duplicate_keys_of(
    tbl: Option<pg_sys::Oid>,
) -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(key, String),
        name!(value, String),
        name!(nodes, Vec<String>),
    ),
> {
    let oids: Vec<pg_sys::Oid> = match tbl {
        Some(t) => vec![t],
        None => catalog::federated_tables()
            .or_raise()
            .into_iter()
            .map(|(o, _)| o)
            .collect(),
    };
    let mut out = vec![];
    for oid in oids {
        for d in check(oid).or_raise().duplicates {
            out.push((d.table, d.key, d.value, d.nodes));
        }
    }
    TableIterator::new(out)
}
