//! In-database tests (`cargo pgrx test`), one file per module under test.

mod enable_tests;
mod identity_tests;
mod libpq_tests;
