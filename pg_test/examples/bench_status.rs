//! Benchmark (not a test): what one call of `federation.health()` and `federation.status`
//! costs on a five-node federation, with the functions' own `jit = off` (0.2.0) next to the
//! same functions with that setting reset (as in 0.1.0, JIT at the server's defaults), side by
//! side on the same node in the same run, in alternating order.
//!
//!   cargo run --release -p pg_test --example bench_status [calls_per_round] [rounds]

use pg_test::scenario::joined;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let calls: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let c = joined(&["n1", "n2", "n3", "n4", "n5"]);
    let node = &c.nodes[0];
    // Wait for a probe of every member, so status() has its full input.
    pg_test::wait_until(
        "a probe of every member",
        std::time::Duration::from_secs(60),
        &[node],
        || {
            Ok(node
                .scalar("SELECT count(*) FROM federation.peer_probe")
                .as_deref()
                == Some("4"))
        },
    );
    let queries = [
        ("health()", "SELECT * FROM federation.health()"),
        ("status", "SELECT * FROM federation.status"),
    ];
    let settings = [
        ("jit = off in the function (0.2.0)", "ALTER FUNCTION federation.status() SET jit = off; ALTER FUNCTION federation.health() SET jit = off"),
        ("server defaults (0.1.0)", "ALTER FUNCTION federation.status() RESET jit; ALTER FUNCTION federation.health() RESET jit"),
    ];
    println!("# health() and status on 5 nodes: ms per call, median of {rounds} rounds of {calls} calls\n");
    println!("| query | {} | {} | ratio |", settings[0].0, settings[1].0);
    println!("|---|---:|---:|---:|");
    for (qname, q) in queries {
        let mut times: [Vec<f64>; 2] = [vec![], vec![]];
        for round in 0..rounds {
            for k in 0..2 {
                let i = (k + round) % 2;
                node.execute(settings[i].1);
                let mut client = node.connect().expect("connect"); // a new session: no cached plan
                client.simple_query(q).expect("warm-up");
                let t = Instant::now();
                for _ in 0..calls {
                    client.simple_query(q).expect("query");
                }
                times[i].push(t.elapsed().as_secs_f64() * 1000.0 / calls as f64);
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let (off, on) = (med(&mut times[0]), med(&mut times[1]));
        println!("| {qname} | {off:.2} | {on:.2} | {:.0}x |", on / off);
    }
    node.execute(settings[0].1);
}
