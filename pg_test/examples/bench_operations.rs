//! Benchmark (not a test): verify() and resync() on a three-node federation.
//!
//!   scripts/bench.sh operations
//!   cargo run --release -p pg_test --example bench_operations [rows] [rounds]
//!
//! east owns `rows` rows (default 1,000,000), central and west 1,000 each. Side by side in
//! the same run, medians of `rounds` (default 3):
//! 1. `SELECT * FROM federation.verify()` on east, next to `SELECT count(*) FROM hippos` on east
//!    and to the count-and-hash verify computes for one copy of east's partition;
//! 2. `SELECT federation.resync('east', 'hippos')` on west (rebuilds west's copy of east's
//!    partition), next to a plain COPY of the same rows from east into a table on west with
//!    the same primary key; and the time until west's worker has compared what the old copy
//!    held with the fresh one (0.5.0: a resync keeps it; the comparison runs after it
//!    returns, and each round waits for it).

use pg_test::scenario::{assert_converged, join, HIPPOS};
use pg_test::{Cluster, NodeSpec};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn shown(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let conf = "max_wal_size = '4GB'";
    let c = Cluster::start(&["east", "central", "west"].map(|n| NodeSpec::guc(n).with_conf(conf)));
    let (east, central, west) = (c.node("east"), c.node("central"), c.node("west"));
    for n in [east, central, west] {
        n.execute(HIPPOS);
    }
    join(central, east);
    join(west, east);
    east.execute(&format!(
        "INSERT INTO hippos (value) SELECT g FROM generate_series(1, {rows}) g"
    ));
    for n in [central, west] {
        n.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 1000) g");
    }
    assert_converged(&c, "hippos");
    for n in [east, central, west] {
        n.execute("VACUUM ANALYZE hippos");
    }
    let total = east.scalar("SELECT count(*) FROM hippos").unwrap();

    let (mut counts, mut hashes, mut verifies) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        east.scalar("SELECT count(*) FROM hippos");
        counts.push(t.elapsed().as_secs_f64());
        // What verify computes for one copy of one partition on one node.
        let t = Instant::now();
        east.scalar("SELECT count(*), sum(hashtextextended(ROW(created_at, id, node_name, value)::text, 0)::numeric) FROM hippos_east");
        hashes.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let bad = east
            .row_count("SELECT * FROM federation.verify() WHERE status NOT IN ('owner', 'match')");
        verifies.push(t.elapsed().as_secs_f64());
        assert_eq!(bad, 0, "verify must report match everywhere");
    }

    let (mut copies, mut resyncs, mut compared) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        west.execute("CREATE TABLE copied (id uuid PRIMARY KEY, value numeric, created_at timestamptz NOT NULL, node_name text NOT NULL)");
        let t = Instant::now();
        pg_test::copy_rows(
            east,
            "SELECT id, value, created_at, node_name FROM hippos_east",
            west,
            "copied",
        );
        copies.push(t.elapsed().as_secs_f64());
        west.execute("DROP TABLE copied");
        west.execute("CHECKPOINT");
        let t = Instant::now();
        west.execute("SELECT federation.resync('east', 'hippos')");
        resyncs.push(t.elapsed().as_secs_f64());
        assert_eq!(
            west.scalar("SELECT count(*) FROM hippos_east"),
            east.scalar("SELECT count(*) FROM hippos_east")
        );
        // What the old copy held is compared with the fresh one by the worker, after the
        // resync returns (0.5.0); the next round starts once that is done.
        pg_test::wait_until(
            "west's worker to compare the kept copy",
            std::time::Duration::from_secs(600),
            &[west],
            || Ok(west.row_count("SELECT 1 FROM federation.kept_copy") == 0),
        );
        compared.push(t.elapsed().as_secs_f64());
        assert_eq!(west.row_count("SELECT 1 FROM federation.set_aside"), 0);
    }
    let east_rows = east.scalar("SELECT count(*) FROM hippos_east").unwrap();
    let (count, verify, copy, resync) = (
        median(counts.clone()),
        median(verifies.clone()),
        median(copies.clone()),
        median(resyncs.clone()),
    );
    println!("# verify() and resync(), three nodes, {total} rows ({east_rows} owned by east)\n");
    println!("| measure | seconds (median; runs) |");
    println!("|---|---|");
    println!(
        "| `SELECT count(*) FROM hippos` on east | {count:.2} ({}) |",
        shown(&counts)
    );
    println!(
        "| `federation.verify()` on east: 3 partitions x 3 nodes | {verify:.2} ({}) |",
        shown(&verifies)
    );
    println!("| verify / count(*) | {:.2} |", verify / count);
    let hash = median(hashes.clone());
    println!("| count and hash of east's partition on east (one copy; verify reads three, one per node, the replicas at once) | {hash:.2} ({}) |", shown(&hashes));
    println!(
        "| verify / one copy's count and hash | {:.2} |",
        verify / hash
    );
    println!(
        "| plain COPY of east's {east_rows} rows from east to a table on west | {copy:.2} ({}) |",
        shown(&copies)
    );
    println!(
        "| `federation.resync('east', 'hippos')` on west | {resync:.2} ({}) |",
        shown(&resyncs)
    );
    println!("| resync / COPY | {:.2} |", resync / copy);
    println!(
        "| resync, until the worker has compared what the old copy held (background) | {:.2} ({}) |",
        median(compared.clone()),
        shown(&compared)
    );
}
