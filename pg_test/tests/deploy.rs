//! The Kubernetes artifacts of deploy/ (issue 16), checked offline with the tools users run:
//! `kubectl kustomize` builds the three- and five-node federations for CloudNativePG and
//! Crunchy PGO; every resource is validated, custom resources against the operators' own CRD
//! schemas pinned in deploy/schemas, the rest against Kubernetes' schemas (strict: an unknown
//! field fails); then what pg_federation needs is checked in what was built (settings, the
//! node's address, the password file's mount, the labels file, the join order, the network
//! policy). The image recipes pass hadolint. No cluster is started (docs/kubernetes.md says
//! what was not run).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn python() -> String {
    pg_test::python_tools()
}

/// `kubectl kustomize <dir>`, validated; the resources as JSON.
fn build(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", &root().join(dir).to_string_lossy()])
        .output()
        .expect("run kubectl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = Command::new(python())
        .arg(root().join("pg_test/python/validate_manifests.py"))
        .arg(root().join("deploy/schemas"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let v = child.wait_with_output().unwrap();
    assert!(
        v.status.success(),
        "{dir} does not validate:\n{}",
        String::from_utf8_lossy(&v.stderr)
    );
    serde_json::from_slice(&v.stdout).unwrap()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn name(d: &Value) -> String {
    d["metadata"]["name"].as_str().unwrap().to_string()
}

/// A valid pg_federation node name (src/identity: lowercase letters, digits, `_`, `-`, at
/// most 24 bytes).
fn is_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 24
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// What both operators' federations must have, besides the per-operator checks.
fn check_common(docs: &[Value], nodes: &[String], service_suffix: &str, operator_namespace: &str) {
    // The bootstrap Job joins the nodes in the order of the list, each to the first.
    let cm: Vec<&Value> = of_kind(docs, "ConfigMap")
        .into_iter()
        .filter(|m| m["data"]["NODES"].is_string())
        .collect();
    assert_eq!(cm.len(), 1);
    let listed: Vec<String> = cm[0]["data"]["NODES"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut sorted_nodes = nodes.to_vec();
    sorted_nodes.sort();
    let mut sorted_listed = listed.clone();
    sorted_listed.sort();
    assert_eq!(
        sorted_listed, sorted_nodes,
        "the Job joins every node, once"
    );
    let job = of_kind(docs, "Job");
    assert_eq!(job.len(), 1);
    let container = &job[0]["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_array().unwrap();
    let nodes_ref = env.iter().find(|e| e["name"] == "NODES").unwrap();
    assert_eq!(
        nodes_ref["valueFrom"]["configMapKeyRef"]["name"], cm[0]["metadata"]["name"],
        "the Job reads the generated ConfigMap (its name with kustomize's hash)"
    );
    let script = container["command"][2].as_str().unwrap();
    for call in [
        "CREATE EXTENSION IF NOT EXISTS pg_federation",
        "federation.join(",
        "federation.wait_ready(",
    ] {
        assert!(script.contains(call), "the Job runs {call}");
    }
    assert!(script.contains("host=$first$SERVICE_SUFFIX "), "{script}");
    let suffix = env.iter().find(|e| e["name"] == "SERVICE_SUFFIX").unwrap();
    assert_eq!(
        suffix["value"].as_str(),
        Some(format!("-{service_suffix}").as_str()),
        "the operator's overlay names its read-write Services"
    );
    let image = container["image"].as_str().unwrap();
    assert!(
        image.starts_with("REGISTRY/") && image.ends_with(":17"),
        "the operator's overlay sets the Job's image: {image}"
    );
    // The password: a Secret in libpq's password-file format, never in a manifest's settings.
    let secret = of_kind(docs, "Secret")
        .into_iter()
        .find(|s| name(s) == "federation-replication")
        .expect("the replication role's Secret");
    let pgpass = secret["stringData"]["pgpass"].as_str().unwrap();
    assert_eq!(pgpass.split(':').count(), 5, "libpq's format: {pgpass}");
    assert!(pgpass.contains(":federation:"));
    // Only the members, the Job, the operator and the applications reach PostgreSQL: the
    // shared policy and the operator's, on the same pods.
    let np = of_kind(docs, "NetworkPolicy");
    assert_eq!(np.len(), 2);
    for p in &np {
        let selected = &p["spec"]["podSelector"]["matchLabels"];
        assert_eq!(
            selected["pg-federation.io/federation"],
            "demo",
            "{}",
            name(p)
        );
    }
    let operator = np
        .iter()
        .find(|p| name(p) == "pg-federation-operator")
        .expect("the operator's policy");
    assert_eq!(
        operator["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
            ["kubernetes.io/metadata.name"],
        operator_namespace
    );
    let job_labels = &job[0]["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        job_labels["pg-federation.io/client"], "true",
        "the Job may pass the NetworkPolicy"
    );
}

fn setting(params: &Value, key: &str) -> String {
    match &params[key] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("{key}: {other}"),
    }
}

#[test]
fn cloudnativepg_federations_of_three_and_five_nodes_validate_and_carry_what_pg_federation_needs() {
    for (dir, n) in [
        ("deploy/cnpg/three-nodes", 3),
        ("deploy/cnpg/five-nodes", 5),
    ] {
        let docs = build(dir);
        let clusters = of_kind(&docs, "Cluster");
        assert_eq!(clusters.len(), n, "{dir}: one Cluster per node");
        let names: Vec<String> = clusters.iter().map(|c| name(c)).collect();
        for c in &clusters {
            let node = name(c);
            assert!(is_node_name(&node), "{node}: a valid node name");
            let spec = &c["spec"];
            let params = &spec["postgresql"]["parameters"];
            assert!(spec["postgresql"]["shared_preload_libraries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l == "pg_federation"));
            assert_eq!(setting(params, "wal_level"), "logical");
            assert!(
                setting(params, "max_prepared_transactions")
                    .parse::<u32>()
                    .unwrap()
                    >= 1
            );
            assert!(
                setting(params, "max_replication_slots")
                    .parse::<usize>()
                    .unwrap()
                    >= n - 1 + 2
            );
            assert!(setting(params, "max_wal_senders").parse::<usize>().unwrap() >= n - 1 + 2);
            assert_eq!(setting(params, "federation.database"), "app");
            assert!(
                setting(params, "federation.node_conninfo")
                    .starts_with(&format!("host={node}-rw ")),
                "{node} is reached at its own read-write Service"
            );
            // The password file: the Secret's pgpass key, projected where federation.passfile
            // points; the labels file where node_name() looks by default.
            assert_eq!(
                setting(params, "federation.passfile"),
                "/projected/federation/pgpass"
            );
            let sources = spec["projectedVolumeTemplate"]["sources"]
                .as_array()
                .unwrap();
            assert!(sources
                .iter()
                .any(|s| s["secret"]["name"] == "federation-replication"
                    && s["secret"]["items"][0]["path"] == "federation/pgpass"));
            assert!(sources
                .iter()
                .any(|s| s["downwardAPI"]["items"][0]["path"] == "labels"
                    && s["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.labels"));
            assert_eq!(
                spec["inheritedMetadata"]["labels"]["pg-federation.io/federation"],
                "demo"
            );
            let queries = &spec["monitoring"]["customQueriesConfigMap"][0];
            let cm = of_kind(&docs, "ConfigMap")
                .into_iter()
                .find(|m| m["metadata"]["name"] == queries["name"])
                .expect("the exporter's queries ConfigMap the Cluster names");
            assert!(cm["data"][queries["key"].as_str().unwrap()]
                .as_str()
                .unwrap()
                .contains("FROM federation.status"));
            let role = &spec["managed"]["roles"][0];
            assert_eq!(role["name"], "federation");
            assert_eq!(role["superuser"], true);
            assert_eq!(role["passwordSecret"]["name"], "federation-replication");
            assert!(spec["postgresql"]["pg_hba"][0]
                .as_str()
                .unwrap()
                .contains("federation"));
        }
        check_common(&docs, &names, "rw", "cnpg-system");
    }
}

#[test]
fn crunchy_pgo_federations_of_three_and_five_nodes_validate_and_carry_what_pg_federation_needs() {
    for (dir, n) in [("deploy/pgo/three-nodes", 3), ("deploy/pgo/five-nodes", 5)] {
        let docs = build(dir);
        let clusters = of_kind(&docs, "PostgresCluster");
        assert_eq!(clusters.len(), n, "{dir}: one PostgresCluster per node");
        let names: Vec<String> = clusters.iter().map(|c| name(c)).collect();
        for c in &clusters {
            let node = name(c);
            assert!(is_node_name(&node), "{node}: a valid node name");
            let spec = &c["spec"];
            let params = &spec["config"]["parameters"];
            assert_eq!(setting(params, "shared_preload_libraries"), "pg_federation");
            assert_eq!(setting(params, "wal_level"), "logical");
            assert!(
                setting(params, "max_replication_slots")
                    .parse::<usize>()
                    .unwrap()
                    >= n - 1 + 2
            );
            assert!(
                setting(params, "federation.node_conninfo")
                    .starts_with(&format!("host={node}-primary ")),
                "{node} is reached at its primary's Service"
            );
            assert_eq!(
                setting(params, "federation.passfile"),
                "/etc/postgres/federation/pgpass"
            );
            let files = spec["config"]["files"].as_array().unwrap();
            assert!(files
                .iter()
                .any(|s| s["secret"]["name"] == "federation-replication"
                    && s["secret"]["items"][0]["path"] == "federation/pgpass"));
            assert_eq!(
                spec["metadata"]["labels"]["pg-federation.io/federation"],
                "demo"
            );
            let user = spec["users"]
                .as_array()
                .unwrap()
                .iter()
                .find(|u| u["name"] == "federation")
                .unwrap();
            assert!(user["options"].as_str().unwrap().contains("SUPERUSER"));
            let exporter = &spec["monitoring"]["pgmonitor"]["exporter"]["configuration"][0];
            let cm = of_kind(&docs, "ConfigMap")
                .into_iter()
                .find(|m| m["metadata"]["name"] == exporter["configMap"]["name"])
                .expect("the exporter's queries ConfigMap the PostgresCluster names");
            assert!(cm["data"]["queries.yml"]
                .as_str()
                .unwrap()
                .contains("FROM federation.status"));
            // PGO takes the federation role's password from a Secret made beforehand, one per
            // node, labelled for that node.
            let secret = of_kind(&docs, "Secret")
                .into_iter()
                .find(|s| name(s) == format!("{node}-pguser-federation"))
                .unwrap_or_else(|| panic!("{node}-pguser-federation"));
            assert_eq!(
                secret["metadata"]["labels"]["postgres-operator.crunchydata.com/cluster"],
                node.as_str()
            );
        }
        check_common(&docs, &names, "primary", "postgres-operator");
    }
}

#[test]
fn the_image_recipes_pass_hadolint() {
    let py = python();
    let hadolint = Path::new(&py).with_file_name("hadolint");
    for f in ["Dockerfile.cnpg", "Dockerfile.pgo"] {
        let path = root().join("deploy/image").join(f);
        let out = Command::new(&hadolint)
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", hadolint.display()));
        assert!(
            out.status.success(),
            "hadolint {f}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("AS build") && text.contains("COPY --from=build"),
            "{f}: multi-stage"
        );
    }
}

#[test]
fn cloudnativepg_queries_are_the_exporter_queries_with_their_database() {
    let dir = root().join("deploy/monitoring");
    let generic = std::fs::read_to_string(dir.join("postgres_exporter.yaml")).unwrap();
    let cnpg = std::fs::read_to_string(dir.join("cnpg_queries.yaml")).unwrap();
    let added: Vec<&str> = cnpg
        .lines()
        .filter(|l| l.trim_start().starts_with("target_databases:"))
        .collect();
    assert_eq!(
        added.len(),
        generic
            .lines()
            .filter(|l| l.starts_with("  query: |"))
            .count(),
        "every query names its database for CloudNativePG"
    );
    assert!(cnpg.starts_with("# GENERATED from postgres_exporter.yaml"));
    let rest: Vec<&str> = cnpg
        .lines()
        .skip(3) // the note saying where it comes from
        .filter(|l| !l.trim_start().starts_with("target_databases:"))
        .collect();
    assert_eq!(
        rest,
        generic.lines().collect::<Vec<_>>(),
        "deploy/monitoring/cnpg_queries.yaml drifted from postgres_exporter.yaml"
    );
}
