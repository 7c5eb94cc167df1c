-- pg_federation 0.9.0 -> 0.10.0
--
-- A node's address can move: when a node's federation.node_conninfo names another address
-- than the one its members know (its standby promoted behind a new Service or DNS name, or a
-- new name given by the DBA), the node's worker asks every member to follow
-- (src/membership/address.rs). Each member checks first that the new address answers as the
-- node and knows it, and that no other server still acts as the node at the old address; then
-- it records the address and points its subscription from the node there.
--
-- The library also: wakes PostgreSQL 15's logical replication launcher while a repair by
-- difference waits for its new apply worker (replication::wake_apply_launcher).

CREATE  FUNCTION federation_internal."member_moved"(
	"name" TEXT, /* & str */
	"conninfo" TEXT /* & str */
) RETURNS bool /* bool */
STRICT VOLATILE 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'member_moved_wrapper';

REVOKE EXECUTE ON FUNCTION federation_internal.member_moved(text, text) FROM PUBLIC;

COMMENT ON FUNCTION federation_internal.member_moved(text, text) IS
  'internal, node to node: a member reached at a new address from now on, once that address answers as the member.';
