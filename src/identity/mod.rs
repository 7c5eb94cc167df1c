//! Node identity: `federation.node_name()`.
//!
//! Resolution order (the first that is configured wins):
//! 1. the GUC `federation.node_name`;
//! 2. the label `federation.node_label` of the Kubernetes labels file `federation.labels_path`,
//!    when that file exists;
//! 3. the same label through pgnodemx's `kdapi_setof_kv('labels')`, when pgnodemx is installed.
//!
//! `node_name()` is a column default evaluated for every inserted row, so the resolved name
//! is cached per backend and resolved again only after a configuration reload (PostgreSQL
//! stamps every reload in `PgReloadTime`, which every backend updates when it processes
//! SIGHUP). A cached call is one integer comparison and one string copy.

use crate::catalog;
use crate::errors::{FedError, FedResult, OrRaise};
use crate::gucs;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};

mod labels;

/// Longest node name, in bytes. Derived names ("federation_<a>_<b>" for subscriptions and
/// slots) must fit in PostgreSQL's 63-byte identifiers: 11 + 24 + 1 + 24 = 60.
pub const MAX_NODE_NAME_LEN: usize = 24;

/// Names that would collide with objects pg_federation derives (`<table>_default`).
const RESERVED: &[&str] = &["default"];

/// The rule, as told to users in errors and docs.
pub const NODE_NAME_RULE: &str = "a node name is 1 to 24 bytes of lowercase letters, digits, \
     '_' and '-', starting with a letter, and is not \"default\"";

/// Checks a node name against [`NODE_NAME_RULE`]; `source` says where it came from.
pub fn validate_node_name(name: &str, source: &str) -> FedResult<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let starts_ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if name.is_empty()
        || name.len() > MAX_NODE_NAME_LEN
        || !ok_chars
        || !starts_ok
        || RESERVED.contains(&name)
    {
        return Err(FedError::invalid_value(format!(
            "node name \"{}\" from {source} is not valid",
            name.escape_debug()
        ))
        .detail(format!("{}.", capitalize(NODE_NAME_RULE)))
        .hint(suggestion(name)));
    }
    Ok(())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn suggestion(name: &str) -> String {
    let mut s: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s = s
        .trim_start_matches(|c: char| !c.is_ascii_lowercase())
        .to_string();
    s.truncate(MAX_NODE_NAME_LEN);
    if s.is_empty() || RESERVED.contains(&s.as_str()) {
        "Choose a name such as \"east\" or \"node_1\".".to_string()
    } else {
        format!("Choose a valid name, for example \"{s}\".")
    }
}

/// Where the name may come from; `from_gucs()` reads the live settings, tests build their own.
#[derive(Debug, Clone)]
pub struct Sources {
    pub guc: Option<String>,
    /// Labels files to look for, in order: the first that exists is used.
    pub labels_paths: Vec<String>,
    /// Labels that may hold the node name, in order: the first present is used.
    pub labels: Vec<String>,
    pub try_pgnodemx: bool,
}

/// Where the operators put a pod's labels file, when federation.labels_path is not set: the
/// original recipe's downward-API volume, Crunchy PGO's own mount (every PGO pod has it), and
/// CloudNativePG's projected volume (`spec.projectedVolumeTemplate`, deploy/cnpg).
pub const KNOWN_LABELS_PATHS: [&str; 3] = [
    "/etc/podinfo/labels",
    "/etc/database-containerinfo/labels",
    "/projected/labels",
];

/// The labels that name a node's cluster, when federation.node_label is not set: the
/// original recipe's, Crunchy PGO's and CloudNativePG's. A cluster label, never an instance
/// label: a failover to a replica keeps the node's name.
pub const KNOWN_NODE_LABELS: [&str; 3] = [
    "pg-cluster",
    "postgres-operator.crunchydata.com/cluster",
    "cnpg.io/cluster",
];

impl Sources {
    pub fn from_gucs() -> Sources {
        Sources {
            guc: gucs::node_name(),
            labels_paths: match gucs::labels_path() {
                Some(p) => vec![p],
                None => KNOWN_LABELS_PATHS.map(String::from).to_vec(),
            },
            labels: match gucs::node_label() {
                Some(l) => vec![l],
                None => KNOWN_NODE_LABELS.map(String::from).to_vec(),
            },
            try_pgnodemx: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    /// Human-readable origin, e.g. `labels file /etc/podinfo/labels (label "pg-cluster")`.
    pub source: String,
}

/// Resolves the node name from `src`, validating it.
pub fn resolve(src: &Sources) -> FedResult<Resolved> {
    if let Some(name) = &src.guc {
        let source = "setting federation.node_name".to_string();
        validate_node_name(name, &source)?;
        return Ok(Resolved {
            name: name.clone(),
            source,
        });
    }
    for path in &src.labels_paths {
        if let Some(found) = from_labels_file(path, &src.labels)? {
            return Ok(found);
        }
    }
    if src.try_pgnodemx {
        if let Some(found) = from_pgnodemx(&src.labels)? {
            return Ok(found);
        }
    }
    let files: Vec<String> = src
        .labels_paths
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect();
    Err(FedError::prerequisite("no node name is configured for this server")
        .detail(format!(
            "federation.node_name is empty, no labels file exists ({}), and pgnodemx is not installed in this database.",
            if files.is_empty() { "none to look for".to_string() } else { files.join(", ") }
        ))
        .hint("Set one and reload: ALTER SYSTEM SET federation.node_name = 'east'; SELECT pg_reload_conf(); \
               On Kubernetes, mount the pod's labels with the downward API at federation.labels_path."))
}

/// `Ok(None)` when the file does not exist; an error when it exists but cannot be used.
fn from_labels_file(path: &str, labels: &[String]) -> FedResult<Option<Resolved>> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(FedError::config(format!("could not read labels file \"{path}\": {e}"))
                .hint("Make the file readable by the PostgreSQL server's operating-system user, or set federation.labels_path to the right file."))
        }
    };
    let text = String::from_utf8(text).map_err(|_| {
        FedError::config(format!("labels file \"{path}\" is not valid UTF-8"))
            .hint("federation.labels_path must point at a Kubernetes downward-API labels file.")
    })?;
    let pairs = labels::parse(&text).map_err(|e| {
        FedError::config(format!("labels file \"{path}\" is malformed at {e}"))
            .detail("Each line must be key=\"value\", as the kubelet writes it.")
            .hint("federation.labels_path must point at a Kubernetes downward-API labels file.")
    })?;
    pick_label(pairs, labels, &format!("labels file \"{path}\""))
}

/// The first of `labels` present among `pairs`, validated, with where it came from.
fn pick_label(
    pairs: Vec<(String, String)>,
    labels: &[String],
    where_: &str,
) -> FedResult<Option<Resolved>> {
    let found = labels
        .iter()
        .find_map(|l| pairs.iter().find(|(k, _)| k == l).map(|(_, v)| (l, v)));
    match found {
        Some((label, value)) => {
            let source = format!("{where_} (label \"{label}\")");
            validate_node_name(value, &source)?;
            Ok(Some(Resolved {
                name: value.clone(),
                source,
            }))
        }
        None => {
            let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            let wanted: Vec<String> = labels.iter().map(|l| format!("\"{l}\"")).collect();
            Err(FedError::config(format!("labels in {where_} have no label {}", wanted.join(" or ")))
                .detail(if keys.is_empty() { "There are no labels.".to_string() } else { format!("Labels present: {}.", keys.join(", ")) })
                .hint("Set federation.node_label to the label that names this node's cluster (by default pg-cluster, postgres-operator.crunchydata.com/cluster or cnpg.io/cluster, in that order), or add the label to the pod."))
        }
    }
}

/// `Ok(None)` when pgnodemx is not installed in this database.
fn from_pgnodemx(labels: &[String]) -> FedResult<Option<Resolved>> {
    let schema: Option<String> = Spi::connect(|client| {
        let rows = client.select(
            "SELECT n.nspname::text FROM pg_catalog.pg_extension e \
             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgnodemx'",
            None,
            &[],
        )?;
        rows.into_iter()
            .next()
            .map(|r| r.get::<String>(1))
            .transpose()
            .map(Option::flatten)
    })?;
    let Some(schema) = schema else {
        return Ok(None);
    };
    let query = format!(
        "SELECT key::text, val::text FROM {}.kdapi_setof_kv('labels')",
        crate::spi::quote_ident(&schema)
    );
    let pairs: Vec<(String, String)> = Spi::connect(|client| {
        client
            .select(&query, None, &[])?
            .map(|row| {
                Ok((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    pick_label(pairs, labels, "pgnodemx kdapi_setof_kv('labels')")
}

struct Cache {
    reload_time: pg_sys::TimestampTz,
    resolved: Resolved,
}

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
    /// The name alone, for the column default that every federated INSERT evaluates once per
    /// row: valid for the same reload as [`CACHE`], and a `&'static str` so that the hot path
    /// neither allocates nor frees (see [`node_name`]). Kept apart from CACHE on purpose:
    /// reading the name through CACHE's RefCell cost about 100 instructions more per row
    /// (callgrind, `bench_insert 10 0`: 28,769 against 28,649 per row of a 1,000-row INSERT).
    static NAME: Cell<Option<(pg_sys::TimestampTz, &'static str)>> = const { Cell::new(None) };
}

fn reload_stamp() -> pg_sys::TimestampTz {
    // SAFETY: a plain global of the backend, written only by this process on reload.
    unsafe { pg_sys::PgReloadTime }
}

/// Reads the cached identity through `f`, if it was resolved since the last reload.
fn cached<T>(f: impl FnOnce(&Resolved) -> T) -> Option<T> {
    let stamp = reload_stamp();
    CACHE.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|c| c.reload_time == stamp)
            .map(|c| f(&c.resolved))
    })
}

/// This node's identity, resolved at most once per configuration reload.
pub fn current() -> FedResult<Resolved> {
    if let Some(r) = cached(Resolved::clone) {
        return Ok(r);
    }
    let stamp = reload_stamp();
    let resolved = resolve(&Sources::from_gucs())?;
    if let Some(recorded) = catalog::recorded_name()? {
        if recorded != resolved.name {
            return Err(catalog::renamed_error(&recorded, &resolved.name));
        }
        if let Some(e) = catalog::copy_problem(&recorded)? {
            return Err(e);
        }
    }
    CACHE.with(|c| {
        *c.borrow_mut() = Some(Cache {
            reload_time: stamp,
            resolved: resolved.clone(),
        })
    });
    Ok(resolved)
}

/// This node's name, as a string: the hot path of every federated INSERT.
pub fn current_name() -> FedResult<String> {
    match cached(|r| r.name.clone()) {
        Some(name) => Ok(name),
        None => current().map(|r| r.name),
    }
}

/// This server's node name in the federation.
///
/// The default of every federated table's node column, evaluated for every inserted row: the
/// name is resolved (and checked against the catalog) as by [`current`], once per
/// configuration reload, and then returned without allocating (instructions per row in
/// BENCHMARKS.md, "The INSERT path"). The names kept are leaked, one per name this backend
/// ever resolves, so a few bytes in the life of a backend.
#[pg_extern(stable, parallel_safe)]
fn node_name() -> &'static str {
    let stamp = reload_stamp();
    if let Some((at, name)) = NAME.get() {
        if at == stamp {
            return name;
        }
    }
    let name = current_name().or_raise();
    let kept: &'static str = match NAME.get() {
        Some((_, old)) if old == name => old,
        _ => Box::leak(name.into_boxed_str()),
    };
    NAME.set(Some((stamp, kept)));
    kept
}

/// For federation.status(): why this node cannot write its federated tables now (its name
/// cannot be resolved, or differs from the one its partitions were made with), and the
/// repair; no row when its identity is sound or it has federated nothing yet.
#[pg_extern(stable, schema = "federation_internal")]
fn identity_problem(
) -> TableIterator<'static, (name!(problem, String), name!(repair, Option<String>))> {
    let recorded = catalog::recorded_name().unwrap_or(None);
    let row = match (recorded, current()) {
        (None, _) | (Some(_), Ok(_)) => None,
        (Some(_), Err(e)) => Some((e.message, e.hint)),
    };
    TableIterator::new(row)
}

/// Where this server's node name comes from, for troubleshooting.
#[pg_extern(stable, parallel_safe)]
fn node_name_source() -> String {
    current().or_raise().source
}
