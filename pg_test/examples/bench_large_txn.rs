//! Benchmark (not a test): one large transaction (2,000,000 rows in one INSERT, by default)
//! written on east and replicated to west, side by side in one run, in alternating order:
//! (a) a hand-made native publication and subscription with `streaming = on`, (b) a federated
//! table (0.3.0: subscriptions stream), and once (c) the same federated table with its
//! subscription set back to `streaming = off` (as 0.2.0 made it). Lag is the time from the
//! COMMIT returning on east to west's slot on east confirming the commit's position; spill
//! and stream bytes are the slot's own statistics (pg_stat_replication_slots).
//! Target: (b) within 1.3x of (a).
//!
//!   scripts/bench.sh large_txn
//!   cargo run --release -p pg_test --example bench_large_txn [rows] [rounds]

use pg_test::bench::median;
use pg_test::scenario::join;
use pg_test::{wait_until, Cluster, Node, NodeSpec};
use std::time::{Duration, Instant};

const COLS: &str =
    "id bigint NOT NULL, value numeric, created_at timestamptz NOT NULL DEFAULT now()";

/// (spill_bytes, stream_bytes) of a slot on east.
fn slot_stats(east: &Node, slot: &str) -> (i64, i64) {
    east.execute("SELECT pg_stat_clear_snapshot()");
    let r = east.query(&format!(
        "SELECT coalesce(spill_bytes, 0), coalesce(stream_bytes, 0) FROM pg_stat_replication_slots WHERE slot_name = '{slot}'"
    ));
    let get = |i: usize| {
        r.first()
            .and_then(|row| row[i].clone())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get(0), get(1))
}

/// Writes `rows` rows into `table` on east in one transaction and returns the seconds from
/// its COMMIT to `slot` confirming it, and the MB the slot spilled and streamed meanwhile.
fn one(c: &Cluster, table: &str, slot: &str, rows: u64) -> (f64, f64, f64) {
    let east = c.node("east");
    let (spill0, stream0) = slot_stats(east, slot);
    east.execute(&format!(
        "INSERT INTO {table} (id, value) SELECT g, g FROM generate_series(1, {rows}) g"
    ));
    let committed = Instant::now();
    let lsn = east.scalar("SELECT pg_current_wal_lsn()::text").unwrap();
    wait_until(
        &format!("{slot} to confirm {lsn}"),
        Duration::from_secs(1800),
        &c.all(),
        || {
            Ok(east
                .scalar(&format!(
                    "SELECT confirmed_flush_lsn >= '{lsn}' FROM pg_replication_slots WHERE slot_name = '{slot}'"
                ))
                .as_deref()
                == Some("t"))
        },
    );
    let lag = committed.elapsed().as_secs_f64();
    // The statistics are sent when the walsender is idle again: wait until they move.
    let mut stats = slot_stats(east, slot);
    wait_until(
        "the slot's statistics",
        Duration::from_secs(30),
        &c.all(),
        || {
            stats = slot_stats(east, slot);
            Ok(stats != (spill0, stream0))
        },
    );
    let mb = |b: i64| b as f64 / 1048576.0;
    (lag, mb(stats.0 - spill0), mb(stats.1 - stream0))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let spec = |n: &str| {
        NodeSpec::guc(n)
            .with_conf("max_wal_size = '8GB'")
            .with_conf("checkpoint_timeout = '30min'")
    };
    let c = Cluster::start(&[spec("east"), spec("west")]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in [east, west] {
        n.execute(&format!(
            "CREATE TABLE big ({COLS}, PRIMARY KEY (id)); SELECT federation.enable('big');
             CREATE TABLE native_big ({COLS}, PRIMARY KEY (id))"
        ));
    }
    join(west, east);
    east.execute("CREATE PUBLICATION native_pub FOR TABLE native_big");
    west.execute(&format!(
        "CREATE SUBSCRIPTION native_sub CONNECTION '{}' PUBLICATION native_pub WITH (streaming = on)",
        east.conninfo()
    ));
    let fed_slot = east
        .scalar("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'federation%'")
        .expect("the federated slot on east");
    let fed_sub = west
        .scalar("SELECT subname FROM pg_subscription WHERE subname LIKE 'federation%'")
        .expect("the federated subscription on west");
    wait_until(
        "the native subscription's slot",
        Duration::from_secs(60),
        &c.all(),
        || {
            Ok(east
                .scalar("SELECT active FROM pg_replication_slots WHERE slot_name = 'native_sub'")
                .as_deref()
                == Some("t"))
        },
    );
    let work_mem = east
        .scalar("SHOW logical_decoding_work_mem")
        .unwrap_or_default();
    println!(
        "# One transaction of {rows} rows, east to west: seconds from COMMIT to west confirming it ({rounds} rounds, alternating)\n"
    );
    println!("logical_decoding_work_mem = {work_mem}\n");
    println!("| round | (a) native, streaming on: s | spilled MB | streamed MB | (b) federated: s | spilled MB | streamed MB | (b)/(a) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    // (table written, table truncated before each round, slot)
    let tables = [
        ("native_big", "native_big", "native_sub"),
        ("big", "big_east", fed_slot.as_str()),
    ];
    let mut ratios = vec![];
    let mut lags: [Vec<f64>; 2] = [vec![], vec![]];
    for round in 0..rounds {
        let mut this = [(0.0, 0.0, 0.0); 2];
        for k in 0..2 {
            let i = (k + round) % 2;
            let (table, truncated, slot) = tables[i];
            for sql in [format!("TRUNCATE {truncated}"), "CHECKPOINT".to_string()] {
                east.execute(&sql);
            }
            this[i] = one(&c, table, slot, rows);
            lags[i].push(this[i].0);
        }
        let r = this[1].0 / this[0].0;
        ratios.push(r);
        println!(
            "| {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {r:.2} |",
            round + 1,
            this[0].0,
            this[0].1,
            this[0].2,
            this[1].0,
            this[1].1,
            this[1].2
        );
    }
    let met = ratios.iter().filter(|r| **r <= 1.3).count();
    println!(
        "| median | {:.1} | | | {:.1} | | | {:.2} ({met} of {rounds} rounds <= 1.3) |",
        median(&mut lags[0]),
        median(&mut lags[1]),
        median(&mut ratios)
    );

    // (c) As 0.2.0 made it: the federated subscription without streaming.
    west.execute(&format!(
        "ALTER SUBSCRIPTION \"{fed_sub}\" SET (streaming = off)"
    ));
    east.execute("TRUNCATE big_east");
    east.execute("CHECKPOINT");
    let (lag, spill, stream) = one(&c, "big", &fed_slot, rows);
    println!(
        "\n(c) federated with streaming = off (0.2.0): {lag:.1} s, spilled {spill:.0} MB, streamed {stream:.0} MB"
    );
    west.execute("DROP SUBSCRIPTION native_sub");
}
