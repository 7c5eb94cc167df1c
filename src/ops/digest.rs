//! The bucket digest of a repair by difference (ops::diff), as an aggregate:
//! `federation_internal.bucket_digest(bucket, row, buckets)` over a partition's rows gives, for
//! every bucket that holds rows, its row count and the XOR of its rows' hashes, as one text
//! `bucket:rows:xor,...` (the form ops::diff reads).
//!
//! The same result as `GROUP BY bucket` with `count(*)` and `bit_xor()`, without the hash
//! table: the buckets are numbers below `buckets`, so the state is one array indexed by
//! bucket (16 bytes a bucket; at most 2^20 buckets). And the row is hashed here from its bytes
//! (`hash_bytes_extended`, PostgreSQL's own hash of a byte string, the same on every server),
//! not through a hex text of them. Measured in BENCHMARKS.md ("Repair by difference, cheaper
//! digests").

use pgrx::prelude::*;
use pgrx::{Internal, PgMemoryContexts};

/// The most buckets a digest may have (ops::diff uses at most 2^20).
const MAX_BUCKETS: i32 = 1 << 20;

/// Each bucket's row count and XOR side by side: a row touches one cache line, not two (the
/// buckets, 1 MB at 65,536, do not fit in a core's cache; each row lands in a random one).
struct Digest {
    buckets: Vec<(i64, u64)>,
}

/// The transition function: adds one row, `row` its bytes (a row's `record_send`, or its text
/// as bytes), to bucket `bucket` of `buckets`.
#[pg_extern(schema = "federation_internal", immutable, parallel_safe)]
fn bucket_digest_add(
    state: Internal,
    bucket: Option<i64>,
    row: Option<&[u8]>,
    buckets: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let mut state = state;
    let buckets = buckets.unwrap_or(0);
    if !(1..=MAX_BUCKETS).contains(&buckets) {
        error!("bucket_digest: buckets must be between 1 and {MAX_BUCKETS}, not {buckets}");
    }
    let mut context = std::ptr::null_mut();
    // SAFETY: fcinfo is this call's; AggCheckCallContext only reads it.
    if unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut context) } == 0 {
        error!("bucket_digest_add is the transition function of federation_internal.bucket_digest; it cannot be called by itself");
    }
    // SAFETY: the state is only ever made here, as a Digest, in the aggregate's memory
    // context (it lives as long as the aggregate's group).
    let digest = unsafe {
        if !state.initialized() {
            let made = PgMemoryContexts::For(context).switch_to(|_| {
                Internal::new(Digest {
                    buckets: vec![(0, 0); buckets as usize],
                })
            });
            state = made;
        }
        state.get_mut::<Digest>().expect("initialized above")
    };
    let (Some(bucket), Some(row)) = (bucket, row) else {
        return state;
    };
    let Some(slot) = usize::try_from(bucket)
        .ok()
        .and_then(|b| digest.buckets.get_mut(b))
    else {
        error!(
            "bucket_digest: bucket {bucket} is outside 0 to {}",
            digest.buckets.len() - 1
        );
    };
    // Not NULL: hashed from its datum, as PostgreSQL hashes a bytea.
    let _ = row;
    // SAFETY: argument 2 is this call's bytea, not NULL (checked above);
    // hashvarlenaextended hashes its bytes (PostgreSQL's hash_any_extended, seed 0).
    let hash = unsafe {
        let datum = pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 2);
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::hashvarlenaextended,
            &[Some(datum), Some(pg_sys::Datum::from(0i64))],
        )
        .map_or(0, |d| d.value() as u64)
    };
    slot.0 += 1;
    slot.1 ^= hash;
    state
}

/// The final function: `bucket:rows:xor` for every bucket holding rows, comma-separated, in
/// bucket order (the XOR as a signed 64-bit number, as `bit_xor` of bigints prints it).
#[pg_extern(schema = "federation_internal", immutable, parallel_safe)]
fn bucket_digest_final(state: Internal) -> String {
    // SAFETY: made by bucket_digest_add as a Digest, or never (no rows: NULL state).
    let Some(digest) = (unsafe { state.get::<Digest>() }) else {
        return String::new();
    };
    let mut out = String::new();
    for (b, (n, x)) in digest.buckets.iter().enumerate() {
        if *n > 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&format!("{b}:{n}:{}", *x as i64));
        }
    }
    out
}
