//! What the benchmarks share: pgbench against a node, the median of rounds, and the
//! two-node federation whose node east owns many rows.

use crate::scenario::{join, HIPPOS};
use crate::{pg_bindir, Cluster, Node, NodeSpec};
use std::process::Command;

/// Two nodes, east and west (max_wal_size 4GB; `east_conf` lines on east too), hippos
/// federated and west joined to east; then east writes `rows` rows of its own.
pub fn east_owning(rows: u64, east_conf: &[&str]) -> Cluster {
    let conf = "max_wal_size = '4GB'";
    let mut east = NodeSpec::guc("east").with_conf(conf);
    for line in east_conf {
        east = east.with_conf(line);
    }
    let c = Cluster::start(&[east, NodeSpec::guc("west").with_conf(conf)]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in [east, west] {
        n.execute(HIPPOS);
    }
    join(west, east);
    east.execute(&format!(
        "INSERT INTO hippos (value) SELECT g FROM generate_series(1, {rows}) g"
    ));
    c
}

/// Runs pgbench; returns tps and the per-interval tps lines (with -P).
pub fn pgbench(
    node: &Node,
    script: &str,
    clients: u32,
    seconds: u32,
    progress: Option<u32>,
) -> (f64, Vec<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script.sql");
    std::fs::write(&file, script).unwrap();
    let mut cmd = Command::new(pg_bindir().join("pgbench"));
    cmd.args(["-n", "-M", "prepared", "-h", "127.0.0.1", "-U", "postgres"])
        .args([
            "-p",
            &node.port.to_string(),
            "-c",
            &clients.to_string(),
            "-j",
            &clients.to_string(),
        ])
        .args(["-T", &seconds.to_string(), "-f", file.to_str().unwrap()]);
    if let Some(p) = progress {
        cmd.args(["-P", &p.to_string()]);
    }
    cmd.arg("postgres");
    let out = cmd.output().expect("run pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench failed: {stdout}{stderr}");
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .expect("tps line");
    let intervals = stderr
        .lines()
        .filter(|l| l.starts_with("progress:"))
        .filter_map(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        .collect();
    (tps, intervals)
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Instructions (callgrind's `Ir`) that one backend of `node`'s server spends on `script`, run
/// in single-user mode (`postgres --single`: one process, no client, no other backend), so the
/// count is the server's own work and does not move with the machine's noise. The server must
/// be stopped. Needs valgrind.
pub fn instructions_single_user(node: &Node, script: &str) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.sql");
    std::fs::write(&input, script).unwrap();
    let out_file = dir.path().join("callgrind.out");
    crate::process::chown_to_server_user(dir.path());
    let postgres = pg_bindir().join("postgres");
    let data = node.data_dir();
    let argv = [
        "valgrind",
        "--tool=callgrind",
        &format!("--callgrind-out-file={}", out_file.display()),
        postgres.to_str().unwrap(),
        "--single",
        "-D",
        data.to_str().unwrap(),
        "postgres",
    ];
    let mut cmd = if crate::process::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).args(argv);
        c
    } else {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]);
        c
    };
    let out = cmd
        .env_remove("RUST_BACKTRACE")
        .current_dir("/tmp")
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .expect("run valgrind (apt-get install valgrind)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "postgres --single under callgrind failed: {stderr}"
    );
    stderr
        .lines()
        .find_map(|l| l.split("Collected : ").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in callgrind's output: {stderr}"))
}
