//! Thin helpers over SPI: run a statement, read rows. Values always travel as `$n`
//! arguments; identifiers are quoted by the caller with `quote_ident`/`qualified`.

use crate::errors::FedResult;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiHeapTupleData;

/// Runs a statement (DDL or DML) and discards its result. Statements run through these
/// helpers are pg_federation's own (src/own_ddl.rs): the DDL hook lets them through.
pub fn exec(sql: &str) -> FedResult<()> {
    crate::own_ddl::run(|| Spi::run(sql))?;
    Ok(())
}

/// Runs a statement with `$n` arguments.
pub fn exec_args(sql: &str, args: &[DatumWithOid]) -> FedResult<()> {
    crate::own_ddl::run(|| Spi::run_with_args(sql, args))?;
    Ok(())
}

/// Runs a statement with `$n` arguments and returns how many rows it processed.
pub fn exec_count(sql: &str, args: &[DatumWithOid]) -> FedResult<usize> {
    let n = crate::own_ddl::run(|| {
        Spi::connect_mut(|client| client.update(sql, None, args).map(|t| t.len()))
    })?;
    Ok(n)
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

/// Every row of a query of two text columns, as pairs (NULL as the empty string).
pub fn text_pairs(sql: &str, args: &[DatumWithOid]) -> FedResult<Vec<(String, String)>> {
    rows(sql, args, |r| {
        Ok((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
        ))
    })
}

/// The first column of the first row; `None` for no row or NULL.
pub fn one<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> FedResult<Option<T>> {
    Ok(rows(sql, args, |r| r.get::<T>(1))?
        .into_iter()
        .next()
        .flatten())
}

/// Rows of a read-only query as text, each call under a fresh snapshot (READ COMMITTED), so a
/// waiting loop sees other sessions' commits. Unlike pgrx's mutable SPI calls it assigns no
/// transaction id (a waiting session holding one would stall logical slot creation).
pub fn rows_fresh(query: &str) -> FedResult<Vec<Vec<Option<String>>>> {
    let c = std::ffi::CString::new(query)
        .map_err(|_| crate::errors::FedError::internal("query contains a NUL byte"))?;
    let mut out = vec![];
    // SAFETY: plain SPI protocol: connect, execute (read_only = false takes a new snapshot),
    // copy the text values out, finish. An ERROR aborts the transaction, which cleans SPI up.
    unsafe {
        pg_sys::SPI_connect();
        let rc = pg_sys::SPI_execute(c.as_ptr(), false, 0);
        if rc != pg_sys::SPI_OK_SELECT as i32 {
            pg_sys::SPI_finish();
            return Err(crate::errors::FedError::internal(format!(
                "SPI_execute returned {rc} for a SELECT"
            )));
        }
        let tt = pg_sys::SPI_tuptable;
        let n = pg_sys::SPI_processed as usize;
        let natts = (*(*tt).tupdesc).natts;
        for i in 0..n {
            let tuple = *(*tt).vals.add(i);
            let mut row = vec![];
            for j in 1..=natts {
                let v = pg_sys::SPI_getvalue(tuple, (*tt).tupdesc, j);
                row.push(if v.is_null() {
                    None
                } else {
                    Some(std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
                });
            }
            out.push(row);
        }
        pg_sys::SPI_finish();
    }
    Ok(out)
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
