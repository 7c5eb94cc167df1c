//! `federation.enable(table)` and `federation.disable(table)`.
//!
//! enable() turns a table into a federated table in the caller's transaction:
//! - an ordinary table is renamed to this node's partition and attached, with all its rows,
//!   indexes, constraints and foreign keys, under a new LIST-partitioned parent that takes the
//!   table's name, columns, defaults, CHECK constraints, identity, comments, owner, grants and
//!   triggers (no rows are copied; ATTACH validates them with one scan);
//! - a table already LIST-partitioned by the node column is adopted as it is;
//! then every other member gets an empty partition (copied from this node's: same indexes and
//! primary key), a DEFAULT partition is added, guards go on every partition but this node's,
//! and this node's partition joins this node's publication.
//!
//! Locks, in order: ACCESS EXCLUSIVE on the table (before anything about it is read), then the
//! catalog rows of pg_federation, then the new relations as they are created. A ROLLBACK
//! undoes everything.

use crate::catalog;
use crate::errors::{FedError, FedResult, OrRaise};
use crate::guards;
use crate::identity::{self, validate_node_name};
use crate::naming::{partition_name, MAX_IDENT};
use crate::publication;
use crate::sql::{self, qualified, quote_ident, quote_literal};
use crate::table::{self, NodeColumn, Table};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn enable_table(relid: Option<pg_sys::Oid>, node_column: Option<&str>) {
    let relid = crate::errors::required(
        relid,
        "the table to enable",
        "SELECT federation.enable('public.hippos');",
    );
    let node_column = crate::errors::required(
        node_column,
        "the node column",
        "SELECT federation.enable('hippos', node_column => 'node_name');",
    );
    enable(relid, node_column).or_raise()
}

#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn disable_table(relid: Option<pg_sys::Oid>) {
    let relid = crate::errors::required(
        relid,
        "the table to disable",
        "SELECT federation.disable('public.hippos');",
    );
    disable(relid).or_raise()
}

fn check_owner(t: &Table, verb: &str) -> FedResult<()> {
    let ok = sql::one::<bool>(
        "SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[t.oid.into()],
    )?
    .unwrap_or(false);
    if !ok {
        return Err(FedError::privilege(format!(
            "must be owner of table {} to {verb} it",
            t.display()
        ))
        .hint(format!(
            "Run this as the table's owner ({}) or a superuser.",
            t.owner
        )));
    }
    Ok(())
}

fn check_node_column_name(col: &str) -> FedResult<()> {
    if col.is_empty() || col.len() > MAX_IDENT {
        return Err(
            FedError::invalid_value(format!("node column name \"{col}\" is not valid")).hint(
                "Give a column name of 1 to 63 bytes, for example node_column => 'node_name'.",
            ),
        );
    }
    Ok(())
}

pub fn enable(relid: pg_sys::Oid, node_column: &str) -> FedResult<()> {
    enable_with(relid, node_column, true)
}

/// `propagate`: on a node that already has members, check the table on every member first and
/// have the worker federate it there after COMMIT. The worker's own call on a member does
/// not propagate again.
pub fn enable_with(relid: pg_sys::Oid, node_column: &str, propagate: bool) -> FedResult<()> {
    check_node_column_name(node_column)?;
    let me = identity::current_name()?;
    // Already federated: only partitions may be added, under the lighter lock.
    if catalog::node_column(relid)?.is_some() {
        Table::lock_for_new_partitions(relid)?;
    } else {
        Table::lock_exclusive(relid)?;
    }
    let t = Table::load(relid)?;
    check_owner(&t, "federate")?;
    catalog::as_extension_owner(|| catalog::claim_local_name(&me))?;
    if let Some(existing) = catalog::node_column(relid)? {
        if existing != node_column {
            return Err(FedError::prerequisite(format!(
                "table {} is already federated by column {}",
                t.display(),
                quote_ident(&existing)
            ))
            .hint(format!(
                "Call federation.enable('{}') without node_column, or disable it first.",
                t.display()
            )));
        }
        let added = ensure_member_partitions(&t, &existing, &me)?;
        if added.is_empty() {
            notice(format!(
                "table {} is already federated; nothing to do",
                t.display()
            ));
        } else {
            notice(format!(
                "table {} is already federated; added partitions for {}",
                t.display(),
                added.join(", ")
            ));
        }
        return Ok(());
    }
    table::check_enrollable(&t)?;
    // Only a node that joined a federation (it has an address) spreads the table; members
    // recorded without a join (tests, a node being built) get partitions only.
    let joined = catalog::local_node()?.and_then(|(_, c)| c).is_some();
    let members = if propagate && joined {
        catalog::other_members()?
    } else {
        vec![]
    };
    if !members.is_empty() {
        let joining = sql::rows(
            "SELECT node_name FROM federation.node WHERE state = 'joining' ORDER BY 1",
            &[],
            |r| Ok(r.get::<String>(1)?.unwrap_or_default()),
        )?;
        if !joining.is_empty() {
            return Err(FedError::prerequisite(format!(
                "cannot federate {} while node(s) {} are joining",
                t.display(),
                joining.join(", ")
            ))
            .detail("A join wires the tables federated when it began; a table federated meanwhile would miss partitions or subscriptions on the joining node.")
            .hint("Wait until the join completes (SELECT federation.wait_ready();), then enable the table."));
        }
        crate::membership::check_table_on_members(&t, node_column)?;
    }
    match t.kind {
        'r' => convert_ordinary(&t, node_column, &me)?,
        _ => adopt_partitioned(&t, node_column, &me)?,
    }
    if !members.is_empty() {
        // The worker federates it on every member and refreshes every subscription.
        catalog::as_extension_owner(|| {
            // By name: an ordinary table's OID now belongs to this node's partition.
            sql::exec_args(
                "UPDATE federation.federated_table SET mesh_state = 'pending' WHERE relid = pg_catalog.to_regclass($1)",
                &[t.qualified().as_str().into()],
            )
        })?;
        crate::worker::wake();
    }
    Ok(())
}

fn notice(msg: String) {
    FedError::new(PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, msg).report(PgLogLevel::NOTICE);
}

/// Refuses when a partition name is taken by a relation that is not already ours.
fn check_name_free(schema: &str, name: &str, for_table: &Table) -> FedResult<()> {
    let taken = sql::one::<String>(
        "SELECT c.relkind::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2",
        &[schema.into(), name.into()],
    )?;
    if taken.is_some() {
        let q = qualified(schema, name);
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
            format!(
                "cannot federate {}: partition name {q} is already taken by another relation",
                for_table.display()
            ),
        )
        .hint(format!(
            "Rename or drop {q}; pg_federation names partitions <table>_<node>."
        )));
    }
    Ok(())
}

struct Identity {
    column: String,
    kind: String, // 'a' ALWAYS or 'd' BY DEFAULT
    last_value: i64,
    is_called: bool,
}

fn identity_columns(oid: pg_sys::Oid, table_sql: &str) -> FedResult<Vec<Identity>> {
    let cols = sql::rows(
        "SELECT attname::text, attidentity::text FROM pg_catalog.pg_attribute
         WHERE attrelid = $1 AND attidentity <> '' AND NOT attisdropped ORDER BY attnum",
        &[oid.into()],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
            ))
        },
    )?;
    let mut out = vec![];
    for (column, kind) in cols {
        let seq = sql::one::<String>(
            "SELECT pg_catalog.pg_get_serial_sequence($1, $2)",
            &[table_sql.into(), column.as_str().into()],
        )?
        .ok_or_else(|| FedError::internal(format!("identity column {column} has no sequence")))?;
        let (last_value, is_called) = sql::rows(
            &format!("SELECT last_value, is_called FROM {seq}"),
            &[],
            |r| {
                Ok((
                    r.get::<i64>(1)?.unwrap_or(1),
                    r.get::<bool>(2)?.unwrap_or(false),
                ))
            },
        )?
        .into_iter()
        .next()
        .unwrap_or((1, false));
        out.push(Identity {
            column,
            kind,
            last_value,
            is_called,
        });
    }
    Ok(out)
}

/// The user's own triggers on a table (not internal, not cloned from a parent), as
/// (name, CREATE TRIGGER statement, tgenabled).
fn user_triggers(oid: pg_sys::Oid) -> FedResult<Vec<(String, String, String)>> {
    sql::rows(
        "SELECT tgname::text, pg_catalog.pg_get_triggerdef(oid, false), tgenabled::text
         FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal AND tgparentid = 0
           AND tgname NOT IN ('_federation_guard', '_federation_guard_truncate')
         ORDER BY tgname",
        &[oid.into()],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
            ))
        },
    )
}

fn restore_trigger_state(table_sql: &str, name: &str, enabled: &str) -> FedResult<()> {
    let action = match enabled {
        "D" => "DISABLE TRIGGER",
        "A" => "ENABLE ALWAYS TRIGGER",
        "R" => "ENABLE REPLICA TRIGGER",
        _ => return Ok(()),
    };
    sql::exec(&format!(
        "ALTER TABLE {table_sql} {action} {}",
        quote_ident(name)
    ))
}

/// GRANT statements reproducing a relation's privileges on another relation.
fn grants(from: pg_sys::Oid, to_sql: &str) -> FedResult<Vec<String>> {
    sql::rows(
        "SELECT a.privilege_type,
                CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END,
                a.is_grantable
         FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
         WHERE c.oid = $1 AND a.grantee <> c.relowner ORDER BY 2, 1",
        &[from.into()],
        |r| {
            let opt = if r.get::<bool>(3)?.unwrap_or(false) { " WITH GRANT OPTION" } else { "" };
            Ok(format!(
                "GRANT {} ON TABLE {to_sql} TO {}{opt}",
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default()
            ))
        },
    )
}

fn table_comment(oid: pg_sys::Oid) -> FedResult<Option<String>> {
    sql::one::<String>(
        "SELECT pg_catalog.obj_description($1, 'pg_class')",
        &[oid.into()],
    )
}

fn relation_oid(schema: &str, name: &str) -> FedResult<pg_sys::Oid> {
    sql::one::<pg_sys::Oid>(
        "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2",
        &[schema.into(), name.into()],
    )?
    .ok_or_else(|| FedError::internal(format!("relation {} vanished", qualified(schema, name))))
}

fn convert_ordinary(t: &Table, col: &str, me: &str) -> FedResult<()> {
    table::check_replica_identity(t, "it")?;
    let node_col = table::check_node_column(t, col, me)?;
    let others = catalog::other_members()?;
    let my_part = partition_name(&t.name, Some(me));
    let default_part = partition_name(&t.name, None);
    for n in &others {
        check_name_free(&t.schema, &partition_name(&t.name, Some(n)), t)?;
    }
    check_name_free(&t.schema, &my_part, t)?;
    check_name_free(&t.schema, &default_part, t)?;
    for (name, _, _) in user_triggers(t.oid)? {
        if name.starts_with("_federation_guard") {
            return Err(FedError::unsupported(format!(
                "cannot federate {}: trigger {} uses a name reserved by pg_federation",
                t.display(),
                quote_ident(&name)
            ))
            .hint("Rename the trigger (ALTER TRIGGER ... RENAME TO ...)."));
        }
    }

    // Everything is checked; from here on, change.
    let table_sql = t.qualified();
    let qcol = quote_ident(col);
    let triggers = user_triggers(t.oid)?;
    let identities = identity_columns(t.oid, &table_sql)?;
    let comment = table_comment(t.oid)?;
    let grant_sql = grants(t.oid, &table_sql)?;

    // 1. The node column: every existing row belongs to this node.
    for (name, _, _) in &triggers {
        sql::exec(&format!(
            "DROP TRIGGER {} ON {table_sql}",
            quote_ident(name)
        ))?;
    }
    match node_col {
        NodeColumn::Absent => {
            // A constant default fills existing rows without rewriting the table.
            sql::exec(&format!(
                "ALTER TABLE {table_sql} ADD COLUMN {qcol} text NOT NULL DEFAULT {}",
                quote_literal(me)
            ))?;
            claim_node_column(&table_sql, &qcol, me, false, false)?;
        }
        NodeColumn::Present {
            not_null,
            has_nulls,
        } => claim_node_column(&table_sql, &qcol, me, has_nulls, !not_null)?,
    }

    // 2. The table becomes this node's partition; a new parent takes its name.
    sql::exec(&format!(
        "ALTER TABLE {table_sql} RENAME TO {}",
        quote_ident(&my_part)
    ))?;
    let my_part_sql = qualified(&t.schema, &my_part);
    sql::exec(&format!(
        "CREATE TABLE {table_sql} (LIKE {my_part_sql} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED \
         INCLUDING IDENTITY INCLUDING COMMENTS INCLUDING STORAGE INCLUDING COMPRESSION) PARTITION BY LIST ({qcol})"
    ))?;
    let parent = relation_oid(&t.schema, &t.name)?;
    sql::exec(&format!(
        "ALTER TABLE {table_sql} OWNER TO {}",
        quote_ident(&t.owner)
    ))?;
    for g in &grant_sql {
        sql::exec(g)?;
    }
    if let Some(c) = &comment {
        sql::exec(&format!(
            "COMMENT ON TABLE {table_sql} IS {}",
            quote_literal(c)
        ))?;
    }
    // Identity now lives on the parent (rows are inserted through it); it continues where
    // the table's sequence was.
    for id in &identities {
        sql::exec(&format!(
            "ALTER TABLE {my_part_sql} ALTER COLUMN {} DROP IDENTITY",
            quote_ident(&id.column)
        ))?;
        continue_sequence(&table_sql, id)?;
    }
    sql::exec(&format!(
        "ALTER TABLE {table_sql} ATTACH PARTITION {my_part_sql} FOR VALUES IN ({})",
        quote_literal(me)
    ))?;

    // 3. Partitions for the other members, and DEFAULT; guards on all of them.
    catalog::as_extension_owner(|| {
        catalog::insert_table(parent, col, false)?;
        catalog::insert_partition(parent, Some(me), t.oid)
    })?;
    let t_parent = Table::load(parent)?;
    for n in &others {
        create_partition(&t_parent, col, Some(n), t.oid, &my_part_sql)?;
    }
    create_partition(&t_parent, col, None, t.oid, &my_part_sql)?;

    // 4. The user's triggers, now on the parent (row triggers are cloned to every partition).
    for (name, def, enabled) in &triggers {
        sql::exec(def)?;
        restore_trigger_state(&table_sql, name, enabled)?;
    }

    // 5. Publish this node's partition.
    catalog::as_extension_owner(|| publication::add(me, t.oid, &my_part_sql))
}

/// Creates the partition of `t` owned by `owner` (None: DEFAULT) as a copy of the template
/// partition's structure (columns, indexes, primary key, CHECKs), attaches it, guards it and
/// records it. Returns its name.
fn create_partition(
    t: &Table,
    col: &str,
    owner: Option<&str>,
    template: pg_sys::Oid,
    local_part_sql: &str,
) -> FedResult<String> {
    let (name, oid, part_sql) = make_partition(t, owner, template)?;
    guards::install(&part_sql, owner, &t.display(), col, local_part_sql)?;
    catalog::as_extension_owner(|| catalog::insert_partition(t.oid, owner, oid))?;
    Ok(name)
}

/// The partition of `t` for `owner` (None: DEFAULT), copied from the template partition
/// (columns, indexes, primary key, CHECKs, replica identity), owned like `t` and attached.
/// Returns (name, oid, qualified SQL name). No guards, no catalog row: callers add those.
fn make_partition(
    t: &Table,
    owner: Option<&str>,
    template: pg_sys::Oid,
) -> FedResult<(String, pg_sys::Oid, String)> {
    let name = partition_name(&t.name, owner);
    check_name_free(&t.schema, &name, t)?;
    let part_sql = qualified(&t.schema, &name);
    sql::exec(&format!(
        "CREATE TABLE {part_sql} (LIKE {} INCLUDING ALL EXCLUDING IDENTITY)",
        oid_sql(template)?
    ))?;
    sql::exec(&format!(
        "ALTER TABLE {part_sql} OWNER TO {}",
        quote_ident(&t.owner)
    ))?;
    copy_replica_identity(template, &part_sql, &t.schema, &name)?;
    let bound = match owner {
        Some(n) => format!("FOR VALUES IN ({})", quote_literal(n)),
        None => "DEFAULT".to_string(),
    };
    sql::exec(&format!(
        "ALTER TABLE {} ATTACH PARTITION {part_sql} {bound}",
        t.qualified()
    ))?;
    let oid = relation_oid(&t.schema, &name)?;
    Ok((name, oid, part_sql))
}

/// REPLICA IDENTITY FULL or USING INDEX carries over to a partition copied with LIKE.
fn copy_replica_identity(
    template: pg_sys::Oid,
    part_sql: &str,
    schema: &str,
    part_name: &str,
) -> FedResult<()> {
    let ident = sql::one::<String>(
        "SELECT relreplident::text FROM pg_catalog.pg_class WHERE oid = $1",
        &[template.into()],
    )?
    .unwrap_or_default();
    match ident.as_str() {
        "f" => sql::exec(&format!("ALTER TABLE {part_sql} REPLICA IDENTITY FULL")),
        "i" => {
            let part = relation_oid(schema, part_name)?;
            let idx = sql::one::<String>(
                "SELECT c2.relname::text FROM pg_catalog.pg_index i1
                 JOIN pg_catalog.pg_index i2 ON i2.indrelid = $2 AND i2.indkey::text = i1.indkey::text AND i2.indisunique
                 JOIN pg_catalog.pg_class c2 ON c2.oid = i2.indexrelid
                 WHERE i1.indrelid = $1 AND i1.indisreplident LIMIT 1",
                &[template.into(), part.into()],
            )?
            .ok_or_else(|| FedError::internal(format!("no index on {part_sql} matches the replica identity index")))?;
            sql::exec(&format!(
                "ALTER TABLE {part_sql} REPLICA IDENTITY USING INDEX {}",
                quote_ident(&idx)
            ))
        }
        _ => Ok(()),
    }
}

/// Partitions of a partitioned table: (oid, name, relkind, bound expression, is default).
fn child_partitions(oid: pg_sys::Oid) -> FedResult<Vec<(pg_sys::Oid, String, String, String)>> {
    sql::rows(
        "SELECT c.oid, c.relname::text, c.relkind::text, pg_catalog.pg_get_expr(c.relpartbound, c.oid)
         FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = $1 ORDER BY c.relname",
        &[oid.into()],
        |r| {
            Ok((
                r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
            ))
        },
    )
}

/// `FOR VALUES IN ('east')` -> Some("east"); DEFAULT -> None; anything else is refused.
fn single_list_value(bound: &str) -> Result<Option<String>, ()> {
    if bound == "DEFAULT" {
        return Ok(None);
    }
    let inner = bound
        .strip_prefix("FOR VALUES IN ('")
        .and_then(|r| r.strip_suffix("')"))
        .ok_or(())?;
    // A single literal: quotes inside are doubled; a "', '" would mean several values.
    if inner.replace("''", "").contains('\'') {
        return Err(());
    }
    Ok(Some(inner.replace("''", "'")))
}

fn adopt_partitioned(t: &Table, col: &str, me: &str) -> FedResult<()> {
    let name = t.display();
    let key = sql::rows(
        "SELECT p.partstrat::text, p.partnatts::int4, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
         FROM pg_catalog.pg_partitioned_table p
         LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
         WHERE p.partrelid = $1",
        &[t.oid.into()],
        |r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<i32>(2)?.unwrap_or(0), r.get::<String>(3)?, r.get::<String>(4)?)),
    )?;
    let Some((strat, natts, attname, atttype)) = key.into_iter().next() else {
        return Err(FedError::internal(format!(
            "{name} is partitioned but has no partition key"
        )));
    };
    if strat != "l" || natts != 1 || attname.as_deref() != Some(col) {
        return Err(FedError::unsupported(format!("cannot federate {name}: it is partitioned, but not by LIST ({})", quote_ident(col)))
            .detail("A federated table is LIST-partitioned by its node column, one partition per node.")
            .hint("Name the partition key column with node_column => '...', or federate an ordinary table."));
    }
    if atttype.as_deref() != Some("text") {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!(
                "cannot federate {name}: its node column {} is of type {}, not text",
                quote_ident(col),
                atttype.unwrap_or_default()
            ),
        )
        .hint("The node column of a federated table must be text."));
    }

    // Every partition: an ordinary table for one valid node name, or DEFAULT.
    let children = child_partitions(t.oid)?;
    let mut owned: Vec<(Option<String>, pg_sys::Oid, String)> = vec![];
    for (oid, pname, kind, bound) in &children {
        let pdisplay = qualified(&t.schema, pname);
        if kind != "r" {
            return Err(FedError::unsupported(format!(
                "cannot federate {name}: its partition {pdisplay} is not an ordinary table"
            ))
            .hint("Sub-partitioned and foreign partitions cannot be federated."));
        }
        let node = single_list_value(bound).map_err(|_| {
            FedError::unsupported(format!("cannot federate {name}: partition {pdisplay} is {bound}, not one node"))
                .hint("Each partition of a federated table holds exactly one node's rows: FOR VALUES IN ('<node>').")
        })?;
        if let Some(n) = &node {
            validate_node_name(n, &format!("partition {pdisplay}"))?;
        }
        let pt = Table::load(*oid)?;
        table::check_replica_identity(&pt, &format!("its partition {pdisplay}"))?;
        owned.push((node, *oid, pdisplay));
    }
    let template = owned
        .iter()
        .find(|(n, _, _)| n.as_deref() == Some(me))
        .or_else(|| owned.iter().find(|(n, _, _)| n.is_some()))
        .map(|(_, oid, _)| *oid)
        .ok_or_else(|| {
            FedError::prerequisite(format!("cannot federate {name}: it has no node partition to copy"))
                .hint(format!("Create this node's partition first: CREATE TABLE ... PARTITION OF {name} FOR VALUES IN ('{me}') with a primary key."))
        })?;
    let others = catalog::other_members()?;
    for n in others.iter().map(String::as_str).chain([me]) {
        if !owned.iter().any(|(o, _, _)| o.as_deref() == Some(n)) {
            check_name_free(&t.schema, &partition_name(&t.name, Some(n)), t)?;
        }
    }
    if !owned.iter().any(|(o, _, _)| o.is_none()) {
        check_name_free(&t.schema, &partition_name(&t.name, None), t)?;
    }

    // Checked; now change. Rows without a node (in DEFAULT) belong to this node.
    let table_sql = t.qualified();
    let qcol = quote_ident(col);
    catalog::as_extension_owner(|| catalog::insert_table(t.oid, col, true))?;
    let mut local_sql = owned
        .iter()
        .find(|(n, _, _)| n.as_deref() == Some(me))
        .map(|(_, _, s)| s.clone());
    if local_sql.is_none() {
        let (_, oid, part_sql) = make_partition(t, Some(me), template)?;
        owned.push((Some(me.to_string()), oid, part_sql.clone()));
        local_sql = Some(part_sql);
    }
    let local_sql = local_sql.unwrap();
    claim_node_column(&table_sql, &qcol, me, true, true)?;

    for (node, oid, psql) in &owned {
        if node.as_deref() != Some(me) {
            guards::install(psql, node.as_deref(), &name, col, &local_sql)?;
        }
        catalog::as_extension_owner(|| catalog::insert_partition(t.oid, node.as_deref(), *oid))?;
    }
    let local_oid = owned
        .iter()
        .find(|(n, _, _)| n.as_deref() == Some(me))
        .map(|(_, o, _)| *o)
        .unwrap();
    for n in &others {
        if !owned
            .iter()
            .any(|(o, _, _)| o.as_deref() == Some(n.as_str()))
        {
            create_partition(t, col, Some(n), local_oid, &local_sql)?;
        }
    }
    if !owned.iter().any(|(o, _, _)| o.is_none()) {
        create_partition(t, col, None, local_oid, &local_sql)?;
    }
    warn_about_recipe_triggers(t)?;
    catalog::as_extension_owner(|| publication::add(me, local_oid, &local_sql))
}

fn oid_sql(oid: pg_sys::Oid) -> FedResult<String> {
    sql::one::<String>("SELECT $1::oid::regclass::text", &[oid.into()])?
        .ok_or_else(|| FedError::internal("relation vanished"))
}

/// The original recipe's AFTER INSERT statement trigger rewrites every inserted row; with
/// enable() the node column defaults to this node, so it only costs. Say so; leave it.
fn warn_about_recipe_triggers(t: &Table) -> FedResult<()> {
    let trigs = sql::rows(
        "SELECT tgname::text FROM pg_catalog.pg_trigger
         WHERE tgrelid = $1 AND NOT tgisinternal AND tgparentid = 0
           AND (tgtype & 1) = 0 AND (tgtype & 2) = 0 AND (tgtype & 4) <> 0",
        &[t.oid.into()],
        |r| r.get::<String>(1),
    )?;
    for name in trigs.into_iter().flatten() {
        notice(format!(
            "trigger {} on {} runs after every INSERT statement; the node column now defaults to this node, so it may no longer be needed (DROP TRIGGER {} ON {};)",
            quote_ident(&name), t.display(), quote_ident(&name), t.display()
        ));
    }
    Ok(())
}

/// Creates the partitions members are missing (a member added since enable()). Returns the
/// nodes it added partitions for.
pub fn ensure_member_partitions(t: &Table, col: &str, me: &str) -> FedResult<Vec<String>> {
    let parts = catalog::partitions(t.oid)?;
    let Some((_, local)) = parts.iter().find(|(n, _)| n.as_deref() == Some(me)) else {
        return Err(FedError::prerequisite(format!(
            "federated table {} has no partition for this node \"{me}\"",
            t.display()
        ))
        .detail("This node's name has changed since the table was federated.")
        .hint("Restore federation.node_name to the name this node had, and reload."));
    };
    let local_sql = oid_sql(*local)?;
    let mut added = vec![];
    for n in catalog::other_members()? {
        if !parts.iter().any(|(o, _)| o.as_deref() == Some(n.as_str())) {
            create_partition(t, col, Some(&n), *local, &local_sql)?;
            added.push(n);
        }
    }
    Ok(added)
}

pub fn disable(relid: pg_sys::Oid) -> FedResult<()> {
    // On a joined node the members replicate into this table's partitions here, and this
    // node into theirs: the table is disabled on every member at once (crate::unfederate),
    // each node through its own session, so this one takes no lock on it.
    let joined = catalog::local_node()?.and_then(|(_, c)| c).is_some();
    if joined && !catalog::other_members()?.is_empty() {
        let t = Table::load(relid)?;
        check_owner(&t, "disable")?;
        if catalog::node_column(relid)?.is_none() {
            return Err(not_federated(&t));
        }
        return crate::unfederate::disable_everywhere(&t);
    }
    disable_here(relid)
}

fn not_federated(t: &Table) -> FedError {
    FedError::prerequisite(format!("table {} is not federated", t.display()))
        .hint("federation.tables lists the federated tables on this node.")
}

/// Turns the table back into an ordinary one on this node only (see [`disable`]).
pub fn disable_here(relid: pg_sys::Oid) -> FedResult<()> {
    let me = identity::current_name()?;
    Table::lock_exclusive(relid)?;
    let t = Table::load(relid)?;
    check_owner(&t, "disable")?;
    let Some(col) = catalog::node_column(relid)? else {
        return Err(not_federated(&t));
    };
    let parts = catalog::partitions(relid)?;
    let Some((_, local)) = parts
        .iter()
        .find(|(n, _)| n.as_deref() == Some(me.as_str()))
        .cloned()
    else {
        return Err(FedError::prerequisite(format!("federated table {} has no partition for this node \"{me}\"", t.display()))
            .hint("Restore federation.node_name to the name this node had when the table was federated, and reload."));
    };
    let table_sql = t.qualified();
    let local_sql = oid_sql(local)?;
    let columns: Vec<String> = sql::rows(
        "SELECT pg_catalog.quote_ident(attname) FROM pg_catalog.pg_attribute
         WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        &[local.into()],
        |r| r.get::<String>(1),
    )?
    .into_iter()
    .flatten()
    .collect();
    check_no_key_collisions(&t, local, &parts)?;

    // Checked; now change.
    let triggers = user_triggers(relid)?;
    let identities = identity_columns(relid, &table_sql)?;
    let comment = table_comment(relid)?;
    let grant_sql = grants(relid, &qualified(&t.schema, &t.name))?;
    catalog::as_extension_owner(|| publication::remove(&me, local, &local_sql))?;
    for (name, _, _) in &triggers {
        sql::exec(&format!(
            "DROP TRIGGER {} ON {table_sql}",
            quote_ident(name)
        ))?;
    }
    // Detach everything first: a partition keeps its partition constraint until detached.
    let part_sql: Vec<(pg_sys::Oid, String)> = parts
        .iter()
        .map(|(_, oid)| Ok((*oid, oid_sql(*oid)?)))
        .collect::<FedResult<_>>()?;
    for (_, psql) in &part_sql {
        sql::exec(&format!("ALTER TABLE {table_sql} DETACH PARTITION {psql}"))?;
    }
    let cols = columns.join(", ");
    for (oid, psql) in &part_sql {
        if *oid != local {
            guards::remove(psql)?;
            sql::exec(&format!(
                "INSERT INTO {local_sql} ({cols}) SELECT {cols} FROM {psql}"
            ))?;
            sql::exec(&format!("DROP TABLE {psql}"))?;
        }
    }
    catalog::as_extension_owner(|| catalog::delete_table(relid))?;
    sql::exec(&format!("DROP TABLE {table_sql}"))?;
    sql::exec(&format!(
        "ALTER TABLE {local_sql} RENAME TO {}",
        quote_ident(&t.name)
    ))?;
    // The table is ordinary again: its node column keeps its values, and defaults to this
    // node's name as a constant (no dependency on pg_federation).
    sql::exec(&format!(
        "ALTER TABLE {table_sql} ALTER COLUMN {} SET DEFAULT {}",
        quote_ident(&col),
        quote_literal(&me)
    ))?;
    for id in &identities {
        let how = if id.kind == "a" {
            "ALWAYS"
        } else {
            "BY DEFAULT"
        };
        sql::exec(&format!(
            "ALTER TABLE {table_sql} ALTER COLUMN {} ADD GENERATED {how} AS IDENTITY",
            quote_ident(&id.column)
        ))?;
        continue_sequence(&table_sql, id)?;
    }
    sql::exec(&format!("REVOKE ALL ON TABLE {table_sql} FROM PUBLIC"))?;
    for g in &grant_sql {
        sql::exec(g)?;
    }
    if let Some(c) = &comment {
        sql::exec(&format!(
            "COMMENT ON TABLE {table_sql} IS {}",
            quote_literal(c)
        ))?;
    }
    for (name, def, enabled) in &triggers {
        sql::exec(def)?;
        restore_trigger_state(&table_sql, name, enabled)?;
    }
    Ok(())
}

/// disable() merges every partition into one table: refuse up front when two nodes hold
/// rows with the same primary key.
fn check_no_key_collisions(
    t: &Table,
    local: pg_sys::Oid,
    parts: &[(Option<String>, pg_sys::Oid)],
) -> FedResult<()> {
    let key: Vec<String> = sql::rows(
        "SELECT pg_catalog.quote_ident(a.attname) FROM pg_catalog.pg_index i
         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = $1 AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
        &[local.into()],
        |r| r.get::<String>(1),
    )?
    .into_iter()
    .flatten()
    .collect();
    if key.is_empty() || parts.len() < 2 {
        return Ok(());
    }
    let k = key.join(", ");
    let union: Vec<String> = parts
        .iter()
        .map(|(_, oid)| Ok(format!("SELECT {k} FROM {}", oid_sql(*oid)?)))
        .collect::<FedResult<_>>()?;
    let q = format!(
        "SELECT ({k})::text FROM ({}) u GROUP BY {k} HAVING count(*) > 1 LIMIT 1",
        union.join(" UNION ALL ")
    );
    if let Some(dup) = sql::one::<String>(&q, &[])? {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            format!("cannot disable {}: primary key ({k}) = {dup} exists in more than one node's partition", t.display()),
        )
        .detail("disable() merges every node's rows into one ordinary table, whose primary key must be unique.")
        .hint("Delete or renumber the duplicate rows on the nodes that own them, then call disable() again."));
    }
    Ok(())
}

/// Sets the identity sequence of `id.column` on `table_sql` to where the table's old one was.
fn continue_sequence(table_sql: &str, id: &Identity) -> FedResult<()> {
    let seq = sql::one::<String>(
        "SELECT pg_catalog.pg_get_serial_sequence($1, $2)",
        &[table_sql.into(), id.column.as_str().into()],
    )?
    .ok_or_else(|| {
        FedError::internal(format!(
            "identity sequence of {table_sql}.{} missing",
            id.column
        ))
    })?;
    sql::exec_args(
        "SELECT pg_catalog.setval($1::regclass, $2, $3)",
        &[
            seq.as_str().into(),
            id.last_value.into(),
            id.is_called.into(),
        ],
    )
}

/// The node column of an enrolled table: rows without a node become this node's (`fill`),
/// the column NOT NULL (`set_not_null`), and its default `federation.node_name()`.
fn claim_node_column(
    table_sql: &str,
    qcol: &str,
    me: &str,
    fill: bool,
    set_not_null: bool,
) -> FedResult<()> {
    if fill {
        sql::exec_args(
            &format!("UPDATE {table_sql} SET {qcol} = $1 WHERE {qcol} IS NULL"),
            &[me.into()],
        )?;
    }
    if set_not_null {
        sql::exec(&format!(
            "ALTER TABLE {table_sql} ALTER COLUMN {qcol} SET NOT NULL"
        ))?;
    }
    sql::exec(&format!(
        "ALTER TABLE {table_sql} ALTER COLUMN {qcol} SET DEFAULT federation.node_name()"
    ))
}
