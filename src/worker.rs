//! pg_federation's background worker: finishes what join() recorded, after COMMIT.
//!
//! One worker per server (started through shared_preload_libraries), connected to the
//! database named by `federation.database`. Every pass it takes each member still `joining`
//! that this node wires (it called join(); the members it joined leave the pair to it) and,
//! idempotently: registers this node with that member (federation.add_member there:
//! catalog row and partitions for this node), creates this node's subscription to the
//! member's publication, then (once every copy into this node is done) the member's
//! subscription to this node's publication, and once every table of both subscriptions has
//! finished its initial copy, marks the member ready on both sides. A failed step is recorded in federation.node (last_error, attempts)
//! and retried on the next pass; a restart of either server only delays it.
//!
//! Slots are made before their subscriptions, on the publishers, with pg_create_logical_replication_slot() over
//! autocommit connections; then the subscriptions, with create_slot = false, over libpq
//! connections to the member and back to this node itself (CREATE SUBSCRIPTION is a
//! top-level statement there). No transaction of this worker is open while it waits, and no
//! CREATE SUBSCRIPTION waits for a slot, so the two directions never wait on each other.

use crate::catalog::{self, Member};
use crate::errors::FedResult;
use crate::gucs;
use crate::identity;
use crate::membership::subscription_name;
use crate::naming::publication_name;
use crate::remote::Remote;
use crate::sql::{self, quote_ident, quote_literal};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::Duration;

pub const WORKER_TYPE: &str = "pg_federation worker";

/// How often the worker probes every member for federation.status().
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Registers the worker; called from _PG_init while shared_preload_libraries loads.
pub fn register() {
    BackgroundWorkerBuilder::new(WORKER_TYPE)
        .set_type(WORKER_TYPE)
        .set_library("pg_federation")
        .set_function("pg_federation_worker_main")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Whether this server's worker runs in this database.
pub fn is_running() -> FedResult<bool> {
    Ok(sql::one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE backend_type = $1 AND datname = current_database())",
        &[WORKER_TYPE.into()],
    )?
    .unwrap_or(false))
}

/// Asks the worker to look again now (it also looks every second).
pub fn wake() {
    let pid = sql::one::<i32>(
        "SELECT pid FROM pg_catalog.pg_stat_activity WHERE backend_type = $1 LIMIT 1",
        &[WORKER_TYPE.into()],
    );
    if let Ok(Some(pid)) = pid {
        // SIGUSR1 sets a background worker's latch. Sent at commit, when the rows are visible.
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || unsafe {
            libc_kill(pid, 10);
        });
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_federation_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = gucs::get_str(&gucs::DATABASE).unwrap_or_else(|| "postgres".into());
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    log!("pg_federation worker started in database \"{db}\"");
    let mut pause = Duration::from_millis(200);
    let mut last_probe: Option<std::time::Instant> = None;
    while BackgroundWorker::wait_latch(Some(pause)) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the standard way a background worker applies a reload.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let busy = reconcile_once();
        pause = Duration::from_millis(if busy { 100 } else { 1000 });
        if last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY) {
            crate::probe::probe_members();
            last_probe = Some(std::time::Instant::now());
        }
    }
}

struct Work {
    me: String,
    my_conninfo: String,
    joining: Vec<Member>,
    ready: Vec<Member>,
    /// Tables enabled here on a running federation, to federate everywhere: (name, column).
    pending_tables: Vec<(String, String)>,
}

fn load_work() -> FedResult<Option<Work>> {
    // SAFETY: reads shared recovery state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Ok(None);
    }
    if !catalog::extension_installed()? {
        return Ok(None);
    }
    let Some((recorded, Some(my_conninfo))) = catalog::local_node()? else {
        return Ok(None);
    };
    let me = identity::current_name()?;
    if me != recorded {
        return Ok(None); // renamed: identity::current_name() already refuses writes
    }
    let (joining, ready): (Vec<Member>, Vec<Member>) = catalog::members()?
        .into_iter()
        .partition(|m| m.state == "joining");
    let pending_tables = sql::rows(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), t.node_column::text
         FROM federation.federated_table t JOIN pg_catalog.pg_class c ON c.oid = t.relid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE t.mesh_state = 'pending'",
        &[],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
            ))
        },
    )?;
    Ok(Some(Work {
        me,
        my_conninfo,
        joining,
        ready,
        pending_tables,
    }))
}

/// One pass; true while there is work in progress.
fn reconcile_once() -> bool {
    let work = BackgroundWorker::transaction(load_work);
    let work = match work {
        Ok(Some(w)) => w,
        Ok(None) => return false,
        Err(e) => {
            warning!("pg_federation worker: {e}");
            return false;
        }
    };
    // Pairs this node wires; the others are wired by the joining member's worker, which
    // orders the copies (see reconcile_joins) and marks the pair ready here when done.
    let mine: Vec<Member> = work
        .joining
        .iter()
        .filter(|m| m.wired_here)
        .cloned()
        .collect();
    if !mine.is_empty() {
        reconcile_joins(&work.me, &work.my_conninfo, &mine);
    }
    // Tables enabled on a running federation, once no join is in progress.
    if work.joining.is_empty() {
        for (table, col) in &work.pending_tables {
            match spread_table(&work.my_conninfo, &work.ready, table, col) {
                Ok(true) => {
                    let t = table.clone();
                    let r = BackgroundWorker::transaction(move || {
                        sql::exec_args(
                            "UPDATE federation.federated_table SET mesh_state = 'ready' WHERE relid = pg_catalog.to_regclass($1)",
                            &[t.as_str().into()],
                        )
                    });
                    match r {
                        Ok(()) => log!("pg_federation: table {table} is federated on every member"),
                        Err(e) => warning!("pg_federation worker: {e}"),
                    }
                }
                Ok(false) => {}
                Err(e) => warning!("pg_federation: federating {table} on the members: {e}"),
            }
        }
    }
    !work.joining.is_empty() || !work.pending_tables.is_empty()
}

/// Federates `table` on every member (federation.enable_here there) and refreshes every
/// federation subscription on every node, so each picks up the new partitions (with their
/// existing rows). Idempotent; true once every subscription has finished its copies.
fn spread_table(my_conninfo: &str, members: &[Member], table: &str, col: &str) -> FedResult<bool> {
    let mut conns = vec![Remote::connect(
        my_conninfo,
        "this node (federation.node_conninfo)",
    )?];
    for m in members {
        let mut r = Remote::connect(&m.conninfo, &format!("member \"{}\"", m.name))?;
        r.query(
            "SELECT federation.enable_here($1, $2)",
            &[Some(table), Some(col)],
        )?;
        conns.push(r);
    }
    let mut all_ready = true;
    for r in conns.iter_mut() {
        let subs = r.query("SELECT subname::text FROM pg_catalog.pg_subscription WHERE subname LIKE 'federation\\_%'", &[])?;
        for sub in subs
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
        {
            r.exec(&format!(
                "ALTER SUBSCRIPTION {} REFRESH PUBLICATION",
                quote_ident(&sub)
            ))?;
            if pending_tables(r, &sub)? != Some(0) {
                all_ready = false;
            }
        }
    }
    Ok(all_ready)
}

fn retry_due(m: &Member) -> bool {
    let wait = Duration::from_millis((500 * m.attempts.min(20) as u64).min(10_000));
    let name = m.name.clone();
    let ms = wait.as_millis() as i64;
    BackgroundWorker::transaction(move || {
        sql::one::<bool>(
            "SELECT coalesce(last_error_at, '-infinity') + $2 * interval '1 millisecond' <= pg_catalog.clock_timestamp()
             FROM federation.node WHERE node_name = $1",
            &[name.as_str().into(), ms.into()],
        )
    })
    .ok()
    .flatten()
    .unwrap_or(true)
}

fn subscription_exists(r: &mut Remote, name: &str) -> FedResult<bool> {
    Ok(r.scalar(
        "SELECT count(*) FROM pg_catalog.pg_subscription WHERE subname = $1",
        &[Some(name)],
    )?
    .as_deref()
        == Some("1"))
}

/// Tables of a subscription not yet ready; None when the subscription does not exist.
fn pending_tables(r: &mut Remote, name: &str) -> FedResult<Option<i64>> {
    Ok(sync_state(r, name)?.map(|(pending, _)| pending))
}

/// (tables not yet ready, of which copied and waiting for the apply worker), or None when
/// the subscription does not exist.
pub fn sync_state(r: &mut Remote, name: &str) -> FedResult<Option<(i64, i64)>> {
    let row = r.query(
        "SELECT count(*) FILTER (WHERE sr.srsubstate <> 'r'), count(*) FILTER (WHERE sr.srsubstate = 's'), bool_or(s.subenabled)
         FROM pg_catalog.pg_subscription s LEFT JOIN pg_catalog.pg_subscription_rel sr ON sr.srsubid = s.oid
         WHERE s.subname = $1",
        &[Some(name)],
    )?;
    let Some(row) = row.first() else {
        return Ok(None);
    };
    if row[2].is_none() {
        return Ok(None);
    }
    let n = |i: usize| row[i].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Some((n(0), n(1))))
}

/// Tables of subscription `name` (on `subscriber`) not yet ready, None when it does not
/// exist. A table whose copy is done ('s', SYNCDONE) becomes ready only when the apply worker
/// has received WAL past the copy's end; on an idle publisher that can take a while (the
/// walsender sends nothing until there is WAL or a keepalive is due), so a copy that is done
/// gets a WAL nudge on the publisher ([`crate::progress::nudge`]).
pub fn copies_pending(
    subscriber: &mut Remote,
    publisher: &mut Remote,
    name: &str,
) -> FedResult<Option<i64>> {
    let state = sync_state(subscriber, name)?;
    if let Some((_, done_copying)) = state {
        if done_copying > 0 {
            crate::progress::nudge(publisher)?;
        }
    }
    Ok(state.map(|(pending, _)| pending))
}

/// Makes sure the slot `slot` exists on the publisher behind `publisher_conn` for a
/// subscription that does not exist yet: a slot left behind by an earlier failed attempt is
/// dropped (when inactive) and made anew. Plain SQL over an autocommit connection: slot
/// creation waits only for the publisher's running transactions, none of which waits for us.
pub fn fresh_slot(publisher_conn: &mut Remote, slot: &str) -> FedResult<()> {
    publisher_conn.query(
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND NOT active",
        &[Some(slot)],
    )?;
    publisher_conn.query(
        "SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')",
        &[Some(slot)],
    )?;
    Ok(())
}

/// This node's copies of `owner`'s partitions, as SQL names (they are replicas: a new
/// subscription's initial copy replaces them).
pub fn copies_of(on: &mut Remote, owner: &str) -> FedResult<Vec<String>> {
    let parts = on.query(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM federation.partition p
         JOIN pg_catalog.pg_class c ON c.oid = p.partition JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE p.node_name = $1",
        &[Some(owner)],
    )?;
    Ok(parts
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}

/// The statement that empties a node's copies of an owner's partitions before a new
/// subscription copies them afresh (rows kept from an earlier membership would collide with
/// the initial copy). Run in replica mode: guards are ordinary triggers, which it passes.
fn empty_copies_sql(copies: &[String]) -> String {
    if copies.is_empty() {
        String::new()
    } else {
        format!("TRUNCATE {};\n", copies.join(", "))
    }
}

/// Creates subscription `sub` (on the node behind `on`) to `publisher`'s publication, on the
/// slot of the same name made beforehand: CREATE SUBSCRIPTION then waits for nothing remote.
fn create_subscription_sql(sub: &str, publisher: &str, publisher_conninfo: &str) -> String {
    format!(
        "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (create_slot = false, slot_name = {}, copy_data = true);\n",
        quote_ident(sub),
        quote_literal(publisher_conninfo),
        quote_ident(&publication_name(publisher)),
        quote_literal(sub)
    )
}

/// Empties the copies and creates the subscriptions, in one transaction on the node behind
/// `on` (a multi-statement query is one implicit transaction; CREATE SUBSCRIPTION without
/// create_slot may run in one). One commit, so PostgreSQL 15's launcher, which starts apply
/// workers at most once per wal_retrieve_retry_interval, starts them all at once.
pub fn create_subscriptions(
    on: &mut Remote,
    subs: &[(String, String, String, Vec<String>)],
) -> FedResult<()> {
    let mut sql = String::from("SET session_replication_role = replica;\n");
    for (sub, publisher, publisher_conninfo, copies) in subs {
        sql.push_str(&empty_copies_sql(copies));
        sql.push_str(&create_subscription_sql(sub, publisher, publisher_conninfo));
    }
    sql.push_str("RESET session_replication_role;");
    on.exec(&sql)
}

/// Wires this node with every joining member, both ways, in three phases: per member,
/// register this node there and make the slot of this node's subscription to it; then all of
/// this node's new subscriptions in one transaction; then, once every copy *into* this node
/// is done, per member the slot here and the member's subscription to this node, and once
/// that copy is done too, mark the member ready on both sides.
///
/// Inbound copies first: a slot decodes all of its server's WAL, including the rows an
/// initial copy writes into other nodes' partitions (only to skip them, after spilling a
/// large copy to disk). Slots on this node made only after its inbound copies have finished
/// never read them; on a two-core machine that was a third of a large join's time. A
/// failure is recorded against the member it concerns, and retried on a later pass.
fn reconcile_joins(me: &str, my_conninfo: &str, joining: &[Member]) {
    let mut failures: Vec<(String, String)> = vec![];
    let mut here = match Remote::connect(my_conninfo, "this node (federation.node_conninfo)") {
        Ok(h) => h,
        Err(e) => {
            joining
                .iter()
                .for_each(|m| failures.push((m.name.clone(), e.to_string())));
            record_failures(joining, &failures);
            return;
        }
    };
    let mut wired: Vec<(&Member, Remote)> = vec![];
    let mut inbound: Vec<(String, String, String, Vec<String>)> = vec![];
    for m in joining {
        // A failing member is retried with a growing pause (up to ~10 s between attempts).
        if m.attempts > 0 && !retry_due(m) {
            continue;
        }
        match prepare(&mut here, me, my_conninfo, m) {
            Ok((there, need_in)) => {
                if need_in {
                    match copies_of(&mut here, &m.name) {
                        Ok(copies) => inbound.push((
                            subscription_name(&m.name, me),
                            m.name.clone(),
                            m.conninfo.clone(),
                            copies,
                        )),
                        Err(e) => failures.push((m.name.clone(), e.to_string())),
                    }
                }
                wired.push((m, there));
            }
            Err(e) => failures.push((m.name.clone(), e.to_string())),
        }
    }
    if !inbound.is_empty() {
        if let Err(e) = create_subscriptions(&mut here, &inbound) {
            for (_, name, _, _) in &inbound {
                failures.push((name.clone(), e.to_string()));
            }
        }
    }
    wired.retain(|(m, _)| !failures.iter().any(|(n, _)| n == &m.name));
    let mut inbound_done = true;
    for (m, there) in wired.iter_mut() {
        match copies_pending(&mut here, there, &subscription_name(&m.name, me)) {
            Ok(Some(0)) => {}
            Ok(_) => inbound_done = false,
            Err(e) => {
                inbound_done = false;
                failures.push((m.name.clone(), e.to_string()));
            }
        }
    }
    if inbound_done {
        for (m, mut there) in wired {
            match complete(&mut here, &mut there, me, my_conninfo, m) {
                Ok(true) => {
                    let name = m.name.clone();
                    match BackgroundWorker::transaction(move || {
                        catalog::set_member_state(&name, "ready")
                    }) {
                        Ok(()) => log!(
                            "pg_federation: node \"{}\" and this node \"{me}\" replicate both ways",
                            m.name
                        ),
                        Err(e) => warning!("pg_federation worker: {e}"),
                    }
                }
                Ok(false) => {}
                Err(e) => failures.push((m.name.clone(), e.to_string())),
            }
        }
    }
    record_failures(joining, &failures);
}

fn record_failures(joining: &[Member], failures: &[(String, String)]) {
    for (name, msg) in failures {
        let previous = joining
            .iter()
            .find(|m| &m.name == name)
            .and_then(|m| m.last_error.clone());
        if previous.as_deref() != Some(msg.as_str()) {
            warning!("pg_federation: joining node \"{name}\": {msg}");
        }
        let (name, msg) = (name.clone(), msg.clone());
        if let Err(e) =
            BackgroundWorker::transaction(move || catalog::record_member_error(&name, &msg))
        {
            warning!("pg_federation worker: {e}");
        }
    }
}

/// Phase one for member `m`, until this node's subscription to it exists: registers this
/// node there and makes the slot of this node's
/// subscription to it (slots first: a CREATE SUBSCRIPTION that made its own slot would hold a
/// transaction on one node while slot creation on the other waits for running transactions,
/// and the two directions could wait on each other). Returns the connection to the member
/// and whether this node still needs its subscription to it.
fn prepare(
    here: &mut Remote,
    me: &str,
    my_conninfo: &str,
    m: &Member,
) -> FedResult<(Remote, bool)> {
    let mut there = Remote::connect(&m.conninfo, &format!("member \"{}\"", m.name))?;
    let inbound = subscription_name(&m.name, me); // on this node, from m
    let need_in = !subscription_exists(here, &inbound)?;
    if need_in {
        // Once per pair, not every pass: add_member() locks the member's federated tables
        // (SHARE UPDATE EXCLUSIVE) to give them partitions for this node. The subscription
        // is created only after it succeeded, so its existence says it was done.
        there.query(
            "SELECT federation.add_member($1, $2, $3)",
            &[Some(me), Some(my_conninfo), Some(&m.conninfo)],
        )?;
        fresh_slot(&mut there, &inbound)?;
    }
    Ok((there, need_in))
}

/// Phase three for member `m`, once every copy into this node is done: makes the slot here
/// and the member's subscription to this node; true once that subscription has finished its
/// copy too and the member has marked this node ready.
fn complete(
    here: &mut Remote,
    there: &mut Remote,
    me: &str,
    my_conninfo: &str,
    m: &Member,
) -> FedResult<bool> {
    let outbound = subscription_name(me, &m.name); // on m, from this node
    match copies_pending(there, here, &outbound)? {
        None => {
            fresh_slot(here, &outbound)?;
            let copies = copies_of(there, me)?;
            create_subscriptions(
                there,
                &[(outbound, me.to_string(), my_conninfo.to_string(), copies)],
            )?;
            Ok(false)
        }
        Some(0) => {
            there.query("SELECT federation.set_member_ready($1)", &[Some(me)])?;
            Ok(true)
        }
        Some(_) => Ok(false),
    }
}
