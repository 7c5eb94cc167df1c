//! What the scenario tests share: the walkthrough's table, a cluster with it enabled on every
//! node, a join that waits until ready, and the convergence check.

use crate::checks::digest;
use crate::{assert_all_present, wait_until, Cluster, Node, NodeSpec, Writer};
use std::time::{Duration, Instant};

pub const HIPPOS: &str = "CREATE TABLE hippos (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), value numeric, \
                      created_at timestamptz NOT NULL DEFAULT now()); SELECT federation.enable('hippos');";

pub fn nodes(names: &[&str]) -> Cluster {
    let c = Cluster::start(&names.iter().map(|n| NodeSpec::guc(n)).collect::<Vec<_>>());
    for n in &c.nodes {
        n.execute(HIPPOS);
    }
    c
}

/// [`nodes`], then every node after the first joins the first's federation, in order.
pub fn joined(names: &[&str]) -> Cluster {
    let c = nodes(names);
    for n in &c.nodes[1..] {
        join(n, &c.nodes[0]);
    }
    c
}

/// Joins `node` to the federation of `peer` and waits until it is ready.
pub fn join(node: &Node, peer: &Node) {
    node.execute(&format!("SELECT federation.join('{}')", peer.conninfo()));
    node.execute("SELECT federation.wait_ready('90 s')");
}

/// Every node holds the same rows in every partition.
pub fn assert_converged(c: &Cluster, table: &str) {
    assert_converged_among(&c.all(), table);
}

/// Every node of `nodes` holds the same rows as the owner in every owner's partition.
pub fn assert_converged_among(nodes: &[&Node], table: &str) {
    wait_until(
        &format!("every node to hold the same rows of {table}"),
        Duration::from_secs(120),
        nodes,
        || {
            for owner in nodes {
                let part = format!("{table}_{}", owner.name);
                let want = digest(owner, &part);
                for n in nodes {
                    let got = digest(n, &part);
                    if got != want {
                        return Err(format!(
                            "{part}: {} rows on {}, {} on owner {}",
                            got.0, n.name, want.0, owner.name
                        ));
                    }
                }
            }
            Ok(true)
        },
    );
}

/// verify() on `node` reports every copy as the owner or a match.
pub fn assert_verified(node: &Node) {
    let bad = node.query("SELECT partition, node, status, detail FROM federation.verify() WHERE status NOT IN ('owner', 'match')");
    assert!(bad.is_empty(), "verify on {}: {bad:?}", node.name);
}

/// Waits until health() on `node` says OK.
pub fn wait_health_ok(node: &Node, all: &[&Node]) {
    wait_until(
        &format!("{} to report OK", node.name),
        Duration::from_secs(120),
        all,
        || {
            let r = node.query("SELECT health, reason FROM federation.health()");
            if r[0][0].as_deref() == Some("OK") {
                Ok(true)
            } else {
                Err(format!("{:?}", r[0]))
            }
        },
    );
}

/// Stops the writers, then checks convergence, verify and every acknowledged write everywhere.
pub fn settle(c: &Cluster, writers: Vec<Writer>) -> Vec<(String, usize)> {
    let acked: Vec<(String, Vec<i64>)> = writers
        .into_iter()
        .map(|w| (w.node.clone(), w.finish()))
        .collect();
    let t = Instant::now();
    assert_converged(c, "hippos");
    let all = c.all();
    for n in &all {
        wait_health_ok(n, &all);
        assert_verified(n);
        for (owner, values) in &acked {
            assert_all_present(n, &format!("hippos_{owner}"), values);
        }
    }
    eprintln!(
        "converged and verified in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    acked.into_iter().map(|(n, v)| (n, v.len())).collect()
}
