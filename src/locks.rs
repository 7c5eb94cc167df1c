//! Advisory locks by which pg_federation's sessions tell each other, and status(), what runs
//! now. Every class pg_federation takes is here, so that no two collide.

use crate::errors::FedResult;
use crate::remote::Remote;

/// A repair by difference of the copies a subscription carries (ops::diff), on the repairing
/// node and on the owner while the subscription is away, keyed by [`NAMED_KEY`].
pub const REPAIR: i32 = 1_718_379_892;
/// The worker's load of a joining node's copies of a member's partitions (worker::load), in
/// its transaction on the joining node, keyed by [`NAMED_KEY`].
pub const LOAD: i32 = 1_718_379_893;
/// The worker's pass wiring joins (worker::reconcile), on its connection to its own node.
const WIRING: (i32, i32) = (1_718_379_894, 0);

/// The second key of a lock named by the text `$1` (a subscription's name).
pub const NAMED_KEY: &str = "pg_catalog.hashtext($1) & 2147483647";

/// Whether some session on this server holds the lock (`class`, `name` hashed): status()
/// asks, to say what runs now.
pub fn named_held(class: i32, name: &str) -> FedResult<bool> {
    Ok(crate::spi::one::<bool>(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks k
                            WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 2
                              AND k.classid = {class}::oid
                              AND k.objid::bigint = ({NAMED_KEY}))"
        ),
        &[name.into()],
    )?
    .unwrap_or(false))
}

/// Whether this session holds the lock (`class`, `name` hashed).
pub fn named_held_here(class: i32, name: &str) -> FedResult<bool> {
    Ok(crate::spi::one::<bool>(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks k
                            WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 2
                              AND k.pid = pg_catalog.pg_backend_pid()
                              AND k.classid = {class}::oid
                              AND k.objid::bigint = ({NAMED_KEY}))"
        ),
        &[name.into()],
    )?
    .unwrap_or(false))
}

/// For the worker: holds the wiring lock for as long as the connection `here` (to this
/// node) stays open.
pub fn hold_wiring(here: &mut Remote) -> FedResult<()> {
    here.exec(&format!(
        "SELECT pg_catalog.pg_advisory_lock({}, {})",
        WIRING.0, WIRING.1
    ))
}

/// Waits, over `me_conn` (to this node), until no pass of the worker wires a join: leave()
/// calls it once 'leaving' is committed, so that what a pass begun before made (a subscription
/// the load created, a member's subscription to this node) exists when leave() drops it, and
/// no later pass wires anything.
pub fn wiring_ended(me_conn: &mut Remote) -> FedResult<()> {
    me_conn.exec(&format!(
        "SELECT pg_catalog.pg_advisory_lock({k}, {v}); SELECT pg_catalog.pg_advisory_unlock({k}, {v})",
        k = WIRING.0,
        v = WIRING.1
    ))
}
