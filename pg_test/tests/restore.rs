//! Restore of a node (issue 14, item 4): a node whose server is lost comes back, on a new
//! server at its address, with every row it had acknowledged that a member holds, by
//! `federation.restore()`: from its peers alone (an empty data directory), and from a pg_dump
//! followed by the rows written after the dump (docs/runbook.md, "Restore a node").
//! Meanwhile no member repairs its copy from the new server before it is the node (the
//! members' copies are the rows to take back).

use pg_test::checks::digest;
use pg_test::scenario::{
    assert_converged_among, assert_verified, health, joined, wait_health_ok, ACCOUNTS, HIPPOS,
};
use pg_test::{assert_all_present, pg_bindir, wait_until, Cluster, Node, NodeSpec, Writer};
use std::process::Command;
use std::time::Duration;

/// Rows of `partition` on `n`, as sorted text (what "holds the same rows" means).
fn rows(n: &Node, partition: &str) -> Vec<String> {
    n.query(&format!("SELECT t::text FROM {partition} t ORDER BY 1"))
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect()
}

/// A new, empty server configured as node `name` (extension created), moved to `port`: the
/// replacement an operator puts at a lost node's address.
fn replacement(name: &str, port: u16, create_extension: bool) -> Cluster {
    let spec = NodeSpec::guc(name);
    let mut c = Cluster::start(&[if create_extension {
        spec
    } else {
        spec.without_extension()
    }]);
    c.nodes[0].move_to_port(port);
    c
}

/// Waits until `member`'s worker has found east's slot gone and refused to repair from the
/// server now at east's address (it is not the node yet).
fn wait_refused_to_repair(member: &Node, all: &[&Node]) {
    wait_until(
        &format!(
            "{} to refuse to repair its copy from the new server at east's address",
            member.name
        ),
        Duration::from_secs(90),
        all,
        || {
            let log = std::fs::read_to_string(member.log_path()).unwrap_or_default();
            Ok(log.contains("does not act as node \"east\""))
        },
    );
}

#[test]
fn a_node_rebuilt_from_its_peers_with_an_empty_data_directory_gets_every_row_back() {
    let c = joined(&["east", "west", "central"]);
    let (east, west, central) = (c.node("east"), c.node("west"), c.node("central"));
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 40) g");
    east.execute("UPDATE hippos SET value = -value WHERE value <= 5");
    central.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 7) g");
    assert_converged_among(&[east, west, central], "hippos");
    let writer = Writer::start(west, "hippos");
    writer.wait_for_more(20, &[east, west, central]);
    let acknowledged = rows(east, "hippos_east");
    assert_eq!(acknowledged.len(), 40);
    let port = east.port;

    // east's server and disk are lost; west keeps writing.
    east.kill9();
    let fresh = replacement("east", port, true);
    let new_east = &fresh.nodes[0];
    let all = [new_east, west, central];
    // The members see a server at east's address, without their slots: they must not take it
    // for east (a repair from it would set their copies, east's rows, aside).
    wait_refused_to_repair(west, &all);
    wait_refused_to_repair(central, &all);
    assert_eq!(
        rows(west, "hippos_east"),
        acknowledged,
        "west's copy of east's rows"
    );
    assert_eq!(rows(central, "hippos_east"), acknowledged, "central's copy");

    // Bad input first: nothing changes anywhere.
    let e = new_east.expect_error(&format!(
        "SELECT federation.restore('{}')",
        new_east.conninfo()
    ));
    assert_eq!(e.code, "22023", "{e:?}");
    assert!(e.message.contains("this server itself"), "{e:?}");
    let e = new_east.expect_error(
        "SELECT federation.restore('host=127.0.0.1 port=1 dbname=postgres connect_timeout=2')",
    );
    assert!(e.message.contains("peer"), "{e:?}");
    assert_eq!(
        new_east
            .scalar("SELECT count(*) FROM pg_class WHERE relname = 'hippos'")
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        west.scalar("SELECT count(*) FROM federation.node WHERE node_name = 'east'")
            .as_deref(),
        Some("1"),
        "a refused restore leaves the members as they were"
    );
    let e = new_east.expect_error(&format!(
        "BEGIN; SELECT federation.restore('{}')",
        west.conninfo()
    ));
    assert_eq!(e.code, "25001", "{e:?}");
    new_east.execute("ROLLBACK");

    let notices = new_east.notices(&format!("SELECT federation.restore('{}')", west.conninfo()));
    assert!(
        notices.iter().any(|n| n.contains("40 row(s) taken back")),
        "{notices:?}"
    );
    new_east.execute("SELECT federation.wait_ready('120 s')");
    assert_eq!(
        rows(new_east, "hippos_east"),
        acknowledged,
        "the new east holds every row the lost one had acknowledged"
    );
    // It writes again: new rows reach every member; the writer's rows reach it.
    new_east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1001, 1010) g");
    let acked = writer.finish();
    assert_converged_among(&all, "hippos");
    for n in all {
        assert_all_present(n, "hippos_west", &acked);
        assert_eq!(
            n.scalar("SELECT count(*) FROM hippos_east").as_deref(),
            Some("50"),
            "{}",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM federation.set_aside")
                .as_deref(),
            Some("0"),
            "nothing set aside on {}",
            n.name
        );
    }
    for n in all {
        assert_verified(n);
        wait_health_ok(n, &all);
    }
}

fn dump(n: &Node) -> std::path::PathBuf {
    let file = n.files_dir().join("node.dump");
    let out = Command::new(pg_bindir().join("pg_dump"))
        .args([
            "-Fc",
            "-f",
            file.to_str().unwrap(),
            "-d",
            &n.client_conninfo(),
        ])
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    file
}

#[test]
fn a_node_restored_from_a_dump_gets_back_the_rows_written_after_the_dump() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    // A schema change through the federation: accounts is made and federated on west too.
    east.execute(ACCOUNTS);
    wait_until(
        "accounts federated on both",
        Duration::from_secs(60),
        &[east, west],
        || {
            Ok(west.scalar("SELECT count(*) FROM federation.partition p WHERE p.relid = 'accounts'::regclass").as_deref() == Some("3"))
        },
    );
    east.execute("SELECT federation.wait_ready('60 s')");
    // More rows than restore() fetches in one round trip.
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 25000) g");
    east.execute(
        "INSERT INTO accounts (email) SELECT 'old' || g || '@east' FROM generate_series(1, 20) g",
    );
    west.execute(
        "INSERT INTO accounts (email) SELECT 'w' || g || '@west' FROM generate_series(1, 5) g",
    );
    assert_converged_among(&[east, west], "accounts");
    let file = dump(east);
    // After the dump: new rows, a changed row and a deleted one, all received by west.
    east.execute(
        "INSERT INTO accounts (email) SELECT 'new' || g || '@east' FROM generate_series(1, 30) g",
    );
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(21, 30) g");
    east.execute("UPDATE accounts SET balance = 99 WHERE email = 'old1@east'");
    east.execute("DELETE FROM hippos WHERE value = 1");
    assert_converged_among(&[east, west], "accounts");
    assert_converged_among(&[east, west], "hippos");
    let acknowledged = (rows(east, "accounts_east"), rows(east, "hippos_east"));
    assert_eq!(acknowledged.0.len(), 50);
    let port = east.port;
    east.kill9();

    // A new server at east's address, the dump restored on it: a copy (it acts on nothing).
    let fresh = replacement("east", port, false);
    let new_east = &fresh.nodes[0];
    let out = Command::new(pg_bindir().join("pg_restore"))
        .args(["-d", &new_east.client_conninfo(), file.to_str().unwrap()])
        .output()
        .expect("run pg_restore");
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_refused_to_repair(west, &[new_east, west]);
    assert_eq!(
        rows(west, "accounts_east"),
        acknowledged.0,
        "west's copy is intact"
    );

    if let Err(e) =
        new_east.try_execute(&format!("SELECT federation.restore('{}')", west.conninfo()))
    {
        panic!("restore: {e}\n{}", new_east.log_tail(60));
    }
    new_east.execute("SELECT federation.wait_ready('120 s')");
    // Every row east had acknowledged, in its latest version, is east's again.
    assert_eq!(rows(new_east, "accounts_east"), acknowledged.0);
    assert_eq!(rows(new_east, "hippos_east"), acknowledged.1);
    // What only the dump held is kept, not dropped: the deleted hippo, the old balance.
    let kept = new_east.query(
        "SELECT table_name, row_data->>'value', row_data->>'balance' FROM federation.set_aside WHERE node = 'east' ORDER BY 1",
    );
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0][0].as_deref(), Some("public.accounts"));
    assert_eq!(kept[0][2].as_deref(), Some("0"));
    assert_eq!(kept[1][0].as_deref(), Some("public.hippos"));
    assert_eq!(kept[1][1].as_deref(), Some("1"));
    // Its sequences moved past every key the lost server handed out: new rows do not collide.
    new_east.execute(
        "INSERT INTO accounts (email) SELECT 'after' || g || '@east' FROM generate_series(1, 10) g",
    );
    let all = [new_east, west];
    assert_converged_among(&all, "accounts");
    assert_converged_among(&all, "hippos");
    assert_eq!(digest(west, "accounts_east").0, 60);
    for n in all {
        assert_verified(n);
    }
    // health() names the kept rows until the DBA decides (here: the deletion was meant).
    wait_until(
        "east's health to name the kept rows",
        Duration::from_secs(60),
        &all,
        || {
            let (h, why) = health(new_east);
            Ok(h == "WARNING" && why.contains("set aside"))
        },
    );
    wait_health_ok(west, &all);
    new_east.execute("DELETE FROM federation.set_aside WHERE node = 'east'");
    wait_health_ok(new_east, &all);
}

#[test]
fn restore_refuses_while_the_node_is_alive() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    // Another server named east, elsewhere, while east answers at its address.
    let other = Cluster::start(&[NodeSpec::guc("east")]);
    let impostor = &other.nodes[0];
    impostor.execute(HIPPOS);
    let e = impostor.expect_error(&format!("SELECT federation.restore('{}')", west.conninfo()));
    assert_eq!(e.code, "55006", "{e:?}");
    assert!(e.message.contains("node \"east\" is alive"), "{e:?}");
    assert!(
        e.hint.as_deref().unwrap_or("").contains("another name"),
        "{e:?}"
    );
    // And on east itself: it is the node already.
    let e = east.expect_error(&format!("SELECT federation.restore('{}')", west.conninfo()));
    assert_eq!(e.code, "55000", "{e:?}");
    assert!(e.message.contains("already"), "{e:?}");
    // Nothing changed: east and west still replicate both ways.
    assert_eq!(
        west.scalar("SELECT state FROM federation.node WHERE node_name = 'east'")
            .as_deref(),
        Some("ready")
    );
    east.execute("INSERT INTO hippos (value) VALUES (1)");
    assert_converged_among(&[east, west], "hippos");
}
