//! Several nodes started and dropped together, and waiting for a condition across them.

use crate::{Node, NodeSpec};
use std::time::{Duration, Instant};

/// Several nodes started together; dropped together.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn start(specs: &[NodeSpec]) -> Cluster {
        Cluster {
            nodes: specs.iter().map(Node::start).collect(),
        }
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node named {name}"))
    }

    pub fn all(&self) -> Vec<&Node> {
        self.nodes.iter().collect()
    }
}

/// Polls `cond` until it returns `Ok(true)`, or panics after `timeout` with `what`, the last
/// error `cond` returned, and the tail of each node's log.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    nodes: &[&Node],
    mut cond: impl FnMut() -> Result<bool, String>,
) {
    let start = Instant::now();
    let mut last;
    let mut pause = Duration::from_millis(10);
    loop {
        match cond() {
            Ok(true) => return,
            Ok(false) => last = "condition was false".into(),
            Err(e) => last = e,
        }
        if start.elapsed() > timeout {
            let logs: String = nodes.iter().map(|n| n.log_tail(40)).collect();
            panic!(
                "timed out after {:?} waiting for {what}: {last}\n{logs}",
                timeout
            );
        }
        std::thread::sleep(pause); // poll interval, not synchronisation
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
