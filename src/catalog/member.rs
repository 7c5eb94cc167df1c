//! The members of this node's federation (table federation.node), typed.

use crate::errors::{FedError, FedResult};
use crate::spi;
use std::fmt;

/// A member's state (the CHECK of federation.node.state in sql/catalog.sql).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Recorded; the worker is wiring the pair (slots, subscriptions, initial copies).
    Joining,
    /// Both directions replicate.
    Ready,
    Failed,
    Leaving,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Ready => "ready",
            MemberState::Failed => "failed",
            MemberState::Leaving => "leaving",
        }
    }

    fn parse(s: &str) -> FedResult<MemberState> {
        match s {
            "joining" => Ok(MemberState::Joining),
            "ready" => Ok(MemberState::Ready),
            "failed" => Ok(MemberState::Failed),
            "leaving" => Ok(MemberState::Leaving),
            other => Err(FedError::internal(format!(
                "unknown member state \"{other}\" in federation.node"
            ))),
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether this node has joined a federation that has other members (a schema change of a
/// federated table is made on them too). Readable by any role.
pub fn has_members() -> FedResult<bool> {
    Ok(spi::one::<bool>(
        &format!("SELECT {}()", super::internal("local_node_joined")?),
        &[],
    )?
    .unwrap_or(false)
        && !other_members()?.is_empty())
}

/// Members of the federation other than this node, by name.
pub fn other_members() -> FedResult<Vec<String>> {
    Ok(spi::rows(
        "SELECT node_name FROM federation.node ORDER BY node_name",
        &[],
        |r| r.get::<String>(1),
    )?
    .into_iter()
    .flatten()
    .collect())
}

/// A member as this node knows it.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub conninfo: String,
    pub state: MemberState,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// This node's worker wires it (false: the member's worker does).
    pub wired_here: bool,
}

pub fn members() -> FedResult<Vec<Member>> {
    let rows = spi::rows(
        "SELECT node_name, conninfo, state, attempts, last_error, wired_here FROM federation.node ORDER BY node_name",
        &[],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<i32>(4)?.unwrap_or(0),
                r.get::<String>(5)?,
                r.get::<bool>(6)?.unwrap_or(true),
            ))
        },
    )?;
    rows.into_iter()
        .map(
            |(name, conninfo, state, attempts, last_error, wired_here)| {
                Ok(Member {
                    name,
                    conninfo,
                    state: MemberState::parse(&state)?,
                    attempts,
                    last_error,
                    wired_here,
                })
            },
        )
        .collect()
}

/// A member's progress as a waiting loop sees it: read under a fresh snapshot each call, so
/// that the worker's commits show.
pub struct MemberProgress {
    pub name: String,
    pub state: MemberState,
    pub attempts: i32,
    pub last_error: Option<String>,
}

pub fn members_progress_fresh() -> FedResult<Vec<MemberProgress>> {
    spi::rows_fresh(
        "SELECT node_name, state, attempts, last_error FROM federation.node ORDER BY node_name",
    )?
    .into_iter()
    .map(|r| {
        Ok(MemberProgress {
            name: r[0].clone().unwrap_or_default(),
            state: MemberState::parse(r[1].as_deref().unwrap_or_default())?,
            attempts: r[2].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
            last_error: r[3].clone(),
        })
    })
    .collect()
}

/// Whether this transaction itself wrote a member row (join() and wait_ready() in one
/// transaction).
pub fn members_written_by_this_transaction() -> FedResult<bool> {
    Ok(spi::one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM federation.node WHERE xmin::text = pg_catalog.txid_current_if_assigned()::text)",
        &[],
    )?
    .unwrap_or(false))
}

/// Adds or updates a member (joining until its wiring is done); `wired_here`: whether this
/// node's worker does the wiring (false when the member's worker registered itself here).
pub fn upsert_member(
    name: &str,
    conninfo: &str,
    state: MemberState,
    wired_here: bool,
) -> FedResult<()> {
    spi::exec_args(
        "INSERT INTO federation.node (node_name, conninfo, state, wired_here) VALUES ($1, $2, $3, $4)
         ON CONFLICT (node_name) DO UPDATE SET conninfo = EXCLUDED.conninfo,
             state = CASE WHEN federation.node.state = 'ready' AND EXCLUDED.state = 'joining' THEN 'ready' ELSE EXCLUDED.state END,
             wired_here = CASE WHEN federation.node.state = 'ready' THEN federation.node.wired_here ELSE EXCLUDED.wired_here END",
        &[name.into(), conninfo.into(), state.as_str().into(), wired_here.into()],
    )
}

/// Member `name` is reached at `conninfo` from now on (its address moved: membership::address).
pub fn set_member_conninfo(name: &str, conninfo: &str) -> FedResult<()> {
    spi::exec_args(
        "UPDATE federation.node SET conninfo = $2 WHERE node_name = $1",
        &[name.into(), conninfo.into()],
    )
}

pub fn set_member_state(name: &str, state: MemberState) -> FedResult<()> {
    spi::exec_args(
        "UPDATE federation.node SET state = $2, attempts = 0, last_error = NULL, last_error_at = NULL WHERE node_name = $1",
        &[name.into(), state.as_str().into()],
    )?;
    // When it became ready (0.3.0 on): status() ignores probes taken before.
    if state == MemberState::Ready && super::sql_0_3_installed()? {
        spi::exec_args(
            "UPDATE federation.node SET ready_at = pg_catalog.clock_timestamp() WHERE node_name = $1",
            &[name.into()],
        )?;
    }
    Ok(())
}

pub fn record_member_error(name: &str, error: &str) -> FedResult<()> {
    spi::exec_args(
        "UPDATE federation.node SET attempts = attempts + 1, last_error = $2, last_error_at = pg_catalog.now() WHERE node_name = $1",
        &[name.into(), error.into()],
    )
}

pub fn delete_member(name: &str) -> FedResult<()> {
    spi::exec_args(
        "DELETE FROM federation.node WHERE node_name = $1",
        &[name.into()],
    )
}

/// Whether member `name`'s last failed step is at least `ms` milliseconds old (true when it
/// has none): the worker retries a failing member with a growing pause.
pub fn last_error_older_than(name: &str, ms: i64) -> FedResult<bool> {
    Ok(spi::one::<bool>(
        "SELECT coalesce(last_error_at, '-infinity') + $2 * interval '1 millisecond' <= pg_catalog.clock_timestamp()
         FROM federation.node WHERE node_name = $1",
        &[name.into(), ms.into()],
    )?
    .unwrap_or(true))
}
