-- pg_federation 0.8.0 -> 0.9.0
--
-- No SQL object changes; the library does:
-- - A node upgraded in place with pg_upgrade from PostgreSQL 17 on (which carries logical
--   replication slots and subscriptions) stays the node: its worker takes the new system
--   identifier as the node's own once it has seen the node's database, every ready member's
--   slot and its own address (worker/upgraded.rs; docs/runbook.md section 9). Before, the
--   upgraded node took itself for a restored copy and refused every write.
--
-- A repair by difference computes its bucket digests with an aggregate of its own,
-- federation_internal.bucket_digest (src/ops/digest.rs, sql/digest.sql): one array instead of
-- a GROUP BY's hash table, each row hashed from its bytes. A member still on 0.8.0 is compared
-- as before. Rows are put in buckets by their key types' own hashes where the key allows.

CREATE FUNCTION federation_internal."bucket_digest_add"(
	"state" internal, /* Internal */
	"bucket" bigint, /* Option < i64 > */
	"row" bytea, /* Option < & [u8] > */
	"buckets" INT /* Option < i32 > */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'bucket_digest_add_wrapper';

CREATE FUNCTION federation_internal."bucket_digest_final"(
	"state" internal /* Internal */
) RETURNS TEXT /* String */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'bucket_digest_final_wrapper';

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
