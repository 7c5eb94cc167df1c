//! A real migration tool against a federation (docs/migrations.md): Alembic (with psycopg 3)
//! runs the project in pg_test/python/alembic_project. Each node creates and federates the
//! first table before it joins; later migrations run on one node only (a new column and an
//! index, a DEFAULT now() column, a downgrade, a new table created and federated on the
//! running federation); a fourth node replays the whole history and joins. Every node ends
//! with the same schema and rows, verify() = match, and no replication error.

use pg_test::scenario::{assert_converged_among, assert_verified, join, wait_health_ok};
use pg_test::{Cluster, Node, NodeSpec};
use std::path::Path;
use std::process::Command;

fn python() -> String {
    let p = std::env::var("PG_FEDERATION_PYTHON")
        .unwrap_or_else(|_| "/opt/pg_federation/pytools/venv/bin/python".into());
    assert!(
        Path::new(&p).exists(),
        "no Python with Alembic at {p}: run scripts/test.sh, or `source scripts/setup.sh; python_tools`"
    );
    p
}

/// The node as an SQLAlchemy URL for psycopg 3 (host may be a socket directory).
fn url(node: &Node) -> String {
    let info = node.client_conninfo();
    let get = |k: &str| {
        info.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_string()
    };
    format!(
        "postgresql+psycopg://postgres@/postgres?host={}&port={}",
        get("host").replace('/', "%2F"),
        get("port")
    )
}

/// Runs `alembic <args>` against `node`; panics with Alembic's output when it fails.
fn alembic(node: &Node, args: &[&str]) {
    let ini = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/alembic_project/alembic.ini");
    let out = Command::new(python())
        .args(["-m", "alembic", "-c", ini.to_str().unwrap(), "-x"])
        .arg(format!("url={}", url(node)))
        .args(args)
        .output()
        .expect("run alembic");
    assert!(
        out.status.success(),
        "alembic {args:?} on {} failed:\n{}\n{}",
        node.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn columns(node: &Node, table: &str) -> String {
    node.scalar(&format!(
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attname)
         FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped"
    ))
    .unwrap_or_default()
}

fn assert_same_schema(nodes: &[&Node], table: &str) -> String {
    let first = columns(nodes[0], table);
    for n in &nodes[1..] {
        assert_eq!(columns(n, table), first, "{table} on {} vs {}", n.name, nodes[0].name);
    }
    first
}

fn replication_errors(node: &Node) -> String {
    node.scalar("SELECT coalesce(sum(apply_error_count + sync_error_count), 0) FROM pg_stat_subscription_stats")
        .unwrap()
}

#[test]
fn alembic_migrations_run_on_one_node_reach_the_whole_federation() {
    let c = Cluster::start(&[
        NodeSpec::guc("east"),
        NodeSpec::guc("central"),
        NodeSpec::guc("west"),
        NodeSpec::guc("north"),
    ]);
    let (east, central, west, north) =
        (c.node("east"), c.node("central"), c.node("west"), c.node("north"));
    let three = [east, central, west];
    // Each node creates and federates the first table, then joins (a deploy step).
    for n in three {
        alembic(n, &["upgrade", "0001"]);
    }
    join(central, east);
    join(west, east);
    for n in three {
        n.execute(&format!("INSERT INTO herd (name) SELECT '{}-' || g FROM generate_series(1, 50) g", n.name));
    }
    // Later migrations on east only, in one Alembic transaction: a column, an index, and a
    // DEFAULT now() column that each owner computes for its own rows.
    alembic(east, &["upgrade", "0003"]);
    let schema = assert_same_schema(&three, "herd");
    assert!(schema.contains("tagged_at timestamp with time zone") && schema.contains("weight_kg numeric"), "{schema}");
    for n in three {
        assert_eq!(n.row_count("SELECT 1 FROM pg_indexes WHERE indexname = 'herd_weight'"), 1, "{}", n.name);
    }
    west.execute("INSERT INTO herd (name, weight_kg) VALUES ('heavy', 3000)");
    assert_converged_among(&three, "herd");
    for n in three {
        assert_verified(n);
    }
    // A downgrade and the upgrade again, then a new table created and federated.
    alembic(east, &["downgrade", "0002"]);
    assert!(!assert_same_schema(&three, "herd").contains("tagged_at"));
    alembic(east, &["upgrade", "head"]);
    assert!(assert_same_schema(&three, "herd").contains("tagged_at"));
    east.execute("SELECT federation.wait_ready('60 s')");
    assert_same_schema(&three, "pens");
    central.execute("INSERT INTO pens (name, capacity) VALUES ('reeds', 4)");
    // A fourth node replays the history on its own, then joins.
    alembic(north, &["upgrade", "head"]);
    join(north, east);
    let all = c.all();
    assert_same_schema(&all, "herd");
    assert_same_schema(&all, "pens");
    north.execute("INSERT INTO herd (name, weight_kg) VALUES ('north-1', 900)");
    assert_converged_among(&all, "herd");
    assert_converged_among(&all, "pens");
    for n in &all {
        assert_verified(n);
        wait_health_ok(n, &all);
        assert_eq!(replication_errors(n), "0", "replication errors on {}", n.name);
    }
}
