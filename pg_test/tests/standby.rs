//! A node's hot standby (its HA replica, as Patroni, CloudNativePG, PGO or pg_auto_failover
//! run one): status() and health() answer there (issue 13: "They work on a hot standby"),
//! say whose standby it is, and tell whether it keeps up with its primary now.

use pg_test::scenario::{assert_converged, health, joined, wait_health_ok};
use pg_test::{wait_until, Node};
use std::time::Duration;

#[test]
fn status_and_health_answer_on_a_hot_standby_and_tell_its_state() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 20) g");
    west.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 10) g");
    assert_converged(&c, "hippos");
    let standby = Node::standby_of(east);
    assert_eq!(
        standby
            .scalar("SELECT pg_is_in_recovery()::text")
            .as_deref(),
        Some("true")
    );

    // Streaming: OK, and it says what it is (not "every member replicates both ways").
    wait_until(
        "the standby to report OK as a standby of east",
        Duration::from_secs(60),
        &[east, &standby],
        || {
            let (h, reason) = health(&standby);
            Ok(h == "OK" && reason.contains("hot standby of node east"))
        },
    );
    let rows = standby.query("SELECT direction, state, health FROM federation.status");
    assert_eq!(
        rows,
        vec![vec![
            Some("standby".to_string()),
            Some("streaming".to_string()),
            Some("OK".to_string())
        ]],
        "status on the standby"
    );
    // It reads the primary's rows, and a monitoring role can ask.
    east.execute("INSERT INTO hippos (value) VALUES (999)");
    let on_east = east.scalar("SELECT count(*) FROM hippos");
    wait_until(
        "the standby to replay east's insert",
        Duration::from_secs(30),
        &[east, &standby],
        || Ok(standby.scalar("SELECT count(*) FROM hippos") == on_east),
    );
    east.execute("CREATE ROLE watcher LOGIN; GRANT pg_monitor TO watcher");
    wait_until(
        "the role to reach the standby",
        Duration::from_secs(30),
        &[east, &standby],
        || {
            Ok(standby
                .scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'watcher'")
                .as_deref()
                == Some("1"))
        },
    );
    assert_eq!(
        standby
            .scalar("SET ROLE watcher; SELECT health FROM federation.health()")
            .as_deref(),
        Some("OK")
    );
    standby.execute("RESET ROLE");

    // Its primary stops: the standby says so at once (WARNING), without an error.
    east.stop();
    wait_until(
        "the standby to report that it no longer receives WAL",
        Duration::from_secs(60),
        &[&standby],
        || {
            let (h, reason) = health(&standby);
            if h == "WARNING" && reason.contains("not receiving") {
                Ok(true)
            } else {
                Err(format!("{h}: {reason}"))
            }
        },
    );
    let repair = standby.scalar("SELECT repair FROM federation.status WHERE direction = 'standby'");
    assert!(
        repair.unwrap_or_default().contains("primary_conninfo"),
        "a repair that says where to look"
    );

    // Back: OK again; the federation on the primary is untouched by all this.
    east.start_again();
    wait_until(
        "the standby to stream again",
        Duration::from_secs(60),
        &[east, &standby],
        || Ok(health(&standby).0 == "OK"),
    );
    wait_health_ok(east, &[east, west]);
    wait_health_ok(west, &[east, west]);
    drop(standby);
    assert_converged(&c, "hippos");
}
