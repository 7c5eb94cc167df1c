//! pg_federation: active-active PostgreSQL.
//!
//! Every node writes only its own LIST partition of each federated table, publishes it, and
//! subscribes to every other node's: every node reads all rows, and no two nodes write the
//! same rows. See README.md for the SQL API and docs/ for how it works.

use pgrx::prelude::*;

pub mod catalog;
pub mod discovery;
pub mod enable;
pub mod errors;
pub mod guards;
pub mod gucs;
pub mod identity;
pub mod labels;
pub mod membership;
pub mod naming;
pub mod probe;
pub mod progress;
pub mod publication;
pub mod ready;
pub mod remote;
pub mod resync;
pub mod sql;
pub mod table;
pub mod unfederate;
pub mod verify;
pub mod worker;

pgrx::extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);
pgrx::extension_sql_file!(
    "../sql/guards.sql",
    name = "guards",
    requires = [identity::node_name]
);
pgrx::extension_sql_file!(
    "../sql/api.sql",
    name = "api",
    requires = [
        enable::enable_table,
        enable::disable_table,
        membership::join_federation,
        membership::leave_federation,
        membership::drop_federation_node,
        membership::peer_info,
        membership::check_reachable,
        membership::add_member,
        membership::set_member_ready,
        membership::remove_member,
        membership::table_shape,
        membership::enable_here,
        unfederate::unpublish_here,
        unfederate::disable_here,
        ready::wait_ready_ms
    ]
);
pgrx::extension_sql_file!(
    "../sql/views.sql",
    name = "views",
    requires = ["catalog", identity::node_name, ready::mask_conninfo]
);

pgrx::extension_sql_file!(
    "../sql/status.sql",
    name = "status",
    requires = [
        "catalog",
        membership::subscription_name_sql,
        verify::verify_tables,
        resync::resync_node
    ]
);

::pgrx::pg_module_magic!();

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    // SAFETY: reads a postmaster flag.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
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
