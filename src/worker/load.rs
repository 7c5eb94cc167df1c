//! A joining node's copies of a member's partitions, loaded by the worker instead of by
//! PostgreSQL's table sync.
//!
//! A table sync copies into a copy that keeps its indexes: every row goes into the primary
//! key's btree one at a time, and with random keys that is two thirds of the copy's time
//! (BENCHMARKS.md, "Joining 1,000,000 rows"). It cannot copy into a copy without indexes:
//! its catch-up applies the member's UPDATEs and DELETEs made during the copy, which need the
//! key. So for a member that holds rows the worker makes the copies itself, in one
//! transaction on this node:
//!
//! 1. on the member, a slot whose starting snapshot is exported
//!    (replication::slot_with_snapshot), and a transaction that imports it;
//! 2. here, in replica mode: the copies emptied (what a rejoining node's copies held kept aside,
//!    as for a table sync); per copy, [`load_begin`] takes it out of its table, drops the
//!    indexes the table gave it and adds a CHECK equal to its partition bound; the member's
//!    rows, as of the snapshot, relayed from `COPY ... TO STDOUT` there into
//!    `COPY ... FROM STDIN` here; [`load_end`] attaches it again (PostgreSQL builds the indexes
//!    by sorting, and the CHECK spares the scan that would prove the bound) and drops the CHECK;
//! 3. the subscription to the member, on that slot, without an initial copy; COMMIT.
//!
//! Nothing of it is visible until the COMMIT, and a failure anywhere rolls all of it back (the
//! pass records the error and retries). While it runs, the table is locked on this node
//! (DETACH takes an ACCESS EXCLUSIVE lock on it): queries on it here wait, for seconds per
//! million rows; the members are not touched. status() shows it (`load_in_progress`, the
//! COPY's progress). Tables the load cannot take apart and rebuild alike go to the table
//! sync, as before ([`loadable`]).

use crate::catalog::Member;
use crate::errors::{FedError, FedResult, OrRaise};
use crate::identity;
use crate::naming::subscription_name;
use crate::own_ddl;
use crate::preconditions::require_superuser;
use crate::remote::Remote;
use crate::replication::{self, SnapshotSlot};
use crate::spi::{self, quote_ident, quote_literal};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// The advisory lock class a load holds in its transaction on this node, with the
/// subscription's name hashed ([`LOAD_LOCK_KEY`]); status() reads it ([`load_in_progress`]).
const LOAD_LOCK: i32 = crate::locks::LOAD;
const LOAD_LOCK_KEY: &str = crate::locks::NAMED_KEY;

/// How long the member may send no row before the load counts as stalled and is retried.
const STALL: Duration = Duration::from_secs(120);

/// The CHECK constraint a copy carries while it is loaded: its partition bound.
const BOUND_CHECK: &str = "pg_federation_load";

/// Whether this node can load `copies` (its copies of one member's partitions, as names)
/// itself; false: a table sync copies them. Not when this node's SQL objects predate the load
/// (a rolling upgrade), when a copy's replica identity is an index of its own choosing (the
/// rebuilt index would not be it), or when a foreign key references a copy or its table (a
/// detached partition's referencing keys are checked again when it is attached).
pub fn loadable(here: &mut Remote, copies: &[String]) -> FedResult<bool> {
    if copies.is_empty()
        || here.scalar(
            "SELECT (pg_catalog.to_regprocedure('federation_internal.load_begin(text)') IS NOT NULL)::text",
            &[],
        )?
        .as_deref()
            != Some("true")
    {
        return Ok(false);
    }
    for c in copies {
        let refused = here.count(
            "SELECT count(*) FROM pg_catalog.pg_class r
             LEFT JOIN pg_catalog.pg_inherits h ON h.inhrelid = r.oid
             WHERE r.oid = $1::regclass
               AND (r.relreplident = 'i' OR h.inhparent IS NULL
                    OR EXISTS (SELECT FROM pg_catalog.pg_constraint f
                               WHERE f.contype = 'f' AND f.confrelid IN (r.oid, h.inhparent)))",
            &[Some(c)],
        )?;
        if refused > 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Loads this node's `copies` of member `m`'s partitions from `m` as of `slot`'s snapshot and
/// creates this node's subscription to `m` on that slot, in one transaction here (module
/// comment). Returns the rows loaded.
pub fn load_and_subscribe(
    my_conninfo: &str,
    me: &str,
    m: &Member,
    copies: &[String],
    slot: SnapshotSlot,
) -> FedResult<u64> {
    let started = Instant::now();
    let sub = subscription_name(&m.name, me);
    let mut source = Remote::connect(&m.conninfo, &format!("member \"{}\"", m.name))?;
    let mut dest = Remote::connect(my_conninfo, "this node (federation.node_conninfo)")?;
    // Rows travel as text: both sides write and read it alike. No statement of the load runs
    // into the 2 minutes allowed to one remote statement (an index build grows with the rows;
    // a stalled relay is caught by STALL instead).
    for r in [&mut source, &mut dest] {
        r.without_statement_timeout()?;
        r.exec("SET client_encoding = 'UTF8'")?;
        r.same_text()?;
    }
    source.exec(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
        quote_literal(&slot.snapshot)
    ))?;
    drop(slot); // imported: the replication connection that exported it may close
    let keep = replication::keeps_copies(&mut dest)?;
    dest.exec("BEGIN")?;
    dest.query(
        &format!("SELECT pg_catalog.pg_advisory_xact_lock({LOAD_LOCK}, {LOAD_LOCK_KEY})"),
        &[Some(&sub)],
    )?;
    // The member's row, locked until the load commits: leave() and drop_node() here change it
    // first, so they wait for the load (and then find its subscription to drop), or have
    // changed it already, and the load stops instead of subscribing for a node that goes.
    let state = dest.scalar(
        "SELECT state::text FROM federation.node WHERE node_name = $1 FOR SHARE",
        &[Some(&m.name)],
    )?;
    if state.as_deref() != Some("joining") {
        return Err(FedError::prerequisite(format!(
            "node \"{}\" is no longer joining this node (now: {}): its copies are not loaded",
            m.name,
            state.as_deref().unwrap_or("not a member")
        )));
    }
    dest.exec(&format!(
        "SET LOCAL session_replication_role = replica;\n{}",
        replication::empty_copies_sql(copies, keep)
    ))?;
    let (begin, end) = (dest.internal("load_begin")?, dest.internal("load_end")?);
    let mut ordered = copies.to_vec();
    ordered.sort();
    let mut rows = 0;
    for c in &ordered {
        let cols = dest
            .scalar(&format!("SELECT {begin}($1)"), &[Some(c)])?
            .unwrap_or_default();
        rows += source.relay_copy(
            &format!("COPY {c} ({cols}) TO STDOUT"),
            &mut dest,
            &format!("COPY {c} ({cols}) FROM STDIN"),
            STALL,
        )?;
        dest.query(&format!("SELECT {end}($1)"), &[Some(c)])?;
    }
    replication::subscribe_from_snapshot(&mut dest, &sub, &m.name, &m.conninfo)?;
    dest.exec("COMMIT")?;
    // The snapshot's transaction on the member only read.
    let _ = source.exec("COMMIT");
    log!(
        "pg_federation: loaded {rows} rows of node \"{}\" into this node's copies of its partitions in {:.2} s",
        m.name,
        started.elapsed().as_secs_f64()
    );
    Ok(rows)
}

/// Where `copy` belongs: (the copy, its table, the node whose partition it copies), names
/// as the catalog gives them; an error unless it is this node's copy of another node's
/// partition, and this session the worker's load of it (which holds the load's lock).
fn copy_of_another_node(copy: &str) -> FedResult<(String, String, String)> {
    let found = spi::rows(
        "SELECT p.partition::regclass::text, p.relid::regclass::text, p.node_name FROM federation.partition p
         WHERE p.partition = pg_catalog.to_regclass($1) AND p.node_name IS NOT NULL",
        &[copy.into()],
        |row| {
            Ok((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<String>(3)?.unwrap_or_default(),
            ))
        },
    )?;
    let me = identity::current_name()?;
    let found = match found.into_iter().next() {
        Some(found) if found.2 != me => found,
        _ => {
            return Err(FedError::invalid_value(format!(
                "\"{copy}\" is not this node's copy of another node's partition"
            ))
            .hint("Only pg_federation's worker loads copies, while this node joins."))
        }
    };
    if !crate::locks::named_held_here(LOAD_LOCK, &subscription_name(&found.2, &me))? {
        return Err(FedError::prerequisite(format!(
            "{} is loaded only by pg_federation's worker, in its transaction while this node joins",
            found.0
        ))
        .hint("Nothing to do by hand: join() makes the worker load a joining node's copies."));
    }
    Ok(found)
}

/// For the worker's load, in its transaction on this node: takes `copy` out of its table,
/// drops the indexes (and the constraints they back) that the table gave it, and adds a
/// CHECK equal to its partition bound. Returns its columns, quoted, for the COPY.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn load_begin(copy: &str) -> String {
    require_superuser("federation_internal.load_begin()").or_raise();
    load_begin_impl(copy).or_raise()
}

fn load_begin_impl(copy: &str) -> FedResult<String> {
    let (copy, table, _) = copy_of_another_node(copy)?;
    let copy = copy.as_str();
    let oid_of = "$1::regclass";
    let bound = spi::one::<String>(
        &format!("SELECT pg_catalog.pg_get_partition_constraintdef({oid_of})"),
        &[copy.into()],
    )?;
    let columns = spi::one::<String>(
        &format!(
            "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
             FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = {oid_of} AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''"
        ),
        &[copy.into()],
    )?
    .unwrap_or_default();
    // Read before the DETACH, which ends the indexes' belonging to the table's.
    let drops = spi::rows(
        &format!(
            "SELECT CASE WHEN k.conname IS NOT NULL
                         THEN pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', i.indrelid::regclass, k.conname)
                         ELSE pg_catalog.format('DROP INDEX %s', i.indexrelid::regclass) END
             FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_inherits h ON h.inhrelid = i.indexrelid
             LEFT JOIN pg_catalog.pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                                                  AND k.contype IN ('p', 'u', 'x')
             WHERE i.indrelid = {oid_of}"
        ),
        &[copy.into()],
        |row| Ok(row.get::<String>(1)?.unwrap_or_default()),
    )?;
    own_ddl::run(|| -> FedResult<()> {
        spi::exec(&format!("ALTER TABLE {table} DETACH PARTITION {copy}"))?;
        for d in &drops {
            spi::exec(d)?;
        }
        if let Some(bound) = &bound {
            spi::exec(&format!(
                "ALTER TABLE {copy} ADD CONSTRAINT {} CHECK ({bound})",
                quote_ident(BOUND_CHECK)
            ))?;
        }
        Ok(())
    })?;
    Ok(columns)
}

/// For the worker's load: attaches `copy` to its table again, as the partition of its node
/// (PostgreSQL builds the table's indexes on it), and drops the CHECK [`load_begin`] added.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn load_end(copy: &str) {
    require_superuser("federation_internal.load_end()").or_raise();
    let (copy, table, node) = copy_of_another_node(copy).or_raise();
    own_ddl::run(|| -> FedResult<()> {
        spi::exec(&format!(
            "ALTER TABLE {table} ATTACH PARTITION {copy} FOR VALUES IN ({})",
            quote_literal(&node)
        ))?;
        spi::exec(&format!(
            "ALTER TABLE {copy} DROP CONSTRAINT IF EXISTS {}",
            quote_ident(BOUND_CHECK)
        ))
    })
    .or_raise()
}

/// Whether the worker loads the copies that `subscription` will carry on this node now: it
/// holds its lock while its transaction runs. status() says "loading" then.
#[pg_extern(stable, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn load_in_progress(subscription: &str) -> bool {
    crate::locks::named_held(LOAD_LOCK, subscription).or_raise()
}
