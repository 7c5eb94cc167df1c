//! pg_federation: active-active PostgreSQL.
//!
//! Every node writes only its own LIST partition of each federated table, publishes it, and
//! subscribes to every other node's: every node reads all rows, and no two nodes write the
//! same rows. See README.md for the SQL API and docs/internals.md for how the code is laid
//! out; in short, imports flow one way:
//!
//! - the DBA verbs and the worker: `enable`, `disable`, `membership`, `ops`, `worker`;
//! - tables, replication and peers: `table`, `replication`, `remote`;
//! - catalog, identity, naming, SPI helpers, errors, settings: `catalog`, `identity`,
//!   `naming`, `spi`, `errors`, `gucs`, `preconditions`, `wait`.

use pgrx::prelude::*;

// The DBA verbs, the worker and the DDL guard.
pub(crate) mod ddl;
mod disable;
mod enable;
mod membership;
mod ops;
mod worker;
// Tables, replication and peers.
mod remote;
mod replication;
mod table;
// Catalog, identity, naming, SPI helpers, errors, settings.
mod catalog;
mod errors;
mod gucs;
mod identity;
mod locks;
mod naming;
mod own_ddl;
mod passfile;
mod preconditions;
mod spi;
mod wait;

/// Schema federation_internal: the internal functions (`#[pg_extern(schema = ...)]` names it;
/// sql/catalog.sql comments it and grants its use).
#[pg_schema]
mod federation_internal {}

// The SQL files, in the order they must run. Internal functions (the ones nodes call on each
// other) are defined by pgrx from the Rust code; sql/api.sql wraps and revokes them.
pgrx::extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);
pgrx::extension_sql_file!(
    "../sql/guards.sql",
    name = "guards",
    requires = [identity::node_name]
);
// One line per module: the verbs' SQL wrappers, then the functions nodes call on each other.
#[rustfmt::skip]
pgrx::extension_sql_file!(
    "../sql/api.sql",
    name = "api",
    requires = [
        enable::enable_table, disable::disable_table,
        membership::join::join_federation, membership::leave::leave_federation,
        membership::leave::drop_federation_node, membership::ready::wait_ready_ms,
        membership::restore::restore_federation_node,
        membership::rpc::peer_info, membership::rpc::check_reachable, membership::rpc::add_member,
        membership::rpc::set_member_ready, membership::rpc::remove_member, membership::rpc::table_shape,
        membership::rpc::enable_here, membership::rpc::unpublish_here, membership::rpc::disable_here,
        membership::rpc::reserve_node_number, membership::rpc::enable_check,
        ddl::quiesce::ddl_quiesce_here, ddl::quiesce::ddl_lagging,
        membership::rpc::table_definition, membership::address::member_moved,
        membership::rpc::start_apply_worker,
        worker::load::load_begin, worker::load::load_end
    ]
);
pgrx::extension_sql_file!(
    "../sql/keys.sql",
    name = "keys",
    requires = ["catalog", ops::duplicates::duplicate_keys_of]
);
pgrx::extension_sql_file!(
    "../sql/views.sql",
    name = "views",
    requires = ["catalog", identity::node_name, remote::conn::mask_conninfo]
);

pgrx::extension_sql_file!(
    "../sql/status.sql",
    name = "status",
    requires = [
        "catalog",
        "keys",
        identity::identity_problem,
        naming::subscription_name_sql,
        ops::verify::verify_tables,
        ops::resync::resync_node,
        ops::diff::repair_in_progress,
        worker::load::load_in_progress,
        table::set_aside::set_aside_state,
        passfile::passfile_problem
    ]
);

pgrx::extension_sql_file!(
    "../sql/digest.sql",
    name = "digest",
    requires = [
        "catalog",
        ops::digest::bucket_digest_add,
        ops::digest::bucket_digest_final
    ]
);

pgrx::extension_sql_file!(
    "../sql/comments.sql",
    name = "comments",
    requires = ["catalog", "guards", "api", "keys", "views", "status", "digest"],
    finalize
);

::pgrx::pg_module_magic!();

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    // pg_upgrade runs both servers in binary-upgrade mode: its restore of the schema must run
    // as pg_dump wrote it (no federation DDL, no guards), and nothing may stay connected to a
    // database it drops and creates again (the worker would: "database is being accessed by
    // other users"). The federation is left before pg_upgrade and joined after it
    // (docs/runbook.md, "A new PostgreSQL major on one node").
    // SAFETY: reads a flag the postmaster set from its -b option before loading libraries.
    if unsafe { pg_sys::IsBinaryUpgrade } {
        return;
    }
    ddl::install();
    // SAFETY: reads a postmaster flag.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        passfile::init_in_postmaster();
        worker::register();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "wal_level = 'logical'",
            "federation.node_name = 'pgrx_test'",
        ]
    }
}
