//! Tables created in this transaction, with the statements that shaped them (CREATE TABLE,
//! then CREATE INDEX, ALTER TABLE, COMMENT and GRANT on it), so that `enable()` on a running federation can
//! create the table on the members that lack it: a migration that creates a table and enables
//! it runs in one transaction on one node. Recorded only on a node with members; forgotten at
//! the end of the transaction (and of a rolled-back savepoint).

use super::classify;
use pgrx::prelude::*;
use std::cell::RefCell;

struct Recorded {
    table: pg_sys::Oid,
    statement: String,
    search_path: String,
    level: i32,
}

thread_local! {
    static RECORDED: RefCell<Vec<Recorded>> = const { RefCell::new(Vec::new()) };
}

fn nest_level() -> i32 {
    // SAFETY: reads the transaction state.
    unsafe { pg_sys::GetCurrentTransactionNestLevel() }
}

/// The relation a statement creates or shapes, read after it ran: (relation, creates it).
unsafe fn shaped(stmt: *mut pg_sys::Node) -> Option<(pg_sys::Oid, bool)> {
    use pg_sys::NodeTag::*;
    match (*stmt).type_ {
        T_CreateStmt => {
            let s = stmt as *mut pg_sys::CreateStmt;
            if !(*s).partbound.is_null() {
                return None;
            }
            Some((classify::relid_of((*s).relation), true))
        }
        T_IndexStmt => Some((
            classify::relid_of((*(stmt as *mut pg_sys::IndexStmt)).relation),
            false,
        )),
        T_AlterTableStmt => Some((
            classify::relid_of((*(stmt as *mut pg_sys::AlterTableStmt)).relation),
            false,
        )),
        T_CommentStmt | T_GrantStmt => classify::table_named(stmt).map(|t| (t, false)),
        _ => None,
    }
}

/// After a statement ran here (not a federated change): remember it if it created a table, or
/// shaped one created earlier in this transaction.
pub(super) unsafe fn note(stmt: *mut pg_sys::Node, text: impl FnOnce() -> String) {
    let Some((oid, creates)) = shaped(stmt) else {
        return;
    };
    if oid == pg_sys::InvalidOid {
        return;
    }
    let known = RECORDED.with(|r| r.borrow().iter().any(|x| x.table == oid));
    if !creates && !known {
        return;
    }
    if creates && !crate::catalog::has_members().unwrap_or(false) {
        return;
    }
    let search_path =
        crate::spi::one::<String>("SELECT pg_catalog.current_setting('search_path')", &[])
            .ok()
            .flatten()
            .unwrap_or_default();
    let statement = text();
    RECORDED.with(|r| {
        r.borrow_mut().push(Recorded {
            table: oid,
            statement,
            search_path,
            level: nest_level(),
        })
    });
}

/// The statements that made `table` in this transaction, with their search_path, if this
/// transaction created it.
pub fn statements_for(table: pg_sys::Oid) -> Option<Vec<(String, String)>> {
    RECORDED.with(|r| {
        let r = r.borrow();
        let list: Vec<(String, String)> = r
            .iter()
            .filter(|x| x.table == table)
            .map(|x| (x.statement.clone(), x.search_path.clone()))
            .collect();
        (!list.is_empty()).then_some(list)
    })
}

pub(super) fn forget_all() {
    RECORDED.with(|r| r.borrow_mut().clear());
}

pub(super) fn savepoint_released(level: i32) {
    RECORDED.with(|r| {
        for x in r.borrow_mut().iter_mut().filter(|x| x.level >= level) {
            x.level = level - 1;
        }
    });
}

pub(super) fn savepoint_rolled_back(level: i32) {
    RECORDED.with(|r| r.borrow_mut().retain(|x| x.level < level));
}
