-- Introspection views: safe to show to any role that can read the tables themselves.

-- Each federated table, its node column, its partitions and which node owns each.
CREATE VIEW federation.tables AS
SELECT t.relid                                   AS table_name,
       t.node_column,
       p.partition,
       coalesce(p.node_name, '(default)')        AS owner_node,
       p.node_name IS NOT DISTINCT FROM federation.node_name() AS is_local,
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END AS estimated_rows,
       t.adopted,
       t.enabled_at
FROM federation.federated_table t
JOIN federation.partition p USING (relid)
JOIN pg_catalog.pg_class c ON c.oid = p.partition
ORDER BY t.relid::text, p.node_name NULLS LAST;

COMMENT ON VIEW federation.tables IS
  'Federated tables on this node: one row per partition, with the node that owns it. '
  'estimated_rows comes from pg_class.reltuples (ANALYZE updates it); count(*) gives exact counts.';

GRANT SELECT ON federation.tables TO PUBLIC;

-- Every member of the federation, this node first, with connection strings stripped of
-- passwords.
CREATE VIEW federation.nodes AS
SELECT l.node_name, federation_internal.mask_conninfo(coalesce(l.conninfo, '')) AS conninfo,
       CASE WHEN l.conninfo IS NULL THEN 'standalone' ELSE 'ready' END AS state,
       true AS is_local, NULL::timestamptz AS joined_at, NULL::text AS last_error,
       NULL::timestamptz AS last_error_at
FROM federation.local_node l
UNION ALL
SELECT n.node_name, federation_internal.mask_conninfo(n.conninfo), n.state, false, n.joined_at,
       n.last_error, n.last_error_at
FROM federation.node n;

COMMENT ON VIEW federation.nodes IS
  'Members of the federation as this node knows them: state joining, ready, failed or leaving, '
  'and the last error of a join step. Connection strings are shown without passwords.';

GRANT SELECT ON federation.nodes TO pg_monitor;
-- A view's functions run with its reader's rights: who reads federation.nodes masks with it.
REVOKE EXECUTE ON FUNCTION federation_internal.mask_conninfo(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION federation_internal.mask_conninfo(text) TO pg_monitor;
