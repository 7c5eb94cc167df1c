//! Upgrades: `ALTER EXTENSION pg_federation UPDATE` from the previous release, on a running
//! federation, node by node while every node writes; and an upgraded install equal to a fresh
//! one, object for object. The previous release's install script is the one it generated
//! (pg_test/fixtures/releases); the library is the one built now, as after a package upgrade.

use pg_test::scenario::{assert_converged, join, settle, wait_health_ok, HIPPOS};
use pg_test::{install_release_script, Cluster, Node, NodeSpec, Writer};

/// Every earlier release: an install of each must upgrade to exactly the current one.
const RELEASES: [&str; 12] = [
    "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "0.9.0", "0.10.0",
    "0.11.0", "0.12.0",
];
/// The release before this one: a running federation upgrades from it.
const PREVIOUS: &str = "0.12.0";
/// An older release a running federation also upgrades from (node numbers and keys arrive).
const OLDER: &str = "0.2.0";

/// Every writer acknowledges `more` writes and every node of `all` reports OK: a federation
/// (of mixed versions, during an upgrade) that keeps writing and replicating.
fn writes_go_on_and_all_are_healthy(writers: &[Writer], all: &[&Node], more: u64) {
    for w in writers {
        w.wait_for_more(more, all);
    }
    for m in all {
        wait_health_ok(m, all);
    }
}

/// Whether sql/pg_federation--`from`--`to`.sql holds only comments.
fn script_has_no_statement(from: &str, to: &str) -> bool {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../sql/pg_federation--{from}--{to}.sql"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
}

fn version(n: &Node) -> String {
    n.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_federation'")
        .unwrap_or_default()
}

/// Every object of the extension with its definition, privileges and settings: two equal
/// lists mean two equal installs.
fn objects(n: &Node) -> Vec<String> {
    n.query(
        "SELECT pg_describe_object(d.classid, d.objid, 0) || ' | ' || coalesce(CASE d.classid
                WHEN 'pg_proc'::regclass THEN (SELECT CASE WHEN p.prokind = 'a' THEN (SELECT 'aggregate ' || g.aggtransfn::text || ' ' || g.aggfinalfn::text || ' ' || format_type(g.aggtranstype, NULL) FROM pg_aggregate g WHERE g.aggfnoid = p.oid) ELSE pg_get_functiondef(p.oid) END || ' ' || coalesce(p.proacl::text, '') || ' ' || coalesce(p.proconfig::text, '') FROM pg_proc p WHERE p.oid = d.objid)
                WHEN 'pg_class'::regclass THEN (SELECT c.relkind::text || ' ' || coalesce(c.relacl::text, '') || ' ' || coalesce(pg_get_viewdef(c.oid), '')
                     || ' ' || (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text || ' ' || coalesce(a.attacl::text, '')
                                                  || ' ' || coalesce(col_description(c.oid, a.attnum), ''), ', ' ORDER BY a.attnum)
                                FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
                     || ' rls ' || c.relrowsecurity::text || ' ' || coalesce((SELECT string_agg(pol.polname || ' ' || pol.polcmd::text || ' ' || pg_get_expr(pol.polqual, pol.polrelid), ', ' ORDER BY pol.polname)
                                                                           FROM pg_policy pol WHERE pol.polrelid = c.oid), '')
                     FROM pg_class c WHERE c.oid = d.objid)
                END, '') || ' | ' || coalesce(obj_description(d.objid, (SELECT relname FROM pg_class WHERE oid = d.classid)), '')
         FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid AND d.refclassid = 'pg_extension'::regclass
         WHERE e.extname = 'pg_federation' AND d.deptype = 'e' ORDER BY 1",
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap_or_default())
    .collect()
}

#[test]
fn an_upgraded_install_has_exactly_the_objects_of_a_fresh_one() {
    for r in RELEASES {
        install_release_script(r);
    }
    let mut specs: Vec<NodeSpec> = RELEASES
        .iter()
        .map(|r| NodeSpec::guc(&format!("v{}", r.replace('.', "_"))).without_extension())
        .collect();
    specs.push(NodeSpec::guc("fresh"));
    let c = Cluster::start(&specs);
    let fresh = c.node("fresh");
    let current = objects(fresh);
    for (r, old) in RELEASES.iter().zip(&c.nodes) {
        old.execute(&format!("CREATE EXTENSION pg_federation VERSION '{r}'"));
        assert_eq!(&version(old), r);
        let before = objects(old);
        old.execute("ALTER EXTENSION pg_federation UPDATE");
        assert_eq!(
            version(old),
            version(fresh),
            "UPDATE from {r} goes to the current version"
        );
        let upgraded = objects(old);
        assert_eq!(
            upgraded.len(),
            current.len(),
            "same number of objects from {r}"
        );
        for (u, f) in upgraded.iter().zip(&current) {
            assert_eq!(
                u, f,
                "an object differs between the install upgraded from {r} and the fresh one"
            );
        }
        // The test compares something: each release differs from the current one, except a
        // release whose upgrade script changes no object (a change of the library only).
        if !(r == &PREVIOUS && script_has_no_statement(PREVIOUS, &version(fresh))) {
            assert_ne!(
                before, current,
                "the test compares something: {r} differs from the current release"
            );
        }
    }
    // The change of 0.2.0: no JIT inside status() and health().
    let config = fresh.query(
        "SELECT proname, proconfig::text FROM pg_proc WHERE proname IN ('status', 'health')
           AND pronamespace = 'federation'::regnamespace ORDER BY 1",
    );
    for r in config {
        assert!(
            r[1].as_deref().unwrap_or_default().contains("jit=off"),
            "{r:?}"
        );
    }
    // The change of 0.3.0: node numbers and keys.
    for n in &c.nodes {
        assert_eq!(
            n.scalar("SELECT count(*) FROM pg_attribute WHERE attrelid = 'federation.local_node'::regclass AND attname IN ('node_number', 'numbers_issued')").as_deref(),
            Some("2"),
            "on {}",
            n.name
        );
    }
}

#[test]
fn a_running_federation_upgrades_node_by_node_from_0_2_0_while_every_node_writes() {
    install_release_script(OLDER);
    let names = ["east", "central", "west"];
    let c = Cluster::start(&names.map(|n| NodeSpec::guc(n).without_extension()));
    for n in &c.nodes {
        n.execute(&format!(
            "CREATE EXTENSION pg_federation VERSION '{OLDER}'; {HIPPOS}
             CREATE TABLE counters (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text);
             SELECT federation.enable('counters');"
        ));
    }
    for n in &c.nodes[1..] {
        join(n, &c.nodes[0]);
    }
    let writers: Vec<Writer> = c.nodes.iter().map(|n| Writer::start(n, "hippos")).collect();
    let all = c.all();
    let mut upgraded: Vec<&Node> = vec![];
    for n in &c.nodes {
        n.execute("ALTER EXTENSION pg_federation UPDATE");
        assert_ne!(version(n), OLDER, "{} was updated", n.name);
        // 0.3.0 numbers the nodes of a federation formed before it by name (central, east,
        // west), and an upgraded node's sequences draw from its range at once, while the
        // others still run 0.2.0.
        upgraded.push(n);
        for u in &upgraded {
            let k: i64 = u
                .scalar("SELECT node_number FROM federation.local_node")
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                k,
                1 + names.iter().filter(|m| **m < u.name.as_str()).count() as i64
            );
            let id: i64 = u
                .scalar("INSERT INTO counters (note) VALUES ('x') RETURNING id")
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(id >> 48, k, "{} draws from its range", u.name);
        }
        // Mixed versions: every node keeps writing and replicating.
        writes_go_on_and_all_are_healthy(&writers, &all, 200);
    }
    let acked = settle(&c, writers);
    for (node, count) in acked {
        assert!(count > 600, "{node} acknowledged only {count} writes");
    }
    assert_converged(&c, "counters");
    for n in &all {
        // 0.3.0 streams large transactions: the subscriptions made by 0.2.0 now do too.
        assert_eq!(
            n.scalar("SELECT bool_and(substream::text IN ('t', 'true')) FROM pg_subscription WHERE subname LIKE 'federation%'").as_deref(),
            Some("t"),
            "streaming subscriptions on {}",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT (count(*) = count(DISTINCT id) AND count(*) = 6)::text FROM counters")
                .as_deref(),
            Some("true"),
            "every counter once on {}",
            n.name
        );
    }
}

#[test]
fn a_federation_upgraded_from_the_previous_release_changes_schemas_on_every_member() {
    install_release_script(PREVIOUS);
    let names = ["east", "central", "west"];
    let c = Cluster::start(&names.map(|n| NodeSpec::guc(n).without_extension()));
    for n in &c.nodes {
        n.execute(&format!(
            "CREATE EXTENSION pg_federation VERSION '{PREVIOUS}'; {HIPPOS}"
        ));
    }
    for n in &c.nodes[1..] {
        join(n, &c.nodes[0]);
    }
    // This library on the previous release's SQL objects: a function added since is looked
    // up before it is called, never called where it is missing (a join, a repair and a resync
    // on 15 ask for federation_internal.start_apply_worker).
    for n in &c.nodes {
        let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
        let missing: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("function federation_internal.") && l.contains("does not exist"))
            .collect();
        assert!(
            missing.is_empty(),
            "{}: a missing function was called:\n{}",
            n.name,
            missing.join("\n")
        );
    }
    let major = c.nodes[0].major();
    let writers: Vec<Writer> = c.nodes.iter().map(|n| Writer::start(n, "hippos")).collect();
    let all = c.all();
    let (east, central, west) = (c.node("east"), c.node("central"), c.node("west"));
    east.execute("ALTER EXTENSION pg_federation UPDATE");
    assert_ne!(version(east), PREVIOUS);
    // Mixed versions: a schema change is refused before anything changes, naming the member.
    let e = east.expect_error("ALTER TABLE hippos ADD COLUMN weight_kg numeric");
    assert_eq!(e.code, "55000", "{e}");
    assert!(
        e.message.contains("central") && e.message.contains(PREVIOUS),
        "{e}"
    );
    assert!(
        e.hint
            .as_deref()
            .unwrap_or_default()
            .contains("ALTER EXTENSION pg_federation UPDATE"),
        "{e}"
    );
    for n in &all {
        assert_eq!(n.row_count("SELECT 1 FROM pg_attribute WHERE attrelid = 'hippos'::regclass AND attname = 'weight_kg'"), 0);
    }
    central.execute("ALTER EXTENSION pg_federation UPDATE");
    west.execute("ALTER EXTENSION pg_federation UPDATE");
    for w in &writers {
        w.wait_for_more(100, &all);
    }
    // Upgraded everywhere: a change on one node reaches every member while all write.
    west.execute("ALTER TABLE hippos ADD COLUMN weight_kg numeric DEFAULT 1000");
    for n in &all {
        assert_eq!(n.row_count("SELECT 1 FROM pg_attribute WHERE attrelid = 'hippos'::regclass AND attname = 'weight_kg'"), 1, "{}", n.name);
    }
    // 0.7.0 moved the internal functions to federation_internal: the guards made before the
    // update follow them, and a table enabled now reaches every member through the moved calls.
    west.execute("CREATE TABLE giraffes (id bigint PRIMARY KEY, name text); SELECT federation.enable('giraffes')");
    west.execute("SELECT federation.wait_ready('1 min')");
    for n in &all {
        assert_eq!(
            n.scalar("SELECT string_agg(DISTINCT p.pronamespace::regnamespace::text, ',')
                      FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid WHERE t.tgname LIKE '\\_federation%'")
                .as_deref(),
            Some("federation_internal"),
            "every guard on {} calls the moved functions",
            n.name
        );
        assert_eq!(
            n.row_count("SELECT 1 FROM federation.partition WHERE relid = 'giraffes'::regclass"),
            4,
            "{}",
            n.name
        );
        let other = if n.name == "east" { "west" } else { "east" };
        for table in ["hippos", "giraffes"] {
            let columns = if table == "hippos" {
                "value, node_name"
            } else {
                "id, node_name"
            };
            let e = n.expect_error(&format!(
                "INSERT INTO {table} ({columns}) VALUES (1, '{other}')"
            ));
            assert_eq!(
                e.code, "42501",
                "{} guards {table} after the update: {e}",
                n.name
            );
        }
    }
    for w in &writers {
        w.wait_for_more(100, &all);
    }
    settle(&c, writers);
    for m in &all {
        wait_health_ok(m, &all);
        // This library makes subscriptions with origin = none from PostgreSQL 16; the
        // update leaves them as they are (it restarts no apply worker).
        if major >= 16 {
            assert_eq!(
                m.scalar("SELECT string_agg(DISTINCT suborigin, ',') FROM pg_subscription")
                    .as_deref(),
                Some("none"),
                "on {}",
                m.name
            );
        }
    }
}

/// A row inserted into `table` on `n` gets an id in `n`'s range (its node number in the top bits).
fn assert_draws_from_its_range(n: &Node, table: &str) {
    let k: i64 = n
        .scalar("SELECT node_number FROM federation.local_node")
        .unwrap()
        .parse()
        .unwrap();
    let id: i64 = n
        .scalar(&format!(
            "INSERT INTO {table} (note) VALUES ('x') RETURNING id"
        ))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(id >> 48, k, "{table} on {} draws from its range", n.name);
}

#[test]
fn a_sequence_that_cannot_be_numbered_on_upgrade_is_named_by_health_until_it_is_widened() {
    install_release_script(OLDER);
    let c = Cluster::start(&[
        NodeSpec::guc("east").without_extension(),
        NodeSpec::guc("west").without_extension(),
    ]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in &c.nodes {
        n.execute(&format!(
            "CREATE EXTENSION pg_federation VERSION '{OLDER}';
             CREATE TABLE legacy (id serial PRIMARY KEY, note text); SELECT federation.enable('legacy');
             CREATE TABLE modern (id bigserial PRIMARY KEY, note text); SELECT federation.enable('modern');"
        ));
    }
    join(west, east);
    let all = c.all();
    for n in &all {
        // The update warns about the integer column and numbers the rest.
        let notices = n.notices("ALTER EXTENSION pg_federation UPDATE");
        assert!(
            notices
                .iter()
                .any(|m| m.contains("legacy") && m.contains("integer")),
            "{notices:?}"
        );
    }
    for n in &all {
        assert_draws_from_its_range(n, "modern");
        let r = n
            .query("SELECT health, reason, repair FROM federation.status WHERE direction = 'keys'");
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0][0].as_deref(), Some("WARNING"));
        assert!(
            r[0][1]
                .as_deref()
                .unwrap_or_default()
                .contains("legacy_id_seq"),
            "{r:?}"
        );
        assert!(
            r[0][2]
                .as_deref()
                .unwrap_or_default()
                .contains("Integer columns"),
            "{r:?}"
        );
        assert_eq!(
            n.scalar("SELECT health FROM federation.health()")
                .as_deref(),
            Some("WARNING")
        );
    }
    // The repair docs/keys.md gives: widen the column on every node, then enable() again.
    for n in &all {
        n.execute("ALTER TABLE legacy ALTER COLUMN id TYPE bigint");
    }
    for n in &all {
        n.execute("SELECT federation.enable('legacy')");
        assert_draws_from_its_range(n, "legacy");
    }
    for n in &all {
        wait_health_ok(n, &all);
    }
    assert_converged(&c, "legacy");
}

/// The bin directory of a server installation whose pg_federation library is the previous
/// release's, built from its commit by scripts/setup.sh (`previous_release`, which
/// scripts/test.sh runs for each major); None when that was not done.
fn previous_release_bindir() -> Option<std::path::PathBuf> {
    std::env::var_os("PG_FEDERATION_PREVIOUS_BINDIR").map(std::path::PathBuf::from)
}

/// The pg_federation library the node's postmaster has loaded (from its memory map).
fn loaded_library(n: &Node) -> String {
    let pid = n.postmaster_pid().expect("the node runs");
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/pg_federation.so"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_federation_running_the_previous_release_upgrades_its_packages_then_the_extension_node_by_node_while_writing(
) {
    let Some(old) = previous_release_bindir() else {
        println!("PG_FEDERATION_PREVIOUS_BINDIR is not set (scripts/test.sh sets it: `source scripts/setup.sh; use_major N; previous_release`): the previous release's library was not built, nothing tested");
        return;
    };
    let new = pg_test::pg_bindir();
    let old_root = old
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .display()
        .to_string();
    let names = ["east", "central", "west"];
    let mut c = Cluster::start(&names.map(|n| NodeSpec::guc(n).with_bindir(&old)));
    for n in &c.nodes {
        assert_eq!(version(n), PREVIOUS, "{} runs the previous release", n.name);
        assert!(
            loaded_library(n).starts_with(&old_root),
            "{} loaded {:?}, not the previous release's library under {old_root}",
            n.name,
            loaded_library(n)
        );
        n.execute(HIPPOS);
    }
    for n in &c.nodes[1..] {
        join(n, &c.nodes[0]);
    }
    let writers: Vec<Writer> = c.nodes.iter().map(|n| Writer::start(n, "hippos")).collect();
    for i in 0..c.nodes.len() {
        // The package first (a restart on the new library, the extension's SQL still the
        // previous release's), then ALTER EXTENSION UPDATE; between them and after each, the
        // federation of mixed libraries and versions keeps replicating and is healthy.
        c.nodes[i].restart_on(&new);
        let n = &c.nodes[i];
        assert!(
            !loaded_library(n).starts_with(&old_root) && !loaded_library(n).is_empty(),
            "{} loaded {:?}",
            n.name,
            loaded_library(n)
        );
        assert_eq!(version(n), PREVIOUS);
        let all = c.all();
        writes_go_on_and_all_are_healthy(&writers, &all, 100);
        n.execute("ALTER EXTENSION pg_federation UPDATE");
        assert_ne!(version(n), PREVIOUS, "{} was updated", n.name);
        if i == 0 {
            // A repair by difference between this build and the previous release's library
            // and SQL (it compares as the previous release does): central's copy on east,
            // damaged first, is mended and nothing is lost.
            let east = n;
            east.execute(
                "SET session_replication_role = replica;
                 DELETE FROM hippos_central WHERE ctid IN (SELECT ctid FROM hippos_central LIMIT 10);
                 RESET session_replication_role",
            );
            east.execute("SELECT federation.resync('central', 'hippos', mode => 'diff')");
            assert!(
                east.log_tail(400)
                    .contains("repaired this node's copy of \"central\"'s partitions"),
                "east's repair of its copy of central is logged"
            );
        }
        writes_go_on_and_all_are_healthy(&writers, &all, 100);
    }
    let acked = settle(&c, writers);
    for (node, count) in acked {
        assert!(count > 500, "{node} acknowledged only {count} writes");
    }
    let all = c.all();
    let reference = objects(all[0]);
    for n in &all {
        assert_eq!(version(n), version(all[0]));
        assert_eq!(objects(n), reference, "{}'s objects equal east's", n.name);
        assert_eq!(
            n.scalar("SELECT count(*)::text FROM federation.verify() WHERE status NOT IN ('owner', 'match')")
                .as_deref(),
            Some("0"),
            "verify on {}",
            n.name
        );
        wait_health_ok(n, &all);
    }
}
