//! A node's address, moved. Its members reach a node by the address recorded at join
//! (`federation.node.conninfo` on each member, `federation.local_node.conninfo` on the node).
//! When the recorded address no longer answers and the node's `federation.node_conninfo`
//! names another (its standby promoted behind a new Service or DNS name), the node's worker
//! tells every member (worker::address, from worker::heal's address check); each member
//! checks the new address here before it follows ([`member_moved`]): a server there that
//! acts as the node and knows the member, and no other server still acting as the node at
//! the old address. The node records the new address once every member follows; until then
//! its worker tries again, and says why in the log.

use crate::catalog;
use crate::errors::{FedError, FedResult, OrRaise};
use crate::identity::{self, validate_node_name};
use crate::naming::subscription_name;
use crate::preconditions::require_superuser;
use crate::remote::{mask, Remote, SERVER_INSTANCE};
use crate::spi::{self, quote_ident, quote_literal};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::Duration;

/// How long a check of an address may take to connect.
const CONNECT_WITHIN: Duration = Duration::from_secs(3);

/// For a node whose address moved (its worker calls this on every member): this node reaches
/// member `name` at `conninfo` from now on. Checked first: the server at `conninfo` acts as
/// `name` and knows this node as a member, and no other server acts as `name` at its old
/// address. True when the address changed here, false when it already was `conninfo`.
#[pg_extern(volatile, schema = "federation_internal")]
#[search_path(pg_catalog, pg_temp)]
fn member_moved(name: &str, conninfo: &str) -> bool {
    require_superuser("federation_internal.member_moved()").or_raise();
    member_moved_impl(name, conninfo).or_raise()
}

fn member_moved_impl(name: &str, conninfo: &str) -> FedResult<bool> {
    validate_node_name(name, "the member whose address moved")?;
    let me = identity::current_name()?;
    let Some(member) = catalog::members()?.into_iter().find(|m| m.name == name) else {
        return Err(FedError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("\"{name}\" is not a member of node \"{me}\"'s federation"),
        )
        .hint("SELECT node_name FROM federation.nodes; lists the members."));
    };
    if member.conninfo == conninfo {
        return Ok(false);
    }
    let mut there = Remote::connect_within(
        conninfo,
        &format!("node \"{name}\" at its new address"),
        CONNECT_WITHIN,
    )?;
    let acting = there.acting_as().map_err(|e| {
        FedError::prerequisite(format!(
            "the server at {} does not act as node \"{name}\": {e}",
            mask(conninfo)
        ))
    })?;
    if acting != name {
        return Err(FedError::prerequisite(format!(
            "the server at {} is node \"{acting}\", not \"{name}\"",
            mask(conninfo)
        ))
        .hint(format!(
            "Set federation.node_conninfo on node \"{name}\" to an address that reaches it."
        )));
    }
    if there.knows(&me)?.0.is_none() {
        return Err(FedError::prerequisite(format!(
            "the server at {} acts as node \"{name}\" but does not know \"{me}\" as a member",
            mask(conninfo)
        ))
        .hint("It is another federation's node of that name, or a copy that left: give node_conninfo the address of the node itself."));
    }
    let new_server = there.scalar(SERVER_INSTANCE, &[])?;
    // Another server still acting as the node at the old address is the node (an old primary
    // alive beside a promoted standby): the members stay with it until it stops.
    if let Ok(mut old) = Remote::connect_within(
        &member.conninfo,
        &format!("node \"{name}\" at its old address"),
        CONNECT_WITHIN,
    ) {
        let old_server = old.scalar(SERVER_INSTANCE, &[]).ok().flatten();
        if old.acting_as().ok().as_deref() == Some(name) && old_server != new_server {
            return Err(FedError::new(
                PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
                format!(
                    "node \"{name}\" still answers at its old address ({}) from another server than the one at {}",
                    mask(&member.conninfo),
                    mask(conninfo)
                ),
            )
            .hint("The members move to a node's new address once no other server acts as the node at the old one: stop the old server (or rebuild it as a standby of the new primary); the node's worker tries again every few seconds."));
        }
    }
    catalog::set_member_conninfo(name, conninfo)?;
    let sub = subscription_name(name, &me);
    let subscribed = spi::one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = $1
                          AND subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))",
        &[sub.as_str().into()],
    )?
    .unwrap_or(false);
    if subscribed {
        spi::exec(&format!(
            "ALTER SUBSCRIPTION {} CONNECTION {}",
            quote_ident(&sub),
            quote_literal(conninfo)
        ))?;
    }
    log!(
        "pg_federation: member \"{name}\" is reached at {} from now on (its address moved)",
        mask(conninfo)
    );
    Ok(true)
}
