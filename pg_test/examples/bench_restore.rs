//! Benchmark (not a test): `federation.restore()` of a lost node from its peer's copy.
//!
//!   scripts/bench.sh restore
//!   cargo run --release -p pg_test --example bench_restore [rows]
//!
//! Two nodes; east owns `rows` rows (default 1,000,000). East's server is lost (kill -9); a
//! new, empty server is started at its address and `restore()` run there. Reported: seconds
//! for restore() to return (rows taken back from west's copy and the node joined again), the
//! backend's peak memory (VmHWM, and apart: its private memory and the shared buffers it touched), and, side by side in the same run, a plain
//! `COPY` of the same rows from west into a table on the new server (the baseline: what moving
//! the rows costs at least).

use pg_test::{copy_rows, wait_until, Cluster, NodeSpec};
use std::time::{Duration, Instant};

const CONF: &str = "max_wal_size = '4GB'";

/// A field of the backend's /proc status, in MB (VmHWM, RssAnon, RssShmem).
fn status_mb(pid: i32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Samples the backend `pid` every 20 ms until `stop`: the peaks of its private memory
/// (RssAnon: what the backend allocated) and of the shared memory it has touched (RssShmem:
/// pages of shared_buffers it read or wrote, counted by VmHWM too, but not its own).
fn sample_peaks(
    pid: i32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(f64, f64)> {
    std::thread::spawn(move || {
        let (mut anon, mut shmem) = (0f64, 0f64);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            anon = anon.max(status_mb(pid, "RssAnon"));
            shmem = shmem.max(status_mb(pid, "RssShmem"));
            std::thread::sleep(Duration::from_millis(20)); // sampling pace
        }
        (anon, shmem)
    })
}

fn main() {
    let rows: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let c = pg_test::bench::east_owning(rows, &[]);
    let (east, west) = (c.node("east"), c.node("west"));
    wait_until(
        "west's copy of east's rows",
        Duration::from_secs(600),
        &[east, west],
        || Ok(west.row_count("SELECT 1 FROM hippos_east") as u64 == rows),
    );
    let major = east.major();
    let port = east.port;
    east.kill9();
    let mut fresh = Cluster::start(&[NodeSpec::guc("east").with_conf(CONF)]);
    fresh.nodes[0].move_to_port(port);
    let new_east = &fresh.nodes[0];
    wait_until(
        "west to refuse to repair from the new server",
        Duration::from_secs(60),
        &[new_east, west],
        || Ok(west.log_tail(400).contains("does not act as node \"east\"")),
    );
    // Baseline: the same rows by a plain COPY from west into a table here.
    new_east.execute("CREATE TABLE baseline (id uuid, value numeric, created_at timestamptz)");
    let t = Instant::now();
    copy_rows(
        west,
        "SELECT id, value, created_at FROM hippos_east",
        new_east,
        "baseline",
    );
    let copy = t.elapsed().as_secs_f64();
    new_east.execute("DROP TABLE baseline");
    let mut session = new_east.connect().expect("connect");
    let pid: i32 = session
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let base = status_mb(pid, "RssAnon");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_peaks(pid, stop.clone());
    let t = Instant::now();
    session
        .execute(
            &format!("SELECT federation.restore('{}')", west.conninfo()),
            &[],
        )
        .unwrap_or_else(|e| panic!("restore: {e:?}\n{}", new_east.log_tail(40)));
    let restore = t.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (anon, shmem) = sampler.join().unwrap();
    let peak = status_mb(pid, "VmHWM");
    let back = new_east.row_count("SELECT 1 FROM hippos_east") as u64;
    assert_eq!(back, rows, "every row taken back");
    println!("# restore() of a lost node owning {rows} rows from its peer; PostgreSQL {major}\n");
    println!("| | seconds | ratio to COPY | backend VmHWM | private (RssAnon) peak, before | shared buffers touched (RssShmem) peak |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| plain `COPY` of the rows from west (baseline, same run) | {copy:.1} | 1.00 | | | |"
    );
    println!(
        "| `federation.restore()` (rows taken back, node joined) | {restore:.1} | {:.2} | {peak:.0} MB | {anon:.0} MB, {base:.0} MB | {shmem:.0} MB |",
        restore / copy
    );
}
