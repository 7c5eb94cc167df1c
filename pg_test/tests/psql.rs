//! What psql shows a DBA (issue 16): schema federation holds the API alone (\df federation.*),
//! the plumbing lives in federation_internal with comments that say "internal" first; every
//! function, view and table has a comment (\df+, \dv+, \dt+) and the views' columns say what
//! they hold; and what PUBLIC may run is exactly the list in docs/operations.md.

use pg_test::{Cluster, NodeSpec};

/// The public API: what docs/ and README.md tell a DBA to call.
const API: [&str; 15] = [
    "disable",
    "drop_node",
    "duplicate_keys",
    "enable",
    "health",
    "join",
    "leave",
    "node_name",
    "node_name_source",
    "restore",
    "resync",
    "server_id",
    "status",
    "verify",
    "wait_ready",
];

/// The functions docs/operations.md ("Who may run what") says every role may run, as
/// written between its `public-execute` markers.
fn documented_public_functions() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .expect("docs/operations.md");
    let from = doc
        .find("<!-- public-execute -->")
        .expect("the public-execute list")
        + 23;
    let to = doc
        .find("<!-- /public-execute -->")
        .expect("the end of the list");
    let mut names: Vec<String> = doc[from..to]
        .split(',')
        .map(|f| {
            f.trim()
                .trim_matches('`')
                .trim_end_matches("()")
                .to_string()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_object_has_a_comment_and_internals_live_apart() {
    let c = Cluster::start(&[NodeSpec::guc("east")]);
    let east = c.node("east");
    // Schema federation holds the API and nothing else, each function commented.
    let functions = east.query(
        "SELECT p.proname::text, coalesce(obj_description(p.oid, 'pg_proc'), '')
         FROM pg_proc p WHERE p.pronamespace = 'federation'::regnamespace ORDER BY 1",
    );
    let names: Vec<&str> = functions.iter().map(|f| f[0].as_deref().unwrap()).collect();
    assert_eq!(names, API, "\\df federation.* lists the API alone");
    for f in &functions {
        let (name, comment) = (f[0].clone().unwrap(), f[1].clone().unwrap());
        assert!(
            !comment.is_empty(),
            "function federation.{name} has no comment"
        );
        assert!(
            !comment.starts_with("internal"),
            "federation.{name}: {comment}"
        );
    }
    // Everything else is in federation_internal, and says so.
    let internals = east.query(
        "SELECT p.proname::text, coalesce(obj_description(p.oid, 'pg_proc'), '')
         FROM pg_proc p WHERE p.pronamespace = 'federation_internal'::regnamespace ORDER BY 1",
    );
    assert!(
        internals.len() > 30,
        "{} internal functions",
        internals.len()
    );
    for f in &internals {
        let (name, comment) = (f[0].clone().unwrap(), f[1].clone().unwrap());
        assert!(
            comment.starts_with("internal"),
            "federation_internal.{name}: {comment:?}"
        );
    }
    // Every function of the extension is in one of the two schemas.
    let elsewhere = east.query(
        "SELECT pg_describe_object(classid, objid, 0) FROM pg_depend
         WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
           AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_federation')
           AND classid = 'pg_proc'::regclass
           AND (SELECT pronamespace FROM pg_proc WHERE oid = objid)
               NOT IN ('federation'::regnamespace, 'federation_internal'::regnamespace)",
    );
    assert!(elsewhere.is_empty(), "{elsewhere:?}");
    // What a role with no grant of its own may run is exactly what the docs list.
    east.execute("CREATE ROLE nobody_special");
    let public: Vec<String> = east
        .query(
            "SELECT p.pronamespace::regnamespace::text || '.' || p.proname FROM pg_proc p
             WHERE p.pronamespace IN ('federation'::regnamespace, 'federation_internal'::regnamespace)
               AND has_function_privilege('nobody_special', p.oid, 'EXECUTE') ORDER BY 1",
        )
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(
        public,
        documented_public_functions(),
        "PUBLIC may run exactly what docs/operations.md lists"
    );
    // pg_monitor reads federation.nodes (masking runs as its reader), and nothing internal
    // beyond what the docs give it.
    east.execute("CREATE ROLE watcher LOGIN IN ROLE pg_monitor; CREATE TABLE t (id int PRIMARY KEY); SELECT federation.enable('t')");
    assert_eq!(
        east.scalar("SET ROLE watcher; SELECT count(*)::text FROM federation.nodes")
            .as_deref(),
        Some("1")
    );
    east.execute("RESET ROLE");
    let monitor: Vec<String> = east
        .query(
            "SELECT p.proname::text FROM pg_proc p
             WHERE p.pronamespace = 'federation_internal'::regnamespace
               AND has_function_privilege('watcher', p.oid, 'EXECUTE')
               AND NOT has_function_privilege('nobody_special', p.oid, 'EXECUTE') ORDER BY 1",
        )
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(monitor, ["mask_conninfo"]);
    // The node-to-node functions are refused to every other role, by the grant and inside.
    let e = east.expect_error("SET ROLE nobody_special; SELECT federation_internal.peer_info()");
    east.execute("ROLLBACK; RESET ROLE");
    assert_eq!(e.code, "42501", "{e}");
    let relations = east.query(
        "SELECT c.relname::text, c.relkind::text FROM pg_class c
         WHERE c.relnamespace = 'federation'::regnamespace AND c.relkind IN ('r', 'v', 'p')
           AND obj_description(c.oid, 'pg_class') IS NULL ORDER BY 1",
    );
    assert!(relations.is_empty(), "without a comment: {relations:?}");
    let columns = east.query(
        "SELECT c.relname::text || '.' || a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE c.relnamespace = 'federation'::regnamespace AND c.relname IN ('tables', 'set_aside')
           AND a.attnum > 0 AND col_description(c.oid, a.attnum) IS NULL
           AND a.attname NOT IN ('id', 'table_name', 'set_aside_at', 'enabled_at') ORDER BY 1",
    );
    assert!(columns.is_empty(), "columns without a comment: {columns:?}");
}
