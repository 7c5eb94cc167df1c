//! Monitoring with the tools users run (issue 16): Debian's postgres_exporter with
//! deploy/monitoring/postgres_exporter.yaml against a real federation, and promtool checking and
//! unit-testing deploy/prometheus/pg_federation.rules.yaml. While a member is down its lag is
//! reported as unknown (known = 0, lag NaN), never as 0; every series names this node.

use pg_test::scenario::{joined, wait_health_ok};
use pg_test::{wait_until, Node};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// deploy/: the exporter's queries (monitoring/), the alert rules (prometheus/), the
/// dashboard (grafana/).
fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A postgres_exporter process, stopped when dropped.
struct Exporter {
    child: Child,
    port: u16,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Exporter {
    fn start(n: &Node) -> Exporter {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/prometheus-postgres-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--extend.query-path={}",
                docs().join("monitoring/postgres_exporter.yaml").display()
            ))
            .arg("--log.level=warn")
            // 0.11's bgwriter collector reads columns PostgreSQL 17 moved to pg_stat_checkpointer.
            .arg("--no-collector.bgwriter")
            .env(
                "DATA_SOURCE_NAME",
                format!(
                    "host={} port={} user=postgres dbname=postgres sslmode=disable",
                    n.client_param("host"),
                    n.port
                ),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run /usr/bin/prometheus-postgres-exporter (Debian's prometheus-postgres-exporter; scripts/setup.sh installs it)");
        Exporter { child, port }
    }

    /// The exporter's /metrics page, or why it could not be read.
    fn metrics(&self) -> Result<String, String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut body = String::new();
        s.read_to_string(&mut body).map_err(|e| e.to_string())?;
        Ok(body)
    }
}

/// The value of the series `name` whose labels include every one of `labels`.
fn value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<String> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (labelset, v) = rest.strip_prefix('{')?.split_once("} ")?;
        labels
            .iter()
            .all(|(k, val)| labelset.split(',').any(|kv| kv == format!("{k}=\"{val}\"")))
            .then(|| v.trim().to_string())
    })
}

/// The pg_federation_* series names a dashboard or rules file reads.
fn series_used(text: &str) -> std::collections::BTreeSet<String> {
    text.match_indices("pg_federation_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect::<String>()
        })
        .filter(|s| !s.ends_with('_')) // "pg_federation_status_*" in a comment
        .collect()
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let dir = docs().join("prometheus");
    for args in [
        vec!["check", "rules", "pg_federation.rules.yaml"],
        vec!["test", "rules", "pg_federation.rules.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("run promtool (Debian's prometheus; scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn postgres_exporter_reports_an_unreachable_member_as_unknown_never_as_zero_lag() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    east.execute("CREATE ROLE exporter LOGIN; GRANT pg_monitor TO exporter");
    wait_health_ok(east, &c.all());
    let exporter = Exporter::start(east);
    let in_west = [("node", "east"), ("peer", "west"), ("direction", "in")];
    let out_west = [("node", "east"), ("peer", "west"), ("direction", "out")];
    wait_until(
        "postgres_exporter to report a healthy federation",
        Duration::from_secs(60),
        &[east, west],
        || {
            let m = exporter.metrics()?;
            let ok = value(&m, "pg_federation_health_health", &[("node", "east")]).as_deref()
                == Some("0")
                && value(&m, "pg_federation_status_known", &in_west).as_deref() == Some("1")
                && value(&m, "pg_federation_status_known", &out_west).as_deref() == Some("1")
                && value(&m, "pg_federation_status_lag_bytes", &in_west).is_some();
            if ok {
                Ok(true)
            } else {
                Err(m
                    .lines()
                    .filter(|l| l.starts_with("pg_federation"))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        },
    );

    // Every series the Grafana dashboard and the alert rules read is one this exporter gives.
    let m = exporter.metrics().unwrap();
    for file in [
        "grafana/pg_federation.json",
        "prometheus/pg_federation.rules.yaml",
    ] {
        let text = std::fs::read_to_string(docs().join(file)).unwrap();
        if file.ends_with(".json") {
            let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(
                dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8),
                "{file}: a dashboard with its panels"
            );
        }
        let used = series_used(&text);
        assert!(used.len() >= 5, "{file} reads {used:?}");
        for series in used {
            assert!(
                m.lines().any(|l| l.starts_with(&format!("{series}{{"))),
                "{file} reads {series}, which postgres_exporter with deploy/monitoring/postgres_exporter.yaml does not give"
            );
        }
    }

    west.stop();
    // While west is down: its lag is unknown, not zero, and health says so.
    wait_until(
        "postgres_exporter to report west's lag as unknown",
        Duration::from_secs(90),
        &[east],
        || {
            let m = exporter.metrics()?;
            let unknown = value(&m, "pg_federation_status_known", &out_west).as_deref()
                == Some("0")
                && value(&m, "pg_federation_status_known", &in_west).as_deref() == Some("0");
            let lag = value(&m, "pg_federation_status_lag_seconds", &out_west);
            let health = value(&m, "pg_federation_health_health", &[("node", "east")]);
            if unknown && lag.as_deref() == Some("NaN") && health.as_deref() != Some("0") {
                Ok(true)
            } else {
                Err(format!(
                    "lag_seconds {lag:?}, health {health:?}\n{}",
                    m.lines()
                        .filter(|l| l.starts_with("pg_federation"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ))
            }
        },
    );
    let m = exporter.metrics().unwrap();
    for series in [
        "pg_federation_status_lag_seconds",
        "pg_federation_status_lag_bytes",
    ] {
        assert_ne!(
            value(&m, series, &in_west).as_deref(),
            Some("0"),
            "{series} of an unreachable member must not read 0"
        );
    }

    west.start_again();
    wait_until(
        "postgres_exporter to report west known again",
        Duration::from_secs(90),
        &[east, west],
        || {
            let m = exporter.metrics()?;
            Ok(
                value(&m, "pg_federation_status_known", &in_west).as_deref() == Some("1")
                    && value(&m, "pg_federation_status_known", &out_west).as_deref() == Some("1"),
            )
        },
    );

    // west's clean shutdown ended east's stream from it with an error that PostgreSQL counts
    // as an apply error; pg_federation's counter leaves it out.
    let raw = "SELECT apply_error_count FROM pg_stat_subscription_stats
               WHERE subname = federation_internal.subscription_name('west', 'east')";
    wait_until(
        "PostgreSQL to count west's shutdown as an apply error",
        Duration::from_secs(30),
        &[east],
        || {
            Ok(east
                .scalar(raw)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
                >= 1)
        },
    );
    let probed = east
        .scalar("SELECT probed_at::text FROM federation.peer_probe WHERE node_name = 'west'")
        .unwrap();
    wait_until(
        "two more probes of west",
        Duration::from_secs(30),
        &[east],
        || {
            Ok(east.row_count(&format!(
            "SELECT 1 FROM federation.peer_probe WHERE node_name = 'west' AND probed_at > '{probed}'::timestamptz + interval '4 s'"
        )) == 1)
        },
    );
    let m = exporter.metrics().unwrap();
    assert_eq!(
        value(&m, "pg_federation_status_apply_errors", &in_west).as_deref(),
        Some("0"),
        "a clean shutdown is no apply error"
    );
    wait_health_ok(east, &[east, west]);

    // A real apply error counts: a row east holds in west's partition behind replication's
    // back collides with the row west then writes.
    let id = "00000000-0000-0000-0000-00000000beef";
    east.execute(&format!(
        "SET session_replication_role = replica; INSERT INTO hippos (id, value, node_name) VALUES ('{id}', 1, 'west'); RESET session_replication_role"
    ));
    west.execute(&format!(
        "INSERT INTO hippos (id, value) VALUES ('{id}', 2)"
    ));
    wait_until(
        "postgres_exporter to count east's apply error",
        Duration::from_secs(60),
        &[east, west],
        || {
            let m = exporter.metrics()?;
            let n = value(&m, "pg_federation_status_apply_errors", &in_west);
            Ok(n.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) >= 1.0)
        },
    );
    east.execute(&format!(
        "SET session_replication_role = replica; DELETE FROM hippos WHERE id = '{id}'; RESET session_replication_role"
    ));
    wait_until(
        "west's row to arrive on east",
        Duration::from_secs(60),
        &[east, west],
        || {
            Ok(east.row_count(&format!(
                "SELECT 1 FROM hippos WHERE id = '{id}' AND value = 2"
            )) == 1)
        },
    );
    drop(exporter);
}
