-- pg_federation's own catalog: the desired state of this node's federation.
-- Written only by the extension's functions, inside the caller's transaction, so a ROLLBACK
-- undoes them. Not readable by ordinary users (connection strings will live here); the
-- views in views.sql show what is safe to show.

-- The plumbing under the API (from 0.7.0): the Rust bodies of the SQL verbs, the write
-- guards, the helpers of status(), and the functions nodes call on each other. Out of sight of
-- \df federation.*; each function's own grant says who may run it (docs/operations.md, "Who
-- may run what"). PUBLIC may look them up: the verbs a table owner calls (enable, disable,
-- wait_ready, duplicate_keys) run their bodies here as the caller.
CREATE SCHEMA IF NOT EXISTS federation_internal;
COMMENT ON SCHEMA federation_internal IS
  'pg_federation''s internal functions: call the API in schema federation instead.';
GRANT USAGE ON SCHEMA federation_internal TO PUBLIC;

-- This node, once it has federated a table or joined a federation: the name its partitions,
-- publication and slots were made with (a changed federation.node_name is refused against
-- it), and the address its peers use to reach it.
CREATE TABLE federation.local_node (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    node_name  text NOT NULL,
    conninfo   text,           -- NULL until join(); may hold a password: superuser-only
    -- The number the federation gave this node at join (1 to 32767, never reused): its
    -- sequences on federated tables draw from values node_number * 2^48 and up
    -- (docs/keys.md). NULL until it joins.
    node_number     integer CHECK (node_number BETWEEN 1 AND 32767),
    -- The highest node number this node has seen given out in its federation: the next
    -- join takes a number above the highest of every member's.
    numbers_issued  integer NOT NULL DEFAULT 0,
    -- The server and database this state was made on (system identifier / database OID):
    -- a dump restored elsewhere carries it, and knows itself to be a copy.
    server_id       text,
    -- The WAL timeline this node's replication state was last known good on. A standby
    -- promoted in its place (or a point-in-time restore) writes on a new one: the worker then
    -- rebuilds this node's copies of every member's partitions (worker/heal.rs).
    timeline        integer,
    -- Set by the worker when another server answers at this node's address (conninfo): an
    -- old primary that came back after its standby was promoted. Writes and federation
    -- operations are refused while it is set.
    superseded      text
);

-- Members of the federation other than this node (filled by federation.join()).
CREATE TABLE federation.node (
    node_name     text PRIMARY KEY
                  CHECK (node_name ~ '^[a-z][a-z0-9_-]{0,23}$' AND node_name <> 'default'),
    conninfo      text NOT NULL DEFAULT '',   -- how this node reaches it; may hold a password
    state         text NOT NULL DEFAULT 'joining'
                  CHECK (state IN ('joining', 'ready', 'failed', 'leaving')),
    joined_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- true: this node's worker wires this member (this node called join()); false: the member
    -- wires itself with this node (its worker called federation_internal.add_member() here) and this
    -- node's worker leaves the pair alone until the member marks it ready.
    wired_here    boolean NOT NULL DEFAULT true,
    attempts      integer NOT NULL DEFAULT 0,  -- failed attempts of the current step
    last_error    text,                        -- never holds a password
    last_error_at timestamptz,
    -- When it became ready here: status() judges its slot only by probes taken after that.
    ready_at      timestamptz
);

-- Tables enrolled by federation.enable().
CREATE TABLE federation.federated_table (
    relid        regclass PRIMARY KEY,
    node_column  name NOT NULL,
    adopted      boolean NOT NULL,   -- it was already LIST-partitioned by the node column
    enabled_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- 'pending' while the worker federates it on the other members and refreshes their
    -- subscriptions (a table enabled on a running federation); then 'ready'.
    mesh_state   text NOT NULL DEFAULT 'ready' CHECK (mesh_state IN ('pending', 'ready')),
    -- The table's own primary key and unique constraints before enable() widened them by the
    -- node column, which disable() restores: [{"name", "primary", "columns", ...}]. NULL for
    -- a table adopted as it was, or federated before version 0.3.0.
    original_keys jsonb
);

-- Every partition of a federated table and the node that owns it (NULL: the DEFAULT partition).
CREATE TABLE federation.partition (
    relid      regclass NOT NULL REFERENCES federation.federated_table ON DELETE CASCADE,
    node_name  text,
    partition  regclass NOT NULL UNIQUE
);
CREATE UNIQUE INDEX partition_per_node ON federation.partition (relid, coalesce(node_name, ''));

REVOKE ALL ON federation.local_node, federation.node, federation.federated_table, federation.partition FROM PUBLIC;
-- node_name() checks the recorded name for every session (it is every federated table's
-- column default), and whether this server was superseded at its address: readable by all;
-- the connection string is not.
GRANT SELECT (node_name, node_number, server_id, superseded) ON federation.local_node TO PUBLIC;
-- Whether this node has joined a federation, without showing how it is reached.
CREATE FUNCTION federation_internal.local_node_joined() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT EXISTS (SELECT 1 FROM federation.local_node WHERE conninfo IS NOT NULL) $$;
-- Which tables are federated and who owns which partition is no secret (federation.tables
-- shows it); members' names and states neither. Connection strings and errors stay private.
GRANT SELECT ON federation.federated_table, federation.partition TO PUBLIC;
GRANT SELECT (node_name, state, joined_at) ON federation.node TO PUBLIC;

-- What this node's worker last saw of each member, for federation.status(): this node's slot
-- on the member (how far this node has confirmed, the WAL the member keeps for it, whether the
-- slot was lost) and this node's subscription error counters. Refreshed every few seconds;
-- unlogged (a crash empties it; the next probe refills it).
CREATE UNLOGGED TABLE federation.peer_probe (
    node_name           text PRIMARY KEY,
    probed_at           timestamptz NOT NULL,
    reachable           boolean NOT NULL,
    probe_error         text,          -- never holds a password
    unreachable_since   timestamptz,   -- first failed probe of the current outage
    peer_lsn            pg_lsn,        -- the member's current WAL position
    slot_found          boolean,       -- this node's slot on the member exists
    slot_wal_status     text,
    slot_confirmed_lsn  pg_lsn,
    slot_retained_bytes numeric,
    row_estimates       jsonb,         -- live rows of the member's own partitions (its statistics)
    apply_errors        bigint NOT NULL DEFAULT 0,
    sync_errors         bigint NOT NULL DEFAULT 0,
    errors_seen_at      timestamptz,   -- when the worker last saw an error counter grow
    error_streak        integer NOT NULL DEFAULT 0, -- consecutive probes that saw it grow
    -- Federated tables whose columns differ between this node and the member (names, types,
    -- NOT NULL), and since which probe: a schema change made on one node only.
    schema_diff         text,
    schema_diff_since   timestamptz,
    -- A member's clean shutdown or restart ends this node's stream from it with an error that
    -- PostgreSQL counts in apply_error_count. The worker tells those apart (0.7.0): an
    -- increase is a disconnect when the member was unreachable at this probe or the last one,
    -- or was started again in between; otherwise it stays unconfirmed until the next probe
    -- (which may still find the member gone). status() reports the rest as apply errors.
    peer_started_at     timestamptz,   -- the member's pg_postmaster_start_time() when last reached
    disconnect_errors   bigint NOT NULL DEFAULT 0,
    unconfirmed_errors  bigint NOT NULL DEFAULT 0
);
REVOKE ALL ON federation.peer_probe FROM PUBLIC;

-- What the last federation.verify() on this node found wrong with a copy of a partition
-- (status mismatch or missing; a copy that matched has no row). status() reports each row
-- until a later verify() finds the copy matching or resync() rebuilds it on this node.
CREATE TABLE federation.copy_check (
    relid       regclass NOT NULL REFERENCES federation.federated_table ON DELETE CASCADE,
    owner       text NOT NULL,
    node        text NOT NULL,
    status      text NOT NULL,
    rows        bigint,
    owner_rows  bigint,
    detail      text,
    checked_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (relid, owner, node)
);
REVOKE ALL ON federation.copy_check FROM PUBLIC;
GRANT SELECT ON federation.copy_check TO pg_monitor;

-- While a table enabled on a running federation is pending: the worker's last failure
-- federating it on the members (the member and its error; never holds a password, but names
-- hosts: not for PUBLIC), for status().
CREATE TABLE federation.spread_failure (
    relid      regclass PRIMARY KEY REFERENCES federation.federated_table ON DELETE CASCADE,
    error      text NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON federation.spread_failure FROM PUBLIC;

-- Rows this node held in another node's name when a table was federated again after a
-- federation-wide disable() (every node kept every row): they cannot be claimed by this node,
-- and the owner's own copy replaces them. Kept here, never dropped, until the worker finds an
-- identical row in the owner's partition; a row that differs stays until a DBA resolves it
-- (health() names it; docs/enable.md, "Enabling a table again"). Application data: each role
-- sees and removes only rows of tables it may read and delete from.
CREATE TABLE federation.set_aside (
    id           uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    relid        oid NOT NULL,        -- the federated table (oid: a dropped table leaves rows)
    table_name   text NOT NULL,       -- its name when the rows were set aside
    node         text NOT NULL,       -- the node column's value: the row's owner
    row_data     jsonb NOT NULL,      -- the whole row, as to_jsonb(row)
    reason       text NOT NULL,
    set_aside_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX set_aside_by_table ON federation.set_aside (relid, node);
REVOKE ALL ON federation.set_aside FROM PUBLIC;
ALTER TABLE federation.set_aside ENABLE ROW LEVEL SECURITY;
CREATE POLICY readable ON federation.set_aside FOR SELECT
    USING (pg_catalog.has_table_privilege(relid, 'SELECT'));
CREATE POLICY removable ON federation.set_aside FOR DELETE
    USING (pg_catalog.has_table_privilege(relid, 'DELETE'));
GRANT SELECT, DELETE ON federation.set_aside TO PUBLIC;

-- What a copy of another node's partition held when join() or resync() emptied it to copy
-- it afresh: a table of its own in this schema (federation.kept_<n>, CREATE TABLE AS), until
-- the fresh copy is complete; then the worker moves the rows the fresh copy does not hold as
-- they are into federation.set_aside and drops the table. Application data: superuser only.
CREATE TABLE federation.kept_copy (
    kept     regclass PRIMARY KEY,
    relid    oid NOT NULL,        -- the federated table
    node     text NOT NULL,       -- the copy's owner
    copy     oid NOT NULL,        -- the copy (partition) being rebuilt
    kept_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON federation.kept_copy FROM PUBLIC;

-- pg_dump of a database keeps the federation's state.
SELECT pg_catalog.pg_extension_config_dump('federation.local_node', '');
SELECT pg_catalog.pg_extension_config_dump('federation.node', '');
SELECT pg_catalog.pg_extension_config_dump('federation.federated_table', '');
SELECT pg_catalog.pg_extension_config_dump('federation.partition', '');
SELECT pg_catalog.pg_extension_config_dump('federation.set_aside', '');
SELECT pg_catalog.pg_extension_config_dump('federation.kept_copy', '');

GRANT USAGE ON SCHEMA federation TO PUBLIC;
