//! Benchmark (not a test): repairing a copy by difference against copying it afresh.
//!
//!   scripts/bench.sh repair
//!   cargo run --release -p pg_test --example bench_repair [rows] [changed] [rounds]
//!
//! A two-node federation; east owns `rows` rows (default 1,000,000). Each round damages
//! west's copy of east's partition behind replication's back in `changed` rows (default
//! 1,000: half deleted, half changed: what a copy misses after a failover to a standby that
//! lagged by that much), then repairs it, both ways, in alternating order:
//! - `federation.resync('east', 'hippos')`: the copy emptied (what it held kept) and copied
//!   afresh; timed until it returns, and until the worker has compared what it kept;
//! - `federation.resync('east', mode => 'diff')`: compared on a new slot's snapshot, only
//!   what differs moved (the worker's repair after a failover).
//! Prints every round's seconds and the ratio diff / copy; the target is 0.2.

use pg_test::scenario::assert_converged;
use pg_test::{wait_until, Node};
use std::time::{Duration, Instant};

fn damage(west: &Node, changed: u64) {
    let half = changed / 2;
    west.execute(&format!(
        "SET session_replication_role = replica;
         DELETE FROM hippos_east WHERE id IN (SELECT id FROM hippos_east ORDER BY value LIMIT {half});
         UPDATE hippos_east SET value = -value WHERE id IN (SELECT id FROM hippos_east ORDER BY value DESC LIMIT {});
         RESET session_replication_role;
         CHECKPOINT",
        changed - half
    ));
}

fn repaired(east: &Node, west: &Node) {
    let bad = east.query(
        "SELECT partition, node, status, detail FROM federation.verify('hippos') WHERE status NOT IN ('owner', 'match')",
    );
    if !bad.is_empty() {
        let q = "SELECT t::text FROM hippos_east t ORDER BY 1";
        let (a, b) = (east.query(q), west.query(q));
        let a: std::collections::BTreeSet<_> = a.into_iter().collect();
        let b: std::collections::BTreeSet<_> = b.into_iter().collect();
        let only_east: Vec<_> = a.difference(&b).take(5).collect();
        let only_west: Vec<_> = b.difference(&a).take(5).collect();
        panic!("the copy matches after the repair: {bad:?}\nonly on east: {only_east:?}\nonly on west: {only_west:?}");
    }
    // The changed rows' old versions are kept aside; the next round starts clean.
    wait_until(
        "west's worker to compare what the copy held",
        Duration::from_secs(600),
        &[west],
        || Ok(west.row_count("SELECT 1 FROM federation.kept_copy") == 0),
    );
    west.execute("DELETE FROM federation.set_aside");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (rows, changed, rounds) = (arg(1, 1_000_000), arg(2, 1_000), arg(3, 3));
    let c = pg_test::bench::east_owning(rows, &[]);
    let (east, west) = (c.node("east"), c.node("west"));
    assert_converged(&c, "hippos");
    for n in [east, west] {
        n.execute("VACUUM ANALYZE hippos");
    }
    let major = east.major();
    let (mut copies, mut compared, mut diffs, mut ratios) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds as usize {
        let mut run = |diff: bool| {
            damage(west, changed);
            let t = Instant::now();
            if diff {
                west.execute("SELECT federation.resync('east', mode => 'diff')");
                diffs.push(t.elapsed().as_secs_f64());
            } else {
                west.execute("SELECT federation.resync('east', 'hippos')");
                copies.push(t.elapsed().as_secs_f64());
            }
            let kept = west.row_count("SELECT 1 FROM federation.set_aside");
            repaired(east, west);
            if !diff {
                compared.push(t.elapsed().as_secs_f64());
            }
            kept
        };
        // Alternate which goes first: the second runs on a warmer cache.
        let (kept_diff, kept_copy) = if round % 2 == 0 {
            let d = run(true);
            (d, run(false))
        } else {
            let c = run(false);
            (run(true), c)
        };
        assert_eq!(
            kept_diff,
            changed - changed / 2,
            "diff sets aside the changed rows' old versions"
        );
        let _ = kept_copy;
        ratios.push(diffs[round] / copies[round]);
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("# Repair of west's copy of east's partition: {rows} rows, {changed} damaged; PostgreSQL {major}\n");
    println!("| measure | seconds, each round |");
    println!("|---|---|");
    println!(
        "| `resync('east', 'hippos')` (copy afresh), until it returns | {} |",
        show(&copies)
    );
    println!(
        "| the same, until the worker has compared what the copy held | {} |",
        show(&compared)
    );
    println!("| `resync('east', mode => 'diff')` | {} |", show(&diffs));
    println!("| diff / copy (until it returns) | {} |", show(&ratios));
    for line in west
        .log_tail(400)
        .lines()
        .filter(|l| l.contains("by difference in"))
    {
        eprintln!("{line}");
    }
    println!(
        "| diff / copy (until compared) | {} |",
        show(
            &diffs
                .iter()
                .zip(&compared)
                .map(|(d, c)| d / c)
                .collect::<Vec<_>>()
        )
    );
}
