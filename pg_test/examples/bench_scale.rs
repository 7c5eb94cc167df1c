//! Benchmark (not a test): how a federation's cost grows with its number of nodes.
//!
//!   scripts/bench.sh scale                      (PG_MAJOR=18 for PostgreSQL 18)
//!   cargo run --release -p pg_test --example bench_scale [node_counts] [cpu_rows] [lag_rate] [lag_seconds] [join_rows] [join_sizes]
//!   defaults:                                      2,3,5,8     100000     200       20          1000000     100000,300000,1000000
//!   BENCH_ORIGIN=any   (PostgreSQL 16+) subscriptions switched to origin = any after the
//!                      federation forms: pg_federation's behaviour before 0.6.0, for before/after
//!
//! For each N, a fresh federation of N servers on this machine (one table, `t`):
//! 1. seconds from N empty servers (extension created) to a ready mesh (enable on each, then
//!    each node joins the previous one and waits for wait_ready());
//! 2. server processes and memory (proportional set size, so shared memory is not counted N
//!    times) per node, idle, once formed;
//! 3. CPU seconds spent by walsenders (logical decoding) and by apply workers, per node, per
//!    10,000 rows written: `cpu_rows` rows written, spread evenly over all nodes in
//!    1,000-row transactions, counted from /proc/<pid>/schedstat of every such process until
//!    every node holds every row;
//! 4. lag p50/p99 at a fixed total rate (`lag_rate` single-row transactions per second, spread
//!    over all nodes, for `lag_seconds`): an ALWAYS trigger on every copy records
//!    clock_timestamp() - created_at into an unlogged table (not decoded, not sent);
//! 5. seconds for one more node to join the federation once it holds `join_rows` rows
//!    (spread over all nodes).
//!
//! Then, for the join-time-against-data-size curve, a two-node federation with each of
//! `join_sizes` rows and a third node joining it.
//! Ratios against N = 2 are printed side by side; the numbers also go to
//! target/bench_scale/*.tsv, which scripts/plot_scale.sh turns into PNG plots.

use pg_test::{wait_until, Node, NodeSpec};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const COLS: &str = "id uuid PRIMARY KEY DEFAULT gen_random_uuid(), value numeric, created_at timestamptz NOT NULL DEFAULT clock_timestamp()";
const CONVERGE: Duration = Duration::from_secs(1200);

fn start(names: &[String]) -> Vec<Node> {
    names
        .iter()
        .map(|n| {
            Node::start(
                &NodeSpec::guc(n)
                    .with_conf("max_wal_size = '4GB'")
                    .with_conf("checkpoint_timeout = '30min'"),
            )
        })
        .collect()
}

fn names(from: usize, to: usize) -> Vec<String> {
    (from..=to).map(|i| format!("n{i}")).collect()
}

fn enable(node: &Node) {
    node.execute(&format!(
        "CREATE TABLE t ({COLS}); SELECT federation.enable('t')"
    ));
}

fn join(node: &Node, peer: &Node) {
    node.execute(&format!("SELECT federation.join('{}')", peer.conninfo()));
    node.execute("SELECT federation.wait_ready('30 min')");
}

/// Every node has N-1 apply workers running and no table still copying.
fn wait_mesh(nodes: &[Node]) {
    let all: Vec<&Node> = nodes.iter().collect();
    let want = nodes.len() - 1;
    wait_until(
        &format!("every node to run {want} apply workers with every copy done"),
        CONVERGE,
        &all,
        || {
            for n in nodes {
                let r = n.scalar(
                    "SELECT (SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL AND relid IS NULL)::text
                        || '/' || (SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r')::text",
                );
                if r != Some(format!("{want}/0")) {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    );
}

fn count(node: &Node) -> u64 {
    node.scalar("SELECT count(*) FROM t")
        .unwrap()
        .parse()
        .unwrap()
}

fn wait_rows(nodes: &[Node], rows: u64) {
    let all: Vec<&Node> = nodes.iter().collect();
    wait_until(
        &format!("every node to hold {rows} rows of t"),
        CONVERGE,
        &all,
        || Ok(nodes.iter().all(|n| count(n) >= rows)),
    );
}

/// Writes `per_node` rows on every node at once, in transactions of up to 1,000 rows (or
/// `chunk`), one thread per node.
fn write_bulk(nodes: &[Node], per_node: u64, chunk: u64) {
    let clients: Vec<_> = nodes.iter().map(|n| n.connect().unwrap()).collect();
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let mut left = per_node;
                while left > 0 {
                    let k = left.min(chunk);
                    c.batch_execute(&format!(
                        "INSERT INTO t (value) SELECT g FROM generate_series(1, {k}) g"
                    ))
                    .unwrap();
                    left -= k;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Single-row transactions on every node at `rate_per_node` rows/s for `secs` seconds.
/// Returns rows written in all.
fn write_paced(nodes: &[Node], rate_per_node: f64, secs: u64) -> u64 {
    let clients: Vec<_> = nodes.iter().map(|n| n.connect().unwrap()).collect();
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let stmt = c.prepare("INSERT INTO t (value) VALUES (1)").unwrap();
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed() < Duration::from_secs(secs) {
                    c.execute(&stmt, &[]).unwrap();
                    n += 1;
                    let due = start + Duration::from_secs_f64(n as f64 / rate_per_node);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait); // pacing the writer to a fixed rate
                    }
                }
                n
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

/// Nanoseconds this process has run on a CPU (first field of /proc/<pid>/schedstat).
fn cpu_ns(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn class(backend_type: &str) -> Option<&'static str> {
    if backend_type == "walsender" {
        Some("decode")
    } else if backend_type.starts_with("logical replication") && !backend_type.contains("launcher")
    {
        Some("apply")
    } else {
        None
    }
}

/// CPU ns of every walsender and apply worker of every node, by pid.
fn replication_cpu(nodes: &[Node]) -> HashMap<u32, (&'static str, u64)> {
    let mut out = HashMap::new();
    for n in nodes {
        for r in n.query("SELECT pid::text, backend_type FROM pg_stat_activity") {
            let pid: u32 = r[0].as_deref().unwrap().parse().unwrap();
            if let Some(c) = r[1].as_deref().and_then(class) {
                if let Some(ns) = cpu_ns(pid) {
                    out.insert(pid, (c, ns));
                }
            }
        }
    }
    out
}

/// Seconds of CPU per class between two snapshots (processes that started in between count
/// from zero).
fn cpu_delta(
    before: &HashMap<u32, (&'static str, u64)>,
    after: &HashMap<u32, (&'static str, u64)>,
) -> HashMap<&'static str, f64> {
    let mut out = HashMap::new();
    for (pid, (c, ns)) in after {
        let start = before.get(pid).map(|b| b.1).unwrap_or(0);
        *out.entry(*c).or_insert(0.0) += (ns.saturating_sub(start)) as f64 / 1e9;
    }
    out
}

/// The server's processes: the postmaster and its children.
fn server_pids(node: &Node) -> Vec<u32> {
    let pm = node.postmaster_pid().expect("postmaster pid");
    let mut pids = vec![pm];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the parenthesised command name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pm) {
            pids.push(pid);
        }
    }
    pids
}

fn pss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[derive(Default, Clone)]
struct Point {
    n: usize,
    ready_s: f64,
    join_s: f64,
    procs: f64,
    mem_mb: f64,
    decode: f64,
    apply: f64,
    p50: f64,
    p99: f64,
}

fn measure(
    n: usize,
    cpu_rows: u64,
    lag_rate: f64,
    lag_secs: u64,
    join_rows: u64,
    origin_any: bool,
) -> Point {
    let nodes = start(&names(1, n));
    let t = Instant::now();
    for node in &nodes {
        enable(node);
    }
    for k in 1..n {
        join(&nodes[k], &nodes[k - 1]);
    }
    wait_mesh(&nodes);
    let ready_s = t.elapsed().as_secs_f64();
    if origin_any {
        for node in &nodes {
            for r in node.query("SELECT subname FROM pg_subscription") {
                node.execute(&format!(
                    "SET federation.unsafe_ddl = on; ALTER SUBSCRIPTION \"{}\" SET (origin = any); RESET federation.unsafe_ddl",
                    r[0].as_deref().unwrap()
                ));
            }
        }
        wait_mesh(&nodes);
    }

    // Processes and memory, idle.
    let (mut procs, mut kb) = (0usize, 0u64);
    for node in &nodes {
        let pids = server_pids(node);
        procs += pids.len();
        kb += pids.iter().map(|p| pss_kb(*p)).sum::<u64>();
    }

    // CPU per 10,000 rows written.
    let per_node = cpu_rows / n as u64;
    let written = per_node * n as u64;
    let before = replication_cpu(&nodes);
    write_bulk(&nodes, per_node, 1000);
    wait_rows(&nodes, written);
    let after = replication_cpu(&nodes);
    let cpu = cpu_delta(&before, &after);
    let per = |c: &str| cpu.get(c).copied().unwrap_or(0.0) / n as f64 * 10_000.0 / written as f64;

    // Lag at a fixed total rate.
    for node in &nodes {
        let mut sql = String::from(
            "SET federation.unsafe_ddl = on;
             CREATE UNLOGGED TABLE lag_log (lag_ms float8);
             CREATE FUNCTION log_lag() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.lag_log VALUES (extract(epoch FROM clock_timestamp() - NEW.created_at) * 1000); RETURN NULL; END $$;",
        );
        for other in &nodes {
            if other.name != node.name {
                let p = format!("t_{}", other.name);
                write!(
                    sql,
                    "CREATE TRIGGER log_lag AFTER INSERT ON {p} FOR EACH ROW EXECUTE FUNCTION log_lag();
                     ALTER TABLE {p} ENABLE ALWAYS TRIGGER log_lag;"
                )
                .unwrap();
            }
        }
        sql.push_str("RESET federation.unsafe_ddl;");
        node.execute(&sql);
    }
    let lag_written = write_paced(&nodes, lag_rate / n as f64, lag_secs);
    wait_rows(&nodes, written + lag_written);
    let mut lags: Vec<f64> = vec![];
    for node in &nodes {
        for r in node.query("SELECT lag_ms::text FROM lag_log") {
            lags.push(r[0].as_deref().unwrap().parse().unwrap());
        }
        node.execute("SET federation.unsafe_ddl = on; DROP FUNCTION log_lag() CASCADE; RESET federation.unsafe_ddl");
    }
    lags.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        lags.len() as u64,
        lag_written * (n as u64 - 1),
        "every row written during the lag run reached every other node once"
    );

    // One more node joins once the federation holds join_rows rows.
    let join_s = if join_rows > 0 {
        let held = written + lag_written;
        let per_node = join_rows.saturating_sub(held) / n as u64;
        write_bulk(&nodes, per_node, 100_000);
        let total = held + per_node * n as u64;
        wait_rows(&nodes, total);
        let extra = start(&names(n + 1, n + 1));
        enable(&extra[0]);
        let t = Instant::now();
        join(&extra[0], &nodes[0]);
        let s = t.elapsed().as_secs_f64();
        assert_eq!(count(&extra[0]), total, "the new node holds every row");
        s
    } else {
        f64::NAN
    };

    Point {
        n,
        ready_s,
        join_s,
        procs: procs as f64 / n as f64,
        mem_mb: kb as f64 / 1024.0 / n as f64,
        decode: per("decode"),
        apply: per("apply"),
        p50: percentile(&lags, 0.5),
        p99: percentile(&lags, 0.99),
    }
}

/// A two-node federation holding `rows` rows; seconds for a third node to join it.
fn join_time(rows: u64) -> f64 {
    let nodes = start(&names(1, 2));
    for node in &nodes {
        enable(node);
    }
    join(&nodes[1], &nodes[0]);
    write_bulk(&nodes, rows / 2, 100_000);
    wait_rows(&nodes, rows / 2 * 2);
    let extra = start(&names(3, 3));
    enable(&extra[0]);
    let t = Instant::now();
    join(&extra[0], &nodes[0]);
    let s = t.elapsed().as_secs_f64();
    assert_eq!(
        count(&extra[0]),
        rows / 2 * 2,
        "the new node holds every row"
    );
    s
}

fn list(arg: Option<&String>, default: &str) -> Vec<u64> {
    arg.map(String::as_str)
        .unwrap_or(default)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().parse().expect("a comma-separated list of numbers"))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let counts = list(args.get(1), "2,3,5,8");
    let cpu_rows: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let lag_rate: f64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(200.0);
    let lag_secs: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(20);
    let join_rows: u64 = args
        .get(5)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let sizes = list(args.get(6), "100000,300000,1000000");
    let origin_any = std::env::var("BENCH_ORIGIN").as_deref() == Ok("any");

    let probe = start(&names(0, 0));
    let major = probe[0].major();
    let origin = major >= 16;
    drop(probe);
    let label = match (origin, origin_any) {
        (false, _) => format!("PostgreSQL {major} (no origin filter before 16: origin = any)"),
        (true, false) => format!("PostgreSQL {major}, subscriptions with origin = none"),
        (true, true) => format!("PostgreSQL {major}, subscriptions switched to origin = any"),
    };
    println!("# Federation size: {label}\n");
    println!(
        "{cpu_rows} rows written for the CPU figures (1,000-row transactions spread over all nodes); \
         lag at {lag_rate} rows/s in all for {lag_secs} s; one more node joins at {join_rows} rows.\n"
    );

    let mut points = vec![];
    for &n in &counts {
        let p = measure(
            n as usize, cpu_rows, lag_rate, lag_secs, join_rows, origin_any,
        );
        eprintln!(
            "N = {}: ready {:.1} s, join {:.1} s, decode {:.3} s, apply {:.3} s per node per 10k rows, lag p50 {:.1} ms p99 {:.1} ms",
            p.n, p.ready_s, p.join_s, p.decode, p.apply, p.p50, p.p99
        );
        points.push(p);
    }

    println!("| N | empty to ready, s | one more joins (1M rows), s | processes per node | memory per node, MB (PSS) | decoding CPU s per node per 10k rows | apply CPU s per node per 10k rows | lag p50 ms | lag p99 ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in &points {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.3} | {:.3} | {:.1} | {:.1} |",
            p.n, p.ready_s, p.join_s, p.procs, p.mem_mb, p.decode, p.apply, p.p50, p.p99
        );
    }
    let b = points[0].clone();
    println!("\nRatios against N = {}:\n", b.n);
    println!("| N | N-1 ratio (links per node) | ready | join | processes | memory | decoding CPU | apply CPU | lag p50 | lag p99 |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in &points {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            p.n,
            (p.n - 1) as f64 / (b.n - 1) as f64,
            p.ready_s / b.ready_s,
            p.join_s / b.join_s,
            p.procs / b.procs,
            p.mem_mb / b.mem_mb,
            p.decode / b.decode,
            p.apply / b.apply,
            p.p50 / b.p50,
            p.p99 / b.p99
        );
    }

    let mut joins = vec![];
    if !sizes.is_empty() {
        println!("\nJoin time against data size (a third node joins a two-node federation):\n");
        println!("| rows | join s | s per 100k rows |");
        println!("|---:|---:|---:|");
        for &rows in &sizes {
            let s = join_time(rows);
            println!("| {rows} | {s:.1} | {:.2} |", s / rows as f64 * 100_000.0);
            joins.push((rows, s));
        }
    }

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench_scale");
    std::fs::create_dir_all(&dir).unwrap();
    let tag = format!("pg{major}{}", if origin_any { "-origin-any" } else { "" });
    let mut tsv = String::from("n\tready_s\tjoin_s\tprocs\tmem_mb\tdecode\tapply\tp50\tp99\n");
    for p in &points {
        writeln!(
            tsv,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            p.n, p.ready_s, p.join_s, p.procs, p.mem_mb, p.decode, p.apply, p.p50, p.p99
        )
        .unwrap();
    }
    std::fs::write(dir.join(format!("scale-{tag}.tsv")), tsv).unwrap();
    if !joins.is_empty() {
        let mut tsv = String::from("rows\tjoin_s\n");
        for (r, s) in &joins {
            writeln!(tsv, "{r}\t{s}").unwrap();
        }
        std::fs::write(dir.join(format!("join-{tag}.tsv")), tsv).unwrap();
    }
    eprintln!("data: {}", dir.display());
}
