//! What psql shows a DBA (issue 16): every function, view and table in schema federation has
//! a comment (\df+, \dv+, \dt+), the internal ones say "internal" first, so that the public API
//! reads apart from the plumbing; and the views' columns say what they hold.

use pg_test::{Cluster, NodeSpec};

/// The public API: what docs/ and README.md tell a DBA to call.
const API: [&str; 14] = [
    "disable",
    "drop_node",
    "duplicate_keys",
    "enable",
    "health",
    "join",
    "leave",
    "node_name",
    "node_name_source",
    "resync",
    "server_id",
    "status",
    "verify",
    "wait_ready",
];

#[test]
fn every_object_has_a_comment_and_internals_say_so() {
    let c = Cluster::start(&[NodeSpec::guc("east")]);
    let east = c.node("east");
    let functions = east.query(
        "SELECT p.proname::text, coalesce(obj_description(p.oid, 'pg_proc'), '')
         FROM pg_proc p WHERE p.pronamespace = 'federation'::regnamespace ORDER BY 1",
    );
    assert!(functions.len() > 40, "{} functions", functions.len());
    for f in &functions {
        let (name, comment) = (f[0].clone().unwrap(), f[1].clone().unwrap());
        assert!(
            !comment.is_empty(),
            "function federation.{name} has no comment"
        );
        let internal = comment.starts_with("internal");
        assert_eq!(
            internal,
            !API.contains(&name.as_str()),
            "federation.{name}: {comment}"
        );
    }
    for name in API {
        assert!(
            functions.iter().any(|f| f[0].as_deref() == Some(name)),
            "the API function {name} exists"
        );
    }
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
