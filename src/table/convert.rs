//! enable() of an ordinary table: it becomes this node's partition, with all its rows,
//! indexes, constraints and foreign keys, under a new LIST-partitioned parent that takes the
//! table's name, columns, defaults, CHECK constraints, identity, comments, owner, grants and
//! triggers (no rows are copied; ATTACH validates them with one scan). Its primary key and
//! unique constraints move to the parent, widened by the node column (table::keys), and its
//! sequences draw from this node's range once it has a node number (table::sequences).

use super::dressing::{self, Dressing};
use super::inspect::{self, NodeColumn};
use super::partitions::{self, ClaimNodeColumn};
use super::set_aside;
use super::{keys, publication, sequences, Table};
use crate::catalog;
use crate::errors::{notice, FedError, FedResult};
use crate::naming::partition_name;
use crate::spi::{self, qualified, quote_ident, quote_literal};

/// Every check convert_ordinary() makes before it changes anything: what a member runs
/// when asked whether it can federate the table too (federation_internal.enable_check()).
pub fn check(t: &Table, col: &str, me: &str) -> FedResult<NodeColumn> {
    inspect::check_replica_identity(t, "it")?;
    sequences::check_numberable(t)?;
    let others = catalog::other_members()?;
    let node_col = inspect::check_node_column(t, col, me, &others)?;
    for n in &others {
        inspect::check_name_free(&t.schema, &partition_name(&t.name, Some(n)), t)?;
    }
    inspect::check_name_free(&t.schema, &partition_name(&t.name, Some(me)), t)?;
    inspect::check_name_free(&t.schema, &partition_name(&t.name, None), t)?;
    for (name, _, _) in dressing::user_triggers(t.oid)? {
        if name.starts_with("_federation_guard") {
            return Err(FedError::unsupported(format!(
                "cannot federate {}: trigger {} uses a name reserved by pg_federation",
                t.qualified(),
                quote_ident(&name)
            ))
            .hint("Rename the trigger (ALTER TRIGGER ... RENAME TO ...)."));
        }
    }
    Ok(node_col)
}

pub fn convert_ordinary(t: &Table, col: &str, me: &str) -> FedResult<()> {
    let node_col = check(t, col, me)?;
    let others = catalog::other_members()?;
    let my_part = partition_name(&t.name, Some(me));

    // Everything is checked; from here on, change.
    let table_sql = t.qualified();
    let qcol = quote_ident(col);
    let dressing = Dressing::capture(t.oid, &table_sql)?;
    let keys = keys::movable(t.oid)?;

    // 1. The node column: every existing row belongs to this node, but rows in another
    //    member's name, which are set aside until their owner's copy arrives.
    dressing.strip_triggers(&table_sql)?;
    if let NodeColumn::Present { of_members, .. } = node_col {
        if of_members > 0 {
            let moved = set_aside::move_rows(
                t.oid,
                &table_sql,
                col,
                &others,
                "enabled again: rows held in another member's name",
            )?;
            let list: Vec<String> = moved
                .iter()
                .map(|(n, c)| format!("{c} of \"{n}\""))
                .collect();
            notice(format!(
                "table {table_sql}: {} row(s) in other members' names ({}) set aside in federation.set_aside; \
                 each is dropped from there once its owner's own copy holds it, and one that differs stays (health() names it)",
                of_members,
                list.join(", ")
            ));
        }
    }
    match node_col {
        NodeColumn::Absent => {
            // A constant default fills existing rows without rewriting the table. Collation
            // "C": node names are compared by bytes (partition routing of every inserted row,
            // the widened keys), not by the database's locale, which is slower and buys nothing
            // for names that are only ever compared for equality.
            spi::exec(&format!(
                "ALTER TABLE {table_sql} ADD COLUMN {qcol} text COLLATE \"C\" NOT NULL DEFAULT {}",
                quote_literal(me)
            ))?;
            partitions::claim_node_column(
                &table_sql,
                &qcol,
                me,
                ClaimNodeColumn {
                    fill_nulls: false,
                    set_not_null: false,
                },
            )?;
        }
        NodeColumn::Present {
            not_null,
            has_nulls,
            ..
        } => partitions::claim_node_column(
            &table_sql,
            &qcol,
            me,
            ClaimNodeColumn {
                fill_nulls: has_nulls,
                set_not_null: !not_null,
            },
        )?,
    }

    // 2. The table becomes this node's partition; a new parent takes its name.
    spi::exec(&format!(
        "ALTER TABLE {table_sql} RENAME TO {}",
        quote_ident(&my_part)
    ))?;
    let my_part_sql = qualified(&t.schema, &my_part);
    keys::drop_from(&my_part_sql, &keys)?;
    spi::exec(&format!(
        "CREATE TABLE {table_sql} (LIKE {my_part_sql} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED \
         INCLUDING IDENTITY INCLUDING COMMENTS INCLUDING STORAGE INCLUDING COMPRESSION) PARTITION BY LIST ({qcol})"
    ))?;
    let parent = super::relation_oid(&t.schema, &t.name)?;
    set_aside::retarget(t.oid, parent)?;
    spi::exec(&format!(
        "ALTER TABLE {table_sql} OWNER TO {}",
        quote_ident(&t.owner)
    ))?;
    dressing.restore_grants_and_comment(&table_sql)?;
    // Identity now lives on the parent (rows are inserted through it); it continues where
    // the table's sequence was.
    dressing.move_identities(&my_part_sql, &table_sql)?;
    // The keys, widened by the node column, on the parent: ATTACH builds them on the partition.
    keys::add_widened(&table_sql, &keys, col)?;
    spi::exec(&format!(
        "ALTER TABLE {table_sql} ATTACH PARTITION {my_part_sql} FOR VALUES IN ({})",
        quote_literal(me)
    ))?;
    // The table's own comment went to the parent with its grants; the partition says what it is.
    partitions::describe(&my_part_sql, &table_sql, Some(me))?;

    // 3. Partitions for the other members, and DEFAULT; guards on all of them.
    catalog::as_extension_owner(|| {
        catalog::insert_table(parent, col, false)?;
        catalog::set_original_keys(parent, &keys)?;
        catalog::insert_partition(parent, Some(me), t.oid)
    })?;
    let t_parent = Table::load(parent)?;
    if let Some(k) = catalog::node_number()? {
        sequences::number(&t_parent, k)?;
    }
    for n in &others {
        partitions::create_partition(&t_parent, col, Some(n), t.oid, &my_part_sql)?;
    }
    partitions::create_partition(&t_parent, col, None, t.oid, &my_part_sql)?;

    // 4. The user's triggers, now on the parent (row triggers are cloned to every partition).
    dressing.restore_triggers(&table_sql)?;

    // 5. Publish this node's partition.
    catalog::as_extension_owner(|| publication::add(me, t.oid, &my_part_sql))
}
