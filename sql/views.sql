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
