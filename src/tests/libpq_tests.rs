//! In-database test of the libpq pg_federation calls (see build.rs for why it matters).

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn the_extension_calls_the_libpq_of_the_server_it_runs_in() {
        // SAFETY: PQlibVersion has no preconditions.
        let libpq = unsafe { pq_sys::PQlibVersion() } / 10000;
        let server =
            Spi::get_one::<i32>("SELECT current_setting('server_version_num')::int / 10000")
                .unwrap()
                .unwrap();
        assert_eq!(
            libpq, server,
            "pg_federation calls libpq {libpq} inside a PostgreSQL {server} server"
        );
    }
}
