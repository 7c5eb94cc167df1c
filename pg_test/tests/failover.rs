//! A node's failover to its hot standby (issue 14), on PostgreSQL 15 where logical slots do
//! not follow a promotion: the standby, behind its primary, is promoted at the node's address
//! while the other nodes keep writing. The federation heals with no command typed (each
//! member rebuilds its copy of the node from the node's new primary; the new primary, on a
//! new WAL timeline, rebuilds its copies of every member), and no acknowledged row is lost:
//! the rows the old primary had acknowledged and the standby never received stay in the
//! members' federation.set_aside, named by health(), until the DBA gives them back.

use pg_test::scenario::{
    assert_converged_among, assert_verified, health, join, joined, wait_health_ok,
    wait_timeline_recorded, HIPPOS,
};
use pg_test::{assert_all_present, wait_until, Node, NodeSpec, Writer};
use std::time::Duration;

/// Values of the rows set aside on `n` in `owner`'s name, in order.
fn kept(n: &Node, owner: &str) -> Vec<String> {
    n.query(&format!(
        "SELECT row_data->>'value' FROM federation.set_aside WHERE node = '{owner}' ORDER BY (row_data->>'value')::numeric"
    ))
    .into_iter()
    .map(|r| r[0].clone().unwrap_or_default())
    .collect()
}

/// Waits until the rows set aside on `n` in `owner`'s name are exactly `values`, in order.
fn wait_kept(n: &Node, owner: &str, values: &[String], nodes: &[&Node]) {
    wait_until(
        &format!("{}'s kept rows of {owner} to settle", n.name),
        Duration::from_secs(90),
        nodes,
        || {
            let got = kept(n, owner);
            if got == values {
                Ok(true)
            } else {
                Err(format!("{} kept: {:?}", got.len(), got.first()))
            }
        },
    );
}

/// Waits until `n` (a server that is not node `name` any more, or never was) says so.
fn wait_not_the_node(n: &Node, name: &str) {
    wait_until(
        &format!("{} to say it is not node {name}", n.name),
        Duration::from_secs(60),
        &[n],
        || {
            let (h, reason) = health(n);
            if h == "CRITICAL" && reason.contains(&format!("no longer node \"{name}\"")) {
                Ok(true)
            } else {
                Err(format!("{h}: {reason}"))
            }
        },
    );
}

/// Waits until every subscription of `old` (a server that is not the node any more) is
/// disabled and none of its apply workers runs: it consumes nothing from the members' slots,
/// which the node's new primary streams from.
fn wait_subscriptions_disabled(old: &Node) {
    wait_until(
        &format!("{}'s subscriptions to be disabled", old.name),
        Duration::from_secs(30),
        &[old],
        || {
            Ok(
                old.row_count("SELECT 1 FROM pg_subscription WHERE subenabled") == 0
                    && old.row_count("SELECT 1 FROM pg_stat_subscription WHERE pid IS NOT NULL")
                        == 0,
            )
        },
    );
}

#[test]
fn a_lagging_standby_promoted_in_place_heals_by_itself_and_no_acknowledged_row_is_lost() {
    let c = joined(&["central", "east", "west"]);
    let (central, east, west) = (c.node("central"), c.node("east"), c.node("west"));
    for (n, k) in [(central, 1), (east, 2), (west, 3)] {
        n.execute(&format!(
            "INSERT INTO hippos (value) SELECT {k}000 + g FROM generate_series(1, 20) g"
        ));
    }
    assert_converged_among(&[central, east, west], "hippos");
    // east's worker has recorded the WAL timeline its state is good on.
    wait_timeline_recorded(east);

    // east's HA replica, caught up; then it falls behind: stopped while east acknowledges 30
    // more rows, which reach the members.
    let mut standby = Node::standby_of(east);
    let on_east = east.scalar("SELECT count(*) FROM hippos");
    wait_until(
        "the standby to catch up",
        Duration::from_secs(60),
        &[east, &standby],
        || Ok(standby.scalar("SELECT count(*) FROM hippos") == on_east),
    );
    standby.stop();
    east.execute("INSERT INTO hippos (value) SELECT 5000 + g FROM generate_series(1, 30) g");
    assert_converged_among(&[central, east, west], "hippos");
    // The other nodes write on through the failover.
    let writers = [
        Writer::start(central, "hippos"),
        Writer::start(west, "hippos"),
    ];
    writers[0].wait_for_more(20, &[central]);

    // east dies; its standby takes its address and is promoted. Nobody types a command.
    let port = east.port;
    east.kill9();
    standby.move_to_port(port);
    standby.promote();
    let new_east = &standby;
    let nodes = [central, new_east, west];
    for w in &writers {
        w.wait_for_more(20, &nodes);
    }
    new_east.execute("INSERT INTO hippos (value) SELECT 6000 + g FROM generate_series(1, 10) g");
    let acked: Vec<(Vec<i64>, &str)> = writers
        .into_iter()
        .map(|w| w.finish())
        .zip(["central", "west"])
        .collect();

    // Healed: every copy equals its owner again, on every node, both ways.
    assert_converged_among(&nodes, "hippos");
    // The 30 rows the old primary acknowledged and the standby never received are kept, not
    // dropped, on both members; every other row the members held is in the fresh copies.
    let lost_by_standby: Vec<String> = (5001..=5030).map(|v| v.to_string()).collect();
    for n in [central, west] {
        wait_kept(n, "east", &lost_by_standby, &nodes);
        // Once the repaired subscription's worker runs (a repair by difference completes at
        // once), the kept rows are the one thing health() names.
        wait_until(
            &format!("{}'s health to name the kept rows", n.name),
            Duration::from_secs(30),
            &nodes,
            || {
                let (h, reason) = health(n);
                if h == "WARNING"
                    && reason.contains("set aside in node east's name")
                    && reason.contains("30 of the")
                {
                    Ok(true)
                } else {
                    Err(format!("{h}: {reason}"))
                }
            },
        );
    }
    wait_health_ok(new_east, &nodes);
    assert_verified(new_east);
    for (values, owner) in &acked {
        for n in nodes {
            assert_all_present(n, &format!("hippos_{owner}"), values);
        }
    }

    // The DBA gives them back to east (docs/runbook.md, "Failover"): they replicate, the
    // members' kept rows match east's partition, and the worker drops them: OK everywhere.
    let rows = central
        .query("SELECT row_data::text FROM federation.set_aside WHERE node = 'east' ORDER BY 1");
    for r in rows {
        new_east.execute(&format!(
            "INSERT INTO hippos SELECT * FROM jsonb_populate_record(NULL::hippos, '{}'::jsonb)",
            r[0].clone().unwrap().replace('\'', "''")
        ));
    }
    for n in nodes {
        wait_until(
            &format!(
                "the worker on {} to drop the kept rows east now holds",
                n.name
            ),
            Duration::from_secs(60),
            &nodes,
            || Ok(n.row_count("SELECT 1 FROM federation.set_aside") == 0),
        );
        wait_health_ok(n, &nodes);
        assert_eq!(
            n.row_count("SELECT 1 FROM hippos_east WHERE value BETWEEN 5001 AND 5030"),
            30,
            "{}",
            n.name
        );
    }
    assert_converged_among(&nodes, "hippos");
    assert_verified(central);
}

#[test]
fn a_switchover_to_a_caught_up_standby_heals_by_itself_with_nothing_kept_aside() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 50) g");
    west.execute("INSERT INTO hippos (value) SELECT 100 + g FROM generate_series(1, 50) g");
    assert_converged_among(&[east, west], "hippos");
    wait_timeline_recorded(east);
    // PostgreSQL 15's launcher starts apply workers at most once per
    // wal_retrieve_retry_interval across the server (5 s by default), and after the
    // switchover it has just restarted the failing worker of the old subscription: here a
    // whole minute, longer than the bound below, so the repairs cannot wait for it (the
    // standby inherits the setting).
    for n in [east, west] {
        n.execute("ALTER SYSTEM SET wal_retrieve_retry_interval = '60s'");
        n.reload();
    }
    let mut standby = Node::standby_of(east);
    let writer = Writer::start(west, "hippos");
    writer.wait_for_more(50, &[west]);
    // A planned switchover: the primary stops cleanly (its standby has every byte), the
    // standby is promoted at its address.
    standby.wait_replayed(east);
    let port = east.port;
    east.stop();
    standby.move_to_port(port);
    standby.promote();
    let started = std::time::Instant::now();
    let nodes = [&standby, west];
    writer.wait_for_more(50, &nodes);
    standby.execute("INSERT INTO hippos (value) SELECT 200 + g FROM generate_series(1, 10) g");
    let acked = writer.finish();
    assert_converged_among(&nodes, "hippos");
    for n in nodes {
        wait_until(
            &format!(
                "{}'s kept rows to be dropped (the fresh copies hold them)",
                n.name
            ),
            Duration::from_secs(60),
            &nodes,
            || Ok(n.row_count("SELECT 1 FROM federation.set_aside") == 0),
        );
        wait_health_ok(n, &nodes);
        assert_verified(n);
        assert_all_present(n, "hippos_west", &acked);
    }
    let healed = started.elapsed().as_secs_f64();
    eprintln!("switchover: health OK on every node {healed:.1} s after the promotion");
    assert!(
        healed < 45.0,
        "healed {healed:.1} s after the promotion: the repairs waited for the launcher's minute"
    );
    if west.major() < 16 {
        let log = west.log_tail(100_000);
        assert!(
            log.contains("the apply worker started by the repair"),
            "west's repair of its copy of east started its apply worker itself:\n{log}"
        );
    }
    assert_eq!(
        standby
            .scalar("SELECT timeline FROM federation.local_node")
            .as_deref(),
        Some("2"),
        "the new primary records its timeline once its copies are rebuilt"
    );

    // The old primary comes back by mistake, as a second primary at another address: the
    // node's address answers with the new primary, so it refuses to act as the node, loudly.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = c;
    let old = c.nodes.iter_mut().find(|n| n.name == "east").unwrap();
    old.move_to_port(port);
    let old = c.node("east");
    wait_not_the_node(old, "east");
    let e = old.expect_error("INSERT INTO hippos (value) VALUES (-1)");
    assert_eq!(e.code, "55000", "{e}");
    assert!(e
        .hint
        .unwrap_or_default()
        .contains("standby of the node's new primary"));
    assert_eq!(old.row_count("SELECT 1 FROM hippos WHERE value = -1"), 0);
    // Its subscriptions, which stream from the same slots on the members as the new
    // primary's, are disabled: it consumes nothing the new primary must receive.
    wait_subscriptions_disabled(old);
    // The federation is not disturbed by it: what west writes now reaches the new primary.
    let (west, standby) = (c.node("west"), &standby);
    let writer = Writer::start(west, "hippos");
    writer.wait_for_more(50, &[west, standby]);
    standby.execute("INSERT INTO hippos (value) VALUES (300)");
    let written = writer.finish();
    assert_converged_among(&[standby, west], "hippos");
    assert_all_present(standby, "hippos_west", &written);
    assert_eq!(
        old.row_count("SELECT 1 FROM pg_subscription WHERE subenabled"),
        0,
        "still disabled"
    );
    for n in [standby, west] {
        wait_health_ok(n, &[standby, west]);
    }
}

/// 20 rows written on each of `east` and `west`, everywhere; east's timeline recorded; a hot
/// standby of east, caught up.
fn seeded_with_a_standby(east: &Node, west: &Node) -> Node {
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 20) g");
    west.execute("INSERT INTO hippos (value) SELECT 100 + g FROM generate_series(1, 20) g");
    assert_converged_among(&[east, west], "hippos");
    wait_timeline_recorded(east);
    let standby = Node::standby_of(east);
    standby.wait_replayed(east);
    standby
}

/// A lagging standby promoted after its primary died, the old primary brought back as its
/// standby with pg_rewind, and a switchover back to it: west's copy is repaired each time,
/// every row the node's servers acknowledged is on west (the first primary's lost rows kept
/// aside), and the rows the node writes right after the switch-back, at WAL positions below
/// what west's slot on the first primary had confirmed, all reach west (pg_rewind empties
/// pg_replslot: no slot of the old history survives to serve them from its old position).
#[test]
fn an_old_primary_rewound_after_a_failover_and_switched_back_to_loses_nothing() {
    let mut c = joined_with(&["east", "west"], |n| {
        let spec = NodeSpec::guc(n);
        if n == "east" {
            // pg_rewind's needs (the harness turns full-page writes off for speed); the
            // standby takes the same settings.
            spec.with_conf("wal_log_hints = on")
                .with_conf("full_page_writes = on")
        } else {
            spec
        }
    });
    let (east, west) = (c.node("east"), c.node("west"));
    let mut standby = seeded_with_a_standby(east, west);
    standby.stop();
    // The standby falls behind: east acknowledges 31 rows it never gets, and east's WAL runs
    // three segments ahead before the last of them, which west applies: west's slot on east
    // confirms a position the standby's history will not reach for a long while.
    east.execute("INSERT INTO hippos (value) SELECT 5000 + g FROM generate_series(1, 30) g");
    for _ in 0..3 {
        east.execute("SELECT pg_switch_wal()");
    }
    east.execute("INSERT INTO hippos (value) VALUES (5031)");
    let ahead = east.scalar("SELECT pg_current_wal_lsn()::text").unwrap();
    wait_until(
        "west's slot on east to confirm the last row",
        Duration::from_secs(60),
        &[east, west],
        || {
            Ok(east
                .scalar(&format!(
                    "SELECT confirmed_flush_lsn >= '{ahead}' FROM pg_replication_slots WHERE slot_name = 'federation_east_west'"
                ))
                .as_deref()
                == Some("t"))
        },
    );

    // Failover: east dies, the standby is promoted at its address; west repairs its copy and
    // keeps the 31 rows aside.
    let port = east.port;
    east.kill9();
    standby.move_to_port(port);
    standby.promote();
    standby.execute("INSERT INTO hippos (value) SELECT 6000 + g FROM generate_series(1, 10) g");
    assert_converged_among(&[&standby, west], "hippos");
    let lost: Vec<String> = (5001..=5031).map(|v| v.to_string()).collect();
    wait_kept(west, "east", &lost, &[&standby, west]);

    // The old primary comes back as the new primary's standby, rewound, and catches up; then
    // a switchover back to it: the new primary stops cleanly, the old one is promoted at the
    // node's address and writes at once (below where west's old slot there had confirmed).
    let old = c.nodes.iter_mut().find(|n| n.name == "east").unwrap();
    old.rewind_as_standby_of(&standby);
    old.wait_replayed(&standby);
    standby.stop();
    old.move_to_port(port);
    old.promote();
    let old = c.node("east");
    let below = old.scalar(&format!("SELECT pg_current_wal_lsn() < '{ahead}'"));
    assert_eq!(
        below.as_deref(),
        Some("t"),
        "the switched-back node writes below the position west's old slot confirmed"
    );
    old.execute("INSERT INTO hippos (value) SELECT 7000 + g FROM generate_series(1, 10) g");
    let west = c.node("west");
    let nodes = [old, west];
    assert_converged_among(&nodes, "hippos");
    assert_eq!(
        west.row_count("SELECT 1 FROM hippos WHERE value BETWEEN 7001 AND 7010"),
        10,
        "every row the switched-back node wrote reached west"
    );
    assert_eq!(
        west.row_count("SELECT 1 FROM hippos WHERE value BETWEEN 6001 AND 6010"),
        10,
        "every row the standby wrote as primary is still on west"
    );
    // The rows only the first primary had stay kept aside on west, not lost.
    assert_eq!(kept(west, "east"), lost);
    assert_verified(old);
    assert_verified(west);
}

/// An old primary stopped cleanly in a switchover and brought back as its successor's
/// standby without a rewind (it needs none: the successor has all of its WAL) keeps its
/// logical slots from before, at positions of a history that went on elsewhere, holding WAL
/// and a catalog horizon nobody keeps for them. Switched back to, its worker drops them at the
/// promotion (heal.rs `drop_stale_slots`); west repairs its copy from slots made anew, and every
/// row of the three terms reaches it.
#[test]
fn an_old_primary_switched_back_to_drops_its_slots_from_before() {
    let mut c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    let mut standby = seeded_with_a_standby(east, west);
    let slot = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'federation_east_west'";
    // Switchover to the standby; west repairs its copy from it.
    let port = east.port;
    east.stop();
    standby.move_to_port(port);
    standby.promote();
    standby.execute("INSERT INTO hippos (value) SELECT 6000 + g FROM generate_series(1, 10) g");
    assert_converged_among(&[&standby, west], "hippos");
    wait_health_ok(west, &[&standby, west]);
    // The old primary follows the new one, its slots from before kept.
    let old = c.nodes.iter_mut().find(|n| n.name == "east").unwrap();
    old.follow_as_standby_of(&standby);
    old.wait_replayed(&standby);
    assert_eq!(
        old.row_count(slot),
        1,
        "the standby kept its slot from before"
    );
    // Switchover back.
    standby.stop();
    old.move_to_port(port);
    old.promote();
    let old = c.node("east");
    old.execute("INSERT INTO hippos (value) SELECT 7000 + g FROM generate_series(1, 10) g");
    let west = c.node("west");
    let nodes = [old, west];
    assert_converged_among(&nodes, "hippos");
    for (range, who) in [
        (6000, "the standby as primary"),
        (7000, "the switched-back node"),
    ] {
        assert_eq!(
            west.row_count(&format!(
                "SELECT 1 FROM hippos WHERE value BETWEEN {} AND {}",
                range + 1,
                range + 10
            )),
            10,
            "every row {who} wrote is on west"
        );
    }
    for n in nodes {
        wait_health_ok(n, &nodes);
        assert_verified(n);
    }
    let log = old.log_tail(100_000);
    assert!(
        log.contains("dropped replication slot \"federation_east_west\", left from before this server's promotion"),
        "east's worker dropped its slot from before the switchback:\n{log}"
    );
    assert_eq!(old.row_count(slot), 1, "west streams from a slot made anew");
}

/// PostgreSQL 17+: a node's slots follow its failover. With federation.failover_slots = on,
/// every slot pg_federation makes there is a failover slot; the node's standby keeps copies of them (sync_replication_slots) and the
/// node sends no change to a member before the standby has it (synchronized_standby_slots).
/// Promoted in the node's place, the standby serves the members from the same slots: no
/// member repairs anything, no row is set aside, and every acknowledged row is everywhere.
#[test]
fn failover_slots_on_postgresql_17_spare_every_member_a_repair() {
    // east's DBA says its standby keeps its slots (docs/runbook.md, section 13).
    let c = joined_with(&["central", "east", "west"], |name| {
        let spec = NodeSpec::guc(name);
        if name == "east" {
            spec.with_conf("federation.failover_slots = on")
        } else {
            spec
        }
    });
    let (central, east, west) = (c.node("central"), c.node("east"), c.node("west"));
    let major = east.major();
    if major < 17 {
        eprintln!("PostgreSQL {major}: failover slots need 17 or later; this test runs on 18");
        return;
    }
    let ours = "slot_name LIKE 'federation\\_%'";
    assert_eq!(
        east.scalar(&format!("SELECT count(*) FILTER (WHERE failover)::text || '/' || count(*) FROM pg_replication_slots WHERE {ours}")).as_deref(),
        Some("2/2"),
        "every slot east holds for its members is a failover slot"
    );
    assert_eq!(
        central.scalar(&format!("SELECT count(*) FILTER (WHERE failover)::text FROM pg_replication_slots WHERE {ours}")).as_deref(),
        Some("0"),
        "nodes without federation.failover_slots make ordinary slots"
    );
    for (n, k) in [(central, 1), (east, 2), (west, 3)] {
        n.execute(&format!(
            "INSERT INTO hippos (value) SELECT {k}000 + g FROM generate_series(1, 20) g"
        ));
    }
    let all = [central, east, west];
    assert_converged_among(&all, "hippos");
    wait_timeline_recorded(east);
    let mut standby = Node::slot_syncing_standby_of(east, "east_ha");
    wait_until(
        "the standby to hold copies of east's slots",
        Duration::from_secs(90),
        &[east, &standby],
        || {
            Ok(standby.row_count(&format!(
                "SELECT 1 FROM pg_replication_slots WHERE synced AND {ours}"
            )) == 2)
        },
    );
    let subscription = "SELECT oid::text FROM pg_subscription WHERE subname = federation_internal.subscription_name('east', current_setting('federation.node_name'))";
    let before: Vec<Option<String>> = [central, west]
        .iter()
        .map(|n| n.scalar(subscription))
        .collect();
    let writers = [
        Writer::start(central, "hippos"),
        Writer::start(west, "hippos"),
    ];
    writers[0].wait_for_more(20, &[central]);
    // east acknowledges 30 rows, then dies; its standby takes its address.
    east.execute("INSERT INTO hippos (value) SELECT 5000 + g FROM generate_series(1, 30) g");
    let port = east.port;
    east.kill9();
    standby.move_to_port(port);
    standby.promote();
    let started = std::time::Instant::now();
    let nodes = [central, &standby, west];
    for w in &writers {
        w.wait_for_more(20, &nodes);
    }
    standby.execute("INSERT INTO hippos (value) SELECT 6000 + g FROM generate_series(1, 10) g");
    let acked: Vec<(Vec<i64>, &str)> = writers
        .into_iter()
        .map(|w| w.finish())
        .zip(["central", "west"])
        .collect();
    assert_converged_among(&nodes, "hippos");
    for n in nodes {
        wait_health_ok(n, &nodes);
        assert_verified(n);
        assert_eq!(
            n.row_count("SELECT 1 FROM federation.set_aside"),
            0,
            "nothing kept aside on {}",
            n.name
        );
        assert_eq!(
            n.row_count("SELECT 1 FROM hippos WHERE value BETWEEN 5001 AND 5030"),
            30,
            "east's acknowledged rows on {}",
            n.name
        );
        for (values, owner) in &acked {
            assert_all_present(n, &format!("hippos_{owner}"), values);
        }
    }
    eprintln!(
        "failover with failover slots: health OK on every node {:.1} s after the promotion",
        started.elapsed().as_secs_f64()
    );
    // No member repaired its copy of east: their subscriptions to it are the ones from before.
    let after: Vec<Option<String>> = [central, west]
        .iter()
        .map(|n| n.scalar(subscription))
        .collect();
    assert_eq!(
        after, before,
        "the members' subscriptions to east were not made anew"
    );
}

/// A federation of `names` (each made by `spec`, with hippos), joined to the first.
fn joined_with(names: &[&str], spec: impl Fn(&str) -> NodeSpec) -> pg_test::Cluster {
    let specs: Vec<NodeSpec> = names.iter().map(|n| spec(n)).collect();
    let c = pg_test::Cluster::start(&specs);
    for n in &c.nodes {
        n.execute(HIPPOS);
    }
    for n in &c.nodes[1..] {
        join(n, &c.nodes[0]);
    }
    c
}

/// A node's server restored from a base backup at its address and started without recovery
/// (a pg_basebackup or a volume snapshot started as it is): the same system, the same WAL
/// timeline, no promotion, its WAL back where the backup was. Before, its subscriptions
/// resumed from replication origins older than what the members' slots had confirmed and
/// skipped, silently and for good, every row the members wrote between the backup and the
/// loss. Now its worker sees a member that applied its WAL past where its WAL is and repairs
/// both ways by itself; the rows it had acknowledged after the backup (lost with it) are kept
/// in the member's federation.set_aside, not deleted.
#[test]
fn a_node_restored_from_a_base_backup_on_the_same_timeline_heals_by_itself_and_loses_nothing() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    east.execute("INSERT INTO hippos (value) SELECT 1000 + g FROM generate_series(1, 20) g");
    west.execute("INSERT INTO hippos (value) SELECT 3000 + g FROM generate_series(1, 20) g");
    assert_converged_among(&[east, west], "hippos");
    wait_timeline_recorded(east);
    // The backup: a copy of east's data directory, caught up, then left behind.
    let mut backup = Node::standby_of(east);
    let on_east = east.scalar("SELECT count(*) FROM hippos");
    wait_until(
        "the backup to catch up",
        Duration::from_secs(60),
        &[east, &backup],
        || Ok(backup.scalar("SELECT count(*) FROM hippos") == on_east),
    );
    backup.stop();
    // After the backup: east works on (here 10 MB of WAL in a table of its own; a real backup
    // is hours old), acknowledges 30 rows (west receives them), west writes 25 that east
    // applies, and west keeps writing.
    east.execute(
        "CREATE TABLE scratch AS SELECT g, repeat('x', 80) AS pad FROM generate_series(1, 80000) g",
    );
    east.execute("INSERT INTO hippos (value) SELECT 5000 + g FROM generate_series(1, 30) g");
    west.execute("INSERT INTO hippos (value) SELECT 7000 + g FROM generate_series(1, 25) g");
    assert_converged_among(&[east, west], "hippos");
    let writer = Writer::start(west, "hippos");
    writer.wait_for_more(20, &[west]);
    // east has confirmed west's WAL past those rows (as it always has, long after a backup).
    let applied = west.scalar("SELECT pg_current_wal_lsn()::text").unwrap();
    wait_until(
        "east to confirm west's WAL past the rows written after the backup",
        Duration::from_secs(60),
        &[east, west],
        || {
            Ok(west.scalar(&format!(
                "SELECT (confirmed_flush_lsn >= '{applied}')::text FROM pg_replication_slots WHERE slot_name = 'federation_west_east'"
            )).as_deref() == Some("true"))
        },
    );

    // east's server is lost; the backup is started at its address as it is.
    let port = east.port;
    east.kill9();
    backup.forget_standby();
    backup.move_to_port(port);
    let restored = &backup;
    let nodes = [restored, west];
    assert_eq!(
        restored
            .scalar("SELECT pg_is_in_recovery()::text")
            .as_deref(),
        Some("false")
    );
    wait_until(
        "the restored east to find it went back in time",
        Duration::from_secs(60),
        &nodes,
        || {
            Ok(restored
                .log_tail(2000)
                .contains("this server went back in time"))
        },
    );
    writer.wait_for_more(20, &nodes);
    restored.execute("INSERT INTO hippos (value) SELECT 6000 + g FROM generate_series(1, 10) g");
    let written = writer.finish();

    // Healed both ways: west's rows written after the backup are on east again (before, the
    // 25 and the writer's first rows were skipped for good), and east's copies equal.
    assert_converged_among(&nodes, "hippos");
    assert_eq!(
        restored.row_count("SELECT 1 FROM hippos_west WHERE value BETWEEN 7001 AND 7025"),
        25
    );
    for n in nodes {
        assert_all_present(n, "hippos_west", &written);
    }
    // The 30 rows east acknowledged after the backup are kept on west, not deleted.
    let lost_with_the_server: Vec<String> = (5001..=5030).map(|v| v.to_string()).collect();
    wait_kept(west, "east", &lost_with_the_server, &nodes);
    wait_health_ok(restored, &nodes);
    assert_verified(restored);
    assert_verified(west);
}

/// A physical copy of a live node promoted elsewhere (a standby promoted by mistake, a clone
/// for a test environment): the same system identifier as the node, its catalog says it is
/// the node, but the node's address answers with the node itself. It must not act as the
/// node: no writes to federated tables, no federation operations, its subscriptions (which
/// name the node's slots on the members) disabled, nothing changed on the real federation.
#[test]
fn a_standby_promoted_elsewhere_while_the_node_lives_does_not_act_as_it() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    east.execute("INSERT INTO hippos (value) SELECT 1000 + g FROM generate_series(1, 20) g");
    west.execute("INSERT INTO hippos (value) SELECT 3000 + g FROM generate_series(1, 20) g");
    assert_converged_among(&[east, west], "hippos");
    let subscription =
        "SELECT oid::text FROM pg_subscription WHERE subname = 'federation_east_west'";
    let before = west.scalar(subscription);
    let clone = Node::standby_of(east);
    let on_east = east.scalar("SELECT count(*) FROM hippos");
    wait_until(
        "the clone to catch up",
        Duration::from_secs(60),
        &[east, &clone],
        || Ok(clone.scalar("SELECT count(*) FROM hippos") == on_east),
    );
    // Promoted at its own address while east lives.
    clone.promote();
    wait_not_the_node(&clone, "east");
    wait_until(
        "the clone's subscriptions to be disabled",
        Duration::from_secs(30),
        &[&clone],
        || Ok(clone.row_count("SELECT 1 FROM pg_subscription WHERE subenabled") == 0),
    );
    let e = clone.expect_error("INSERT INTO hippos (value) VALUES (-1)");
    assert_eq!(e.code, "55000", "{e}");
    let e = clone.expect_error("SELECT federation.leave()");
    assert_eq!(e.code, "55000", "{e}");
    // The federation goes on as before: the same subscription on west, rows both ways.
    let writer = Writer::start(west, "hippos");
    writer.wait_for_more(30, &[east, west]);
    east.execute("INSERT INTO hippos (value) SELECT 5000 + g FROM generate_series(1, 10) g");
    let written = writer.finish();
    assert_converged_among(&[east, west], "hippos");
    assert_all_present(east, "hippos_west", &written);
    assert_eq!(
        west.scalar(subscription),
        before,
        "west's subscription untouched"
    );
    assert_eq!(
        east.row_count(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'federation_east_west'"
        ),
        1
    );
    for n in [east, west] {
        wait_health_ok(n, &[east, west]);
    }
    assert_eq!(clone.row_count("SELECT 1 FROM hippos WHERE value = -1"), 0);
}

/// A node's standby promoted behind a **new address** (a new Service or DNS name): the
/// standby's `federation.node_conninfo` names it and the old address answers no more. The
/// members follow the new address by themselves (each checks that it answers as the node
/// first), repair their copies from it, and no acknowledged row is lost. A member refuses
/// an address where the node is not, and a name that is no member, changing nothing.
#[test]
fn a_standby_promoted_at_a_new_address_is_followed_by_every_member() {
    let c = joined(&["east", "west", "central"]);
    let (east, west, central) = (c.node("east"), c.node("west"), c.node("central"));
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 50) g");
    west.execute("INSERT INTO hippos (value) SELECT 100 + g FROM generate_series(1, 50) g");
    assert_converged_among(&[east, west, central], "hippos");
    wait_timeline_recorded(east);
    let address = "SELECT conninfo FROM federation.node WHERE node_name = 'east'";
    let before = central.scalar(address);
    let e = central.expect_error(&format!(
        "SELECT federation_internal.member_moved('east', '{}')",
        west.conninfo()
    ));
    assert_eq!(e.code, "55000", "{e}");
    assert!(e.message.contains("is node \"west\", not \"east\""), "{e}");
    let e = central.expect_error(&format!(
        "SELECT federation_internal.member_moved('nowhere', '{}')",
        east.conninfo()
    ));
    assert_eq!(e.code, "42704", "{e}");
    assert_eq!(central.scalar(address), before, "nothing changed");

    // The standby runs at an address of its own, which its node_conninfo names.
    let standby = Node::standby_of(east);
    standby.wait_replayed(east);
    let writer = Writer::start(west, "hippos");
    writer.wait_for_more(30, &[west]);
    east.kill9();
    standby.promote();
    let nodes = [&standby, west, central];
    for m in [west, central] {
        wait_until(
            &format!("{} to reach east at its new address", m.name),
            Duration::from_secs(90),
            &nodes,
            || {
                let now = m.scalar(address).unwrap_or_default();
                if now == standby.conninfo() {
                    Ok(true)
                } else {
                    Err(format!("east at {now} on {}", m.name))
                }
            },
        );
    }
    standby.execute("INSERT INTO hippos (value) SELECT 200 + g FROM generate_series(1, 20) g");
    writer.wait_for_more(30, &nodes);
    let acked = writer.finish();
    assert_converged_among(&nodes, "hippos");
    for n in nodes {
        wait_health_ok(n, &nodes);
        assert_verified(n);
        assert_all_present(n, "hippos_west", &acked);
        assert_eq!(
            n.row_count("SELECT 1 FROM hippos_east WHERE value > 200"),
            20,
            "the new primary's rows on {}",
            n.name
        );
    }
    assert_eq!(
        standby.scalar("SELECT conninfo FROM federation.local_node"),
        Some(standby.conninfo()),
        "the node records its new address once every member follows"
    );
    for m in [west, central] {
        let sub = m
            .scalar(&format!(
                "SELECT subconninfo FROM pg_subscription WHERE subname = 'federation_east_{}'",
                m.name
            ))
            .unwrap_or_default();
        assert!(
            sub.contains(&format!("port={}", standby.port)),
            "{}'s subscription from east: {sub}",
            m.name
        );
    }

    // The old primary comes back at the old address by mistake: the members reach the node
    // elsewhere, where another server acts as it, so it stops acting as the node, loudly,
    // and takes nothing from the members' slots.
    let old = c.node("east");
    old.start_again();
    wait_not_the_node(old, "east");
    let e = old.expect_error("INSERT INTO hippos (value) VALUES (-1)");
    assert_eq!(e.code, "55000", "{e}");
    wait_subscriptions_disabled(old);
    let writer = Writer::start(west, "hippos");
    writer.wait_for_more(30, &nodes);
    let written = writer.finish();
    assert_converged_among(&nodes, "hippos");
    for n in nodes {
        assert_all_present(n, "hippos_west", &written);
        wait_health_ok(n, &nodes);
        assert_eq!(
            n.row_count("SELECT 1 FROM hippos WHERE value = -1"),
            0,
            "nothing of the old primary's on {}",
            n.name
        );
    }
    for m in [west, central] {
        assert_eq!(
            m.scalar(address),
            Some(standby.conninfo()),
            "{} stays with the new primary",
            m.name
        );
    }
}
