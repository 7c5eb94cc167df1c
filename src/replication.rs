//! PostgreSQL's logical replication, as pg_federation drives it over libpq: slots made
//! before their subscriptions, subscriptions created in one transaction, their table-sync
//! state, dropping a subscription without its slot, and how far a subscriber has got (the
//! WAL nudge an idle publisher needs, waiting for a confirmed position).
//!
//! Every function takes the connection to the server it acts on: the join steps, resync()
//! verify() and disable() on a federation all use these.

use crate::errors::FedResult;
use crate::naming::publication_name;
use crate::remote::Remote;
use crate::spi::{quote_ident, quote_literal};
use crate::wait::nap;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub fn subscription_exists(r: &mut Remote, name: &str) -> FedResult<bool> {
    Ok(r.count(
        "SELECT count(*) FROM pg_catalog.pg_subscription WHERE subname = $1",
        &[Some(name)],
    )? == 1)
}

/// Tables of a subscription not yet ready; None when the subscription does not exist.
pub fn pending_tables(r: &mut Remote, name: &str) -> FedResult<Option<i64>> {
    Ok(sync_state(r, name)?.map(|s| s.pending))
}

/// Where the tables of a subscription stand.
pub struct SyncState {
    /// Not yet ready ('r').
    pub pending: i64,
    /// Of those, copied and waiting for the apply worker ('s', SYNCDONE).
    pub syncdone: i64,
    /// Of those, still in their initial copy ('i', 'd'). From 'f' (PostgreSQL 15 on) or 's'
    /// the copy is committed: what is left is its catching up and the apply worker marking
    /// it ready.
    pub copying: i64,
    /// Of those still in their initial copy, the ones a table-sync worker copies right now:
    /// its transaction stays open until the copy commits, and a logical slot made on the
    /// subscriber meanwhile waits for it (and would then decode the copy's rows). A table
    /// whose publisher is down waits in 'i' or 'd' with no worker.
    pub copying_now: i64,
}

/// The tables of subscription `$1`, or of every pg_federation subscription when `$1` is
/// NULL, one row per subscription: its name, then the fields of [`SyncState`].
const SYNC_STATES: &str = "SELECT s.subname::text,
        count(sr.srrelid) FILTER (WHERE sr.srsubstate <> 'r'),
        count(sr.srrelid) FILTER (WHERE sr.srsubstate = 's'),
        count(sr.srrelid) FILTER (WHERE sr.srsubstate IN ('i', 'd')),
        count(w.pid) FILTER (WHERE sr.srsubstate IN ('i', 'd'))
     FROM pg_catalog.pg_subscription s
     LEFT JOIN pg_catalog.pg_subscription_rel sr ON sr.srsubid = s.oid
     LEFT JOIN pg_catalog.pg_stat_subscription w
            ON w.subid = s.oid AND w.relid = sr.srrelid AND w.pid IS NOT NULL
     WHERE s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
       AND (s.subname = $1 OR ($1 IS NULL AND s.subname LIKE 'federation\\_%'))
     GROUP BY s.subname";

fn sync_states_of(r: &mut Remote, name: Option<&str>) -> FedResult<HashMap<String, SyncState>> {
    let rows = r.query(SYNC_STATES, &[name])?;
    let n = |row: &[Option<String>], i: usize| {
        row[i].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    Ok(rows
        .iter()
        .filter_map(|row| {
            let state = SyncState {
                pending: n(row, 1),
                syncdone: n(row, 2),
                copying: n(row, 3),
                copying_now: n(row, 4),
            };
            Some((row[0].clone()?, state))
        })
        .collect())
}

/// The state of subscription `name`'s tables, or None when it does not exist.
pub fn sync_state(r: &mut Remote, name: &str) -> FedResult<Option<SyncState>> {
    Ok(sync_states_of(r, Some(name))?.remove(name))
}

/// The state of the tables of every pg_federation subscription on the server behind `r`
/// (every subscription into it), by subscription name: one query.
pub fn sync_states(r: &mut Remote) -> FedResult<HashMap<String, SyncState>> {
    sync_states_of(r, None)
}

impl SyncState {
    /// A table whose copy is done ('s', SYNCDONE) becomes ready only when the apply worker
    /// has received WAL past the copy's end; on an idle publisher that can take a while (the
    /// walsender sends nothing until there is WAL or a keepalive is due), so while a copy is
    /// done its publisher gets a WAL nudge ([`nudge`]).
    pub fn nudge_if_done(&self, publisher: &mut Remote) -> FedResult<()> {
        if self.syncdone > 0 {
            nudge(publisher)?;
        }
        Ok(())
    }
}

/// The state of subscription `name`'s tables (on `subscriber`), None when it does not
/// exist; a copy that is done gets its publisher nudged ([`SyncState::nudge_if_done`]).
pub fn copy_state(
    subscriber: &mut Remote,
    publisher: &mut Remote,
    name: &str,
) -> FedResult<Option<SyncState>> {
    let state = sync_state(subscriber, name)?;
    if let Some(s) = &state {
        s.nudge_if_done(publisher)?;
    }
    Ok(state)
}

/// Tables of subscription `name` (on `subscriber`) not yet ready, None when it does not
/// exist; nudges the publisher as [`copy_state`] does.
pub fn copies_pending(
    subscriber: &mut Remote,
    publisher: &mut Remote,
    name: &str,
) -> FedResult<Option<i64>> {
    Ok(copy_state(subscriber, publisher, name)?.map(|s| s.pending))
}

/// Runs `sql`, whose only parameter is a slot name, for its effect.
fn on_slot(on: &mut Remote, sql: &str, slot: &str) -> FedResult<()> {
    on.query(sql, &[Some(slot)]).map(|_| ())
}

/// Makes sure the slot `slot` exists on the publisher behind `publisher_conn` for a
/// subscription that does not exist yet: a slot left behind by an earlier failed attempt is
/// dropped (when inactive) and made anew. Plain SQL over an autocommit connection: slot
/// creation waits only for the publisher's running transactions, none of which waits for us.
pub fn fresh_slot(publisher_conn: &mut Remote, slot: &str) -> FedResult<()> {
    on_slot(publisher_conn, "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND NOT active", slot)?;
    let create = if failover_slots(publisher_conn)? {
        "SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
    } else {
        "SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')"
    };
    on_slot(publisher_conn, create, slot)
}

/// From PostgreSQL 17 a logical slot can follow its server's failover: made with
/// `failover = true`, it is copied to the server's physical standbys that run with
/// `sync_replication_slots = on` (and `hot_standby_feedback`, `primary_slot_name`), so that
/// a standby promoted in the node's place has the slots its members stream from, and the
/// members carry on with no repair. Only safe where the node also has
/// `synchronized_standby_slots` naming that standby's slot (no member then receives a change
/// before the standby has it; without it a member can be ahead of the promoted standby, and
/// its subscription would skip the new primary's first changes): so only where the node's DBA
/// says so, `federation.failover_slots = on` (docs/runbook.md, section 13). Otherwise a
/// failover makes every member repair its copy of the node (by difference, ops::diff).
pub const FAILOVER_SLOTS_FROM: i32 = 170000;

/// Whether slots made on the server behind `publisher_conn` are failover slots: PostgreSQL
/// [`FAILOVER_SLOTS_FROM`] and `federation.failover_slots` on there.
pub fn failover_slots(publisher_conn: &mut Remote) -> FedResult<bool> {
    if server_version_num(publisher_conn)? < FAILOVER_SLOTS_FROM {
        return Ok(false);
    }
    Ok(publisher_conn
        .scalar(
            "SELECT pg_catalog.current_setting('federation.failover_slots', true)",
            &[],
        )?
        .as_deref()
        == Some("on"))
}

/// The statements that empty a node's copies of an owner's partitions before they are copied
/// afresh (rows kept from an earlier membership would collide with the initial copy). What
/// they held is kept first, whole and as it is, in a table of its own in schema federation
/// (a CREATE TABLE AS: about as fast as reading the copy), registered in
/// federation.kept_copy, where that node's pg_federation has it. Once the fresh copy is
/// complete the worker moves the kept rows it does not hold as they are into
/// federation.set_aside and drops the rest with the table (table::set_aside): a repair never
/// deletes a row that a copy held. Run in replica mode: guards are ordinary triggers, which
/// it passes.
pub fn empty_copies_sql(copies: &[String], keep: bool) -> String {
    if copies.is_empty() {
        return String::new();
    }
    let mut sql = String::new();
    if keep {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        for (i, c) in copies.iter().enumerate() {
            let kept = format!("federation.{}", quote_ident(&format!("kept_{stamp}_{i}")));
            // Only a copy that holds rows is kept (a new node's copies are empty).
            let comment = quote_literal(&format!(
                "pg_federation: what {c} held when join() or resync() emptied it to copy it afresh; compared with the fresh copy once it is complete, then dropped (what differs goes to federation.set_aside)"
            ));
            let keep_one = [
                format!("CREATE TABLE {kept} AS SELECT * FROM ONLY {c}"),
                format!("REVOKE ALL ON {kept} FROM PUBLIC"),
                format!("COMMENT ON TABLE {kept} IS {comment}"),
                format!(
                    "INSERT INTO federation.kept_copy (kept, relid, node, copy)
                     SELECT {}::regclass, p.relid, p.node_name, p.partition
                     FROM federation.partition p WHERE p.partition = {}::regclass",
                    quote_literal(&kept),
                    quote_literal(c)
                ),
            ]
            .iter()
            .map(|stmt| format!("EXECUTE {};", quote_literal(stmt)))
            .collect::<Vec<_>>()
            .join(" ");
            sql.push_str(&format!(
                "DO $pg_federation$ BEGIN IF EXISTS (SELECT 1 FROM ONLY {c}) THEN {keep_one} END IF; END $pg_federation$;\n"
            ));
        }
    }
    sql.push_str(&format!("TRUNCATE {};\n", copies.join(", ")));
    sql
}

/// Whether the pg_federation of the node behind `on` keeps emptied copies (0.5.0 on; during a
/// rolling upgrade its SQL objects may be older than this library).
pub fn keeps_copies(on: &mut Remote) -> FedResult<bool> {
    Ok(on
        .scalar(
            "SELECT (pg_catalog.to_regclass('federation.kept_copy') IS NOT NULL)::text",
            &[],
        )?
        .as_deref()
        == Some("true"))
}

/// Creates subscription `sub` (on the node behind `on`) to `publisher`'s publication, on the
/// slot of the same name made beforehand: CREATE SUBSCRIPTION then waits for nothing remote.
/// `streaming = on`: a transaction larger than the publisher's logical_decoding_work_mem is
/// sent while it runs instead of being spilled to disk there and sent after its commit.
/// `origin = none` where the subscriber has it (PostgreSQL 16+, `origin_none`): see
/// [`ORIGIN_NONE_FROM`].
/// `copy_data`: whether the subscription copies the publisher's partitions first (false: the
/// copies already equal the slot's starting point, [`subscribe_from_snapshot`]).
fn create_subscription_sql(
    sub: &str,
    publisher: &str,
    publisher_conninfo: &str,
    origin_none: bool,
    copy_data: bool,
) -> String {
    format!(
        "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (create_slot = false, slot_name = {}, copy_data = {copy_data}, streaming = on{});\n",
        quote_ident(sub),
        quote_literal(publisher_conninfo),
        quote_ident(&publication_name(publisher)),
        quote_literal(sub),
        if origin_none { ", origin = none" } else { "" }
    )
}

/// A slot made anew over a replication connection, with the snapshot it starts from exported
/// (`CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')`): a transaction that imports
/// `snapshot` sees exactly the rows whose changes the slot will not send. The snapshot lives
/// while `conn` stays open and idle: import it before dropping this.
pub struct SnapshotSlot {
    pub lsn: String,
    pub snapshot: String,
    /// Kept open, idle, for the snapshot's sake.
    _conn: Remote,
}

/// Makes slot `slot` (dropped first if it exists, inactive) on the publisher at `conninfo`,
/// exporting its starting snapshot ([`SnapshotSlot`]).
pub fn slot_with_snapshot(
    publisher_conn: &mut Remote,
    conninfo: &str,
    what: &str,
    slot: &str,
) -> FedResult<SnapshotSlot> {
    on_slot(publisher_conn, "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND NOT active", slot)?;
    let failover = if failover_slots(publisher_conn)? {
        ", FAILOVER true"
    } else {
        ""
    };
    let mut conn = Remote::connect_replication(conninfo, what)?;
    let rows = conn.query(
        &format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export'{failover})",
            quote_ident(slot)
        ),
        &[],
    )?;
    let row = rows.into_iter().next().unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    Ok(SnapshotSlot {
        lsn: get(1),
        snapshot: get(2),
        _conn: conn,
    })
}

/// Creates subscription `sub` on the node behind `on` on its slot made by
/// [`slot_with_snapshot`], without an initial copy: the subscriber's copies were made equal to
/// the slot's snapshot beforehand (ops::diff).
pub fn subscribe_from_snapshot(
    on: &mut Remote,
    sub: &str,
    publisher: &str,
    publisher_conninfo: &str,
) -> FedResult<()> {
    let origin_none = server_version_num(on)? >= ORIGIN_NONE_FROM;
    on.exec(&create_subscription_sql(
        sub,
        publisher,
        publisher_conninfo,
        origin_none,
        false,
    ))
}

/// Whether the apply worker of subscription `sub` runs on the server behind `on`.
pub fn apply_worker_running(on: &mut Remote, sub: &str) -> FedResult<bool> {
    Ok(on.count(
        "SELECT count(*) FROM pg_catalog.pg_stat_subscription w JOIN pg_catalog.pg_subscription s ON s.oid = w.subid
         WHERE s.subname = $1 AND w.relid IS NULL AND w.pid IS NOT NULL",
        &[Some(sub)],
    )? > 0)
}

/// The walsender serving slot `$1` as `w` (its `pg_stat_get_wal_senders()` row: state,
/// sent/replay positions), the slot as `s`. Read live: `pg_stat_replication` joins
/// `pg_stat_get_activity()`, which keeps the server's backends as a transaction first saw them,
/// so a walsender started since (a member's apply worker reconnected) would not be there.
pub const SLOT_WALSENDER: &str = "FROM pg_catalog.pg_replication_slots s
     JOIN pg_catalog.pg_stat_get_wal_senders() w ON w.pid = s.active_pid
     WHERE s.slot_name = $1";

/// Whether the subscription on slot `slot` streams from the publisher behind `publisher`: the
/// slot's walsender runs and has had the apply worker's first reply. A subscription without an
/// initial copy has its tables ready before its worker even started; a member is marked ready
/// only once its subscriptions stream both ways, as after a copy (which the worker finishes).
pub fn streaming(publisher: &mut Remote, slot: &str) -> FedResult<bool> {
    Ok(publisher.count(
        &format!("SELECT count(*) {SLOT_WALSENDER} AND w.replay_lsn IS NOT NULL"),
        &[Some(slot)],
    )? > 0)
}

/// After subscription `sub` was made on the server behind `on` (a member, over a
/// connection, or this node through its own address): PostgreSQL 15's launcher starts apply
/// workers at most once per `wal_retrieve_retry_interval` (5 s by default) across the
/// server, and after a failover it has just restarted the old subscription's worker, failing
/// against the dead server, so the new worker would wait up to that interval. When it has not
/// started within [`LAUNCHER_GRACE`], that server is asked to start it
/// (`federation_internal.start_apply_worker`, 0.11.0 on; an older member's launcher starts it
/// in its own time). Then waits up to `wait` for the worker to run. Whether the server started
/// it on request. PostgreSQL 16 throttles each subscription by itself: nothing is asked there.
pub fn hasten_apply_worker(on: &mut Remote, sub: &str, wait: Duration) -> FedResult<bool> {
    let since = Instant::now();
    let mut asked = server_version_num(on)? >= PER_SUBSCRIPTION_THROTTLE_FROM;
    let mut started = false;
    while !apply_worker_running(on, sub)? {
        if !asked && since.elapsed() >= LAUNCHER_GRACE {
            asked = true;
            // Asked apart: a call in the same statement would fail to parse where the
            // function does not exist.
            let there = on.scalar(
                "SELECT (pg_catalog.to_regprocedure('federation_internal.start_apply_worker(text)') IS NOT NULL)::text",
                &[],
            )?;
            started = there.as_deref() == Some("true")
                && on
                    .scalar(
                        "SELECT federation_internal.start_apply_worker($1)::text",
                        &[Some(sub)],
                    )?
                    .as_deref()
                    == Some("true");
        } else if asked && since.elapsed() >= wait {
            break;
        }
        nap(10);
    }
    Ok(started)
}

/// `federation_internal.start_apply_worker(sub)` on this server: starts the apply worker of
/// the enabled subscription `sub` unless one runs (PostgreSQL 15; nothing on 16+); whether it
/// did.
pub fn start_apply_worker_here(sub: &str) -> FedResult<bool> {
    let ids = crate::spi::rows(
        "SELECT s.oid, s.subowner, s.subdbid FROM pg_catalog.pg_subscription s
         WHERE s.subname = $1 AND s.subenabled",
        &[sub.into()],
        |r| {
            Ok((
                r.get::<pgrx::pg_sys::Oid>(1)?,
                r.get::<pgrx::pg_sys::Oid>(2)?,
                r.get::<pgrx::pg_sys::Oid>(3)?,
            ))
        },
    )?;
    let Some((Some(subid), Some(owner), Some(db))) = ids.into_iter().next() else {
        return Ok(false);
    };
    #[cfg(feature = "pg15")]
    return Ok(pg15::launch(subid, owner, db, sub));
    #[cfg(not(feature = "pg15"))]
    {
        let _ = (subid, owner, db);
        Ok(false)
    }
}

/// From PostgreSQL 16 the launcher throttles each subscription's worker starts by itself.
const PER_SUBSCRIPTION_THROTTLE_FROM: i32 = 160000;

/// How long a new subscription's apply worker is left to the launcher before
/// [`hasten_apply_worker`] has it started: an unthrottled launcher, woken by CREATE
/// SUBSCRIPTION's commit, starts it within milliseconds. (Should both start one, the later
/// finds the worker's slot taken under PostgreSQL's lock and starts none, or, in the
/// microseconds between the launcher's look and its start, its worker finds the replication
/// origin taken and exits.)
const LAUNCHER_GRACE: Duration = Duration::from_millis(20);

#[cfg(feature = "pg15")]
mod pg15 {
    use pgrx::pg_sys;
    use std::ffi::{c_char, c_void, CString};

    // PostgreSQL 15's src/include/replication/worker_internal.h (not in pgrx's bindings);
    // called through pg_guard_ffi_boundary, which turns their errors into PostgreSQL's.
    unsafe extern "C-unwind" {
        fn logicalrep_worker_launch(
            dbid: pg_sys::Oid,
            subid: pg_sys::Oid,
            subname: *const c_char,
            userid: pg_sys::Oid,
            relid: pg_sys::Oid,
        );
        fn logicalrep_worker_find(
            subid: pg_sys::Oid,
            relid: pg_sys::Oid,
            only_running: bool,
        ) -> *mut c_void;
    }

    /// PostgreSQL 15's `LogicalRepWorkerLock` (storage/lwlocknames.h: MainLWLockArray[43]).
    const LOGICAL_REP_WORKER_LOCK: usize = 43;

    /// Starts subscription `subid`'s apply worker unless one is there; whether it did.
    pub(super) fn launch(
        subid: pg_sys::Oid,
        owner: pg_sys::Oid,
        db: pg_sys::Oid,
        name: &str,
    ) -> bool {
        // SAFETY: read-only access to this backend's database id.
        if db != unsafe { pg_sys::MyDatabaseId } {
            return false;
        }
        let Ok(name) = CString::new(name) else {
            return false;
        };
        // SAFETY: as the launcher does (launcher.c, ApplyLauncherMain): the worker array is
        // read under LogicalRepWorkerLock, then logicalrep_worker_launch takes the lock
        // itself, registers the worker and waits for it to attach; errors are raised as
        // PostgreSQL errors through pg_guard.
        unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                let lock = &raw mut (*pg_sys::MainLWLockArray.add(LOGICAL_REP_WORKER_LOCK)).lock;
                pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_SHARED);
                let running = !logicalrep_worker_find(subid, pg_sys::InvalidOid, false).is_null();
                pg_sys::LWLockRelease(lock);
                if !running {
                    logicalrep_worker_launch(db, subid, name.as_ptr(), owner, pg_sys::InvalidOid);
                }
                !running
            })
        }
    }
}

/// From PostgreSQL 16 a subscription can ask for changes made on the publisher itself only
/// (`origin = none`). A node publishes only its own partitions, which only its own sessions
/// write, so the rows it receives are never wanted back; but without the option every
/// walsender of a node decodes every row the node applied from every other member, in full,
/// before pgoutput drops it as unpublished: per node, decoding grows with the number of
/// members times the whole federation's write rate. With it, the walsender skips those
/// changes as it reads them (the output plugin's origin filter, called before a change is
/// decoded into the reorder buffer). docs/scaling.md has the measurements. The publisher
/// honours it from 16 as well; an older publisher is not sent the option.
pub const ORIGIN_NONE_FROM: i32 = 160000;

/// The server version of the node behind `on` (`server_version_num`).
pub fn server_version_num(on: &mut Remote) -> FedResult<i32> {
    Ok(on
        .scalar(
            "SELECT pg_catalog.current_setting('server_version_num')",
            &[],
        )?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// A subscription to create: its name (also its slot's, made beforehand on the publisher),
/// the publisher's node name and address, and the subscriber's copies of the publisher's
/// partitions, emptied first (rows kept from an earlier membership would collide with the
/// initial copy). `copy_data`: false only where the publisher was seen to publish no rows
/// after the slot was made ([`publishes_no_rows`]).
pub struct NewSubscription {
    pub name: String,
    pub publisher: String,
    pub publisher_conninfo: String,
    pub copies: Vec<String>,
    pub copy_data: bool,
}

/// Whether `publisher`'s publication on the server behind `on` holds no row at all, asked
/// right after the slot of a new subscription to it was made there. A logical slot is made
/// only once every transaction running before it has ended, and it sends every change
/// committed after its starting point; every row committed before that point is visible
/// to a statement that starts after the slot was made (or was deleted since, and that deletion
/// is in the slot's stream). So when the tables are empty now, an initial copy would copy
/// nothing, and the subscription may skip it: its tables are ready as it is made, instead
/// of after a table sync each (a worker started, an empty COPY, the hand-over to the apply
/// worker; most of a join's time between empty servers). Any doubt answers false, and the
/// copy is made: an error, a table this role may not read, or row security that would hide
/// rows (`row_security = off` makes such a query fail rather than filter).
pub fn publishes_no_rows(on: &mut Remote, publisher: &str) -> bool {
    let empty = |on: &mut Remote| -> FedResult<bool> {
        let tables = on.column(
            "SELECT pg_catalog.format('%I.%I', schemaname, tablename) FROM pg_catalog.pg_publication_tables WHERE pubname = $1",
            &[Some(&publication_name(publisher))],
        )?;
        on.exec("SET row_security = off")?;
        for t in &tables {
            let any = on.scalar(&format!("SELECT EXISTS (SELECT FROM ONLY {t})::text"), &[])?;
            if any.as_deref() != Some("false") {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let answer = empty(on).unwrap_or(false);
    // The connection goes on serving the join; an error above may have left the setting.
    let _ = on.exec("RESET row_security");
    answer
}

/// Empties the copies and creates the subscriptions, in one transaction on the node behind
/// `on` (a multi-statement query is one implicit transaction; CREATE SUBSCRIPTION without
/// create_slot may run in one). One commit, so PostgreSQL 15's launcher, which starts apply
/// workers at most once per wal_retrieve_retry_interval, starts them all at once.
pub fn create_subscriptions(on: &mut Remote, subs: &[NewSubscription]) -> FedResult<()> {
    let keep = keeps_copies(on)?;
    let origin_none = server_version_num(on)? >= ORIGIN_NONE_FROM;
    let mut sql = String::from("SET session_replication_role = replica;\n");
    for s in subs {
        sql.push_str(&empty_copies_sql(&s.copies, keep));
        sql.push_str(&create_subscription_sql(
            &s.name,
            &s.publisher,
            &s.publisher_conninfo,
            origin_none,
            s.copy_data,
        ));
    }
    sql.push_str("RESET session_replication_role;");
    on.exec(&sql)
}

/// Drops subscription `sub` on the node behind `on` without touching its slot on the
/// publisher (which may be unreachable, or whose slot is to be made anew): disable, detach
/// from the slot, drop. No-op when it does not exist.
pub fn drop_subscription_keep_slot(on: &mut Remote, sub: &str) -> FedResult<()> {
    if !subscription_exists(on, sub)? {
        return Ok(());
    }
    let s = quote_ident(sub);
    on.exec(&format!("ALTER SUBSCRIPTION {s} DISABLE"))?;
    on.exec(&format!("ALTER SUBSCRIPTION {s} SET (slot_name = NONE)"))?;
    on.exec(&format!("DROP SUBSCRIPTION {s}"))
}

/// pg_federation's subscriptions on the server behind `on`.
pub fn federation_subscriptions(on: &mut Remote) -> FedResult<Vec<String>> {
    on.column(
        "SELECT subname::text FROM pg_catalog.pg_subscription WHERE subname LIKE 'federation\\_%'",
        &[],
    )
}

/// Makes subscription `sub` pick up the tables its publication has gained (with their rows).
pub fn refresh_subscription(on: &mut Remote, sub: &str) -> FedResult<()> {
    on.exec(&format!(
        "ALTER SUBSCRIPTION {} REFRESH PUBLICATION",
        quote_ident(sub)
    ))
}

/// Drops subscription `sub` with its slot on the publisher (which must be reachable).
/// No-op when it does not exist.
pub fn drop_subscription(on: &mut Remote, sub: &str) -> FedResult<()> {
    on.exec(&format!("DROP SUBSCRIPTION IF EXISTS {}", quote_ident(sub)))
}

/// Drops every inactive slot on the server behind `on` whose name starts with `prefix`.
pub fn drop_idle_slots_with_prefix(on: &mut Remote, prefix: &str) -> FedResult<()> {
    on.query(
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots
         WHERE pg_catalog.starts_with(slot_name::text, $1) AND NOT active",
        &[Some(prefix)],
    )?;
    Ok(())
}

/// Drops the replication slot `slot` on the server behind `on`, ending the walsender that
/// holds it first. No-op when it does not exist.
pub fn drop_slot(on: &mut Remote, slot: &str) -> FedResult<()> {
    on_slot(on, "SELECT pg_catalog.pg_terminate_backend(active_pid) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND active", slot)?;
    on_slot(on, "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", slot)
}

/// The state of slot `slot` on the server behind `on`: None when it does not exist, else its
/// wal_status (Some(None) before PostgreSQL knows it).
pub fn slot_wal_status(on: &mut Remote, slot: &str) -> FedResult<Option<Option<String>>> {
    let rows = on.query(
        "SELECT wal_status FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        &[Some(slot)],
    )?;
    Ok(rows
        .into_iter()
        .next()
        .map(|r| r.into_iter().next().flatten()))
}

/// How many workers (apply and table-sync) subscription `sub` has running.
pub fn subscription_workers(on: &mut Remote, sub: &str) -> FedResult<i64> {
    on.count(
        "SELECT count(*) FROM pg_catalog.pg_stat_subscription w JOIN pg_catalog.pg_subscription s ON s.oid = w.subid
         WHERE s.subname = $1 AND w.pid IS NOT NULL",
        &[Some(sub)],
    )
}

/// Whether a walsender still holds slot `slot`.
pub fn slot_active(on: &mut Remote, slot: &str) -> FedResult<bool> {
    Ok(on.count(
        "SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND active",
        &[Some(slot)],
    )? > 0)
}

/// Writes one WAL record on the publisher: a transactional logical message (its commit
/// flushes the WAL; PostgreSQL 15 does not flush a non-transactional one). The walsenders
/// read it, skip it, and answer with a keepalive carrying their position, so an idle
/// subscriber confirms where it is, and marks a finished table copy ready, at once instead
/// of at its next wakeup.
pub fn nudge(publisher: &mut Remote) -> FedResult<()> {
    publisher.query(
        "SELECT pg_catalog.pg_logical_emit_message(true, 'pg_federation', 'progress')",
        &[],
    )?;
    Ok(())
}

/// Waits, until `deadline`, for the subscriber that uses `slot` on `publisher` to confirm
/// `lsn`, nudging the publisher. Some(true): confirmed; Some(false): not by the deadline (an
/// invalidated slot never confirms); None: there is no such slot.
pub fn wait_confirmed(
    publisher: &mut Remote,
    slot: &str,
    lsn: &str,
    deadline: Instant,
) -> FedResult<Option<bool>> {
    loop {
        let done = publisher.query(
            "SELECT confirmed_flush_lsn >= $2::pg_lsn AND wal_status IS DISTINCT FROM 'lost'
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[Some(slot), Some(lsn)],
        )?;
        match done.first().map(|r| r[0].as_deref() == Some("t")) {
            None => return Ok(None),
            Some(true) => return Ok(Some(true)),
            Some(false) if Instant::now() >= deadline => return Ok(Some(false)),
            Some(false) => {}
        }
        nudge(publisher)?;
        nap(100);
    }
}
