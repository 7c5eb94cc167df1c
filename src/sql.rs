//! Thin helpers over SPI: run a statement, read rows. Values always travel as `$n`
//! arguments; identifiers are quoted by the caller with `quote_ident`/`qualified`.

use crate::errors::FedResult;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiHeapTupleData;

/// Runs a statement (DDL or DML) and discards its result.
pub fn exec(sql: &str) -> FedResult<()> {
    Spi::run(sql)?;
    Ok(())
}

/// Runs a statement with `$n` arguments.
pub fn exec_args(sql: &str, args: &[DatumWithOid]) -> FedResult<()> {
    Spi::run_with_args(sql, args)?;
    Ok(())
}

/// Maps every row of a query.
pub fn rows<T>(
    sql: &str,
    args: &[DatumWithOid],
    f: impl Fn(&SpiHeapTupleData) -> Result<T, pgrx::spi::Error>,
) -> FedResult<Vec<T>> {
    let out = Spi::connect(|client| {
        let table = client.select(sql, None, args)?;
        let mut out = Vec::new();
        for row in table {
            out.push(f(&row)?);
        }
        Ok::<_, pgrx::spi::Error>(out)
    })?;
    Ok(out)
}

/// The first column of the first row; `None` for no row or NULL.
pub fn one<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> FedResult<Option<T>> {
    Ok(rows(sql, args, |r| r.get::<T>(1))?.into_iter().next().flatten())
}

pub fn quote_ident(name: &str) -> String {
    pgrx::spi::quote_identifier(name)
}

pub fn quote_literal(value: &str) -> String {
    pgrx::spi::quote_literal(value)
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}
