//! federation.enable() and disable() on real servers: routing, what is carried over, guards,
//! replication through the guards, adoption of the original recipe, names, ROLLBACK.

use pg_test::checks::{digest, snapshot};
use pg_test::{wait_until, Cluster, Node, NodeSpec};
use std::time::Duration;

const HIPPOS: &str =
    "CREATE TABLE hippos (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), value numeric, \
                      created_at timestamptz NOT NULL DEFAULT now())";

/// A node that knows `others` as members (join() is what will fill federation.node; until
/// then the catalog row is written by hand, as join will write it).
fn member_of(node: &Node, others: &[&str]) {
    for o in others {
        node.execute(&format!(
            "INSERT INTO federation.node (node_name, state) VALUES ('{o}', 'ready')"
        ));
    }
}

#[test]
fn routing_behaves_like_an_ordinary_table() {
    let c = Cluster::start(&[NodeSpec::guc("east")]);
    let east = c.node("east");
    member_of(east, &["west"]);
    east.execute(HIPPOS);
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 3) g");
    east.execute("SELECT federation.enable('hippos')");

    // Rows that existed before belong to this node.
    assert_eq!(
        east.scalar("SELECT string_agg(DISTINCT node_name, ',') FROM hippos")
            .as_deref(),
        Some("east")
    );
    // Row counts, RETURNING, INSERT ... SELECT, COPY: as on an ordinary table.
    assert_eq!(
        east.row_count("INSERT INTO hippos (value) VALUES (10), (11)"),
        2
    );
    let r = east.query("INSERT INTO hippos (value) VALUES (12) RETURNING node_name, value");
    assert_eq!(
        r,
        vec![vec![Some("east".to_string()), Some("12".to_string())]]
    );
    assert_eq!(
        east.row_count("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 1000) g"),
        1000
    );
    let data: String = (0..100).map(|i| format!("{i}\n")).collect();
    assert_eq!(
        east.copy_in("COPY hippos (value) FROM STDIN", &data)
            .unwrap(),
        100
    );
    // ON CONFLICT DO NOTHING (no arbiter) works through the parent.
    let id = east.scalar("SELECT id FROM hippos LIMIT 1").unwrap();
    assert_eq!(
        east.row_count(&format!(
            "INSERT INTO hippos (id, value) VALUES ('{id}', 1) ON CONFLICT DO NOTHING"
        )),
        0
    );
    assert_eq!(
        east.row_count("INSERT INTO hippos (value) VALUES (1) ON CONFLICT DO NOTHING"),
        1
    );
    // Partitioning changes one thing: the parent's key includes the node column, so ON
    // CONFLICT names it too (docs/keys.md); ON CONFLICT (id) alone finds no arbiter.
    let e = east.expect_error(&format!("INSERT INTO hippos (id, value) VALUES ('{id}', 1) ON CONFLICT (id) DO UPDATE SET value = 99"));
    assert_eq!(e.code, "42P10", "{e}");
    assert_eq!(
        east.row_count(&format!("INSERT INTO hippos (id, value) VALUES ('{id}', 1) ON CONFLICT (id, node_name) DO UPDATE SET value = 99")),
        1
    );
    assert_eq!(
        east.scalar(&format!("SELECT value FROM hippos WHERE id = '{id}'"))
            .as_deref(),
        Some("99")
    );

    // Every row went straight to the local partition, which carries no trigger.
    assert_eq!(
        east.scalar("SELECT string_agg(DISTINCT tableoid::regclass::text, ',') FROM hippos")
            .as_deref(),
        Some("hippos_east")
    );
    assert_eq!(
        east.scalar("SELECT count(*) FROM hippos").as_deref(),
        Some("1107")
    );
    assert_eq!(
        east.scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'hippos_east'::regclass")
            .as_deref(),
        Some("0")
    );
    let parts = east.scalar("SELECT string_agg(partition::text || '=' || owner_node || ':' || is_local, ',') FROM federation.tables");
    assert_eq!(
        parts.as_deref(),
        Some("hippos_east=east:true,hippos_west=west:false,hippos_default=(default):false")
    );
    assert_eq!(
        east.scalar("SELECT string_agg(tablename, ',') FROM pg_publication_tables WHERE pubname = 'federation_east'").as_deref(),
        Some("hippos_east")
    );
}

#[test]
fn enable_carries_the_table_over() {
    let c = Cluster::start(&[NodeSpec::guc("east")]);
    let east = c.node("east");
    member_of(east, &["west"]);
    east.execute(
        "CREATE ROLE app LOGIN; CREATE ROLE reader;
         CREATE TABLE kinds (kind text PRIMARY KEY); INSERT INTO kinds VALUES ('river'), ('lake');
         CREATE TABLE herd (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             serial_no bigserial,
             name text NOT NULL DEFAULT 'unnamed',
             weight numeric CHECK (weight > 0),
             kind text REFERENCES kinds,
             name_upper text GENERATED ALWAYS AS (upper(name)) STORED,
             touched int NOT NULL DEFAULT 0,
             UNIQUE (name));
         CREATE INDEX herd_weight ON herd (weight);
         COMMENT ON TABLE herd IS 'the herd';
         COMMENT ON COLUMN herd.weight IS 'kilograms';
         ALTER TABLE herd OWNER TO app;
         GRANT SELECT ON herd TO reader;
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.touched := NEW.touched + 1; RETURN NEW; END$$;
         CREATE TRIGGER touch BEFORE INSERT ON herd FOR EACH ROW EXECUTE FUNCTION touch();
         CREATE TABLE audit (n int);
         CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN INSERT INTO audit VALUES (1); RETURN NULL; END$$;
         CREATE TRIGGER audit AFTER INSERT ON herd FOR EACH STATEMENT EXECUTE FUNCTION audit();
         ALTER TABLE herd ENABLE ALWAYS TRIGGER audit;
         INSERT INTO herd (name, weight, kind) VALUES ('a', 1000, 'river'), ('b', 1500, 'lake');",
    );
    east.execute("SELECT federation.enable('herd')");
    // The table keeps its comment; its partition (the table it was) says what it now is.
    assert_eq!(
        east.scalar("SELECT obj_description('herd'::regclass, 'pg_class')")
            .as_deref(),
        Some("the herd")
    );
    assert!(east
        .scalar("SELECT obj_description('herd_east'::regclass, 'pg_class')")
        .unwrap_or_default()
        .starts_with("pg_federation: the rows of node \"east\" of federated table public.herd;"));

    // Identity and serial continue where they were.
    let r = east.query("INSERT INTO herd (name, weight) VALUES ('c', 900) RETURNING id, serial_no, touched, name_upper, node_name");
    assert_eq!(
        r[0],
        vec![
            Some("3".into()),
            Some("3".into()),
            Some("1".into()),
            Some("C".into()),
            Some("east".into())
        ]
    );
    // Statement trigger still fires (and keeps its ENABLE ALWAYS state).
    assert_eq!(
        east.scalar("SELECT count(*) FROM audit").as_deref(),
        Some("2")
    );
    assert_eq!(east.scalar("SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = 'herd'::regclass AND tgname = 'audit'").as_deref(), Some("A"));
    // Constraints still hold: CHECK, NOT NULL default, UNIQUE, foreign key from the table.
    assert_eq!(
        east.expect_error("INSERT INTO herd (name, weight) VALUES ('d', -1)")
            .code,
        "23514"
    );
    assert_eq!(
        east.expect_error("INSERT INTO herd (name, weight) VALUES ('a', 1)")
            .code,
        "23505"
    );
    assert_eq!(
        east.expect_error("INSERT INTO herd (name, weight, kind) VALUES ('e', 1, 'sea')")
            .code,
        "23503"
    );
    assert_eq!(
        east.scalar("INSERT INTO herd (weight) VALUES (5) RETURNING name")
            .as_deref(),
        Some("unnamed")
    );
    // Owner, grants, comments.
    assert_eq!(
        east.scalar("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'herd'::regclass")
            .as_deref(),
        Some("app")
    );
    assert_eq!(
        east.scalar("SELECT has_table_privilege('reader', 'herd', 'SELECT')::text")
            .as_deref(),
        Some("true")
    );
    assert_eq!(
        east.scalar("SELECT has_table_privilege('reader', 'herd', 'INSERT')::text")
            .as_deref(),
        Some("false")
    );
    assert_eq!(
        east.scalar("SELECT obj_description('herd'::regclass, 'pg_class')")
            .as_deref(),
        Some("the herd")
    );
    assert_eq!(
        east.scalar("SELECT col_description('herd'::regclass, 4)")
            .as_deref(),
        Some("kilograms")
    );
    // Indexes on every node's partition, primary key included.
    for part in ["herd_east", "herd_west"] {
        let idx = east
            .scalar(&format!(
                "SELECT count(*) FROM pg_index WHERE indrelid = '{part}'::regclass"
            ))
            .unwrap();
        assert_eq!(
            idx, "3",
            "{part} has pkey, unique(name) and the weight index"
        );
    }
}

#[test]
fn rollback_leaves_the_table_as_it_was_and_rerun_is_a_noop() {
    let c = Cluster::start(&[NodeSpec::guc("east")]);
    let east = c.node("east");
    east.execute(HIPPOS);
    east.execute("INSERT INTO hippos (value) VALUES (1), (2)");
    let before = snapshot(east, "public");
    let rows = digest(east, "hippos");
    east.execute("BEGIN; SELECT federation.enable('hippos'); ROLLBACK;");
    assert_eq!(
        snapshot(east, "public"),
        before,
        "ROLLBACK must leave no trace"
    );
    assert_eq!(digest(east, "hippos"), rows);

    // Inside a migration tool's transaction.
    east.execute("BEGIN; SELECT federation.enable('hippos'); COMMIT;");
    let enabled = snapshot(east, "public");
    assert_ne!(enabled, before);
    let notices = east.notices("SELECT federation.enable('hippos')");
    assert!(
        notices.iter().any(|n| n.contains("already federated")),
        "{notices:?}"
    );
    assert_eq!(
        snapshot(east, "public"),
        enabled,
        "re-running enable changes nothing"
    );
    // Another node column on an enrolled table is refused.
    let e = east.expect_error("SELECT federation.enable('hippos', 'other_column')");
    assert_eq!(e.code, "55000", "{e}");
}

#[test]
fn guards_refuse_foreign_writes_and_replication_passes() {
    let c = Cluster::start(&[NodeSpec::guc("east"), NodeSpec::guc("west")]);
    let (east, west) = (c.node("east"), c.node("west"));
    member_of(east, &["west"]);
    member_of(west, &["east"]);
    for n in [east, west] {
        n.execute(HIPPOS);
        n.execute("SELECT federation.enable('hippos')");
    }
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 50) g");
    // A hand-made subscription (join() will make these): west applies east's partition.
    west.execute(&format!(
        "CREATE SUBSCRIPTION east_to_west CONNECTION '{}' PUBLICATION federation_east",
        east.conninfo()
    ));
    let converged = || {
        let (a, b) = (digest(east, "hippos_east"), digest(west, "hippos_east"));
        Ok(a == b)
    };
    wait_until(
        "west to copy east's rows",
        Duration::from_secs(60),
        &[east, west],
        converged,
    );
    east.execute("UPDATE hippos SET value = value * 10 WHERE value <= 10; DELETE FROM hippos WHERE value > 45");
    east.execute("INSERT INTO hippos (value) VALUES (1000)");
    wait_until(
        "west to apply east's updates and deletes",
        Duration::from_secs(60),
        &[east, west],
        converged,
    );
    // 50 rows; 10 multiplied by 10; those now over 45 (6) and 46..50 (5) deleted; one added.
    assert_eq!(
        west.scalar("SELECT count(*) FROM hippos WHERE node_name = 'east'")
            .as_deref(),
        Some("40")
    );

    // West may not write east's rows by any route.
    let east_id = west.scalar("SELECT id FROM hippos_east LIMIT 1").unwrap();
    let refusals = [
        (
            "INSERT INTO hippos (value, node_name) VALUES (1, 'east')",
            "42501",
        ),
        (
            "INSERT INTO hippos_east (value, node_name) VALUES (1, 'east')",
            "42501",
        ),
        (
            &*format!("UPDATE hippos SET value = 0 WHERE id = '{east_id}'"),
            "42501",
        ),
        (
            &*format!("DELETE FROM hippos WHERE id = '{east_id}'"),
            "42501",
        ),
        ("DELETE FROM hippos_east", "42501"),
        ("TRUNCATE hippos", "42501"),
        ("TRUNCATE hippos_east", "42501"),
        (
            "INSERT INTO hippos (value, node_name) VALUES (1, 'nowhere')",
            "23514",
        ),
        (
            "INSERT INTO hippos (value, node_name) VALUES (1, NULL)",
            "23502",
        ),
    ];
    west.execute("INSERT INTO hippos (value) VALUES (7)");
    let before = (digest(west, "hippos"), snapshot(west, "public"));
    for (sql, code) in refusals {
        let e = west.expect_error(sql);
        assert_eq!(e.code, code, "{sql}: {e}");
        if code == "42501" {
            assert!(
                e.message.contains("east"),
                "{sql}: the message names the owning node: {e}"
            );
            assert!(
                e.message.contains("hippos"),
                "{sql}: the message names the table: {e}"
            );
            assert!(
                e.hint.as_deref().unwrap_or("").contains("east"),
                "{sql}: the hint says where to write: {e}"
            );
        }
    }
    // Moving its own row to east is refused too.
    let e = west.expect_error("UPDATE hippos SET node_name = 'east' WHERE node_name = 'west'");
    assert_eq!(e.code, "42501", "{e}");
    let e = west
        .copy_in("COPY hippos (value, node_name) FROM STDIN", "1\teast\n")
        .unwrap_err();
    assert_eq!(e.code, "42501", "{e}");
    assert_eq!(
        (digest(west, "hippos"), snapshot(west, "public")),
        before,
        "refused writes changed something"
    );

    // West's own partition is free to change, and replication still flows afterwards.
    west.execute("TRUNCATE hippos_west");
    east.execute("INSERT INTO hippos (value) VALUES (2000)");
    wait_until(
        "replication to continue after refused writes",
        Duration::from_secs(60),
        &[east, west],
        converged,
    );
    west.execute("DROP SUBSCRIPTION east_to_west");
}

#[test]
fn names_with_quotes_spaces_upper_case_and_schemas() {
    let c = Cluster::start(&[NodeSpec::guc("east")]);
    let east = c.node("east");
    member_of(east, &["west-2"]);
    let long_a = format!("{}_alpha", "h".repeat(52));
    let long_b = format!("{}_bravo", "h".repeat(52));
    east.execute(&format!(
        "CREATE SCHEMA \"Sales Dept\";
         CREATE TABLE \"Sales Dept\".\"Hippo \"\"Herd\"\" 2026\" (id int PRIMARY KEY);
         CREATE TABLE \"Sales Dept\".\"{long_a}\" (id int PRIMARY KEY);
         CREATE TABLE \"Sales Dept\".\"{long_b}\" (id int PRIMARY KEY);
         SET search_path = \"Sales Dept\";"
    ));
    east.execute("SELECT federation.enable('\"Sales Dept\".\"Hippo \"\"Herd\"\" 2026\"')");
    east.execute(&format!(
        "SELECT federation.enable('\"Sales Dept\".\"{long_a}\"')"
    ));
    east.execute(&format!(
        "SELECT federation.enable('\"Sales Dept\".\"{long_b}\"')"
    ));
    east.execute("INSERT INTO \"Sales Dept\".\"Hippo \"\"Herd\"\" 2026\" (id) VALUES (1); RESET search_path;");
    let parts = east.query("SELECT partition::text FROM federation.tables");
    assert_eq!(
        parts.len(),
        9,
        "three tables, three partitions each: {parts:?}"
    );
    let names: Vec<String> = parts.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert!(
        names.contains(&"\"Sales Dept\".\"Hippo \"\"Herd\"\" 2026_east\"".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"\"Sales Dept\".\"Hippo \"\"Herd\"\" 2026_west-2\"".to_string()),
        "{names:?}"
    );
    let unique: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), 9, "long names must stay distinct: {names:?}");
    assert!(names
        .iter()
        .all(|n| n.trim_matches('"').len() <= 63 + "\"Sales Dept\".".len()));
    assert_eq!(
        east.scalar(
            "SELECT tableoid::regclass::text FROM \"Sales Dept\".\"Hippo \"\"Herd\"\" 2026\""
        )
        .as_deref(),
        Some("\"Sales Dept\".\"Hippo \"\"Herd\"\" 2026_east\"")
    );
}

#[test]
fn adopts_the_original_recipe() {
    let c = Cluster::start(&[NodeSpec::guc("east")]);
    let east = c.node("east");
    // The hand-made recipe: LIST partitions by node, a DEFAULT partition, a primary key per
    // partition, and a statement trigger that stamps the node on every insert.
    east.execute(
        "CREATE TABLE hippos (id uuid NOT NULL DEFAULT gen_random_uuid(), value numeric, node_name text,
                              created_at timestamptz DEFAULT now()) PARTITION BY LIST (node_name);
         CREATE TABLE hippo_default PARTITION OF hippos (PRIMARY KEY (id)) DEFAULT;
         CREATE TABLE hippo_east PARTITION OF hippos (PRIMARY KEY (id)) FOR VALUES IN ('east');
         CREATE TABLE hippo_west PARTITION OF hippos (PRIMARY KEY (id)) FOR VALUES IN ('west');
         INSERT INTO hippos (value) VALUES (1), (2);  -- no node yet: lands in hippo_default
         INSERT INTO hippos (value, node_name) VALUES (3, 'east');
         CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN UPDATE hippos SET node_name = 'east' WHERE node_name IS NULL; RETURN NULL; END$$;
         CREATE TRIGGER stamp AFTER INSERT ON hippos FOR EACH STATEMENT EXECUTE FUNCTION stamp();",
    );
    let before = digest(east, "(SELECT id, value, created_at FROM hippos)");
    let notices = east.notices("SELECT federation.enable('hippos')");
    assert!(
        notices.iter().any(|n| n.contains("trigger stamp")),
        "the recipe's trigger is pointed out: {notices:?}"
    );
    assert_eq!(
        digest(east, "(SELECT id, value, created_at FROM hippos)"),
        before,
        "every row kept"
    );
    assert_eq!(
        east.scalar("SELECT count(*) FROM hippo_east").as_deref(),
        Some("3"),
        "rows without a node belong to this node"
    );
    let parts = east.scalar(
        "SELECT string_agg(partition::text || '=' || owner_node, ',') FROM federation.tables",
    );
    assert_eq!(
        parts.as_deref(),
        Some("hippo_east=east,hippo_west=west,hippo_default=(default)")
    );
    assert_eq!(east.scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'hippo_east'::regclass AND tgname LIKE '_federation%'").as_deref(), Some("0"));
    assert_eq!(east.scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'hippo_west'::regclass AND tgname LIKE '_federation%'").as_deref(), Some("2"));
    assert_eq!(
        east.scalar("INSERT INTO hippos (value) VALUES (4) RETURNING tableoid::regclass::text")
            .as_deref(),
        Some("hippo_east")
    );
    assert_eq!(
        east.expect_error("INSERT INTO hippos (value, node_name) VALUES (5, 'west')")
            .code,
        "42501"
    );
}

#[test]
fn disable_turns_it_back_into_an_ordinary_table() {
    let c = Cluster::start(&[NodeSpec::guc("east"), NodeSpec::guc("west")]);
    let (east, west) = (c.node("east"), c.node("west"));
    member_of(east, &["west"]);
    member_of(west, &["east"]);
    for n in [east, west] {
        n.execute(
            "CREATE TABLE t (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text)",
        );
        n.execute("SELECT federation.enable('t')");
    }
    east.execute("INSERT INTO t (id, v) SELECT g, 'e' FROM generate_series(1001, 1020) g");
    west.execute("INSERT INTO t (v) SELECT 'w' FROM generate_series(1, 10) g"); // ids 1..10
    west.execute(&format!(
        "CREATE SUBSCRIPTION e2w CONNECTION '{}' PUBLICATION federation_east",
        east.conninfo()
    ));
    wait_until(
        "west to hold east's rows",
        Duration::from_secs(60),
        &[east, west],
        || Ok(west.scalar("SELECT count(*) FROM t_east").as_deref() == Some("20")),
    );
    west.execute("DROP SUBSCRIPTION e2w");
    let all_rows = digest(west, "t");
    // Every partition says what pg_federation made of it (psql's \dt+), the same text on
    // every node; the table itself keeps its own (here: none).
    for n in [east, west] {
        let described = n.query(
            "SELECT c.relname::text, coalesce(obj_description(c.oid, 'pg_class'), '') FROM pg_class c
             WHERE c.relname IN ('t', 't_east', 't_west', 't_default') ORDER BY 1",
        );
        assert_eq!(described.len(), 4, "{described:?}");
        for r in &described {
            let (rel, comment) = (r[0].as_deref().unwrap(), r[1].as_deref().unwrap());
            match rel {
                "t" => assert_eq!(comment, "", "on {}", n.name),
                "t_default" => assert!(
                    comment.starts_with(
                        "pg_federation: DEFAULT partition of federated table public.t"
                    ),
                    "on {}: {comment}",
                    n.name
                ),
                p => assert!(
                    comment.starts_with(&format!(
                        "pg_federation: the rows of node \"{}\" of federated table public.t;",
                        p.trim_start_matches("t_")
                    )),
                    "on {}: {p}: {comment}",
                    n.name
                ),
            }
        }
    }

    // A key present in two nodes' partitions cannot be merged: refused, nothing changed.
    west.execute("SET session_replication_role = replica; INSERT INTO t_east (id, v, node_name) VALUES (7, 'dup', 'east'); RESET session_replication_role;");
    let before = snapshot(west, "public");
    let e = west.expect_error("SELECT federation.disable('t')");
    assert_eq!(e.code, "23505", "{e}");
    assert!(e.message.contains("(id) = 7"), "{e}");
    assert_eq!(snapshot(west, "public"), before);
    west.execute("SET session_replication_role = replica; DELETE FROM t_east WHERE v = 'dup'; RESET session_replication_role;");

    west.execute("SELECT federation.disable('t')");
    assert_eq!(
        west.scalar("SELECT relkind::text FROM pg_class WHERE oid = 't'::regclass")
            .as_deref(),
        Some("r")
    );
    assert_eq!(
        west.scalar("SELECT obj_description('t'::regclass, 'pg_class')"),
        None,
        "an ordinary table again: the partition's description is gone"
    );
    assert_eq!(
        digest(west, "t"),
        all_rows,
        "every row present on the node is kept"
    );
    assert_eq!(
        west.scalar("SELECT count(*) FROM federation.tables")
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        west.scalar("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'federation_west'")
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        west.scalar("SELECT count(*) FROM pg_class WHERE relname LIKE 't\\_%' AND relkind = 'r'")
            .as_deref(),
        Some("0")
    );
    // Identity continues above every value in the table (east's rows went up to 1020); the
    // node column keeps a constant default.
    let r = west.query("INSERT INTO t (v) VALUES ('new') RETURNING id, node_name");
    assert_eq!(
        r[0],
        vec![Some("1021".to_string()), Some("west".to_string())]
    );
    // Disabling it again: nothing to do, said so (a downgrade may run it on every node).
    let notices = west.notices("SELECT federation.disable('t')");
    assert!(
        notices
            .iter()
            .any(|n| n.contains("not federated here; nothing to do")),
        "{notices:?}"
    );
    // Enabling it again: a row in the name of a node that is no member is refused, nothing
    // changed (it is not this node's to claim, and no owner will send it back)...
    west.execute("INSERT INTO t (v, node_name) VALUES ('stray', 'north')");
    let before = snapshot(west, "public");
    let e = west.expect_error("SELECT federation.enable('t')");
    assert_eq!(e.code, "22023", "{e}");
    assert!(e.message.contains("not members"), "{e}");
    assert!(
        e.detail.clone().unwrap_or_default().contains("north"),
        "{e}"
    );
    assert_eq!(snapshot(west, "public"), before);
    west.execute("DELETE FROM t WHERE node_name = 'north'");
    // ...and the rows in a member's name are set aside, not claimed and not dropped...
    let notices = west.notices("SELECT federation.enable('t')");
    assert!(
        notices
            .iter()
            .any(|n| n.contains("20 row(s) in other members' names (20 of \"east\")")),
        "{notices:?}"
    );
    assert_eq!(
        west.scalar("SELECT count(*) FROM t_west").as_deref(),
        Some("11")
    );
    assert_eq!(
        west.scalar("SELECT count(*) FROM t_east").as_deref(),
        Some("0")
    );
    assert_eq!(
        west.scalar("SELECT count(*) FROM federation.set_aside WHERE node = 'east' AND table_name = 'public.t' AND relid = 't'::regclass")
            .as_deref(),
        Some("20")
    );
    // ...until east's own copy arrives (here it never does: no subscription), which status()
    // says.
    assert_eq!(
        west.query(
            "SELECT peer, state, health FROM federation.status WHERE direction = 'set aside'"
        ),
        vec![vec![
            Some("east".to_string()),
            Some("waiting".to_string()),
            Some("WARNING".to_string())
        ]]
    );
}

#[test]
fn an_owner_who_is_not_superuser_enables_and_app_roles_write() {
    let c = Cluster::start(&[NodeSpec::guc("east")]);
    let east = c.node("east");
    member_of(east, &["west"]);
    east.execute(
        "CREATE ROLE owner_role LOGIN; CREATE ROLE app LOGIN;
         GRANT CREATE ON SCHEMA public TO owner_role;
         SET ROLE owner_role;
         CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item text);
         GRANT INSERT, SELECT ON orders TO app;
         SELECT federation.enable('orders');
         RESET ROLE;",
    );
    assert_eq!(
        east.scalar("SELECT count(*) FROM federation.tables WHERE table_name = 'orders'::regclass")
            .as_deref(),
        Some("3")
    );
    assert_eq!(
        east.scalar("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'orders_west'")
            .as_deref(),
        Some("owner_role")
    );
    // An application role that is neither owner nor superuser inserts (node_name() is its
    // column default) and is still refused other nodes' partitions.
    let r =
        east.query("SET ROLE app; INSERT INTO orders (item) VALUES ('hay') RETURNING node_name");
    assert_eq!(r, vec![vec![Some("east".to_string())]]);
    let e = east.expect_error("INSERT INTO orders (item, node_name) VALUES ('hay', 'west')");
    assert_eq!(e.code, "42501", "{e}");
    east.execute("RESET ROLE");
    // The connection strings stay private.
    let e = east.expect_error("SET ROLE app; SELECT conninfo FROM federation.local_node");
    east.execute("RESET ROLE");
    assert_eq!(e.code, "42501", "{e}");
    east.execute("SET ROLE owner_role; SELECT federation.disable('orders'); RESET ROLE;");
    assert_eq!(
        east.scalar("SELECT relkind::text FROM pg_class WHERE relname = 'orders'")
            .as_deref(),
        Some("r")
    );
}

#[test]
fn only_the_owner_may_enable() {
    let c = Cluster::start(&[NodeSpec::guc("east")]);
    let east = c.node("east");
    east.execute("CREATE ROLE mallory LOGIN; GRANT ALL ON SCHEMA public TO mallory; CREATE TABLE secret (id int PRIMARY KEY); GRANT ALL ON secret TO mallory;");
    let before = snapshot(east, "public");
    let e = east.expect_error("SET ROLE mallory; SELECT federation.enable('secret')");
    east.execute("RESET ROLE");
    assert_eq!(e.code, "42501", "{e}");
    assert!(e.message.contains("must be owner"), "{e}");
    assert_eq!(snapshot(east, "public"), before);
}

#[test]
fn adopts_a_recipe_table_that_lacks_this_nodes_partition() {
    let c = Cluster::start(&[NodeSpec::guc("east")]);
    let east = c.node("east");
    east.execute(
        "CREATE TABLE hippos (id uuid NOT NULL DEFAULT gen_random_uuid(), value numeric, node_name text) PARTITION BY LIST (node_name);
         CREATE TABLE hippo_default PARTITION OF hippos (PRIMARY KEY (id)) DEFAULT;
         CREATE TABLE hippo_west PARTITION OF hippos (PRIMARY KEY (id)) FOR VALUES IN ('west');
         INSERT INTO hippos (value) VALUES (1), (2);",
    );
    east.execute("SELECT federation.enable('hippos')");
    // This node's partition is made from the existing one (primary key included), and the
    // rows without a node move into it.
    assert_eq!(
        east.scalar("SELECT count(*) FROM hippos_east").as_deref(),
        Some("2")
    );
    assert_eq!(east.scalar("SELECT count(*) FROM pg_index WHERE indrelid = 'hippos_east'::regclass AND indisprimary").as_deref(), Some("1"));
    assert_eq!(
        east.scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'hippos_east'::regclass")
            .as_deref(),
        Some("0")
    );
    let parts = east.scalar(
        "SELECT string_agg(partition::text || '=' || owner_node, ',') FROM federation.tables",
    );
    assert_eq!(
        parts.as_deref(),
        Some("hippos_east=east,hippo_west=west,hippo_default=(default)")
    );
    assert_eq!(
        east.scalar("SELECT string_agg(tablename, ',') FROM pg_publication_tables WHERE pubname = 'federation_east'").as_deref(),
        Some("hippos_east")
    );
}
