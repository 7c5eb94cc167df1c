//! pg_federation's ProcessUtility hook: schema changes of federated tables.
//!
//! - Ordinary DDL on a federated table (ALTER TABLE, CREATE/DROP INDEX, COMMENT, GRANT, ...),
//!   run on any one node, is made on every member in the same transaction (classify.rs says
//!   which statements and what each needs; spread.rs runs them on the members and commits
//!   everywhere or nowhere; quiesce.rs lets earlier rows reach every member first; after.rs
//!   is what every node does after the statement, such as republishing values a volatile
//!   default computed).
//! - Statements that would silently break a federation are refused before anything changes,
//!   with the member, the reason and the way forward (classify.rs, drops.rs): DROP EXTENSION
//!   pg_federation on a member, DROP TABLE of a federated table or one of its partitions,
//!   DROP SCHEMA holding one, DDL on a partition, ATTACH/DETACH PARTITION, ...
//!
//! The extension's own DDL (src/own_ddl.rs), extension scripts and a superuser's
//! `SET federation.unsafe_ddl = on` (this node only) pass. Installed by `_PG_init`; in a
//! database without the extension it costs one syscache lookup per DDL statement.

mod after;
mod classify;
mod created;
mod drops;
pub(crate) mod quiesce;
mod spread;

pub use spread::GID_PREFIX;

/// disable() on a node of a federation, in the caller's transaction: the table is quiesced
/// on every node (no row of it is in flight anywhere), then every member and this node turn
/// it back into an ordinary table, committed everywhere or nowhere.
pub fn disable_everywhere(table: pg_sys::Oid, qualified: &str) -> crate::errors::FedResult<()> {
    spread::before(table, qualified)?;
    spread::call_everywhere("disable_here", qualified)?;
    crate::table::disable::to_ordinary(table)
}

/// enable() on a running federation, for a table created in this transaction that `member`
/// lacks: creates it there in this transaction, with the statements that made it here.
/// Returns false when this transaction did not create the table.
pub fn create_on_member(
    table: pg_sys::Oid,
    qualified: &str,
    member: &str,
) -> crate::errors::FedResult<bool> {
    match created::statements_for(table) {
        Some(statements) => spread::replay_on(member, qualified, &statements).map(|_| true),
        None => Ok(false),
    }
}

use pgrx::prelude::*;
use std::ffi::{c_char, CStr};

static mut PREVIOUS: pg_sys::ProcessUtility_hook_type = None;

pub fn install() {
    // SAFETY: _PG_init runs once per backend, before any statement.
    unsafe {
        PREVIOUS = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
    spread::install();
}

/// The names in a List of String nodes.
unsafe fn names(list: *mut pg_sys::List) -> Vec<String> {
    let list = pgrx::PgList::<pg_sys::Node>::from_pg(list);
    list.iter_ptr()
        .filter(|n| pgrx::is_a(*n, pg_sys::NodeTag::T_String))
        .map(|n| {
            let s = (*(n as *mut pg_sys::String)).sval;
            if s.is_null() {
                String::new()
            } else {
                CStr::from_ptr(s).to_string_lossy().into_owned()
            }
        })
        .collect()
}

/// What a DROP statement names: extensions, schemas, or tables as name lists.
enum Dropping {
    Extensions(Vec<String>),
    Schemas(Vec<String>),
    Tables(Vec<Vec<String>>),
}

unsafe fn dropping(stmt: *mut pg_sys::Node) -> Option<Dropping> {
    if !pgrx::is_a(stmt, pg_sys::NodeTag::T_DropStmt) {
        return None;
    }
    let drop = stmt as *mut pg_sys::DropStmt;
    match (*drop).removeType {
        pg_sys::ObjectType::OBJECT_EXTENSION => Some(Dropping::Extensions(names((*drop).objects))),
        pg_sys::ObjectType::OBJECT_SCHEMA => Some(Dropping::Schemas(names((*drop).objects))),
        pg_sys::ObjectType::OBJECT_TABLE => {
            let list = pgrx::PgList::<pg_sys::List>::from_pg((*drop).objects);
            Some(Dropping::Tables(
                list.iter_ptr().map(|l| names(l)).collect(),
            ))
        }
        _ => None,
    }
}

fn extension_installed_here() -> bool {
    // SAFETY: a syscache lookup by name; missing_ok.
    unsafe { pg_sys::get_extension_oid(c"pg_federation".as_ptr(), true) != pg_sys::InvalidOid }
}

/// The text of the one statement `pstmt` is, out of a query string that may hold several.
unsafe fn statement_text(pstmt: *mut pg_sys::PlannedStmt, query: *const c_char) -> String {
    if query.is_null() {
        return String::new();
    }
    let q = CStr::from_ptr(query).to_bytes();
    let start = ((*pstmt).stmt_location.max(0) as usize).min(q.len());
    let end = if (*pstmt).stmt_len > 0 {
        (start + (*pstmt).stmt_len as usize).min(q.len())
    } else {
        q.len()
    };
    String::from_utf8_lossy(&q[start..end]).trim().to_string()
}

/// What the hook does with a statement, decided before it runs.
enum Plan {
    /// Nothing of ours: run it.
    Run,
    /// A federated schema change made here on behalf of another node's (ddl_origin), or on
    /// this node only (unsafe_ddl): run it, then the after-steps.
    Here(classify::Change),
    /// A federated schema change that starts here: every member makes it too (the statement,
    /// and the table's name for messages).
    Everywhere(classify::Change, String, String),
}

unsafe fn plan(pstmt: *mut pg_sys::PlannedStmt, query: *const c_char) -> Plan {
    let stmt = (*pstmt).utilityStmt;
    // Only these can be about a federated table; everything else (BEGIN, SET, ...) must not
    // even take a snapshot here (a tablesync's BEGIN ISOLATION LEVEL must come first).
    if !classify::may_concern_tables(stmt) {
        return Plan::Run;
    }
    if crate::own_ddl::active()
        || pg_sys::creating_extension
        || !pg_sys::IsTransactionState()
        || !extension_installed_here()
        || !crate::catalog::sql_0_4_installed().unwrap_or_else(|e| e.raise())
    {
        return Plan::Run;
    }
    let verdict = match classify::classify(stmt) {
        Ok(v) => v,
        Err(e) => e.raise(),
    };
    let origin = crate::gucs::ddl_origin().is_some();
    let unsafe_ddl = crate::gucs::unsafe_ddl();
    match verdict {
        classify::Verdict::Pass => Plan::Run,
        classify::Verdict::Refuse(_) if origin || unsafe_ddl => Plan::Run,
        classify::Verdict::Refuse(e) => e.raise(),
        classify::Verdict::Federate(c) if origin => Plan::Here(c),
        classify::Verdict::Federate(_) if unsafe_ddl => Plan::Run,
        classify::Verdict::Federate(c) => {
            let spreads = crate::catalog::has_members().unwrap_or_else(|e| e.raise());
            // A node whose name does not match the one its partitions were made with (a
            // backup restored on another server, a renamed node) refuses writes and must not
            // reach the members: the statement stays here (a restore rebuilds its objects).
            if spreads && crate::identity::current_name().is_err() {
                return Plan::Run;
            }
            if spreads {
                let table = crate::table::Table::load(c.table)
                    .map(|t| t.qualified())
                    .unwrap_or_else(|e| e.raise());
                Plan::Everywhere(c, statement_text(pstmt, query), table)
            } else {
                Plan::Here(c)
            }
        }
    }
}

/// Before a federated change runs here: refusals that need the catalog, the members'
/// sessions, the quiesce.
fn prepare_everywhere(change: &classify::Change, table: &str) -> crate::errors::FedResult<()> {
    spread::check_usable()?;
    if change.drops_columns && after::wrote_own_rows(change.table)? {
        return Err(crate::errors::FedError::new(
            pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("cannot drop or rename a column of federated table {table} in a transaction that already wrote its rows"),
        )
        .detail("Rows written earlier in this transaction are sent to the members with the old columns, after the members have dropped or renamed them.")
        .hint("Commit the data change first and run the schema change in a transaction of its own (in Alembic or Django: a separate migration)."));
    }
    spread::before(change.table, table)
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let plan = plan(pstmt, query_string);
    if let Plan::Everywhere(change, text, table) = &plan {
        // The members run the statement while this node does.
        if let Err(e) = prepare_everywhere(change, table).and_then(|_| spread::send(text)) {
            e.raise();
        }
    }
    let what = dropping((*pstmt).utilityStmt);
    let guarded = what.is_some()
        && !crate::own_ddl::active()
        && pg_sys::IsTransactionState()
        && extension_installed_here();
    let drops_extension =
        matches!(&what, Some(Dropping::Extensions(e)) if e.iter().any(|n| n == "pg_federation"));
    // A federated DROP TABLE (every member drops it) passes the guard.
    let federated = !matches!(plan, Plan::Run);
    if guarded && !federated && !crate::gucs::unsafe_ddl() {
        if let Some(w) = &what {
            if let Err(e) = drops::check(w) {
                e.raise();
            }
        }
    }
    match PREVIOUS {
        Some(prev) => prev(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
        None => pg_sys::standard_ProcessUtility(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
    }
    match &plan {
        Plan::Run => {
            if classify::may_concern_tables((*pstmt).utilityStmt)
                && !crate::own_ddl::active()
                && !pg_sys::creating_extension
                && extension_installed_here()
            {
                created::note((*pstmt).utilityStmt, || statement_text(pstmt, query_string));
            }
        }
        Plan::Here(change) => {
            if let Err(e) = after::apply(change) {
                e.raise();
            }
        }
        Plan::Everywhere(change, _, table) => {
            let done = after::apply(change).and_then(|_| spread::receive(table));
            if let Err(e) = done {
                e.raise();
            }
        }
    }
    if guarded && drops_extension && !extension_installed_here() {
        if let Err(e) = drops::remove_empty_schema() {
            e.raise();
        }
    }
}
