//! Benchmark (not a test): a node's failover, from promotion to a healed federation.
//!
//!   scripts/bench.sh failover
//!   cargo run --release -p pg_test --example bench_failover [rows] [changed]
//!
//! Two nodes; east owns `rows` rows (default 1,000,000), west a few.
//! 1. Repair by difference (every major): east's standby stops following it; east changes
//!    `changed` rows (default 1,000), which reach west; east is killed and its standby promoted
//!    at its address. Seconds from the promotion until west's copy equals the new east's
//!    partition and neither node is CRITICAL (west keeps its versions of the changed rows
//!    aside: WARNING, by design), the rows west's repair copied (its log line), and, in the
//!    same run, a full `resync('east', 'hippos')` of the same partition.
//! 2. Failover slots (PostgreSQL 17+): east with `federation.failover_slots = on` and a
//!    slot-syncing standby (docs/runbook.md, section 13); east changes `changed` rows, is
//!    killed, its standby promoted. Seconds from the promotion until health is OK on both,
//!    and whether west's subscription to east was made anew (it must not be).

use pg_test::checks::digest;
use pg_test::scenario::wait_timeline_recorded;
use pg_test::{wait_until, Cluster, Node};
use std::time::{Duration, Instant};

fn federation(rows: u64, east_conf: &str) -> Cluster {
    let c = pg_test::bench::east_owning(rows, &[east_conf]);
    let (east, west) = (c.node("east"), c.node("west"));
    west.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 100) g");
    for n in [east, west] {
        n.execute("VACUUM ANALYZE hippos");
    }
    copies_equal(&[east, west]);
    wait_timeline_recorded(east);
    c
}

/// Waits until west's copy of east's partition equals east's (`east` may be the new one).
fn copies_equal(nodes: &[&Node]) {
    let (east, west) = (nodes[0], nodes[1]);
    wait_until(
        "west's copy of east's partition to equal east's",
        Duration::from_secs(600),
        nodes,
        || Ok(digest(east, "hippos_east") == digest(west, "hippos_east")),
    );
}

fn health(n: &Node) -> String {
    n.scalar("SELECT health FROM federation.health()")
        .unwrap_or_default()
}

/// Seconds after `since` (an epoch, from `clock`'s clock) of the first line of `node`'s log
/// logged after it that contains `marker`.
fn logged_at(clock: &Node, node: &Node, marker: &str, since: &str) -> Option<f64> {
    let since_f: f64 = since.parse().ok()?;
    for line in node.log_tail(20_000).lines().filter(|l| l.contains(marker)) {
        // log_line_prefix '%m ...': "2026-11-28 02:06:35.250 UTC [pid] ..."
        let stamp: String = line
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        let at = clock
            .scalar(&format!(
                "SELECT extract(epoch FROM '{}'::timestamptz)::text",
                stamp.replace('\'', "")
            ))
            .and_then(|v| v.parse::<f64>().ok())?;
        if at >= since_f {
            return Some(at - since_f);
        }
    }
    None
}

fn change(east: &Node, changed: u64) {
    east.execute(&format!(
        "UPDATE hippos SET value = -value WHERE id IN (SELECT id FROM hippos_east ORDER BY value DESC LIMIT {changed})"
    ));
}

/// Returns the PostgreSQL major it ran on.
fn by_difference(rows: u64, changed: u64) -> u32 {
    let c = federation(rows, "");
    let (east, west) = (c.node("east"), c.node("west"));
    let major = east.major();
    println!("# Failover of east ({rows} rows, {changed} changed that the standby lacks); PostgreSQL {major}\n");
    println!("| how | seconds from promotion to healed | what moved |");
    println!("|---|---|---|");
    let mut standby = Node::standby_of(east);
    standby.wait_replayed(east);
    standby.stop();
    change(east, changed);
    copies_equal(&[east, west]);
    let port = east.port;
    east.kill9();
    standby.move_to_port(port);
    let since = west
        .scalar("SELECT extract(epoch FROM clock_timestamp())::text")
        .unwrap();
    let t = Instant::now();
    standby.promote();
    let nodes = [&standby, west];
    // Waited for by west's log line and health(), which cost nothing next to the repair: the
    // bench's own digests of both copies (1.6 s each) would compete with the repair's for
    // this machine's two cores. The copies are compared once healed.
    let repaired = "repaired this node's copy of \"east\"'s partitions";
    wait_until(
        "west to log that it repaired its copy of east's partition",
        Duration::from_secs(600),
        &nodes,
        || Ok(logged_at(west, west, repaired, &since).is_some()),
    );
    let mut last_critical = String::new();
    wait_until("no node CRITICAL", Duration::from_secs(300), &nodes, || {
        for n in nodes {
            let r = n.query("SELECT health, reason FROM federation.health()");
            if r[0][0].as_deref() == Some("CRITICAL") {
                last_critical = format!(
                    "{} at {:.1} s: {}",
                    n.name,
                    t.elapsed().as_secs_f64(),
                    r[0][1].clone().unwrap_or_default()
                );
                return Ok(false);
            }
        }
        Ok(true)
    });
    let healed = t.elapsed().as_secs_f64();
    copies_equal(&nodes);
    let equal_at = t.elapsed().as_secs_f64();
    if !last_critical.is_empty() {
        println!("Last CRITICAL seen: {last_critical}\n");
    }
    // Where the time went: the servers' own log lines, in seconds after the promotion began.
    let probe = Instant::now();
    let _ = digest(west, "hippos_east");
    let one_digest = probe.elapsed().as_secs_f64();
    println!("Timeline (seconds after `pg_ctl promote` began; from the servers' logs):\n");
    for (who, node, marker) in [
        (
            "east",
            &standby,
            "database system is ready to accept connections",
        ),
        ("east", &standby, "this node writes on WAL timeline"),
        (
            "west",
            west,
            "repairing this node's copy of \"east\"'s partitions from it",
        ),
        (
            "west",
            west,
            "repaired this node's copy of \"east\"'s partitions",
        ),
        (
            "east",
            &standby,
            "repaired this node's copy of \"west\"'s partitions",
        ),
    ] {
        let at = logged_at(west, node, marker, &since);
        println!(
            "- {who}: \"{marker}\": {}",
            at.map_or("not logged".into(), |s| format!("{s:.1} s"))
        );
    }
    println!("- the bench saw west's repair logged and no node CRITICAL at {healed:.1} s, then the copies equal at {equal_at:.1} s (one digest of west's copy takes {one_digest:.1} s: the bench's own check)\n");
    let line = west
        .log_tail(2000)
        .lines()
        .filter(|l| l.contains("\"east\"'s partitions") && l.contains("by difference in"))
        .last()
        .map(|l| l[l.find("by difference").unwrap()..].to_string())
        .unwrap_or_else(|| "(no repair by difference logged)".into());
    let kept = west.row_count("SELECT 1 FROM federation.set_aside");
    // What monitoring pays meanwhile: health() on west, its rows set aside waiting for the DBA.
    let probe = Instant::now();
    for _ in 0..5 {
        health(west);
    }
    let per_call = probe.elapsed().as_secs_f64() * 1000.0 / 5.0;
    // The matching by a scan of the whole partition (0.8.0 before the lookup by key), same run.
    let probe = Instant::now();
    west.scalar(
        "SELECT count(*) FROM federation.set_aside s
         WHERE s.row_data IN (SELECT to_jsonb(p) FROM ONLY hippos_east p)",
    );
    println!(
        "health() on west while {kept} rows are set aside in east's name: {per_call:.0} ms a call (5 calls); the former matching of those rows alone, by a scan of the partition: {:.0} ms\n",
        probe.elapsed().as_secs_f64() * 1000.0
    );
    west.execute("DELETE FROM federation.set_aside");
    let t = Instant::now();
    west.execute("SELECT federation.resync('east', 'hippos')");
    let full = t.elapsed().as_secs_f64();
    wait_until(
        "west's worker to compare what the copy held",
        Duration::from_secs(600),
        &nodes,
        || Ok(west.row_count("SELECT 1 FROM federation.kept_copy") == 0),
    );
    let full_done = t.elapsed().as_secs_f64();
    println!("| repair by difference | {healed:.1} | {kept} rows of west's set aside; west's repair: {line} |");
    println!("| full `resync('east', 'hippos')` of the same partition, same run | {full:.1} (compared: {full_done:.1}) | ratio failover-to-healed / full resync: {:.2} ({:.2}) |", healed / full, healed / full_done);
    // The measure: the repair itself (west's log line) against the full resync.
    let own: Option<f64> = line
        .split("by difference in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok());
    if let Some(own) = own {
        println!(
            "\nwest's repair by difference / full resync (until it returns), same run: {own:.2} s / {full:.2} s = **{:.2}**",
            own / full
        );
    }
    major
}

fn with_failover_slots(rows: u64, changed: u64) {
    let c = federation(rows, "federation.failover_slots = on");
    let (east, west) = (c.node("east"), c.node("west"));
    let mut standby = Node::slot_syncing_standby_of(east, "east_ha");
    wait_until(
        "the standby to hold a copy of east's slot",
        Duration::from_secs(120),
        &[east, &standby],
        || {
            Ok(standby.row_count(
                "SELECT 1 FROM pg_replication_slots WHERE synced AND slot_name LIKE 'federation\\_%'",
            ) == 1)
        },
    );
    let subscription =
        "SELECT oid::text FROM pg_subscription WHERE subname LIKE 'federation\\_east\\_%'";
    let before = west.scalar(subscription);
    change(east, changed);
    copies_equal(&[east, west]);
    let port = east.port;
    east.kill9();
    standby.move_to_port(port);
    let t = Instant::now();
    standby.promote();
    let nodes = [&standby, west];
    wait_until(
        "health OK on both",
        Duration::from_secs(300),
        &nodes,
        || Ok(nodes.iter().all(|n| health(n) == "OK")),
    );
    let healed = t.elapsed().as_secs_f64();
    copies_equal(&nodes);
    let same = west.scalar(subscription) == before;
    println!(
        "| failover slots (`federation.failover_slots = on`) | {healed:.1} | west's subscription to east kept: {same}; {} rows set aside |",
        west.row_count("SELECT 1 FROM federation.set_aside")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (rows, changed) = (arg(1, 1_000_000), arg(2, 1_000));
    let major = by_difference(rows, changed);
    if major >= 17 {
        with_failover_slots(rows, changed);
    }
}
