//! Security: who may do what, what nobody may read, that no route writes into another node's
//! partition, that hostile search_paths and look-alike objects change nothing, and that
//! names and connection strings cannot inject SQL.

use pg_test::checks::digest;
use pg_test::scenario::{assert_converged, HIPPOS};
use pg_test::{Cluster, Identity, Node, NodeSpec};

const SECRET: &str = "hunter2-secret";

/// East and west in a federation whose stored connection strings carry a password.
fn federation_with_secrets() -> Cluster {
    let c = Cluster::start(&[NodeSpec::guc("east"), NodeSpec::guc("west")]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in [east, west] {
        n.execute(HIPPOS);
        n.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 20) g");
        n.execute(
            "CREATE ROLE app LOGIN; CREATE ROLE monitor LOGIN IN ROLE pg_monitor;
             GRANT ALL ON ALL TABLES IN SCHEMA public TO app; GRANT CREATE ON DATABASE postgres TO app, monitor;",
        );
    }
    // (trust authentication here: the password is ignored, but stored like any other)
    west.execute(&format!(
        "SELECT federation.join('{} password={SECRET}', node_conninfo => '{} password={SECRET}')",
        east.conninfo(),
        west.conninfo()
    ));
    west.execute("SELECT federation.wait_ready('90 s')");
    assert_converged(&c, "hippos");
    c
}

/// Everything `role` can read in schema federation (tables and views, the columns it may
/// read) and every function of no arguments it may call, as one text.
fn everything_readable(n: &Node, role: &str) -> String {
    let rels = n.query(&format!(
        "SELECT c.oid::regclass::text,
                string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FILTER (WHERE has_column_privilege('{role}', c.oid, a.attnum, 'SELECT'))
         FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.relnamespace = 'federation'::regnamespace AND c.relkind IN ('r', 'v', 'm')
         GROUP BY c.oid"
    ));
    let funcs = n.query(&format!(
        "SELECT p.oid::regprocedure::text, p.proretset FROM pg_proc p
         WHERE p.pronamespace = 'federation'::regnamespace AND p.pronargs = 0 AND p.prorettype <> 'trigger'::regtype
           AND has_function_privilege('{role}', p.oid, 'EXECUTE')"
    ));
    let mut seen = String::new();
    let mut s = n.connect().unwrap();
    s.batch_execute(&format!("SET ROLE {role}")).unwrap();
    for r in rels {
        if let (Some(rel), Some(cols)) = (&r[0], &r[1]) {
            for row in s
                .simple_query(&format!("SELECT {cols} FROM {rel}"))
                .unwrap()
            {
                if let postgres::SimpleQueryMessage::Row(row) = row {
                    for i in 0..row.len() {
                        seen.push_str(row.get(i).unwrap_or(""));
                        seen.push(' ');
                    }
                }
            }
        }
    }
    for f in funcs {
        let f = f[0].clone().unwrap();
        let sql = format!("SELECT * FROM {f}");
        if let Ok(rows) = s.simple_query(&sql) {
            for row in rows {
                if let postgres::SimpleQueryMessage::Row(row) = row {
                    for i in 0..row.len() {
                        seen.push_str(row.get(i).unwrap_or(""));
                        seen.push(' ');
                    }
                }
            }
        }
    }
    seen
}

#[test]
fn no_role_but_a_superuser_reads_a_connection_string_or_password() {
    let c = federation_with_secrets();
    for n in c.all() {
        // The secret is stored (so the test means something) ...
        let stored = n
            .scalar("SELECT concat_ws(' ', (SELECT string_agg(conninfo, ' ') FROM federation.node),
                                           (SELECT conninfo FROM federation.local_node),
                                           (SELECT string_agg(subconninfo, ' ') FROM pg_subscription))")
            .unwrap();
        assert!(stored.contains(SECRET), "on {}: {stored}", n.name);
        for role in ["app", "monitor"] {
            let seen = everything_readable(n, role);
            assert!(!seen.is_empty(), "{role} reads something on {}", n.name);
            assert!(
                !seen.contains(SECRET),
                "{role} reads the password on {}: {seen}",
                n.name
            );
            for private in ["federation.node", "federation.local_node"] {
                let e = n.expect_error(&format!("SET ROLE {role}; SELECT conninfo FROM {private}"));
                n.execute("RESET ROLE");
                assert_eq!(e.code, "42501", "{role} on {private}: {e}");
            }
            let e = n.expect_error(&format!(
                "SET ROLE {role}; SELECT subconninfo FROM pg_subscription"
            ));
            n.execute("RESET ROLE");
            assert_eq!(e.code, "42501", "{e}");
        }
        // pg_monitor sees the members, without passwords.
        let nodes =
            n.query("SET ROLE monitor; SELECT string_agg(conninfo, ' ') FROM federation.nodes");
        n.execute("RESET ROLE");
        let shown = nodes[0][0].clone().unwrap();
        assert!(
            shown.contains("host=") && !shown.contains(SECRET),
            "{shown}"
        );
    }
}

#[test]
fn no_route_writes_into_another_nodes_partition() {
    let c = federation_with_secrets();
    let (east, west) = (c.node("east"), c.node("west"));
    let before = (digest(east, "hippos_west"), digest(east, "hippos_east"));
    east.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO app");
    let routes: &[(&str, &str)] = &[
        ("INSERT INTO hippos (value, node_name) VALUES (1, 'west')", "42501"),
        ("INSERT INTO hippos_west (value, node_name) VALUES (1, 'west')", "42501"),
        ("UPDATE hippos SET value = 0 WHERE node_name = 'west'", "42501"),
        ("UPDATE hippos_west SET value = 0", "42501"),
        ("DELETE FROM hippos WHERE node_name = 'west'", "42501"),
        ("DELETE FROM hippos_west", "42501"),
        ("UPDATE hippos SET node_name = 'west' WHERE node_name = 'east'", "42501"),
        ("TRUNCATE hippos_west", "42501"),
        ("TRUNCATE hippos", "42501"),
        ("INSERT INTO hippos (value, node_name) VALUES (1, 'nobody')", "23514"),
        ("INSERT INTO hippos (value, node_name) VALUES (1, NULL)", "23502"),
        ("SET session_replication_role = replica", "42501"),
        ("INSERT INTO hippos (value, node_name) SELECT 1, 'west' FROM generate_series(1, 3) ON CONFLICT DO NOTHING", "42501"),
    ];
    for (sql, code) in routes {
        let e = east.expect_error(&format!("SET ROLE app; {sql}"));
        east.execute("RESET ROLE");
        assert_eq!(&e.code, code, "{sql}: {e}");
    }
    // COPY, as the application and as a superuser alike.
    let mut s = east.connect().unwrap();
    s.batch_execute("SET ROLE app").unwrap();
    let copied = (|| -> Result<u64, postgres::Error> {
        use std::io::Write;
        let mut w = s.copy_in("COPY hippos (value, node_name) FROM STDIN")?;
        w.write_all(b"1\twest\n").unwrap();
        w.finish()
    })();
    let e = copied.expect_err("COPY of another node's row must fail");
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("42501"),
        "{e}"
    );
    assert_eq!(
        east.copy_in(
            "COPY hippos_west (value, node_name) FROM STDIN",
            "1\twest\n"
        )
        .unwrap_err()
        .code,
        "42501"
    );
    assert_eq!(
        (digest(east, "hippos_west"), digest(east, "hippos_east")),
        before,
        "nothing written"
    );
    // And west's own rows still replicate into that partition.
    west.execute("INSERT INTO hippos (value) VALUES (77)");
    assert_converged(&c, "hippos");
}

#[test]
fn hostile_search_paths_and_look_alike_objects_change_nothing() {
    let c = federation_with_secrets();
    let east = c.node("east");
    // Every SECURITY DEFINER function, and every function that runs SQL, pins search_path.
    let unpinned = east.scalar(
        "SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_proc p
         WHERE p.pronamespace = 'federation'::regnamespace AND p.prosecdef
           AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s LIKE 'search_path=%')",
    );
    assert_eq!(
        unpinned, None,
        "SECURITY DEFINER functions without a pinned search_path"
    );
    // Look-alikes of ours and of pg_catalog's in a schema the caller puts first.
    for role in ["app", "monitor"] {
        east.execute(&format!(
            "SET ROLE {role}; CREATE SCHEMA evil_{role}; RESET ROLE"
        ));
        east.execute(&format!(
            "SET ROLE {role};
             CREATE FUNCTION evil_{role}.node_name() RETURNS text LANGUAGE sql AS $$ SELECT 'west'::text $$;
             CREATE FUNCTION evil_{role}.current_setting(text, boolean) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'pwned'; END $$;
             CREATE FUNCTION evil_{role}.pg_size_bytes(text) RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'pwned'; END $$;
             CREATE FUNCTION evil_{role}.subscription_name(text, text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'pwned'; END $$;
             CREATE TABLE evil_{role}.node (node_name text, conninfo text, state text);
             CREATE TABLE evil_{role}.local_node (node_name text, conninfo text);
             INSERT INTO evil_{role}.local_node VALUES ('west', 'x');
             RESET ROLE"
        ));
    }
    let health = east.query("SET ROLE monitor; SET search_path = evil_monitor, pg_catalog, public; SELECT health FROM federation.health()");
    east.execute("RESET ROLE; RESET search_path");
    assert_eq!(health[0][0].as_deref(), Some("OK"));
    let rows = east.query("SET ROLE monitor; SET search_path = evil_monitor, pg_catalog, public; SELECT count(*) FROM federation.status");
    east.execute("RESET ROLE; RESET search_path");
    assert_eq!(rows[0][0].as_deref(), Some("3"));
    let written = east.query(
        "SET ROLE app; SET search_path = evil_app, pg_catalog, public;
         INSERT INTO hippos (value) VALUES (12345) RETURNING node_name, federation.node_name()",
    );
    east.execute("RESET ROLE; RESET search_path");
    assert_eq!(
        written[0],
        vec![Some("east".to_string()), Some("east".to_string())]
    );
    assert_converged(&c, "hippos");
}

#[test]
fn names_and_connection_strings_cannot_inject_sql() {
    // A node name from the setting, and one from a labels file, carrying SQL.
    let by_guc = Node::start(&NodeSpec::guc("plain"));
    by_guc.execute("CREATE TABLE victim (id int PRIMARY KEY)");
    by_guc.execute("ALTER SYSTEM SET federation.node_name = 'x''); DROP TABLE victim; --'");
    by_guc.reload();
    let e = by_guc.expect_error("SELECT federation.node_name()");
    assert_eq!(e.code, "22023", "{e}");
    let e = by_guc.expect_error("SELECT federation.enable('victim')");
    assert_eq!(e.code, "22023", "{e}");
    assert_eq!(
        by_guc
            .scalar("SELECT count(*) FROM pg_class WHERE relname = 'victim'")
            .as_deref(),
        Some("1")
    );

    let mut spec = NodeSpec::labels("labelled");
    spec.identity = Identity::LabelsFile {
        label: "pg-cluster".into(),
        value: "a\\\"; DROP TABLE victim; --".into(),
    };
    let by_label = Node::start(&spec);
    by_label.execute("CREATE TABLE victim (id int PRIMARY KEY)");
    let e = by_label.expect_error("SELECT federation.enable('victim')");
    assert!(e.code == "22023" || e.code == "F0000", "{e}");
    assert_eq!(
        by_label
            .scalar("SELECT count(*) FROM pg_class WHERE relname = 'victim'")
            .as_deref(),
        Some("1")
    );

    // A table whose name carries quotes and SQL is federated and replicated like any other.
    let c = Cluster::start(&[NodeSpec::guc("east"), NodeSpec::guc("west")]);
    let (east, west) = (c.node("east"), c.node("west"));
    let evil = "\"t\"\"; DROP TABLE victim; --\"";
    for n in [east, west] {
        n.execute(&format!("CREATE TABLE victim (id int PRIMARY KEY); CREATE TABLE {evil} (id int PRIMARY KEY); SELECT federation.enable('{}')", evil.replace('\'', "''")));
        n.execute(&format!("INSERT INTO {evil} VALUES (1)"));
    }
    west.execute(&format!("SELECT federation.join('{}')", east.conninfo()));
    west.execute("SELECT federation.wait_ready('90 s')");
    pg_test::wait_until(
        "both rows on both nodes",
        std::time::Duration::from_secs(60),
        &[east, west],
        || {
            Ok([east, west]
                .iter()
                .all(|n| n.scalar(&format!("SELECT count(*) FROM {evil}")).as_deref() == Some("2")))
        },
    );
    // A connection string carrying SQL only fails to connect.
    let e = west.expect_error("SELECT federation.join($$host=127.0.0.1 port=1 connect_timeout=2 application_name='x''); DROP TABLE victim; --'$$)");
    assert!(
        ["08001", "42601", "55000"].contains(&e.code.as_str()),
        "{e}"
    );
    for n in [east, west] {
        assert_eq!(
            n.scalar("SELECT count(*) FROM pg_class WHERE relname = 'victim'")
                .as_deref(),
            Some("1")
        );
    }
}

/// The replication role's password in a file mounted as a Kubernetes Secret with fsGroup
/// (mode 0640), which libpq refuses by itself: with federation.passfile the nodes join and
/// replicate under real password authentication, a rotated password is picked up, a
/// world-readable file is refused and named by status(), and the password is in no log.
#[test]
fn a_group_readable_password_file_works_through_federation_passfile() {
    const PASSWORD: &str = "s3cret-Federator-pw";
    let c = Cluster::start(&[NodeSpec::guc("east"), NodeSpec::guc("west")]);
    for n in &c.nodes {
        // Peers log in as a role with a password, checked (scram); this test's own sessions
        // keep the trust lines below.
        n.execute(&format!(
            "CREATE ROLE federator SUPERUSER LOGIN REPLICATION PASSWORD '{PASSWORD}'; {HIPPOS}"
        ));
        n.prepend_hba(
            "host all federator 127.0.0.1/32 scram-sha-256\nhost replication federator 127.0.0.1/32 scram-sha-256",
        );
        let file = n.write_file(
            "federator.pgpass",
            &format!("*:*:*:federator:{PASSWORD}\n"),
            0o640,
        );
        n.append_conf(&format!("federation.passfile = '{}'", file.display()));
        n.append_conf(&format!(
            "federation.node_conninfo = 'host={} port={} dbname=postgres user=federator'",
            n.host, n.port
        ));
        n.restart(); // PGPASSFILE is set by the postmaster
    }
    let (east, west) = (c.node("east"), c.node("west"));
    let peer = |n: &Node| {
        format!(
            "host={} port={} dbname=postgres user=federator",
            n.host, n.port
        )
    };
    // libpq alone refuses the 0640 file: what a user without the setting meets.
    let plain = std::process::Command::new(pg_test::pg_bindir().join("psql"))
        .args(["-X", "-w", "-d", &peer(east), "-c", "SELECT 1"])
        .env("PGPASSFILE", west.files_dir().join("federator.pgpass"))
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "libpq refuses a group-readable password file"
    );

    west.execute(&format!("SELECT federation.join('{}')", peer(east)));
    west.execute("SELECT federation.wait_ready('90 s')");
    east.execute("INSERT INTO hippos (value) VALUES (1)");
    west.execute("INSERT INTO hippos (value) VALUES (2)");
    assert_converged(&c, "hippos");

    // A world-readable file is refused and named; the last good copy keeps replication going.
    let file = west.files_dir().join("federator.pgpass");
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    pg_test::wait_until(
        "status() on west to name the world-readable password file",
        std::time::Duration::from_secs(30),
        &[west],
        || {
            Ok(west
                .scalar("SELECT reason FROM federation.status WHERE direction = 'settings' AND state = 'passfile'")
                .is_some_and(|r| r.contains("every user of the machine") && r.contains("0644")))
        },
    );
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    east.execute("INSERT INTO hippos (value) VALUES (3)");
    assert_converged(&c, "hippos");
    pg_test::wait_until(
        "west's passfile row to go",
        std::time::Duration::from_secs(30),
        &[west],
        || Ok(west.row_count("SELECT 1 FROM federation.status WHERE state = 'passfile'") == 0),
    );

    // The password is in no log, and in nothing a non-superuser can read.
    for n in [east, west] {
        let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
        assert!(
            !log.contains(PASSWORD),
            "the password is in {}'s log",
            n.name
        );
        assert!(
            log.contains("password file") && log.contains("is in use"),
            "{}'s log says the file is in use",
            n.name
        );
        n.execute("CREATE ROLE curious LOGIN IN ROLE pg_monitor");
        assert!(
            !everything_readable(n, "curious").contains(PASSWORD),
            "{}: a non-superuser reads the password",
            n.name
        );
    }
}
