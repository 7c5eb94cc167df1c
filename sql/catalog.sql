-- pg_federation's own catalog: the desired state of this node's federation.
-- Written only by the extension's functions, inside the caller's transaction, so a ROLLBACK
-- undoes them. Not readable by ordinary users (connection strings will live here); the
-- views in views.sql show what is safe to show.

-- Members of the federation other than this node (filled by federation.join()).
CREATE TABLE federation.node (
    node_name  text PRIMARY KEY
               CHECK (node_name ~ '^[a-z][a-z0-9_-]{0,23}$' AND node_name <> 'default'),
    state      text NOT NULL DEFAULT 'ready'
               CHECK (state IN ('joining', 'ready', 'failed', 'leaving')),
    joined_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Tables enrolled by federation.enable().
CREATE TABLE federation.federated_table (
    relid        regclass PRIMARY KEY,
    node_column  name NOT NULL,
    adopted      boolean NOT NULL,   -- it was already LIST-partitioned by the node column
    enabled_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Every partition of a federated table and the node that owns it (NULL: the DEFAULT partition).
CREATE TABLE federation.partition (
    relid      regclass NOT NULL REFERENCES federation.federated_table ON DELETE CASCADE,
    node_name  text,
    partition  regclass NOT NULL UNIQUE
);
CREATE UNIQUE INDEX partition_per_node ON federation.partition (relid, coalesce(node_name, ''));

REVOKE ALL ON federation.node, federation.federated_table, federation.partition FROM PUBLIC;

-- pg_dump of a database keeps the federation's state.
SELECT pg_catalog.pg_extension_config_dump('federation.node', '');
SELECT pg_catalog.pg_extension_config_dump('federation.federated_table', '');
SELECT pg_catalog.pg_extension_config_dump('federation.partition', '');

GRANT USAGE ON SCHEMA federation TO PUBLIC;
