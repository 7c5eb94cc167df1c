//! Backups restored as copies (issue 13): a pg_dump of a member restored on another server
//! knows it is a copy. It refuses writes to federated tables and every federation operation,
//! health() says why, nothing on it reaches the real node or its members (its schema changes
//! stay on it), and the runbook's
//! procedure (docs/runbook.md, "A restored copy of a node", run here as written, with psql)
//! detaches it without touching the federation.

use pg_test::scenario::{assert_converged, joined, wait_health_ok};
use pg_test::{pg_bindir, Cluster, Node, NodeSpec};
use std::process::Command;

fn tool(name: &str, args: &[&str]) -> std::process::Output {
    Command::new(pg_bindir().join(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"))
}

fn connection_args(n: &Node) -> Vec<String> {
    [
        "-h",
        &n.client_param("host"),
        "-p",
        &n.client_param("port"),
        "-U",
        "postgres",
        "-d",
        "postgres",
    ]
    .map(String::from)
    .to_vec()
}

/// The first ```sql block of the runbook's section `title`.
fn runbook_sql(title: &str) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/runbook.md"),
    )
    .unwrap();
    let section = &text[text
        .find(title)
        .unwrap_or_else(|| panic!("runbook has no section {title}"))..];
    let start = section.find("```sql\n").expect("an sql block") + 7;
    section[start..start + section[start..].find("```").unwrap()].to_string()
}

#[test]
fn a_dump_restored_on_another_server_is_a_copy_that_touches_nothing() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 10) g");
    west.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 5) g");
    assert_converged(&c, "hippos");
    let dump = east.files_dir().join("east.dump");
    let mut args = connection_args(east);
    args.extend(["-Fc".into(), "-f".into(), dump.display().to_string()]);
    let out = tool(
        "pg_dump",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Restored on another server that is also configured as "east".
    let other = Cluster::start(&[NodeSpec::guc("east").without_extension()]);
    let copy = other.node("east");
    let mut args = connection_args(copy);
    args.push(dump.display().to_string());
    let out = tool(
        "pg_restore",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(copy.row_count("SELECT 1 FROM hippos"), 15);

    // The copy refuses to act as east.
    for sql in [
        "INSERT INTO hippos (value) VALUES (1)",
        "SELECT federation.leave()",
        "SELECT federation.disable('hippos')",
        "SELECT federation.resync('west')",
    ] {
        let e = copy.expect_error(sql);
        assert_eq!(e.code, "55000", "{sql}: {e}");
        assert!(
            e.message.contains("is a copy of node \"east\""),
            "{sql}: {e}"
        );
        assert!(
            e.hint
                .as_deref()
                .unwrap_or_default()
                .contains("A restored copy of a node"),
            "{sql}: {e}"
        );
    }
    // Its schema changes stay on it (a restore runs GRANT and COMMENT after the catalog).
    copy.execute("ALTER TABLE hippos ADD COLUMN from_the_copy int");
    for n in c.all() {
        assert_eq!(n.row_count("SELECT 1 FROM pg_attribute WHERE attrelid = 'hippos'::regclass AND attname = 'from_the_copy'"), 0);
    }
    let r = copy.query("SELECT health, reason FROM federation.health()");
    assert_eq!(r[0][0].as_deref(), Some("CRITICAL"), "{r:?}");
    assert!(
        r[0][1]
            .as_deref()
            .unwrap_or_default()
            .starts_with("this database is a copy of node \"east\""),
        "{r:?}"
    );

    // The real federation is untouched: members, slots, replication, health.
    for (n, peer) in [(east, "west"), (west, "east")] {
        assert_eq!(
            n.scalar("SELECT string_agg(node_name || ':' || state, ',') FROM federation.node")
                .as_deref(),
            Some(format!("{peer}:ready").as_str())
        );
    }
    east.execute("INSERT INTO hippos (value) VALUES (100)");
    west.execute("INSERT INTO hippos (value) VALUES (200)");
    assert_converged(&c, "hippos");
    for n in c.all() {
        wait_health_ok(n, &c.all());
    }

    // The runbook's detach, as written, with psql: the copy stands alone with every row.
    let script = east.files_dir().join("detach.sql");
    std::fs::write(&script, runbook_sql("A restored copy of a node")).unwrap();
    let mut args = connection_args(copy);
    args.extend([
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
        "-f".into(),
        script.display().to_string(),
    ]);
    let out = tool("psql", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "runbook detach: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(copy.row_count("SELECT 1 FROM pg_subscription"), 0);
    assert_eq!(copy.row_count("SELECT 1 FROM hippos"), 15);
    copy.execute("INSERT INTO hippos (value) VALUES (300)");
    // The real nodes still hold their slots for each other, active.
    for (n, slot) in [
        (east, "federation_east_west"),
        (west, "federation_west_east"),
    ] {
        assert_eq!(
            n.scalar(&format!(
                "SELECT active::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ))
            .as_deref(),
            Some("true"),
            "{slot}"
        );
    }
    assert_converged(&c, "hippos");
}
