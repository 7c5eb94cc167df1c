//! Benchmark (not a test): the INSERT path of a federated table next to an ordinary table
//! and the original hand-made recipe, side by side on one server in one run; then enable()
//! on a 1,000,000-row table with a writer running.
//!
//!   scripts/bench.sh insert         (installs the release build, then runs this)
//!   cargo run --release -p pg_test --example bench_insert [seconds_per_run] [rounds] [soak_seconds]
//!   (rounds = 0: the instruction counts only)
//!
//! (a) ordinary table; (b) federated table (enable(), three partitions); (c) the recipe: LIST
//! partitions, DEFAULT partition, and an AFTER INSERT FOR EACH STATEMENT trigger that sets the
//! node name where it is NULL. Same columns: uuid primary key, value, timestamptz.
//!
//! First, instructions per INSERT (callgrind, a server in single-user mode running the same
//! prepared statements: the difference between 1,200 and 200 executions, so start-up cancels
//! out), which machine noise does not move; then tps with pgbench, every round's ratio
//! printed. Needs valgrind (scripts/bench.sh installs it).

use pg_test::bench::{instructions_single_user, median, pgbench};
use pg_test::{Node, NodeSpec};
use std::time::{Duration, Instant};

const COLS: &str = "id uuid NOT NULL DEFAULT gen_random_uuid(), value numeric, created_at timestamptz NOT NULL DEFAULT now()";

fn setup(node: &Node) {
    node.execute("INSERT INTO federation.node (node_name, state) VALUES ('west', 'ready')");
    node.execute(&format!("CREATE TABLE a_plain ({COLS}, PRIMARY KEY (id))"));
    node.execute(&format!(
        "CREATE TABLE b_federated ({COLS}, PRIMARY KEY (id))"
    ));
    node.execute("SELECT federation.enable('b_federated')");
    node.execute(&format!(
        "CREATE TABLE c_recipe ({COLS}, node_name text) PARTITION BY LIST (node_name);
         CREATE TABLE c_recipe_default PARTITION OF c_recipe (PRIMARY KEY (id)) DEFAULT;
         CREATE TABLE c_recipe_east PARTITION OF c_recipe (PRIMARY KEY (id)) FOR VALUES IN ('east');
         CREATE TABLE c_recipe_west PARTITION OF c_recipe (PRIMARY KEY (id)) FOR VALUES IN ('west');
         CREATE FUNCTION c_recipe_stamp() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN UPDATE c_recipe SET node_name = 'east' WHERE node_name IS NULL; RETURN NULL; END$$;
         CREATE TRIGGER c_recipe_stamp AFTER INSERT ON c_recipe FOR EACH STATEMENT EXECUTE FUNCTION c_recipe_stamp();"
    ));
}

fn reset(node: &Node) {
    for sql in [
        "TRUNCATE a_plain",
        "TRUNCATE b_federated_east",
        "TRUNCATE c_recipe",
        "VACUUM ANALYZE a_plain, b_federated, c_recipe",
        "CHECKPOINT",
    ] {
        node.execute(sql); // one by one: a multi-statement string runs as one transaction
    }
}

const TABLES: [&str; 3] = ["a_plain", "b_federated", "c_recipe"];

/// Instructions per INSERT statement (single-row) and per row (1,000-row), per table.
fn instructions() -> Vec<[f64; 3]> {
    let node = Node::start(&NodeSpec::guc("east"));
    setup(&node);
    node.stop();
    // (statement, executions in the short run, in the long run, rows per execution)
    let workloads = [
        (
            "INSERT INTO {t} (value) VALUES (random())",
            200u64,
            1200u64,
            1u64,
        ),
        (
            "INSERT INTO {t} (value) SELECT random() FROM generate_series(1, 1000)",
            5,
            25,
            1000,
        ),
    ];
    let mut out = vec![];
    let mut expected = [0u64; 3];
    for (stmt, short, long, rows) in workloads {
        let mut per = [0f64; 3];
        for (i, t) in TABLES.iter().enumerate() {
            let script = |n: u64| {
                let mut s = format!("PREPARE p AS {};\n", stmt.replace("{t}", t));
                for _ in 0..n {
                    s.push_str("EXECUTE p;\n");
                }
                s
            };
            let a = instructions_single_user(&node, &script(short));
            let b = instructions_single_user(&node, &script(long));
            per[i] = (b as f64 - a as f64) / ((long - short) * rows) as f64;
            expected[i] += (short + long) * rows;
        }
        out.push(per);
    }
    // Single-user mode goes on after an error: check that every row is there.
    node.start_again();
    for (i, t) in TABLES.iter().enumerate() {
        assert_eq!(
            node.scalar(&format!("SELECT count(*) FROM {t}")),
            Some(expected[i].to_string()),
            "every INSERT run under callgrind inserted its rows into {t}"
        );
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let soak: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(60);
    let ir = instructions();
    let node = Node::start(
        &NodeSpec::guc("east")
            .with_conf("max_wal_size = '4GB'")
            .with_conf("checkpoint_timeout = '30min'"),
    );
    setup(&node);
    let tables = TABLES;
    let workloads = [
        (
            "single-row INSERT",
            "INSERT INTO {t} (value) VALUES (random());\n",
        ),
        (
            "1,000-row INSERT ... SELECT",
            "INSERT INTO {t} (value) SELECT random() FROM generate_series(1, 1000);\n",
        ),
    ];
    println!(
        "# INSERT path: instructions per INSERT (single-row) and per row (1,000-row), callgrind\n"
    );
    println!("| workload | (a) ordinary | (b) federated | (c) recipe | (a)/(b) | (a)/(c) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (k, (wname, _)) in workloads.iter().enumerate() {
        let [a, b, c] = ir[k];
        println!(
            "| {wname} | {a:.0} | {b:.0} | {c:.0} | {:.3} | {:.3} |",
            a / b,
            a / c
        );
    }
    if rounds == 0 {
        return; // instruction counts only
    }
    println!(
        "\n# INSERT path: tps, median of {rounds} rounds of {secs} s, tables rotated each round\n"
    );
    println!("| workload | clients | (a) ordinary tps | (b) federated tps | (c) recipe tps | (b)/(a) | (c)/(a) | (b)/(a) of each round |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for (wname, script) in workloads {
        for clients in [1u32, 2] {
            let mut tps: Vec<Vec<f64>> = vec![vec![]; 3];
            for round in 0..rounds {
                for k in 0..3 {
                    let i = (k + round) % 3;
                    reset(&node);
                    let (t, _) = pgbench(
                        &node,
                        &script.replace("{t}", tables[i]),
                        clients,
                        secs,
                        None,
                    );
                    tps[i].push(t);
                }
            }
            let each: Vec<String> = (0..rounds)
                .map(|r| format!("{:.3}", tps[1][r] / tps[0][r]))
                .collect();
            let m: Vec<f64> = tps.iter_mut().map(|v| median(v)).collect();
            println!(
                "| {wname} | {clients} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} | {} |",
                m[0],
                m[1],
                m[2],
                m[1] / m[0],
                m[2] / m[0],
                each.join(", ")
            );
        }
    }

    println!("\n# Over a {soak}-second run: single-row INSERT, 1 client, tps per 10 s interval\n");
    println!("| table | intervals (tps) | last / first |");
    println!("|---|---|---:|");
    for t in tables {
        reset(&node);
        let (_, iv) = pgbench(
            &node,
            &format!("INSERT INTO {t} (value) VALUES (random());\n"),
            1,
            soak,
            Some(10),
        );
        let shown: Vec<String> = iv.iter().map(|v| format!("{v:.0}")).collect();
        let ratio = iv.last().unwrap_or(&0.0) / iv.first().unwrap_or(&1.0);
        println!("| {t} | {} | {ratio:.2} |", shown.join(", "));
    }

    // enable() on 1,000,000 rows, with a writer inserting into the same table throughout.
    println!("\n# enable() on a 1,000,000-row table\n");
    node.execute(&format!("CREATE TABLE big ({COLS}, PRIMARY KEY (id))"));
    node.execute("INSERT INTO big (value) SELECT g FROM generate_series(1, 1000000) g");
    node.execute("VACUUM ANALYZE big");
    node.execute("CHECKPOINT");
    let t = Instant::now();
    node.execute("SELECT count(*) FROM big");
    let scan = t.elapsed();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let mut writer = node.connect().unwrap();
    let handle = std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            writer
                .simple_query("INSERT INTO big (value) VALUES (-1)")
                .unwrap();
            worst = worst.max(t.elapsed());
            n += 1;
        }
        (worst, n)
    });
    std::thread::sleep(Duration::from_millis(500)); // let the writer run first
    let t = Instant::now();
    node.execute("SELECT federation.enable('big')");
    let enable = t.elapsed();
    std::thread::sleep(Duration::from_millis(500)); // and after
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, n) = handle.join().unwrap();
    let rows = node.scalar("SELECT count(*) FROM big_east").unwrap();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| enable() seconds | {:.2} |", enable.as_secs_f64());
    println!(
        "| SELECT count(*) of the same table, seconds | {:.2} |",
        scan.as_secs_f64()
    );
    println!(
        "| enable() / count(*) | {:.1} |",
        enable.as_secs_f64() / scan.as_secs_f64()
    );
    println!(
        "| longest single INSERT of a concurrent writer (blocked), seconds | {:.2} |",
        worst.as_secs_f64()
    );
    println!("| writer inserts during the run / rows in big_east after | {n} / {rows} |");
}
