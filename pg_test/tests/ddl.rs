//! The DDL guard (src/ddl/): DROP EXTENSION pg_federation, DROP TABLE of a federated table or
//! partition, DROP SCHEMA holding one: refused with SQLSTATE, message and hint, nothing
//! changed on any node, replication unharmed; the superuser's escape hatch; and after
//! leave() and disable(), DROP EXTENSION removes everything, schema included.

use pg_test::checks::snapshot;
use pg_test::scenario::{assert_converged, joined, wait_health_ok};
use pg_test::{Cluster, NodeSpec};

#[test]
fn drops_that_would_break_the_federation_are_refused_and_change_nothing() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    west.execute(
        "CREATE TABLE scratch (id int PRIMARY KEY); CREATE EXTENSION IF NOT EXISTS pg_trgm",
    );
    let before = snapshot(west, "public");
    let extensions =
        west.scalar("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension");
    for (sql, code, needle, hint) in [
        (
            "DROP TABLE IF EXISTS scratch, hippos",
            "0A000",
            "together with other tables",
            "one statement per federated table",
        ),
        (
            "DROP TABLE hippos_east",
            "2BP01",
            "partition of federated table public.hippos",
            "drop_node",
        ),
        (
            "BEGIN; DROP TABLE hippos_west; COMMIT",
            "2BP01",
            "partition of federated table public.hippos",
            "drop_node",
        ),
        (
            "DO $$BEGIN EXECUTE 'DROP TABLE hippos_default'; END$$",
            "2BP01",
            "hippos_default",
            "drop_node",
        ),
        (
            "DROP SCHEMA public CASCADE",
            "2BP01",
            "cannot drop schema public",
            "federation.disable",
        ),
        (
            "DROP EXTENSION pg_federation CASCADE",
            "55006",
            "this node is a member of a federation (with east)",
            "federation.leave()",
        ),
        (
            "DROP EXTENSION pg_federation",
            "55006",
            "member of a federation",
            "federation.leave()",
        ),
    ] {
        let e = west.expect_error(sql);
        assert_eq!(e.code, code, "{sql}: {e}");
        assert!(e.message.contains(needle), "{sql}: {e}");
        assert!(
            e.hint.as_deref().unwrap_or_default().contains(hint),
            "{sql}: {e}"
        );
        west.execute("ROLLBACK"); // ends the BEGIN case's failed block; a warning otherwise
    }
    assert_eq!(snapshot(west, "public"), before, "nothing changed on west");
    assert_eq!(
        west.scalar("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension"),
        extensions
    );
    // Ordinary DDL is untouched: another table, another extension.
    west.execute("DROP TABLE scratch; DROP EXTENSION pg_trgm");
    // The escape hatch is a superuser's only.
    west.execute("CREATE ROLE clerk LOGIN");
    let e = west.expect_error("SET ROLE clerk; SET federation.unsafe_ddl = on");
    assert_eq!(e.code, "42501", "{e}");
    west.execute("RESET ROLE");
    // Replication is unharmed: rows flow both ways, health OK.
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 10) g");
    west.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 10) g");
    assert_converged(&c, "hippos");
    let all = c.all();
    for n in &all {
        wait_health_ok(n, &all);
    }

    // Out of the federation and with its tables disabled, the extension goes, schema and all.
    west.execute("SELECT federation.leave()");
    let e = west.expect_error("DROP EXTENSION pg_federation");
    assert_eq!(e.code, "2BP01", "{e}");
    assert!(
        e.message
            .contains("public.hippos is federated on this node"),
        "{e}"
    );
    west.execute("SELECT federation.disable('hippos')");
    west.execute("DROP EXTENSION pg_federation");
    assert_eq!(
        west.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'federation'")
            .as_deref(),
        Some("0"),
        "the schema went with the extension"
    );
    assert_eq!(
        west.scalar("SELECT count(*) FROM hippos").as_deref(),
        Some("20")
    );
    west.execute("CREATE EXTENSION pg_federation");
    // east is unaffected.
    wait_health_ok(east, &[east]);
}

#[test]
fn a_superuser_may_drop_on_this_node_only_with_the_escape_hatch() {
    let c = Cluster::start(&[NodeSpec::guc("east")]);
    let east = c.node("east");
    east.execute("CREATE TABLE t (id bigint PRIMARY KEY); SELECT federation.enable('t')");
    assert_eq!(east.expect_error("DROP TABLE t_east").code, "2BP01");
    east.execute("BEGIN; SET LOCAL federation.unsafe_ddl = on; DROP TABLE t_default; COMMIT");
    assert_eq!(east.scalar("SELECT to_regclass('t_default')::text"), None);
    // The setting was local to that transaction.
    assert_eq!(east.expect_error("DROP TABLE t_east").code, "2BP01");
    // The federated table itself may be dropped: the catalog forgets it.
    east.execute("DROP TABLE t");
    assert_eq!(
        east.row_count("SELECT 1 FROM federation.federated_table"),
        0
    );
}
