//! Benchmark (not a test): single-row INSERT into a federated table whose identity column is
//! federation-unique (docs/keys.md: the node's own sequence range) next to an ordinary table
//! with an ordinary identity column, on the same node of a two-node federation, side by side
//! in one run, in alternating order. Target: federated / ordinary >= 0.95.
//!
//! The insert path is what is measured: the other node is stopped after the join, so that
//! its apply worker and this node's walsender (which would share the machine's two cores with
//! pgbench and the backends) do not run during the rounds.
//!
//!   scripts/bench.sh keys
//!   cargo run --release -p pg_test --example bench_keys [seconds_per_run] [rounds]

use pg_test::bench::{median, pgbench};
use pg_test::scenario::join;
use pg_test::{Cluster, NodeSpec};

const COLS: &str = "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, value numeric, created_at timestamptz NOT NULL DEFAULT now()";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let spec = |n: &str| {
        NodeSpec::guc(n)
            .with_conf("max_wal_size = '4GB'")
            .with_conf("checkpoint_timeout = '30min'")
    };
    let c = Cluster::start(&[spec("east"), spec("west")]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in [east, west] {
        n.execute(&format!(
            "CREATE TABLE b_federated ({COLS}); SELECT federation.enable('b_federated')"
        ));
    }
    east.execute(&format!("CREATE TABLE a_plain ({COLS})"));
    join(west, east);
    west.stop();
    let range = east
        .scalar("SELECT seqmin || '..' || seqmax FROM pg_sequence WHERE seqrelid = pg_get_serial_sequence('b_federated', 'id')::regclass")
        .unwrap_or_default();
    println!("# Single-row INSERT with an identity column: tps, {rounds} rounds of {secs} s, tables alternating\n");
    println!("federated table's sequence on east (node number 1): {range}\n");
    println!("| clients | round | (a) ordinary identity tps | (b) federation-unique identity tps | (b)/(a) |");
    println!("|---:|---:|---:|---:|---:|");
    let tables = ["a_plain", "b_federated"];
    for clients in [1u32, 2] {
        let mut ratios = vec![];
        let mut tps: [Vec<f64>; 2] = [vec![], vec![]];
        for round in 0..rounds {
            let mut this = [0.0; 2];
            for k in 0..2 {
                let i = (k + round) % 2;
                for sql in [
                    "TRUNCATE a_plain",
                    "TRUNCATE b_federated_east",
                    "VACUUM ANALYZE a_plain, b_federated",
                    "CHECKPOINT",
                ] {
                    east.execute(sql);
                }
                let (t, _) = pgbench(
                    east,
                    &format!("INSERT INTO {} (value) VALUES (random());\n", tables[i]),
                    clients,
                    secs,
                    None,
                );
                this[i] = t;
                tps[i].push(t);
            }
            let r = this[1] / this[0];
            ratios.push(r);
            println!(
                "| {clients} | {} | {:.0} | {:.0} | {r:.3} |",
                round + 1,
                this[0],
                this[1]
            );
        }
        let met = ratios.iter().filter(|r| **r >= 0.95).count();
        println!(
            "| {clients} | median | {:.0} | {:.0} | {:.3} ({met} of {rounds} rounds >= 0.95) |",
            median(&mut tps[0]),
            median(&mut tps[1]),
            median(&mut ratios)
        );
    }
    // Every value the federated table got on east is in east's range.
    let outside = east
        .scalar("SELECT count(*) FROM b_federated WHERE node_name = 'east' AND id >> 48 <> 1")
        .unwrap_or_default();
    println!("\nrows of east outside its range: {outside}");
}
