//! Benchmark (not a test): replication and joining.
//!
//!   scripts/bench.sh join
//!   cargo run --release -p pg_test --example bench_join [rows_for_join] [seconds_per_lag_run] [lag_rounds]
//!   (seconds_per_lag_run = 0 runs only the joining part; BENCH_TRACE=1 prints each join's
//!   timeline: subscription table states on east and south, member states, server log lines;
//!   BENCH_LAG_STREAMING=1 adds a fifth lag path, native with streaming = on subscriptions)
//!
//! 1. Lag from commit on east to visibility on west, p50/p99, at 1,000 rows/s and at the
//!    maximum rate (plus two hand-made baselines, see BENCHMARKS.md),
//!    maximum rate, for a federated table next to a hand-made native publication and
//!    subscription of an identical plain table from the same server to the same two
//!    subscribers (central and west), in the same run.
//!    An ALWAYS trigger on west's receiving table records clock_timestamp() - created_at for
//!    every applied row (both servers share this machine's clock); both paths carry it.
//! 2. Three empty servers (extension created) to a ready three-node federation.
//! 3. A fourth node joining a three-node federation holding N rows (default 1,000,000),
//!    seconds to ready, next to a plain COPY of the same rows between two servers: three
//!    rounds, each with a new server; then the last one leaves and rejoins (its old rows
//!    kept aside and compared), reported apart.

use pg_test::{Node, NodeSpec};
use std::time::{Duration, Instant};

const COLS: &str = "id uuid PRIMARY KEY DEFAULT gen_random_uuid(), value numeric, created_at timestamptz NOT NULL DEFAULT clock_timestamp()";
const COLS_NO_PK: &str = "id uuid NOT NULL DEFAULT gen_random_uuid(), value numeric, created_at timestamptz NOT NULL DEFAULT clock_timestamp()";

fn join(node: &Node, peer: &Node) -> Duration {
    let t = Instant::now();
    node.execute(&format!("SELECT federation.join('{}')", peer.conninfo()));
    node.execute("SELECT federation.wait_ready('30 min')");
    t.elapsed()
}

fn percentiles(node: &Node, kind: &str) -> (f64, f64, i64) {
    let r = node.query(&format!(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms), count(*)
         FROM lag_log WHERE kind = '{kind}'"
    ));
    let f = |i: usize| {
        r[0][i]
            .as_deref()
            .unwrap_or("0")
            .parse::<f64>()
            .unwrap_or(0.0)
    };
    (f(0), f(1), f(2) as i64)
}

/// Inserts into `table` on `east` for `secs` seconds, at `rate` rows/s (None: as fast as one
/// session can), one row per transaction. Returns rows written.
fn write_for(east: &Node, table: &str, secs: u64, rate: Option<u64>) -> u64 {
    let mut c = east.connect().unwrap();
    let stmt = c
        .prepare(&format!("INSERT INTO {table} (value) VALUES (1)"))
        .unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        c.execute(&stmt, &[]).unwrap();
        n += 1;
        if let Some(r) = rate {
            let due = start + Duration::from_micros(n * 1_000_000 / r);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait); // pacing the writer to a fixed rate
            }
        }
    }
    n
}

/// Paired: one transaction per tick writes a row into each of `tables` (order alternating),
/// `rate` transactions/s for `secs` seconds, so every path replicates the same commits under
/// the same load at the same moment and the machine's noise falls on all alike.
fn write_paired(east: &Node, tables: &[&str], secs: u64, rate: u64) -> u64 {
    let mut c = east.connect().unwrap();
    let stmts: Vec<_> = tables
        .iter()
        .map(|t| {
            c.prepare(&format!("INSERT INTO {t} (value) VALUES (1)"))
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let mut tx = c.transaction().unwrap();
        for k in 0..stmts.len() {
            tx.execute(&stmts[(k + n as usize) % stmts.len()], &[])
                .unwrap();
        }
        tx.commit().unwrap();
        n += 1;
        let due = start + Duration::from_micros(n * 1_000_000 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait); // pacing the writer to a fixed rate
        }
    }
    n
}

/// Waits until west has applied `n` rows of `kind` (bounded: 5 minutes).
fn await_applied(west: &Node, kind: &str, n: u64) {
    pg_test::wait_until(
        &format!("west to apply {n} {kind} rows"),
        Duration::from_secs(300),
        &[west],
        || {
            Ok(west
                .scalar(&format!(
                    "SELECT count(*) FROM lag_log WHERE kind = '{kind}'"
                ))
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= n)
        },
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let join_rows: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);

    // ---- 2. three empty servers to a ready federation (timed first: servers are fresh) ----
    let specs =
        ["east", "central", "west"].map(|n| NodeSpec::guc(n).with_conf("max_wal_size = '4GB'"));
    let nodes: Vec<Node> = specs.iter().map(Node::start).collect();
    let (east, central, west) = (&nodes[0], &nodes[1], &nodes[2]);
    let t = Instant::now();
    for n in &nodes {
        n.execute(&format!(
            "CREATE TABLE hippos ({COLS}); SELECT federation.enable('hippos')"
        ));
    }
    join(central, east);
    join(west, central);
    let to_ready = t.elapsed();

    // ---- 1. lag ----
    // The native baseline: an identical plain table, published by east, subscribed by west.
    east.execute(&format!(
        "CREATE TABLE native ({COLS}); CREATE PUBLICATION native_pub FOR TABLE native;
         CREATE TABLE native_s ({COLS}); CREATE PUBLICATION native_s_pub FOR TABLE native_s"
    ));
    // BENCH_LAG_STREAMING=1 adds a diagnostic fifth path: the native one again, its
    // subscriptions with streaming = on as pg_federation's are. Off by default: two more
    // walsenders on east decode every row of every path and raise every path's lag.
    let streaming_path = std::env::var_os("BENCH_LAG_STREAMING").is_some();
    // Like the federated table, the native one goes to two subscribers (central and west),
    // so both paths put the same load on this 2-core machine; lag is measured on west.
    // A second baseline, the hand-made recipe without pg_federation: the same partitioned
    // shape, a partition published natively and applied into the same-named partition.
    // What federated adds over it is pg_federation's own cost.
    let recipe = format!(
        "CREATE TABLE recipe ({COLS_NO_PK}, node_name text NOT NULL DEFAULT 'east') PARTITION BY LIST (node_name);
         CREATE TABLE recipe_east PARTITION OF recipe (PRIMARY KEY (id)) FOR VALUES IN ('east');
         CREATE TABLE recipe_default PARTITION OF recipe (PRIMARY KEY (id)) DEFAULT;"
    );
    east.execute(&recipe);
    east.execute("CREATE PUBLICATION recipe_pub FOR TABLE recipe_east");
    // A diagnostic fourth path: the recipe again (guarded_*), plus pg_federation's guard
    // triggers on the receiving partition, which apply does not fire. Separates what the
    // guards' presence costs from the rest.
    let guarded = recipe.replace("recipe", "guarded");
    east.execute(&guarded);
    east.execute("CREATE PUBLICATION guarded_pub FOR TABLE guarded_east");
    for n in [central, west] {
        n.execute(&guarded);
        n.execute(
            "CREATE TRIGGER _federation_guard BEFORE INSERT OR UPDATE OR DELETE ON guarded_east FOR EACH ROW
               EXECUTE FUNCTION federation_internal.guard_foreign_row('east', 'public.guarded', 'node_name');
             CREATE TRIGGER _federation_guard_truncate BEFORE TRUNCATE ON guarded_east FOR EACH STATEMENT
               EXECUTE FUNCTION federation_internal.guard_truncate('east', 'public.guarded', 'public.guarded_west');",
        );
        n.execute(&format!(
            "CREATE SUBSCRIPTION guarded_sub_{} CONNECTION '{}' PUBLICATION guarded_pub",
            n.name,
            east.conninfo()
        ));
    }
    for n in [central, west] {
        n.execute(&format!("CREATE TABLE native ({COLS})"));
        n.execute(&format!(
            "CREATE SUBSCRIPTION native_sub_{} CONNECTION '{}' PUBLICATION native_pub",
            n.name,
            east.conninfo()
        ));
        n.execute(&format!("CREATE TABLE native_s ({COLS})"));
        if streaming_path {
            n.execute(&format!(
                "CREATE SUBSCRIPTION native_s_sub_{} CONNECTION '{}' PUBLICATION native_s_pub WITH (streaming = on)",
                n.name,
                east.conninfo()
            ));
        }
        n.execute(&recipe);
        n.execute(&format!(
            "CREATE SUBSCRIPTION recipe_sub_{} CONNECTION '{}' PUBLICATION recipe_pub",
            n.name,
            east.conninfo()
        ));
    }
    // The measuring trigger goes on west's copy only (a partition: pg_federation refuses DDL
    // there unless a superuser says it is meant for this node alone).
    west.execute(
        "SET federation.unsafe_ddl = on;
         CREATE TABLE lag_log (kind text, lag_ms float8);
         CREATE FUNCTION log_lag() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO public.lag_log VALUES (TG_ARGV[0], extract(epoch FROM clock_timestamp() - NEW.created_at) * 1000); RETURN NULL; END $$;
         CREATE TRIGGER log_lag AFTER INSERT ON hippos_east FOR EACH ROW EXECUTE FUNCTION log_lag('federated');
         ALTER TABLE hippos_east ENABLE ALWAYS TRIGGER log_lag;
         CREATE TRIGGER log_lag AFTER INSERT ON native FOR EACH ROW EXECUTE FUNCTION log_lag('native');
         ALTER TABLE native ENABLE ALWAYS TRIGGER log_lag;
         CREATE TRIGGER log_lag AFTER INSERT ON native_s FOR EACH ROW EXECUTE FUNCTION log_lag('native streaming');
         ALTER TABLE native_s ENABLE ALWAYS TRIGGER log_lag;
         CREATE TRIGGER log_lag AFTER INSERT ON recipe_east FOR EACH ROW EXECUTE FUNCTION log_lag('recipe');
         ALTER TABLE recipe_east ENABLE ALWAYS TRIGGER log_lag;
         CREATE TRIGGER log_lag AFTER INSERT ON guarded_east FOR EACH ROW EXECUTE FUNCTION log_lag('recipe+guards');
         ALTER TABLE guarded_east ENABLE ALWAYS TRIGGER log_lag;",
    );
    pg_test::wait_until(
        "the hand-made subscriptions to be ready",
        Duration::from_secs(60),
        &[east, central, west],
        || {
            Ok([central, west].iter().all(|n| {
                n.scalar("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'")
                    .as_deref()
                    == Some("0")
            }))
        },
    );
    let rounds: usize = if secs == 0 {
        0
    } else {
        args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3)
    }; // 0 seconds: skip the lag part
    println!("# Replication lag, east -> west: {rounds} rounds of {secs} s per path and load, order alternating, one row per transaction\n");
    println!("| load | path | rows | rows/s | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut summary = vec![];
    for (label, rate) in [
        ("1,000 rows/s", Some(1000)),
        ("maximum rate (1 writer)", None),
    ] {
        if rounds == 0 {
            break;
        }
        west.execute("TRUNCATE lag_log");
        let mut paths = vec![
            ("native", "native"),
            ("federated", "hippos"),
            ("recipe", "recipe"),
            ("recipe+guards", "guarded"),
        ];
        if streaming_path {
            paths.push(("native streaming", "native_s"));
        }
        let mut written = vec![0u64; paths.len()];
        for round in 0..rounds {
            for k in 0..paths.len() {
                let i = (k + round) % paths.len();
                let (kind, table) = paths[i];
                written[i] += write_for(east, table, secs, rate);
                await_applied(west, kind, written[i]);
            }
        }
        let mut row = vec![];
        for (i, (kind, _)) in paths.iter().enumerate() {
            let (p50, p99, count) = percentiles(west, kind);
            let per_s = written[i] as f64 / (rounds as f64 * secs as f64);
            println!("| {label} | {kind} | {count} | {per_s:.0} | {p50:.2} | {p99:.2} |");
            row.push((p50, p99, per_s));
        }
        summary.push((label, row));
    }
    if rounds > 0 {
        // Paired: the federated table and the native one written in the same transactions.
        west.execute("TRUNCATE lag_log");
        let mut n = 0;
        for _ in 0..rounds {
            n += write_paired(east, &["hippos", "native"], secs, 1000);
        }
        await_applied(west, "federated", n);
        await_applied(west, "native", n);
        let mut row = vec![];
        for kind in ["native", "federated"] {
            let (p50, p99, count) = percentiles(west, kind);
            let per_s = n as f64 / (rounds as f64 * secs as f64);
            println!(
                "| 1,000 rows/s paired | {kind} | {count} | {per_s:.0} | {p50:.2} | {p99:.2} |"
            );
            row.push((p50, p99, per_s));
        }
        row.push(row[0]); // no recipe path in the paired run: its column repeats native
        summary.push(("1,000 rows/s paired (both tables in each transaction)", row));
    }
    if rounds == 0 {
        summary.clear();
    }
    println!("\n| load | p50 federated/native | p99 federated/native | rows/s federated/native | p50 federated/recipe | p99 federated/recipe |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, row) in &summary {
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            row[1].0 / row[0].0,
            row[1].1 / row[0].1,
            row[1].2 / row[0].2,
            row[1].0 / row[2].0,
            row[1].1 / row[2].1
        );
    }

    // ---- 3. a fourth node joins a federation holding join_rows rows ----
    for n in [central, west] {
        // One statement at a time: DROP SUBSCRIPTION refuses a transaction block.
        n.execute(&format!("DROP SUBSCRIPTION native_sub_{}", n.name));
        n.execute(&format!(
            "DROP SUBSCRIPTION IF EXISTS native_s_sub_{}",
            n.name
        ));
        n.execute(&format!("DROP SUBSCRIPTION recipe_sub_{}", n.name));
        n.execute(&format!("DROP SUBSCRIPTION guarded_sub_{}", n.name));
    }
    east.execute("TRUNCATE hippos_east"); // the lag runs' rows: replicated as a TRUNCATE
    for n in &nodes {
        n.execute(&format!(
            "INSERT INTO hippos (value) SELECT g FROM generate_series(1, {}) g",
            join_rows / 3
        ));
    }
    let want = (join_rows / 3 * 3).to_string();
    pg_test::wait_until(
        "every node to hold every row",
        Duration::from_secs(600),
        &[east, central, west],
        || {
            Ok(nodes
                .iter()
                .all(|n| n.scalar("SELECT count(*) FROM hippos").as_deref() == Some(want.as_str())))
        },
    );
    let total = east.scalar("SELECT count(*) FROM hippos").unwrap();
    // Not timed: the rows just written would otherwise be vacuumed and analyzed by
    // autovacuum on every server during the first round.
    for n in &nodes {
        n.execute("VACUUM (ANALYZE) hippos");
    }
    let new_south = || {
        let s = Node::start(&NodeSpec::guc("south").with_conf("max_wal_size = '4GB'"));
        s.execute(&format!(
            "CREATE TABLE hippos ({COLS}); SELECT federation.enable('hippos')"
        ));
        s
    };
    // Rounds 0-2: a new server, south, joins (the one before left and was stopped); each
    // round also a plain COPY of the same rows from east into a table on that server.
    // Medians reported. Round 3: the last south leaves and joins again, holding the rows
    // it had: join() keeps them aside to compare with the fresh copies (a rejoin, reported
    // apart).
    let mut copies = vec![];
    let mut joins = vec![];
    let mut checks = vec![];
    let mut rejoin = None;
    let mut south = new_south();
    for i in 0..4 {
        if i == 3 {
            south.execute("SELECT federation.leave()");
        } else if i > 0 {
            south.execute("SELECT federation.leave()");
            drop(south);
            south = new_south();
        }
        if i < 3 {
            // The baseline, next to each new server's join (the rejoin is compared with these).
            south.execute(&format!("CREATE TABLE copied ({COLS})"));
            let t = Instant::now();
            pg_test::copy_rows(
                east,
                "SELECT id, value, created_at FROM hippos",
                &south,
                "copied (id, value, created_at)",
            );
            copies.push(t.elapsed().as_secs_f64());
            south.execute("DROP TABLE copied");
        }
        south.execute("CHECKPOINT");
        let t = Instant::now();
        let tracer = std::env::var_os("BENCH_TRACE").map(|_| {
            eprintln!("join starts at {}", south.scalar("SELECT clock_timestamp()::text").unwrap());
            let (e, s) = (east.conninfo(), south.conninfo());
            std::thread::spawn(move || {
                let mut ce = postgres::Client::connect(&e, postgres::NoTls).unwrap();
                let mut cs = postgres::Client::connect(&s, postgres::NoTls).unwrap();
                let mut last = String::new();
                for _ in 0..1000 {
                    let q = "SELECT clock_timestamp()::text, coalesce(string_agg(s.subname || ':' || sr.srsubstate::text, ' ' ORDER BY s.subname), '') FROM pg_subscription s LEFT JOIN pg_subscription_rel sr ON sr.srsubid = s.oid WHERE s.subname LIKE 'federation%'";
                    let a = ce.query_one(q, &[]).unwrap();
                    let b = cs.query_one(q, &[]).unwrap();
                    let st = format!("east[{}] south[{}] ", a.get::<_, String>(1), b.get::<_, String>(1));
                    let st2 = st.clone() + &cs.query_one("SELECT coalesce(string_agg(node_name||':'||state::text, ' ' ORDER BY node_name), '') FROM federation.node", &[]).unwrap().get::<_, String>(0);
                    if st2 != last {
                        eprintln!("{} {}", a.get::<_, String>(0), st2);
                        last = st2;
                    }
                    if last.matches("ready").count() == 3 { break; }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        });
        south.execute(&format!("SELECT federation.join('{}')", west.conninfo()));
        let check = t.elapsed().as_secs_f64();
        south.execute("SELECT federation.wait_ready('30 min')");
        if i == 3 {
            rejoin = Some(t.elapsed().as_secs_f64());
        } else {
            checks.push(check);
            joins.push(t.elapsed().as_secs_f64());
        }
        if let Some(t) = tracer {
            t.join().unwrap();
            eprintln!(
                "ready at {}",
                south.scalar("SELECT clock_timestamp()::text").unwrap()
            );
            for n in [&south, east, central, west] {
                let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| {
                        l.contains("synchroniz")
                            || l.contains("both ways")
                            || l.contains("apply worker")
                            || l.contains("checkpoint")
                    })
                    .collect();
                eprintln!(
                    "--- {}\n{}",
                    n.name,
                    lines[lines.len().saturating_sub(12)..].join("\n")
                );
            }
        }
        assert_eq!(
            south.scalar("SELECT count(*) FROM hippos").unwrap(),
            total,
            "south must hold every row"
        );
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let shown = |v: &Vec<f64>| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (copy_all, join_all) = (shown(&copies), shown(&joins));
    let (copy, joined, check) = (med(&mut copies), med(&mut joins), med(&mut checks));
    println!("\n# Joining\n");
    println!("| measure | seconds |");
    println!("|---|---:|");
    println!(
        "| three empty servers (extension created) to a ready three-node federation | {:.2} |",
        to_ready.as_secs_f64()
    );
    println!(
        "| plain COPY of {total} rows from east to south (median; runs: {copy_all}) | {copy:.2} |"
    );
    println!("| south joins the federation holding those {total} rows, to ready (median; runs: {join_all}) | {joined:.2} |");
    println!("| of which join() itself (every check, before COMMIT) | {check:.2} |");
    println!("| join / COPY | {:.2} |", joined / copy);
    let rejoin = rejoin.expect("the rejoin round ran");
    println!("| the last south leaves and joins again, keeping the rows it held aside to compare (one run) | {rejoin:.2} |");
    println!("| rejoin / COPY | {:.2} |", rejoin / copy);
    drop(south);
}
