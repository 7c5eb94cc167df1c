//! The DDL guard: pg_federation's ProcessUtility hook. Statements that would silently break
//! a federation are refused before anything changes, with the member, the reason and the way
//! forward (drops.rs): DROP EXTENSION pg_federation on a member, DROP TABLE of a federated
//! table or one of its partitions, DROP SCHEMA holding one. The extension's own DDL
//! (src/own_ddl.rs) and a superuser's `SET federation.unsafe_ddl = on` pass.
//!
//! Installed by `_PG_init` when pg_federation is preloaded; in a database without the
//! extension it costs one syscache lookup per DROP and nothing for other statements.

mod drops;

use pgrx::prelude::*;
use std::ffi::{c_char, CStr};

static mut PREVIOUS: pg_sys::ProcessUtility_hook_type = None;

pub fn install() {
    // SAFETY: _PG_init runs once per backend, before any statement.
    unsafe {
        PREVIOUS = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
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
    let what = dropping((*pstmt).utilityStmt);
    let guarded = what.is_some()
        && !crate::own_ddl::active()
        && pg_sys::IsTransactionState()
        && extension_installed_here();
    let drops_extension =
        matches!(&what, Some(Dropping::Extensions(e)) if e.iter().any(|n| n == "pg_federation"));
    if guarded && !crate::gucs::unsafe_ddl() {
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
    if guarded && drops_extension && !extension_installed_here() {
        if let Err(e) = drops::remove_empty_schema() {
            e.raise();
        }
    }
}
