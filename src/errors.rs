//! Errors raised by pg_federation.
//!
//! Every error the extension raises carries a SQLSTATE chosen for its kind, a message naming
//! the object, and, where the user can do something about it, a DETAIL and a HINT. Internal
//! code returns `Result<T, FedError>`; the SQL-facing functions turn an `Err` into a
//! PostgreSQL ERROR with [`FedError::raise`], so the transaction is rolled back as usual.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use std::fmt;

#[derive(Debug, Clone)]
pub struct FedError {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type FedResult<T> = Result<T, FedError>;

impl FedError {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        FedError {
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    fn to_report(self) -> ErrorReport {
        let mut report = ErrorReport::new(self.code, self.message, "pg_federation");
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        report
    }

    /// Raises this error as a PostgreSQL ERROR; never returns.
    pub fn raise(self) -> ! {
        self.to_report().report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }

    /// Reports this error at WARNING or NOTICE level and returns.
    pub fn report(self, level: PgLogLevel) {
        self.to_report().report(level);
    }

    // Constructors for the kinds used throughout the extension.

    /// 22023: a name or argument the user gave is not acceptable.
    pub fn invalid_value(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
    }

    /// 55000: the object is not in the state this call needs.
    pub fn prerequisite(message: impl Into<String>) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            message,
        )
    }

    /// F0000: the server's configuration (or a file it points at) is wrong.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR, message)
    }

    /// 0A000: PostgreSQL or pg_federation cannot do this to such an object.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, message)
    }

    /// 42809: the object is of the wrong kind (a view where a table is needed, ...).
    pub fn wrong_object_type(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, message)
    }

    /// 42501: the caller lacks a privilege.
    pub fn privilege(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, message)
    }

    /// XX000: something that should not happen; the message says what.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, message)
    }
}

/// An argument the call cannot do without: NULL is refused with 22004 and an example call.
pub fn required<T>(value: Option<T>, what: &str, example: &str) -> T {
    match value {
        Some(v) => v,
        None => FedError::new(
            pgrx::PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{what} must not be NULL"),
        )
        .hint(format!("For example: {example}"))
        .raise(),
    }
}

/// Tells the caller something at NOTICE level (SQLSTATE 00000).
pub fn notice(message: impl Into<String>) {
    FedError::new(PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, message)
        .report(PgLogLevel::NOTICE);
}

/// A timeout argument in milliseconds: NULL is refused with 22004, a negative one with 22023,
/// each with an example call.
pub fn timeout_arg(timeout_ms: Option<i64>, example: &str) -> std::time::Duration {
    let ms = required(timeout_ms, "the timeout", example);
    if ms < 0 {
        FedError::invalid_value(format!("the timeout must not be negative ({ms} ms)"))
            .hint(format!("For example: {example}"))
            .raise()
    }
    std::time::Duration::from_millis(ms as u64)
}

impl fmt::Display for FedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " (DETAIL: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (HINT: {h})")?;
        }
        Ok(())
    }
}

impl From<pgrx::spi::Error> for FedError {
    fn from(e: pgrx::spi::Error) -> Self {
        FedError::internal(format!("pg_federation: SPI failed: {e}"))
    }
}

/// Unwraps a result, raising the error as a PostgreSQL ERROR.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for FedResult<T> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.raise(),
        }
    }
}
