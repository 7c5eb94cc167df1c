//! pg_federation's background worker: finishes what join() and enable() recorded, after
//! COMMIT, and samples every member for federation.status().
//!
//! One worker per server, connected to the database named by `federation.database`, started
//! by the launcher (launcher.rs, registered through shared_preload_libraries) once that
//! database exists. Each pass: reconcile (joins, tables to spread),
//! and every few seconds probe (and, with the same connections, discovery of members that
//! joined through another node).

mod address;
mod discovery;
mod heal;
mod launcher;
pub(crate) mod load;
mod prepared;
mod probe;
mod reconcile;
mod upgraded;

use crate::errors::FedResult;
use crate::gucs;
use crate::spi;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::Duration;

pub const WORKER_TYPE: &str = "pg_federation worker";

/// How often the worker probes every member for federation.status().
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How soon the worker probes again once a member's slot was seen missing: a failover is
/// confirmed (worker::heal, two probes in a row) in seconds, not two full probe intervals.
const PROBE_AGAIN_WITHIN: Duration = Duration::from_millis(1500);

/// Registers the launcher, which starts the worker; called from _PG_init while
/// shared_preload_libraries loads.
pub fn register() {
    launcher::register();
}

/// Whether this server's worker runs in this database.
pub fn is_running() -> FedResult<bool> {
    Ok(spi::one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE backend_type = $1 AND datname = current_database())",
        &[WORKER_TYPE.into()],
    )?
    .unwrap_or(false))
}

/// Waits up to `timeout` for this database's worker while the launcher runs (it starts the
/// worker within a second or two of the database's creation); false at once without a
/// launcher (pg_federation is not in shared_preload_libraries).
pub fn wait_running(timeout: Duration) -> FedResult<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // pg_stat_activity is read once per transaction unless the snapshot is cleared.
        spi::exec("SELECT pg_catalog.pg_stat_clear_snapshot()")?;
        if is_running()? {
            return Ok(true);
        }
        let launcher = spi::one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE backend_type = $1)",
            &[launcher::LAUNCHER_TYPE.into()],
        )?
        .unwrap_or(false);
        if !launcher || std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        crate::wait::nap(200);
    }
}

/// Asks the worker to look again now (it also looks every second).
pub fn wake() {
    let pid = spi::one::<i32>(
        "SELECT pid FROM pg_catalog.pg_stat_activity WHERE backend_type = $1 LIMIT 1",
        &[WORKER_TYPE.into()],
    );
    if let Ok(Some(pid)) = pid {
        // SIGUSR1 sets a background worker's latch. Sent at commit, when the rows are visible.
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
            // SAFETY: kill(2) on a pid; at worst the worker has gone and nothing happens.
            unsafe { libc::kill(pid, libc::SIGUSR1) };
        });
    }
}

/// Waits up to `pause` on the worker's latch in the middle of a pass; false once a shutdown
/// was asked for. Unlike `BackgroundWorker::wait_latch`, whose check consumes the SIGTERM
/// flag, it leaves that flag to the main loop's wait, which then ends the worker (a pass
/// that consumed it kept the server from shutting down).
pub(crate) fn pause_in_pass(pause: Duration) -> bool {
    crate::wait::latch_wait(pause.as_millis() as i64);
    // SAFETY: ShutdownRequestPending is set by the SIGTERM handler pgrx installs; read volatile.
    unsafe { (&raw const pg_sys::ShutdownRequestPending).read_volatile() == 0 }
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_federation_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    log!("pg_federation worker started in database \"{db}\"");
    let mut pause = Duration::from_millis(200);
    let mut last_probe: Option<std::time::Instant> = None;
    let mut quiet = false;
    let mut healer = heal::Healer::default();
    let mut last_address_check: Option<std::time::Instant> = None;
    while BackgroundWorker::wait_latch(Some(pause)) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the standard way a background worker applies a reload.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        // A hot standby of a node waits for its promotion (its primary does the work; then
        // heal.rs sees the new timeline).
        // SAFETY: reads shared recovery state.
        if unsafe { pg_sys::RecoveryInProgress() } {
            pause = Duration::from_millis(1000);
            continue;
        }
        // Whether this server still answers at the node's address (an old primary that came
        // back finds its promoted standby there): checked even while it does not act.
        if last_address_check.is_none_or(|t| t.elapsed() >= PROBE_EVERY) {
            healer.check_address();
            last_address_check = Some(std::time::Instant::now());
        }
        // A restored copy of a node (or a renamed or superseded one) acts as nobody: no
        // wiring, no probes.
        if !acting_as_itself(&mut quiet) {
            pause = Duration::from_millis(1000);
            continue;
        }
        let busy = reconcile::reconcile_once();
        pause = Duration::from_millis(if busy { 100 } else { 1000 });
        let every = if healer.suspects() {
            PROBE_AGAIN_WITHIN
        } else {
            PROBE_EVERY
        };
        if last_probe.is_none_or(|t| t.elapsed() >= every) {
            let slots = probe::probe_members();
            healer.after_probe(&slots);
            if healer.repaired() {
                probe::probe_members();
            }
            prepared::resolve_orphans();
            settle_set_aside();
            last_probe = Some(std::time::Instant::now());
        }
    }
}

/// Drops the rows set aside that their owners' copies now hold (table::set_aside).
fn settle_set_aside() {
    if let Err(e) = BackgroundWorker::transaction(crate::table::set_aside::settle) {
        warning!("pg_federation worker: settling rows set aside: {e}");
    }
}

/// Whether this database is the node itself rather than a restored copy of it (its state was
/// made on this server: catalog::copy_problem). A copy says so once, in the log, and again
/// once it is detached.
fn acting_as_itself(quiet: &mut bool) -> bool {
    let problem = BackgroundWorker::transaction(|| {
        let name = match crate::catalog::extension_installed() {
            Ok(true) => crate::catalog::recorded_name().ok().flatten()?,
            _ => return None,
        };
        crate::catalog::copy_problem(&name)
            .ok()
            .flatten()
            .map(|e| e.message)
    });
    match problem {
        Some(why) => {
            if !*quiet {
                log!("pg_federation worker: idle: {why}");
                *quiet = true;
            }
            false
        }
        None => {
            if *quiet {
                log!("pg_federation worker: this node's identity holds again; resuming");
                *quiet = false;
            }
            true
        }
    }
}
