//! Soak (not part of the test command): three nodes, steady writes on all three for a while,
//! then convergence. Reports lag p50/p99 per minute, the servers' memory at start and end,
//! and proves that every acknowledged write is on every node and verify() matches.
//!
//!   scripts/soak.sh [minutes]            (default 10)
//!   cargo run --release -p pg_test --example soak [minutes] [rows_per_second_per_node]

use pg_test::scenario::{assert_converged, join, HIPPOS};
use pg_test::{assert_all_present, Cluster, Node, NodeSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resident memory (kB) of every process of a node's server: postmaster and children.
fn server_rss_kb(n: &Node) -> (u64, u64) {
    let pid = n.postmaster_pid().expect("running");
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() {
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u32>().ok());
                if ppid == Some(pid) {
                    pids.push(p);
                }
            }
        }
    }
    let mut total = 0;
    let mut largest = 0;
    for p in pids {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        // RssAnon: private memory; shared buffers count in RssShmem and would be counted per process.
        let kb = status
            .lines()
            .find(|l| l.starts_with("RssAnon:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        total += kb;
        largest = largest.max(kb);
    }
    (total, largest)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let minutes: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rate: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    let c = Cluster::start(&["east", "central", "west"].map(NodeSpec::guc));
    let (east, central, west) = (c.node("east"), c.node("central"), c.node("west"));
    for n in c.all() {
        n.execute(&HIPPOS.replace("DEFAULT now()", "DEFAULT clock_timestamp()"));
    }
    join(central, east);
    join(west, east);
    // Lag of every row applied on west (from east and central), logged as it lands.
    west.execute(
        "CREATE TABLE lag_log (at timestamptz, lag_ms float8);
         CREATE FUNCTION log_lag() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO public.lag_log VALUES (clock_timestamp(), extract(epoch FROM clock_timestamp() - NEW.created_at) * 1000); RETURN NULL; END $$;
         CREATE TRIGGER log_lag AFTER INSERT ON hippos_east FOR EACH ROW EXECUTE FUNCTION log_lag();
         ALTER TABLE hippos_east ENABLE ALWAYS TRIGGER log_lag;
         CREATE TRIGGER log_lag AFTER INSERT ON hippos_central FOR EACH ROW EXECUTE FUNCTION log_lag();
         ALTER TABLE hippos_central ENABLE ALWAYS TRIGGER log_lag;",
    );
    let mem_start: Vec<(u64, u64)> = c.all().iter().map(|n| server_rss_kb(n)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = c
        .all()
        .iter()
        .map(|n| {
            let (stop, conninfo) = (stop.clone(), n.client_conninfo());
            std::thread::spawn(move || {
                let mut cl =
                    pg_test::postgres::Client::connect(&conninfo, pg_test::postgres::NoTls)
                        .unwrap();
                let st = cl
                    .prepare("INSERT INTO hippos (value) VALUES ($1::int8)")
                    .unwrap();
                let (start, mut acked) = (Instant::now(), vec![]);
                let mut k: i64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    cl.execute(&st, &[&k]).unwrap();
                    acked.push(k);
                    let due = start + Duration::from_micros(k as u64 * 1_000_000 / rate);
                    if let Some(w) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(w); // pacing the writer to a steady rate
                    }
                }
                acked
            })
        })
        .collect();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(minutes * 60) {
        std::thread::sleep(Duration::from_secs(1)); // the soak's duration, not a synchronisation
    }
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Vec<i64>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let mem_end: Vec<(u64, u64)> = c.all().iter().map(|n| server_rss_kb(n)).collect();
    let t = Instant::now();
    assert_converged(&c, "hippos");
    let converge = t.elapsed();
    for n in c.all() {
        let bad =
            n.row_count("SELECT * FROM federation.verify() WHERE status NOT IN ('owner', 'match')");
        assert_eq!(bad, 0, "verify on {}", n.name);
        for (owner, values) in ["east", "central", "west"].iter().zip(&acked) {
            assert_all_present(n, &format!("hippos_{owner}"), values);
        }
    }
    let total: usize = acked.iter().map(Vec::len).sum();
    println!("# Soak: 3 nodes, {minutes} min, {rate} rows/s per node, one row per transaction\n");
    println!("Rows written and acknowledged: {total} ({}); all present on every node; verify() match everywhere; converged {:.1} s after the writers stopped.\n",
        acked.iter().map(|v| v.len().to_string()).collect::<Vec<_>>().join(" + "), converge.as_secs_f64());
    println!("| minute | rows applied on west | lag p50 ms | lag p99 ms |");
    println!("|---:|---:|---:|---:|");
    for r in west.query(
        "WITH t AS (SELECT min(at) AS t0 FROM lag_log)
         SELECT floor(extract(epoch FROM at - t0) / 60)::int + 1, count(*),
                round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms)::numeric, 2),
                round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms)::numeric, 2)
         FROM lag_log, t GROUP BY 1 ORDER BY 1",
    ) {
        println!(
            "| {} | {} | {} | {} |",
            r[0].as_deref().unwrap_or(""),
            r[1].as_deref().unwrap_or(""),
            r[2].as_deref().unwrap_or(""),
            r[3].as_deref().unwrap_or("")
        );
    }
    println!("\n| node | server private memory at start, kB (largest process) | at end, kB (largest process) |");
    println!("|---|---:|---:|");
    for ((n, s), e) in c.all().iter().zip(&mem_start).zip(&mem_end) {
        println!("| {} | {} ({}) | {} ({}) |", n.name, s.0, s.1, e.0, e.1);
    }
    let _ = (east, central);
}
