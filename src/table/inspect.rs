//! What pg_federation checks about a table before it enrolls it, and the checks that refuse
//! what it cannot enroll. Every check runs before anything is changed.

use super::Table;
use crate::errors::{FedError, FedResult};
use crate::naming::MAX_IDENT;
use crate::spi::{self, qualified};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

pub fn check_owner(t: &Table, verb: &str) -> FedResult<()> {
    let ok = spi::one::<bool>(
        "SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[t.oid.into()],
    )?
    .unwrap_or(false);
    if !ok {
        return Err(FedError::privilege(format!(
            "must be owner of table {} to {verb} it",
            t.qualified()
        ))
        .hint(format!(
            "Run this as the table's owner ({}) or a superuser.",
            t.owner
        )));
    }
    Ok(())
}

pub fn check_node_column_name(col: &str) -> FedResult<()> {
    if col.is_empty() || col.len() > MAX_IDENT {
        return Err(
            FedError::invalid_value(format!("node column name \"{col}\" is not valid")).hint(
                "Give a column name of 1 to 63 bytes, for example node_column => 'node_name'.",
            ),
        );
    }
    Ok(())
}

/// Refuses when a partition name is taken by a relation that is not already ours.
pub fn check_name_free(schema: &str, name: &str, for_table: &Table) -> FedResult<()> {
    let taken = spi::one::<String>(
        "SELECT c.relkind::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2",
        &[schema.into(), name.into()],
    )?;
    if taken.is_some() {
        let q = qualified(schema, name);
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
            format!(
                "cannot federate {}: partition name {q} is already taken by another relation",
                for_table.qualified()
            ),
        )
        .hint(format!(
            "Rename or drop {q}; pg_federation names partitions <table>_<node>."
        )));
    }
    Ok(())
}

fn kind_name(kind: char) -> &'static str {
    match kind {
        'v' => "a view",
        'm' => "a materialized view",
        'f' => "a foreign table",
        'S' => "a sequence",
        'i' | 'I' => "an index",
        'c' => "a composite type",
        't' => "a TOAST table",
        _ => "not a table",
    }
}

/// The checks that apply to every table, ordinary or partitioned.
pub fn check_enrollable(t: &Table) -> FedResult<()> {
    let name = t.qualified();
    if t.schema == "pg_catalog"
        || t.schema == "information_schema"
        || t.schema.starts_with("pg_toast")
    {
        return Err(FedError::unsupported(format!(
            "cannot federate {name}: it is a system catalog"
        ))
        .hint("Only user tables can be federated."));
    }
    if t.schema == "federation" {
        return Err(FedError::unsupported(format!(
            "cannot federate {name}: it belongs to pg_federation itself"
        ))
        .hint("Federate your own tables; pg_federation's catalog is per node."));
    }
    if t.kind != 'r' && t.kind != 'p' {
        return Err(FedError::wrong_object_type(format!("cannot federate {name}: it is {}", kind_name(t.kind)))
            .hint("Federate the table it reads from; only ordinary and partitioned tables can be federated."));
    }
    if t.persistence == 't' {
        return Err(FedError::unsupported(format!(
            "cannot federate {name}: it is a temporary table"
        ))
        .detail("Temporary tables exist in one session only; they cannot be replicated.")
        .hint("Create the table without TEMPORARY."));
    }
    if t.persistence == 'u' {
        return Err(FedError::unsupported(format!(
            "cannot federate {name}: it is an unlogged table"
        ))
        .detail("Logical replication cannot carry unlogged tables.")
        .hint(format!(
            "Make it logged first: ALTER TABLE {name} SET LOGGED;"
        )));
    }
    if t.is_partition {
        let parent = spi::one::<String>(
            "SELECT inhparent::regclass::text FROM pg_catalog.pg_inherits WHERE inhrelid = $1",
            &[t.oid.into()],
        )?
        .unwrap_or_default();
        return Err(FedError::unsupported(format!(
            "cannot federate {name}: it is a partition of {parent}"
        ))
        .hint(format!(
            "Federate the partitioned table instead: SELECT federation.enable('{parent}');"
        )));
    }
    if t.kind == 'r' {
        let inh = spi::one::<String>(
            "SELECT string_agg(inhparent::regclass::text, ', ') FROM pg_catalog.pg_inherits WHERE inhrelid = $1",
            &[t.oid.into()],
        )?;
        if let Some(parents) = inh {
            return Err(FedError::unsupported(format!(
                "cannot federate {name}: it inherits from {parents}"
            ))
            .hint(format!(
                "Remove the inheritance first: ALTER TABLE {name} NO INHERIT {parents};"
            )));
        }
        let kids = spi::one::<String>(
            "SELECT string_agg(inhrelid::regclass::text, ', ') FROM pg_catalog.pg_inherits WHERE inhparent = $1",
            &[t.oid.into()],
        )?;
        if let Some(kids) = kids {
            return Err(FedError::unsupported(format!("cannot federate {name}: tables inherit from it ({kids})"))
                .hint("Remove the inheritance first with ALTER TABLE ... NO INHERIT, or federate a table without children."));
        }
    }
    if t.row_security {
        return Err(FedError::unsupported(format!("cannot federate {name}: it has row-level security enabled"))
            .detail("Row-level security policies are not carried over to the partitioned table, so they would stop applying.")
            .hint(format!("Disable row-level security (ALTER TABLE {name} DISABLE ROW LEVEL SECURITY), enable, then recreate the policies on the table.")));
    }
    check_not_referenced(t)?;
    check_no_dependent_views(t)?;
    Ok(())
}

/// A foreign key that references the table cannot follow it into a partitioned table whose
/// primary key lives on each partition.
fn check_not_referenced(t: &Table) -> FedResult<()> {
    let refs = spi::text_pairs(
        "SELECT conname::text, conrelid::regclass::text FROM pg_catalog.pg_constraint
         WHERE contype = 'f' AND confrelid = $1 AND conparentid = 0 ORDER BY 1",
        &[t.oid.into()],
    )?;
    if let Some((con, from)) = refs.first() {
        return Err(FedError::unsupported(format!(
            "cannot federate {}: foreign key \"{con}\" of table {from} references it",
            t.qualified()
        ))
        .detail(format!(
            "A federated table's primary key is unique per node partition, so a foreign key cannot reference the table ({} foreign key(s) do).",
            refs.len()
        ))
        .hint(format!(
            "Drop the foreign key (ALTER TABLE {from} DROP CONSTRAINT {};), enable the table, and check the reference in the application or with a trigger.",
            spi::quote_ident(con)
        )));
    }
    Ok(())
}

/// Views, materialized views and rules name the table by OID: after enable() they would read
/// only this node's partition.
fn check_no_dependent_views(t: &Table) -> FedResult<()> {
    let deps = spi::rows(
        "SELECT DISTINCT r.ev_class::regclass::text, r.rulename = '_RETURN'
         FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
           AND d.refobjid = $1 AND r.ev_class <> $1
         UNION ALL
         SELECT DISTINCT $1::regclass::text || ' (rule ' || quote_ident(rulename) || ')', false
         FROM pg_catalog.pg_rewrite WHERE ev_class = $1 AND rulename <> '_RETURN'
         ORDER BY 1",
        &[t.oid.into()],
        |r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<bool>(2)?.unwrap_or(false))),
    )?;
    if deps.is_empty() {
        return Ok(());
    }
    let list: Vec<&str> = deps.iter().map(|(n, _)| n.as_str()).collect();
    Err(FedError::unsupported(format!("cannot federate {}: views or rules depend on it: {}", t.qualified(), list.join(", ")))
        .detail("Views and rules refer to the table itself; after enable() the table is a new partitioned table of the same name, and they would keep reading only this node's rows.")
        .hint("Drop the views or rules, enable the table, then create them again: the table keeps its name."))
}

/// Logical replication of UPDATE and DELETE needs a replica identity.
pub fn check_replica_identity(t: &Table, what: &str) -> FedResult<()> {
    let ok = match t.replident {
        'd' => t.has_primary_key,
        'f' => true,
        'i' => true,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(FedError::prerequisite(format!("cannot federate {}: {what} has no primary key", t.qualified()))
        .detail("Logical replication needs a primary key (or another replica identity) to replicate UPDATE and DELETE.")
        .hint(format!("Add one: ALTER TABLE {} ADD PRIMARY KEY (...); or, if no column is unique, ALTER TABLE {} REPLICA IDENTITY FULL;", t.qualified(), t.qualified())))
}

/// The node column of an ordinary table: absent, or text holding only this node's name (or NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeColumn {
    Absent,
    /// `of_members`: rows in the name of another member of this node's federation (a table
    /// disabled on a federation kept every node's rows): enable() sets them aside
    /// (table::set_aside) rather than claim them.
    Present {
        not_null: bool,
        has_nulls: bool,
        of_members: i64,
    },
}

/// The node column of an ordinary table about to be federated by this node `me`, whose
/// federation's other members are `members`.
pub fn check_node_column(
    t: &Table,
    column: &str,
    me: &str,
    members: &[String],
) -> FedResult<NodeColumn> {
    let col = spi::rows(
        "SELECT pg_catalog.format_type(atttypid, atttypmod), attnotnull, attgenerated::text, attidentity::text
         FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $2 AND NOT attisdropped AND attnum > 0",
        &[t.oid.into(), column.into()],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<bool>(2)?.unwrap_or(false),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
            ))
        },
    )?;
    let Some((ty, not_null, generated, identity)) = col.into_iter().next() else {
        return Ok(NodeColumn::Absent);
    };
    let qcol = spi::quote_ident(column);
    if ty != "text" {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("cannot federate {}: column {qcol} is of type {ty}, not text", t.qualified()),
        )
        .hint(format!("Change its type (ALTER TABLE {} ALTER COLUMN {qcol} TYPE text;) or name another column with node_column => '...'.", t.qualified())));
    }
    if !generated.is_empty() || !identity.is_empty() {
        return Err(FedError::unsupported(format!("cannot federate {}: column {qcol} is a generated or identity column", t.qualified()))
            .hint("The node column must be a plain text column; name another one with node_column => '...'."));
    }
    let q = format!(
        "SELECT count(*) FILTER (WHERE {qcol} IS NULL),
                count(*) FILTER (WHERE {qcol} <> $1 AND {qcol} <> ALL($2)),
                min({qcol}) FILTER (WHERE {qcol} <> $1 AND {qcol} <> ALL($2)),
                count(*) FILTER (WHERE {qcol} = ANY($2))
         FROM {}",
        t.qualified()
    );
    let (nulls, others, sample, of_members) =
        spi::rows(&q, &[me.into(), members.to_vec().into()], |r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<i64>(2)?.unwrap_or(0),
                r.get::<String>(3)?,
                r.get::<i64>(4)?.unwrap_or(0),
            ))
        })?
        .into_iter()
        .next()
        .unwrap_or((0, 0, None, 0));
    if others > 0 {
        return Err(FedError::invalid_value(format!(
            "cannot federate {}: column {qcol} holds names of nodes that are not members of this federation",
            t.qualified()
        ))
        .detail(format!("{others} row(s) hold a value that is neither this node's name \"{me}\" nor a member's, for example \"{}\". Rows that exist before enrollment belong to this node; rows in a member's name are set aside until their owner's copy arrives.", sample.unwrap_or_default()))
        .hint(format!(
            "If they are this node's rows under an old name, set the column: UPDATE {0} SET {qcol} = '{me}' WHERE {qcol} = '...'; if they belong to a node that left, move them to a table of their own first; or name another node column with node_column => '...'.",
            t.qualified()
        )));
    }
    Ok(NodeColumn::Present {
        not_null,
        has_nulls: nulls > 0,
        of_members,
    })
}

/// A table's columns as (name, type), by name, leaving out `except` (the node column, where
/// one table's shape is compared with another's).
pub fn columns(oid: pg_sys::Oid, except: Option<&str>) -> FedResult<Vec<(String, String)>> {
    spi::rows(
        "SELECT attname::text, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
         WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND ($2::text IS NULL OR attname <> $2) ORDER BY attname",
        &[oid.into(), except.into()],
        |r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default())),
    )
}
