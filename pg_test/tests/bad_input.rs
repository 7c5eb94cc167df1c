//! Bad input, table-driven: every case names the node it runs on, the statement, the SQLSTATE
//! and words of the message it must give, and checks that nothing changed on any node
//! (catalog, tables, rows, publications, subscriptions, replication slots). Adding a case is
//! one line.

use pg_test::checks::{digest, snapshot};
use pg_test::scenario::{join, HIPPOS};
use pg_test::{Cluster, Node, NodeSpec};
use std::io::Write;

/// Everything a call could change on a node.
fn state(n: &Node) -> String {
    let slots = n
        .scalar(
            "SELECT coalesce(string_agg(slot_name, ',' ORDER BY 1), '') FROM pg_replication_slots",
        )
        .unwrap_or_default();
    let members = n
        .scalar("SELECT coalesce(string_agg(node_name || ':' || state, ',' ORDER BY 1), '') FROM federation.node")
        .unwrap_or_default();
    let local = n.scalar("SELECT coalesce(string_agg(node_name || ':' || (conninfo IS NOT NULL)::text, ','), '') FROM federation.local_node").unwrap_or_default();
    let rows = n
        .scalar("SELECT count(*) FROM pg_class WHERE relname = 'hippos'")
        .as_deref()
        == Some("1");
    let data = if rows {
        format!("{:?}", digest(n, "hippos"))
    } else {
        String::new()
    };
    format!(
        "{}\nslots={slots}\nmembers={members}\nlocal={local}\nrows={data}",
        snapshot(n, "public")
    )
}

/// A TCP server that is not PostgreSQL: answers anything with an HTTP line and hangs up.
fn not_postgres() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
        }
    });
    port
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_changes_nothing() {
    let c = Cluster::start(&[
        NodeSpec::guc("east"),
        NodeSpec::guc("west"),
        NodeSpec::guc("loner"),
    ]);
    let (east, west, loner) = (c.node("east"), c.node("west"), c.node("loner"));
    for n in [east, west, loner] {
        n.execute(HIPPOS);
        n.execute(
            "CREATE TABLE plain (id int PRIMARY KEY);
             CREATE TABLE no_pk (id int);
             CREATE VIEW a_view AS SELECT 1 AS x;
             CREATE TABLE \"Mixed Case\" (id int PRIMARY KEY);
             CREATE ROLE app LOGIN;
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO app;",
        );
    }
    east.execute("CREATE TABLE only_on_east (id int PRIMARY KEY)");
    // A subscription of the DBA's own, not the federation's (never connected, never started).
    east.execute("CREATE SUBSCRIPTION not_ours CONNECTION 'dbname=postgres' PUBLICATION p WITH (connect = false)");
    join(west, east);
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 10) g");
    let bogus = not_postgres();
    let e = east.conninfo();
    let long = "x".repeat(100);

    // (node, statement, SQLSTATE, words the message must contain)
    let cases: Vec<(&Node, String, &str, &str)> = vec![
        // node_name
        (east, "SET federation.node_name = 'west'".into(), "55P02", "cannot be changed now"),
        (east, "SELECT federation.node_name('west')".into(), "42883", "does not exist"),
        // enable
        (east, "SELECT federation.enable(NULL)".into(), "22004", "must not be NULL"),
        (east, "SELECT federation.enable('hippos', NULL)".into(), "22004", "must not be NULL"),
        (east, "SELECT federation.enable('nosuch')".into(), "42P01", "does not exist"),
        (east, "SELECT federation.enable('mixed case')".into(), "42602", "invalid name syntax"),
        (east, "SELECT federation.enable('\"Robert''); DROP TABLE hippos; --\"')".into(), "42P01", "does not exist"),
        (east, format!("SELECT federation.enable('{long}')"), "42P01", "does not exist"),
        (east, "SELECT federation.enable('a_view')".into(), "42809", "a_view"),
        (east, "SELECT federation.enable('pg_catalog.pg_class')".into(), "0A000", "system catalog"),
        (east, "SELECT federation.enable('no_pk')".into(), "55000", "primary key"),
        (east, "SELECT federation.enable('plain', node_column => 'id')".into(), "42804", "id"),
        (east, "SELECT federation.enable(42)".into(), "42P01", "does not exist"),
        (east, "SELECT federation.enable('only_on_east')".into(), "55000", "west"),
        (east, "SET ROLE app; SELECT federation.enable('plain')".into(), "42501", "plain"),
        // disable
        (east, "SELECT federation.disable(NULL)".into(), "22004", "must not be NULL"),
        (east, "SELECT federation.disable('nosuch')".into(), "42P01", "does not exist"),
        (east, "SET ROLE app; SELECT federation.disable('hippos')".into(), "42501", "hippos"),
        // join
        (loner, "SELECT federation.join(NULL)".into(), "22004", "must not be NULL"),
        (loner, "SELECT federation.join('')".into(), "22023", "connection string is empty"),
        (loner, "SELECT federation.join('host=127.0.0.1 port=1 connect_timeout=2')".into(), "08001", "could not connect"),
        (loner, "SELECT federation.join('this is = not a conninfo')".into(), "42601", "invalid connection string"),
        (loner, format!("SELECT federation.join('host=127.0.0.1 port={bogus} connect_timeout=2')"), "08001", "could not connect"),
        (loner, format!("SELECT federation.join('{e} password=s3cret-pw user=nobody')"), "08001", "role \"nobody\" does not exist"),
        (loner, format!("SELECT federation.join('{e}', node_conninfo => 'host=127.0.0.1 port=1 connect_timeout=2')"), "08001", "could not connect"),
        (loner, format!("SELECT federation.join('{}')", loner.conninfo()), "22023", "this node itself"),
        (loner, format!("SET ROLE app; SELECT federation.join('{e}')"), "42501", "permission denied"),
        (east, format!("SELECT federation.join('{}')", loner.conninfo()), "55000", "already"),
        (loner, format!("BEGIN; SELECT federation.join('{e}'); SELECT federation.enable('plain')"), "55000", "joining"),
        // leave
        (west, "BEGIN; SELECT federation.leave()".into(), "25001", "transaction block"),
        (loner, "SELECT federation.leave()".into(), "55000", "not in a federation"),
        (west, "SELECT federation.leave(NULL)".into(), "22004", "must not be NULL"),
        (west, "SET ROLE app; SELECT federation.leave()".into(), "42501", "permission denied"),
        // drop_node
        (east, "SELECT federation.drop_node(NULL)".into(), "22004", "must not be NULL"),
        (east, "SELECT federation.drop_node('nosuch')".into(), "42704", "not a member"),
        (east, "SELECT federation.drop_node('West')".into(), "42704", "not a member"),
        (east, "SELECT federation.drop_node('x''); DROP TABLE hippos; --')".into(), "42704", "not a member"),
        (east, "SELECT federation.drop_node('east')".into(), "22023", "this node"),
        (east, "BEGIN; SELECT federation.drop_node('west')".into(), "25001", "transaction block"),
        (east, "SET ROLE app; SELECT federation.drop_node('west')".into(), "42501", "permission denied"),
        // wait_ready
        (east, "SELECT federation.wait_ready(NULL)".into(), "22004", "must not be NULL"),
        (east, "SELECT federation.wait_ready('-1 s')".into(), "22023", "negative"),
        (east, "SELECT federation.wait_ready('soon')".into(), "22007", "invalid input syntax"),
        (east, "BEGIN; INSERT INTO hippos (value) VALUES (1); SELECT federation.wait_ready()".into(), "25001", "written"),
        // status and health
        (east, "SET ROLE app; SELECT * FROM federation.status".into(), "42501", "permission denied"),
        (east, "SET ROLE app; SELECT * FROM federation.health()".into(), "42501", "permission denied"),
        (east, "SELECT * FROM federation.status('west')".into(), "42883", "does not exist"),
        // verify
        (east, "SELECT * FROM federation.verify('nosuch')".into(), "42P01", "does not exist"),
        (east, "SELECT * FROM federation.verify('plain')".into(), "22023", "not federated"),
        (loner, "SELECT * FROM federation.verify()".into(), "55000", "not in a federation"),
        (east, "SET ROLE app; SELECT * FROM federation.verify()".into(), "42501", "permission denied"),
        // resync
        (west, "SELECT federation.resync(NULL)".into(), "22004", "must not be NULL"),
        (west, "SELECT federation.resync('west')".into(), "22023", "this node"),
        (west, "SELECT federation.resync('nosuch')".into(), "42704", "not a member"),
        (west, "SELECT federation.resync('east', 'plain')".into(), "22023", "not federated"),
        (west, "SELECT federation.resync('east', 'nosuch')".into(), "42P01", "does not exist"),
        (west, "SELECT federation.resync('east', timeout => '-5 min')".into(), "22023", "negative"),
        (west, "BEGIN; SELECT federation.resync('east')".into(), "25001", "transaction block"),
        (loner, "SELECT federation.resync('east')".into(), "55000", "not in a federation"),
        (west, "SET ROLE app; SELECT federation.resync('east')".into(), "42501", "permission denied"),
        // start_apply_worker (node to node)
        (east, "SELECT federation_internal.start_apply_worker('nosuch')".into(), "42704", "does not exist"),
        (east, "SELECT federation_internal.start_apply_worker('not_ours')".into(), "22023", "not one of pg_federation's"),
        (east, "SET ROLE app; SELECT federation_internal.start_apply_worker('federation_west_east')".into(), "42501", "permission denied"),
        // the load's steps: only on this node's copy of another node's partition, by superusers
        (east, "SELECT federation_internal.load_begin('public.hippos_east')".into(), "22023", "not this node's copy of another node's partition"),
        (east, "SELECT federation_internal.load_begin('plain')".into(), "22023", "not this node's copy of another node's partition"),
        (east, "SELECT federation_internal.load_begin('nosuch')".into(), "22023", "not this node's copy of another node's partition"),
        (east, "SELECT federation_internal.load_end('public.hippos_default')".into(), "22023", "not this node's copy of another node's partition"),
        (east, "SELECT federation_internal.load_begin('public.hippos_west')".into(), "55000", "loaded only by pg_federation's worker"),
        (east, "SELECT federation_internal.load_end('public.hippos_west')".into(), "55000", "loaded only by pg_federation's worker"),
        (east, "SET ROLE app; SELECT federation_internal.load_begin('public.hippos_west')".into(), "42501", "permission denied"),
    ];
    assert!(cases.len() >= 40);
    let mut failures = vec![];
    for (node, sql, code, words) in &cases {
        let before: Vec<String> = [east, west, loner].iter().map(|n| state(n)).collect();
        let err = node.try_execute(sql);
        node.execute("ROLLBACK; RESET ROLE");
        let after: Vec<String> = [east, west, loner].iter().map(|n| state(n)).collect();
        match err {
            Ok(()) => failures.push(format!("{} | {sql}: succeeded", node.name)),
            Err(e) => {
                if &e.code != code || !e.message.contains(words) {
                    failures.push(format!(
                        "{} | {sql}: want {code} \"{words}\", got {e}",
                        node.name
                    ));
                }
                if e.to_string().contains("s3cret") {
                    failures.push(format!(
                        "{} | {sql}: the password shows in the error: {e}",
                        node.name
                    ));
                }
            }
        }
        if before != after {
            failures.push(format!("{} | {sql}: something changed", node.name));
        }
    }
    // A federation subscription whose apply worker runs: nothing is started.
    assert_eq!(
        east.scalar("SELECT federation_internal.start_apply_worker('federation_west_east')::text")
            .as_deref(),
        Some("false")
    );
    // Calling join() again on a member is a no-op that says so (migration tools re-run).
    let before: Vec<String> = [east, west, loner].iter().map(|n| state(n)).collect();
    let notices = west.notices(&format!("SELECT federation.join('{e}')"));
    assert!(
        notices.iter().any(|n| n.contains("already a member")),
        "{notices:?}"
    );
    assert_eq!(
        [east, west, loner]
            .iter()
            .map(|n| state(n))
            .collect::<Vec<_>>(),
        before
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
