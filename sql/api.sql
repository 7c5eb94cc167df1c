-- The SQL-facing signatures of pg_federation's table functions. They take regclass (so a
-- name is resolved with the caller's search_path, quoted or schema-qualified as the caller
-- writes it) and hand the OID to the Rust implementation, which locks the table before it
-- reads anything about it.

CREATE FUNCTION federation.enable(tbl regclass, node_column name DEFAULT 'node_name')
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT federation_internal.enable_table(tbl::oid, node_column::text) $$;

COMMENT ON FUNCTION federation.enable(regclass, name) IS
  'Makes a table federated on this node: LIST partitions by node (one per member plus '
  'DEFAULT), local inserts routed to this node''s partition, write guards on the others, '
  'and this node''s partition added to its publication. Re-running it is a no-op.';

CREATE FUNCTION federation.disable(tbl regclass)
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT federation_internal.disable_table(tbl::oid) $$;

COMMENT ON FUNCTION federation.disable(regclass) IS
  'Turns a federated table back into an ordinary table holding every row present on this '
  'node, and removes it from this node''s publication. On a node of a federation it does '
  'so on every member (outside a transaction block).';

CREATE FUNCTION federation.join(peer_conninfo text, node_conninfo text DEFAULT NULL)
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT federation_internal.join_federation(peer_conninfo, node_conninfo) $$;

COMMENT ON FUNCTION federation.join(text, text) IS
  'Joins this node to the federation of the peer at peer_conninfo (or forms one with it). '
  'Checks everything now; wires the full mesh after COMMIT (federation.wait_ready() waits). '
  'node_conninfo: how the members reach this node (default: federation.node_conninfo).';

CREATE FUNCTION federation.wait_ready(timeout interval DEFAULT '5 min')
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT federation_internal.wait_ready_ms((extract(epoch FROM timeout) * 1000)::bigint) $$;

COMMENT ON FUNCTION federation.wait_ready(interval) IS
  'Waits until every member replicates both ways and every initial copy is done; raises on '
  'a step that keeps failing or on timeout.';

CREATE FUNCTION federation.leave(drop_rows boolean DEFAULT false)
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT federation_internal.leave_federation(drop_rows) $$;

COMMENT ON FUNCTION federation.leave(boolean) IS
  'Takes this node out of its federation on every node: subscriptions, slots, catalog rows. '
  'drop_rows: whether the other members drop this node''s partitions (default: keep them).';

CREATE FUNCTION federation.drop_node(node_name text, drop_rows boolean DEFAULT false)
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT federation_internal.drop_federation_node(node_name, drop_rows) $$;

COMMENT ON FUNCTION federation.drop_node(text, boolean) IS
  'Removes a dead node from every surviving member: their subscriptions to it, the slots it '
  'held on them, and its catalog entries. Works while that node is unreachable.';

CREATE FUNCTION federation.restore(peer_conninfo text, node_conninfo text DEFAULT NULL)
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT federation_internal.restore_federation_node(peer_conninfo, node_conninfo) $$;

COMMENT ON FUNCTION federation.restore(text, text) IS
  'Makes this server the node of its name in the federation of the peer at peer_conninfo, in '
  'place of a lost server (an empty new one, or a pg_dump of the node restored here): takes '
  'the node''s rows back from every member''s copy (nothing is deleted: rows no member holds '
  'go to federation.set_aside), has the members forget the lost server, and joins.';

-- Membership and the functions nodes call on each other are for superusers only.
REVOKE EXECUTE ON FUNCTION
    federation.join(text, text), federation_internal.join_federation(text, text),
    federation.leave(boolean), federation_internal.leave_federation(boolean),
    federation.drop_node(text, boolean), federation_internal.drop_federation_node(text, boolean),
    federation.restore(text, text), federation_internal.restore_federation_node(text, text),
    federation_internal.peer_info(), federation_internal.check_reachable(text), federation_internal.add_member(text, text, text),
    federation_internal.set_member_ready(text), federation_internal.remove_member(text, boolean),
    federation_internal.table_shape(text, text), federation_internal.enable_here(text, text),
    federation_internal.unpublish_here(text), federation_internal.disable_here(text),
    federation_internal.reserve_node_number(integer, integer), federation_internal.enable_check(text, text),
    federation_internal.ddl_quiesce_here(text), federation_internal.ddl_lagging(text),
    federation_internal.table_definition(text), federation_internal.member_moved(text, text),
    federation_internal.start_apply_worker(text),
    federation_internal.load_begin(text), federation_internal.load_end(text)
FROM PUBLIC;
