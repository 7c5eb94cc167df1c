//! What the benchmarks share: pgbench against a node, and the median of rounds.

use crate::{pg_bindir, Node};
use std::process::Command;

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
