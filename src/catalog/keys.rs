//! Node numbers (federation.local_node.node_number, numbers_issued), the keys enable()
//! widened (federation.federated_table.original_keys) and the last duplicate-key check
//! (federation.key_check). See docs/keys.md.

use crate::errors::{FedError, FedResult};
use crate::spi;
use pgrx::prelude::*;
use serde::{Deserialize, Serialize};

/// The highest node number: node numbers take the top 15 bits of a positive bigint.
pub const MAX_NODE_NUMBER: i32 = 32767;

/// Whether the installed SQL objects are those of version 0.3.0 or later (node numbers, keys,
/// members' ready times; tested by one of its columns). False
/// while the library is newer than the installed SQL: after a package upgrade, before
/// `ALTER EXTENSION pg_federation UPDATE`. Until then this node federates tables, joins and
/// answers its peers as the installed version does, so that a federation of mixed versions
/// keeps agreeing on what a federated table looks like.
pub fn sql_0_3_installed() -> FedResult<bool> {
    Ok(spi::one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                        WHERE attrelid = 'federation.local_node'::regclass AND attname = 'node_number' AND NOT attisdropped)",
        &[],
    )?
    .unwrap_or(false))
}

/// Whether the installed SQL is 0.7.0 or later: internal functions in schema
/// federation_internal, apply errors told apart from disconnects in federation.peer_probe.
pub fn sql_0_7_installed() -> FedResult<bool> {
    Ok(spi::one::<bool>(
        "SELECT pg_catalog.to_regnamespace('federation_internal') IS NOT NULL",
        &[],
    )?
    .unwrap_or(false))
}

/// Whether the installed SQL is 0.4.0 or later (schema changes reach every member): until
/// then DDL on a federated table stays on this node, as it did.
pub fn sql_0_4_installed() -> FedResult<bool> {
    Ok(spi::one::<bool>(
        "SELECT pg_catalog.to_regprocedure('federation_internal.ddl_quiesce_here(text)') IS NOT NULL
             OR pg_catalog.to_regprocedure('federation.ddl_quiesce_here(text)') IS NOT NULL",
        &[],
    )?
    .unwrap_or(false))
}

/// This node's number in its federation; None until it joins (or before 0.3.0's SQL).
pub fn node_number() -> FedResult<Option<i32>> {
    if !sql_0_3_installed()? {
        return Ok(None);
    }
    spi::one::<i32>("SELECT node_number FROM federation.local_node", &[])
}

/// The highest node number this node has seen given out (0: none).
pub fn numbers_issued() -> FedResult<i32> {
    if !sql_0_3_installed()? {
        return Ok(0);
    }
    Ok(spi::one::<i32>("SELECT numbers_issued FROM federation.local_node", &[])?.unwrap_or(0))
}

/// Takes `number` as this node's own and records it as given out.
pub fn set_node_number(number: i32) -> FedResult<()> {
    spi::exec_args(
        "UPDATE federation.local_node SET node_number = $1, numbers_issued = greatest(numbers_issued, $1)",
        &[number.into()],
    )
}

/// Records `number` as given out here, if nothing as high was: true when it was recorded,
/// false when this node had already seen `number` or a higher one given out (another join
/// took it first). The row lock serializes concurrent reservations.
pub fn reserve_number(number: i32) -> FedResult<bool> {
    if !(1..=MAX_NODE_NUMBER).contains(&number) {
        return Err(FedError::invalid_value(format!(
            "node number {number} is out of range (1 to {MAX_NODE_NUMBER})"
        ))
        .hint("A federation gives out at most 32767 node numbers over its lifetime; see docs/keys.md."));
    }
    Ok(spi::exec_count(
        "UPDATE federation.local_node SET numbers_issued = $1 WHERE numbers_issued < $1",
        &[number.into()],
    )? == 1)
}

/// A primary key or unique constraint of a table as it was before enable() widened it by
/// the node column; disable() puts it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyConstraint {
    pub name: String,
    pub primary: bool,
    pub columns: Vec<String>,
    pub deferrable: bool,
    pub deferred: bool,
    pub nulls_not_distinct: bool,
}

pub fn set_original_keys(relid: pg_sys::Oid, keys: &[KeyConstraint]) -> FedResult<()> {
    if !sql_0_3_installed()? {
        return Ok(());
    }
    let json = serde_json::to_string(keys).map_err(|e| FedError::internal(e.to_string()))?;
    spi::exec_args(
        "UPDATE federation.federated_table SET original_keys = $2::jsonb WHERE relid = $1",
        &[relid.into(), json.as_str().into()],
    )
}

/// The keys enable() widened; None for a table adopted as it was or federated before 0.3.0.
pub fn original_keys(relid: pg_sys::Oid) -> FedResult<Option<Vec<KeyConstraint>>> {
    if !sql_0_3_installed()? {
        return Ok(None);
    }
    let Some(json) = spi::one::<String>(
        "SELECT original_keys::text FROM federation.federated_table WHERE relid = $1",
        &[relid.into()],
    )?
    else {
        return Ok(None);
    };
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| FedError::internal(format!("federation.federated_table.original_keys: {e}")))
}

/// Records what a duplicate-key check of `relid` found.
pub fn record_key_check(
    relid: pg_sys::Oid,
    key: &str,
    duplicates: i64,
    example: Option<&str>,
) -> FedResult<()> {
    spi::exec_args(
        "INSERT INTO federation.key_check (relid, key, duplicates, example) VALUES ($1::oid::regclass, $2, $3, $4)
         ON CONFLICT (relid) DO UPDATE SET checked_at = pg_catalog.now(), key = EXCLUDED.key,
             duplicates = EXCLUDED.duplicates, example = EXCLUDED.example",
        &[relid.into(), key.into(), duplicates.into(), example.into()],
    )
}
