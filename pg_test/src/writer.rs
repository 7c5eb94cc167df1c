//! Load for the tests and benchmarks: a writer that records every acknowledged insert, the
//! check that none was lost, and a plain COPY between nodes (the benchmarks' baseline).

use crate::{wait_until, Node};
use std::time::Duration;

/// Pipes `COPY (select) TO STDOUT` on `from` into `COPY target FROM STDIN` on `to` (the
/// baseline of the copy benchmarks: what a hand-made transfer of the same rows costs).
pub fn copy_rows(from: &Node, select: &str, to: &Node, target: &str) {
    use std::io::{Read, Write};
    let mut src = from.connect().expect("connect to the source");
    let mut dst = to.connect().expect("connect to the target");
    let mut reader = src
        .copy_out(&format!("COPY ({select}) TO STDOUT"))
        .expect("COPY TO STDOUT");
    let mut writer = dst
        .copy_in(&format!("COPY {target} FROM STDIN"))
        .expect("COPY FROM STDIN");
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = reader.read(&mut buf).expect("read COPY data");
        if k == 0 {
            break;
        }
        writer.write_all(&buf[..k]).expect("write COPY data");
    }
    writer.finish().expect("finish COPY FROM STDIN");
}

/// A client that inserts into a table over and over, reconnecting after errors (a node that
/// crashes and comes back), and remembers every insert the server acknowledged: what must
/// never be lost.
pub struct Writer {
    pub node: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    handle: Option<std::thread::JoinHandle<Vec<i64>>>,
}

impl Writer {
    /// Inserts `INSERT INTO <table> (value) VALUES (n)` with n = 1, 2, ... one per transaction.
    pub fn start(node: &Node, table: &str) -> Writer {
        Self::start_at(&node.client_conninfo(), &node.name, table)
    }

    /// The same, through a connection string of its own (a node whose address names several
    /// servers, pg_test::autofailover): it follows the primary.
    pub fn start_at(conninfo: &str, node: &str, table: &str) -> Writer {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, a, conninfo) = (stop.clone(), acked.clone(), conninfo.to_string());
        let sql = format!("INSERT INTO {table} (value) VALUES ($1::int8)");
        let handle = std::thread::spawn(move || {
            let mut done = vec![];
            let mut client: Option<postgres::Client> = None;
            let mut n: i64 = 0;
            while !s.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = postgres::Client::connect(&conninfo, postgres::NoTls).ok();
                    if client.is_none() {
                        std::thread::sleep(Duration::from_millis(50)); // retry pacing while the node is down
                        continue;
                    }
                }
                n += 1;
                match client.as_mut().unwrap().execute(sql.as_str(), &[&n]) {
                    Ok(_) => {
                        done.push(n);
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => client = None, // not acknowledged: it may or may not exist
                }
            }
            done
        });
        Writer {
            node: node.to_string(),
            stop,
            acked,
            handle: Some(handle),
        }
    }

    /// Acknowledged inserts so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops and returns the acknowledged values.
    pub fn finish(mut self) -> Vec<i64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().unwrap().join().expect("writer thread")
    }

    /// Waits until `more` further inserts have been acknowledged.
    pub fn wait_for_more(&self, more: u64, nodes: &[&Node]) {
        let target = self.acked() + more;
        wait_until(
            &format!("{more} more acknowledged writes on {}", self.node),
            Duration::from_secs(120),
            nodes,
            || Ok(self.acked() >= target),
        );
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Every value in `acked` is present in `partition` on `node` (none lost).
pub fn assert_all_present(node: &Node, partition: &str, acked: &[i64]) {
    let list = acked
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let found = node
        .scalar(&format!("SELECT count(DISTINCT value) FROM {partition} WHERE value = ANY('{{{list}}}'::numeric[])"))
        .unwrap_or_default();
    assert_eq!(
        found,
        acked.len().to_string(),
        "{partition} on {}: acknowledged writes missing",
        node.name
    );
}
