//! `federation.join()`, in the caller's transaction.
//!
//! It connects to the peer and to every member the peer knows, checks everything it can
//! (extension and version, names, settings, privileges, tables, reachability of this node
//! from the peer), then records the members in this node's catalog and creates their
//! partitions here. Nothing is created on another node and no slot or subscription exists
//! until the transaction commits: then this node's background worker (src/worker/) registers
//! it with every member and creates the subscriptions both ways. A ROLLBACK therefore leaves
//! no trace anywhere.

use super::rpc::local_info;
use crate::catalog::{self, MemberState};
use crate::errors::{notice, required, FedError, FedResult, OrRaise};
use crate::gucs;
use crate::identity;
use crate::naming::canonical;
use crate::preconditions::require_superuser;
use crate::remote::{self, mask, PeerInfo, Remote, TableShape};
use crate::spi;
use crate::spi::quote_ident;
use crate::table::{partitions, publication, sequences};
use crate::worker;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// The federation.join() SQL function: see sql/api.sql for the signature.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn join_federation(peer_conninfo: Option<&str>, node_conninfo: Option<&str>) {
    let peer = required(
        peer_conninfo,
        "the peer's connection string",
        "SELECT federation.join('host=east.example port=5432 dbname=app user=federation');",
    );
    join(peer, node_conninfo).or_raise()
}

pub fn join(peer_conninfo: &str, node_conninfo: Option<&str>) -> FedResult<()> {
    require_superuser("federation.join()")?;
    // The peer connects back to this node during join(): it must see the extension.
    if spi::one::<bool>(
        "SELECT pg_catalog.age(xmin) = 0 FROM pg_catalog.pg_extension WHERE extname = 'pg_federation'",
        &[],
    )?
    .unwrap_or(false)
    {
        return Err(FedError::prerequisite("pg_federation was installed in this same transaction; join() cannot run in it")
            .detail("join() has the peer connect back to this node, and the peer cannot see an extension that is not committed yet.")
            .hint("COMMIT after CREATE EXTENSION pg_federation (enable() may stay in the migration), then call federation.join() in a transaction of its own (docs/join.md)."));
    }
    let me = identity::current_name()?;
    let my_conninfo = node_conninfo.map(str::to_string).filter(|s| !s.trim().is_empty()).or_else(gucs::node_conninfo).ok_or_else(|| {
        FedError::prerequisite(format!("this node (\"{me}\") has no address for its peers"))
            .detail("The other members connect back to this node to replicate its rows; they need its address as they see it (on Kubernetes, a Service name, not localhost).")
            .hint("Set it and reload: ALTER SYSTEM SET federation.node_conninfo = 'host=east.example port=5432 dbname=app user=federation'; SELECT pg_reload_conf(); or pass it: federation.join(peer, node_conninfo => '...').")
    })?;
    if peer_conninfo.trim().is_empty() {
        return Err(FedError::invalid_value("the peer's connection string is empty")
            .hint("Give the address of any member of the federation to join, for example 'host=east.example port=5432 dbname=app user=federation'."));
    }
    remote::parse(&my_conninfo)?;
    remote::parse(peer_conninfo)?;
    let mut mine = local_info()?;
    if mine.wal_level != "logical" {
        return Err(FedError::prerequisite(format!(
            "wal_level is {} on this node, not logical",
            mine.wal_level
        ))
        .hint("Set wal_level = logical in postgresql.conf and restart the server."));
    }
    if !mine.worker_running {
        return Err(FedError::prerequisite("pg_federation's background worker is not running on this node")
            .detail("It completes a join after COMMIT; it starts when pg_federation is in shared_preload_libraries and federation.database names this database.")
            .hint(format!("Set shared_preload_libraries = 'pg_federation' and federation.database = '{}' in postgresql.conf, and restart.", current_database()?)));
    }

    // The peer, and through it every member of its federation.
    let mut peer = Remote::connect(peer_conninfo, "the peer")?;
    if peer.server_identity()? == spi::one::<String>(remote::WHOAMI, &[])? {
        return Err(FedError::invalid_value(format!("the peer's connection string ({}) leads to this node itself", mask(peer_conninfo)))
            .hint("Give the address of another node: the member of the federation to join, or the node to form one with."));
    }
    let my_version = catalog::extension_version()?;
    let pinfo = peer.peer_info("the peer", &my_version)?;
    let known: Vec<String> = catalog::members()?.into_iter().map(|m| m.name).collect();
    if known.contains(&pinfo.node_name) {
        FedError::new(
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!(
                "this node is already a member of {}'s federation; nothing to do",
                pinfo.node_name
            ),
        )
        .report(PgLogLevel::NOTICE);
        return Ok(());
    }
    if !known.is_empty() {
        return Err(FedError::prerequisite(format!("this node already belongs to a federation (with {})", known.join(", ")))
            .hint("Join the other federation's nodes from a node that is in no federation, or call federation.leave() first."));
    }
    // Federated tables this node lacks altogether: made here from the peer's definitions.
    if create_missing_tables(&mut peer, &pinfo, &mine)? {
        mine = local_info()?;
    }
    // The peer first, then every member, each with the connection its checks use (kept for
    // the node number's reservation, [`reserve_node_number`]).
    let mut nodes = vec![Node {
        conninfo: peer_conninfo.to_string(),
        info: pinfo.clone(),
        conn: peer,
    }];
    for m in &pinfo.members {
        let what = format!("member \"{}\" of the peer's federation", m.node_name);
        let mut conn = Remote::connect(&m.conninfo, &what).map_err(|e| {
            e.hint(format!("Every member must be reachable from this node during join; bring \"{}\" back, or remove it with federation.drop_node('{}') on the peer.", m.node_name, m.node_name))
        })?;
        let info = conn.peer_info(&what, &my_version)?;
        nodes.push(Node {
            conninfo: m.conninfo.clone(),
            info,
            conn,
        });
    }
    let size = nodes.len() as i64 + 1;

    // Names: distinct, also once '-' becomes '_' (slot names).
    for Node { info: i, .. } in &nodes {
        if canonical(&i.node_name) == canonical(&me) {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                format!("node name \"{me}\" is already taken in the peer's federation (by \"{}\" at {})", i.node_name, mask(&conninfo_of(i, peer_conninfo))),
            )
            .hint("Give this node another name (federation.node_name), reload, and join again."));
        }
    }
    // Settings and privileges on every node, for one more member.
    check_capacity(&me, &mine, size, true)?;
    for Node {
        conninfo: ci,
        info: i,
        ..
    } in &nodes
    {
        if i.wal_level != "logical" {
            return Err(FedError::prerequisite(format!(
                "wal_level is {} on node \"{}\", not logical",
                i.wal_level, i.node_name
            ))
            .hint("Set wal_level = logical in its postgresql.conf and restart it."));
        }
        if !i.is_superuser {
            return Err(FedError::privilege(format!("the role in the connection string for node \"{}\" ({}) is not a superuser", i.node_name, mask(ci)))
                .detail("This node creates a subscription there, which PostgreSQL 15 allows only to superusers; a role without REPLICATION cannot replicate either.")
                .hint("Connect as a superuser (with a password file rather than a password in the string)."));
        }
        if !i.worker_running {
            return Err(FedError::prerequisite(format!("pg_federation's background worker is not running on node \"{}\"", i.node_name))
                .hint("Set shared_preload_libraries = 'pg_federation' and federation.database there, and restart it."));
        }
        check_capacity(&i.node_name, i, size, false)?;
    }
    // The same federated tables with the same columns everywhere.
    for Node { info: i, .. } in &nodes {
        compare_tables(&me, &mine.tables, &i.node_name, &i.tables)?;
    }
    // The peer can reach this node at the address it will be given.
    let seen = nodes[0].conn.check_reachable(&my_conninfo).map_err(|e| {
        let msg = e.message.clone();
        e.hint("Set federation.node_conninfo to an address the peer can reach (on Kubernetes, this pod's Service name).").detail(format!("The peer tried this node's address and failed: {msg}"))
    })?;
    if seen.as_deref() != Some(me.as_str()) {
        return Err(FedError::invalid_value(format!(
            "federation.node_conninfo ({}) leads the peer to node \"{}\", not to this node \"{me}\"",
            mask(&my_conninfo),
            seen.unwrap_or_default()
        ))
        .hint("Fix federation.node_conninfo so that it names this server."));
    }
    // Before 0.3.0's SQL is installed here (and so, versions being equal, everywhere): no
    // node numbers, as in 0.2.0.
    let my_number = if catalog::sql_0_3_installed()? {
        Some(reserve_node_number(&me, &pinfo.node_name, &mut nodes)?)
    } else {
        None
    };

    // Everything checked: record the federation here. The worker does the rest after COMMIT.
    catalog::claim_local_name(&me)?;
    catalog::set_local_conninfo(&my_conninfo)?;
    if let Some(k) = my_number {
        catalog::set_node_number(k)?;
    }
    publication::ensure_exists(&me)?;
    for Node {
        conninfo: ci,
        info: i,
        ..
    } in &nodes
    {
        catalog::upsert_member(
            &i.node_name,
            &conninfo_of(i, ci),
            MemberState::Joining,
            true,
        )?;
    }
    partitions::partitions_for_members(&me)?;
    // This node's sequences now draw from its own range (docs/keys.md).
    sequences::number_all()?;
    worker::wake();
    let names: Vec<&str> = nodes.iter().map(|n| n.info.node_name.as_str()).collect();
    notice(format!(
        "joining {} ({}): the background worker makes the subscriptions and copies after COMMIT; SELECT federation.wait_ready(); waits until every pair is ready",
        if names.len() == 1 { "1 member".to_string() } else { format!("{} members", names.len()) },
        names.join(", ")
    ));
    Ok(())
}

/// This node's number in the federation (docs/keys.md): above every number any member has
/// seen given out, and reserved on every member in the order of their names before this
/// transaction commits, so that of two joins at the same time exactly one gets a number
/// (the first member in that order decides) and a number is never given out twice. A peer
/// forming a federation with this node gets the number below this node's. A reservation
/// outlives a ROLLBACK: that number is then never used, which is harmless.
fn reserve_node_number(me: &str, peer: &str, nodes: &mut [Node]) -> FedResult<i32> {
    let floor = nodes
        .iter()
        .map(|n| n.info.numbers_issued.max(n.info.node_number.unwrap_or(0)))
        .chain([catalog::numbers_issued()?])
        .max()
        .unwrap_or(0);
    let founder = nodes
        .iter()
        .map(|n| &n.info)
        .find(|i| i.node_name == peer && i.node_number.is_none() && i.members.is_empty())
        .map(|_| floor + 1);
    let mine = floor + 1 + i32::from(founder.is_some());
    if mine > catalog::MAX_NODE_NUMBER {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("the federation has given out all {} node numbers", catalog::MAX_NODE_NUMBER),
        )
        .detail("Every join takes a new node number, and numbers are never reused (sequence values carry them).")
        .hint("Form a new federation (docs/keys.md, \"Limits\")."));
    }
    let mut order: Vec<&mut Node> = nodes.iter_mut().collect();
    order.sort_by(|a, b| a.info.node_name.cmp(&b.info.node_name));
    for Node { info: i, conn, .. } in order {
        let yours = founder.filter(|_| i.node_name == peer);
        if !conn.reserve_node_number(mine, yours)? {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
                format!("node number {mine} for \"{me}\" was taken by another node joining at the same time (seen on \"{}\")", i.node_name),
            )
            .detail("Node numbers keep sequence values unique across the federation; two joins cannot take the same one.")
            .hint("Run join() again: it takes the next free number."));
        }
    }
    Ok(mine)
}

/// A node of the federation being joined, as join() reached it: the address it was reached
/// at, what it said of itself, and the connection its checks used.
struct Node {
    conninfo: String,
    info: PeerInfo,
    conn: Remote,
}

/// The address the federation uses for a node: what it advertises, else how we reached it.
fn conninfo_of(i: &PeerInfo, reached_with: &str) -> String {
    i.node_conninfo
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| reached_with.to_string())
}

fn current_database() -> FedResult<String> {
    Ok(spi::one::<String>("SELECT current_database()::text", &[])?.unwrap_or_default())
}

fn check_capacity(node: &str, i: &PeerInfo, size: i64, joining: bool) -> FedResult<()> {
    let peers = size - 1;
    let need_slots = if joining {
        i.used_replication_slots + peers
    } else {
        i.used_replication_slots + 1
    };
    let short = |setting: &str, have: i64, need: i64| {
        FedError::prerequisite(format!("{setting} is {have} on node \"{node}\"; a federation of {size} nodes needs at least {need}"))
            .hint(format!("Raise {setting} in that node's postgresql.conf and restart it (see README: settings)."))
    };
    if i.max_replication_slots < need_slots {
        return Err(short(
            "max_replication_slots",
            i.max_replication_slots,
            need_slots,
        ));
    }
    if i.max_wal_senders < peers + 1 {
        return Err(short("max_wal_senders", i.max_wal_senders, peers + 1));
    }
    if i.max_logical_replication_workers < peers + 1 {
        return Err(short(
            "max_logical_replication_workers",
            i.max_logical_replication_workers,
            peers + 1,
        ));
    }
    Ok(())
}

/// Creates here, from the peer's definitions, every table the peer federates that does not
/// exist here at all (a new node that joins before it has the schema), and federates it;
/// a table that exists here but differs is left to compare_tables() to report. Returns
/// whether it created any.
pub(super) fn create_missing_tables(
    peer: &mut Remote,
    pinfo: &PeerInfo,
    mine: &PeerInfo,
) -> FedResult<bool> {
    let mut created = false;
    for t in &pinfo.tables {
        if mine.tables.iter().any(|x| x.table == t.table)
            || spi::one::<bool>(
                "SELECT pg_catalog.to_regclass($1) IS NOT NULL",
                &[t.table.as_str().into()],
            )?
            .unwrap_or(false)
        {
            continue;
        }
        let (before, after) = peer.table_definition(&t.table)?;
        for statement in &before {
            spi::exec(statement).map_err(|e| {
                FedError {
                    message: format!(
                        "could not create table {} from \"{}\"'s definition: {}",
                        t.table, pinfo.node_name, e.message
                    ),
                    ..e
                }
                .detail(format!("Statement: {statement}"))
            })?;
        }
        let oid = spi::one::<pg_sys::Oid>(
            "SELECT pg_catalog.to_regclass($1)::oid",
            &[t.table.as_str().into()],
        )?
        .ok_or_else(|| FedError::internal(format!("table {} was not created", t.table)))?;
        crate::enable::enable_with(oid, &t.node_column, crate::enable::Spread::HereOnly)?;
        for statement in &after {
            spi::exec(statement)?;
        }
        notice!(
            "pg_federation: created table {} from \"{}\"'s definition ({} statement(s))",
            t.table,
            pinfo.node_name,
            before.len() + after.len()
        );
        created = true;
    }
    Ok(created)
}

/// The ALTER TABLE statements that give `table`, with columns `mine`, the columns `theirs`.
fn level_with(table: &str, mine: &[(String, String)], theirs: &[(String, String)]) -> String {
    let mut out = vec![];
    for (name, ty) in theirs {
        match mine.iter().find(|(n, _)| n == name) {
            None => out.push(format!(
                "ALTER TABLE {table} ADD COLUMN {} {ty};",
                quote_ident(name)
            )),
            Some((_, mine_ty)) if mine_ty != ty => out.push(format!(
                "ALTER TABLE {table} ALTER COLUMN {} TYPE {ty};",
                quote_ident(name)
            )),
            _ => {}
        }
    }
    for (name, _) in mine {
        if !theirs.iter().any(|(n, _)| n == name) {
            out.push(format!(
                "ALTER TABLE {table} DROP COLUMN {};",
                quote_ident(name)
            ));
        }
    }
    out.join(" ")
}

pub(super) fn compare_tables(
    me: &str,
    mine: &[TableShape],
    other: &str,
    theirs: &[TableShape],
) -> FedResult<()> {
    for t in mine {
        match theirs.iter().find(|x| x.table == t.table) {
            None => {
                return Err(FedError::prerequisite(format!("federated table {} is missing on node \"{other}\"", t.table))
                    .hint(format!("Create the table on \"{other}\" with the same columns and run SELECT federation.enable('{}'); there.", t.table)))
            }
            Some(x) if x.columns != t.columns || x.node_column != t.node_column => {
                let diff: Vec<String> = t
                    .columns
                    .iter()
                    .filter(|c| !x.columns.contains(c))
                    .map(|(n, ty)| format!("{n} {ty} on \"{me}\""))
                    .chain(x.columns.iter().filter(|c| !t.columns.contains(c)).map(|(n, ty)| format!("{n} {ty} on \"{other}\"")))
                    .collect();
                return Err(FedError::new(
                    PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                    format!("federated table {} differs between node \"{me}\" and node \"{other}\"", t.table),
                )
                .detail(format!("Columns that differ: {}.", diff.join(", ")))
                .hint(format!(
                    "On \"{me}\", these statements make it the same as on \"{other}\" (with the escape hatch, as \"{me}\" alone changes): BEGIN; SET LOCAL federation.unsafe_ddl = on; {} COMMIT; then join again. Or run the migrations \"{other}\" had on \"{me}\".",
                    level_with(&t.table, &t.columns, &x.columns)
                )));
            }
            _ => {}
        }
    }
    for x in theirs {
        if !mine.iter().any(|t| t.table == x.table) {
            return Err(FedError::prerequisite(format!("federated table {} of node \"{other}\" is not federated on this node", x.table))
                .hint(format!("Create it here with the same columns and run SELECT federation.enable('{}'); then join again.", x.table)));
        }
    }
    Ok(())
}
