//! A schema change of a federated table made on every member in the caller's transaction.
//!
//! At the first such statement of a transaction this node opens one session per member (in
//! name order), each inside a transaction of its own, running as the caller's role with
//! `federation.ddl_origin` set so that the member's DDL hook applies the statement without
//! spreading it again. Every statement then runs here and on each member; savepoints are
//! mirrored, so a ROLLBACK TO SAVEPOINT undoes it everywhere. At COMMIT every member
//! prepares its transaction (two-phase commit) before this node commits; then each member
//! commits its prepared transaction. If any member cannot prepare, nothing commits anywhere.
//! A member that prepared but did not hear the COMMIT PREPARED (a crash, a cut link) holds the
//! prepared transaction until its worker learns this node's outcome (worker/prepared.rs).

use super::quiesce::{self, Mark};
use crate::catalog::{self, MemberState};
use crate::errors::{FedError, FedResult};
use crate::gucs;
use crate::remote::Remote;
use crate::spi::{self, quote_ident, quote_literal};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::RefCell;

/// Prepared transactions of schema changes are named `pg_federation_ddl:<origin>:<xid>`.
pub const GID_PREFIX: &str = "pg_federation_ddl:";

struct Session {
    name: String,
    remote: Remote,
    /// Savepoints mirrored on the member: its transaction is at this nesting level.
    depth: i32,
    prepared: bool,
    broken: bool,
    /// A statement was sent and its outcome not yet read.
    in_flight: bool,
}

struct Txn {
    me: String,
    gid: String,
    sessions: Vec<Session>,
    /// Tables already quiesced in this transaction, with the nesting level that did it.
    quiesced: Vec<(pg_sys::Oid, i32)>,
}

thread_local! {
    static TXN: RefCell<Option<Txn>> = const { RefCell::new(None) };
}

fn nest_level() -> i32 {
    // SAFETY: reads the transaction state.
    unsafe { pg_sys::GetCurrentTransactionNestLevel() }
}

pub fn install() {
    // SAFETY: _PG_init, once per backend.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
}

fn member_error(name: &str, table: &str, e: FedError) -> FedError {
    let reason = match e.message.strip_prefix("on ") {
        Some(rest) => rest.split_once(": ").map_or(rest, |(_, r)| r).to_string(),
        None => e.message.clone(),
    };
    FedError {
        message: format!("member \"{name}\" refused the change of {table}: {reason}"),
        ..e
    }
}

/// Opens the sessions of this transaction, once: every member must be ready, reachable, run
/// this version and allow prepared transactions. Nothing has changed anywhere yet when this
/// refuses.
fn open(table: &str) -> FedResult<()> {
    if TXN.with(|t| t.borrow().is_some()) {
        return Ok(());
    }
    let me = crate::identity::current_name()?;
    let members = catalog::as_extension_owner(catalog::members)?;
    if let Some(m) = members.iter().find(|m| m.state != MemberState::Ready) {
        return Err(FedError::prerequisite(format!(
            "cannot change {table} while member \"{}\" is {}",
            m.name,
            m.state.as_str()
        ))
        .detail("A schema change of a federated table is made on every member at once.")
        .hint("Wait until it is ready (SELECT federation.wait_ready();) or, if it is gone for good, remove it (SELECT federation.drop_node(...);), then run the change again."));
    }
    let pending = spi::one::<String>(
        "SELECT mesh_state FROM federation.federated_table WHERE relid = pg_catalog.to_regclass($1)",
        &[table.into()],
    )?;
    if pending.as_deref() == Some("pending") {
        return Err(FedError::prerequisite(format!(
            "cannot change {table}: it is still being federated on the members"
        ))
        .hint("Wait until it is (SELECT federation.wait_ready();), then run the change again."));
    }
    let version = catalog::extension_version()?;
    let role = spi::one::<String>("SELECT current_user::text", &[])?.unwrap_or_default();
    let mut sessions = vec![];
    for m in &members {
        let what = format!("member \"{}\"", m.name);
        let mut r = Remote::connect(&m.conninfo, &what).map_err(|e| {
            FedError::new(
                PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
                format!("cannot change {table}: member \"{}\" is unreachable", m.name),
            )
            .detail(format!("{} Nothing was changed on any node.", e.message))
            .hint(format!(
                "A schema change of a federated table is made on every member in one transaction. Bring \"{}\" back (or remove it for good with federation.drop_node()), then run the change again. {}",
                m.name,
                super::classify::ESCAPE
            ))
        })?;
        r.check_version(&what, &version)?;
        let prepared = r
            .scalar(
                "SELECT pg_catalog.current_setting('max_prepared_transactions')",
                &[],
            )?
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        if prepared < 1 {
            return Err(FedError::config(format!(
                "cannot change {table}: member \"{}\" has max_prepared_transactions = 0",
                m.name
            ))
            .detail("A schema change commits on every member with two-phase commit, so that it commits everywhere or nowhere.")
            .hint(format!("Set max_prepared_transactions = 10 on \"{}\" (and every node) and restart it (docs/migrations.md).", m.name)));
        }
        // The member's session ends (and its locks go) when this node is gone: while it runs a
        // statement (client_connection_check_interval), and while it waits for the next one
        // behind a cut link or after a crash here (TCP keepalives: about 11 s), however long a
        // live migration takes between two statements.
        r.exec(
            "SET client_connection_check_interval = '1s'; SET tcp_keepalives_idle = 5; \
             SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3",
        )?;
        r.exec(&format!(
            "BEGIN; SET LOCAL lock_timeout = '{}s'; SET LOCAL federation.ddl_origin = {}",
            gucs::ddl_timeout().as_secs(),
            quote_literal(&me)
        ))?;
        // The member checks the statement against the same role's privileges.
        r.exec(&format!("SET LOCAL ROLE {}", quote_ident(&role)))
            .map_err(|e| member_error(&m.name, table, e))?;
        r.exec("RESET ROLE")?;
        sessions.push(Session {
            name: m.name.clone(),
            remote: r,
            depth: 1,
            prepared: false,
            broken: false,
            in_flight: false,
        });
    }
    TXN.with(|t| {
        *t.borrow_mut() = Some(Txn {
            me,
            gid: String::new(),
            sessions,
            quiesced: vec![],
        })
    });
    Ok(())
}

/// Brings a member's transaction to this node's savepoint level.
fn sync_depth(s: &mut Session) -> FedResult<()> {
    let level = nest_level();
    while s.depth < level {
        s.depth += 1;
        s.remote
            .exec(&format!("SAVEPOINT pg_federation_{}", s.depth))?;
    }
    Ok(())
}

/// Before the statement runs anywhere: open the sessions and, at the transaction's first
/// change of the table, quiesce it (quiesce.rs) on every node. Every change quiesces, even
/// one that does not alter rows (CREATE INDEX, COMMENT): a later statement of the same
/// transaction may, and by then this transaction's own locks would keep this node's apply
/// workers from catching up.
pub fn before(table_oid: pg_sys::Oid, table: &str) -> FedResult<()> {
    open(table)?;
    let done = TXN.with(|t| {
        t.borrow()
            .as_ref()
            .is_some_and(|t| t.quiesced.iter().any(|(o, _)| *o == table_oid))
    });
    if done {
        // Its partitions are locked on every node since then: no row was written meanwhile.
        return Ok(());
    }
    TXN.with(|cell| {
        let mut guard = cell.borrow_mut();
        let txn = guard.as_mut().expect("opened above");
        let me = txn.me.clone();
        let mut marks = vec![];
        // In name order, this node among the members.
        let mut order: Vec<Option<usize>> = (0..txn.sessions.len()).map(Some).collect();
        let my_place = txn
            .sessions
            .iter()
            .position(|s| s.name > me)
            .unwrap_or(txn.sessions.len());
        order.insert(my_place, None);
        for slot in order {
            match slot {
                None => marks.push(Mark {
                    node: me.clone(),
                    lsn: with_lock_timeout(|| quiesce::here(table_oid))?,
                }),
                Some(i) => {
                    let s = &mut txn.sessions[i];
                    sync_depth(s)?;
                    let lsn = s
                        .remote
                        .call("ddl_quiesce_here", "$1", &[Some(table)])
                        .map_err(|e| lock_error(&s.name, table, e))?
                        .unwrap_or_default();
                    marks.push(Mark {
                        node: s.name.clone(),
                        lsn,
                    });
                }
            }
        }
        quiesce::wait_caught_up(table, &marks, |node, lsn| {
            if node == me {
                return quiesce::lagging(lsn);
            }
            let s = txn
                .sessions
                .iter_mut()
                .find(|s| s.name == node)
                .expect("a member's mark");
            let text = s
                .remote
                .call("ddl_lagging", "$1", &[Some(lsn)])?
                .unwrap_or_default();
            Ok(text
                .trim_matches(|c| c == '{' || c == '}')
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.trim_matches('"').to_string())
                .collect())
        })?;
        txn.quiesced.push((table_oid, nest_level()));
        Ok(())
    })
}

fn lock_error(name: &str, table: &str, e: FedError) -> FedError {
    if e.code == PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE {
        FedError::new(
            PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
            format!("cannot change {table}: its partition on member \"{name}\" stayed locked for federation.ddl_timeout"),
        )
        .detail("A long transaction writing the table there, or another schema change of the table, holds it. Nothing was changed on any node.")
        .hint("Run the change again when the other transaction has ended (pg_stat_activity on that member shows it); SET federation.ddl_timeout raises the wait.")
    } else {
        member_error(name, table, e)
    }
}

/// Runs `f` with lock_timeout = federation.ddl_timeout, restoring the caller's setting.
fn with_lock_timeout<T>(f: impl FnOnce() -> FedResult<T>) -> FedResult<T> {
    // SAFETY: a GUC nesting level, as a function's SET clause uses; popped below, or by
    // the transaction's abort.
    let level = unsafe { pg_sys::NewGUCNestLevel() };
    spi::exec_args(
        "SELECT pg_catalog.set_config('lock_timeout', $1, true)",
        &[format!("{}s", gucs::ddl_timeout().as_secs())
            .as_str()
            .into()],
    )?;
    let r = f();
    // SAFETY: pops the level pushed above.
    unsafe { pg_sys::AtEOXact_GUC(true, level) };
    r
}

/// This session's role and search_path, which a member runs the user's statements with.
struct Caller {
    role: String,
    search_path: String,
}

impl Caller {
    fn now() -> FedResult<Caller> {
        Ok(Caller {
            role: spi::one::<String>("SELECT current_user::text", &[])?.unwrap_or_default(),
            search_path: spi::one::<String>(
                "SELECT pg_catalog.current_setting('search_path')",
                &[],
            )?
            .unwrap_or_default(),
        })
    }

    /// Brings the member's session to this node's savepoint level, role and search_path.
    fn enter(&self, s: &mut Session, search_path: Option<&str>) -> FedResult<()> {
        sync_depth(s)?;
        s.remote.query(
            "SELECT pg_catalog.set_config('search_path', $1, true)",
            &[Some(search_path.unwrap_or(&self.search_path))],
        )?;
        s.remote
            .exec(&format!("SET LOCAL ROLE {}", quote_ident(&self.role)))
    }
}

/// Sends the statement to every member, which run it while this node does ([`receive`]
/// collects the outcome).
pub fn send(statement: &str) -> FedResult<()> {
    let caller = Caller::now()?;
    TXN.with(|cell| {
        let mut guard = cell.borrow_mut();
        let Some(txn) = guard.as_mut() else {
            return Ok(());
        };
        for s in txn.sessions.iter_mut() {
            caller.enter(s, None)?;
            s.remote.send(statement, &[])?;
            s.in_flight = true;
        }
        Ok(())
    })
}

/// Waits until every member ran the statement [`send`] sent; the first failure, naming its
/// member.
pub fn receive(table: &str) -> FedResult<()> {
    TXN.with(|cell| {
        let mut guard = cell.borrow_mut();
        let Some(txn) = guard.as_mut() else {
            return Ok(());
        };
        let mut first: Option<FedError> = None;
        for s in txn.sessions.iter_mut().filter(|s| s.in_flight) {
            s.in_flight = false;
            match s.remote.receive() {
                Ok(_) => {
                    if let Err(e) = s.remote.exec("RESET ROLE") {
                        first.get_or_insert(member_error(&s.name, table, e));
                    }
                }
                Err(e) => {
                    s.broken = true;
                    first.get_or_insert(member_error(&s.name, table, e));
                }
            }
        }
        first.map_or(Ok(()), Err)
    })
}

/// Runs `func` (an internal pg_federation function taking the table's name) on every member
/// in this transaction, as the superuser of the session.
pub fn call_everywhere(func: &str, table: &str) -> FedResult<()> {
    TXN.with(|cell| {
        let mut guard = cell.borrow_mut();
        let Some(txn) = guard.as_mut() else {
            return Ok(());
        };
        for s in txn.sessions.iter_mut() {
            sync_depth(s)?;
            if let Err(e) = s.remote.call(func, "$1", &[Some(table)]) {
                s.broken = true;
                return Err(member_error(&s.name, table, e));
            }
        }
        Ok(())
    })
}

/// Runs `statements` (each with its search_path) on member `member` in this transaction, as
/// the caller's role: a table created in this transaction, for enable() on a running
/// federation.
pub fn replay_on(member: &str, table: &str, statements: &[(String, String)]) -> FedResult<()> {
    open(table)?;
    let caller = Caller::now()?;
    TXN.with(|cell| {
        let mut guard = cell.borrow_mut();
        let txn = guard.as_mut().expect("opened above");
        let Some(s) = txn.sessions.iter_mut().find(|s| s.name == member) else {
            return Err(FedError::internal(format!(
                "no session to member \"{member}\""
            )));
        };
        for (statement, search_path) in statements {
            caller.enter(s, Some(search_path))?;
            if let Err(e) = s.remote.exec(statement) {
                s.broken = true;
                return Err(member_error(member, table, e));
            }
        }
        s.remote.exec("RESET ROLE")?;
        Ok(())
    })
}

fn take() -> Option<Txn> {
    TXN.with(|t| t.borrow_mut().take())
}

/// COMMIT, before this node commits: every member prepares; if one cannot, the others roll
/// back and so does this node.
fn prepare_all() -> FedResult<()> {
    let gid = TXN.with(|cell| {
        let mut guard = cell.borrow_mut();
        let txn = guard.as_mut()?;
        // SAFETY: the transaction has an id (it changed a table).
        let xid = unsafe { pg_sys::GetTopFullTransactionId() }.value;
        txn.gid = format!("{GID_PREFIX}{}:{xid}", txn.me);
        Some(txn.gid.clone())
    });
    let Some(gid) = gid else { return Ok(()) };
    let failure = TXN.with(|cell| {
        let mut guard = cell.borrow_mut();
        let txn = guard.as_mut()?;
        for s in txn.sessions.iter_mut() {
            if s.broken || s.in_flight {
                return Some((
                    s.name.clone(),
                    FedError::prerequisite(
                        "its part of the change failed earlier in this transaction",
                    ),
                ));
            }
            if let Err(e) = s
                .remote
                .exec(&format!("PREPARE TRANSACTION {}", quote_literal(&gid)))
            {
                return Some((s.name.clone(), e));
            }
            // PREPARE of a transaction that failed there rolls it back without an error.
            match s.remote.count(
                "SELECT count(*) FROM pg_catalog.pg_prepared_xacts WHERE gid = $1",
                &[Some(&gid)],
            ) {
                Ok(1) => s.prepared = true,
                Ok(_) => {
                    return Some((
                        s.name.clone(),
                        FedError::prerequisite("it rolled its part back instead of preparing it"),
                    ))
                }
                Err(e) => return Some((s.name.clone(), e)),
            }
        }
        None
    });
    if let Some((name, e)) = failure {
        if let Some(txn) = take() {
            rollback_all(txn);
        }
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            format!(
                "could not commit the schema change on member \"{name}\": {}",
                e.message
            ),
        )
        .detail("No node has the change: it was rolled back everywhere.")
        .hint(format!(
            "Bring \"{name}\" back (federation.status() shows it), then run the change again."
        )));
    }
    Ok(())
}

fn commit_all(mut txn: Txn) {
    for s in txn.sessions.iter_mut() {
        if !s.prepared {
            continue;
        }
        if let Err(e) = s
            .remote
            .exec(&format!("COMMIT PREPARED {}", quote_literal(&txn.gid)))
        {
            pgrx::warning!(
                "the schema change is committed here; member \"{}\" holds it prepared and its pg_federation worker will commit it: {}",
                s.name,
                e.message
            );
        }
    }
}

fn rollback_all(mut txn: Txn) {
    // A member still running a statement rolls back when its session closes (dropped here).
    for s in txn.sessions.iter_mut().filter(|s| !s.in_flight) {
        let sql = if s.prepared {
            format!("ROLLBACK PREPARED {}", quote_literal(&txn.gid))
        } else {
            "ROLLBACK".to_string()
        };
        if let Err(e) = s.remote.exec(&sql) {
            if s.prepared {
                pgrx::warning!(
                    "member \"{}\" holds the rolled-back schema change prepared; its pg_federation worker will roll it back: {}",
                    s.name,
                    e.message
                );
            }
        }
    }
}

#[pg_guard]
#[allow(non_upper_case_globals)]
unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_COMMIT | XACT_EVENT_ABORT | XACT_EVENT_PREPARE
    ) {
        super::created::forget_all();
    }
    if TXN.with(|t| t.borrow().is_none()) {
        return;
    }
    match event {
        XACT_EVENT_PRE_COMMIT => {
            if let Err(e) = prepare_all() {
                e.raise();
            }
        }
        XACT_EVENT_PRE_PREPARE => {
            if let Some(txn) = take() {
                rollback_all(txn);
            }
            FedError::new(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "cannot PREPARE a transaction that changed the schema of a federated table",
            )
            .hint("Commit it with COMMIT: the change is made on every member with pg_federation's own two-phase commit.")
            .raise();
        }
        XACT_EVENT_COMMIT => {
            if let Some(txn) = take() {
                commit_all(txn);
            }
        }
        XACT_EVENT_ABORT => {
            if let Some(txn) = take() {
                rollback_all(txn);
            }
        }
        _ => {}
    }
}

#[pg_guard]
#[allow(non_upper_case_globals)]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    let level = nest_level();
    match event {
        SUBXACT_EVENT_COMMIT_SUB => super::created::savepoint_released(level),
        SUBXACT_EVENT_ABORT_SUB => super::created::savepoint_rolled_back(level),
        _ => {}
    }
    let failed = TXN.with(|cell| {
        let mut guard = cell.borrow_mut();
        let txn = guard.as_mut()?;
        match event {
            SUBXACT_EVENT_PRE_COMMIT_SUB => {
                for s in txn.sessions.iter_mut().filter(|s| s.depth >= level) {
                    if let Err(e) = s.remote.exec(&format!("RELEASE SAVEPOINT pg_federation_{level}")) {
                        return Some(member_error(&s.name, "the table", e));
                    }
                    s.depth = level - 1;
                }
                for q in txn.quiesced.iter_mut().filter(|q| q.1 >= level) {
                    q.1 = level - 1;
                }
            }
            SUBXACT_EVENT_ABORT_SUB => {
                for s in txn.sessions.iter_mut().filter(|s| s.depth >= level) {
                    if s.in_flight {
                        // This node failed while the member ran the statement: let it finish.
                        let _ = s.remote.receive();
                        s.in_flight = false;
                    }
                    let r = s.remote.exec(&format!(
                        "ROLLBACK TO SAVEPOINT pg_federation_{level}; RELEASE SAVEPOINT pg_federation_{level}"
                    ));
                    // Rolled back to before the failed statement, the session is usable again.
                    s.broken = r.is_err();
                    s.depth = level - 1;
                }
                txn.quiesced.retain(|q| q.1 < level);
            }
            _ => {}
        }
        None
    });
    if let Some(e) = failed {
        e.raise();
    }
}

/// Whether this transaction's change of the table can still commit everywhere.
pub fn check_usable() -> FedResult<()> {
    TXN.with(|cell| {
        if let Some(txn) = cell.borrow().as_ref() {
            if let Some(s) = txn.sessions.iter().find(|s| s.broken) {
                return Err(FedError::prerequisite(format!(
                    "the schema change cannot continue: the session to member \"{}\" failed earlier in this transaction",
                    s.name
                ))
                .hint("ROLLBACK and run the migration again."));
            }
        }
        Ok(())
    })
}
