//! Upgrades: `ALTER EXTENSION pg_federation UPDATE` from the previous release, on a running
//! federation, node by node while every node writes; and an upgraded install equal to a fresh
//! one, object for object. The previous release's install script is the one it generated
//! (pg_test/fixtures/releases); the library is the one built now, as after a package upgrade.

use pg_test::scenario::{join, settle, wait_health_ok, HIPPOS};
use pg_test::{install_release_script, Cluster, Node, NodeSpec, Writer};

/// The release the upgrade scripts start from.
const PREVIOUS: &str = "0.1.0";

fn version(n: &Node) -> String {
    n.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_federation'")
        .unwrap_or_default()
}

/// Every object of the extension with its definition, privileges and settings: two equal
/// lists mean two equal installs.
fn objects(n: &Node) -> Vec<String> {
    n.query(
        "SELECT pg_describe_object(d.classid, d.objid, 0) || ' | ' || coalesce(CASE d.classid
                WHEN 'pg_proc'::regclass THEN (SELECT pg_get_functiondef(p.oid) || ' ' || coalesce(p.proacl::text, '') || ' ' || coalesce(p.proconfig::text, '') FROM pg_proc p WHERE p.oid = d.objid)
                WHEN 'pg_class'::regclass THEN (SELECT c.relkind::text || ' ' || coalesce(c.relacl::text, '') || ' ' || coalesce(pg_get_viewdef(c.oid), '')
                     || ' ' || (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text || ' ' || coalesce(a.attacl::text, ''), ', ' ORDER BY a.attnum)
                                FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
                     FROM pg_class c WHERE c.oid = d.objid)
                END, '')
         FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid AND d.refclassid = 'pg_extension'::regclass
         WHERE e.extname = 'pg_federation' AND d.deptype = 'e' ORDER BY 1",
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap_or_default())
    .collect()
}

#[test]
fn an_upgraded_install_has_exactly_the_objects_of_a_fresh_one() {
    install_release_script(PREVIOUS);
    let c = Cluster::start(&[
        NodeSpec::guc("old").without_extension(),
        NodeSpec::guc("fresh"),
    ]);
    let (old, fresh) = (c.node("old"), c.node("fresh"));
    old.execute(&format!(
        "CREATE EXTENSION pg_federation VERSION '{PREVIOUS}'"
    ));
    assert_eq!(version(old), PREVIOUS);
    let before = objects(old);
    old.execute("ALTER EXTENSION pg_federation UPDATE");
    assert_eq!(
        version(old),
        version(fresh),
        "UPDATE goes to the current version"
    );
    assert_ne!(version(old), PREVIOUS);
    let (upgraded, current) = (objects(old), objects(fresh));
    assert_eq!(upgraded.len(), current.len(), "same number of objects");
    for (u, f) in upgraded.iter().zip(&current) {
        assert_eq!(
            u, f,
            "an object differs between the upgraded and the fresh install"
        );
    }
    assert_ne!(
        before, current,
        "the test compares something: the releases differ"
    );
    // The change of this release: no JIT inside status() and health().
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
}

#[test]
fn a_running_federation_upgrades_node_by_node_while_every_node_writes() {
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
    let writers: Vec<Writer> = c.nodes.iter().map(|n| Writer::start(n, "hippos")).collect();
    let all = c.all();
    for n in &c.nodes {
        n.execute("ALTER EXTENSION pg_federation UPDATE");
        assert_ne!(version(n), PREVIOUS, "{} was updated", n.name);
        // Mixed versions: every node keeps writing and replicating.
        for w in &writers {
            w.wait_for_more(200, &all);
        }
        for m in &all {
            wait_health_ok(m, &all);
        }
    }
    let acked = settle(&c, writers);
    for (node, count) in acked {
        assert!(count > 600, "{node} acknowledged only {count} writes");
    }
}
