//! In-database tests (`cargo pgrx test`), one file per module under test.

mod identity_tests;
