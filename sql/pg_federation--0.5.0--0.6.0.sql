-- pg_federation 0.5.0 -> 0.6.0
--
-- No SQL object of the extension changes. What changes is how its subscriptions are made:
-- from PostgreSQL 16 on, 0.6.0's library creates them with origin = none, so that a node's
-- walsenders skip, as they read the WAL, the rows the node applied from the other members
-- (which it never publishes) instead of decoding each of them in full once per member
-- (docs/scaling.md has the measurements). This script switches the subscriptions that an
-- older library made in this database. ALTER SUBSCRIPTION ... SET (origin) restarts the
-- subscription's apply worker, which resumes from its replication origin: nothing is copied
-- again and nothing is lost. On PostgreSQL 15, which has no such option, nothing happens.
DO $upgrade$
DECLARE
    sub text;
BEGIN
    IF pg_catalog.current_setting('server_version_num')::int >= 160000 THEN
        -- Dynamic: pg_subscription.suborigin does not exist before 16.
        FOR sub IN EXECUTE
            $q$SELECT s.subname::text FROM pg_catalog.pg_subscription s
                JOIN pg_catalog.pg_database d ON d.oid = s.subdbid AND d.datname = pg_catalog.current_database()
               WHERE s.subname LIKE 'federation\_%' AND s.suborigin <> 'none'$q$
        LOOP
            EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SET (origin = none)', sub);
        END LOOP;
    END IF;
END
$upgrade$;
