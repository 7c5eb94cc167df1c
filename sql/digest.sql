-- The bucket digest of a repair by difference (src/ops/digest.rs): for every bucket of a
-- partition's rows, its row count and the XOR of its rows' hashes, as one text
-- 'bucket:rows:xor,...'. The same as GROUP BY bucket with count(*) and bit_xor(), in one
-- array instead of a hash table. Run by a repairing member on its copy and on the owner.
CREATE AGGREGATE federation_internal.bucket_digest(bucket bigint, "row" bytea, buckets integer) (
    SFUNC = federation_internal.bucket_digest_add,
    STYPE = internal,
    FINALFUNC = federation_internal.bucket_digest_final
);

COMMENT ON AGGREGATE federation_internal.bucket_digest(bigint, bytea, integer) IS
  'internal, node to node: per bucket of a partition''s rows, the row count and the XOR of the rows'' hashes (a repair by difference compares them).';
COMMENT ON FUNCTION federation_internal.bucket_digest_add(internal, bigint, bytea, integer) IS
  'internal: the transition function of federation_internal.bucket_digest.';
COMMENT ON FUNCTION federation_internal.bucket_digest_final(internal) IS
  'internal: the final function of federation_internal.bucket_digest.';

REVOKE EXECUTE ON FUNCTION federation_internal.bucket_digest(bigint, bytea, integer),
    federation_internal.bucket_digest_add(internal, bigint, bytea, integer),
    federation_internal.bucket_digest_final(internal) FROM PUBLIC;
