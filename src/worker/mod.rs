//! pg_federation's background worker: finishes what join() and enable() recorded, after
//! COMMIT, and samples every member for federation.status().
//!
//! One worker per server (started through shared_preload_libraries), connected to the
//! database named by `federation.database`. Each pass: reconcile (joins, tables to spread),
//! and every few seconds probe (and, with the same connections, discovery of members that
//! joined through another node).

mod discovery;
mod probe;
mod reconcile;

use crate::errors::FedResult;
use crate::gucs;
use crate::spi;
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
    Ok(spi::one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE backend_type = $1 AND datname = current_database())",
        &[WORKER_TYPE.into()],
    )?
    .unwrap_or(false))
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

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_federation_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    log!("pg_federation worker started in database \"{db}\"");
    let mut pause = Duration::from_millis(200);
    let mut last_probe: Option<std::time::Instant> = None;
    while BackgroundWorker::wait_latch(Some(pause)) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the standard way a background worker applies a reload.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let busy = reconcile::reconcile_once();
        pause = Duration::from_millis(if busy { 100 } else { 1000 });
        if last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY) {
            probe::probe_members();
            last_probe = Some(std::time::Instant::now());
        }
    }
}
