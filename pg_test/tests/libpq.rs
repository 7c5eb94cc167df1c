//! One libpq per server process: every libpq mapped into any process of a node, the
//! walreceivers of its subscriptions included, is of the server's own major version (see
//! build.rs: with RTLD_GLOBAL, a libpq of another version brought by pg_federation would serve
//! calls of the server's walreceiver).

use pg_test::scenario;
use std::fs;

/// The major versions of the libpq files mapped into `pid` (libpq.so.5.NN, also a renamed
/// copy such as libpq-6197da7d.so.5.NN), with their paths.
fn mapped_libpqs(pid: u32) -> Vec<(u32, String)> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut out: Vec<(u32, String)> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|path| {
            path.rsplit('/')
                .next()
                .is_some_and(|f| f.starts_with("libpq"))
        })
        .filter_map(|path| {
            let major = path
                .rsplit_once(".so.5.")?
                .1
                .split('.')
                .next()?
                .parse()
                .ok()?;
            Some((major, path.to_string()))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_server_process_maps_only_the_servers_own_libpq() {
    let c = scenario::joined(&["east", "west"]);
    for n in c.all() {
        let major = n.major();
        let mut pids: Vec<u32> = n
            .query("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
            .into_iter()
            .filter_map(|r| r[0].as_deref().and_then(|p| p.parse().ok()))
            .collect();
        pids.push(n.postmaster_pid().expect("running"));
        // The apply workers of the node's subscriptions have loaded the walreceiver.
        let apply: Vec<u32> = n
            .query("SELECT pid FROM pg_stat_subscription WHERE pid IS NOT NULL")
            .into_iter()
            .filter_map(|r| r[0].as_deref().and_then(|p| p.parse().ok()))
            .collect();
        assert!(!apply.is_empty(), "no apply worker runs on {}", n.name);
        for pid in &apply {
            assert!(
                !mapped_libpqs(*pid).is_empty(),
                "apply worker {pid} on {} maps no libpq: the check would see nothing",
                n.name
            );
        }
        for pid in pids {
            for (m, path) in mapped_libpqs(pid) {
                assert_eq!(
                    m, major,
                    "process {pid} of node {} (PostgreSQL {major}) maps {path}",
                    n.name
                );
            }
        }
    }
}
