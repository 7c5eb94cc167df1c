//! What a table wears besides its columns and rows, which enable() and disable() move from
//! one relation to another: the user's triggers, identity sequences, comment and grants.
//! Captured once before the change ([`Dressing::capture`]), stripped (triggers), and
//! restored on the new relation.

use crate::errors::{FedError, FedResult};
use crate::spi::{self, quote_ident, quote_literal};
use pgrx::prelude::*;

pub struct Identity {
    column: String,
    kind: String, // 'a' ALWAYS or 'd' BY DEFAULT
    last_value: i64,
    is_called: bool,
}

fn identity_columns(oid: pg_sys::Oid, table_sql: &str) -> FedResult<Vec<Identity>> {
    let cols = spi::text_pairs(
        "SELECT attname::text, attidentity::text FROM pg_catalog.pg_attribute
         WHERE attrelid = $1 AND attidentity <> '' AND NOT attisdropped ORDER BY attnum",
        &[oid.into()],
    )?;
    let mut out = vec![];
    for (column, kind) in cols {
        let seq = spi::one::<String>(
            "SELECT pg_catalog.pg_get_serial_sequence($1, $2)",
            &[table_sql.into(), column.as_str().into()],
        )?
        .ok_or_else(|| FedError::internal(format!("identity column {column} has no sequence")))?;
        let (last_value, is_called) = spi::rows(
            &format!("SELECT last_value, is_called FROM {seq}"),
            &[],
            |r| {
                Ok((
                    r.get::<i64>(1)?.unwrap_or(1),
                    r.get::<bool>(2)?.unwrap_or(false),
                ))
            },
        )?
        .into_iter()
        .next()
        .unwrap_or((1, false));
        out.push(Identity {
            column,
            kind,
            last_value,
            is_called,
        });
    }
    Ok(out)
}

/// The user's own triggers on a table (not internal, not cloned from a parent), as
/// (name, CREATE TRIGGER statement, tgenabled).
pub fn user_triggers(oid: pg_sys::Oid) -> FedResult<Vec<(String, String, String)>> {
    spi::rows(
        "SELECT tgname::text, pg_catalog.pg_get_triggerdef(oid, false), tgenabled::text
         FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal AND tgparentid = 0
           AND tgname NOT IN ('_federation_guard', '_federation_guard_truncate')
         ORDER BY tgname",
        &[oid.into()],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
            ))
        },
    )
}

fn restore_trigger_state(table_sql: &str, name: &str, enabled: &str) -> FedResult<()> {
    let action = match enabled {
        "D" => "DISABLE TRIGGER",
        "A" => "ENABLE ALWAYS TRIGGER",
        "R" => "ENABLE REPLICA TRIGGER",
        _ => return Ok(()),
    };
    spi::exec(&format!(
        "ALTER TABLE {table_sql} {action} {}",
        quote_ident(name)
    ))
}

/// GRANT statements reproducing a relation's privileges on another relation.
fn grants(from: pg_sys::Oid, to_sql: &str) -> FedResult<Vec<String>> {
    spi::rows(
        "SELECT a.privilege_type,
                CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END,
                a.is_grantable
         FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
         WHERE c.oid = $1 AND a.grantee <> c.relowner ORDER BY 2, 1",
        &[from.into()],
        |r| {
            let opt = if r.get::<bool>(3)?.unwrap_or(false) { " WITH GRANT OPTION" } else { "" };
            Ok(format!(
                "GRANT {} ON TABLE {to_sql} TO {}{opt}",
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default()
            ))
        },
    )
}

fn table_comment(oid: pg_sys::Oid) -> FedResult<Option<String>> {
    spi::one::<String>(
        "SELECT pg_catalog.obj_description($1, 'pg_class')",
        &[oid.into()],
    )
}

/// Sets the identity sequence of `id.column` on `table_sql` to where the table's old one was.
fn continue_sequence(table_sql: &str, id: &Identity) -> FedResult<()> {
    let seq = spi::one::<String>(
        "SELECT pg_catalog.pg_get_serial_sequence($1, $2)",
        &[table_sql.into(), id.column.as_str().into()],
    )?
    .ok_or_else(|| {
        FedError::internal(format!(
            "identity sequence of {table_sql}.{} missing",
            id.column
        ))
    })?;
    spi::exec_args(
        "SELECT pg_catalog.setval($1::regclass, $2, $3)",
        &[
            seq.as_str().into(),
            id.last_value.into(),
            id.is_called.into(),
        ],
    )
}

/// Everything [`Dressing::capture`] reads from a table before enable() or disable() moves
/// it to another relation.
pub struct Dressing {
    /// The user's triggers: (name, CREATE TRIGGER statement, tgenabled).
    triggers: Vec<(String, String, String)>,
    identities: Vec<Identity>,
    comment: Option<String>,
    /// GRANT statements, addressed to the table's name (the relation that has it afterwards).
    grants: Vec<String>,
}

impl Dressing {
    /// Reads the dressing of `oid`, whose qualified name is `table_sql`.
    pub fn capture(oid: pg_sys::Oid, table_sql: &str) -> FedResult<Dressing> {
        Ok(Dressing {
            triggers: user_triggers(oid)?,
            identities: identity_columns(oid, table_sql)?,
            comment: table_comment(oid)?,
            grants: grants(oid, table_sql)?,
        })
    }

    /// Drops the user's triggers from `table_sql` (they are re-created by
    /// [`Dressing::restore_triggers`] on the relation that carries the name afterwards).
    pub fn strip_triggers(&self, table_sql: &str) -> FedResult<()> {
        for (name, _, _) in &self.triggers {
            spi::exec(&format!(
                "DROP TRIGGER {} ON {table_sql}",
                quote_ident(name)
            ))?;
        }
        Ok(())
    }

    /// The grants and the comment, on `table_sql`.
    pub fn restore_grants_and_comment(&self, table_sql: &str) -> FedResult<()> {
        for g in &self.grants {
            spi::exec(g)?;
        }
        if let Some(c) = &self.comment {
            spi::exec(&format!(
                "COMMENT ON TABLE {table_sql} IS {}",
                quote_literal(c)
            ))?;
        }
        Ok(())
    }

    /// Identity columns that `table_sql` already has (copied with LIKE ... INCLUDING
    /// IDENTITY) continue where the old table's sequences were; `old_sql` loses its identity.
    pub fn move_identities(&self, old_sql: &str, table_sql: &str) -> FedResult<()> {
        self.each_identity(table_sql, |id| {
            format!(
                "ALTER TABLE {old_sql} ALTER COLUMN {} DROP IDENTITY",
                quote_ident(&id.column)
            )
        })
    }

    /// Identity columns are added to `table_sql` again (ALWAYS or BY DEFAULT, as they were)
    /// and continue where the old sequences were.
    pub fn add_identities(&self, table_sql: &str) -> FedResult<()> {
        self.each_identity(table_sql, |id| {
            let how = if id.kind == "a" {
                "ALWAYS"
            } else {
                "BY DEFAULT"
            };
            format!(
                "ALTER TABLE {table_sql} ALTER COLUMN {} ADD GENERATED {how} AS IDENTITY",
                quote_ident(&id.column)
            )
        })
    }

    /// For each identity column: the statement `ddl` makes for it, then its sequence on
    /// `table_sql` continues where the old one was.
    fn each_identity(&self, table_sql: &str, ddl: impl Fn(&Identity) -> String) -> FedResult<()> {
        for id in &self.identities {
            spi::exec(&ddl(id))?;
            continue_sequence(table_sql, id)?;
        }
        Ok(())
    }

    /// The user's triggers, re-created on `table_sql` (row triggers are cloned to every
    /// partition of a partitioned table) with the state they had.
    pub fn restore_triggers(&self, table_sql: &str) -> FedResult<()> {
        for (name, def, enabled) in &self.triggers {
            spi::exec(def)?;
            restore_trigger_state(table_sql, name, enabled)?;
        }
        Ok(())
    }
}
