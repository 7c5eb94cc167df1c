//! What a DDL statement does to federated tables, read from its parse tree before it runs:
//! nothing (it runs as usual), a change every member makes in the same transaction
//! (docs/migrations.md lists them), or something that cannot be made safe, refused with the
//! way forward.

use super::names;
use crate::catalog;
use crate::errors::{FedError, FedResult};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::ffi::CStr;

pub(super) const ESCAPE: &str = "In an emergency a superuser may run it on this node only after SET federation.unsafe_ddl = on; health() then reports the schemas as different (docs/migrations.md).";

/// What a statement does to federated tables.
pub(super) enum Verdict {
    /// Not about a federated table: runs as usual, here only.
    Pass,
    /// Refused before anything changes.
    Refuse(FedError),
    /// A change of one federated table that every member makes in this transaction.
    Federate(Change),
}

/// A schema change of a federated table, and what it needs around it.
#[derive(Debug, Default)]
pub(super) struct Change {
    pub table: pg_sys::Oid,
    /// Columns it adds: where a default is not immutable (now(), gen_random_uuid(), a
    /// sequence), each owner republishes its rows' values so that every copy holds them.
    pub added: Vec<String>,
    /// Columns whose values it recomputes (ALTER TYPE ... USING): owners republish them.
    pub recomputed: Vec<String>,
    /// It drops or renames columns, which the rows this transaction already wrote still carry.
    pub drops_columns: bool,
    /// ALTER TABLE ... RENAME TO: every node renames the partitions after it.
    pub renames_table: bool,
    /// DROP TABLE: every node forgets the table in its catalog.
    pub drops_table: bool,
}

impl Change {
    fn of(table: pg_sys::Oid) -> Change {
        Change {
            table,
            ..Default::default()
        }
    }
}

/// The federated table `oid` is, or the one it is a partition of.
enum Role {
    None,
    Parent { node_column: String },
    Partition { parent: String },
}

fn role(oid: pg_sys::Oid) -> FedResult<Role> {
    if oid == pg_sys::InvalidOid {
        return Ok(Role::None);
    }
    Ok(match catalog::federated_table_of(oid)? {
        None => Role::None,
        Some((parent, _)) if parent == oid => Role::Parent {
            node_column: catalog::node_column(oid)?.unwrap_or_default(),
        },
        Some((_, parent)) => Role::Partition { parent },
    })
}

/// `ALTER TABLE ONLY` / `CREATE INDEX ... ON ONLY`: the form pg_dump writes for a partitioned
/// table's keys and indexes, one relation at a time (a restore rebuilds each node's own
/// objects). PostgreSQL refuses the forms that would leave partitions different (ONLY with a
/// new column or CHECK constraint on a partitioned table), so these run here only.
unsafe fn only(rv: *mut pg_sys::RangeVar) -> bool {
    !rv.is_null() && !(*rv).inh
}

pub(super) unsafe fn relid_of(rv: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    if rv.is_null() {
        return pg_sys::InvalidOid;
    }
    pg_sys::RangeVarGetRelidExtended(
        rv,
        pg_sys::NoLock as pg_sys::LOCKMODE,
        pg_sys::RVROption::RVR_MISSING_OK,
        None,
        std::ptr::null_mut(),
    )
}

unsafe fn relid_of_names(list: *mut pg_sys::List) -> pg_sys::Oid {
    if list.is_null() {
        return pg_sys::InvalidOid;
    }
    relid_of(pg_sys::makeRangeVarFromNameList(list))
}

unsafe fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

fn relname(oid: pg_sys::Oid) -> String {
    crate::spi::one::<String>("SELECT $1::oid::regclass::text", &[oid.into()])
        .ok()
        .flatten()
        .unwrap_or_else(|| format!("{oid:?}"))
}

fn unsupported(message: String, hint: &str) -> Verdict {
    Verdict::Refuse(
        FedError::new(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, message)
            .hint(format!("{hint} {ESCAPE}")),
    )
}

fn partition_refused(partition: pg_sys::Oid, parent: &str) -> Verdict {
    unsupported(
        format!(
            "cannot change {}: it is a partition of federated table {parent}",
            relname(partition)
        ),
        &format!("Change {parent} itself: the change reaches every partition on every member."),
    )
}

/// Whether `stmt` is of a kind [`classify`] looks at (a check on the node tag alone).
pub(super) unsafe fn may_concern_tables(stmt: *mut pg_sys::Node) -> bool {
    use pg_sys::NodeTag::*;
    !stmt.is_null()
        && matches!(
            (*stmt).type_,
            T_AlterTableStmt
                | T_RenameStmt
                | T_IndexStmt
                | T_DropStmt
                | T_CommentStmt
                | T_GrantStmt
                | T_AlterObjectSchemaStmt
                | T_CreateStmt
        )
}

/// Reads a utility statement.
#[allow(non_upper_case_globals)]
pub(super) unsafe fn classify(stmt: *mut pg_sys::Node) -> FedResult<Verdict> {
    use pg_sys::NodeTag::*;
    let tag = (*stmt).type_;
    match tag {
        T_AlterTableStmt => alter_table(stmt as *mut pg_sys::AlterTableStmt),
        T_RenameStmt => rename(stmt as *mut pg_sys::RenameStmt),
        T_IndexStmt => {
            let s = stmt as *mut pg_sys::IndexStmt;
            if only((*s).relation) {
                return Ok(Verdict::Pass);
            }
            let oid = relid_of((*s).relation);
            Ok(match role(oid)? {
                Role::None => Verdict::Pass,
                Role::Partition { parent } => partition_refused(oid, &parent),
                Role::Parent { .. } => Verdict::Federate(Change::of(oid)),
            })
        }
        T_DropStmt => {
            let s = stmt as *mut pg_sys::DropStmt;
            if (*s).removeType == pg_sys::ObjectType::OBJECT_TABLE {
                return drop_table(s);
            }
            if (*s).removeType != pg_sys::ObjectType::OBJECT_INDEX {
                return Ok(Verdict::Pass);
            }
            let mut tables = vec![];
            for l in pgrx::PgList::<pg_sys::List>::from_pg((*s).objects).iter_ptr() {
                let index = relid_of_names(l);
                tables.push(table_of_index(index)?);
            }
            one_table(tables, "DROP INDEX")
        }
        T_CommentStmt => {
            let Some(oid) = table_named(stmt) else {
                return Ok(Verdict::Pass);
            };
            Ok(match role(oid)? {
                Role::Parent { .. } => Verdict::Federate(Change::of(oid)),
                _ => Verdict::Pass,
            })
        }
        T_GrantStmt => {
            let s = stmt as *mut pg_sys::GrantStmt;
            if (*s).targtype != pg_sys::GrantTargetType::ACL_TARGET_OBJECT
                || (*s).objtype != pg_sys::ObjectType::OBJECT_TABLE
            {
                return Ok(Verdict::Pass);
            }
            let mut tables = vec![];
            for rv in pgrx::PgList::<pg_sys::RangeVar>::from_pg((*s).objects).iter_ptr() {
                let oid = relid_of(rv);
                tables.push(match role(oid)? {
                    Role::Parent { .. } => Some(oid),
                    _ => None,
                });
            }
            one_table(tables, "GRANT or REVOKE")
        }
        T_AlterObjectSchemaStmt => {
            let s = stmt as *mut pg_sys::AlterObjectSchemaStmt;
            if (*s).objectType != pg_sys::ObjectType::OBJECT_TABLE {
                return Ok(Verdict::Pass);
            }
            let oid = relid_of((*s).relation);
            Ok(match role(oid)? {
                Role::None => Verdict::Pass,
                Role::Partition { parent } => partition_refused(oid, &parent),
                Role::Parent { .. } => unsupported(
                    format!("cannot move federated table {} to another schema", relname(oid)),
                    "Disable it (SELECT federation.disable(...)), move it on every node, then enable it again.",
                ),
            })
        }
        T_CreateStmt => {
            let s = stmt as *mut pg_sys::CreateStmt;
            if (*s).partbound.is_null() {
                return Ok(Verdict::Pass);
            }
            for rv in pgrx::PgList::<pg_sys::RangeVar>::from_pg((*s).inhRelations).iter_ptr() {
                let oid = relid_of(rv);
                if let Role::Parent { .. } = role(oid)? {
                    return Ok(unsupported(
                        format!("cannot add a partition to federated table {}", relname(oid)),
                        "pg_federation makes one partition per node: a node that joins gets its own.",
                    ));
                }
            }
            Ok(Verdict::Pass)
        }
        _ => Ok(Verdict::Pass),
    }
}

/// The one table a COMMENT ON TABLE/COLUMN or a GRANT/REVOKE on tables is about (for a GRANT
/// naming several, the first).
pub(super) unsafe fn table_named(stmt: *mut pg_sys::Node) -> Option<pg_sys::Oid> {
    use pg_sys::NodeTag::*;
    let oid = match (*stmt).type_ {
        T_CommentStmt => {
            let s = stmt as *mut pg_sys::CommentStmt;
            let names_list = (*s).object as *mut pg_sys::List;
            match (*s).objtype {
                pg_sys::ObjectType::OBJECT_TABLE => relid_of_names(names_list),
                pg_sys::ObjectType::OBJECT_COLUMN => {
                    let n = names(names_list);
                    if n.len() < 2 {
                        return None;
                    }
                    let mut list = std::ptr::null_mut::<pg_sys::List>();
                    for part in &n[..n.len() - 1] {
                        let c = std::ffi::CString::new(part.as_str()).unwrap_or_default();
                        list = pg_sys::lappend(
                            list,
                            pg_sys::makeString(pg_sys::pstrdup(c.as_ptr())).cast(),
                        );
                    }
                    relid_of_names(list)
                }
                _ => return None,
            }
        }
        T_GrantStmt => {
            let s = stmt as *mut pg_sys::GrantStmt;
            if (*s).targtype != pg_sys::GrantTargetType::ACL_TARGET_OBJECT
                || (*s).objtype != pg_sys::ObjectType::OBJECT_TABLE
            {
                return None;
            }
            let first = pgrx::PgList::<pg_sys::RangeVar>::from_pg((*s).objects).get_ptr(0)?;
            relid_of(first)
        }
        _ => return None,
    };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// A statement naming several tables is federated when all of them are; a mix is refused.
fn one_table(tables: Vec<Option<pg_sys::Oid>>, what: &str) -> FedResult<Verdict> {
    let federated: Vec<pg_sys::Oid> = tables.iter().flatten().copied().collect();
    if federated.is_empty() {
        return Ok(Verdict::Pass);
    }
    if federated.len() < tables.len() || federated.iter().any(|t| *t != federated[0]) {
        return Ok(unsupported(
            format!(
                "{what} names federated table {} together with other tables",
                relname(federated[0])
            ),
            "Run one statement per federated table, and a separate one for the other tables.",
        ));
    }
    Ok(Verdict::Federate(Change::of(federated[0])))
}

/// DROP TABLE of a federated table: dropped on every member. A partition in the list is left
/// to the DROP guard (drops.rs), which refuses it.
unsafe fn drop_table(s: *mut pg_sys::DropStmt) -> FedResult<Verdict> {
    let mut tables = vec![];
    for l in pgrx::PgList::<pg_sys::List>::from_pg((*s).objects).iter_ptr() {
        let oid = relid_of_names(l);
        tables.push(match role(oid)? {
            Role::Parent { .. } => Some(oid),
            Role::Partition { .. } => return Ok(Verdict::Pass),
            Role::None => None,
        });
    }
    Ok(match one_table(tables, "DROP TABLE")? {
        Verdict::Federate(mut c) => {
            c.drops_table = true;
            Verdict::Federate(c)
        }
        other => other,
    })
}

fn table_of_index(index: pg_sys::Oid) -> FedResult<Option<pg_sys::Oid>> {
    if index == pg_sys::InvalidOid {
        return Ok(None);
    }
    let table = crate::spi::one::<pg_sys::Oid>(
        "SELECT indrelid FROM pg_catalog.pg_index WHERE indexrelid = $1",
        &[index.into()],
    )?;
    match table {
        Some(t) => Ok(match role(t)? {
            Role::Parent { .. } => Some(t),
            _ => None,
        }),
        None => Ok(None),
    }
}

#[allow(non_upper_case_globals)]
unsafe fn rename(s: *mut pg_sys::RenameStmt) -> FedResult<Verdict> {
    use pg_sys::ObjectType::*;
    let kind = (*s).renameType;
    if kind == OBJECT_INDEX {
        let t = table_of_index(relid_of((*s).relation))?;
        return one_table(vec![t], "ALTER INDEX ... RENAME");
    }
    if kind != OBJECT_TABLE && kind != OBJECT_COLUMN && kind != OBJECT_TABCONSTRAINT {
        return Ok(Verdict::Pass);
    }
    let oid = relid_of((*s).relation);
    let node_column = match parent_node_column(oid)? {
        Ok(col) => col,
        Err(verdict) => return Ok(verdict),
    };
    let mut change = Change::of(oid);
    if kind == OBJECT_COLUMN {
        if cstr((*s).subname) == node_column {
            return Ok(node_column_refused(oid, &node_column));
        }
        change.drops_columns = true;
    } else if kind == OBJECT_TABLE {
        // Subscriptions find a published partition by its name.
        change.renames_table = true;
    }
    Ok(Verdict::Federate(change))
}

/// For a statement that alters `oid` itself: the node column when it is a federated table;
/// otherwise what becomes of the statement (it runs as usual, or, on a partition, is refused).
fn parent_node_column(oid: pg_sys::Oid) -> FedResult<Result<String, Verdict>> {
    Ok(match role(oid)? {
        Role::None => Err(Verdict::Pass),
        Role::Partition { parent } => Err(partition_refused(oid, &parent)),
        Role::Parent { node_column } => Ok(node_column),
    })
}

fn node_column_refused(table: pg_sys::Oid, col: &str) -> Verdict {
    unsupported(
        format!(
            "cannot change column {} of federated table {}: it is the node column",
            crate::spi::quote_ident(col),
            relname(table)
        ),
        "The node column routes every row to its owner's partition and stays as enable() made it. To change it, disable the table on the federation and enable it again.",
    )
}

#[allow(non_upper_case_globals)]
unsafe fn alter_table(s: *mut pg_sys::AlterTableStmt) -> FedResult<Verdict> {
    use pg_sys::AlterTableType::*;
    if (*s).objtype != pg_sys::ObjectType::OBJECT_TABLE || only((*s).relation) {
        return Ok(Verdict::Pass);
    }
    let oid = relid_of((*s).relation);
    let node_column = match parent_node_column(oid)? {
        Ok(col) => col,
        Err(verdict) => return Ok(verdict),
    };
    let mut change = Change::of(oid);
    for cmd in pgrx::PgList::<pg_sys::AlterTableCmd>::from_pg((*s).cmds).iter_ptr() {
        let sub = (*cmd).subtype;
        let name = cstr((*cmd).name);
        let on_node_column = name == node_column;
        match sub {
            AT_AddColumn => {
                let def = (*cmd).def as *mut pg_sys::ColumnDef;
                if !def.is_null() {
                    change.added.push(cstr((*def).colname));
                }
            }
            AT_DropColumn if !on_node_column => change.drops_columns = true,
            AT_AlterColumnType if !on_node_column => {
                let def = (*cmd).def as *mut pg_sys::ColumnDef;
                if !def.is_null() && !(*def).raw_default.is_null() {
                    change.recomputed.push(name);
                }
            }
            AT_SetNotNull | AT_AddConstraint | AT_ValidateConstraint => {}
            AT_ColumnDefault | AT_DropNotNull | AT_AddIdentity | AT_SetIdentity
            | AT_DropIdentity | AT_DropExpression
                if !on_node_column => {}
            AT_DropConstraint
            | AT_AlterConstraint
            | AT_SetStatistics
            | AT_SetOptions
            | AT_ResetOptions
            | AT_SetStorage
            | AT_SetCompression
            | AT_ChangeOwner
            | AT_SetRelOptions
            | AT_ResetRelOptions
            | AT_ReplaceRelOptions
            | AT_EnableRowSecurity
            | AT_DisableRowSecurity
            | AT_ForceRowSecurity
            | AT_NoForceRowSecurity
            | AT_ClusterOn
            | AT_DropCluster
            | AT_SetTableSpace => {}
            AT_DropColumn | AT_AlterColumnType | AT_ColumnDefault | AT_DropNotNull
            | AT_AddIdentity | AT_SetIdentity | AT_DropIdentity | AT_DropExpression => {
                return Ok(node_column_refused(oid, &node_column));
            }
            AT_AttachPartition | AT_DetachPartition | AT_DetachPartitionFinalize => {
                return Ok(unsupported(
                    format!("cannot attach or detach partitions of federated table {}", relname(oid)),
                    "pg_federation makes one partition per node; federation.drop_node() removes a departed node's partition. To take rows out, copy them with INSERT ... SELECT.",
                ));
            }
            AT_SetUnLogged | AT_SetLogged => {
                return Ok(unsupported(
                    format!(
                        "cannot change the persistence of federated table {}",
                        relname(oid)
                    ),
                    "Unlogged tables cannot be replicated; a federated table stays logged.",
                ));
            }
            AT_ReplicaIdentity => {
                return Ok(unsupported(
                    format!(
                        "cannot change the replica identity of federated table {}",
                        relname(oid)
                    ),
                    "pg_federation sets every partition's replica identity from the primary key.",
                ));
            }
            AT_EnableTrig | AT_EnableAlwaysTrig | AT_EnableReplicaTrig | AT_DisableTrig
            | AT_EnableTrigAll | AT_DisableTrigAll | AT_EnableTrigUser | AT_DisableTrigUser => {
                return Ok(unsupported(
                    format!("cannot enable or disable triggers of federated table {} on the federation", relname(oid)),
                    "pg_federation's write guards are triggers on the partitions; ALTER TABLE ... DISABLE TRIGGER would turn them off.",
                ));
            }
            _ => {
                return Ok(unsupported(
                    format!("this ALTER TABLE of federated table {} is not supported on a federation", relname(oid)),
                    "Supported: ADD/DROP/RENAME COLUMN, ALTER COLUMN TYPE/SET DEFAULT/DROP DEFAULT/SET NOT NULL/DROP NOT NULL, ADD/DROP/VALIDATE CONSTRAINT, OWNER TO, SET (storage parameters) (docs/migrations.md).",
                ));
            }
        }
    }
    Ok(Verdict::Federate(change))
}
