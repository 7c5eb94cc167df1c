//! Node identity on real servers: every resolution path, reloads, and refusals.

use pg_test::{install_pgnodemx_standin, Cluster, Identity, NodeSpec};

/// east is named by the GUC, central by a Kubernetes labels file, west by pgnodemx.
#[test]
fn three_nodes_each_report_their_own_name() {
    assert!(
        install_pgnodemx_standin(),
        "could not install the pgnodemx stand-in (run as root)"
    );
    let cluster = Cluster::start(&[
        NodeSpec::guc("east"),
        NodeSpec::labels("central"),
        NodeSpec {
            name: "west".into(),
            identity: Identity::Unconfigured,
            conf: vec![],
            create_extension: true,
            place: None,
            bindir: None,
        },
    ]);
    let west = cluster.node("west");
    // pgnodemx reads <kdapi_path>/labels; federation.labels_path points elsewhere (missing).
    let kdapi = west.files_dir().join("kdapi");
    std::fs::create_dir_all(&kdapi).unwrap();
    std::fs::write(
        kdapi.join("labels"),
        "app=\"pg_federation\"\npg-cluster=\"west\"\n",
    )
    .unwrap();
    west.append_conf(&format!("pgnodemx.kdapi_path = '{}'", kdapi.display()));
    west.execute("ALTER SYSTEM SET federation.labels_path = '/nonexistent/labels'");
    west.reload();
    west.execute("CREATE EXTENSION pgnodemx");

    for (node, source) in [
        ("east", "federation.node_name"),
        ("central", "labels file"),
        ("west", "pgnodemx"),
    ] {
        let n = cluster.node(node);
        assert_eq!(
            n.scalar("SELECT federation.node_name()").as_deref(),
            Some(node),
            "node {node}"
        );
        let got = n.scalar("SELECT federation.node_name_source()").unwrap();
        assert!(
            got.contains(source),
            "node {node}: source is {got:?}, expected it to mention {source}"
        );
    }
}

#[test]
fn a_reload_picks_up_a_changed_name_in_the_same_session() {
    let cluster = Cluster::start(&[NodeSpec::guc("east"), NodeSpec::labels("central")]);
    let east = cluster.node("east");
    assert_eq!(
        east.scalar("SELECT federation.node_name()").as_deref(),
        Some("east")
    );
    east.execute("ALTER SYSTEM SET federation.node_name = 'east_2'");
    east.reload();
    assert_eq!(
        east.scalar("SELECT federation.node_name()").as_deref(),
        Some("east_2")
    );

    // A changed labels file is read again on reload (the kubelet rewrites it in place).
    let central = cluster.node("central");
    assert_eq!(
        central.scalar("SELECT federation.node_name()").as_deref(),
        Some("central")
    );
    central.write_labels("pg-cluster=\"central-2\"\n");
    assert_eq!(
        central.scalar("SELECT federation.node_name()").as_deref(),
        Some("central"),
        "without a reload the cached name stays"
    );
    central.reload();
    assert_eq!(
        central.scalar("SELECT federation.node_name()").as_deref(),
        Some("central-2")
    );
}

#[test]
fn a_session_cannot_change_the_node_name() {
    let cluster = Cluster::start(&[NodeSpec::guc("east")]);
    let east = cluster.node("east");
    let e = east.expect_error("SET federation.node_name = 'west'");
    assert_eq!(e.code, "55P02", "{e}"); // cant_change_runtime_param
    let e = east.expect_error("SET federation.labels_path = '/tmp/x'");
    assert_eq!(e.code, "55P02", "{e}");
    assert_eq!(
        east.scalar("SELECT federation.node_name()").as_deref(),
        Some("east")
    );
}

#[test]
fn unconfigured_and_misconfigured_nodes_are_refused() {
    let cluster = Cluster::start(&[NodeSpec {
        name: "nameless".into(),
        identity: Identity::Unconfigured,
        conf: vec![],
        create_extension: true,
        place: None,
        bindir: None,
    }]);
    let n = cluster.node("nameless");
    let e = n.expect_error("SELECT federation.node_name()");
    assert_eq!(e.code, "55000", "{e}");
    assert_eq!(e.message, "no node name is configured for this server");
    assert!(
        e.hint
            .as_deref()
            .unwrap_or("")
            .contains("ALTER SYSTEM SET federation.node_name"),
        "{e}"
    );

    // A labels file that lacks the label.
    n.write_labels("app=\"hippo\"\n");
    n.reload();
    let e = n.expect_error("SELECT federation.node_name()");
    assert_eq!(e.code, "F0000", "{e}");
    assert!(e.message.contains("no label \"pg-cluster\""), "{e}");

    // A malformed labels file.
    n.write_labels("pg-cluster=east\n");
    n.reload();
    let e = n.expect_error("SELECT federation.node_name()");
    assert_eq!(e.code, "F0000", "{e}");
    assert!(e.message.contains("malformed"), "{e}");

    // A name that is not valid in object names.
    n.execute("ALTER SYSTEM SET federation.node_name = 'East Coast'");
    n.reload();
    let e = n.expect_error("SELECT federation.node_name()");
    assert_eq!(e.code, "22023", "{e}");
    assert!(e.message.contains("East Coast"), "{e}");
    assert!(
        e.hint.as_deref().unwrap_or("").contains("east_coast"),
        "{e}"
    );

    // Fixed: works again without a restart.
    n.execute("ALTER SYSTEM SET federation.node_name = 'east'");
    n.reload();
    assert_eq!(
        n.scalar("SELECT federation.node_name()").as_deref(),
        Some("east")
    );
}

#[test]
fn harness_restarts_and_kills_nodes() {
    let cluster = Cluster::start(&[NodeSpec::guc("east")]);
    let east = cluster.node("east");
    east.execute("CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1)");
    east.restart();
    assert_eq!(east.scalar("SELECT count(*) FROM t").as_deref(), Some("1"));
    east.kill9();
    assert!(!east.is_running());
    east.start_again(); // crash recovery
    assert_eq!(east.scalar("SELECT count(*) FROM t").as_deref(), Some("1"));
    assert_eq!(
        east.scalar("SELECT federation.node_name()").as_deref(),
        Some("east")
    );
}
