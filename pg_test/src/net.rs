//! Network namespaces for tests that cut the network between nodes.

use crate::{NetPlace, Node, NodeSpec};
use std::cell::RefCell;
use std::process::Command;

/// A private network for nodes that must be cut off from each other: a bridge in this
/// process's namespace (10.77.K.254/24) and, per node, a network namespace joined to it by a
/// veth pair (10.77.K.N). Only addresses it creates are used; dropped (after the nodes, so
/// declare it first), it deletes them. Needs root and iproute2.
pub struct Net {
    k: u8,
    links: RefCell<Vec<(String, String, String)>>, // (node, netns, root-side veth)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Net {
    pub fn new() -> Net {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        for _ in 0..240 {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let k = ((std::process::id() * 7 + n) % 240 + 1) as u8;
            let bridge = format!("fedbr{k}");
            if ip(&["link", "add", &bridge, "type", "bridge"]).is_err() {
                continue; // taken by a concurrent test: another subnet
            }
            ip(&["addr", "add", &format!("10.77.{k}.254/24"), "dev", &bridge])
                .expect("bridge address");
            ip(&["link", "set", &bridge, "up"]).expect("bridge up");
            return Net {
                k,
                links: RefCell::new(vec![]),
            };
        }
        panic!("no free 10.77.K.0/24 subnet for a test network");
    }

    /// Places a node on this network: its own namespace and address.
    pub fn place(&self, mut spec: NodeSpec) -> NodeSpec {
        let i = self.links.borrow().len() + 1;
        let (k, ns, veth) = (
            self.k,
            format!("fedns{}x{i}", self.k),
            format!("fedv{}x{i}", self.k),
        );
        let host = format!("10.77.{k}.{i}");
        ip(&["netns", "add", &ns]).expect("netns add");
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])
        .expect("veth");
        ip(&["link", "set", &veth, "master", &format!("fedbr{k}")]).expect("veth to bridge");
        ip(&["link", "set", &veth, "up"]).expect("veth up");
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{host}/24"),
            "dev",
            "eth0",
        ])
        .expect("address");
        ip(&["-n", &ns, "link", "set", "eth0", "up"]).expect("eth0 up");
        ip(&["-n", &ns, "link", "set", "lo", "up"]).expect("lo up");
        self.links
            .borrow_mut()
            .push((spec.name.clone(), ns.clone(), veth));
        spec.place = Some(NetPlace { netns: ns, host });
        spec
    }

    fn veth(&self, node: &Node) -> String {
        self.links
            .borrow()
            .iter()
            .find(|l| l.0 == node.name)
            .map(|l| l.2.clone())
            .expect("node on this Net")
    }

    /// Cuts `node` off from every other node (its link to the bridge goes down).
    pub fn cut(&self, node: &Node) {
        ip(&["link", "set", &self.veth(node), "down"]).expect("cut");
    }

    /// Restores `node`'s link.
    pub fn restore(&self, node: &Node) {
        ip(&["link", "set", &self.veth(node), "up"]).expect("restore");
    }
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (_, ns, _) in self.links.borrow().iter() {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &format!("fedbr{}", self.k)]);
    }
}
