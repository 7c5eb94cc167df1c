-- pg_federation 0.11.0 -> 0.12.0
--
-- federation.status() (and so health() and the federation.status view) reads the server's
-- walsenders, table copies in progress and statistics as they are now: it discards the
-- snapshot of them that PostgreSQL keeps for the rest of a transaction once the transaction
-- has read them (pg_stat_clear_snapshot()). Before, a status() in a transaction older than a
-- member's reconnection (a monitoring session that keeps one open, a DBA after BEGIN) did not
-- see that member's new walsender: state 'connected' and lag 0, whatever its lag was.
-- CREATE OR REPLACE keeps the function's owner, grants and comment.
--
-- The library also (no SQL object changes with these): the joining node's worker watches its
-- copies and hands each pair over within 5-20 ms of their end instead of one step per pass;
-- the members' subscriptions to it are made once its copies are committed; wait_ready()
-- looks every 20 ms for its first 10 s; a schema change and the join read a slot's walsender
-- the same live way.

CREATE OR REPLACE FUNCTION federation.status()
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
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    -- Read now, not as this transaction first looked: PostgreSQL keeps the server's backends
    -- (pg_stat_replication's walsenders, pg_stat_progress_copy) and the statistics as a
    -- transaction first read them, so a status() in a transaction older than a member's
    -- reconnection would see no walsender for it (state 'connected', lag 0, health OK).
    PERFORM pg_stat_clear_snapshot();
    IF NOT pg_is_in_recovery() THEN
        RETURN QUERY SELECT * FROM federation_internal.primary_status();
        RETURN;
    END IF;
    RETURN QUERY
    WITH me AS (
        SELECT l.node_name FROM federation.local_node l WHERE l.conninfo IS NOT NULL
    ), receiver AS (
        SELECT coalesce((SELECT r.status FROM pg_stat_wal_receiver r), 'not connected') AS status,
               pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) AS behind,
               pg_last_xact_replay_timestamp() AS replayed_at,
               coalesce(current_setting('federation.lag_warning', true), '1min')::interval AS lag_warn
    ), judged AS (
        SELECT me.node_name, r.status, r.behind,
               -- Time behind only while WAL waits to be replayed (an idle primary sends none).
               CASE WHEN coalesce(r.behind, 0) > 0 THEN now() - r.replayed_at ELSE interval '0' END AS lag,
               r.lag_warn
        FROM me, receiver r
    )
    SELECT NULL::text, 'standby'::text, j.status,
           CASE WHEN j.status <> 'streaming' OR j.lag > j.lag_warn THEN 'WARNING' ELSE 'OK' END,
           CASE WHEN j.status <> 'streaming'
                THEN format('hot standby of node %s, not receiving its primary''s WAL (%s); the federation''s health is read on the primary', j.node_name, j.status)
                WHEN j.lag > j.lag_warn
                THEN format('hot standby of node %s, %s behind its primary; the federation''s health is read on the primary', j.node_name, date_trunc('second', j.lag))
                ELSE format('hot standby of node %s, keeping up with its primary; the federation''s health is read on the primary', j.node_name)
           END,
           j.behind, j.lag, NULL::numeric, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint,
           NULL::bigint, NULL::bigint, NULL::timestamptz, NULL::text[],
           CASE WHEN j.status <> 'streaming'
                THEN 'Check the primary and this standby''s primary_conninfo (SELECT * FROM pg_stat_wal_receiver;).'
           END,
           now()
    FROM judged j;
END
$$;
