-- Write guards. A federated table's partitions owned by other nodes, and its DEFAULT
-- partition, carry these triggers; this node's own partition carries none, so local writes
-- pay nothing. They are ordinary triggers: logical-replication apply workers run with
-- session_replication_role = replica and do not fire them, so replicated rows pass.

-- BEFORE INSERT OR UPDATE OR DELETE, FOR EACH ROW, on another node's partition.
-- TG_ARGV[0]: the owning node; TG_ARGV[1]: the federated table; TG_ARGV[2]: the node column.
CREATE FUNCTION federation_internal.guard_foreign_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'cannot % a row of node "%" in federated table % on node "%"',
        lower(TG_OP), TG_ARGV[0], TG_ARGV[1], federation.node_name()
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = format('Partition %I.%I belongs to node "%s"; only that node writes its rows, '
                              'and they reach this node by logical replication.',
                              TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0]),
              HINT = format('Run this statement on node "%s". To write a row on this node, '
                            'leave the %I column out so it defaults to this node.',
                            TG_ARGV[0], TG_ARGV[2]);
END
$$;

-- BEFORE INSERT OR UPDATE OR DELETE, FOR EACH ROW, on the DEFAULT partition: a node value
-- that names no member of the federation.
CREATE FUNCTION federation_internal.guard_default_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v text := CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ->> TG_ARGV[1]
                   ELSE to_jsonb(NEW) ->> TG_ARGV[1] END;
BEGIN
    IF v IS NULL THEN
        -- NULL is routed to DEFAULT before the NOT NULL constraint is checked.
        RAISE EXCEPTION 'null value in column % of federated table % names no node', quote_ident(TG_ARGV[1]), TG_ARGV[0]
            USING ERRCODE = 'not_null_violation',
                  HINT = format('Leave the %I column out so the row belongs to this node ("%s").',
                                TG_ARGV[1], federation.node_name());
    END IF;
    RAISE EXCEPTION 'node "%" is not a member of the federation of table %', v, TG_ARGV[0]
        USING ERRCODE = 'check_violation',
              DETAIL = format('Rows of %s must name a member node in column %I; '
                              'this node is "%s".', TG_ARGV[0], TG_ARGV[1], federation.node_name()),
              HINT = format('Leave the %I column out so the row belongs to this node, '
                            'or join node "%s" to the federation first.', TG_ARGV[1], v);
END
$$;

-- BEFORE TRUNCATE, FOR EACH STATEMENT, on other nodes' partitions and the DEFAULT partition.
CREATE FUNCTION federation_internal.guard_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'cannot truncate partition %.% of federated table %: it belongs to %',
        quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME), TG_ARGV[1],
        CASE WHEN TG_ARGV[0] = '' THEN 'no node (DEFAULT partition)'
             ELSE format('node "%s"', TG_ARGV[0]) END
        USING ERRCODE = 'insufficient_privilege',
              HINT = format('%sTo empty this node''s rows, truncate its own partition: TRUNCATE %s;',
                            CASE WHEN TG_ARGV[0] = '' THEN ''
                                 ELSE format('Only node "%s" empties its partition, by truncating it there. ', TG_ARGV[0]) END,
                            TG_ARGV[2]);
END
$$;
