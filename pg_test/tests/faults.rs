//! Faults: crashes, restarts in the middle of a join, apply errors. Every scenario ends with
//! every node holding the same rows, verify() reporting match, and every acknowledged write
//! present on every node.

use pg_test::scenario::{
    assert_converged, assert_converged_among, assert_verified, join, joined, nodes, settle,
    wait_health_ok, wait_ready,
};
use pg_test::{wait_until, Cluster, Node, Writer};
use std::time::{Duration, Instant};

#[test]
fn a_node_killed_during_writes_on_every_node_restarts_and_converges() {
    let c = joined(&["east", "central", "west"]);
    let (east, central, west) = (c.node("east"), c.node("central"), c.node("west"));
    let writers: Vec<Writer> = [east, central, west]
        .iter()
        .map(|n| Writer::start(n, "hippos"))
        .collect();
    for w in &writers {
        w.wait_for_more(300, &c.all());
    }
    central.kill9();
    // The others keep writing while central is dead.
    writers[0].wait_for_more(500, &[east, west]);
    writers[2].wait_for_more(500, &[east, west]);
    central.start_again();
    writers[1].wait_for_more(300, &c.all());
    let acked = settle(&c, writers);
    eprintln!("kill -9 of central: acknowledged writes {acked:?}, all present on every node");
}

#[test]
fn an_apply_error_shows_in_status_stops_no_other_pair_and_clears_when_fixed() {
    let c = joined(&["east", "central", "west"]);
    let (east, central, west) = (c.node("east"), c.node("central"), c.node("west"));
    // A constraint added on west's copy only (through the escape hatch: DDL on a partition is
    // refused otherwise): east's big value cannot be applied there.
    west.execute("BEGIN; SET LOCAL federation.unsafe_ddl = on; ALTER TABLE hippos_east ADD CONSTRAINT local_only CHECK (value < 1000); COMMIT");
    east.execute("INSERT INTO hippos (value) VALUES (5000)");
    wait_until(
        "west to report east's changes failing",
        Duration::from_secs(60),
        &[west],
        || {
            let r = west.query("SELECT state, health, reason, repair FROM federation.status WHERE peer = 'east' AND direction = 'in'");
            if r[0][0].as_deref() == Some("failing") && r[0][1].as_deref() == Some("CRITICAL") {
                assert!(
                    r[0][2].as_deref().unwrap().contains("keeps failing"),
                    "{r:?}"
                );
                assert!(r[0][3].as_deref().unwrap().contains("log"), "{r:?}");
                Ok(true)
            } else {
                Err(format!("{r:?}"))
            }
        },
    );
    assert_eq!(
        west.query("SELECT health FROM federation.health()")[0][0].as_deref(),
        Some("CRITICAL")
    );
    // No other pair stops: central gets east's row, west gets central's.
    central.execute("INSERT INTO hippos (value) VALUES (7)");
    wait_until(
        "the other pairs to keep flowing",
        Duration::from_secs(60),
        &[central, west],
        || {
            Ok(central
                .scalar("SELECT count(*) FROM hippos_east WHERE value = 5000")
                .as_deref()
                == Some("1")
                && west
                    .scalar("SELECT count(*) FROM hippos_central WHERE value = 7")
                    .as_deref()
                    == Some("1"))
        },
    );
    assert_eq!(
        central
            .query("SELECT health FROM federation.status WHERE peer = 'east' AND direction = 'in'")
            [0][0]
            .as_deref(),
        Some("OK")
    );
    // The documented repair: fix the cause on the receiving node; apply resumes by itself.
    west.execute("BEGIN; SET LOCAL federation.unsafe_ddl = on; ALTER TABLE hippos_east DROP CONSTRAINT local_only; COMMIT");
    assert_converged(&c, "hippos");
    for n in c.all() {
        wait_health_ok(n, &c.all());
        assert_verified(n);
    }
}

#[test]
fn the_joining_node_and_then_a_peer_restarted_mid_copy_still_complete_the_join() {
    let c = nodes(&["east", "central", "south", "north"]);
    let (east, central, south, north) = (
        c.node("east"),
        c.node("central"),
        c.node("south"),
        c.node("north"),
    );
    join(central, east);
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 300000) g");
    central.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 1000) g");
    assert_converged_among(&[east, central], "hippos");
    let copying = |n: &Node| {
        // A table sync, or the worker's load (a COPY into a copy, before any subscription).
        n.scalar("SELECT (SELECT count(*) FROM pg_subscription_rel WHERE srsubstate = 'd')
                         + (SELECT count(*) FROM pg_stat_progress_copy WHERE command = 'COPY FROM')")
            .as_deref()
            != Some("0")
    };

    // The joining node restarts while it copies; then a peer restarts while the next copies.
    for (joiner, restarted) in [(south, south), (north, east)] {
        joiner.execute(&format!("SELECT federation.join('{}')", east.conninfo()));
        wait_until(
            &format!("{} to be copying", joiner.name),
            Duration::from_secs(60),
            &[joiner],
            || Ok(copying(joiner)),
        );
        restarted.restart();
        wait_ready(joiner, "3 min", &c.all());
    }
    assert_converged(&c, "hippos");
    for n in c.all() {
        assert_verified(n);
        assert_eq!(
            n.scalar("SELECT count(*) FROM hippos").as_deref(),
            Some("301000"),
            "on {}",
            n.name
        );
    }
}

#[test]
fn a_cut_link_during_writes_on_both_sides_heals_by_itself() {
    let net = pg_test::Net::new(); // declared first: dropped after the servers
    let c =
        Cluster::start(&["east", "central", "west"].map(|n| net.place(pg_test::NodeSpec::guc(n))));
    let (east, central, west) = (c.node("east"), c.node("central"), c.node("west"));
    for n in c.all() {
        n.execute(pg_test::scenario::HIPPOS);
    }
    join(central, east);
    join(west, east);
    let writers: Vec<Writer> = [east, central, west]
        .iter()
        .map(|n| Writer::start(n, "hippos"))
        .collect();
    for w in &writers {
        w.wait_for_more(200, &c.all());
    }
    let t = Instant::now();
    net.cut(west);
    // Both sides of the cut keep accepting writes.
    writers[2].wait_for_more(1000, &[west]);
    writers[0].wait_for_more(1000, &[east]);
    wait_until(
        "east to see west disconnected",
        Duration::from_secs(60),
        &[east],
        || {
            let r = east.query("SELECT state, health FROM federation.status WHERE peer = 'west' AND direction = 'out'");
            Ok(r[0][0].as_deref() == Some("disconnected") && r[0][1].as_deref() == Some("WARNING"))
        },
    );
    let cut_for = t.elapsed();
    net.restore(west);
    for w in &writers {
        w.wait_for_more(200, &c.all());
    }
    let acked = settle(&c, writers);
    eprintln!(
        "link to west cut for {:.1} s: acknowledged writes {acked:?}, all present on every node",
        cut_for.as_secs_f64()
    );
}
