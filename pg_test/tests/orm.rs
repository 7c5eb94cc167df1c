//! ORMs against a federated table, for real (docs/keys.md): SQLAlchemy reflection, automap
//! and on_conflict_do_update; Django inspectdb and bulk_create(update_conflicts=True). The
//! Python side is pg_test/python/orm_keys.py, run with the interpreter scripts/setup.sh
//! (python_tools) installs; this side checks what the ORMs wrote, on every node.

use pg_test::scenario::{assert_converged, assert_verified, pair_with, wait_health_ok, ACCOUNTS};
use std::path::Path;
use std::process::Command;

fn python() -> String {
    pg_test::python_tools()
}

#[test]
fn sqlalchemy_and_django_see_the_key_and_upsert_on_every_node() {
    let python = python();
    let c = pair_with(ACCOUNTS);
    let (east, west) = (c.node("east"), c.node("west"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/orm_keys.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(east.client_conninfo())
        .arg(west.client_conninfo())
        .output()
        .expect("run the ORM script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON summary");
    assert_eq!(
        summary["sqlalchemy_primary_key"],
        serde_json::json!(["id", "node_name"])
    );
    assert_eq!(summary["django_bulk_create"]["dj@east"], 100);

    // What the ORMs wrote reached the other node, each row once, under its owner.
    assert_converged(&c, "accounts");
    for n in [east, west] {
        assert_eq!(
            n.query("SELECT email, balance::text, node_name FROM accounts ORDER BY email"),
            vec![
                vec![
                    Some("dj@east".into()),
                    Some("100".into()),
                    Some("east".into())
                ],
                vec![
                    Some("dj@east2".into()),
                    Some("200".into()),
                    Some("east".into())
                ],
                vec![
                    Some("sa@east".into()),
                    Some("10".into()),
                    Some("east".into())
                ],
                vec![
                    Some("sa@west".into()),
                    Some("8".into()),
                    Some("west".into())
                ],
            ],
            "on {}",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT count(DISTINCT id) FROM accounts")
                .as_deref(),
            Some("4")
        );
    }
    let all = c.all();
    for n in &all {
        wait_health_ok(n, &all);
        assert_verified(n);
    }
}
