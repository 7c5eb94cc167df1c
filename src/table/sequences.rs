//! Federation-unique sequence values (docs/keys.md). Every sequence that fills a column of a
//! federated table (identity, serial, DEFAULT nextval()) draws, on node number k, from
//! [k * 2^48, (k + 1) * 2^48 - 1]: nextval() stays a plain local sequence call, values of two
//! nodes can never meet, and a node that joins later needs nothing changed on the others.
//! Values from before (range 0: 1 to 2^48 - 1) stay as they are.

use super::Table;
use crate::catalog;
use crate::errors::{FedError, FedResult};
use crate::spi::{self, quote_ident};
use pgrx::prelude::*;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Bits of a value below the node number.
pub const VALUE_BITS: u32 = 48;

/// The values node `k` draws from.
pub fn range(k: i32) -> (i64, i64) {
    let lo = (k as i64) << VALUE_BITS;
    (lo, lo + ((1i64 << VALUE_BITS) - 1))
}

/// A sequence that fills a column of a table (federation.column_sequence).
#[derive(Debug, Clone)]
pub struct ColumnSequence {
    pub column: String,
    pub column_type: String,
    /// The sequence, as SQL (regclass text).
    pub seq: String,
    pub increment: i64,
    pub min_value: i64,
    pub max_value: i64,
}

/// The sequences that fill columns of a table (none before 0.3.0's SQL is installed: then
/// sequences are left as 0.2.0 left them).
pub fn of_table(oid: pg_sys::Oid) -> FedResult<Vec<ColumnSequence>> {
    if !catalog::sql_0_3_installed()? {
        return Ok(vec![]);
    }
    spi::rows(
        "SELECT column_name::text, column_type::text, seq::text, increment, min_value, max_value
         FROM federation.column_sequence WHERE relid = $1 ORDER BY column_name, seq::text",
        &[oid.into()],
        |r| {
            Ok(ColumnSequence {
                column: r.get::<String>(1)?.unwrap_or_default(),
                column_type: r.get::<String>(2)?.unwrap_or_default(),
                seq: r.get::<String>(3)?.unwrap_or_default(),
                increment: r.get::<i64>(4)?.unwrap_or(1),
                min_value: r.get::<i64>(5)?.unwrap_or(1),
                max_value: r.get::<i64>(6)?.unwrap_or(i64::MAX),
            })
        },
    )
}

/// Refuses, before anything changes, a table whose sequences cannot be made
/// federation-unique: a column narrower than bigint, or a sequence that counts down.
pub fn check_numberable(t: &Table) -> FedResult<()> {
    for s in of_table(t.oid)? {
        let col = quote_ident(&s.column);
        if s.column_type != "bigint" {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "cannot federate {}: column {col} is {} and filled by sequence {}",
                    t.qualified(),
                    s.column_type,
                    s.seq
                ),
            )
            .detail("On a federation each node's sequence values start at its node number times 2^48, so that no two nodes ever produce the same value; they need a bigint column.")
            .hint(format!(
                "Widen the column first: ALTER TABLE {} ALTER COLUMN {col} TYPE bigint; (or use uuid keys: docs/keys.md).",
                t.qualified()
            )));
        }
        if s.increment <= 0 {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "cannot federate {}: sequence {} of column {col} counts down (INCREMENT BY {})",
                    t.qualified(),
                    s.seq,
                    s.increment
                ),
            )
            .hint(format!(
                "Make it count up: ALTER SEQUENCE {} INCREMENT BY 1;",
                s.seq
            )));
        }
    }
    Ok(())
}

/// Moves every sequence of the federated table `t` into node `k`'s range, continuing above
/// the highest value of that range already in the table. A sequence already there is left
/// alone. Returns how many sequences moved.
pub fn number(t: &Table, k: i32) -> FedResult<usize> {
    let (lo, hi) = range(k);
    let mut moved = 0;
    for s in of_table(t.oid)? {
        if s.min_value == lo && s.max_value == hi {
            continue;
        }
        if s.column_type != "bigint" || s.increment <= 0 {
            // Federated before 0.3.0 with a column that cannot be numbered: say so now;
            // health() keeps saying so.
            FedError::new(
                PgSqlErrorCode::ERRCODE_WARNING,
                format!(
                    "sequence {} of {}.{} stays outside this node's range: the column is {}{}",
                    s.seq,
                    t.qualified(),
                    quote_ident(&s.column),
                    s.column_type,
                    if s.increment <= 0 { " and the sequence counts down" } else { "" }
                ),
            )
            .hint(format!(
                "Widen the column on every node (ALTER TABLE {} ALTER COLUMN {} TYPE bigint;), then SELECT federation.enable('{}'); docs/keys.md, \"Integer columns\".",
                t.qualified(),
                quote_ident(&s.column),
                t.qualified().replace('\'', "''")
            ))
            .report(PgLogLevel::WARNING);
            continue;
        }
        let top = spi::one::<i64>(
            &format!(
                "SELECT max({col}) FROM {} WHERE {col} BETWEEN $1 AND $2",
                t.qualified(),
                col = quote_ident(&s.column)
            ),
            &[lo.into(), hi.into()],
        )?;
        let restart = top.map_or(lo, |v| v.saturating_add(1).max(lo));
        if restart > hi {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_SEQUENCE_GENERATOR_LIMIT_EXCEEDED,
                format!(
                    "sequence {} has no values left in node number {k}'s range",
                    s.seq
                ),
            )
            .hint("Join the node again to get a new node number (docs/keys.md)."));
        }
        spi::exec(&format!(
            "ALTER SEQUENCE {} AS bigint MINVALUE {lo} MAXVALUE {hi} START WITH {lo} RESTART WITH {restart} NO CYCLE",
            s.seq
        ))?;
        moved += 1;
    }
    Ok(moved)
}

/// Numbers the sequences of every federated table on this node with its node number (a
/// no-op before it joins). Returns how many sequences moved.
pub fn number_all() -> FedResult<usize> {
    let Some(k) = catalog::node_number()? else {
        return Ok(0);
    };
    let mut moved = 0;
    for (oid, _) in catalog::federated_tables()? {
        moved += number(&Table::load(oid)?, k)?;
    }
    Ok(moved)
}

/// After disable(): every sequence of the now ordinary table `table_sql` becomes an ordinary
/// sequence again (default bounds), continuing above every value in the table.
pub fn restore_ordinary(oid: pg_sys::Oid, table_sql: &str) -> FedResult<()> {
    for s in of_table(oid)? {
        if s.increment <= 0 {
            continue;
        }
        let top = spi::one::<i64>(
            &format!("SELECT max({}) FROM {table_sql}", quote_ident(&s.column)),
            &[],
        )?;
        let next = spi::one::<i64>(
            &format!(
                "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {}",
                s.seq
            ),
            &[],
        )?;
        let restart = top
            .map_or(1, |v| v.saturating_add(1))
            .max(next.unwrap_or(1))
            .max(1);
        spi::exec(&format!(
            "ALTER SEQUENCE {} NO MINVALUE NO MAXVALUE START WITH 1 RESTART WITH {restart}",
            s.seq
        ))?;
    }
    Ok(())
}
