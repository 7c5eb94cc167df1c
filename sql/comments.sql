-- What psql's \df+, \dv+, \dt+ and \d+ say about pg_federation's objects. The public API's
-- own comments stand beside its definitions (api.sql, status.sql, keys.sql); here: what
-- pgrx defines from Rust, the internal functions in schema federation_internal (every
-- comment starts with "internal:"; \df federation.* shows the API alone), the views, the catalog tables and
-- their columns. Loaded last.

-- The public functions defined in Rust.
COMMENT ON FUNCTION federation.node_name() IS
  'This server''s node name: federation.node_name, or the pod label federation.node_label in '
  'the labels file (federation.labels_path, as Kubernetes'' downward API or pgnodemx mounts it). '
  'The default of every federated table''s node column; refuses (55000) when unresolved or '
  'changed since the node joined.';
COMMENT ON FUNCTION federation.node_name_source() IS
  'Where node_name() found the name: the setting, the labels file (and which label), or pgnodemx.';
COMMENT ON FUNCTION federation.server_id() IS
  'This server''s system identifier and this database''s OID: what a node records when it '
  'joins; a restored copy elsewhere has another one and knows it is a copy.';

-- Internal: the verbs' Rust halves (call the SQL wrappers).
COMMENT ON FUNCTION federation_internal.enable_table(oid, text) IS
  'internal: the body of federation.enable(); call that instead.';
COMMENT ON FUNCTION federation_internal.disable_table(oid) IS
  'internal: the body of federation.disable(); call that instead.';
COMMENT ON FUNCTION federation_internal.join_federation(text, text) IS
  'internal: the body of federation.join(); call that instead.';
COMMENT ON FUNCTION federation_internal.restore_federation_node(text, text) IS
  'internal: the body of federation.restore(); call that instead.';
COMMENT ON FUNCTION federation_internal.leave_federation(boolean) IS
  'internal: the body of federation.leave(); call that instead.';
COMMENT ON FUNCTION federation_internal.drop_federation_node(text, boolean) IS
  'internal: the body of federation.drop_node(); call that instead.';
COMMENT ON FUNCTION federation_internal.wait_ready_ms(bigint) IS
  'internal: the body of federation.wait_ready(); call that instead.';
COMMENT ON FUNCTION federation_internal.resync_node(text, oid, bigint, text) IS
  'internal: the body of federation.resync(); call that instead.';
COMMENT ON FUNCTION federation_internal.verify_tables(oid) IS
  'internal: the body of federation.verify(); call that instead.';
COMMENT ON FUNCTION federation_internal.duplicate_keys_of(oid) IS
  'internal: the body of federation.duplicate_keys(); call that instead.';
COMMENT ON FUNCTION federation_internal.primary_status() IS
  'internal: status() on a primary; federation.status() also answers on a hot standby.';
COMMENT ON FUNCTION federation_internal.set_aside_state() IS
  'internal: for status(): groups of rows in federation.set_aside that the owner''s copy does not hold.';
COMMENT ON FUNCTION federation_internal.repair_in_progress(text) IS
  'internal: for status(): whether a repair by difference of the copies this subscription carries is under way.';
COMMENT ON FUNCTION federation_internal.load_in_progress(text) IS
  'internal: for status(): whether the worker loads the copies this subscription will carry (a join).';
COMMENT ON FUNCTION federation_internal.passfile_problem() IS
  'internal: for status(): what is wrong with federation.passfile, if it is set and refused.';
COMMENT ON FUNCTION federation_internal.identity_problem() IS
  'internal: for status(): why this node refuses writes now, if it does.';
COMMENT ON FUNCTION federation_internal.subscription_name(text, text) IS
  'internal: the name of the subscription (and slot) by which subscriber receives publisher''s partitions.';
COMMENT ON FUNCTION federation_internal.mask_conninfo(text) IS
  'internal: a connection string with its password replaced, for federation.nodes.';
COMMENT ON FUNCTION federation_internal.local_node_joined() IS
  'internal: whether this node has joined a federation, without showing its address.';

-- Internal: the guards (trigger functions).
COMMENT ON FUNCTION federation_internal.guard_foreign_row() IS
  'internal: trigger on another node''s partition: refuses local INSERT, UPDATE and DELETE '
  '(42501); replication''s apply workers pass.';
COMMENT ON FUNCTION federation_internal.guard_default_row() IS
  'internal: trigger on the DEFAULT partition: refuses rows whose node is not a member.';
COMMENT ON FUNCTION federation_internal.guard_truncate() IS
  'internal: trigger refusing TRUNCATE of another node''s partition or the DEFAULT partition.';

-- Internal: what nodes call on each other (superuser only).
COMMENT ON FUNCTION federation_internal.peer_info() IS
  'internal, node to node: this node''s name, version, members and tables, for a joining node.';
COMMENT ON FUNCTION federation_internal.check_reachable(text) IS
  'internal, node to node: whether this node reaches the given address (join checks both ways).';
COMMENT ON FUNCTION federation_internal.add_member(text, text, text) IS
  'internal, node to node: records a joining member here and makes its partitions.';
COMMENT ON FUNCTION federation_internal.load_begin(text) IS
  'internal, for the worker''s load of a joining node''s copy: detaches it, drops its indexes, adds a CHECK of its bound.';
COMMENT ON FUNCTION federation_internal.load_end(text) IS
  'internal, for the worker''s load of a joining node''s copy: attaches it again (its indexes are built) and drops the CHECK.';
COMMENT ON FUNCTION federation_internal.set_member_ready(text) IS
  'internal, node to node: marks a member ready once every copy both ways is done.';
COMMENT ON FUNCTION federation_internal.remove_member(text, boolean) IS
  'internal, node to node: forgets a member that left or was dropped.';
COMMENT ON FUNCTION federation_internal.member_moved(text, text) IS
  'internal, node to node: a member reached at a new address from now on, once that address answers as the member.';
COMMENT ON FUNCTION federation_internal.start_apply_worker(text) IS
  'internal, node to node: starts the apply worker of a subscription just made here when PostgreSQL 15''s launcher holds it back.';
COMMENT ON FUNCTION federation_internal.reserve_node_number(integer, integer) IS
  'internal, node to node: reserves a node number for a joining node.';
COMMENT ON FUNCTION federation_internal.table_shape(text, text) IS
  'internal, node to node: a federated table''s columns, to compare before enable or join.';
COMMENT ON FUNCTION federation_internal.table_definition(text) IS
  'internal, node to node: the statements that create a federated table, for a joining node that lacks it.';
COMMENT ON FUNCTION federation_internal.enable_check(text, text) IS
  'internal, node to node: every check enable() makes, nothing changed (all-or-nothing enable).';
COMMENT ON FUNCTION federation_internal.enable_here(text, text) IS
  'internal, node to node: federates a table on this node for a member that enabled it.';
COMMENT ON FUNCTION federation_internal.unpublish_here(text) IS
  'internal, node to node: takes a table''s partition out of this node''s publication (disable).';
COMMENT ON FUNCTION federation_internal.disable_here(text) IS
  'internal, node to node: turns a federated table back into an ordinary table on this node.';
COMMENT ON FUNCTION federation_internal.ddl_quiesce_here(text) IS
  'internal, node to node: before a schema change, locks this node''s partition of a table and marks its WAL position.';
COMMENT ON FUNCTION federation_internal.ddl_lagging(text) IS
  'internal, node to node: the subscribers that have not yet applied this node''s WAL up to a position.';

-- Views.
COMMENT ON COLUMN federation.tables.table_name IS 'The federated table (its parent).';
COMMENT ON COLUMN federation.tables.node_column IS 'The column that names each row''s owner node.';
COMMENT ON COLUMN federation.tables.partition IS 'One partition of it.';
COMMENT ON COLUMN federation.tables.owner_node IS 'The node that owns (writes) that partition; (default) for the DEFAULT partition.';
COMMENT ON COLUMN federation.tables.is_local IS 'Whether this node owns the partition (the others are copies).';
COMMENT ON COLUMN federation.tables.estimated_rows IS 'pg_class.reltuples of the partition (ANALYZE updates it).';
COMMENT ON COLUMN federation.tables.adopted IS 'The table was already LIST-partitioned by the node column when enabled.';
COMMENT ON COLUMN federation.nodes.conninfo IS 'How this node reaches the member, password masked.';
COMMENT ON COLUMN federation.nodes.state IS 'standalone or ready (this node); joining, ready, failed or leaving (a member).';
COMMENT ON COLUMN federation.nodes.last_error IS 'The last failed join step with this member (never a password).';
COMMENT ON VIEW federation.status IS
  'federation.status() as a view (pg_monitor): one row per member and direction, plus settings, table, copy, identity, keys, schema and set aside rows.';

-- Catalog tables.
COMMENT ON TABLE federation.local_node IS
  'This node as it joined: its name, address (superuser only), node number and server identity. One row at most.';
COMMENT ON TABLE federation.node IS
  'The members of this node''s federation and the state of each pair (joining, ready, failed, leaving).';
COMMENT ON TABLE federation.federated_table IS
  'Tables enrolled by federation.enable(): their node column and whether the worker has federated them on every member.';
COMMENT ON TABLE federation.partition IS
  'Every partition of a federated table and the node that owns it (NULL: the DEFAULT partition).';
COMMENT ON TABLE federation.peer_probe IS
  'internal: what the worker last saw of each member (slots, errors, schema differences), for status(). Unlogged.';
COMMENT ON TABLE federation.copy_check IS
  'What the last verify() found wrong with a copy of a partition on this node, until it matches or is rebuilt.';
COMMENT ON TABLE federation.key_check IS
  'What duplicate_keys() (or verify()) last found: key values held by more than one node''s partition.';
COMMENT ON TABLE federation.spread_failure IS
  'internal: the worker''s last failure federating a pending table on the members, for status().';
COMMENT ON TABLE federation.kept_copy IS
  'internal: copies emptied by join() or resync(), kept whole in a table of their own (federation.kept_*) until the fresh copy is complete and compared.';
COMMENT ON TABLE federation.set_aside IS
  'Rows kept, never dropped, that this node held in another node''s name: a table enabled '
  'again after a federation-wide disable(), or a copy emptied to be copied afresh (join, '
  'resync). Dropped by the worker once the owner''s copy holds them as they are; the rest '
  'are for a DBA to resolve (docs/enable.md). Each role sees the rows of tables it may read.';
COMMENT ON COLUMN federation.set_aside.row_data IS 'The whole row, as to_jsonb(row).';
COMMENT ON COLUMN federation.set_aside.node IS 'The row''s owner: the value of its node column.';
COMMENT ON COLUMN federation.set_aside.relid IS 'The federated table (an OID: a dropped table leaves its rows here).';
COMMENT ON COLUMN federation.set_aside.reason IS 'Why the row was set aside.';
