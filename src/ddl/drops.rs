//! DROP statements the guard refuses, and the schema DROP EXTENSION leaves behind.

use super::Dropping;
use crate::catalog;
use crate::errors::{FedError, FedResult};
use crate::spi::{self, quote_ident};
use pgrx::PgSqlErrorCode;

const ESCAPE: &str = "In an emergency a superuser may run it on this node only after SET federation.unsafe_ddl = on (docs/operations.md).";

pub(super) fn check(what: &Dropping) -> FedResult<()> {
    match what {
        Dropping::Extensions(names) if names.iter().any(|n| n == "pg_federation") => {
            check_extension()
        }
        Dropping::Extensions(_) => Ok(()),
        Dropping::Schemas(schemas) => {
            for s in schemas {
                let tables = federated_in_schema(s)?;
                if let Some(first) = tables.first() {
                    return Err(FedError::new(
                        PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                        format!("cannot drop schema {}: it holds federated table {first}", quote_ident(s)),
                    )
                    .detail(format!("Federated tables in it: {}.", tables.join(", ")))
                    .hint(format!("Disable them first (SELECT federation.disable('{}'); on a federation it does so on every member), then drop the schema. {ESCAPE}", first.replace('\'', "''"))));
                }
            }
            Ok(())
        }
        Dropping::Tables(lists) => {
            for parts in lists {
                check_table(parts)?;
            }
            Ok(())
        }
    }
}

/// DROP EXTENSION pg_federation: refused on a member of a federation, and while tables are
/// federated here (their node-column defaults and write guards would go, leaving partitioned
/// tables that accept writes into other nodes' partitions).
fn check_extension() -> FedResult<()> {
    let members = catalog::other_members()?;
    if catalog::joined_conninfo()?.is_some() || !members.is_empty() {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            format!(
                "cannot drop extension pg_federation: this node is a member of a federation{}",
                if members.is_empty() { String::new() } else { format!(" (with {})", members.join(", ")) }
            ),
        )
        .detail("Its subscriptions, publication and replication slots would keep streaming without the write guards, and the other members would keep waiting for it.")
        .hint("Leave the federation first (SELECT federation.leave();), disable the federated tables (SELECT federation.disable('...');), then DROP EXTENSION pg_federation."));
    }
    let tables: Vec<String> = spi::rows(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM federation.federated_table t
         JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY 1",
        &[],
        |r| r.get::<String>(1),
    )?
    .into_iter()
    .flatten()
    .collect();
    if let Some(first) = tables.first() {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            format!("cannot drop extension pg_federation: table {first} is federated on this node"),
        )
        .detail(format!("Federated tables: {}. Without pg_federation their node column would lose its default and their other partitions their write guards.", tables.join(", ")))
        .hint(format!("Turn each back into an ordinary table first: SELECT federation.disable('{}');", first.replace('\'', "''"))));
    }
    Ok(())
}

/// DROP TABLE of a federated table or of one of its partitions.
fn check_table(parts: &[String]) -> FedResult<()> {
    let name = parts
        .iter()
        .map(|p| quote_ident(p))
        .collect::<Vec<_>>()
        .join(".");
    let Some(oid) = spi::one::<pgrx::pg_sys::Oid>(
        "SELECT pg_catalog.to_regclass($1)::oid",
        &[name.as_str().into()],
    )?
    else {
        return Ok(()); // not there: DROP itself reports it (or IF EXISTS skips it)
    };
    if let Some(table) = catalog::federated_table_of(oid)? {
        let joined = catalog::joined_conninfo()?.is_some();
        let (what, hint) = if table.0 == oid {
            (
                format!("cannot drop federated table {}", table.1),
                format!("Turn it back into an ordinary table first: SELECT federation.disable('{}');{}, then DROP TABLE {}. {ESCAPE}",
                    table.1.replace('\'', "''"),
                    if joined { " (on a federation it does so on every member)" } else { "" },
                    table.1),
            )
        } else {
            (
                format!("cannot drop {name}: it is a partition of federated table {}", table.1),
                format!("A federated table keeps one partition per member; SELECT federation.drop_node('<node>', drop_rows => true); removes a node's partitions on every member, SELECT federation.disable('{}'); the whole table. {ESCAPE}", table.1.replace('\'', "''")),
            )
        };
        return Err(FedError::new(PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST, what)
            .detail(if joined {
                "Dropping it on this node only would stall this node's subscriptions on the missing table (every federated table would stop arriving here) while the other members keep it."
            } else {
                "pg_federation's catalog and publication name it."
            })
            .hint(hint));
    }
    Ok(())
}

fn federated_in_schema(schema: &str) -> FedResult<Vec<String>> {
    Ok(spi::rows(
        "SELECT DISTINCT pg_catalog.format('%I.%I', tn.nspname, tc.relname) FROM federation.federated_table t
         JOIN pg_catalog.pg_class tc ON tc.oid = t.relid JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
         LEFT JOIN federation.partition p USING (relid)
         JOIN pg_catalog.pg_class c ON c.oid = t.relid OR c.oid = p.partition
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 ORDER BY 1",
        &[schema.into()],
        |r| r.get::<String>(1),
    )?
    .into_iter()
    .flatten()
    .collect())
}

/// After DROP EXTENSION pg_federation: the schema `federation` (made by CREATE EXTENSION
/// from the control file, not a member of the extension) goes too, when nothing is left in it.
pub(super) fn remove_empty_schema() -> FedResult<()> {
    let empty = spi::one::<bool>(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_namespace n ON n.oid = d.refobjid
                            WHERE d.refclassid = 'pg_catalog.pg_namespace'::regclass AND n.nspname = 'federation')
                AND EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'federation')",
        &[],
    )?
    .unwrap_or(false);
    if empty {
        crate::own_ddl::run(|| spi::exec("DROP SCHEMA federation"))?;
    }
    Ok(())
}
