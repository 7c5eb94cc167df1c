//! Checks that come before any change: who may call, and in what kind of transaction.

use crate::errors::{FedError, FedResult};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Superuser check with the reason this call needs it.
pub fn require_superuser_for(what: &str, why: &str) -> FedResult<()> {
    // SAFETY: reads this backend's user id.
    if unsafe { pg_sys::superuser() } {
        return Ok(());
    }
    Err(FedError::privilege(format!("permission denied for {what}"))
        .detail(why.to_string())
        .hint("Run it as a superuser."))
}

pub fn require_superuser(what: &str) -> FedResult<()> {
    require_superuser_for(
        what,
        "Joining, leaving and dropping nodes create and drop subscriptions, which PostgreSQL 15 allows only to superusers.",
    )
}

fn in_transaction_block() -> bool {
    // SAFETY: reads transaction state.
    unsafe { pg_sys::IsTransactionBlock() }
}

pub fn must_run_alone(what: &str) -> FedResult<()> {
    if in_transaction_block() {
        return Err(FedError::new(PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION, format!("{what} cannot run inside a transaction block"))
            .detail("It drops subscriptions and replication slots on other nodes, which a ROLLBACK could not undo.")
            .hint("Run it on its own, outside BEGIN ... COMMIT."));
    }
    Ok(())
}
