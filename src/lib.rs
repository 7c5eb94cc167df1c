//! pg_federation: active-active PostgreSQL.
//!
//! Every node writes only its own LIST partition of each federated table, publishes it, and
//! subscribes to every other node's: every node reads all rows, and no two nodes write the
//! same rows. See README.md for the SQL API and docs/ for how it works.

use pgrx::prelude::*;

pub mod catalog;
pub mod enable;
pub mod errors;
pub mod guards;
pub mod gucs;
pub mod identity;
pub mod labels;
pub mod naming;
pub mod publication;
pub mod sql;
pub mod table;

pgrx::extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);
pgrx::extension_sql_file!("../sql/guards.sql", name = "guards", requires = [identity::node_name]);
pgrx::extension_sql_file!("../sql/api.sql", name = "api", requires = [enable::enable_table, enable::disable_table]);
pgrx::extension_sql_file!("../sql/views.sql", name = "views", requires = ["catalog", identity::node_name]);

::pgrx::pg_module_magic!();

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["wal_level = 'logical'", "federation.node_name = 'pgrx_test'"]
    }
}
