//! Every setting of pg_federation, registered in one place from `_PG_init`, read through
//! the typed getters at the end of this file. Each default is written once, here.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::{CStr, CString};

/// `federation.node_name`: this server's node name. Highest-priority source of identity.
static NODE_NAME: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `federation.labels_path`: the Kubernetes downward-API labels file.
/// Empty: the places the operators use (identity::KNOWN_LABELS_PATHS).
static LABELS_PATH: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `federation.node_label`: which label of that file holds the node name. Empty: the
/// operators' cluster labels (identity::KNOWN_NODE_LABELS).
static NODE_LABEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `federation.node_conninfo`: how the other members reach this node.
static NODE_CONNINFO: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `federation.passfile`: a libpq password file that may be group-readable (passfile.rs).
static PASSFILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `federation.database`: the database pg_federation's background worker connects to.
static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(DEFAULT_DATABASE));
const DEFAULT_DATABASE: &CStr = c"postgres";

/// `federation.unsafe_ddl`: lets a superuser run, on this node only, DDL the guard refuses.
static UNSAFE_DDL: GucSetting<bool> = GucSetting::<bool>::new(false);

/// `federation.failover_slots`: whether the slots this node's members stream from are made
/// as failover slots (PostgreSQL 17+), for a node whose standby keeps them (read by the
/// members through SQL when they make a slot here: replication::failover_slots).
static FAILOVER_SLOTS: GucSetting<bool> = GucSetting::<bool>::new(false);

/// `federation.ddl_timeout`: how long a schema change on a federated table waits for locks
/// on the members and for every member to catch up before it gives up (seconds).
static DDL_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(30);

/// `federation.ddl_origin`: set by the node that runs a schema change on its sessions to the
/// members; tells the member's DDL hook that the statement is a replica of that node's.
static DDL_ORIGIN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Health thresholds of federation.status(): replication lag as time (seconds) and WAL kept
/// for a peer or not yet confirmed by it (megabytes).
static LAG_WARNING: GucSetting<i32> = GucSetting::<i32>::new(60);
static LAG_CRITICAL: GucSetting<i32> = GucSetting::<i32>::new(600);
static WAL_WARNING: GucSetting<i32> = GucSetting::<i32>::new(1024);
static WAL_CRITICAL: GucSetting<i32> = GucSetting::<i32>::new(8192);

pub fn init() {
    thresholds();
    // PGC_SIGHUP: only postgresql.conf or ALTER SYSTEM (both superuser-only) can set these,
    // and a reload applies a change. A session-level SET is refused, so no session can
    // pretend to be another node and write into its partition.
    GucRegistry::define_string_guc(
        c"federation.node_name",
        c"This server's node name in the federation.",
        c"Names this node's partitions, publication and replication slots. Lowercase letters, \
          digits, '_' and '-', starting with a letter, at most 24 bytes. When empty, the name \
          comes from the Kubernetes labels file (federation.labels_path) or from pgnodemx.",
        &NODE_NAME,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"federation.labels_path",
        c"Kubernetes downward-API labels file to take the node name from.",
        c"Lines of key=\"value\", as the kubelet writes them. Used when federation.node_name \
          is empty. Empty: the first that exists of /etc/podinfo/labels (a downward-API volume), \
          /etc/database-containerinfo/labels (Crunchy PGO) and /projected/labels \
          (CloudNativePG's projected volume).",
        &LABELS_PATH,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"federation.node_label",
        c"Label in the labels file whose value is the node name.",
        c"Empty: the first present of pg-cluster (the original recipe), \
          postgres-operator.crunchydata.com/cluster (Crunchy PGO) and cnpg.io/cluster \
          (CloudNativePG).",
        &NODE_LABEL,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"federation.node_conninfo",
        c"Connection string other members use to reach this node.",
        c"As the peers see this node (on Kubernetes, a Service name). The role must be a \
          superuser on PostgreSQL 15. Prefer a password file to a password in the string.",
        &NODE_CONNINFO,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"federation.passfile",
        c"Password file (libpq format) for connections to the members, e.g. a Kubernetes Secret.",
        c"May be readable by its group (a Secret mounted with fsGroup, mode 0640), which libpq \
          refuses: pg_federation keeps a private copy in the data directory (mode 0600) and points \
          PGPASSFILE of every server process at it; a change of the file is picked up within a \
          second. Set it in postgresql.conf before the server starts.",
        &PASSFILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"federation.database",
        c"Database in which pg_federation's background worker runs.",
        c"The database where CREATE EXTENSION pg_federation was run. The worker reads it when \
          it starts: a change takes effect at the next server restart. (Not a postmaster-level \
          setting, so that loading pg_federation without shared_preload_libraries still works.)",
        &DATABASE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"federation.failover_slots",
        c"Makes the slots the members stream from on this node failover slots (PostgreSQL 17+).",
        c"Turn it on where this node's standby keeps them (sync_replication_slots = on there) and this \
          node sends no change before that standby has it (synchronized_standby_slots here): a \
          standby promoted in its place then serves the members with no repair. Without \
          synchronized_standby_slots a member can be ahead of the promoted standby and miss rows \
          (docs/runbook.md, section 13). Applies to slots made from then on.",
        &FAILOVER_SLOTS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"federation.unsafe_ddl",
        c"Lets a superuser run DDL that pg_federation refuses (DROP of a federated table, ...), on this node only.",
        c"For emergencies (docs/operations.md, \"DDL pg_federation refuses\"): the statement runs here and nowhere \
          else, so the nodes' tables then differ. Superuser-only; set it for one session or transaction.",
        &UNSAFE_DDL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"federation.ddl_timeout",
        c"How long a schema change of a federated table waits for the members' locks and for every member to catch up.",
        c"docs/migrations.md: a schema change locks the table on every member and waits until every member has applied \
          every other node's earlier rows of it; past this time it is refused and nothing changes anywhere.",
        &DDL_TIMEOUT,
        1,
        3600,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"federation.ddl_origin",
        c"Internal: the node whose schema change this session applies.",
        c"Set by pg_federation on its own connections to the members; not for users.",
        &DDL_ORIGIN,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL,
    );
    reserve_prefix(c"federation");
}

/// Thresholds of federation.status() and federation.health(); any role may set them for its
/// own session (a monitoring probe can be stricter than the server's defaults).
fn thresholds() {
    let defs: [(&'static CStr, &'static CStr, &'static GucSetting<i32>, GucFlags); 4] = [
        (c"federation.lag_warning", c"Replication lag (time) at which federation.status() reports WARNING.", &LAG_WARNING, GucFlags::UNIT_S),
        (c"federation.lag_critical", c"Replication lag (time) at which federation.status() reports CRITICAL.", &LAG_CRITICAL, GucFlags::UNIT_S),
        (
            c"federation.retained_wal_warning",
            c"WAL kept for a peer, or sent but not confirmed, at which federation.status() reports WARNING.",
            &WAL_WARNING,
            GucFlags::UNIT_MB,
        ),
        (
            c"federation.retained_wal_critical",
            c"WAL kept for a peer, or sent but not confirmed, at which federation.status() reports CRITICAL.",
            &WAL_CRITICAL,
            GucFlags::UNIT_MB,
        ),
    ];
    for (name, short, setting, flags) in defs {
        GucRegistry::define_int_guc(
            name,
            short,
            c"See docs/operations.md.",
            setting,
            1,
            i32::MAX,
            GucContext::Userset,
            flags,
        );
    }
}

#[cfg(any(feature = "pg15", feature = "pg16", feature = "pg17", feature = "pg18"))]
fn reserve_prefix(prefix: &CStr) {
    // A typo such as federation.nodename in postgresql.conf now draws a WARNING.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(prefix.as_ptr()) }
}

#[cfg(any(feature = "pg13", feature = "pg14"))]
fn reserve_prefix(prefix: &CStr) {
    unsafe { pgrx::pg_sys::EmitWarningsOnPlaceholders(prefix.as_ptr()) }
}

/// A string setting's value, `None` when unset or empty.
fn get_str(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .map(|c| c.to_string_lossy().trim().to_string())
        .filter(|s| !s.is_empty())
}

fn or_default(value: Option<String>, default: &CStr) -> String {
    value.unwrap_or_else(|| default.to_string_lossy().into_owned())
}

/// `federation.node_name`, when set.
pub fn node_name() -> Option<String> {
    get_str(&NODE_NAME)
}

/// `federation.labels_path`, when set.
pub fn labels_path() -> Option<String> {
    get_str(&LABELS_PATH)
}

/// `federation.node_label`, when set.
pub fn node_label() -> Option<String> {
    get_str(&NODE_LABEL)
}

/// `federation.passfile`, when set.
pub fn passfile() -> Option<String> {
    get_str(&PASSFILE)
}

/// `federation.node_conninfo`, when set.
pub fn node_conninfo() -> Option<String> {
    get_str(&NODE_CONNINFO)
}

/// `federation.unsafe_ddl`.
pub fn unsafe_ddl() -> bool {
    UNSAFE_DDL.get()
}

/// `federation.ddl_timeout`, in seconds.
pub fn ddl_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(DDL_TIMEOUT.get().max(1) as u64)
}

/// `federation.ddl_origin`: the node whose schema change this session applies, if any.
pub fn ddl_origin() -> Option<String> {
    get_str(&DDL_ORIGIN)
}

/// `federation.database` (an empty setting means the default).
pub fn database() -> String {
    or_default(get_str(&DATABASE), DEFAULT_DATABASE)
}
