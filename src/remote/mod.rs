//! Connections to other nodes (conn: libpq, interruptible, bounded) and the typed calls of
//! the node-to-node protocol made over them (peer).

mod conn;
mod peer;

pub use conn::{mask, parse, Remote, SAME_TEXT};
pub use peer::{MemberInfo, PeerInfo, TableShape, SERVER_INSTANCE, VERSION, WHOAMI};
