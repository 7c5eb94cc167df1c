-- pg_federation 0.7.0 -> 0.8.0
--
-- federation.restore(peer_conninfo, node_conninfo): a server takes the place of a lost node
-- (an empty new server, or a pg_dump of the node restored on it) and takes the node's rows
-- back from the members' copies before it joins (docs/runbook.md, "Restore a node"). Two new
-- functions, for superusers only, as join().
--
-- The library changes too (no object): a member's worker repairs its copy of a node's
-- partitions only from a server that acts as that node (a new server at a lost node's
-- address, or a restored copy there, is left alone, with a WARNING that names restore());
-- a newly promoted node drops the pg_federation slots it kept from before a rewind (their
-- positions belong to a rewound history), so that its members repair instead of streaming
-- from them; a failover is confirmed within 1.5 s of the first probe that saw it, and a
-- member's next failover is repaired at once after a repair that succeeded.

CREATE FUNCTION federation_internal.restore_federation_node(peer_conninfo text, node_conninfo text) RETURNS void
VOLATILE SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'restore_federation_node_wrapper';
COMMENT ON FUNCTION federation_internal.restore_federation_node(text, text) IS
  'internal: the body of federation.restore(); call that instead.';

CREATE FUNCTION federation.restore(peer_conninfo text, node_conninfo text DEFAULT NULL)
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT federation_internal.restore_federation_node(peer_conninfo, node_conninfo) $$;

COMMENT ON FUNCTION federation.restore(text, text) IS
  'Makes this server the node of its name in the federation of the peer at peer_conninfo, in '
  'place of a lost server (an empty new one, or a pg_dump of the node restored here): takes '
  'the node''s rows back from every member''s copy (nothing is deleted: rows no member holds '
  'go to federation.set_aside), has the members forget the lost server, and joins.';

REVOKE EXECUTE ON FUNCTION federation.restore(text, text),
    federation_internal.restore_federation_node(text, text) FROM PUBLIC;
