//! The calls nodes make on each other, typed: what a joining node learns about a peer
//! ([`PeerInfo`]), and one method per federation function a node runs on another
//! (sql/api.sql lists them; src/membership/rpc.rs implements them). Every SQL string of the
//! node-to-node protocol is here.

use crate::errors::{FedError, FedResult};
use crate::remote::Remote;
use serde::{Deserialize, Serialize};

/// The extension version nodes must share (major.minor).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableShape {
    pub table: String,
    pub node_column: String,
    pub columns: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberInfo {
    pub node_name: String,
    pub conninfo: String,
}

/// What a node tells a joining node about itself (federation_internal.peer_info()).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    pub node_name: String,
    pub version: String,
    pub node_conninfo: Option<String>,
    pub wal_level: String,
    pub max_replication_slots: i64,
    pub used_replication_slots: i64,
    pub max_wal_senders: i64,
    pub max_logical_replication_workers: i64,
    pub is_superuser: bool,
    pub worker_running: bool,
    pub members: Vec<MemberInfo>,
    pub tables: Vec<TableShape>,
    /// Its node number (None: it has not joined a federation).
    #[serde(default)]
    pub node_number: Option<i32>,
    /// The highest node number it has seen given out.
    #[serde(default)]
    pub numbers_issued: i32,
}

fn major_minor(v: &str) -> String {
    v.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Identifies a server and database: the same answer means the same place.
pub const WHOAMI: &str =
    "SELECT system_identifier::text || '/' || current_database() FROM pg_catalog.pg_control_system()";

fn flag(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// Which server answers: system identifier and postmaster start time (a promoted standby has
/// the same system identifier as its old primary, never the same start).
pub const SERVER_INSTANCE: &str =
    "SELECT system_identifier || ' started ' || pg_catalog.pg_postmaster_start_time()
                        FROM pg_catalog.pg_control_system()";

impl Remote {
    /// What the node behind this connection says about itself, once its installed extension
    /// version is known to match `my_version` (this node's) in major.minor. `what` names it in
    /// errors.
    pub fn peer_info(&mut self, what: &str, my_version: &str) -> FedResult<PeerInfo> {
        self.check_version(what, my_version)?;
        let json = self.call("peer_info", "", &[])?.unwrap_or_default();
        serde_json::from_str(&json).map_err(|e| {
            FedError::internal(format!(
                "{what} answered peer_info() with something unexpected: {e}"
            ))
        })
    }

    /// Refuses unless pg_federation is installed there in the same major.minor version as
    /// `my_version` (this node's). `what` names the node in errors.
    pub fn check_version(&mut self, what: &str, my_version: &str) -> FedResult<()> {
        let ext = self.scalar(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_federation'",
            &[],
        )?;
        let Some(version) = ext else {
            return Err(FedError::prerequisite(format!("pg_federation is not installed on {what} ({})", self.target))
                .hint("Install it there first: CREATE EXTENSION pg_federation; (with shared_preload_libraries = 'pg_federation')."));
        };
        if major_minor(&version) != major_minor(my_version) {
            return Err(FedError::prerequisite(format!("{what} runs pg_federation {version}, this node runs {my_version}"))
                .detail("Nodes join, and tables are federated across the federation, only when the installed versions match in major.minor; members of different versions keep replicating while a federation is upgraded node by node.")
                .hint("Finish the upgrade first: ALTER EXTENSION pg_federation UPDATE on every node (docs/runbook.md, section 9)."));
        }
        Ok(())
    }

    /// The server and database behind this connection ([`WHOAMI`]).
    pub fn server_identity(&mut self) -> FedResult<Option<String>> {
        self.scalar(WHOAMI, &[])
    }

    /// federation_internal.check_reachable() there: the node name it finds at `conninfo`.
    pub fn check_reachable(&mut self, conninfo: &str) -> FedResult<Option<String>> {
        self.call("check_reachable", "$1", &[Some(conninfo)])
    }

    /// The node name there, and whether this connection's role is a superuser.
    /// The node the server behind this connection acts as (its federation.node_name()), or,
    /// as text, why it acts as none: no name, a restored copy, a server superseded at its
    /// address, no pg_federation.
    pub fn acting_as(&mut self) -> Result<String, String> {
        match self.scalar("SELECT federation.node_name()", &[]) {
            Ok(Some(name)) => Ok(name),
            Ok(None) => Err("it has no node name".into()),
            Err(e) => Err(e.message),
        }
    }

    pub fn name_and_superuser(&mut self) -> FedResult<(String, bool)> {
        let rows = self.query(
            "SELECT federation.node_name(), (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)",
            &[],
        )?;
        let row = rows.into_iter().next().unwrap_or_default();
        let get = |i: usize| row.get(i).cloned().flatten();
        Ok((get(0).unwrap_or_default(), get(1).as_deref() == Some("t")))
    }

    /// federation_internal.add_member() there: registers `name` (reached at `conninfo`) as a member;
    /// `your_conninfo` is how this node reaches that one.
    pub fn add_member(&mut self, name: &str, conninfo: &str, your_conninfo: &str) -> FedResult<()> {
        self.call(
            "add_member",
            "$1, $2, $3",
            &[Some(name), Some(conninfo), Some(your_conninfo)],
        )?;
        Ok(())
    }

    /// federation_internal.reserve_node_number() there: records `number` as given out unless that node
    /// has seen it (or a higher one) given out already; `yours` becomes its own number if it
    /// has none. True when reserved.
    pub fn reserve_node_number(&mut self, number: i32, yours: Option<i32>) -> FedResult<bool> {
        let n = number.to_string();
        let y = yours.map(|v| v.to_string());
        Ok(self
            .call(
                "reserve_node_number",
                "$1::int, $2::int",
                &[Some(&n), y.as_deref()],
            )?
            .as_deref()
            == Some("true"))
    }

    /// federation_internal.set_member_ready() there.
    pub fn set_member_ready(&mut self, name: &str) -> FedResult<()> {
        self.call("set_member_ready", "$1", &[Some(name)])?;
        Ok(())
    }

    /// federation_internal.remove_member() there.
    pub fn remove_member(&mut self, name: &str, drop_rows: bool) -> FedResult<()> {
        self.call(
            "remove_member",
            "$1, $2",
            &[Some(name), Some(flag(drop_rows))],
        )?;
        Ok(())
    }

    /// federation_internal.table_shape() there: the table's columns without the node column, or None
    /// when there is no such table.
    pub fn table_shape(
        &mut self,
        table: &str,
        node_column: &str,
    ) -> FedResult<Option<Vec<(String, String)>>> {
        let shape = self.call("table_shape", "$1, $2", &[Some(table), Some(node_column)])?;
        shape
            .map(|s| {
                serde_json::from_str(&s).map_err(|e| {
                    FedError::internal(format!(
                        "{} answered table_shape() with something unexpected: {e}",
                        self.target
                    ))
                })
            })
            .transpose()
    }

    /// federation_internal.enable_check() there: raises what that node's enable() would refuse.
    /// The statements that create `table` as the node behind this connection has it, before
    /// and after enable() ([`crate::table::definition`]).
    pub fn table_definition(&mut self, table: &str) -> FedResult<(Vec<String>, Vec<String>)> {
        let json = self
            .call("table_definition", "$1", &[Some(table)])?
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| {
            FedError::internal(format!(
                "{} answered table_definition() with something unexpected: {e}",
                self.target
            ))
        })?;
        let list = |k: &str| -> Vec<String> {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok((list("before"), list("after")))
    }

    pub fn enable_check(&mut self, table: &str, node_column: &str) -> FedResult<()> {
        self.call("enable_check", "$1, $2", &[Some(table), Some(node_column)])?;
        Ok(())
    }

    /// federation_internal.enable_here() there.
    pub fn enable_here(&mut self, table: &str, node_column: &str) -> FedResult<()> {
        self.call("enable_here", "$1, $2", &[Some(table), Some(node_column)])?;
        Ok(())
    }

    /// federation_internal.unpublish_here() there: its WAL position after it stopped publishing `table`.
    pub fn unpublish_here(&mut self, table: &str) -> FedResult<String> {
        Ok(self
            .call("unpublish_here", "$1", &[Some(table)])?
            .unwrap_or_default())
    }

    /// federation_internal.disable_here() there.
    pub fn disable_here(&mut self, table: &str) -> FedResult<()> {
        self.call("disable_here", "$1", &[Some(table)])?;
        Ok(())
    }

    /// Whether `table` is federated there.
    pub fn is_federated(&mut self, table: &str) -> FedResult<bool> {
        Ok(self.count(
            "SELECT count(*) FROM federation.federated_table WHERE relid = pg_catalog.to_regclass($1)",
            &[Some(table)],
        )? == 1)
    }

    /// `owner`'s partition of `table` as that server names it, if it has one.
    pub fn partition_of(&mut self, table: &str, owner: &str) -> FedResult<Option<String>> {
        self.scalar(
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM federation.partition p
             JOIN pg_catalog.pg_class c ON c.oid = p.partition JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE p.relid = pg_catalog.to_regclass($1) AND p.node_name = $2",
            &[Some(table), Some(owner)],
        )
    }

    /// The server's copies of `owner`'s partitions, as SQL names (they are replicas: a new
    /// subscription's initial copy replaces them).
    pub fn copies_of(&mut self, owner: &str) -> FedResult<Vec<String>> {
        self.column(
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM federation.partition p
             JOIN pg_catalog.pg_class c ON c.oid = p.partition JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE p.node_name = $1",
            &[Some(owner)],
        )
    }

    /// The live rows of `owner`'s partitions there (its statistics), as JSON by partition name.
    pub fn row_estimates(&mut self, owner: &str) -> FedResult<Option<String>> {
        self.scalar(
            "SELECT coalesce(pg_catalog.jsonb_object_agg(pg_catalog.format('%I.%I', n.nspname, c.relname), s.n_live_tup), '{}')::text
             FROM federation.partition p JOIN pg_catalog.pg_class c ON c.oid = p.partition
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid
             WHERE p.node_name = $1",
            &[Some(owner)],
        )
    }

    /// The members that server knows as ready: (name, conninfo).
    pub fn ready_members(&mut self) -> FedResult<Vec<(String, String)>> {
        Ok(self
            .query(
                "SELECT node_name, conninfo FROM federation.node WHERE state = 'ready' ORDER BY 1",
                &[],
            )?
            .into_iter()
            .filter_map(|row| Some((row[0].clone()?, row[1].clone()?)))
            .collect())
    }

    /// How that server knows node `name`: Some(wired_here) when it is a member there, None when
    /// not; and how many ready members it has.
    pub fn knows(&mut self, name: &str) -> FedResult<(Option<bool>, i64)> {
        let row = self.query(
            "SELECT (SELECT wired_here FROM federation.node WHERE node_name = $1),
                    (SELECT count(*) FROM federation.node WHERE state = 'ready')",
            &[Some(name)],
        )?;
        let row = row.into_iter().next().unwrap_or_default();
        let wired = row.first().cloned().flatten().map(|v| v == "t");
        let ready = row
            .get(1)
            .cloned()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok((wired, ready))
    }
}
