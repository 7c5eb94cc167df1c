//! Operations on a running federation: verify() compares copies with their owners, resync()
//! rebuilds a copy (whole, or only what differs: diff), duplicate_keys() finds key values held by more than one node.

pub mod diff;
pub mod digest;
pub mod duplicates;
pub mod resync;
pub mod verify;
