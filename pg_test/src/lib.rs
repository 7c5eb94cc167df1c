//! pg_test: a multi-node PostgreSQL harness for pg_federation's scenario tests.
//!
//! Starts real PostgreSQL servers on this machine, one data directory, 127.0.0.1 port and node
//! name each, `wal_level = logical` and pg_federation installed; runs SQL on them; stops,
//! starts, restarts and kills them; waits for conditions with a timeout and a failure message
//! that carries the servers' logs. Every [`Node`] stops its server and removes its directory
//! when dropped, so a failing or panicking test leaves nothing behind.
//!
//! PostgreSQL refuses to run as root: when the tests run as root the servers run as the
//! unprivileged `postgres` operating-system user (through `runuser`).

pub mod autofailover;
pub mod bench;
pub mod checks;
mod cluster;
mod net;
mod node;
mod process;
pub mod scenario;
mod session;
mod spec;
mod writer;

pub use cluster::{wait_until, Cluster};
pub use net::Net;
pub use node::Node;
pub use postgres;
pub use process::{install_pgnodemx_standin, install_release_script, pg_bindir, python_tools};
pub use session::{Rows, SqlError};
pub use spec::{Identity, NetPlace, NodeSpec};
pub use writer::{assert_all_present, copy_rows, Writer};
