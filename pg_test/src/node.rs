//! One PostgreSQL server: initdb, configuration, start, stop, restart, reload, kill -9, its
//! log, and the files it reads. Dropping a [`Node`] stops its server and removes its folder.
//! (The SQL a test runs on it is in session.rs.)

use crate::process::{
    children_of, chown_to_server_user, free_port, is_zombie, pg_bindir, reap, register_for_signals,
    run_as_server_user, run_root, run_server_cmd, run_server_cmd_in, stop_immediately,
    unique_suffix, unregister_for_signals, write_file_as_server_user,
};
use crate::{wait_until, Identity, NodeSpec};
use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One PostgreSQL server.
pub struct Node {
    pub name: String,
    pub port: u16,
    /// The address peers use: 127.0.0.1, or the node's address on its [`Net`].
    pub host: String,
    pub(crate) netns: Option<String>,
    root: PathBuf,
    /// The bin directory of the PostgreSQL installation that runs it.
    bindir: PathBuf,
    pub(crate) client: RefCell<Option<postgres::Client>>,
}

impl Node {
    /// initdb, configure, start, and (unless told not to) create the extension.
    pub fn start(spec: &NodeSpec) -> Node {
        let base = run_root();
        let root = base.join(format!("{}-{}", spec.name, unique_suffix()));
        fs::create_dir_all(&root).expect("create node directory");
        chown_to_server_user(&root);
        let place = spec.place.clone();
        let mut node = Node {
            name: spec.name.clone(),
            port: 0,
            host: place
                .as_ref()
                .map(|p| p.host.clone())
                .unwrap_or_else(|| "127.0.0.1".into()),
            netns: place.map(|p| p.netns),
            root,
            bindir: spec.bindir.clone().unwrap_or_else(pg_bindir),
            client: RefCell::new(None),
        };
        register_for_signals(&node.data_dir());
        node.initdb();
        node.write_identity(&spec.identity);
        node.start_on_a_free_port(&spec.conf, None);
        if spec.create_extension {
            node.execute("CREATE EXTENSION pg_federation");
        }
        node
    }

    /// A hot standby of `primary` (pg_basebackup -R, streaming), started on a port of its own:
    /// what an operator's HA replica of a node is. Same name, same identity settings.
    pub fn standby_of(primary: &Node) -> Node {
        Self::standby(primary, None)
    }

    /// A streaming standby of `primary` that keeps the primary's failover slots
    /// (PostgreSQL 17+): on its own physical slot `slot` (made by pg_basebackup), with
    /// `sync_replication_slots` and `hot_standby_feedback` on; and the primary told to send
    /// no logical change before this standby has it (`synchronized_standby_slots`).
    pub fn slot_syncing_standby_of(primary: &Node, slot: &str) -> Node {
        let standby = Self::standby(primary, Some(slot));
        primary.execute(&format!(
            "ALTER SYSTEM SET synchronized_standby_slots = '{slot}'"
        ));
        primary.execute("SELECT pg_reload_conf()");
        standby
    }

    /// Waits until this standby has replayed `primary`'s WAL as of now.
    pub fn wait_replayed(&self, primary: &Node) {
        let target = primary.scalar("SELECT pg_current_wal_lsn()::text").unwrap();
        crate::wait_until(
            &format!(
                "the standby of {} to replay its WAL up to {target}",
                primary.name
            ),
            std::time::Duration::from_secs(120),
            &[primary, self],
            || {
                Ok(self
                    .scalar(&format!("SELECT pg_last_wal_replay_lsn() >= '{target}'"))
                    .as_deref()
                    == Some("t"))
            },
        );
    }

    fn standby(primary: &Node, slot: Option<&str>) -> Node {
        let root = run_root().join(format!("{}-standby-{}", primary.name, unique_suffix()));
        fs::create_dir_all(&root).expect("create standby directory");
        chown_to_server_user(&root);
        let mut node = Node {
            name: primary.name.clone(),
            port: 0,
            host: primary.host.clone(),
            netns: primary.netns.clone(),
            root,
            bindir: primary.bindir.clone(),
            client: RefCell::new(None),
        };
        register_for_signals(&node.data_dir());
        let data_dir = node.data_dir();
        let conninfo = primary.client_conninfo();
        let mut argv = vec![
            node.bindir
                .join("pg_basebackup")
                .to_str()
                .unwrap()
                .to_string(),
            "--no-sync".into(),
            "-R".into(),
            "-X".into(),
            "stream".into(),
            "-D".into(),
            data_dir.to_str().unwrap().to_string(),
            "-d".into(),
            conninfo,
        ];
        if let Some(slot) = slot {
            argv.extend(["-C".into(), "-S".into(), slot.to_string()]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        run_as_server_user(&argv, "pg_basebackup");
        for dir in [node.socket_dir(), node.files_dir()] {
            fs::create_dir_all(&dir).unwrap();
            chown_to_server_user(&dir);
        }
        let identity = fs::read_to_string(primary.root.join("identity.conf")).unwrap_or_default();
        write_file_as_server_user(&node.root.join("identity.conf"), &identity);
        // The primary's extra settings come along in its configuration; only the test's own
        // file is written again (this port, this socket).
        let extra = primary.extra_conf();
        let mut auto =
            fs::read_to_string(node.data_dir().join("postgresql.auto.conf")).unwrap_or_default();
        if slot.is_some() {
            // Slot synchronisation connects to a database of the primary (-R names it from
            // the -d connection string since PostgreSQL 17).
            assert!(
                auto.contains("dbname="),
                "primary_conninfo names a database: {auto}"
            );
            auto.push_str("sync_replication_slots = on\nhot_standby_feedback = on\n");
        }
        // pg_basebackup -R wrote primary_conninfo there; write_conf would empty it.
        node.start_on_a_free_port(&extra, Some(&auto));
        node
    }

    /// Writes the configuration for a free port and starts; another port if that one was
    /// taken meanwhile. `auto`: postgresql.auto.conf to keep (a standby's primary_conninfo).
    fn start_on_a_free_port(&mut self, extra: &[String], auto: Option<&str>) {
        let mut last_err = String::new();
        for _ in 0..5 {
            self.port = free_port();
            self.write_conf(extra);
            if let Some(auto) = auto {
                write_file_as_server_user(&self.data_dir().join("postgresql.auto.conf"), auto);
            }
            match self.try_start() {
                Ok(()) => return,
                Err(e) => last_err = e, // most likely the port was taken meanwhile: try another
            }
        }
        panic!(
            "could not start node {}: {last_err}\n{}",
            self.name,
            self.log_tail(60)
        );
    }

    /// The settings a test gave this node (NodeSpec::with_conf), as written in its file.
    fn extra_conf(&self) -> Vec<String> {
        fs::read_to_string(self.data_dir().join("pg_federation_test.conf"))
            .unwrap_or_default()
            .split("include = '")
            .nth(1)
            .and_then(|rest| rest.split_once('\n'))
            .map(|(_, tail)| tail.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Stops this server and starts it again on `port` (and the address the node's peers use
    /// with it): a standby taking over its failed primary's address, as an operator's Service
    /// does.
    /// This stopped standby's data directory as a restored base backup started without
    /// recovery: it starts as a primary on the same WAL timeline (no promotion).
    pub fn forget_standby(&self) {
        assert!(!self.is_running(), "stop {} first", self.name);
        let _ = fs::remove_file(self.data_dir().join("standby.signal"));
    }

    pub fn move_to_port(&mut self, port: u16) {
        if self.is_running() {
            self.stop();
        }
        let extra = self.extra_conf();
        let auto =
            fs::read_to_string(self.data_dir().join("postgresql.auto.conf")).unwrap_or_default();
        self.port = port;
        self.write_conf(&extra);
        write_file_as_server_user(&self.data_dir().join("postgresql.auto.conf"), &auto);
        self.start_again();
    }

    /// This old primary, stopped cleanly before its standby `primary` was promoted (a
    /// switchover: `primary` has all of its WAL), started as `primary`'s streaming standby on
    /// a port of its own without a rewind (standby.signal, primary_conninfo). Its replication
    /// slots stay as they were.
    pub fn follow_as_standby_of(&mut self, primary: &Node) {
        if self.is_running() {
            self.stop();
        }
        self.client.borrow_mut().take();
        let extra = self.extra_conf();
        let data = self.data_dir();
        write_file_as_server_user(&data.join("standby.signal"), "");
        let mut auto = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default();
        auto.push_str(&format!(
            "primary_conninfo = '{}'\n",
            primary.client_conninfo().replace('\'', "''")
        ));
        self.start_on_a_free_port(&extra, Some(&auto));
    }

    /// This old primary, stopped or killed after its standby `primary` was promoted, rewound
    /// onto `primary`'s history (`pg_rewind -R`, which runs crash recovery first when it was
    /// killed) and started as `primary`'s streaming standby on a port of its own: how an
    /// operator brings a failed primary back as a replica. pg_rewind needs `wal_log_hints`
    /// (or data checksums) and full-page writes on both servers; it empties `pg_replslot`.
    pub fn rewind_as_standby_of(&mut self, primary: &Node) {
        if self.is_running() {
            self.stop();
        }
        self.client.borrow_mut().take();
        // pg_rewind copies the configuration files of `primary`: this node's own settings
        // are written again below.
        let extra = self.extra_conf();
        let data = self.data_dir();
        let rewind = self.bindir.join("pg_rewind");
        let source = primary.client_conninfo();
        run_as_server_user(
            &[
                rewind.to_str().unwrap(),
                "--no-sync",
                "--write-recovery-conf",
                "--target-pgdata",
                data.to_str().unwrap(),
                "--source-server",
                &source,
            ],
            "pg_rewind",
        );
        let auto = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default();
        self.start_on_a_free_port(&extra, Some(&auto));
    }

    /// Promotes this hot standby (`pg_ctl promote`, waiting until it accepts writes).
    pub fn promote(&self) {
        self.pg_ctl(&["promote"]);
    }

    /// `pg_ctl <args> -w -t 60 -D <data>`, which must succeed; this test's session ends first.
    fn pg_ctl(&self, args: &[&str]) {
        self.client.borrow_mut().take();
        let data = self.data_dir();
        let mut argv = vec![self.bindir.join("pg_ctl").to_str().unwrap().to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv.extend(["-w", "-t", "60", "-D", data.to_str().unwrap()].map(String::from));
        let out = run_server_cmd(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "pg_ctl {} of {} failed: {}",
            args[0],
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// Folder for files the node reads (labels file and the like), owned by the server user.
    pub fn files_dir(&self) -> PathBuf {
        self.root.join("files")
    }

    pub(crate) fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    /// A libpq connection string for this node, as a peer on this machine would use it.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} dbname=postgres user=postgres",
            self.host, self.port
        )
    }

    /// How this test process connects: the node's address, or its Unix socket when it lives
    /// on a [`Net`] (so that cutting its link cuts the peers, not the test's own sessions).
    pub fn client_conninfo(&self) -> String {
        match self.netns {
            Some(_) => format!(
                "host={} port={} dbname=postgres user=postgres",
                self.socket_dir().display(),
                self.port
            ),
            None => self.conninfo(),
        }
    }

    /// One parameter of [`Node::client_conninfo`] (host, port, ...), for tools that take
    /// them apart (pg_dump, psql, sqitch's libpq environment, SQLAlchemy URLs).
    pub fn client_param(&self, key: &str) -> String {
        self.client_conninfo()
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .to_string()
    }

    fn initdb(&self) {
        self.initdb_with(&[]);
    }

    fn initdb_with(&self, extra: &[&str]) {
        let initdb = self.bindir.join("initdb");
        let data = self.data_dir();
        let mut argv = vec![
            initdb.to_str().unwrap(),
            "--no-sync",
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--locale=C",
            "-D",
            data.to_str().unwrap(),
        ];
        argv.extend_from_slice(extra);
        run_as_server_user(&argv, "initdb");
        fs::create_dir_all(self.socket_dir()).unwrap();
        fs::create_dir_all(self.files_dir()).unwrap();
        chown_to_server_user(&self.socket_dir());
        chown_to_server_user(&self.files_dir());
    }

    fn write_identity(&self, identity: &Identity) {
        let mut lines = vec![];
        let labels = self.files_dir().join("labels");
        match identity {
            Identity::Guc(name) => {
                lines.push(format!("federation.node_name = '{name}'"));
                lines.push(format!("federation.labels_path = '{}'", labels.display()));
            }
            Identity::LabelsFile { label, value } => {
                write_file_as_server_user(
                    &labels,
                    &format!("app=\"pg_federation\"\n{label}=\"{value}\"\n"),
                );
                lines.push(format!("federation.labels_path = '{}'", labels.display()));
                lines.push(format!("federation.node_label = '{label}'"));
            }
            Identity::Unconfigured => {
                lines.push(format!("federation.labels_path = '{}'", labels.display()));
            }
        }
        write_file_as_server_user(&self.root.join("identity.conf"), &(lines.join("\n") + "\n"));
    }

    fn write_conf(&self, extra: &[String]) {
        let conf = format!(
            "# written by pg_test\n\
             listen_addresses = '{host}'\n\
             port = {port}\n\
             unix_socket_directories = '{sock}'\n\
             wal_level = logical\n\
             max_replication_slots = 20\n\
             max_wal_senders = 20\n\
             max_logical_replication_workers = 16\n\
             max_prepared_transactions = 10\n\
             max_worker_processes = 32\n\
             shared_preload_libraries = 'pg_federation'\n\
             fsync = off\n\
             full_page_writes = off\n\
             log_line_prefix = '%m [%p] %q%a '\n\
             wal_retrieve_retry_interval = '1s'\n\
             federation.database = 'postgres'\n\
             federation.node_conninfo = 'host={host} port={port} dbname=postgres user=postgres'\n\
             {net}\n\
             include = '{identity}'\n\
             {extra}\n",
            port = self.port,
            host = self.host,
            // On a Net a cut link must be noticed: replication's own timeouts, not a minute.
            net = if self.netns.is_some() {
                "wal_sender_timeout = '5s'\nwal_receiver_timeout = '5s'"
            } else {
                ""
            },
            sock = self.socket_dir().display(),
            identity = self.root.join("identity.conf").display(),
            extra = extra.join("\n"),
        );
        write_file_as_server_user(&self.data_dir().join("postgresql.auto.conf"), "");
        write_file_as_server_user(&self.data_dir().join("pg_federation_test.conf"), &conf);
        let main = self.data_dir().join("postgresql.conf");
        let text = fs::read_to_string(&main).unwrap();
        if !text.contains("include = 'pg_federation_test.conf'") {
            write_file_as_server_user(&main, &(text + "\ninclude = 'pg_federation_test.conf'\n"));
        }
    }

    fn try_start(&self) -> Result<(), String> {
        if self.netns.is_some()
            && !fs::read_to_string(self.data_dir().join("pg_hba.conf"))
                .unwrap_or_default()
                .contains("10.77.0.0/16")
        {
            // Peers on the Net connect from their own addresses.
            self.prepend_hba(
                "host all all 10.77.0.0/16 trust\nhost replication all 10.77.0.0/16 trust",
            );
        }
        let out = run_server_cmd_in(
            self.netns.as_deref(),
            &[
                self.bindir.join("pg_ctl").to_str().unwrap(),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                self.data_dir().to_str().unwrap(),
                "-l",
                self.log_path().to_str().unwrap(),
            ],
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The major version of the PostgreSQL installation that runs this node.
    pub fn installed_major(&self) -> u32 {
        let out = Command::new(self.bindir.join("postgres"))
            .arg("--version")
            .output()
            .expect("run postgres --version");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|w| w.split('.').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no version in {text:?}"))
    }

    /// A new PostgreSQL major for this node with pg_upgrade (copy mode), as an operator does:
    /// the new installation's initdb makes a new cluster (checksums as the old one has them),
    /// this node's settings are written into it, pg_upgrade moves the old cluster into it, and
    /// the node starts again at its port on the new installation. The old data directory stays
    /// beside it (removed with the node). pg_upgrade's own report on failure.
    pub fn pg_upgrade(&mut self, new_bindir: &Path) -> Result<(), String> {
        if self.is_running() {
            self.stop();
        }
        let old_data = self.root.join("data.old");
        fs::rename(self.data_dir(), &old_data).map_err(|e| e.to_string())?;
        unregister_for_signals(&self.data_dir());
        let old_bindir = std::mem::replace(&mut self.bindir, new_bindir.to_path_buf());
        let control = Command::new(old_bindir.join("pg_controldata"))
            .arg(&old_data)
            .output()
            .map_err(|e| e.to_string())?;
        let checksums = String::from_utf8_lossy(&control.stdout)
            .lines()
            .find(|l| l.starts_with("Data page checksum version"))
            .and_then(|l| l.split(':').nth(1))
            .is_some_and(|v| v.trim() != "0");
        self.initdb_with(&[if checksums {
            "--data-checksums"
        } else {
            "--no-data-checksums"
        }]);
        for file in [
            "pg_federation_test.conf",
            "postgresql.auto.conf",
            "pg_hba.conf",
        ] {
            let text = fs::read_to_string(old_data.join(file)).map_err(|e| e.to_string())?;
            write_file_as_server_user(&self.data_dir().join(file), &text);
        }
        let main = self.data_dir().join("postgresql.conf");
        let text = fs::read_to_string(&main).unwrap();
        write_file_as_server_user(&main, &(text + "\ninclude = 'pg_federation_test.conf'\n"));
        let (old_port, new_port) = (free_port().to_string(), free_port().to_string());
        let new_data = self.data_dir();
        let out = run_server_cmd(&[
            new_bindir.join("pg_upgrade").to_str().unwrap(),
            "--no-sync",
            "-U",
            "postgres",
            "-b",
            old_bindir.to_str().unwrap(),
            "-B",
            new_bindir.to_str().unwrap(),
            "-d",
            old_data.to_str().unwrap(),
            "-D",
            new_data.to_str().unwrap(),
            "-p",
            &old_port,
            "-P",
            &new_port,
        ]);
        if !out.status.success() {
            let mut logs = String::new();
            for entry in walk_files(&new_data.join("pg_upgrade_output.d")) {
                if entry.extension().is_some_and(|e| e == "log" || e == "txt") {
                    let text = fs::read_to_string(&entry).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    logs += &format!(
                        "\n--- {} ---\n{}",
                        entry.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
            return Err(format!(
                "pg_upgrade failed: {}{}{logs}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        register_for_signals(&self.data_dir());
        self.try_start()
    }

    /// Starts a stopped node (same port, same data).
    pub fn start_again(&self) {
        if let Err(e) = self.try_start() {
            panic!(
                "could not restart node {}: {e}\n{}",
                self.name,
                self.log_tail(60)
            );
        }
    }

    /// Clean shutdown (`pg_ctl stop -m fast`).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast"]);
    }

    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Stops the node cleanly and starts it again, same data and port, on the binaries of
    /// `bindir`: a package upgrade of the same PostgreSQL major (a new pg_federation library).
    pub fn restart_on(&mut self, bindir: &Path) {
        self.client.borrow_mut().take();
        self.stop();
        self.bindir = bindir.to_path_buf();
        self.start_again();
    }

    /// `SELECT pg_reload_conf()`, then waits until this session has processed the reload.
    pub fn reload(&self) {
        let before = self.scalar("SELECT pg_conf_load_time()::text");
        self.execute("SELECT pg_reload_conf()");
        wait_until(
            &format!("node {} to reload its configuration", self.name),
            Duration::from_secs(30),
            &[self],
            || Ok(self.scalar("SELECT pg_conf_load_time()::text") != before),
        );
    }

    /// Kills the postmaster and every process it started with SIGKILL, as an OOM kill or a
    /// lost pod would, and waits until they are gone.
    pub fn kill9(&self) {
        self.client.borrow_mut().take();
        let Some(pid) = self.postmaster_pid() else {
            panic!("node {} is not running", self.name)
        };
        // Frozen first, the postmaster starts no process between the listing of its children
        // and the kill (pg_federation's launcher starts the worker at any moment).
        let _ = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .output();
        let mut victims = children_of(pid);
        victims.push(pid);
        for p in &victims {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).output();
        }
        wait_until(
            &format!("node {}'s processes to die", self.name),
            Duration::from_secs(30),
            &[],
            || {
                // Gone for good: a zombie still holds its pid, and a new postmaster refuses to
                // start while the old pid in postmaster.pid exists.
                reap(&victims);
                Ok(victims
                    .iter()
                    .all(|p| !Path::new(&format!("/proc/{p}")).exists()))
            },
        );
    }

    /// The postmaster's pid while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        // A killed postmaster may linger as a zombie where nothing reaps orphans.
        (Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)).then_some(pid)
    }

    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no log: {e})"));
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "---- log of node {} ({}) ----\n{}\n",
            self.name,
            self.log_path().display(),
            all[from..].join("\n")
        )
    }

    /// Replaces this node's labels file (for identity tests).
    pub fn write_labels(&self, text: &str) {
        write_file_as_server_user(&self.files_dir().join("labels"), text);
    }

    /// Writes `name` in the node's files folder, owned by the server user, with `mode`
    /// (as a Kubernetes Secret volume mounts a key); returns its path.
    pub fn write_file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.files_dir().join(name);
        write_file_as_server_user(&path, text);
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// Puts a line at the top of pg_hba.conf (so it wins over the trust lines initdb wrote);
    /// takes effect on reload.
    pub fn prepend_hba(&self, line: &str) {
        let path = self.data_dir().join("pg_hba.conf");
        let text = fs::read_to_string(&path).unwrap_or_default();
        write_file_as_server_user(&path, &format!("{line}\n{text}"));
    }

    /// Appends a line to the node's configuration; takes effect on reload (or restart).
    pub fn append_conf(&self, line: &str) {
        let path = self.data_dir().join("pg_federation_test.conf");
        let text = fs::read_to_string(&path).unwrap_or_default();
        write_file_as_server_user(&path, &format!("{text}{line}\n"));
    }

    /// Replaces this node's identity settings; takes effect on reload.
    pub fn set_identity(&self, identity: &Identity) {
        self.write_identity(identity);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        unregister_for_signals(&self.data_dir());
        self.client.get_mut().take();
        if self.postmaster_pid().is_some() {
            let out = stop_immediately(&self.bindir, &self.data_dir());
            if !out.status.success() {
                if let Some(pid) = self.postmaster_pid() {
                    let mut victims = children_of(pid);
                    victims.push(pid);
                    for p in victims {
                        let _ = Command::new("kill").args(["-9", &p.to_string()]).output();
                    }
                }
            }
        }
        if std::env::var_os("PG_TEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// Every file under `dir`, recursively (none if it does not exist).
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
