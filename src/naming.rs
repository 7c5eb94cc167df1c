//! Names of the objects pg_federation creates, derived deterministically from table and node
//! names, so that every node derives the same names (a subscription applies a published
//! partition into the partition of the same name on the subscriber).

use crate::identity::MAX_NODE_NAME_LEN;
use pgrx::prelude::*;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const MAX_IDENT: usize = 63;

/// The partition of `table` owned by `node`, or the DEFAULT partition when `node` is None:
/// `<table>_<node>` / `<table>_default`. When that is longer than 63 bytes, the table part is
/// cut (on a character boundary) and a hash of the whole table name keeps it unique:
/// `<table prefix>_<hash8>_<node>`.
pub fn partition_name(table: &str, node: Option<&str>) -> String {
    let suffix = node.unwrap_or("default");
    debug_assert!(suffix.len() <= MAX_NODE_NAME_LEN);
    let full = format!("{table}_{suffix}");
    if full.len() <= MAX_IDENT {
        return full;
    }
    let hash = fnv1a32(table.as_bytes());
    let room = MAX_IDENT - 1 - 8 - 1 - suffix.len();
    let mut cut = room.min(table.len());
    while !table.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash:08x}_{suffix}", &table[..cut])
}

/// This node's publication: every partition this node owns, of every federated table.
pub fn publication_name(node: &str) -> String {
    format!("federation_{node}")
}

/// Node names must stay distinct once '-' becomes '_' (replication slot names allow no '-').
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The subscription on `subscriber` to `publisher`'s publication, and its slot on `publisher`.
pub fn subscription_name(publisher: &str, subscriber: &str) -> String {
    format!(
        "federation_{}_{}",
        canonical(publisher),
        canonical(subscriber)
    )
}

/// SQL face of [`subscription_name`], for federation.status().
#[pg_extern(
    immutable,
    strict,
    parallel_safe,
    name = "subscription_name",
    schema = "federation_internal"
)]
fn subscription_name_sql(publisher: &str, subscriber: &str) -> String {
    subscription_name(publisher, subscriber)
}

/// FNV-1a, 32 bits: small, stable across versions and platforms (unlike std's hasher).
fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn short_names_read_naturally() {
        assert_eq!(partition_name("hippos", Some("east")), "hippos_east");
        assert_eq!(partition_name("hippos", None), "hippos_default");
        assert_eq!(
            partition_name("Hippo Herd", Some("west")),
            "Hippo Herd_west"
        );
    }

    #[test]
    fn long_names_fit_and_stay_unique() {
        let a = "a".repeat(60) + "x";
        let b = "a".repeat(60) + "y";
        let node = "abcdefghijklmnopqrstuvwx"; // 24 bytes, the longest node name
        let pa = partition_name(&a, Some(node));
        let pb = partition_name(&b, Some(node));
        assert!(pa.len() <= MAX_IDENT && pb.len() <= MAX_IDENT, "{pa} {pb}");
        assert_ne!(pa, pb);
        assert!(pa.ends_with(&format!("_{node}")));
        assert_eq!(pa, partition_name(&a, Some(node)), "deterministic");
        let d = partition_name(&a, None);
        assert!(d.len() <= MAX_IDENT && d.ends_with("_default"));
    }

    #[test]
    fn multibyte_names_are_cut_on_character_boundaries() {
        let t = "é".repeat(40); // 80 bytes
        let p = partition_name(&t, Some("east"));
        assert!(p.len() <= MAX_IDENT);
        assert!(p.ends_with("_east"));
    }
}
