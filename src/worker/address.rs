//! The node's side of a moved address (membership::address has the members' side): when
//! this node's recorded address answers no more and `federation.node_conninfo` names another,
//! every member is asked to follow; the new address is recorded here once all have.

use crate::catalog;
use crate::errors::FedError;
use crate::gucs;
use crate::identity;
use crate::remote::{mask, Remote};
use crate::spi;
use std::time::Duration;

/// How long reaching a member may take.
const CONNECT_WITHIN: Duration = Duration::from_secs(3);

/// For this node's worker, acting as the node on a primary: when `federation.node_conninfo`
/// names another address than `recorded` (the one the members know), asks every member to
/// follow; records it here once all have. Ok(None) when there is nothing to do, Ok(Some(new
/// address, masked)) once moved, else the members that did not follow, with their reasons.
pub fn follow_setting(recorded: &str) -> Result<Option<String>, Vec<String>> {
    let Some(setting) = gucs::node_conninfo().filter(|s| !s.is_empty() && s != recorded) else {
        return Ok(None);
    };
    let found = pgrx::bgworkers::BackgroundWorker::transaction(|| {
        let me = identity::current_name()?;
        let in_recovery =
            spi::one::<bool>("SELECT pg_catalog.pg_is_in_recovery()", &[])?.unwrap_or(true);
        let acting = catalog::copy_problem(&me)?.is_none() && catalog::superseded()?.is_none();
        let members: Vec<(String, String)> = catalog::members()?
            .into_iter()
            .map(|m| (m.name, m.conninfo))
            .collect();
        Ok::<_, FedError>((me, !in_recovery && acting, members))
    });
    let (me, acting, members) = found.map_err(|e| vec![e.to_string()])?;
    if !acting {
        return Ok(None);
    }
    let mut refused = vec![];
    for (name, conninfo) in &members {
        let moved = Remote::connect_within(conninfo, &format!("member \"{name}\""), CONNECT_WITHIN)
            .and_then(|mut r| r.call("member_moved", "$1, $2", &[Some(&me), Some(&setting)]));
        if let Err(e) = moved {
            refused.push(format!("member \"{name}\": {e}"));
        }
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    let s = setting.clone();
    pgrx::bgworkers::BackgroundWorker::transaction(move || catalog::set_local_conninfo(&s))
        .map_err(|e| vec![e.to_string()])?;
    Ok(Some(mask(&setting)))
}
