//! federation.join(), wait_ready(), leave() and drop_node() across real servers.

use pg_test::checks::snapshot;
use pg_test::scenario::{
    assert_converged, assert_converged_among, join, join_with_load_held, joined, nodes,
    wait_health_ok, wait_ready, HIPPOS,
};
use pg_test::{wait_until, Cluster, NodeSpec};
use std::time::Duration;

#[test]
fn two_nodes_form_a_federation_and_rows_flow_both_ways() {
    let c = nodes(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 100) g");
    west.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 50) g");
    // join() says that the work goes on after COMMIT, and how to wait for it.
    let notices = west.notices(&format!("SELECT federation.join('{}')", east.conninfo()));
    assert!(
        notices
            .iter()
            .any(|n| n.contains("joining 1 member (east)") && n.contains("federation.wait_ready()")),
        "{notices:?}"
    );
    west.execute("SELECT federation.wait_ready('90 s')");
    assert_converged(&c, "hippos");
    for n in [east, west] {
        assert_eq!(
            n.scalar("SELECT count(*) FROM hippos").as_deref(),
            Some("150"),
            "on {}",
            n.name
        );
        let states = n.scalar("SELECT string_agg(node_name || ':' || state, ',' ORDER BY node_name) FROM federation.nodes");
        assert_eq!(
            states.as_deref(),
            Some("east:ready,west:ready"),
            "on {}",
            n.name
        );
    }
    // New writes, updates and deletes flow too.
    // (Each node changes only its own rows: the guards refuse the others.)
    east.execute("INSERT INTO hippos (value) VALUES (1000); UPDATE hippos SET value = -value WHERE value <= 10 AND node_name = 'east'; DELETE FROM hippos WHERE value = 50 AND node_name = 'east'");
    west.execute("INSERT INTO hippos (value) VALUES (2000); DELETE FROM hippos WHERE value = 49 AND node_name = 'west'");
    assert_converged(&c, "hippos");
    assert_eq!(
        west.scalar("SELECT count(*) FROM hippos").as_deref(),
        Some("150")
    );
    assert_eq!(
        west.scalar("SELECT count(*) FROM hippos WHERE value < 0")
            .as_deref(),
        Some("10")
    );
    // No password and no secret in the view, but the address is there.
    assert!(east
        .scalar("SELECT conninfo FROM federation.nodes WHERE node_name = 'west'")
        .unwrap()
        .contains("port="));
}

#[test]
fn three_nodes_then_a_fourth_joins_with_one_call() {
    let c = Cluster::start(&["east", "central", "west", "south"].map(NodeSpec::guc));
    for n in &c.nodes {
        n.execute(HIPPOS);
    }
    let (east, central, west, south) = (
        c.node("east"),
        c.node("central"),
        c.node("west"),
        c.node("south"),
    );
    join(central, east);
    join(west, central);
    for n in [east, central, west] {
        n.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 1000) g");
    }
    south.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 10) g");
    // One call on the new node; nothing typed on the other three.
    join(south, west);
    assert_converged(&c, "hippos");
    for n in &c.nodes {
        assert_eq!(
            n.scalar("SELECT count(*) FROM hippos").as_deref(),
            Some("3010"),
            "on {}",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM federation.nodes WHERE state = 'ready'")
                .as_deref(),
            Some("4"),
            "on {}",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM pg_subscription").as_deref(),
            Some("3"),
            "on {}: a full mesh",
            n.name
        );
        // From PostgreSQL 16 every subscription asks for the publisher's own changes only, so
        // no walsender decodes the rows its node applied from the others (docs/scaling.md).
        if n.major() >= 16 {
            assert_eq!(
                n.scalar("SELECT string_agg(DISTINCT suborigin, ',') FROM pg_subscription")
                    .as_deref(),
                Some("none"),
                "on {}: subscriptions with origin = none",
                n.name
            );
        }
    }
}

#[test]
fn join_inside_a_transaction_commits_or_rolls_back_cleanly() {
    let c = nodes(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    east.execute("INSERT INTO hippos (value) VALUES (1)");
    let before = (snapshot(east, "public"), snapshot(west, "public"));
    west.execute(&format!(
        "BEGIN; SELECT federation.join('{}'); ROLLBACK;",
        east.conninfo()
    ));
    // Give a (wrongly) woken worker every chance to act before looking.
    std::thread::sleep(Duration::from_secs(2)); // not synchronisation: proving nothing happens
    assert_eq!(
        (snapshot(east, "public"), snapshot(west, "public")),
        before,
        "ROLLBACK must leave no trace on any node"
    );
    assert_eq!(
        east.scalar("SELECT count(*) FROM pg_replication_slots")
            .as_deref(),
        Some("0")
    );
    // wait_ready in the same transaction as join is refused with a hint.
    let e = west.expect_error(&format!(
        "BEGIN; SELECT federation.join('{}'); SELECT federation.wait_ready('5 s')",
        east.conninfo()
    ));
    west.execute("ROLLBACK");
    assert_eq!(e.code, "55000", "{e}");
    // A migration tool's transaction.
    west.execute(&format!(
        "BEGIN; SELECT federation.join('{}'); COMMIT;",
        east.conninfo()
    ));
    west.execute("SELECT federation.wait_ready('90 s')");
    assert_converged(&c, "hippos");
    assert_eq!(
        west.scalar("SELECT count(*) FROM hippos").as_deref(),
        Some("1")
    );
}

#[test]
fn a_failed_join_leaves_nothing_and_a_retry_succeeds() {
    let c = nodes(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    // A role that must authenticate with a password (SCRAM), to get a wrong password wrong.
    east.execute("SET password_encryption = 'scram-sha-256'; CREATE ROLE fed LOGIN SUPERUSER PASSWORD 'right-one'");
    east.prepend_hba("host all fed 127.0.0.1/32 scram-sha-256");
    east.reload();
    let snap = || (snapshot(east, "public"), snapshot(west, "public"));
    let before = snap();
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("SELECT federation.join('host=127.0.0.1 port=1 dbname=postgres user=postgres connect_timeout=2')"), "08001", "could not connect"),
        (format!("SELECT federation.join('{} user=fed password=secret123')", east.conninfo()), "08001", "password authentication failed"),
        (format!("SELECT federation.join('{} user=nobody')", east.conninfo()), "08001", "could not connect"),
        ("SELECT federation.join('host=127.0.0.1 port=')".to_string(), "08001", "could not connect"),
        ("SELECT federation.join('this is not a conninfo')".to_string(), "42601", "invalid connection string"),
        (format!("SELECT federation.join('{}', node_conninfo => 'host=127.0.0.1 port=1 dbname=postgres user=postgres connect_timeout=2')", east.conninfo()), "08001", "could not connect"),
    ];
    for (sql, code, needle) in &cases {
        let e = west.expect_error(sql);
        assert_eq!(&e.code, code, "{sql}: {e}");
        assert!(e.message.contains(needle), "{sql}: {e}");
        assert!(
            !e.to_string().contains("secret123"),
            "a password leaked into an error: {e}"
        );
        assert_eq!(snap(), before, "{sql}: something was left behind");
    }
    // The fix: the right credentials, from a password file rather than the string (the
    // server writes it, so it belongs to the server's user; it must be mode 0600).
    let pgpass = west.files_dir().join("pgpass");
    west.execute(&format!(
        "COPY (SELECT '127.0.0.1:{}:*:fed:right-one') TO '{}'",
        east.port,
        pgpass.display()
    ));
    // libpq ignores a password file others can read.
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    west.execute(&format!(
        "SELECT federation.join('{} user=fed passfile={}')",
        east.conninfo(),
        pgpass.display()
    ));
    west.execute("SELECT federation.wait_ready('90 s')");
    assert_converged(&c, "hippos");
    // Passwords never show in the views.
    let shown = west
        .scalar(
            "SELECT federation_internal.mask_conninfo('host=a user=fed password=right-one sslpassword=x')",
        )
        .unwrap();
    assert!(
        !shown.contains("right-one") && !shown.contains("sslpassword"),
        "{shown}"
    );
    assert!(!west
        .scalar("SELECT string_agg(conninfo, ' ') FROM federation.nodes")
        .unwrap()
        .contains("right-one"));
}

#[test]
fn join_refuses_incompatible_peers() {
    let c = Cluster::start(&[
        NodeSpec::guc("east"),
        NodeSpec::guc("west"),
        NodeSpec::guc("bare").without_extension(),
        NodeSpec::guc("east2"),
    ]);
    let (east, west, bare) = (c.node("east"), c.node("west"), c.node("bare"));
    east.execute(HIPPOS);
    // pg_federation missing on the peer.
    let e = west.expect_error(&format!("SELECT federation.join('{}')", bare.conninfo()));
    assert_eq!(e.code, "55000", "{e}");
    assert!(e.message.contains("not installed"), "{e}");
    // A federated table that exists on this side but is not federated (a table missing
    // altogether is made from the peer's definition: schema_changes.rs).
    west.execute(
        "CREATE TABLE hippos (id uuid PRIMARY KEY, value numeric, created_at timestamptz NOT NULL)",
    );
    let e = west.expect_error(&format!("SELECT federation.join('{}')", east.conninfo()));
    assert_eq!(e.code, "55000", "{e}");
    assert!(
        e.message.contains("hippos") && e.message.contains("not federated on this node"),
        "{e}"
    );
    // ... or with other columns.
    west.execute("DROP TABLE hippos; CREATE TABLE hippos (id uuid PRIMARY KEY, value text, created_at timestamptz NOT NULL); SELECT federation.enable('hippos')");
    let e = west.expect_error(&format!("SELECT federation.join('{}')", east.conninfo()));
    assert_eq!(e.code, "42804", "{e}");
    assert!(e.detail.as_deref().unwrap_or("").contains("value"), "{e}");
    // The hint gives the statements that bring this node level with the peer.
    assert!(
        e.hint
            .as_deref()
            .unwrap_or("")
            .contains("ALTER TABLE public.hippos ALTER COLUMN value TYPE numeric;"),
        "{e}"
    );
    // A role without superuser (so without the right to subscribe).
    east.execute("CREATE ROLE weak LOGIN");
    west.execute("SELECT federation.disable('hippos'); DROP TABLE hippos;");
    west.execute(HIPPOS);
    let e = west.expect_error(&format!(
        "SELECT federation.join('{} user=weak')",
        east.conninfo()
    ));
    assert_eq!(e.code, "42501", "{e}");
    // The same node name (renamed east2 -> east).
    let twin = c.node("east2");
    twin.execute(HIPPOS);
    // No address for the peers to reach this node.
    west.append_conf("federation.node_conninfo = ''");
    west.reload();
    let e = west.expect_error(&format!("SELECT federation.join('{}')", east.conninfo()));
    assert_eq!(e.code, "55000", "no node_conninfo: {e}");
    assert!(
        e.hint
            .as_deref()
            .unwrap_or("")
            .contains("federation.node_conninfo"),
        "{e}"
    );
    west.append_conf(&format!("federation.node_conninfo = '{}'", west.conninfo()));
    west.reload();
    twin.execute("ALTER SYSTEM SET federation.node_name = 'east'");
    twin.reload();
    let before = (snapshot(east, "public"), snapshot(twin, "public"));
    let e = twin.expect_error(&format!("SELECT federation.join('{}')", east.conninfo()));
    // twin recorded "east2" when it enabled hippos: renaming is refused before anything else.
    assert_eq!(e.code, "55000", "{e}");
    assert!(e.message.contains("name changed"), "{e}");
    assert_eq!((snapshot(east, "public"), snapshot(twin, "public")), before);
    // Not superuser: refused.
    west.execute("CREATE ROLE app LOGIN");
    let e = west.expect_error(&format!(
        "SET ROLE app; SELECT federation.join('{}')",
        east.conninfo()
    ));
    west.execute("RESET ROLE");
    assert_eq!(e.code, "42501", "{e}");
    // Finally the real thing works.
    join(west, east);
}

#[test]
fn duplicate_node_names_are_refused() {
    let c = Cluster::start(&[NodeSpec::guc("east"), NodeSpec::guc("west")]);
    let (east, west) = (c.node("east"), c.node("west"));
    west.execute("ALTER SYSTEM SET federation.node_name = 'east'");
    west.reload();
    let before = (snapshot(east, "public"), snapshot(west, "public"));
    let e = west.expect_error(&format!("SELECT federation.join('{}')", east.conninfo()));
    assert_eq!(e.code, "42710", "{e}");
    assert!(e.message.contains("already taken"), "{e}");
    assert_eq!((snapshot(east, "public"), snapshot(west, "public")), before);
}

#[test]
fn leave_and_drop_node() {
    let c = joined(&["east", "central", "west"]);
    let (east, central, west) = (c.node("east"), c.node("central"), c.node("west"));
    for n in [east, central, west] {
        n.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 10) g");
    }
    assert_converged(&c, "hippos");

    // disable() on a federation changes every member in the caller's transaction: rolled
    // back, it changes nothing anywhere.
    let before: Vec<String> = c.all().iter().map(|n| snapshot(n, "public")).collect();
    west.execute("BEGIN; SELECT federation.disable('hippos'); ROLLBACK");
    let after: Vec<String> = c.all().iter().map(|n| snapshot(n, "public")).collect();
    assert_eq!(after, before);

    // west leaves: everywhere its subscriptions, slots and catalog rows go; its rows stay.
    let e = west.expect_error("BEGIN; SELECT federation.leave()");
    west.execute("ROLLBACK");
    assert_eq!(e.code, "25001", "{e}");
    west.execute("SELECT federation.leave()");
    for n in [east, central] {
        assert_eq!(
            n.scalar("SELECT count(*) FROM federation.node WHERE node_name = 'west'")
                .as_deref(),
            Some("0")
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM pg_subscription WHERE subname LIKE '%west%'")
                .as_deref(),
            Some("0")
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '%west%'")
                .as_deref(),
            Some("0")
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM hippos_west").as_deref(),
            Some("10"),
            "rows kept by default"
        );
    }
    assert_eq!(
        west.scalar("SELECT count(*) FROM pg_subscription")
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        west.scalar("SELECT count(*) FROM pg_replication_slots")
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        west.scalar("SELECT count(*) FROM federation.node")
            .as_deref(),
        Some("0")
    );
    // Out of the federation, west may turn the table back into an ordinary one, with every row.
    west.execute("SELECT federation.disable('hippos')");
    assert_eq!(
        west.scalar("SELECT count(*) FROM hippos").as_deref(),
        Some("30")
    );
    west.execute("DROP TABLE hippos");
    west.execute(HIPPOS);

    // central dies; east drops it while it is unreachable.
    central.stop();
    east.execute("SELECT federation.drop_node('central')");
    assert_eq!(
        east.scalar("SELECT count(*) FROM federation.node")
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        east.scalar("SELECT count(*) FROM pg_subscription")
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        east.scalar("SELECT count(*) FROM pg_replication_slots")
            .as_deref(),
        Some("0"),
        "WAL no longer held for the dead node"
    );
    let e = east.expect_error("SELECT federation.drop_node('nobody')");
    assert_eq!(e.code, "42704", "{e}");
    // west can join east again.
    join(west, east);
    east.execute("INSERT INTO hippos (value) VALUES (99)");
    wait_until(
        "west to receive east's new row",
        Duration::from_secs(60),
        &[east, west],
        || Ok(west.scalar("SELECT count(*) FROM hippos_east").as_deref() == Some("11")),
    );
}

#[test]
fn writers_during_a_join_lose_nothing() {
    let c = nodes(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = [east, west]
        .iter()
        .map(|n| {
            let mut client = n.connect().unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    client
                        .batch_execute("INSERT INTO hippos (value) VALUES (1)")
                        .unwrap();
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    join(west, east);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_converged(&c, "hippos");
    for n in [east, west] {
        assert_eq!(
            n.scalar("SELECT count(*) FROM hippos_east")
                .unwrap()
                .parse::<u64>()
                .unwrap(),
            acked[0],
            "on {}",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM hippos_west")
                .unwrap()
                .parse::<u64>()
                .unwrap(),
            acked[1],
            "on {}",
            n.name
        );
    }
}

/// A node whose members hold no rows makes no initial copy (each subscription is ready as it
/// is made: replication::publishes_no_rows, asked after the slot was made), and rows written
/// on every node from the moment join() commits, while the worker makes the slots and looks
/// at the tables, all arrive: whichever way each emptiness check goes, none is lost.
#[test]
fn a_join_of_empty_nodes_copies_nothing_and_loses_no_row_written_meanwhile() {
    let c = nodes(&["east", "central", "west"]);
    let (east, central, west) = (c.node("east"), c.node("central"), c.node("west"));
    let copied =
        "SELECT count(*) FROM pg_subscription_rel WHERE srsublsn IS NOT NULL OR srsubstate <> 'r'";
    join(central, east);
    for n in [east, central] {
        // A table sync ends with its table's row carrying the sync's LSN; copy_data = false
        // leaves it NULL.
        assert_eq!(
            n.scalar(copied).as_deref(),
            Some("0"),
            "on {}: a table sync ran for empty tables",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM pg_subscription_rel")
                .as_deref(),
            Some("1"),
            "on {}",
            n.name
        );
    }

    // west joins; writers on all three start as join() commits.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients: Vec<_> = [east, central, west]
        .iter()
        .map(|n| n.connect().unwrap())
        .collect();
    west.execute(&format!("SELECT federation.join('{}')", east.conninfo()));
    let writers: Vec<_> = clients
        .drain(..)
        .map(|mut client| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = 0u64;
                loop {
                    client
                        .batch_execute("INSERT INTO hippos (value) VALUES (1)")
                        .unwrap();
                    acked += 1;
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return acked;
                    }
                }
            })
        })
        .collect();
    pg_test::scenario::wait_ready(west, "90 s", &c.all());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_converged(&c, "hippos");
    for n in c.all() {
        for (owner, acked) in ["east", "central", "west"].iter().zip(&acked) {
            assert_eq!(
                n.scalar(&format!("SELECT count(*) FROM hippos_{owner}"))
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
                *acked,
                "on {}: rows of {owner}",
                n.name
            );
        }
    }
}

#[test]
fn a_restart_while_a_join_completes_does_not_stop_it() {
    let c = nodes(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 100) g");
    west.execute(&format!("SELECT federation.join('{}')", east.conninfo()));
    east.restart(); // the peer goes away right after COMMIT
    west.restart(); // and so does the joining node
    west.execute("SELECT federation.wait_ready('90 s')");
    assert_converged(&c, "hippos");
    assert_eq!(
        west.scalar("SELECT count(*) FROM hippos").as_deref(),
        Some("100")
    );
}

#[test]
fn enable_on_a_federation_is_refused_everywhere_when_one_member_refuses() {
    let c = joined(&["east", "central", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in &c.nodes {
        n.execute("CREATE TABLE pens (id bigint PRIMARY KEY, name text)");
    }
    // On west only, a foreign key references the table: west cannot federate it.
    west.execute("CREATE TABLE visits (pen bigint REFERENCES pens)");
    let before: Vec<String> = c.nodes.iter().map(|n| snapshot(n, "public")).collect();
    let catalogs: Vec<Option<String>> = c
        .nodes
        .iter()
        .map(|n| n.scalar("SELECT count(*) FROM federation.federated_table"))
        .collect();
    let e = east.expect_error("SELECT federation.enable('pens')");
    assert_eq!(e.code, "0A000", "{e}");
    assert!(
        e.message
            .contains("member \"west\" cannot federate public.pens")
            && e.message.contains("visits_pen_fkey"),
        "{e}"
    );
    assert!(
        e.hint
            .as_deref()
            .unwrap_or_default()
            .contains("DROP CONSTRAINT"),
        "{e}"
    );
    for (i, n) in c.nodes.iter().enumerate() {
        assert_eq!(
            snapshot(n, "public"),
            before[i],
            "nothing changed on {}",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM federation.federated_table"),
            catalogs[i]
        );
    }
    // The member's hint followed, the same call federates it everywhere.
    west.execute("ALTER TABLE visits DROP CONSTRAINT visits_pen_fkey");
    east.execute("SELECT federation.enable('pens')");
    east.execute("SELECT federation.wait_ready('60 s')");
    wait_until(
        "pens to be federated on every member",
        Duration::from_secs(60),
        &c.all(),
        || {
            for n in c.all() {
                if n.scalar("SELECT mesh_state FROM federation.federated_table WHERE relid = 'pens'::regclass").as_deref() != Some("ready") {
                    return Err(format!("{} has not federated pens", n.name));
                }
            }
            Ok(true)
        },
    );
    for (i, n) in c.nodes.iter().enumerate() {
        n.execute(&format!("INSERT INTO pens VALUES ({i}, 'pen')"));
    }
    assert_converged(&c, "pens");
}

#[test]
fn a_table_enabled_later_joins_the_mesh() {
    let c = joined(&["east", "central", "west"]);
    let (east, central, west) = (c.node("east"), c.node("central"), c.node("west"));
    for n in [east, central, west] {
        n.execute("CREATE TABLE later (id bigint PRIMARY KEY, note text)");
    }
    east.execute("INSERT INTO later VALUES (1, 'e')");
    central.execute("INSERT INTO later VALUES (2, 'c')"); // rows there before: central's own
                                                          // A table missing on one member is refused up front, naming the member; nothing changes.
    east.execute("CREATE TABLE only_here (id int PRIMARY KEY)");
    let before = snapshot(east, "public");
    let e = east.expect_error("SELECT federation.enable('only_here')");
    assert_eq!(e.code, "55000", "{e}");
    assert!(e.message.contains("does not exist on member"), "{e}");
    assert_eq!(snapshot(east, "public"), before);
    // One call on one node federates it everywhere; it says the rest follows COMMIT.
    let notices = east.notices("SELECT federation.enable('later')");
    assert!(
        notices.iter().any(|n| n
            .contains("after COMMIT the background worker federates it on central, west")
            && n.contains("federation.wait_ready()")),
        "{notices:?}"
    );
    east.execute("SELECT federation.wait_ready('90 s')");
    west.execute("INSERT INTO later VALUES (3, 'w')");
    assert_converged(&c, "later");
    for n in [east, central, west] {
        assert_eq!(
            n.scalar("SELECT string_agg(id || ':' || node_name, ',' ORDER BY id) FROM later")
                .as_deref(),
            Some("1:east,2:central,3:west"),
            "on {}",
            n.name
        );
    }
}

#[test]
fn a_renamed_node_refuses_writes_until_its_name_is_restored() {
    let c = nodes(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    join(west, east);
    west.execute("ALTER SYSTEM SET federation.node_name = 'west2'");
    west.reload();
    let e = west.expect_error("INSERT INTO hippos (value) VALUES (1)");
    assert_eq!(e.code, "55000", "{e}");
    assert!(
        e.message.contains("changed from \"west\" to \"west2\""),
        "{e}"
    );
    assert!(e.hint.as_deref().unwrap_or("").contains("leave"), "{e}");
    assert_eq!(
        west.scalar("SELECT count(*) FROM hippos_west").as_deref(),
        Some("0"),
        "no row went anywhere"
    );
    // health() on it tells the truth: every write is refused, and how to repair it.
    let h = west.query("SELECT health, reason FROM federation.health()");
    assert_eq!(h[0][0].as_deref(), Some("CRITICAL"), "{h:?}");
    assert!(
        h[0][1]
            .as_deref()
            .unwrap_or_default()
            .contains("changed from \"west\" to \"west2\""),
        "{h:?}"
    );
    let repair = west.scalar("SELECT repair FROM federation.status WHERE direction = 'identity'");
    assert!(
        repair
            .as_deref()
            .unwrap_or_default()
            .contains("federation.node_name = 'west'"),
        "{repair:?}"
    );
    west.execute("ALTER SYSTEM RESET federation.node_name");
    west.reload();
    assert_eq!(
        west.scalar("INSERT INTO hippos (value) VALUES (1) RETURNING node_name")
            .as_deref(),
        Some("west")
    );
    wait_health_ok(west, &c.all());
}

#[test]
fn a_member_unreachable_during_the_join_is_refused_cleanly() {
    let c = nodes(&["east", "central", "west"]);
    let (east, central, west) = (c.node("east"), c.node("central"), c.node("west"));
    join(central, east);
    central.stop();
    let before = (snapshot(east, "public"), snapshot(west, "public"));
    let e = west.expect_error(&format!("SELECT federation.join('{}')", east.conninfo()));
    assert_eq!(e.code, "08001", "{e}");
    assert!(
        e.message.contains("central"),
        "the error names the unreachable member: {e}"
    );
    assert_eq!((snapshot(east, "public"), snapshot(west, "public")), before);
    central.start_again();
    join(west, east);
    assert_converged(&c, "hippos");
}

#[test]
fn two_nodes_joining_at_once_still_form_a_full_mesh() {
    let c = nodes(&["east", "west", "north", "south"]);
    let (east, west, north, south) = (
        c.node("east"),
        c.node("west"),
        c.node("north"),
        c.node("south"),
    );
    join(west, east);
    // Both join before either's join is known to anyone: each learns {east, west} only.
    let mut a = north.connect().unwrap();
    let mut b = south.connect().unwrap();
    a.batch_execute(&format!(
        "BEGIN; SELECT federation.join('{}')",
        east.conninfo()
    ))
    .unwrap();
    b.batch_execute(&format!(
        "BEGIN; SELECT federation.join('{}')",
        west.conninfo()
    ))
    .unwrap();
    a.batch_execute("COMMIT").unwrap();
    b.batch_execute("COMMIT").unwrap();
    // The workers find the missing pair and wire it: every node ends with three ready members.
    wait_until(
        "every node to know three ready members",
        Duration::from_secs(120),
        &c.all(),
        || {
            for n in c.all() {
                let ready = n.scalar("SELECT count(*) FROM federation.node WHERE state = 'ready'");
                if ready.as_deref() != Some("3") {
                    return Err(format!("{} knows {:?} ready members", n.name, ready));
                }
            }
            Ok(true)
        },
    );
    for n in [east, west, north, south] {
        n.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 25) g");
        assert_eq!(
            n.scalar("SELECT count(*) FROM pg_subscription").as_deref(),
            Some("3"),
            "on {}",
            n.name
        );
    }
    assert_converged(&c, "hippos");
    assert_eq!(
        north.scalar("SELECT count(*) FROM hippos_south").as_deref(),
        Some("25")
    );
}

#[test]
fn disable_on_a_federation_turns_the_table_back_on_every_member() {
    let c = Cluster::start(&[
        NodeSpec::guc("east"),
        NodeSpec::guc("central"),
        NodeSpec::guc("west"),
    ]);
    for n in c.all() {
        n.execute(HIPPOS);
        n.execute("CREATE TABLE pens (id bigint PRIMARY KEY, name text); SELECT federation.enable('pens')");
    }
    let (east, central, west) = (c.node("east"), c.node("central"), c.node("west"));
    join(central, east);
    join(west, east);
    for (i, n) in c.all().into_iter().enumerate() {
        n.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 10) g");
        n.execute(&format!(
            "INSERT INTO pens SELECT g, 'p' FROM generate_series({0} * 100 + 1, {0} * 100 + 5) g",
            i
        ));
    }
    assert_converged(&c, "hippos");
    west.execute("SELECT federation.disable('hippos')");
    for n in c.all() {
        assert_eq!(
            n.scalar("SELECT relkind::text FROM pg_class WHERE relname = 'hippos'")
                .as_deref(),
            Some("r"),
            "on {}",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM hippos").as_deref(),
            Some("30"),
            "every row kept on {}",
            n.name
        );
        assert_eq!(n.scalar("SELECT count(*) FROM pg_class WHERE relname LIKE 'hippos\\_%' AND relkind IN ('r', 'p')").as_deref(), Some("0"), "on {}", n.name);
        assert_eq!(
            n.scalar("SELECT string_agg(relid::text, ',') FROM federation.federated_table")
                .as_deref(),
            Some("pens")
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM pg_publication_tables WHERE tablename LIKE 'hippos%'")
                .as_deref(),
            Some("0")
        );
        assert_eq!(n.scalar("SELECT count(*) FROM pg_subscription_rel WHERE srrelid::regclass::text LIKE 'hippos%'").as_deref(), Some("0"));
    }
    // The other table keeps replicating, and every pair stays healthy.
    east.execute("INSERT INTO pens VALUES (1000, 'after')");
    wait_until(
        "pens to keep replicating",
        Duration::from_secs(60),
        &c.all(),
        || {
            Ok(c.all().iter().all(|n| {
                n.scalar("SELECT count(*) FROM pens WHERE id = 1000")
                    .as_deref()
                    == Some("1")
            }))
        },
    );
    for n in c.all() {
        wait_until(
            &format!("{} to report OK", n.name),
            Duration::from_secs(60),
            &c.all(),
            || {
                let r = n.query("SELECT health, reason FROM federation.health()");
                if r[0][0].as_deref() == Some("OK") {
                    Ok(true)
                } else {
                    Err(format!("{:?}", r[0]))
                }
            },
        );
    }
    // Disabling again (a downgrade run on the next node): nothing to do, said so.
    let notices = central.notices("SELECT federation.disable('hippos')");
    assert!(
        notices
            .iter()
            .any(|n| n.contains("is not federated here; nothing to do")),
        "{notices:?}"
    );
}

#[test]
fn a_database_created_after_the_server_started_joins_at_once() {
    let c = Cluster::start(&[
        NodeSpec::guc("east")
            .without_extension()
            .with_conf("federation.database = 'later'"),
        NodeSpec::guc("west"),
    ]);
    let (east, west) = (c.node("east"), c.node("west"));
    west.execute(HIPPOS);
    // The launcher waits for the database; no worker yet.
    wait_until(
        "the launcher to wait for database later",
        Duration::from_secs(30),
        &c.all(),
        || {
            Ok(east.scalar("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_federation launcher'").as_deref() == Some("1"))
        },
    );
    assert_eq!(
        east.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_federation worker'"
        )
        .as_deref(),
        Some("0")
    );
    // The usual order: the database first, then at once the extension, a table and the join.
    east.execute("CREATE DATABASE later");
    let later = format!(
        "host=127.0.0.1 port={} dbname=later user=postgres",
        east.port
    );
    let mut client = pg_test::postgres::Client::connect(&later, pg_test::postgres::NoTls).unwrap();
    // In the same transaction as CREATE EXTENSION, join() is refused before it tries anything
    // (the peer connects back to this node and would not see the extension).
    let e = client
        .batch_execute(&format!(
            "BEGIN; CREATE EXTENSION pg_federation; SELECT federation.join('{}', node_conninfo => '{later}')",
            west.conninfo()
        ))
        .expect_err("join in the transaction that made the extension");
    let e = e.as_db_error().expect("a database error");
    assert_eq!(e.code().code(), "55000", "{e:?}");
    assert!(e.hint().unwrap_or_default().contains("COMMIT"), "{e:?}");
    client.batch_execute("ROLLBACK").unwrap();
    client
        .batch_execute("CREATE EXTENSION pg_federation")
        .unwrap();
    client.batch_execute(HIPPOS).unwrap();
    client
        .batch_execute(&format!(
            "SELECT federation.join('{}', node_conninfo => '{later}')",
            west.conninfo()
        ))
        .unwrap_or_else(|e| panic!("join right after CREATE DATABASE: {e:?}"));
    client
        .batch_execute("SELECT federation.wait_ready('90 s')")
        .unwrap();
    client
        .batch_execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 10) g")
        .unwrap();
    west.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 5) g");
    wait_until(
        "rows to flow both ways",
        Duration::from_secs(60),
        &c.all(),
        || {
            let here: i64 = client
                .query_one("SELECT count(*) FROM hippos", &[])
                .unwrap()
                .get(0);
            let there = west.scalar("SELECT count(*) FROM hippos");
            Ok(here == 15 && there.as_deref() == Some("15"))
        },
    );
}

#[test]
fn health_says_when_a_table_is_not_yet_federated_on_every_member() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in [east, west] {
        n.execute("CREATE TABLE pens (id bigint PRIMARY KEY, name text)");
    }
    // On west a transaction holds a lock that lets enable()'s checks read the table but keeps
    // the worker from federating it there.
    let mut holder =
        pg_test::postgres::Client::connect(&west.client_conninfo(), pg_test::postgres::NoTls)
            .unwrap();
    holder
        .batch_execute("BEGIN; LOCK TABLE pens IN SHARE MODE")
        .unwrap();
    east.execute("SELECT federation.enable('pens')");
    east.execute("SET federation.lag_warning = '1s'");
    wait_until(
        "health() to say pens is still spreading",
        Duration::from_secs(60),
        &c.all(),
        || {
            let h = east.query("SELECT health, reason FROM federation.health()");
            Ok(h[0][0].as_deref() == Some("WARNING")
                && h[0][1]
                    .as_deref()
                    .unwrap_or_default()
                    .contains("not yet on every member"))
        },
    );
    holder.batch_execute("COMMIT").unwrap();
    east.execute("SELECT federation.wait_ready('60 s')");
    wait_health_ok(east, &c.all());
    east.execute("RESET federation.lag_warning");
}

#[test]
fn a_member_that_refuses_a_table_after_the_checks_is_named_with_its_error_at_once() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in [east, west] {
        n.execute("CREATE TABLE pens (id bigint PRIMARY KEY, name text, node_name text)");
    }
    // enable() checks every member, then west changes before COMMIT: a row in the name of a
    // node that is no member, which west's worker-run enable then refuses.
    east.execute("BEGIN; SELECT federation.enable('pens')");
    west.execute("INSERT INTO pens VALUES (1, 'stray', 'north')");
    east.execute("COMMIT");
    wait_until(
        "status() to name west's refusal",
        Duration::from_secs(60),
        &c.all(),
        || {
            let r = east.query(
                "SELECT health, reason, repair FROM federation.status WHERE direction = 'table'",
            );
            match r.first() {
                Some(row) => {
                    let reason = row[1].clone().unwrap_or_default();
                    Ok(row[0].as_deref() == Some("WARNING")
                        && reason.contains("west")
                        && reason.contains("not members")
                        && reason.contains("north"))
                }
                None => Err("no table row yet".into()),
            }
        },
    );
    // Nobody else sees the error text (it may name hosts).
    east.execute("CREATE ROLE nosy LOGIN");
    let e = east.expect_error("SET ROLE nosy; SELECT * FROM federation.spread_failure");
    assert_eq!(e.code, "42501", "{e}");
    east.execute("RESET ROLE");
    // Fixed on west: the worker retries by itself, and the row goes.
    west.execute("UPDATE pens SET node_name = 'west' WHERE node_name = 'north'");
    east.execute("SELECT federation.wait_ready('60 s')");
    assert_eq!(
        east.row_count("SELECT 1 FROM federation.status WHERE direction = 'table'"),
        0
    );
    assert_eq!(east.row_count("SELECT 1 FROM federation.spread_failure"), 0);
    east.execute("INSERT INTO pens (id, name) VALUES (2, 'from east')");
    assert_converged(&c, "pens");
    wait_health_ok(east, &c.all());
}

#[test]
fn leave_with_drop_rows_takes_its_partitions_off_every_member_and_the_others_replicate_on() {
    let c = joined(&["east", "central", "west"]);
    let (east, central, west) = (c.node("east"), c.node("central"), c.node("west"));
    for n in [east, central, west] {
        n.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 10) g");
    }
    assert_converged(&c, "hippos");
    west.execute("SELECT federation.leave(drop_rows => true)");
    for n in [east, central] {
        assert_eq!(
            n.scalar("SELECT to_regclass('hippos_west') IS NULL")
                .as_deref(),
            Some("t"),
            "west's partition dropped on {}",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM federation.partition WHERE node_name = 'west'")
                .as_deref(),
            Some("0"),
            "on {}",
            n.name
        );
        assert_eq!(
            n.scalar(
                "SELECT (SELECT count(*) FROM federation.node WHERE node_name = 'west')
                      + (SELECT count(*) FROM pg_subscription WHERE subname LIKE '%west%')
                      + (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '%west%')"
            )
            .as_deref(),
            Some("0"),
            "nothing of west left on {}",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT count(*) FROM hippos").as_deref(),
            Some("20"),
            "on {}",
            n.name
        );
    }
    // The leaving node keeps every row it held (its own and its copies).
    assert_eq!(
        west.scalar("SELECT count(*) FROM hippos").as_deref(),
        Some("30")
    );
    // The two that stay go on replicating with each other, healthy.
    east.execute("INSERT INTO hippos (value) VALUES (-1)");
    central.execute("INSERT INTO hippos (value) VALUES (-2)");
    assert_converged_among(&[east, central], "hippos");
    for n in [east, central] {
        assert_eq!(
            n.scalar("SELECT count(*) FROM hippos").as_deref(),
            Some("22"),
            "on {}",
            n.name
        );
        wait_health_ok(n, &[east, central]);
    }
}

/// A member that holds rows: the joining node loads its copies itself (src/worker/load.rs:
/// copy detached, its indexes dropped, the rows relayed from the member's snapshot, attached
/// again) and subscribes without a table sync. Each copy comes back a partition of its table
/// with every index of the table built and valid, the index a DBA made on that copy alone
/// kept, and no CHECK of the load left; the rows written on the member during and after the
/// load arrive from the slot.
#[test]
fn a_joining_node_loads_its_copies_and_rebuilds_their_indexes() {
    let c = Cluster::start(&[NodeSpec::guc("east"), NodeSpec::guc("west")]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in [east, west] {
        n.execute(HIPPOS);
        n.execute("CREATE INDEX hippos_value ON hippos (value)");
    }
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 50000) g");
    west.execute(&format!("SELECT federation.join('{}')", east.conninfo()));
    // A DBA's own index on west's copy of east's partition, made with join() committed.
    west.execute("BEGIN; SET LOCAL federation.unsafe_ddl = on; CREATE INDEX hippos_east_created ON hippos_east (created_at); COMMIT");
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 100) g");
    wait_ready(west, "90 s", &[east, west]);
    east.execute("INSERT INTO hippos (value) VALUES (-1)");
    assert_converged(&c, "hippos");
    assert_eq!(
        west.scalar("SELECT count(*) FROM hippos_east").as_deref(),
        Some("50101")
    );
    // No table sync ran into west: it ends with its table's row carrying the sync's LSN.
    assert_eq!(
        west.scalar(
            "SELECT count(*) FROM pg_subscription_rel WHERE srsublsn IS NOT NULL OR srsubstate <> 'r'"
        )
        .as_deref(),
        Some("0"),
        "a table sync copied into west"
    );
    let indexes = "SELECT string_agg(pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid AND i.indisready THEN '' ELSE ' (invalid)' END
                               || CASE WHEN EXISTS (SELECT FROM pg_inherits h WHERE h.inhrelid = i.indexrelid) THEN ' attached' ELSE '' END,
                               E'\n' ORDER BY 1)
                   FROM pg_index i WHERE i.indrelid = 'hippos_east'::regclass";
    let on_west = west.scalar(indexes).unwrap_or_default();
    assert_eq!(
        on_west.lines().filter(|l| l.ends_with(" attached")).count(),
        2,
        "west's copy has the table's two indexes, attached:\n{on_west}"
    );
    assert!(
        !on_west.contains("(invalid)") && on_west.contains("hippos_east_created"),
        "west's copy keeps its own index and every index is valid:\n{on_west}"
    );
    assert_eq!(
        west.scalar(
            "SELECT c.relispartition::text || ' ' || (SELECT count(*) FROM pg_constraint k WHERE k.conrelid = c.oid AND k.conname = 'pg_federation_load')
             FROM pg_class c WHERE c.oid = 'hippos_east'::regclass"
        )
        .as_deref(),
        Some("true 0")
    );
    // Rows written on west to its own partition and on east keep flowing both ways.
    west.execute("INSERT INTO hippos (value) VALUES (-2)");
    assert_converged(&c, "hippos");
}

/// A table whose replica identity is an index of its own choosing cannot be rebuilt alike by a
/// load (the index built on attach would not be it): that member's copies come by table sync,
/// as before the load existed, and the join completes.
#[test]
fn copies_the_load_cannot_rebuild_alike_come_by_table_sync() {
    let c = Cluster::start(&[NodeSpec::guc("east"), NodeSpec::guc("west")]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in [east, west] {
        n.execute(HIPPOS);
        n.execute(
            "CREATE TABLE tags (id int NOT NULL, label text NOT NULL);
             CREATE UNIQUE INDEX tags_id ON tags (id);
             ALTER TABLE tags REPLICA IDENTITY USING INDEX tags_id;
             SELECT federation.enable('tags');",
        );
    }
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 1000) g");
    east.execute("INSERT INTO tags SELECT g, 'tag ' || g FROM generate_series(1, 1000) g");
    join(west, east);
    assert_eq!(
        west.scalar(
            "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
             WHERE s.subname = federation_internal.subscription_name('east', 'west') AND r.srsublsn IS NOT NULL"
        )
        .as_deref(),
        Some("2"),
        "east's two tables came to west by table sync"
    );
    east.execute("UPDATE tags SET label = 'changed' WHERE id = 7");
    assert_converged(&c, "hippos");
    assert_converged(&c, "tags");
}

/// leave() on a joining node while its worker loads the copies of a member's partitions: the
/// load holds the member's catalog row and the worker its wiring lock, so leave() waits for
/// the pass, then drops what it made (the subscription the load created, the member's
/// subscription to this node, their slots): nothing of the federation is left on either node,
/// and the rows loaded stay, as leave() keeps rows.
#[test]
fn leave_during_a_load_waits_for_it_and_leaves_nothing_behind() {
    let c = Cluster::start(&[NodeSpec::guc("east"), NodeSpec::guc("west")]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in [east, west] {
        n.execute(HIPPOS);
    }
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 5000) g");
    let mut holder = join_with_load_held(west, east, "hippos_east");
    wait_until(
        "west's worker to be loading east's rows",
        Duration::from_secs(60),
        &[east, west],
        || {
            Ok(west
                .scalar("SELECT count(*) FROM pg_stat_progress_copy WHERE command = 'COPY FROM'")
                .as_deref()
                == Some("1"))
        },
    );
    let mut leaver = west.connect().unwrap();
    let leaving = std::thread::spawn(move || leaver.batch_execute("SELECT federation.leave()"));
    wait_until(
        "leave() to wait for the load",
        Duration::from_secs(60),
        &[west],
        || {
            Ok(west
                .scalar(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE federation.node SET state%'",
                )
                .as_deref()
                == Some("1"))
        },
    );
    holder
        .batch_execute("SELECT pg_advisory_unlock(4242)")
        .unwrap();
    leaving
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("leave() failed: {e}"));
    for n in [east, west] {
        assert_eq!(
            n.scalar(
                "SELECT (SELECT count(*) FROM federation.node)
                        || ' ' || (SELECT count(*) FROM pg_subscription)
                        || ' ' || (SELECT count(*) FROM pg_replication_slots)"
            )
            .as_deref(),
            Some("0 0 0"),
            "on {}: members, subscriptions, slots left",
            n.name
        );
    }
    assert_eq!(
        west.scalar("SELECT count(*) FROM hippos_east").as_deref(),
        Some("5000"),
        "the rows loaded stay on west"
    );
}
