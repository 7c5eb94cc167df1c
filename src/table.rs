//! What pg_federation needs to know about a table before it enrolls it, and the checks that
//! refuse what it cannot enroll. Every check runs before anything is changed.

use crate::errors::{FedError, FedResult};
use crate::sql;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

#[derive(Debug, Clone)]
pub struct Table {
    pub oid: pg_sys::Oid,
    pub schema: String,
    pub name: String,
    /// pg_class.relkind: 'r' ordinary, 'p' partitioned, 'v' view, ...
    pub kind: char,
    /// pg_class.relpersistence: 'p' permanent, 'u' unlogged, 't' temporary.
    pub persistence: char,
    /// pg_class.relreplident: 'd' default (primary key), 'f' full, 'i' index, 'n' nothing.
    pub replident: char,
    pub is_partition: bool,
    pub has_primary_key: bool,
    pub row_security: bool,
    pub owner: String,
}

impl Table {
    pub fn load(oid: pg_sys::Oid) -> FedResult<Table> {
        let rows = sql::rows(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence::text,
                    c.relreplident::text, c.relispartition, c.relrowsecurity,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                    pg_catalog.pg_get_userbyid(c.relowner)::text
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = $1",
            &[oid.into()],
            |r| {
                let ch = |i: usize| -> Result<char, pgrx::spi::Error> {
                    Ok(r.get::<String>(i)?.and_then(|s| s.chars().next()).unwrap_or('?'))
                };
                Ok(Table {
                    oid,
                    schema: r.get::<String>(1)?.unwrap_or_default(),
                    name: r.get::<String>(2)?.unwrap_or_default(),
                    kind: ch(3)?,
                    persistence: ch(4)?,
                    replident: ch(5)?,
                    is_partition: r.get::<bool>(6)?.unwrap_or(false),
                    row_security: r.get::<bool>(7)?.unwrap_or(false),
                    has_primary_key: r.get::<bool>(8)?.unwrap_or(false),
                    owner: r.get::<String>(9)?.unwrap_or_default(),
                })
            },
        )?;
        rows.into_iter().next().ok_or_else(|| {
            FedError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation with OID {oid:?} does not exist"),
            )
            .hint("It was dropped while the call was running; check the name and try again.")
        })
    }

    /// `"schema"."name"`, for SQL.
    pub fn qualified(&self) -> String {
        sql::qualified(&self.schema, &self.name)
    }

    /// `schema.name` as PostgreSQL would print it, for messages.
    pub fn display(&self) -> String {
        self.qualified()
    }

    /// Takes ACCESS EXCLUSIVE on the table: nothing reads or writes it until the caller's
    /// transaction ends. The first lock enable() and disable() take (see docs/enable.md).
    pub fn lock_exclusive(oid: pg_sys::Oid) -> FedResult<()> {
        Self::lock(oid, "ACCESS EXCLUSIVE", false)
    }

    /// Takes SHARE UPDATE EXCLUSIVE on a federated table's parent only: enough to add
    /// partitions one at a time (it conflicts with itself), and compatible with the locks
    /// logical-replication apply takes (a partition, then its parent for the partition
    /// constraint), so adding a member never deadlocks with replication.
    pub fn lock_for_new_partitions(oid: pg_sys::Oid) -> FedResult<()> {
        Self::lock(oid, "SHARE UPDATE EXCLUSIVE", true)
    }

    fn lock(oid: pg_sys::Oid, mode: &str, only: bool) -> FedResult<()> {
        // Lock by OID first, then read the name: the name cannot change under the lock.
        let name = sql::one::<String>(
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[oid.into()],
        )?
        .ok_or_else(|| {
            FedError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation with OID {oid:?} does not exist"),
            )
        })?;
        // Only tables can be locked (and federated); other kinds are refused by the checks.
        let kind = sql::one::<String>(
            "SELECT relkind::text FROM pg_catalog.pg_class WHERE oid = $1",
            &[oid.into()],
        )?;
        if !matches!(kind.as_deref(), Some("r") | Some("p")) {
            return Ok(());
        }
        sql::exec(&format!(
            "LOCK TABLE {}{name} IN {mode} MODE",
            if only { "ONLY " } else { "" }
        ))
    }
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
    let name = t.display();
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
        let parent = sql::one::<String>(
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
        let inh = sql::one::<String>(
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
        let kids = sql::one::<String>(
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
    let refs = sql::rows(
        "SELECT conname::text, conrelid::regclass::text FROM pg_catalog.pg_constraint
         WHERE contype = 'f' AND confrelid = $1 AND conparentid = 0 ORDER BY 1",
        &[t.oid.into()],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
            ))
        },
    )?;
    if let Some((con, from)) = refs.first() {
        return Err(FedError::unsupported(format!(
            "cannot federate {}: foreign key \"{con}\" of table {from} references it",
            t.display()
        ))
        .detail(format!(
            "A federated table's primary key is unique per node partition, so a foreign key cannot reference the table ({} foreign key(s) do).",
            refs.len()
        ))
        .hint(format!(
            "Drop the foreign key (ALTER TABLE {from} DROP CONSTRAINT {};), enable the table, and check the reference in the application or with a trigger.",
            sql::quote_ident(con)
        )));
    }
    Ok(())
}

/// Views, materialized views and rules name the table by OID: after enable() they would read
/// only this node's partition.
fn check_no_dependent_views(t: &Table) -> FedResult<()> {
    let deps = sql::rows(
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
    Err(FedError::unsupported(format!("cannot federate {}: views or rules depend on it: {}", t.display(), list.join(", ")))
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
    Err(FedError::prerequisite(format!("cannot federate {}: {what} has no primary key", t.display()))
        .detail("Logical replication needs a primary key (or another replica identity) to replicate UPDATE and DELETE.")
        .hint(format!("Add one: ALTER TABLE {} ADD PRIMARY KEY (...); or, if no column is unique, ALTER TABLE {} REPLICA IDENTITY FULL;", t.display(), t.display())))
}

/// The node column of an ordinary table: absent, or text holding only this node's name (or NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeColumn {
    Absent,
    Present { not_null: bool, has_nulls: bool },
}

pub fn check_node_column(t: &Table, column: &str, me: &str) -> FedResult<NodeColumn> {
    let col = sql::rows(
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
    let qcol = sql::quote_ident(column);
    if ty != "text" {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("cannot federate {}: column {qcol} is of type {ty}, not text", t.display()),
        )
        .hint(format!("Change its type (ALTER TABLE {} ALTER COLUMN {qcol} TYPE text;) or name another column with node_column => '...'.", t.display())));
    }
    if !generated.is_empty() || !identity.is_empty() {
        return Err(FedError::unsupported(format!("cannot federate {}: column {qcol} is a generated or identity column", t.display()))
            .hint("The node column must be a plain text column; name another one with node_column => '...'."));
    }
    let q = format!(
        "SELECT count(*) FILTER (WHERE {qcol} IS NULL), count(*) FILTER (WHERE {qcol} IS DISTINCT FROM $1 AND {qcol} IS NOT NULL),
                min({qcol}) FILTER (WHERE {qcol} <> $1)
         FROM {}",
        t.qualified()
    );
    let (nulls, others, sample) = sql::rows(&q, &[me.into()], |r| {
        Ok((
            r.get::<i64>(1)?.unwrap_or(0),
            r.get::<i64>(2)?.unwrap_or(0),
            r.get::<String>(3)?,
        ))
    })?
    .into_iter()
    .next()
    .unwrap_or((0, 0, None));
    if others > 0 {
        return Err(FedError::invalid_value(format!(
            "cannot federate {}: column {qcol} holds other values than this node's name \"{me}\"",
            t.display()
        ))
        .detail(format!("{others} row(s) hold another value, for example \"{}\". Rows that exist before enrollment belong to this node.", sample.unwrap_or_default()))
        .hint(format!("Set the column to '{me}' or NULL in every row, or name another node column with node_column => '...'.")));
    }
    Ok(NodeColumn::Present {
        not_null,
        has_nulls: nulls > 0,
    })
}
