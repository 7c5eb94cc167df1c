//! What every node does right after it applied a federated schema change, this node and each
//! member alike (the member's DDL hook runs it for the replicated statement):
//!
//! - a column whose existing values each node computed itself (ADD COLUMN with a default that
//!   is not immutable, such as now(), clock_timestamp(), gen_random_uuid() or a sequence;
//!   ALTER COLUMN TYPE ... USING): the owner of each partition republishes its rows, so that
//!   after COMMIT every copy holds the owner's values rather than the member's own;
//! - a renamed table: its partitions get the names that follow from the new name (a
//!   subscription finds a published partition by name);
//! - a new identity or serial column: its sequence draws from this node's range;
//! - a dropped table: the node forgets it in its catalog.

use super::classify::Change;
use crate::catalog;
use crate::errors::FedResult;
use crate::identity;
use crate::naming;
use crate::spi::{self, qualified, quote_ident};
use crate::table::{partitions, sequences, Table};
use pgrx::prelude::*;

pub(super) fn apply(change: &Change) -> FedResult<()> {
    if change.drops_table {
        // Its partitions left the publication with it; its catalog rows go now.
        return catalog::as_extension_owner(|| catalog::delete_table(change.table));
    }
    if change.renames_table {
        rename_partitions(change.table)?;
    }
    // Only a node with members has copies whose values could differ from their owner's.
    let mut republish = vec![];
    if crate::catalog::has_members()? {
        republish = change.recomputed.clone();
        for col in &change.added {
            if computed_per_node(change.table, col)? {
                republish.push(col.clone());
            }
        }
    }
    if !republish.is_empty() {
        republish_own(change.table, &republish)?;
    }
    if !change.added.is_empty() {
        if let Some(k) = catalog::node_number()? {
            sequences::number(&Table::load(change.table)?, k)?;
        }
    }
    Ok(())
}

/// Whether column `col`'s existing values were computed by each node on its own: an identity
/// column, or a default that calls a function that is not immutable.
fn computed_per_node(table: pg_sys::Oid, col: &str) -> FedResult<bool> {
    let row = spi::rows(
        "SELECT a.attidentity <> '', d.adbin::text FROM pg_catalog.pg_attribute a
         LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = $1 AND a.attname = $2 AND NOT a.attisdropped AND a.attgenerated = ''",
        &[table.into(), col.into()],
        |r| Ok((r.get::<bool>(1)?.unwrap_or(false), r.get::<String>(2)?)),
    )?;
    let Some((identity, expr)) = row.into_iter().next() else {
        return Ok(false);
    };
    if identity {
        return Ok(true);
    }
    let Some(expr) = expr else { return Ok(false) };
    let c = std::ffi::CString::new(expr).unwrap_or_default();
    // SAFETY: pg_attrdef.adbin is a node tree PostgreSQL wrote; read in this memory context.
    Ok(unsafe {
        let node = pg_sys::stringToNode(c.as_ptr()) as *mut pg_sys::Node;
        pg_sys::contain_mutable_functions(node)
    })
}

/// Rewrites this node's own rows of `cols` with their current values: the UPDATE is published
/// like any other, and each member's copy takes the owner's values. User triggers do not fire
/// (session_replication_role = replica, as for replicated rows).
fn republish_own(table: pg_sys::Oid, cols: &[String]) -> FedResult<()> {
    let me = identity::current_name()?;
    let Some(own) = spi::one::<String>(
        "SELECT p.partition::text FROM federation.partition p WHERE p.relid = $1 AND p.node_name = $2",
        &[table.into(), me.as_str().into()],
    )?
    else {
        return Ok(());
    };
    let sets = cols
        .iter()
        .map(|c| format!("{0} = {0}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    catalog::as_extension_owner(|| {
        // SAFETY: a GUC nesting level popped below (or by the transaction's abort).
        let level = unsafe { pg_sys::NewGUCNestLevel() };
        spi::exec("SELECT pg_catalog.set_config('session_replication_role', 'replica', true)")?;
        let r = spi::exec(&format!("UPDATE ONLY {own} SET {sets}"));
        // SAFETY: pops the level pushed above.
        unsafe { pg_sys::AtEOXact_GUC(true, level) };
        r
    })
}

/// After ALTER TABLE ... RENAME TO: partitions named after the table follow it, and so do
/// their descriptions (partitions::describe; a comment of the DBA's own stays as it is).
fn rename_partitions(table: pg_sys::Oid) -> FedResult<()> {
    let t = Table::load(table)?;
    for (node, part) in catalog::partitions(table)? {
        let want = naming::partition_name(&t.name, node.as_deref());
        let have = spi::one::<String>(
            "SELECT relname::text FROM pg_catalog.pg_class WHERE oid = $1",
            &[part.into()],
        )?
        .unwrap_or_default();
        if have != want {
            spi::exec(&format!(
                "ALTER TABLE {} RENAME TO {}",
                qualified(&t.schema, &have),
                quote_ident(&want)
            ))?;
        }
        if partitions::is_described(part)? {
            partitions::describe(
                &qualified(&t.schema, &want),
                &t.qualified(),
                node.as_deref(),
            )?;
        }
    }
    Ok(())
}

/// Whether this transaction already wrote rows of the node's own partition of `table` (they
/// are decoded with the columns they were written with, after the change).
pub(super) fn wrote_own_rows(table: pg_sys::Oid) -> FedResult<bool> {
    let me = identity::current_name()?;
    Ok(spi::one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l JOIN federation.partition p ON p.partition::oid = l.relation
                        WHERE l.pid = pg_catalog.pg_backend_pid() AND l.mode = 'RowExclusiveLock'
                          AND p.relid = $1 AND p.node_name = $2)",
        &[table.into(), me.as_str().into()],
    )?
    .unwrap_or(false))
}
