//! Real migration tools against a federation (docs/migrations.md): Alembic 1.20 (with
//! psycopg 3) runs the project in pg_test/python/alembic_project, sqitch 1.3 (Debian's) the
//! one in pg_test/sqitch_project. Each node creates and federates the first table before it
//! joins; later migrations run on one node only (a new column and an index, a DEFAULT now()
//! column, a downgrade, a new table created and federated on the running federation); a
//! fourth node replays the whole history and joins. Every node ends with the same schema and
//! rows, verify() = match, and no replication error.

use pg_test::scenario::{assert_converged_among, assert_verified, join, wait_health_ok};
use pg_test::{Cluster, Node, NodeSpec};
use std::path::Path;
use std::process::Command;

fn python() -> String {
    pg_test::python_tools()
}

/// Runs a tool; panics with its output when it fails.
fn run(node: &Node, what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} on {} failed:\n{}\n{}",
        node.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `alembic <args>` against `node` (host may be a socket directory).
fn alembic(node: &Node, args: &[&str]) {
    let ini = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/alembic_project/alembic.ini");
    let url = format!(
        "postgresql+psycopg://postgres@/postgres?host={}&port={}",
        node.client_param("host").replace('/', "%2F"),
        node.client_param("port")
    );
    run(
        node,
        &format!("alembic {args:?}"),
        Command::new(python())
            .args(["-m", "alembic", "-c", ini.to_str().unwrap(), "-x"])
            .arg(format!("url={url}"))
            .args(args),
    );
}

/// Runs `sqitch <args>` against `node` (libpq's environment names the server).
fn sqitch(node: &Node, args: &[&str]) {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("sqitch_project");
    run(
        node,
        &format!("sqitch {args:?} (Debian package sqitch; scripts/setup.sh installs it)"),
        Command::new("sqitch")
            .arg("-C")
            .arg(&project)
            .args(args)
            .args(["--target", "db:pg:"])
            .env("PGHOST", node.client_param("host"))
            .env("PGPORT", node.client_param("port"))
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres")
            .env("SQITCH_FULLNAME", "pg_federation tests")
            .env("SQITCH_EMAIL", "tests@example.org"),
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
        assert_eq!(
            columns(n, table),
            first,
            "{table} on {} vs {}",
            n.name,
            nodes[0].name
        );
    }
    first
}

fn replication_errors(node: &Node) -> String {
    node.scalar("SELECT coalesce(sum(apply_error_count + sync_error_count), 0) FROM pg_stat_subscription_stats")
        .unwrap()
}

/// The points of both projects' history (the same four migrations: herd; weight, with an
/// index; tagged, DEFAULT now(); pens, a new table created and federated).
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Up to herd: created and federated.
    Herd,
    /// Up to tagged.
    Tagged,
    /// Back down to weight.
    BackToWeight,
    /// Everything.
    Head,
}

/// Four nodes driven by a migration tool: each of three creates and federates the first table
/// and joins; later migrations run on east only (up, down, up again, a new table); the fourth
/// node replays the history and joins. Checks every node's schema, rows, verify() and errors.
fn federation_migrated_by(migrate: impl Fn(&Node, Step)) -> Cluster {
    let c = Cluster::start(&[
        NodeSpec::guc("east"),
        NodeSpec::guc("central"),
        NodeSpec::guc("west"),
        NodeSpec::guc("north"),
    ]);
    let (east, central, west, north) = (
        c.node("east"),
        c.node("central"),
        c.node("west"),
        c.node("north"),
    );
    let three = [east, central, west];
    for n in three {
        migrate(n, Step::Herd);
    }
    join(central, east);
    join(west, east);
    for n in three {
        n.execute(&format!(
            "INSERT INTO herd (name) SELECT '{}-' || g FROM generate_series(1, 50) g",
            n.name
        ));
    }
    // On east only: a column and an index, and a DEFAULT now() column that each owner
    // computes for its own rows (in one transaction with Alembic).
    migrate(east, Step::Tagged);
    let schema = assert_same_schema(&three, "herd");
    assert!(
        schema.contains("tagged_at timestamp with time zone")
            && schema.contains("weight_kg numeric"),
        "{schema}"
    );
    for n in three {
        assert_eq!(
            n.row_count("SELECT 1 FROM pg_indexes WHERE indexname = 'herd_weight'"),
            1,
            "{}",
            n.name
        );
    }
    west.execute("INSERT INTO herd (name, weight_kg) VALUES ('heavy', 3000)");
    assert_converged_among(&three, "herd");
    for n in three {
        assert_verified(n);
    }
    // Down and up again, then the new table on the running federation.
    migrate(east, Step::BackToWeight);
    let schema = assert_same_schema(&three, "herd");
    assert!(
        !schema.contains("tagged_at") && schema.contains("weight_kg"),
        "{schema}"
    );
    migrate(east, Step::Head);
    assert!(assert_same_schema(&three, "herd").contains("tagged_at"));
    east.execute("SELECT federation.wait_ready('60 s')");
    assert_same_schema(&three, "pens");
    central.execute("INSERT INTO pens (name, capacity) VALUES ('reeds', 4)");
    // A fourth node replays the history on its own, then joins.
    migrate(north, Step::Head);
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
        assert_eq!(
            replication_errors(n),
            "0",
            "replication errors on {}",
            n.name
        );
    }
    c
}

#[test]
fn alembic_migrations_run_on_one_node_reach_the_whole_federation() {
    federation_migrated_by(|n, step| match step {
        Step::Herd => alembic(n, &["upgrade", "0001"]),
        Step::Tagged => alembic(n, &["upgrade", "0003"]),
        Step::BackToWeight => alembic(n, &["downgrade", "0002"]),
        Step::Head => alembic(n, &["upgrade", "head"]),
    });
}

#[test]
fn sqitch_changes_deployed_on_one_node_reach_the_whole_federation() {
    let c = federation_migrated_by(|n, step| match step {
        Step::Herd => sqitch(n, &["deploy", "--verify", "--to", "herd"]),
        Step::Tagged => sqitch(n, &["deploy", "--verify", "--to", "tagged"]),
        Step::BackToWeight => sqitch(n, &["revert", "-y", "--to", "weight"]),
        Step::Head => sqitch(n, &["deploy", "--verify"]),
    });
    // Reverting the new table (a federated DROP TABLE) removes it everywhere.
    sqitch(c.node("east"), &["revert", "-y", "--to", "tagged"]);
    for n in c.all() {
        assert_eq!(
            n.scalar("SELECT to_regclass('pens')::text"),
            None,
            "{}",
            n.name
        );
    }
}
