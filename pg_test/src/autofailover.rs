//! One node of a federation made highly available by pg_auto_failover (Debian's
//! postgresql-15-auto-failover, `pg_autoctl`): a monitor and two data nodes on this machine,
//! each data node supervised by its own `pg_autoctl run`. The federation reaches the node at
//! an address naming both data nodes (libpq's multi-host form with
//! `target_session_attrs=read-write`, what `pg_autoctl show uri` gives applications), so the
//! address follows the primary through a failover or a switchover. Dropping it stops every
//! process it started and removes its folder.

use crate::process::{
    chown_to_server_user, free_port, pg_bindir, register_for_signals, run_as_server_user, run_root,
    run_server_cmd, stop_immediately, unique_suffix, unregister_for_signals,
    write_file_as_server_user,
};
use crate::wait_until;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A pg_auto_failover formation serving one federation node.
pub struct AutoFailover {
    /// The federation node's name.
    pub name: String,
    root: PathBuf,
    monitor_port: u16,
    /// The two data nodes' ports.
    pub ports: [u16; 2],
    runs: Vec<Child>,
}

const DATA: [&str; 2] = ["a", "b"];

impl AutoFailover {
    /// Whether pg_autoctl is installed for the PostgreSQL in use (Debian packages it for 15).
    pub fn available() -> bool {
        Command::new("pg_autoctl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
            && pg_bindir().starts_with("/usr/lib/postgresql/15")
    }

    /// A monitor, a primary and a secondary, the primary with pg_federation loaded and named
    /// `name`; waits until the monitor reports primary and secondary.
    pub fn start(name: &str) -> AutoFailover {
        let root = run_root().join(format!("{name}-autofailover-{}", unique_suffix()));
        std::fs::create_dir_all(&root).expect("create folder");
        chown_to_server_user(&root);
        let mut f = AutoFailover {
            name: name.to_string(),
            root,
            monitor_port: free_port(),
            ports: [free_port(), free_port()],
            runs: vec![],
        };
        for d in ["monitor", "a", "b"] {
            register_for_signals(&f.root.join(d));
        }
        let pg_ctl = pg_bindir().join("pg_ctl").display().to_string();
        let monitor = f.root.join("monitor").display().to_string();
        run_as_server_user(
            &[
                "pg_autoctl",
                "create",
                "monitor",
                "--pgdata",
                &monitor,
                "--pgport",
                &f.monitor_port.to_string(),
                "--hostname",
                "127.0.0.1",
                "--auth",
                "trust",
                "--no-ssl",
                "--pgctl",
                &pg_ctl,
            ],
            "pg_autoctl create monitor",
        );
        f.run("monitor");
        let monitor_uri = format!(
            "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable",
            f.monitor_port
        );
        for (i, d) in DATA.iter().enumerate() {
            let data = f.root.join(d).display().to_string();
            run_as_server_user(
                &[
                    "pg_autoctl",
                    "create",
                    "postgres",
                    "--pgdata",
                    &data,
                    "--pgport",
                    &f.ports[i].to_string(),
                    "--hostname",
                    "127.0.0.1",
                    "--monitor",
                    &monitor_uri,
                    "--auth",
                    "trust",
                    "--no-ssl",
                    "--name",
                    &format!("{name}_{d}"),
                    "--pgctl",
                    &pg_ctl,
                    "--dbname",
                    "postgres",
                ],
                &format!("pg_autoctl create postgres ({d})"),
            );
            if i == 0 {
                // Settings after the include line of postgresql.conf win over pg_autoctl's.
                let conf = f.root.join(d).join("postgresql.conf");
                let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
                text.push_str(&format!(
                    "\n# pg_federation (pg_test)\n\
                     shared_preload_libraries = 'pg_stat_statements,pg_federation'\n\
                     wal_level = logical\n\
                     shared_buffers = '128MB'\n\
                     max_replication_slots = 20\n\
                     max_wal_senders = 20\n\
                     max_logical_replication_workers = 16\n\
                     max_worker_processes = 32\n\
                     max_prepared_transactions = 10\n\
                     fsync = off\n\
                     wal_retrieve_retry_interval = '1s'\n\
                     federation.database = 'postgres'\n\
                     federation.node_name = '{name}'\n\
                     federation.node_conninfo = '{}'\n",
                    f.conninfo()
                ));
                write_file_as_server_user(&conf, &text);
            }
            f.run(d);
            f.wait_states(if i == 0 {
                &["single"]
            } else {
                &["primary", "secondary"]
            });
        }
        f
    }

    /// `pg_autoctl run` for `dir`, in the background.
    fn run(&mut self, dir: &str) {
        let data = self.root.join(dir);
        let log = std::fs::File::create(self.root.join(format!("{dir}.log"))).expect("log file");
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", "pg_autoctl", "run", "--pgdata"])
            .arg(&data)
            .current_dir("/tmp")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start pg_autoctl run");
        self.runs.push(child);
    }

    /// The federation node's address: both data nodes, the one accepting writes.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1,127.0.0.1 port={},{} dbname=postgres user=postgres target_session_attrs=read-write connect_timeout=3",
            self.ports[0], self.ports[1]
        )
    }

    /// A session on the primary, whichever data node it is.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.conninfo(), postgres::NoTls).unwrap_or_else(|e| {
            panic!(
                "connect to {}'s primary: {e}\n{}",
                self.name,
                self.log_tail()
            )
        })
    }

    /// The monitor's view: each data node's reported and goal state.
    pub fn states(&self) -> Vec<(String, String)> {
        let uri = format!(
            "host=127.0.0.1 port={} dbname=pg_auto_failover user=autoctl_node",
            self.monitor_port
        );
        let Ok(mut c) = postgres::Client::connect(&uri, postgres::NoTls) else {
            return vec![];
        };
        c.query(
            "SELECT reportedstate::text, goalstate::text FROM pgautofailover.node ORDER BY nodeid",
            &[],
        )
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
    }

    /// Waits until the monitor reports exactly `want` (reported = goal), in any order.
    pub fn wait_states(&self, want: &[&str]) {
        wait_until(
            &format!("{}'s pg_auto_failover nodes to be {want:?}", self.name),
            Duration::from_secs(180),
            &[],
            || {
                let mut now: Vec<String> = self
                    .states()
                    .into_iter()
                    .filter(|(r, g)| r == g)
                    .map(|(r, _)| r)
                    .collect();
                now.sort();
                let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
                want.sort();
                if now == want {
                    Ok(true)
                } else {
                    Err(format!("{:?}\n{}", self.states(), self.log_tail()))
                }
            },
        );
    }

    /// `pg_autoctl perform failover|switchover` (it waits until the monitor is done).
    pub fn perform(&self, what: &str) {
        let monitor = self.root.join("monitor").display().to_string();
        let out = run_server_cmd(&["pg_autoctl", "perform", what, "--pgdata", &monitor]);
        assert!(
            out.status.success(),
            "pg_autoctl perform {what}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// Which data node is the primary now (its port), from the server itself.
    pub fn primary_port(&self) -> u16 {
        let mut c = self.client();
        let port: String = c
            .query_one("SELECT current_setting('port')", &[])
            .expect("port")
            .get(0);
        port.parse().expect("a port")
    }

    /// The last lines of every pg_autoctl log.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for d in ["monitor", "a", "b"] {
            let text =
                std::fs::read_to_string(self.root.join(format!("{d}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("---- pg_autoctl {d} ----\n"));
            out.push_str(&lines[lines.len().saturating_sub(25)..].join("\n"));
            out.push('\n');
        }
        out
    }
}

impl Drop for AutoFailover {
    fn drop(&mut self) {
        // The supervisors first (they would start Postgres again), then their servers.
        for d in ["b", "a", "monitor"] {
            let data = self.root.join(d);
            let _ = run_server_cmd(&[
                "pg_autoctl",
                "stop",
                "--immediate",
                "--pgdata",
                data.to_str().unwrap(),
            ]);
        }
        for c in self.runs.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in ["b", "a", "monitor"] {
            let data = self.root.join(d);
            if data.join("postmaster.pid").exists() {
                let _ = stop_immediately(&pg_bindir(), &data);
            }
            unregister_for_signals(&data);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
