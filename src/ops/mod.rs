//! Operations on a running federation: verify() compares copies with their owners, resync()
//! rebuilds a copy.

pub mod resync;
pub mod verify;
