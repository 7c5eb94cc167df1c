-- pg_federation 0.10.0 -> 0.11.0
--
-- PostgreSQL 15's logical replication launcher starts apply workers at most once per
-- wal_retrieve_retry_interval (5 s by default) across the server. A node that makes a
-- subscription on a member over a connection (a join, a rejoin) now has the member start its
-- apply worker when the launcher has not within 20 ms (src/replication.rs,
-- hasten_apply_worker), through this function. PostgreSQL 16+ throttles each subscription by
-- itself: there the function does nothing.
--
-- The library also: a repair by difference and a full resync start their new subscription's
-- apply worker themselves when the launcher holds it back (after a failover it has just
-- restarted the old subscription's failing worker).

CREATE  FUNCTION federation_internal."start_apply_worker"(
	"subscription" TEXT /* & str */
) RETURNS bool /* bool */
STRICT VOLATILE 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'start_apply_worker_wrapper';

REVOKE EXECUTE ON FUNCTION federation_internal.start_apply_worker(text) FROM PUBLIC;

COMMENT ON FUNCTION federation_internal.start_apply_worker(text) IS
  'internal, node to node: starts the apply worker of a subscription just made here when PostgreSQL 15''s launcher holds it back.';
