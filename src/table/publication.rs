//! This node's publication: one per node, `federation_<node>`, holding every partition this
//! node owns of every federated table. join() only has to subscribe to it.

use crate::errors::FedResult;
use crate::naming::publication_name;
use crate::spi;
use pgrx::prelude::*;

fn exists(name: &str) -> FedResult<bool> {
    Ok(spi::one::<bool>(
        "SELECT true FROM pg_catalog.pg_publication WHERE pubname = $1",
        &[name.into()],
    )?
    .unwrap_or(false))
}

fn contains(name: &str, rel: pg_sys::Oid) -> FedResult<bool> {
    Ok(spi::one::<bool>(
        "SELECT true FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
         WHERE p.pubname = $1 AND pr.prrelid = $2",
        &[name.into(), rel.into()],
    )?
    .unwrap_or(false))
}

/// Creates this node's publication, empty, if it does not exist: peers subscribe to it even
/// before this node federates a table.
pub fn ensure_exists(node: &str) -> FedResult<()> {
    let name = publication_name(node);
    if !exists(&name)? {
        spi::exec(&format!(
            "CREATE PUBLICATION {} WITH (publish_via_partition_root = false)",
            spi::quote_ident(&name)
        ))?;
    }
    Ok(())
}

/// Adds a partition to this node's publication, creating the publication if needed.
pub fn add(node: &str, partition: pg_sys::Oid, partition_sql: &str) -> FedResult<()> {
    let name = publication_name(node);
    if !exists(&name)? {
        // Partitions are published as themselves: a subscriber applies them into its
        // partition of the same name.
        spi::exec(&format!(
            "CREATE PUBLICATION {} FOR TABLE {partition_sql} WITH (publish_via_partition_root = false)",
            spi::quote_ident(&name)
        ))
    } else if !contains(&name, partition)? {
        spi::exec(&format!(
            "ALTER PUBLICATION {} ADD TABLE {partition_sql}",
            spi::quote_ident(&name)
        ))
    } else {
        Ok(())
    }
}

/// Removes a partition from this node's publication, if it is there.
pub fn remove(node: &str, partition: pg_sys::Oid, partition_sql: &str) -> FedResult<()> {
    let name = publication_name(node);
    if exists(&name)? && contains(&name, partition)? {
        spi::exec(&format!(
            "ALTER PUBLICATION {} DROP TABLE {partition_sql}",
            spi::quote_ident(&name)
        ))?;
    }
    Ok(())
}
