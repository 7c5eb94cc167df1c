//! pg_federation's own DDL. The DDL guard (src/ddl/) refuses statements that would break a
//! federated table, such as DROP TABLE of one of its partitions; the extension itself runs
//! such statements (disable() drops the partitions it merged, remove_member() the partitions
//! of a node that left) inside [`run`], where the guard lets them through.

use std::cell::Cell;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` as pg_federation's own DDL. An ERROR inside `f` unwinds through here (pgrx turns
/// it into a Rust panic until the function boundary), so the scope always ends.
pub fn run<T>(f: impl FnOnce() -> T) -> T {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    DEPTH.with(|d| d.set(d.get() + 1));
    let _leave = Leave;
    f()
}

/// Whether the statement running now is pg_federation's own.
pub fn active() -> bool {
    DEPTH.with(|d| d.get() > 0)
}
