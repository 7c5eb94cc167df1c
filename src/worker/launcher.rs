//! The launcher: the background worker registered at server start. It connects to no
//! database, waits until the database named by `federation.database` exists, and starts the
//! worker there (a dynamic background worker); if the worker stops, the launcher starts it
//! again (at most every few seconds). So a server started before its database is created
//! needs no restart: the worker runs within a second of CREATE DATABASE.

use super::WORKER_TYPE;
use crate::gucs;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::prelude::*;
use std::ffi::CStr;
use std::time::{Duration, Instant};

pub const LAUNCHER_TYPE: &str = "pg_federation launcher";

/// How often the launcher looks for the database and at the worker.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// A worker that stopped is started again no sooner than this after its last start.
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// Registers the launcher; called from _PG_init while shared_preload_libraries loads.
pub fn register() {
    BackgroundWorkerBuilder::new(LAUNCHER_TYPE)
        .set_type(LAUNCHER_TYPE)
        .set_library("pg_federation")
        .set_function("pg_federation_launcher_main")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Whether database `name` exists. A plain scan of the shared catalog pg_database, as
/// PostgreSQL's own launchers do: a process connected to no database can open no index (its
/// description would be read from pg_class, which belongs to a database).
fn database_exists(name: &str) -> bool {
    let name = name.as_bytes().to_vec();
    BackgroundWorker::transaction(move || {
        // SAFETY: a catalog heap scan inside a transaction, closed before it ends.
        unsafe {
            let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
            let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, lock);
            let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
            let mut found = false;
            loop {
                let tup = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tup.is_null() {
                    break;
                }
                let db = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tup);
                if CStr::from_ptr((*db).datname.data.as_ptr()).to_bytes() == name.as_slice() {
                    found = true;
                    break;
                }
            }
            pg_sys::table_endscan(scan);
            pg_sys::table_close(rel, lock);
            found
        }
    })
}

fn start_worker(db: &str) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(&format!("pg_federation worker for database \"{db}\""))
        .set_type(WORKER_TYPE)
        .set_library("pg_federation")
        .set_function("pg_federation_worker_main")
        .enable_spi_access()
        .set_restart_time(None)
        // SAFETY: this process's pid, so that the postmaster reports the worker's state here.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_federation_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    let mut worker: Option<DynamicBackgroundWorker> = None;
    let mut started_at: Option<Instant> = None;
    let mut said_waiting = false;
    let mut passfile = crate::passfile::Refresher::default();
    while BackgroundWorker::wait_latch(Some(LOOK_EVERY)) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the standard way a background worker applies a reload.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        // A rotated password (federation.passfile) reaches every new connection.
        passfile.refresh();
        let alive = worker
            .as_ref()
            .is_some_and(|w| matches!(w.pid(), Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted)));
        if alive || started_at.is_some_and(|t| t.elapsed() < RESTART_AFTER) {
            continue;
        }
        let db = gucs::database();
        if !database_exists(&db) {
            if !said_waiting {
                log!("pg_federation launcher: waiting for database \"{db}\" (federation.database) to exist");
                said_waiting = true;
            }
            continue;
        }
        said_waiting = false;
        worker = start_worker(&db);
        started_at = Some(Instant::now());
        if worker.is_none() {
            warning!("pg_federation launcher: could not start the worker for database \"{db}\" (max_worker_processes too low?)");
        }
    }
}
