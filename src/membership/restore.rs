//! `federation.restore()`: a server takes the place of a node whose server was lost (an empty
//! data directory, a new machine) or that was restored from a logical backup (pg_dump), and
//! gets back every row of the node that a member of the federation still holds.
//!
//! A node's rows outlive its server in the members' copies of its partitions. restore(), run
//! on the new server (named as the lost node; at its address or a new one):
//! 1. checks, before it changes anything: the peer's federation has a member of this name; no
//!    other server acts as that node at its address; every member is reachable; this server
//!    can join (wal_level, worker, its address);
//! 2. here: a restored dump's federation state is detached (its subscriptions, which name the
//!    lost server's slots, are dropped without touching those slots; its publication and its
//!    list of members are forgotten), committed at once over a connection to this server, so
//!    that the members see a node and not a copy when join() has them connect back; then, in
//!    the caller's transaction, tables it lacks are made from the peer's definitions, and the
//!    tables are compared as join() does;
//! 3. takes the node's rows back ([`take_back`]): every member's copy of each of the node's
//!    partitions is read, the most advanced first (the member whose subscription from the
//!    node had applied the most of its WAL); rows are matched by key. A row this server lacks
//!    is inserted; a row it holds otherwise is replaced by the member's version (its own goes
//!    to federation.set_aside); a row no member holds (deleted on the node after the backup,
//!    or never received by any member) goes to federation.set_aside too. Nothing is deleted;
//! 4. every member forgets the lost server, as drop_node() does (their subscriptions to it,
//!    the slots it held on them; their copies of its partitions stay);
//! 5. join(): this server joins under the node's name with a new node number, so its
//!    sequences move to a range past every key the old server handed out (docs/keys.md).
//!    After COMMIT the members receive its partitions afresh; a member's row that differs
//!    from the restored one stays in federation.set_aside there, as on any rejoin.
//!
//! Step 4 changes the members before this transaction commits (it drops their subscriptions
//! and slots, which no ROLLBACK undoes). If join() fails after it, restore() again finds the
//! node no longer a member and takes the rows from the copies the members kept, as before.

use super::join::{compare_tables, create_missing_tables};
use super::leave::forget;
use super::rpc::local_info;
use crate::catalog;
use crate::errors::{notice, required, FedError, FedResult, OrRaise};
use crate::gucs;
use crate::identity::{self, Sources};
use crate::naming::subscription_name;
use crate::ops::diff::{copies_of, tid_array, Copy};
use crate::preconditions::{must_run_alone, require_superuser};
use crate::remote::{self, mask, Remote, SAME_TEXT};
use crate::spi::{self, quote_ident};
use crate::table::publication;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::Duration;

/// Why a row of this node is in federation.set_aside after a restore.
const NO_MEMBER_HOLDS: &str = "held by this server when federation.restore() took the node's rows back from the members: no member holds it (deleted on the node after the backup was taken, or never received by a member)";
const MEMBER_HOLDS_OTHERWISE: &str = "held by this server when federation.restore() took the node's rows back from the members: a member holds a later version, which replaced it";
/// Rows fetched from a member per round trip while the node's rows come back.
const BATCH: usize = 10_000;
/// Where the members' rows of one partition gather on this server: (key, row hash, row
/// text, the member's place in the order of [`take_back`]'s sources). Without an index: a
/// B-tree on random keys filled row by row cost four times the filling itself (1,000,000
/// rows: 4.6 s against 1.0 s, BENCHMARKS.md); the comparisons that follow are hash joins.
const TAKEN: &str = "pg_temp.federation_taken";
/// How long the lost server's address is tried.
const ADDRESS_TIMEOUT: Duration = Duration::from_secs(3);

/// The federation.restore() SQL function: see sql/api.sql for the signature.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn restore_federation_node(peer_conninfo: Option<&str>, node_conninfo: Option<&str>) {
    let peer = required(
        peer_conninfo,
        "the peer's connection string",
        "SELECT federation.restore('host=west.example port=5432 dbname=app user=federation');",
    );
    restore(peer, node_conninfo).or_raise()
}

/// A member of the federation this server restores a node of, and what it holds of the node.
struct Source {
    name: String,
    remote: Remote,
    /// How far its subscription from the node had applied the node's WAL (0: unknown).
    applied: u64,
}

pub fn restore(peer_conninfo: &str, node_conninfo: Option<&str>) -> FedResult<()> {
    require_superuser("federation.restore()")?;
    must_run_alone("federation.restore()")?;
    // The configured name, without the checks that refuse a restored copy (it is one).
    let me = identity::resolve(&Sources::from_gucs())?.name;
    if let Some(recorded) = catalog::recorded_name()? {
        if recorded != me {
            return Err(catalog::renamed_error(&recorded, &me));
        }
    }
    if peer_conninfo.trim().is_empty() {
        return Err(FedError::invalid_value("the peer's connection string is empty")
            .hint("Give the address of any surviving member of the federation, for example 'host=west.example port=5432 dbname=app user=federation'."));
    }
    remote::parse(peer_conninfo)?;
    if let Some(c) = node_conninfo.filter(|c| !c.trim().is_empty()) {
        remote::parse(c)?;
    }
    if catalog::local_node()?.is_some_and(|(_, c)| c.is_some())
        && catalog::copy_problem(&me)?.is_none()
    {
        return Err(FedError::prerequisite(format!("this server is node \"{me}\" of a federation already"))
            .detail("restore() is for a server that takes the place of a lost node: an empty one, or one restored from a pg_dump of the node.")
            .hint("After a failover, a switchover or a restore of a base backup at the node's address, the federation repairs itself (docs/runbook.md, section 13); federation.health() shows how far it is."));
    }

    // The peer's federation, and the node this server takes the place of.
    let mut peer = Remote::connect(peer_conninfo, "the peer")?;
    if peer.server_identity()? == spi::one::<String>(remote::WHOAMI, &[])? {
        return Err(FedError::invalid_value(format!(
            "the peer's connection string ({}) leads to this server itself",
            mask(peer_conninfo)
        ))
        .hint("Give the address of a surviving member of the federation."));
    }
    let my_version = catalog::extension_version()?;
    let pinfo = peer.peer_info("the peer", &my_version)?;
    if pinfo.node_name == me {
        return Err(FedError::invalid_value(format!(
            "the peer ({}) is node \"{me}\" itself, alive",
            mask(peer_conninfo)
        ))
        .hint("restore() takes the place of a lost node; give the address of another member."));
    }
    let lost = pinfo.members.iter().find(|m| m.node_name == me);
    if let Some(m) = lost {
        another_server_acts_as(&me, &m.conninfo)?;
    } else {
        notice(format!("node \"{me}\" is not a member of \"{}\"'s federation (any more): the rows its members kept of it are taken back, and this server joins", pinfo.node_name));
    }
    let mut sources = vec![Source {
        name: pinfo.node_name.clone(),
        remote: peer,
        applied: 0,
    }];
    for m in pinfo.members.iter().filter(|m| m.node_name != me) {
        let what = format!("member \"{}\"", m.node_name);
        let mut r = Remote::connect(&m.conninfo, &what).map_err(|e| {
            e.hint(format!("Every surviving member must be reachable to restore a node; bring \"{}\" back, or remove it with federation.drop_node('{}') on the peer.", m.node_name, m.node_name))
        })?;
        r.check_version(&what, &my_version)?;
        sources.push(Source {
            name: m.node_name.clone(),
            remote: r,
            applied: 0,
        });
    }
    for s in sources.iter_mut() {
        s.applied = applied_from(&mut s.remote, &me, &s.name)?;
    }
    // The most advanced copy first; among equals, by name.
    sources.sort_by(|a, b| b.applied.cmp(&a.applied).then(a.name.cmp(&b.name)));

    // This server, at the address its members will use.
    let Some(my_conninfo) = node_conninfo
        .filter(|c| !c.trim().is_empty())
        .map(str::to_string)
        .or_else(gucs::node_conninfo)
    else {
        return Err(FedError::prerequisite(format!("this node (\"{me}\") has no address for its peers"))
            .hint("Set it and reload: ALTER SYSTEM SET federation.node_conninfo = '...'; SELECT pg_reload_conf(); or pass it: federation.restore(peer, node_conninfo => '...')."));
    };
    let mut here = Remote::connect(&my_conninfo, "this server (its federation.node_conninfo)")?;
    if here.server_identity()? != spi::one::<String>(remote::WHOAMI, &[])? {
        return Err(FedError::invalid_value(format!("this node's address ({}) leads to another server", mask(&my_conninfo)))
            .hint("Set federation.node_conninfo (or pass node_conninfo) to this server's address, as the members will reach it."));
    }
    // A restored dump's state is detached (committed: the members must see a node, not a
    // copy); then join()'s checks, in this transaction.
    let detached = detach(&mut here)?;
    drop(here);
    // This transaction's reads see it from now on (catalog reads use the active snapshot).
    let _fresh = FreshSnapshot::take();
    let mut mine = local_info()?;
    if mine.wal_level != "logical" || !mine.worker_running {
        return Err(FedError::prerequisite("this server cannot join yet: it needs wal_level = logical and pg_federation's background worker")
            .hint(format!("Set wal_level = logical, shared_preload_libraries = 'pg_federation' and federation.database = '{}' in postgresql.conf, and restart.", spi::one::<String>("SELECT current_database()::text", &[])?.unwrap_or_default())));
    }
    let peer = &mut sources
        .iter_mut()
        .find(|s| s.name == pinfo.node_name)
        .expect("the peer is a source")
        .remote;
    if create_missing_tables(peer, &pinfo, &mine)? {
        mine = local_info()?;
    }
    compare_tables(&me, &mine.tables, &pinfo.node_name, &pinfo.tables)?;
    // The node's partitions are published again (a restored copy's publication was dropped).
    for (oid, partition) in catalog::partitions_of_node(&me, None)? {
        publication::add(&me, oid, &partition)?;
    }

    // The node's rows, back from the members.
    let (inserted, replaced, kept) = take_back(&me, &mut sources)?;

    // The members forget the lost server; then this one joins in its place.
    if lost.is_some() {
        for s in sources.iter_mut() {
            forget(&mut s.remote, &s.name, &me, false)?;
        }
    }
    let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    notice(format!(
        "restoring node \"{me}\"{}: {inserted} row(s) taken back from the members' copies ({}), {replaced} replaced by a member's later version and {kept} that no member holds kept in federation.set_aside",
        if detached { " from a restored copy" } else { "" },
        names.join(", ")
    ));
    drop(sources);
    super::join::join(peer_conninfo, node_conninfo)
}

/// A new snapshot made active for the rest of restore() (READ COMMITTED: it sees what was
/// committed until now), popped when dropped.
struct FreshSnapshot;

impl FreshSnapshot {
    fn take() -> FreshSnapshot {
        // SAFETY: a transaction is in progress; the snapshot is popped in Drop, in the same
        // function call (an error aborts the transaction, which resets the stack anyway).
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
        FreshSnapshot
    }
}

impl Drop for FreshSnapshot {
    fn drop(&mut self) {
        // SAFETY: pops the snapshot take() pushed.
        unsafe { pg_sys::PopActiveSnapshot() };
    }
}

/// Refuses when a server other than this one answers at the node's recorded address and acts
/// as the node (a live node is never replaced). An address that does not answer, or answers
/// with this server, or with a server that is not that node, is fine.
fn another_server_acts_as(me: &str, conninfo: &str) -> FedResult<()> {
    let Ok(mut r) = Remote::connect_within(
        conninfo,
        &format!("node \"{me}\"'s address"),
        ADDRESS_TIMEOUT,
    ) else {
        return Ok(());
    };
    if r.server_identity()? == spi::one::<String>(remote::WHOAMI, &[])? {
        return Ok(());
    }
    let acts =
        r.acting_as().is_ok_and(|n| n == me) && r.knows(me).is_ok_and(|(_, ready)| ready > 0);
    if acts {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            format!("node \"{me}\" is alive: another server answers as it at its address ({})", mask(conninfo)),
        )
        .detail("restore() takes the place of a node whose server is gone; replacing a live node would fork it.")
        .hint("To add this server as another node, give it another name (federation.node_name) and join(). To replace the node, stop its server first."));
    }
    Ok(())
}

/// How far `member`'s subscription from `node` had applied `node`'s WAL, as a number (0 when
/// it has no such subscription any more).
fn applied_from(r: &mut Remote, node: &str, member: &str) -> FedResult<u64> {
    let lsn = r.scalar(
        "SELECT o.remote_lsn::text FROM pg_catalog.pg_subscription s
         JOIN pg_catalog.pg_replication_origin_status o ON o.external_id = 'pg_' || s.oid
         WHERE s.subname = $1",
        &[Some(&subscription_name(node, member))],
    )?;
    Ok(lsn.as_deref().map(lsn_number).unwrap_or(0))
}

fn lsn_number(lsn: &str) -> u64 {
    let (hi, lo) = lsn.split_once('/').unwrap_or(("0", "0"));
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}

/// A restored dump's federation state, detached without contacting anyone else (the steps of
/// docs/runbook.md, "A restored copy of a node"), over `here`, a connection to this server:
/// committed at once, so that the members joining it see a node, not a copy. Returns whether
/// there was any.
fn detach(here: &mut Remote) -> FedResult<bool> {
    let subs = here.column(
        "SELECT subname::text FROM pg_catalog.pg_subscription
         WHERE subname LIKE 'federation\\_%' AND subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())",
        &[],
    )?;
    let pubs = here.column(
        "SELECT pubname::text FROM pg_catalog.pg_publication WHERE pubname LIKE 'federation\\_%'",
        &[],
    )?;
    let members = here.count("SELECT count(*) FROM federation.node", &[])?;
    if subs.is_empty() && pubs.is_empty() && members == 0 {
        return Ok(false);
    }
    for s in &subs {
        let s = quote_ident(s);
        // Without its slot, DROP SUBSCRIPTION contacts no one.
        here.exec(&format!("ALTER SUBSCRIPTION {s} DISABLE"))?;
        here.exec(&format!("ALTER SUBSCRIPTION {s} SET (slot_name = NONE)"))?;
        here.exec(&format!("DROP SUBSCRIPTION {s}"))?;
    }
    let mut statements: Vec<String> = pubs
        .iter()
        .map(|p| format!("DROP PUBLICATION {}", quote_ident(p)))
        .collect();
    statements.push("DELETE FROM federation.node".into());
    // The lost server's address, timeline and findings are not this server's.
    let mut reset = vec![
        "conninfo = NULL".to_string(),
        "server_id = federation.server_id()".into(),
    ];
    for column in ["timeline", "superseded"] {
        if catalog::local_node_has(column)? {
            reset.push(format!("{column} = NULL"));
        }
    }
    statements.push(format!(
        "UPDATE federation.local_node SET {}",
        reset.join(", ")
    ));
    here.exec(&format!("BEGIN; {}; COMMIT", statements.join("; ")))?;
    Ok(true)
}

/// Takes the node's rows back from the members' copies into this server's partitions (module
/// docs, step 3). Returns the rows inserted, replaced and set aside. The members' rows gather
/// in a temporary table here, a batch at a time, and are matched in SQL: memory is bounded by
/// a batch, whatever the partition's size.
fn take_back(me: &str, sources: &mut [Source]) -> FedResult<(usize, usize, usize)> {
    let (mut inserted, mut replaced, mut kept) = (0, 0, 0);
    for (name, value) in SAME_TEXT {
        spi::exec_args(
            "SELECT pg_catalog.set_config($1, $2, true)",
            &[name.into(), value.into()],
        )?;
    }
    for s in sources.iter_mut() {
        s.remote.same_text()?;
    }
    spi::exec(&format!(
        "CREATE TEMPORARY TABLE IF NOT EXISTS {TAKEN} (key text NOT NULL, hash text NOT NULL, row_text text NOT NULL, source int NOT NULL) ON COMMIT DROP"
    ))?;
    for c in copies_of(me, false)? {
        spi::exec(&format!("TRUNCATE {TAKEN}"))?;
        // The most advanced copy first: a key keeps the version that came first.
        let mut holders = 0;
        for s in sources.iter_mut() {
            let Some(part) = s.remote.partition_of(&c.table, me)? else {
                continue;
            };
            holders += 1;
            gather(&mut s.remote, &c.all_rows_sql(&part), holders)?;
        }
        if holders == 0 {
            continue;
        }
        if holders > 1 {
            // A key keeps the version of the most advanced member that holds it.
            spi::exec(&format!(
                "DELETE FROM {TAKEN} t USING {TAKEN} u WHERE u.key = t.key AND u.source < t.source"
            ))?;
        }
        // This server's rows that no member holds, and those a member holds otherwise. Read
        // by statements that see the rows just gathered (rows_fresh takes a new snapshot; a
        // read-only SPI query would use the snapshot restore() made active before them).
        let here = c.keys_sql(&c.copy);
        let tids = |condition: &str| -> FedResult<Vec<String>> {
            Ok(spi::rows_fresh(&format!(
                "SELECT h.tid FROM ({here}) h(tid, key, hash) WHERE {condition}"
            ))?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect())
        };
        let gone = tids(&format!(
            "NOT EXISTS (SELECT 1 FROM {TAKEN} t WHERE t.key = h.key)"
        ))?;
        let older = tids(&format!(
            "EXISTS (SELECT 1 FROM {TAKEN} t WHERE t.key = h.key AND t.hash <> h.hash)"
        ))?;
        for (tids, reason) in [(&gone, NO_MEMBER_HOLDS), (&older, MEMBER_HOLDS_OTHERWISE)] {
            if !tids.is_empty() {
                let tids: Vec<&str> = tids.iter().map(String::as_str).collect();
                set_aside(&c, me, &tids, reason)?;
            }
        }
        kept += gone.len();
        replaced += older.len();
        // Every gathered row whose key this server no longer holds (those it held otherwise
        // were just set aside; the rest are equal).
        let wanted = spi::exec_count(
            &c.insert_from_sql(&format!(
                "SELECT t.row_text::jsonb FROM {TAKEN} t
                 WHERE NOT EXISTS (SELECT 1 FROM ({here}) h(tid, key, hash) WHERE h.key = t.key)
                 OFFSET 0"
            )),
            &[],
        )
        .map_err(|e| {
            e.detail(format!(
                "Taking node \"{me}\"'s rows of {} back from the members' copies.",
                c.table
            ))
        })?;
        inserted += wanted - older.len();
    }
    Ok((inserted, replaced, kept))
}

/// Streams the rows of `query` (key, row hash, row text) on `remote` into [`TAKEN`], BATCH
/// rows per round trip, under one snapshot there, marked as from the `source`-th member.
fn gather(remote: &mut Remote, query: &str, source: i32) -> FedResult<()> {
    remote.exec(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; DECLARE federation_taken NO SCROLL CURSOR FOR {query}"
    ))?;
    // Each batch's arrays are made in a memory context of their own, emptied after it.
    let mut batch_memory = pgrx::PgMemoryContexts::new("pg_federation restore batch");
    loop {
        let rows = remote.query(&format!("FETCH {BATCH} FROM federation_taken"), &[])?;
        if rows.is_empty() {
            break;
        }
        let mut columns: [Vec<String>; 3] = Default::default();
        for row in rows {
            for (i, column) in columns.iter_mut().enumerate() {
                column.push(row.get(i).cloned().flatten().unwrap_or_default());
            }
        }
        let [keys, hashes, texts] = columns;
        // SAFETY: the context is emptied only after the statement, whose arguments are all
        // that was made in it, has run.
        unsafe {
            batch_memory.switch_to(|_| {
                spi::exec_args(
                    &format!(
                        "INSERT INTO {TAKEN} SELECT *, $4 FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::text[]))"
                    ),
                    &[keys.into(), hashes.into(), texts.into(), source.into()],
                )
            })?;
            batch_memory.reset();
        }
    }
    remote.exec("COMMIT")
}

/// Moves this server's rows of `c` at `tids` to federation.set_aside, in the node's name.
fn set_aside(c: &Copy, me: &str, tids: &[&str], reason: &str) -> FedResult<()> {
    let relid = c.relid.to_u32().to_string();
    let list = tid_array(tids);
    catalog::as_extension_owner(|| {
        spi::exec_args(
            &c.set_aside_sql(),
            &[
                list.as_str().into(),
                relid.as_str().into(),
                c.table.as_str().into(),
                me.into(),
                reason.into(),
            ],
        )
    })
}
