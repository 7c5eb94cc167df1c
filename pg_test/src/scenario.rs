//! What the scenario tests share: the walkthrough's table, a cluster with it enabled on every
//! node, a join that waits until ready, and the convergence check.

use crate::checks::digest;
use crate::{wait_until, Cluster, Node, NodeSpec};
use std::time::Duration;

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
