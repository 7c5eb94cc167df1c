-- The SQL-facing signatures of pg_federation's table functions. They take regclass (so a
-- name is resolved with the caller's search_path, quoted or schema-qualified as the caller
-- writes it) and hand the OID to the Rust implementation, which locks the table before it
-- reads anything about it.

CREATE FUNCTION federation.enable(tbl regclass, node_column name DEFAULT 'node_name')
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT federation.enable_table(tbl::oid, node_column::text) $$;

COMMENT ON FUNCTION federation.enable(regclass, name) IS
  'Makes a table federated on this node: LIST partitions by node (one per member plus '
  'DEFAULT), local inserts routed to this node''s partition, write guards on the others, '
  'and this node''s partition added to its publication. Re-running it is a no-op.';

CREATE FUNCTION federation.disable(tbl regclass)
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT federation.disable_table(tbl::oid) $$;

COMMENT ON FUNCTION federation.disable(regclass) IS
  'Turns a federated table back into an ordinary table holding every row present on this '
  'node, and removes it from this node''s publication.';
