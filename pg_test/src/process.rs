//! Process and file plumbing: pg_config, running server commands as the `postgres` user
//! (and inside a network namespace), the run folder, ports, signals, reaping killed servers.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn pg_config() -> String {
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

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

extern "C" {
    fn geteuid() -> u32;
}

pub(crate) fn server_user_ids() -> Option<(u32, u32)> {
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

pub(crate) fn chown_to_server_user(path: &Path) {
    if let Some((uid, gid)) = server_user_ids() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
    }
}

pub(crate) fn write_file_as_server_user(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chown_to_server_user(path);
}

pub(crate) fn run_server_cmd(argv: &[&str]) -> Output {
    run_server_cmd_in(None, argv)
}

/// Runs a server command as the server user, inside network namespace `netns` if given.
pub(crate) fn run_server_cmd_in(netns: Option<&str>, argv: &[&str]) -> Output {
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
pub(crate) fn stop_immediately(bindir: &Path, data_dir: &Path) -> Output {
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

pub(crate) fn run_as_server_user(argv: &[&str], what: &str) {
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

pub(crate) fn register_for_signals(data_dir: &Path) {
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

pub(crate) fn unregister_for_signals(data_dir: &Path) {
    if let Ok(mut l) = LIVE.lock() {
        l.retain(|d| d != data_dir);
    }
}

pub(crate) fn pg_bindir_unchecked() -> PathBuf {
    let out = Command::new(pg_config())
        .arg("--bindir")
        .output()
        .expect("run pg_config");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// One folder per test process, below $PG_TEST_ROOT or the system temp dir.
pub(crate) fn run_root() -> PathBuf {
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

pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// A port nobody listens on now; the kernel hands out ports in turn, so parallel test runs
/// do not collide (and a start that loses a race retries with another).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn children_of(pid: u32) -> Vec<u32> {
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
pub(crate) fn reap(pids: &[u32]) {
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
pub(crate) fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER (36) with a flag argument.
    unsafe {
        prctl(36, 1, 0, 0, 0);
    }
}

pub(crate) fn is_zombie(pid: u32) -> bool {
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

/// Installs the install script of a released pg_federation version (kept in
/// pg_test/fixtures/releases as that release generated it) into the server's extension
/// folder, so that `CREATE EXTENSION pg_federation VERSION '<version>'` works with the library
/// built now: the upgrade tests start there. Panics when it cannot.
pub fn install_release_script(version: &str) {
    let share = Command::new(pg_config())
        .arg("--sharedir")
        .output()
        .expect("run pg_config");
    let file = format!("pg_federation--{version}.sql");
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/releases")
        .join(&file);
    let to = PathBuf::from(String::from_utf8_lossy(&share.stdout).trim())
        .join("extension")
        .join(&file);
    fs::copy(&from, &to)
        .unwrap_or_else(|e| panic!("install {} as {}: {e}", from.display(), to.display()));
}

/// The Python of scripts/setup.sh's `python_tools` venv (SQLAlchemy, Django, Alembic, the
/// Kubernetes validators, hadolint): `$PG_FEDERATION_PYTHON`, or where setup.sh puts it.
pub fn python_tools() -> String {
    let p = std::env::var("PG_FEDERATION_PYTHON")
        .unwrap_or_else(|_| "/opt/pg_federation/pytools/venv/bin/python".into());
    assert!(
        Path::new(&p).exists(),
        "no Python with the test tools at {p}: run scripts/test.sh, or `source scripts/setup.sh; python_tools`"
    );
    p
}
