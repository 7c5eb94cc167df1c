//! What verify() last found wrong with copies of partitions (federation.copy_check), which
//! status() reports until a later verify() or a resync() clears it.

use crate::errors::FedResult;
use crate::spi;
use pgrx::prelude::*;

/// A copy that verify() found different from its owner's partition, or missing.
pub struct CopyProblem<'a> {
    pub relid: pg_sys::Oid,
    pub owner: &'a str,
    pub node: &'a str,
    pub status: &'a str,
    pub rows: Option<i64>,
    pub owner_rows: Option<i64>,
    pub detail: Option<&'a str>,
}

/// Replaces what is recorded for `tables` with `problems` (none: every copy matched).
pub fn record_copy_checks(tables: &[pg_sys::Oid], problems: &[CopyProblem]) -> FedResult<()> {
    if !super::sql_0_3_installed()? {
        return Ok(());
    }
    for t in tables {
        spi::exec_args(
            "DELETE FROM federation.copy_check WHERE relid = $1",
            &[(*t).into()],
        )?;
    }
    for p in problems {
        spi::exec_args(
            "INSERT INTO federation.copy_check (relid, owner, node, status, rows, owner_rows, detail)
             VALUES ($1::oid::regclass, $2, $3, $4, $5, $6, $7)",
            &[
                p.relid.into(),
                p.owner.into(),
                p.node.into(),
                p.status.into(),
                p.rows.into(),
                p.owner_rows.into(),
                p.detail.into(),
            ],
        )?;
    }
    Ok(())
}

/// resync() rebuilt `node`'s copy of `owner`'s partitions (of one table, or all).
pub fn clear_copy_checks(node: &str, owner: &str, table: Option<pg_sys::Oid>) -> FedResult<()> {
    if !super::sql_0_3_installed()? {
        return Ok(());
    }
    spi::exec_args(
        "DELETE FROM federation.copy_check WHERE node = $1 AND owner = $2 AND ($3::oid IS NULL OR relid = $3::oid)",
        &[node.into(), owner.into(), table.into()],
    )
}
