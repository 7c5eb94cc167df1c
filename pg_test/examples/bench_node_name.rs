//! Benchmark (not a test): the cost of one `federation.node_name()` call next to
//! `current_setting('federation.node_name')`, side by side on the same server in the same run.
//!
//!   cargo run --release -p pg_test --example bench_node_name [calls_per_round] [rounds]
//!
//! Each round evaluates each expression once per row over generate_series(1, N), in rotating
//! order; the report gives the median time per round, the cost per call net of a constant
//! baseline, and the ratio node_name() / current_setting().

use pg_test::{Node, NodeSpec};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(7);
    let node = Node::start(&NodeSpec::guc("east"));
    let variants = [
        ("constant (baseline)", "'east'::text"),
        (
            "current_setting('federation.node_name')",
            "current_setting('federation.node_name')",
        ),
        ("federation.node_name()", "federation.node_name()"),
    ];
    let mut client = node.connect().expect("connect");
    client
        .batch_execute("SET max_parallel_workers_per_gather = 0")
        .unwrap();
    let mut times: Vec<Vec<f64>> = vec![vec![]; variants.len()];
    for round in 0..rounds + 1 {
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let sql = format!(
                "SELECT count({}) FROM generate_series(1, {n})",
                variants[i].1
            );
            let t = Instant::now();
            client.simple_query(&sql).unwrap();
            if round > 0 {
                times[i].push(t.elapsed().as_secs_f64()); // round 0 warms up
            }
        }
    }
    let med: Vec<f64> = times
        .iter_mut()
        .map(|v| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        })
        .collect();
    println!(
        "federation.node_name() vs current_setting(): {n} calls per round, {rounds} rounds, median"
    );
    println!(
        "{:<42} {:>12} {:>14}",
        "expression", "ms/round", "ns/call net"
    );
    for (i, (name, _)) in variants.iter().enumerate() {
        let net = (med[i] - med[0]) / n as f64 * 1e9;
        println!("{:<42} {:>12.1} {:>14.1}", name, med[i] * 1e3, net);
    }
    let net_cs = med[1] - med[0];
    let net_nn = med[2] - med[0];
    println!(
        "ratio node_name() / current_setting(), per call net of baseline: {:.2}",
        net_nn / net_cs
    );
    println!(
        "ratio node_name() / current_setting(), whole query: {:.2}",
        med[2] / med[1]
    );
}
