-- pg_federation 0.12.0 -> 0.13.0
--
-- A joining node loads its copies of a member's partitions itself when the member holds rows
-- (src/worker/load.rs), instead of the subscription's table sync: in one transaction on the
-- joining node the copies are taken out of their tables, their indexes dropped, the member's
-- rows relayed from the snapshot of the subscription's slot, the copies attached again (the
-- indexes built by sorting) and the subscription made without an initial copy. For 1,000,000
-- rows with a random-UUID key the join takes 0.6-0.8x a plain COPY instead of 1.04-1.20x
-- (BENCHMARKS.md). New internal functions for it: load_begin(text) and load_end(text), which
-- the worker calls on its own node, and load_in_progress(text), which status() reads: while a
-- load runs, the member's 'in' row says "joining: loading ..." with tables_syncing,
-- rows_copied (the COPY running now) and rows_to_copy (from the member's statistics).
-- CREATE OR REPLACE keeps primary_status()'s owner, grants and comment.

CREATE FUNCTION federation_internal.load_begin(copy text) RETURNS text
STRICT SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'load_begin_wrapper';
CREATE FUNCTION federation_internal.load_end(copy text) RETURNS void
STRICT SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'load_end_wrapper';
CREATE FUNCTION federation_internal.load_in_progress(subscription text) RETURNS boolean
STRICT STABLE SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'load_in_progress_wrapper';
COMMENT ON FUNCTION federation_internal.load_begin(text) IS
  'internal, for the worker''s load of a joining node''s copy: detaches it, drops its indexes, adds a CHECK of its bound.';
COMMENT ON FUNCTION federation_internal.load_end(text) IS
  'internal, for the worker''s load of a joining node''s copy: attaches it again (its indexes are built) and drops the CHECK.';
COMMENT ON FUNCTION federation_internal.load_in_progress(text) IS
  'internal: for status(): whether the worker loads the copies this subscription will carry (a join).';
REVOKE EXECUTE ON FUNCTION federation_internal.load_begin(text), federation_internal.load_end(text),
    federation_internal.load_in_progress(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION federation_internal.primary_status()
RETURNS TABLE (
    peer               text,
    direction          text,
    state              text,
    health             text,
    reason             text,
    lag_bytes          numeric,
    lag                interval,
    retained_wal_bytes numeric,
    wal_status         text,
    tables_syncing     bigint,
    rows_copied        bigint,
    rows_to_copy       bigint,
    apply_errors       bigint,
    sync_errors        bigint,
    last_error_at      timestamptz,
    stale_partitions   text[],
    repair             text,
    probed_at          timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- The query's estimated cost crosses jit_above_cost: with JIT a call took 1.5 to 3 s, without 5 ms.
SET jit = off
AS $$
WITH me AS (
    SELECT l.node_name FROM federation.local_node l WHERE l.conninfo IS NOT NULL
),
limits AS (
    SELECT coalesce(current_setting('federation.lag_warning', true), '1min')::interval AS lag_warn,
           coalesce(current_setting('federation.lag_critical', true), '10min')::interval AS lag_crit,
           pg_size_bytes(coalesce(current_setting('federation.retained_wal_warning', true), '1GB')) AS wal_warn,
           pg_size_bytes(coalesce(current_setting('federation.retained_wal_critical', true), '8GB')) AS wal_crit
),
-- Each node's partitions, by owner, as names a DBA can paste.
owned AS (
    SELECT p.node_name, array_agg(p.partition::text ORDER BY p.partition::text) AS parts
    FROM federation.partition p WHERE p.node_name IS NOT NULL GROUP BY p.node_name
),
inbound AS (
    SELECT n.node_name AS peer, n.state AS member_state, n.last_error AS join_error,
           s.oid AS subid, s.subenabled,
           (SELECT w.pid FROM pg_stat_subscription w WHERE w.subid = s.oid AND w.relid IS NULL) AS apply_pid,
           -- The worker loads this node's copies of the member's partitions and makes the
           -- subscription in one transaction (src/worker/load.rs), holding an advisory lock:
           -- until it commits, every copy is still to be made, and the COPY running now into
           -- one of them says how far it has got.
           l.loading,
           CASE WHEN l.loading THEN (SELECT count(*) FROM federation.partition p WHERE p.node_name = n.node_name)
                ELSE (SELECT count(*) FROM pg_subscription_rel r WHERE r.srsubid = s.oid AND r.srsubstate <> 'r') END AS syncing,
           CASE WHEN l.loading
                THEN (SELECT sum(c.tuples_processed) FROM pg_stat_progress_copy c JOIN federation.partition p ON p.partition = c.relid
                       WHERE p.node_name = n.node_name AND c.command = 'COPY FROM')
                ELSE (SELECT sum(c.tuples_processed) FROM pg_stat_subscription w JOIN pg_stat_progress_copy c ON c.pid = w.pid
                       WHERE w.subid = s.oid AND w.relid IS NOT NULL) END::bigint AS copied,
           -- Rows the copies still running or waiting to run have to bring, from the member's
           -- statistics (n_live_tup of its partitions, sampled by the probe).
           CASE WHEN l.loading
                THEN (SELECT sum((pr.row_estimates ->> p.partition::text)::bigint) FROM federation.partition p
                       WHERE p.node_name = n.node_name)
                ELSE (SELECT sum((pr.row_estimates ->> r.srrelid::regclass::text)::bigint) FROM pg_subscription_rel r
                       WHERE r.srsubid = s.oid AND r.srsubstate IN ('i', 'd')) END::bigint AS to_copy,
           pr.reachable, pr.probe_error, pr.unreachable_since,
           -- This node's slot on the member, as the probe saw it: unknown until a probe that
           -- looked after the member became ready (one that looked while it was joining saw no
           -- slot yet, which is no finding).
           CASE WHEN NOT pr.stale THEN pr.slot_found END AS slot_found,
           CASE WHEN NOT pr.stale THEN pr.slot_wal_status END AS slot_wal_status,
           CASE WHEN NOT pr.stale THEN pr.peer_lsn - pr.slot_confirmed_lsn END AS lag_bytes,
           CASE WHEN NOT pr.stale THEN pr.slot_retained_bytes END AS slot_retained_bytes,
           -- Apply errors that were not a member going away (a clean shutdown or restart of the
           -- member ends the stream with an error PostgreSQL counts too).
           pr.apply_errors - pr.disconnect_errors - pr.unconfirmed_errors AS apply_errors,
           pr.sync_errors, pr.errors_seen_at, pr.error_streak, pr.probed_at,
           -- A repair by difference of this node's copy runs (resync(..., mode => 'diff') or the
           -- worker after a failover): it holds an advisory lock while the subscription is
           -- away (src/ops/diff.rs, REPAIR_LOCK).
           federation_internal.repair_in_progress(federation_internal.subscription_name(n.node_name, me.node_name)) AS repairing,
           o.parts
    FROM me CROSS JOIN federation.node n
    LEFT JOIN pg_subscription s
           ON s.subname = federation_internal.subscription_name(n.node_name, me.node_name)
          AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    LEFT JOIN LATERAL (SELECT p.*, p.probed_at < n.ready_at AS stale FROM federation.peer_probe p
                       WHERE p.node_name = n.node_name) pr ON true
    LEFT JOIN owned o ON o.node_name = n.node_name
    CROSS JOIN LATERAL (SELECT n.state = 'joining' AND s.oid IS NULL
                               AND federation_internal.load_in_progress(federation_internal.subscription_name(n.node_name, me.node_name))
                               AS loading) l
),
inbound_judged AS (
    SELECT i.*,
        CASE
            WHEN i.member_state = 'joining' AND i.join_error IS NOT NULL THEN 'WARNING'
            WHEN i.member_state = 'joining' THEN 'OK'
            WHEN i.member_state = 'failed' THEN 'CRITICAL'
            WHEN i.member_state = 'leaving' THEN 'WARNING'
            WHEN i.repairing THEN 'WARNING'
            WHEN i.subid IS NULL OR NOT i.subenabled THEN 'CRITICAL'
            WHEN i.slot_found IS FALSE OR i.slot_wal_status = 'lost' THEN 'CRITICAL'
            WHEN i.slot_wal_status = 'unreserved' THEN 'CRITICAL'
            WHEN i.reachable IS FALSE AND i.unreachable_since < now() - l.lag_crit THEN 'CRITICAL'
            WHEN i.reachable IS FALSE THEN 'WARNING'
            WHEN i.error_streak >= 2 THEN 'CRITICAL'
            WHEN i.lag_bytes > l.wal_crit OR i.slot_retained_bytes > l.wal_crit THEN 'CRITICAL'
            WHEN i.apply_pid IS NULL OR i.error_streak = 1 THEN 'WARNING'
            WHEN i.slot_wal_status = 'extended' THEN 'WARNING'
            WHEN i.lag_bytes > l.wal_warn OR i.slot_retained_bytes > l.wal_warn THEN 'WARNING'
            ELSE 'OK'
        END AS health,
        CASE
            WHEN i.member_state = 'joining' AND i.join_error IS NOT NULL THEN 'joining; last step failed: ' || i.join_error
            WHEN i.member_state = 'joining' AND i.loading THEN
                'joining: loading this node''s copies of ' || i.peer || '''s partitions in one transaction (their tables wait here until it commits)'
            WHEN i.member_state = 'joining' THEN 'joining: wiring and initial copies in progress'
            WHEN i.member_state = 'failed' THEN 'member is failed'
            WHEN i.member_state = 'leaving' THEN 'this node is leaving the federation (if federation.leave() stopped half-way, run it again)'
            WHEN i.repairing THEN 'repairing this node''s copy of ' || i.peer || '''s partitions by difference; replication resumes when it is done'
            WHEN i.subid IS NULL THEN 'this node has no subscription to ' || i.peer || ': its new rows do not arrive here'
            WHEN NOT i.subenabled THEN 'this node''s subscription to ' || i.peer || ' is disabled'
            WHEN i.slot_found IS FALSE OR i.slot_wal_status = 'lost' THEN
                'this node''s replication slot on ' || i.peer || ' was '
                || CASE WHEN i.slot_found IS FALSE THEN 'dropped' ELSE 'invalidated (max_slot_wal_keep_size)' END
                || ': this node''s copies of ' || i.peer || '''s partitions are stale'
            WHEN i.slot_wal_status = 'unreserved' THEN
                i.peer || ' is about to remove WAL this node still needs (wal_status unreserved)'
            WHEN i.reachable IS FALSE THEN
                i.peer || ' is unreachable since ' || date_trunc('second', i.unreachable_since) || ': ' || coalesce(i.probe_error, '')
            WHEN i.error_streak >= 2 THEN
                'applying ' || i.peer || '''s changes keeps failing (' || i.apply_errors || ' apply and ' || i.sync_errors
                || ' copy errors so far; the message is in this server''s log)'
            WHEN i.lag_bytes > l.wal_crit OR i.lag_bytes > l.wal_warn THEN
                'this node is ' || pg_size_pretty(i.lag_bytes) || ' behind ' || i.peer
            WHEN i.slot_retained_bytes > l.wal_warn THEN
                i.peer || ' keeps ' || pg_size_pretty(i.slot_retained_bytes) || ' of WAL for this node'
            WHEN i.error_streak = 1 THEN 'an error while applying ' || i.peer || '''s changes (the message is in this server''s log)'
            WHEN i.apply_pid IS NULL THEN 'apply worker for ' || i.peer || ' is not running (reconnecting or restarting)'
            WHEN i.slot_wal_status = 'extended' THEN i.peer || ' keeps WAL for this node beyond max_wal_size'
            WHEN i.syncing > 0 THEN i.syncing || ' table(s) still copying from ' || i.peer
            ELSE 'receiving'
        END AS reason
    FROM inbound i CROSS JOIN limits l
),
outbound AS (
    SELECT n.node_name AS peer, n.state AS member_state,
           sl.slot_name, sl.active, sl.wal_status AS slot_wal_status,
           pg_current_wal_lsn() - sl.confirmed_flush_lsn AS lag_bytes,
           pg_current_wal_lsn() - sl.restart_lsn AS retained,
           r.state AS sender_state, r.replay_lag, r.reply_time,
           -- The member repairs its copy of this node's partitions by difference and makes its
           -- slot here anew meanwhile: it holds the same advisory lock here (src/ops/diff.rs).
           federation_internal.repair_in_progress(federation_internal.subscription_name(me.node_name, n.node_name)) AS repairing,
           o.parts
    FROM me CROSS JOIN federation.node n
    LEFT JOIN pg_replication_slots sl ON sl.slot_name = federation_internal.subscription_name(me.node_name, n.node_name)
    LEFT JOIN pg_stat_replication r ON r.pid = sl.active_pid
    LEFT JOIN owned o ON o.node_name = me.node_name
),
outbound_judged AS (
    SELECT o.*,
        CASE
            WHEN o.member_state = 'joining' THEN 'OK'
            WHEN o.member_state = 'failed' THEN 'CRITICAL'
            WHEN o.member_state = 'leaving' THEN 'WARNING'
            WHEN o.repairing THEN 'WARNING'
            WHEN o.slot_name IS NULL OR o.slot_wal_status = 'lost' THEN 'CRITICAL'
            WHEN o.slot_wal_status = 'unreserved' THEN 'CRITICAL'
            WHEN o.retained > l.wal_crit OR o.lag_bytes > l.wal_crit OR o.replay_lag > l.lag_crit THEN 'CRITICAL'
            WHEN NOT o.active THEN 'WARNING'
            WHEN o.slot_wal_status = 'extended' THEN 'WARNING'
            WHEN o.retained > l.wal_warn OR o.lag_bytes > l.wal_warn OR o.replay_lag > l.lag_warn THEN 'WARNING'
            ELSE 'OK'
        END AS health,
        CASE
            WHEN o.member_state = 'joining' THEN 'joining: wiring and initial copies in progress'
            WHEN o.member_state = 'failed' THEN 'member is failed'
            WHEN o.member_state = 'leaving' THEN 'this node is leaving the federation (if federation.leave() stopped half-way, run it again)'
            WHEN o.repairing THEN o.peer || ' is repairing its copy of this node''s partitions by difference (its slot here is made anew)'
            WHEN o.slot_name IS NULL THEN
                o.peer || '''s replication slot on this node is gone: ' || o.peer || '''s copies of this node''s partitions are stale'
            WHEN o.slot_wal_status = 'lost' THEN
                o.peer || '''s replication slot on this node was invalidated (max_slot_wal_keep_size): '
                || o.peer || '''s copies of this node''s partitions are stale'
            WHEN o.slot_wal_status = 'unreserved' THEN
                'this node is about to remove WAL ' || o.peer || ' still needs (wal_status unreserved)'
            WHEN o.retained > l.wal_warn THEN
                'this node keeps ' || pg_size_pretty(o.retained) || ' of WAL for ' || o.peer
                || CASE WHEN NOT o.active THEN ', which is not connected' ELSE '' END
            WHEN o.lag_bytes > l.wal_warn THEN o.peer || ' is ' || pg_size_pretty(o.lag_bytes) || ' behind this node'
            WHEN o.replay_lag > l.lag_warn THEN o.peer || ' is ' || o.replay_lag || ' behind this node'
            WHEN NOT o.active THEN o.peer || ' is not connected (WAL for it accumulates here)'
            WHEN o.slot_wal_status = 'extended' THEN 'this node keeps WAL for ' || o.peer || ' beyond max_wal_size'
            ELSE 'sending'
        END AS reason
    FROM outbound o CROSS JOIN limits l
),
members AS (SELECT count(*) AS n FROM federation.node),
needs AS (
    -- Per setting: what the current membership needs (one slot, walsender and apply worker
    -- per member, plus one table copy per member during a join).
    SELECT name, setting::bigint AS have, need
    FROM pg_settings, members m,
         LATERAL (SELECT CASE name
             WHEN 'max_replication_slots' THEN m.n + current_setting('max_sync_workers_per_subscription')::bigint
             WHEN 'max_wal_senders' THEN m.n + current_setting('max_sync_workers_per_subscription')::bigint
             WHEN 'max_logical_replication_workers' THEN m.n + current_setting('max_sync_workers_per_subscription')::bigint
             WHEN 'max_worker_processes' THEN current_setting('max_logical_replication_workers')::bigint + 3
             -- A schema change commits on every member with two-phase commit.
             WHEN 'max_prepared_transactions' THEN CASE WHEN m.n > 0 THEN 1 ELSE 0 END
         END AS need) x
    WHERE name IN ('max_replication_slots', 'max_wal_senders', 'max_logical_replication_workers', 'max_worker_processes',
                   'max_prepared_transactions')
      AND EXISTS (SELECT 1 FROM me)
),
settings AS (
    SELECT CASE WHEN bool_or(have < need) THEN 'WARNING' ELSE 'OK' END AS health,
           coalesce(string_agg(format('%s = %s, needs at least %s', name, have, need), '; ' ORDER BY name)
                    FILTER (WHERE have < need), 'settings suffice for ' || (SELECT n FROM members) || ' member(s)')
           || CASE WHEN current_setting('max_slot_wal_keep_size') = '-1'
                   THEN '; max_slot_wal_keep_size = -1: a member that stays down keeps WAL here without limit' ELSE '' END
           AS reason
    FROM needs
    HAVING count(*) > 0
),
passfile AS (
    -- federation.passfile refused (others may read it, not a file): no copy is made from it.
    SELECT 'WARNING'::text AS health, pr.problem AS reason
    FROM (SELECT federation_internal.passfile_problem() AS problem) pr
    WHERE pr.problem IS NOT NULL
),
spreading AS (
    -- A table enabled here on a running federation but not yet federated on every member
    -- (the worker spreads it after COMMIT): WARNING once that takes longer than lag_warning.
    -- At once when an attempt failed: the member and its error.
    SELECT 'WARNING'::text AS health,
           CASE WHEN f.error IS NULL
                THEN format('table %s is federated here but not yet on every member (enabled %s): the worker is still spreading it',
                            t.relid, date_trunc('second', t.enabled_at))
                ELSE format('table %s is federated here but not yet on every member (enabled %s); the last attempt (%s) failed: %s',
                            t.relid, date_trunc('second', t.enabled_at), date_trunc('second', f.failed_at), f.error)
           END AS reason,
           'fix what the error names on that member; the worker retries by itself; SELECT federation.wait_ready(); waits until it is done' AS repair
    FROM federation.federated_table t CROSS JOIN limits l
    LEFT JOIN federation.spread_failure f ON f.relid = t.relid
    WHERE t.mesh_state = 'pending' AND (t.enabled_at < now() - l.lag_warn OR f.error IS NOT NULL)
),
copies AS (
    -- What the last verify() on this node found wrong with a copy of a partition, until a
    -- later verify() finds it matching or resync() rebuilds it. A copy holding rows its owner
    -- lacks is never to be rebuilt from the owner: those rows were acknowledged somewhere.
    SELECT c.node, c.status,
           'CRITICAL'::text AS health,
           format('verify() at %s found %s''s copy of %s''s partition of %s %s%s',
                  date_trunc('second', c.checked_at), c.node, c.owner, c.relid,
                  CASE c.status WHEN 'missing' THEN 'missing' ELSE 'different from the owner''s' END,
                  coalesce(': ' || c.detail, '')) AS reason,
           CASE WHEN c.rows > c.owner_rows
                THEN 'the copy holds rows its owner lacks: do not resync it; docs/runbook.md, "A copy that verify reports as mismatched"'
                ELSE format('on %s: SELECT federation.resync(%L, %L); then SELECT * FROM federation.verify(%L);',
                            c.node, c.owner, c.relid::text, c.relid::text) END AS repair
    FROM federation.copy_check c
),
identity AS (
    -- A node whose name cannot be resolved, or differs from the one its partitions were made
    -- with, refuses every write to its federated tables.
    SELECT 'CRITICAL'::text AS health, ip.problem AS reason, ip.repair FROM federation_internal.identity_problem() ip
),
keys AS (
    -- Key values held by more than one node, as duplicate_keys() or verify() last found them.
    SELECT 'WARNING'::text AS health,
           format('%s: %s value(s) of (%s) exist in more than one node''s partition (for example %s; found %s)',
                  k.relid, k.duplicates, k.key, k.example, date_trunc('second', k.checked_at)) AS reason,
           format('SELECT * FROM federation.duplicate_keys(%L); then docs/keys.md, "Duplicate keys"', k.relid::text) AS repair
    FROM federation.key_check k WHERE k.duplicates > 0
    UNION ALL
    -- Sequences of federated tables that do not draw from this node's range (docs/keys.md).
    SELECT 'WARNING',
           format('sequence %s of %s.%I draws values outside this node''s range (node number %s): they can collide with other nodes'' values',
                  cs.seq, t.relid, cs.column_name, l.node_number),
           CASE WHEN cs.column_type <> 'bigint'::regtype
                THEN format('the column is %s, too narrow for node numbers: docs/keys.md, "Integer columns"', cs.column_type)
                ELSE format('SELECT federation.enable(%L);', t.relid::text) END
    FROM federation.local_node l
    CROSS JOIN federation.federated_table t
    JOIN federation.column_sequence cs ON cs.relid = t.relid
    WHERE l.node_number IS NOT NULL
      AND (cs.min_value <> l.node_number::bigint << 48 OR cs.max_value <> ((l.node_number::bigint + 1) << 48) - 1)
),
schemas AS (
    -- A federated table whose columns differ between this node and a member, seen by two
    -- probes in a row (a change made on one node only, with federation.unsafe_ddl).
    SELECT p.node_name AS peer, 'different'::text AS state, 'WARNING'::text AS health,
           format('the columns of %s differ between this node and %s (since %s): a schema change was made on one of them only',
                  p.schema_diff, p.node_name, date_trunc('second', p.schema_diff_since)) AS reason,
           'make the table the same on both (docs/migrations.md, "The escape hatch"): rows carrying a column a node lacks stop replicating' AS repair
    FROM federation.peer_probe p
    WHERE p.schema_diff IS NOT NULL AND p.schema_diff_since < p.probed_at
    UNION ALL
    -- A schema change prepared here that its node has not yet committed or rolled back: the
    -- table's locks are held until the worker learns the outcome.
    SELECT split_part(x.gid, ':', 2), 'prepared', 'WARNING',
           format('schema change %s is prepared here since %s and holds its table''s locks until %s''s outcome is known',
                  x.gid, date_trunc('second', x.prepared), split_part(x.gid, ':', 2)),
           'the worker commits or rolls it back once that node is reachable; if it is gone for good, see docs/migrations.md, "How a change is made"'
    FROM pg_catalog.pg_prepared_xacts x CROSS JOIN limits l
    WHERE x.gid LIKE 'pg\_federation\_ddl:%' AND x.database = current_database()
      AND x.prepared < now() - l.lag_warn
),
aside AS (
    -- Rows held in a member's name when a table was enabled again (federation.set_aside)
    -- that the member's own copy here does not hold as they are: while that copy is still
    -- coming, and for good once it has come (changed here after the disable, or gone there).
    SELECT a.node AS peer,
           CASE WHEN a.waiting THEN 'waiting' ELSE 'differs' END AS state,
           'WARNING'::text AS health,
           CASE WHEN a.waiting
                THEN format('%s row(s) of %s in node %s''s name are set aside until its own copy arrives here, then compared with it',
                            a.differing, a.table_name, a.node)
                ELSE format('%s of the %s row(s) of %s set aside in node %s''s name differ from its own rows: they were kept, not dropped',
                            a.differing, a.set_aside, a.table_name, a.node)
           END AS reason,
           CASE WHEN a.waiting
                THEN 'none: the worker compares them once the copy is complete (tables_syncing)'
                ELSE format('review them: SELECT row_data FROM federation.set_aside WHERE table_name = %L AND node = %L; write on node %s what must stay, then DELETE them from federation.set_aside (docs/enable.md, "Enabling a table again")',
                            a.table_name, a.node, a.node)
           END AS repair
    FROM federation_internal.set_aside_state() a
)
SELECT i.peer, 'in', CASE
           WHEN i.member_state <> 'ready' THEN i.member_state
           WHEN i.subid IS NULL THEN 'missing'
           WHEN NOT i.subenabled THEN 'disabled'
           WHEN i.slot_found IS FALSE OR i.slot_wal_status = 'lost' THEN 'slot lost'
           WHEN i.error_streak >= 2 THEN 'failing'
           WHEN i.apply_pid IS NULL THEN 'down'
           WHEN i.syncing > 0 THEN 'copying'
           ELSE 'streaming' END,
       i.health, i.reason, i.lag_bytes, NULL::interval, i.slot_retained_bytes, i.slot_wal_status,
       i.syncing, i.copied, CASE WHEN i.syncing > 0 THEN greatest(coalesce(i.to_copy, 0) - coalesce(i.copied, 0), 0) END,
       i.apply_errors, i.sync_errors, i.errors_seen_at,
       CASE WHEN i.slot_found IS FALSE OR i.slot_wal_status = 'lost' OR (i.subid IS NULL AND i.member_state = 'ready')
            THEN i.parts END,
       CASE WHEN i.slot_found IS FALSE OR i.slot_wal_status = 'lost' OR (i.subid IS NULL AND i.member_state = 'ready')
            THEN format('on this node: SELECT federation.resync(%L);', i.peer)
            WHEN i.error_streak > 0
            THEN 'read this server''s log for the apply error; fix its cause (docs/runbook.md, "An apply error")' END,
       i.probed_at
FROM inbound_judged i
UNION ALL
SELECT o.peer, 'out', CASE
           WHEN o.member_state <> 'ready' THEN o.member_state
           WHEN o.slot_name IS NULL THEN 'slot missing'
           WHEN o.slot_wal_status = 'lost' THEN 'slot lost'
           WHEN NOT o.active THEN 'disconnected'
           ELSE coalesce(o.sender_state, 'connected') END,
       o.health, o.reason, o.lag_bytes,
       CASE WHEN o.active THEN coalesce(o.replay_lag, interval '0') END,
       o.retained, o.slot_wal_status, NULL, NULL, NULL, NULL, NULL, NULL,
       CASE WHEN (o.slot_name IS NULL OR o.slot_wal_status = 'lost') AND o.member_state = 'ready' THEN o.parts END,
       CASE WHEN (o.slot_name IS NULL OR o.slot_wal_status = 'lost') AND o.member_state = 'ready'
            THEN format('on %s: SELECT federation.resync(%L);', o.peer, (SELECT node_name FROM me)) END,
       now()
FROM outbound_judged o
UNION ALL
SELECT NULL, 'settings', NULL, s.health, s.reason, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       CASE WHEN s.health <> 'OK' THEN 'raise the settings named in reason (docs/operations.md, "Settings")' END, now()
FROM settings s
UNION ALL
SELECT NULL, 'settings', 'passfile', p.health, p.reason, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       'fix the file''s mode (chmod 0640 or 0600, or defaultMode: 0640 on the Secret volume); the copy is refreshed within a second', now()
FROM passfile p
UNION ALL
SELECT NULL, 'table', 'spreading', t.health, t.reason, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, t.repair, now()
FROM spreading t
UNION ALL
SELECT c.node, 'copy', c.status, c.health, c.reason, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, c.repair, now()
FROM copies c
UNION ALL
SELECT NULL, 'identity', 'writes refused', i.health, i.reason, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, i.repair, now()
FROM identity i
UNION ALL
SELECT NULL, 'keys', NULL, k.health, k.reason, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       k.repair, now()
FROM keys k
UNION ALL
SELECT sc.peer, 'schema', sc.state, sc.health, sc.reason, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, sc.repair, now()
FROM schemas sc
UNION ALL
SELECT a.peer, 'set aside', a.state, a.health, a.reason, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, a.repair, now()
FROM aside a
ORDER BY 1 NULLS FIRST, 2
$$;
