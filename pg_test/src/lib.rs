//! pg_test: a multi-node PostgreSQL harness for pg_federation's scenario tests.
//!
//! Starts real PostgreSQL servers on this machine, one data directory, 127.0.0.1 port and node
//! name each, `wal_level = logical` and pg_federation installed; runs SQL on them; stops,
//! starts, restarts and kills them; waits for conditions with a timeout and a failure message
//! that carries the servers' logs. Every [`Node`] stops its server and removes its directory
//! when dropped, so a failing or panicking test leaves nothing behind.
//!
//! PostgreSQL refuses to run as root: when the tests run as root the servers run as the
//! unprivileged `postgres` operating-system user (through `runuser`).

use std::cell::RefCell;
use std::fmt;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use postgres;

/// How a node learns its name.
#[derive(Debug, Clone)]
pub enum Identity {
    /// `federation.node_name = '<name>'` in postgresql.conf.
    Guc(String),
    /// A Kubernetes downward-API labels file holding `<label>="<name>"`, at
    /// `federation.labels_path`; `federation.node_label` names the label.
    LabelsFile { label: String, value: String },
    /// Nothing configured: `federation.node_name()` must fail.
    Unconfigured,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The harness's name for the node (its directory and log lines); usually the node name.
    pub name: String,
    pub identity: Identity,
    /// Extra postgresql.conf lines.
    pub conf: Vec<String>,
    /// Run `CREATE EXTENSION pg_federation` once started.
    pub create_extension: bool,
    /// Run inside a network namespace of a [`Net`], at this address (None: 127.0.0.1).
    pub place: Option<NetPlace>,
}

/// Where a node lives on a [`Net`]: its namespace and address.
#[derive(Debug, Clone)]
pub struct NetPlace {
    pub netns: String,
    pub host: String,
}

impl NodeSpec {
    /// A node named by the GUC, with the extension created.
    pub fn guc(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            identity: Identity::Guc(name.into()),
            conf: vec![],
            create_extension: true,
            place: None,
        }
    }

    /// A node named by a labels file under the default label `pg-cluster`.
    pub fn labels(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            identity: Identity::LabelsFile {
                label: "pg-cluster".into(),
                value: name.into(),
            },
            conf: vec![],
            create_extension: true,
            place: None,
        }
    }

    pub fn with_conf(mut self, line: &str) -> NodeSpec {
        self.conf.push(line.to_string());
        self
    }

    pub fn without_extension(mut self) -> NodeSpec {
        self.create_extension = false;
        self
    }
}

/// An error PostgreSQL returned, with the fields tests check.
#[derive(Debug, Clone)]
pub struct SqlError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " DETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " HINT: {h}")?;
        }
        Ok(())
    }
}

impl From<postgres::Error> for SqlError {
    fn from(e: postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => SqlError {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
            },
            None => SqlError {
                code: "client".into(),
                message: e.to_string(),
                detail: None,
                hint: None,
            },
        }
    }
}

/// Rows as text, the way psql shows them; NULL is `None`.
pub type Rows = Vec<Vec<Option<String>>>;

/// One PostgreSQL server.
pub struct Node {
    pub name: String,
    pub port: u16,
    /// The address peers use: 127.0.0.1, or the node's address on its [`Net`].
    pub host: String,
    netns: Option<String>,
    root: PathBuf,
    client: RefCell<Option<postgres::Client>>,
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
            client: RefCell::new(None),
        };
        register_for_signals(&node.data_dir());
        node.initdb();
        node.write_identity(&spec.identity);
        let mut last_err = String::new();
        for _ in 0..5 {
            node.port = free_port();
            node.write_conf(&spec.conf);
            match node.try_start() {
                Ok(()) => {
                    last_err.clear();
                    break;
                }
                Err(e) => last_err = e, // most likely the port was taken meanwhile: try another
            }
        }
        if !last_err.is_empty() {
            panic!(
                "could not start node {}: {last_err}\n{}",
                node.name,
                node.log_tail(60)
            );
        }
        if spec.create_extension {
            node.execute("CREATE EXTENSION pg_federation");
        }
        node
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

    fn socket_dir(&self) -> PathBuf {
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

    fn initdb(&self) {
        let bindir = pg_bindir();
        run_as_server_user(
            &[
                bindir.join("initdb").to_str().unwrap(),
                "--no-sync",
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--locale=C",
                "-D",
                self.data_dir().to_str().unwrap(),
            ],
            "initdb",
        );
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
                pg_bindir().join("pg_ctl").to_str().unwrap(),
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
        self.client.borrow_mut().take();
        let out = run_server_cmd(&[
            pg_bindir().join("pg_ctl").to_str().unwrap(),
            "stop",
            "-w",
            "-t",
            "60",
            "-m",
            "fast",
            "-D",
            self.data_dir().to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "pg_ctl stop of {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn restart(&self) {
        self.stop();
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

    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, SqlError> {
        let mut slot = self.client.borrow_mut();
        let stale = slot.as_ref().is_none_or(|c| c.is_closed());
        if stale {
            *slot = Some(self.connect()?);
        }
        let result = f(slot.as_mut().unwrap());
        if let Err(e) = &result {
            if e.as_db_error().is_none() {
                slot.take(); // connection broken: reconnect next time
            }
        }
        result.map_err(SqlError::from)
    }

    /// A new connection, for tests that need several sessions. Waits (up to 30 s) while the
    /// server is still starting up (57P03).
    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.connect_once() {
                Err(e)
                    if Instant::now() < deadline && e.code().map(|c| c.code()) == Some("57P03") =>
                {
                    std::thread::sleep(Duration::from_millis(100)); // poll while it starts
                }
                other => return other,
            }
        }
    }

    fn connect_once(&self) -> Result<postgres::Client, postgres::Error> {
        let mut config = postgres::Config::new();
        match self.netns {
            Some(_) => config.host_path(self.socket_dir()),
            None => config.host("127.0.0.1"),
        };
        config
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .application_name("pg_test")
            .connect_timeout(Duration::from_secs(10))
            .connect(postgres::NoTls)
    }

    /// Runs one statement and returns the number of rows it affected (INSERT/UPDATE/DELETE/COPY).
    pub fn row_count(&self, sql: &str) -> u64 {
        self.with_client(|c| c.execute(sql, &[]))
            .unwrap_or_else(|e| panic!("on node {}: {sql}\n  failed: {e}", self.name))
    }

    /// `COPY ... FROM STDIN` with `data` as its input; returns the rows copied.
    pub fn copy_in(&self, sql: &str, data: &str) -> Result<u64, SqlError> {
        use std::io::Write;
        self.with_client(|c| {
            let mut w = c.copy_in(sql)?;
            w.write_all(data.as_bytes()).expect("write COPY data");
            w.finish()
        })
    }

    /// Runs statements on a new session and returns the NOTICE messages they raised.
    pub fn notices(&self, sql: &str) -> Vec<String> {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut client = postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .notice_callback(move |n| sink.lock().unwrap().push(n.message().to_string()))
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name));
        client.batch_execute(sql).unwrap_or_else(|e| {
            panic!(
                "on node {}: {sql}\n  failed: {}",
                self.name,
                SqlError::from(e)
            )
        });
        drop(client);
        let out = seen.lock().unwrap().clone();
        out
    }

    /// Runs statements (simple protocol; several may be separated by semicolons).
    pub fn try_execute(&self, sql: &str) -> Result<(), SqlError> {
        self.with_client(|c| c.batch_execute(sql))
    }

    pub fn execute(&self, sql: &str) {
        if let Err(e) = self.try_execute(sql) {
            panic!("on node {}: {sql}\n  failed: {e}", self.name);
        }
    }

    /// Rows of the last statement, as text.
    pub fn try_query(&self, sql: &str) -> Result<Rows, SqlError> {
        self.with_client(|c| {
            let msgs = c.simple_query(sql)?;
            let mut rows = Rows::new();
            for m in msgs {
                if let postgres::SimpleQueryMessage::Row(r) = m {
                    rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
                }
            }
            Ok(rows)
        })
    }

    pub fn query(&self, sql: &str) -> Rows {
        self.try_query(sql)
            .unwrap_or_else(|e| panic!("on node {}: {sql}\n  failed: {e}", self.name))
    }

    /// The first column of the first row (None for NULL or no row).
    pub fn scalar(&self, sql: &str) -> Option<String> {
        self.query(sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    }

    /// Runs a statement that must fail, and returns the error.
    pub fn expect_error(&self, sql: &str) -> SqlError {
        match self.try_execute(sql) {
            Ok(()) => panic!(
                "on node {}: {sql}\n  succeeded, but it must fail",
                self.name
            ),
            Err(e) => e,
        }
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
            let out = stop_immediately(&pg_bindir(), &self.data_dir());
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

// ---- process and file plumbing ----

fn pg_config() -> String {
    std::env::var("PG_CONFIG").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into())
}

/// The server's bin directory, from pg_config.
pub fn pg_bindir() -> PathBuf {
    let out = Command::new(pg_config())
        .arg("--bindir")
        .output()
        .expect("run pg_config");
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let share = Command::new(pg_config())
        .arg("--sharedir")
        .output()
        .expect("run pg_config");
    let control = PathBuf::from(String::from_utf8_lossy(&share.stdout).trim())
        .join("extension/pg_federation.control");
    assert!(
        control.exists(),
        "pg_federation is not installed in {} ({} is missing): run scripts/test.sh, or cargo pgrx install",
        pg_config(),
        control.display()
    );
    dir
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

extern "C" {
    fn geteuid() -> u32;
}

fn server_user_ids() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let uid = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id -u postgres");
    let gid = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .expect("id -g postgres");
    assert!(
        uid.status.success(),
        "running as root, but there is no 'postgres' user to run the servers as"
    );
    let parse = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    Some((parse(&uid), parse(&gid)))
}

fn chown_to_server_user(path: &Path) {
    if let Some((uid, gid)) = server_user_ids() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
    }
}

fn write_file_as_server_user(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chown_to_server_user(path);
}

fn run_server_cmd(argv: &[&str]) -> Output {
    run_server_cmd_in(None, argv)
}

/// Runs a server command as the server user, inside network namespace `netns` if given.
fn run_server_cmd_in(netns: Option<&str>, argv: &[&str]) -> Output {
    let mut cmd = if let Some(ns) = netns {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "runuser", "-u", "postgres", "--"])
            .args(argv);
        c
    } else if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).args(argv);
        c
    } else {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]);
        c
    };
    cmd.current_dir("/tmp")
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", argv[0]))
}

/// `pg_ctl stop -m immediate` of the server in `data_dir` (this harness's own servers only).
fn stop_immediately(bindir: &Path, data_dir: &Path) -> Output {
    run_server_cmd(&[
        bindir.join("pg_ctl").to_str().unwrap(),
        "stop",
        "-w",
        "-t",
        "30",
        "-m",
        "immediate",
        "-D",
        data_dir.to_str().unwrap(),
    ])
}

fn run_as_server_user(argv: &[&str], what: &str) {
    let out = run_server_cmd(argv);
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

static RUN_ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Data directories of servers this process started and has not stopped yet.
static LIVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn register_for_signals(data_dir: &Path) {
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| {
        // Interrupted (Ctrl-C, a CI timeout's SIGTERM): Drop does not run then, so stop every
        // server this process started, remove the run folder, and exit.
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals =
            signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).expect("signal handler");
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let dirs = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
                for d in dirs {
                    let _ = stop_immediately(&pg_bindir_unchecked(), &d);
                }
                if let Some(dir) = RUN_ROOT.get() {
                    if std::env::var_os("PG_TEST_KEEP").is_none() {
                        let _ = fs::remove_dir_all(dir);
                    }
                }
                eprintln!("pg_test: stopped its servers after signal {sig}");
                std::process::exit(128 + sig);
            }
        });
    });
    LIVE.lock().unwrap().push(data_dir.to_path_buf());
}

fn unregister_for_signals(data_dir: &Path) {
    if let Ok(mut l) = LIVE.lock() {
        l.retain(|d| d != data_dir);
    }
}

fn pg_bindir_unchecked() -> PathBuf {
    let out = Command::new(pg_config())
        .arg("--bindir")
        .output()
        .expect("run pg_config");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// One folder per test process, below $PG_TEST_ROOT or the system temp dir.
fn run_root() -> PathBuf {
    RUN_ROOT
        .get_or_init(|| {
            become_subreaper();
            let base = std::env::var_os("PG_TEST_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp/pg_federation_test"));
            fs::create_dir_all(&base).expect("create test root");
            // Folders left by earlier runs whose process is gone (killed before Drop could run).
            if let Ok(entries) = fs::read_dir(&base) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if let Some(pid) = name.strip_prefix('r').and_then(|p| p.parse::<u32>().ok()) {
                        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
                        {
                            let _ = fs::remove_dir_all(e.path());
                        }
                    }
                }
            }
            // Short path: unix socket paths are limited to 107 bytes.
            let dir = base.join(format!("r{}", std::process::id()));
            fs::create_dir_all(&dir).expect("create run directory");
            chown_to_server_user(&base);
            chown_to_server_user(&dir);
            // SAFETY: registers a plain extern "C" function.
            unsafe { atexit(remove_run_root) };
            dir
        })
        .clone()
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// A port nobody listens on now; the kernel hands out ports in turn, so parallel test runs
/// do not collide (and a start that loses a race retries with another).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = vec![];
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) {
                // pid (comm) state ppid ...: comm may contain spaces, so split after ')'.
                if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                    let ppid = rest
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse::<u32>().ok());
                    if ppid == Some(pid) {
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

/// Reaps those of `pids` that are zombie children of this process (they are when this
/// process is the subreaper, see [`become_subreaper`]); others are reaped by init.
fn reap(pids: &[u32]) {
    for &p in pids {
        // SAFETY: waitpid on a specific pid with WNOHANG; fails harmlessly if not our child.
        unsafe {
            let mut status = 0i32;
            waitpid(p as i32, &mut status, 1 /* WNOHANG */);
        }
    }
}

extern "C" fn remove_run_root() {
    // Every node removed its own folder when dropped; the run folder is empty unless
    // PG_TEST_KEEP kept them.
    if let Some(dir) = RUN_ROOT.get() {
        let _ = fs::remove_dir(dir);
    }
}

extern "C" {
    fn atexit(f: extern "C" fn()) -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
}

/// Makes this process the subreaper of the servers it starts, so that a killed postmaster is
/// reaped at once instead of lingering as a zombie until init gets to it.
fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER (36) with a flag argument.
    unsafe {
        prctl(36, 1, 0, 0, 0);
    }
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next() == Some("Z"))
        })
        .unwrap_or(false)
}

/// Installs pg_test's stand-in for pgnodemx (pg_test/fixtures/pgnodemx: `kdapi_setof_kv` only)
/// into the server's extension folder, unless a real pgnodemx is installed there. Returns
/// false when it cannot (not root and the folder is not writable).
pub fn install_pgnodemx_standin() -> bool {
    let share = Command::new(pg_config())
        .arg("--sharedir")
        .output()
        .expect("run pg_config");
    let ext = PathBuf::from(String::from_utf8_lossy(&share.stdout).trim()).join("extension");
    let control = ext.join("pgnodemx.control");
    if let Ok(text) = fs::read_to_string(&control) {
        if !text.contains("pg_test stand-in") {
            return true; // a real pgnodemx: use it
        }
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pgnodemx");
    for f in ["pgnodemx.control", "pgnodemx--0.0.sql"] {
        if fs::copy(fixtures.join(f), ext.join(f)).is_err() {
            return false;
        }
    }
    true
}

/// Checks shared by scenario tests.
pub mod checks {
    use super::Node;

    /// Everything a pg_federation call could change in `schema` and in the extension's
    /// catalog: relations and their kinds, triggers, catalog rows, publications and their
    /// tables, subscriptions. Two equal snapshots mean nothing changed.
    pub fn snapshot(node: &Node, schema: &str) -> String {
        let lit = schema.replace('\'', "''");
        let q = format!(
            "SELECT concat_ws(E'\\n',
               (SELECT string_agg(c.relname || ':' || c.relkind::text, ',' ORDER BY c.relname) FROM pg_class c
                  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{lit}'),
               (SELECT string_agg(c.relname || '.' || t.tgname, ',' ORDER BY 1) FROM pg_trigger t
                  JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = '{lit}'),
               (SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull::text
                                  || ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ',' ORDER BY c.relname, a.attnum)
                  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE n.nspname = '{lit}' AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')),
               (SELECT 'federated=' || count(*) FROM federation.federated_table),
               (SELECT 'partitions=' || count(*) FROM federation.partition),
               (SELECT 'nodes=' || count(*) FROM federation.node),
               (SELECT string_agg(pubname || ':' || coalesce(tablename, ''), ',' ORDER BY 1)
                  FROM pg_publication p LEFT JOIN pg_publication_tables t USING (pubname)),
               (SELECT string_agg(subname, ',' ORDER BY 1) FROM pg_subscription))"
        );
        node.scalar(&q).unwrap_or_default()
    }

    /// Row count and an order-independent digest of a table's rows (or a query's).
    pub fn digest(node: &Node, relation: &str) -> (i64, String) {
        let r = node.query(&format!(
            "SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '') FROM (SELECT md5(t::text) AS h FROM {relation} t) s"
        ));
        (
            r[0][0].as_deref().unwrap().parse().unwrap(),
            r[0][1].clone().unwrap_or_default(),
        )
    }
}

/// What the scenario tests share: the walkthrough's table, a cluster with it enabled on every
/// node, a join that waits until ready, and the convergence check.
pub mod scenario {
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
}

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
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, a, conninfo) = (stop.clone(), acked.clone(), node.client_conninfo());
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
            node: node.name.clone(),
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
