//! Membership: the DBA verbs that change who is in the federation (join, leave, drop_node,
//! restore, wait_ready) and the functions nodes call on each other while they do (rpc).

pub mod address;
pub mod join;
pub mod leave;
pub mod ready;
pub mod restore;
pub mod rpc;
