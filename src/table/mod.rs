//! Tables: what a table is ([`Table`]), the checks before enrolling one (inspect), and the
//! changes enable() and disable() make on this node (convert, adopt, partitions, dressing,
//! keys, sequences, guards, publication, disable); a federated table's definition as SQL for
//! a node that joins without it (definition).

pub mod adopt;
pub mod convert;
pub mod definition;
pub mod disable;
pub mod dressing;
pub mod guards;
pub mod inspect;
pub mod keys;
pub mod partitions;
pub mod publication;
pub mod sequences;
pub mod set_aside;

use crate::errors::{FedError, FedResult};
use crate::spi::{self, qualified};
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
        let rows = spi::rows(
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
        spi::qualified(&self.schema, &self.name)
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
        let name = spi::one::<String>(
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
        let kind = spi::one::<String>(
            "SELECT relkind::text FROM pg_catalog.pg_class WHERE oid = $1",
            &[oid.into()],
        )?;
        if !matches!(kind.as_deref(), Some("r") | Some("p")) {
            return Ok(());
        }
        spi::exec(&format!(
            "LOCK TABLE {}{name} IN {mode} MODE",
            if only { "ONLY " } else { "" }
        ))
    }
}

/// Locks a relation in ACCESS SHARE mode if it still exists, so that it cannot be dropped
/// before this transaction ends; false if a concurrent transaction dropped it. A reader such
/// as status() sees catalog rows under its snapshot that can name a relation the worker has
/// dropped since (a kept copy once compared): it must skip such a relation, not query it.
pub fn share_lock_if_exists(oid: pg_sys::Oid) -> bool {
    unsafe {
        pg_sys::LockRelationOid(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        // LockRelationOid has processed invalidations: the cache knows of a committed drop.
        let exists = pg_sys::SearchSysCacheExists(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            pg_sys::Datum::from(oid),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        );
        if !exists {
            pg_sys::UnlockRelationOid(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        }
        exists
    }
}

pub fn oid_sql(oid: pg_sys::Oid) -> FedResult<String> {
    spi::one::<String>("SELECT $1::oid::regclass::text", &[oid.into()])?
        .ok_or_else(|| FedError::internal("relation vanished"))
}

pub fn relation_oid(schema: &str, name: &str) -> FedResult<pg_sys::Oid> {
    spi::one::<pg_sys::Oid>(
        "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2",
        &[schema.into(), name.into()],
    )?
    .ok_or_else(|| FedError::internal(format!("relation {} vanished", qualified(schema, name))))
}
