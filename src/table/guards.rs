//! Installs the write guards of sql/guards.sql on a federated table's partitions.
//!
//! Another node's partition gets a row guard (INSERT, UPDATE, DELETE) and a TRUNCATE guard;
//! the DEFAULT partition gets its own row guard and the TRUNCATE guard; this node's partition
//! gets nothing, so the local write path is untouched. Guards are ordinary triggers, which
//! logical-replication apply does not fire. Their names start with '_' so that they fire
//! before the user's own BEFORE triggers (triggers fire in name order).

use crate::catalog;
use crate::errors::FedResult;
use crate::spi::{self, quote_literal};

pub const ROW_GUARD: &str = "_federation_guard";
pub const TRUNCATE_GUARD: &str = "_federation_guard_truncate";

/// Guards a partition owned by `owner` (None: the DEFAULT partition).
pub fn install(
    partition_sql: &str,
    owner: Option<&str>,
    table_display: &str,
    node_column: &str,
    local_partition_sql: &str,
) -> FedResult<()> {
    // One lookup of the guards' schema for the three.
    let schema = catalog::internal_schema()?;
    let (foreign, default, truncate) = (
        format!("{schema}.guard_foreign_row"),
        format!("{schema}.guard_default_row"),
        format!("{schema}.guard_truncate"),
    );
    let row = match owner {
        Some(node) => format!(
            "CREATE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE ON {partition_sql} FOR EACH ROW \
             EXECUTE FUNCTION {foreign}({}, {}, {})",
            spi::quote_ident(ROW_GUARD),
            quote_literal(node),
            quote_literal(table_display),
            quote_literal(node_column)
        ),
        None => format!(
            "CREATE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE ON {partition_sql} FOR EACH ROW \
             EXECUTE FUNCTION {default}({}, {})",
            spi::quote_ident(ROW_GUARD),
            quote_literal(table_display),
            quote_literal(node_column)
        ),
    };
    spi::exec(&row)?;
    spi::exec(&format!(
        "CREATE TRIGGER {} BEFORE TRUNCATE ON {partition_sql} FOR EACH STATEMENT \
         EXECUTE FUNCTION {truncate}({}, {}, {})",
        spi::quote_ident(TRUNCATE_GUARD),
        quote_literal(owner.unwrap_or("")),
        quote_literal(table_display),
        quote_literal(local_partition_sql)
    ))
}

/// Removes the guards from a partition (disable(), or a partition that becomes local).
pub fn remove(partition_sql: &str) -> FedResult<()> {
    for name in [ROW_GUARD, TRUNCATE_GUARD] {
        spi::exec(&format!(
            "DROP TRIGGER IF EXISTS {} ON {partition_sql}",
            spi::quote_ident(name)
        ))?;
    }
    Ok(())
}
