//! Schema changes of federated tables (issue 11, src/ddl/): ordinary DDL run on one node, as
//! a migration tool sends it, is made on every member in the same transaction; replication
//! never stops and no copy differs from its owner while writers keep writing on every node;
//! volatile defaults give every copy its owner's values; COMMIT applies everywhere, ROLLBACK
//! nowhere; what cannot be made safe is refused with nothing changed on any node.

use pg_test::scenario::{assert_converged, assert_verified, joined, settle, wait_health_ok};
use pg_test::{wait_until, Cluster, Node, Writer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The columns of `table` on `node`, in order, with types: what "the same schema" means here.
fn columns(node: &Node, table: &str) -> String {
    node.scalar(&format!(
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY attnum)
         FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped"
    ))
    .unwrap_or_default()
}

fn same_schema_everywhere(c: &Cluster, table: &str) -> String {
    let first = columns(&c.nodes[0], table);
    for n in &c.nodes[1..] {
        assert_eq!(
            columns(n, table),
            first,
            "{table} on {} vs {}",
            n.name,
            c.nodes[0].name
        );
    }
    first
}

/// Apply and initial-copy errors of every subscription on `node` since it started.
fn replication_errors(node: &Node) -> i64 {
    node.scalar("SELECT coalesce(sum(apply_error_count + sync_error_count), 0) FROM pg_stat_subscription_stats")
        .unwrap()
        .parse()
        .unwrap()
}

/// Samples health() and the replication error counters of every node until stopped; returns
/// every sample that was not OK or saw an error.
struct Sampler {
    stop: Arc<AtomicBool>,
    bad: Arc<Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<usize>>,
}

impl Sampler {
    fn start(c: &Cluster) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(Mutex::new(vec![]));
        let targets: Vec<(String, String, i64)> = c
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.client_conninfo(), replication_errors(n)))
            .collect();
        let (s, b) = (stop.clone(), bad.clone());
        let handle = std::thread::spawn(move || {
            let mut clients: Vec<postgres::Client> = targets
                .iter()
                .map(|(_, c, _)| postgres::Client::connect(c, postgres::NoTls).unwrap())
                .collect();
            let mut samples = 0;
            while !s.load(Ordering::Relaxed) {
                for (i, (name, _, errors0)) in targets.iter().enumerate() {
                    let row = clients[i]
                        .query_one(
                            "SELECT h.health, h.reason, (SELECT coalesce(sum(apply_error_count + sync_error_count), 0)::int8 FROM pg_stat_subscription_stats)
                             FROM federation.health() h",
                            &[],
                        )
                        .unwrap();
                    let (health, reason, errors): (String, Option<String>, i64) =
                        (row.get(0), row.get(1), row.get(2));
                    if health != "OK" || errors != *errors0 {
                        b.lock().unwrap().push(format!(
                            "{name}: {health} {reason:?}, replication errors {errors0} -> {errors}"
                        ));
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(20)); // sampling pace, not synchronisation
            }
            samples
        });
        Sampler {
            stop,
            bad,
            handle: Some(handle),
        }
    }

    /// Stops sampling and asserts every sample was OK.
    fn assert_all_ok(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.handle.take().unwrap().join().unwrap();
        assert!(samples > 3, "only {samples} samples taken");
        let bad = self.bad.lock().unwrap();
        assert!(
            bad.is_empty(),
            "{} of {samples} samples not OK: {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn columns_added_changed_and_dropped_on_one_node_reach_every_member_while_every_node_writes() {
    let c = joined(&["central", "east", "west"]);
    let (central, east, west) = (c.node("central"), c.node("east"), c.node("west"));
    for n in c.all() {
        wait_health_ok(n, &c.all());
    }
    let writers: Vec<Writer> = c.all().iter().map(|n| Writer::start(n, "hippos")).collect();
    for w in &writers {
        w.wait_for_more(50, &c.all());
    }
    let sampler = Sampler::start(&c);

    // A plain new column: every member has it as soon as east commits.
    east.execute("ALTER TABLE hippos ADD COLUMN weight_kg numeric");
    same_schema_everywhere(&c, "hippos");
    west.execute("INSERT INTO hippos (value, weight_kg) VALUES (-1, 1450)");
    for w in &writers {
        w.wait_for_more(20, &c.all());
    }

    // A volatile default, inside the migration tool's transaction: each existing row gets
    // the value its owner computed, on every copy.
    west.execute("BEGIN; ALTER TABLE hippos ADD COLUMN tagged_at timestamptz NOT NULL DEFAULT clock_timestamp(); ALTER TABLE hippos ADD COLUMN tag uuid DEFAULT gen_random_uuid(); COMMIT");
    same_schema_everywhere(&c, "hippos");
    for w in &writers {
        w.wait_for_more(20, &c.all());
    }

    // A type change, a rename, a constraint and a drop, from the third node.
    central.execute("ALTER TABLE hippos ALTER COLUMN weight_kg TYPE double precision");
    central.execute("ALTER TABLE hippos RENAME COLUMN created_at TO born_at");
    central.execute("ALTER TABLE hippos ADD CONSTRAINT weight_positive CHECK (weight_kg > 0)");
    east.execute("ALTER TABLE hippos DROP COLUMN weight_kg");
    let schema = same_schema_everywhere(&c, "hippos");
    assert!(
        schema.contains("born_at timestamp with time zone not null"),
        "{schema}"
    );
    assert!(
        schema.contains("tagged_at timestamp with time zone not null"),
        "{schema}"
    );
    assert!(!schema.contains("weight_kg"), "{schema}");
    for w in &writers {
        w.wait_for_more(20, &c.all());
    }
    sampler.assert_all_ok();
    settle(&c, writers);
    // Every copy holds its owner's computed values (settle() compares whole rows).
    for n in c.all() {
        assert_verified(n);
    }
    let distinct_tags = east
        .scalar("SELECT count(DISTINCT tag) = count(*) FROM hippos")
        .unwrap();
    assert_eq!(distinct_tags, "t");
    // The row west wrote with the column that was dropped later reached everyone.
    for n in c.all() {
        assert_eq!(
            n.row_count("SELECT 1 FROM hippos WHERE value = -1"),
            1,
            "{}",
            n.name
        );
    }
}

#[test]
fn a_change_commits_on_every_member_or_on_none_and_savepoints_are_honoured() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    let before = same_schema_everywhere(&c, "hippos");

    east.execute("BEGIN; ALTER TABLE hippos ADD COLUMN rolled_back int; ROLLBACK");
    assert_eq!(same_schema_everywhere(&c, "hippos"), before);

    east.execute(
        "BEGIN;
         ALTER TABLE hippos ADD COLUMN kept int;
         SAVEPOINT s1;
         ALTER TABLE hippos ADD COLUMN undone int;
         ROLLBACK TO SAVEPOINT s1;
         SAVEPOINT s2;
         ALTER TABLE hippos ADD COLUMN also_kept text;
         RELEASE SAVEPOINT s2;
         CREATE INDEX hippos_kept ON hippos (kept);
         COMMENT ON COLUMN hippos.kept IS 'kept by the migration';
         COMMIT",
    );
    let after = same_schema_everywhere(&c, "hippos");
    assert!(
        after.contains("kept integer") && after.contains("also_kept text"),
        "{after}"
    );
    assert!(!after.contains("undone"), "{after}");
    for n in c.all() {
        assert_eq!(
            n.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'hippos_kept'")
                .unwrap(),
            "1",
            "{}",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT col_description('hippos'::regclass, (SELECT attnum FROM pg_attribute WHERE attrelid = 'hippos'::regclass AND attname = 'kept'))").as_deref(),
            Some("kept by the migration"),
            "{}",
            n.name
        );
    }
    // A member that refuses (the column exists there already, made by hand) rolls back the
    // whole transaction everywhere.
    west.execute("BEGIN; SET LOCAL federation.unsafe_ddl = on; ALTER TABLE hippos ADD COLUMN clash int; COMMIT");
    let e = east.expect_error("BEGIN; ALTER TABLE hippos ADD COLUMN fine int; ALTER TABLE hippos ADD COLUMN clash int; COMMIT");
    assert_eq!(e.code, "42701", "{e}");
    assert!(e.message.contains("member \"west\""), "{e}");
    east.execute("ROLLBACK");
    assert!(!columns(east, "hippos").contains("fine"));
    assert!(!columns(west, "hippos").contains("fine"));
    // No prepared transaction is left behind anywhere.
    for n in c.all() {
        assert_eq!(
            n.row_count("SELECT 1 FROM pg_prepared_xacts"),
            0,
            "{}",
            n.name
        );
    }
    west.execute(
        "BEGIN; SET LOCAL federation.unsafe_ddl = on; ALTER TABLE hippos DROP COLUMN clash; COMMIT",
    );
    east.execute("DROP INDEX hippos_kept");
    for n in c.all() {
        assert_eq!(
            n.row_count("SELECT 1 FROM pg_indexes WHERE indexname = 'hippos_kept'"),
            0
        );
    }
    east.execute("INSERT INTO hippos (value, kept) VALUES (1, 2)");
    west.execute("INSERT INTO hippos (value, also_kept) VALUES (2, 'x')");
    assert_converged(&c, "hippos");
}

/// A schema change in a migration transaction that looked at pg_stat_activity before a
/// member's apply worker reconnected: the change's wait for the members reads the walsenders
/// live (quiesce::lagging), not through pg_stat_replication, which keeps the transaction's
/// first look at the server's backends and would never find the new walsender (the change was
/// refused with 55P03 after federation.ddl_timeout, every member caught up).
#[test]
fn a_change_in_a_transaction_older_than_a_members_reconnection_goes_through() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    let slot = east
        .scalar("SELECT federation_internal.subscription_name('east', 'west')")
        .unwrap();
    let walsender = || {
        east.scalar(&format!(
            "SELECT active_pid::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
    };
    let old = walsender().expect("west streams from east");
    let mut migration = east.connect().unwrap();
    migration
        .batch_execute(
            "SET federation.ddl_timeout = '10s'; BEGIN; SELECT count(*) FROM pg_stat_activity",
        )
        .unwrap();
    east.execute(&format!("SELECT pg_terminate_backend({old})"));
    wait_until(
        "west's apply worker to stream from east again",
        Duration::from_secs(60),
        &[east, west],
        || Ok(matches!(walsender(), Some(p) if p != old)),
    );
    migration
        .batch_execute("ALTER TABLE hippos ADD COLUMN after_reconnect int; COMMIT")
        .expect("the change waits for west's new walsender and goes through");
    for n in c.all() {
        assert!(
            columns(n, "hippos").contains("after_reconnect"),
            "on {}",
            n.name
        );
    }
    east.execute("INSERT INTO hippos (value, after_reconnect) VALUES (1, 2)");
    west.execute("INSERT INTO hippos (value, after_reconnect) VALUES (3, 4)");
    assert_converged(&c, "hippos");
}

#[test]
fn changes_that_cannot_be_made_safe_are_refused_and_change_nothing_anywhere() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    east.execute("CREATE TABLE spare (LIKE hippos)");
    let snapshot = |n: &Node| pg_test::checks::snapshot(n, "public");
    let (e0, w0) = (snapshot(east), snapshot(west));
    for (sql, code, needle) in [
        ("ALTER TABLE hippos_west ADD COLUMN x int", "0A000", "partition of federated table"),
        ("CREATE INDEX ON hippos_east (value)", "0A000", "partition of federated table"),
        ("ALTER TABLE hippos DETACH PARTITION hippos_west", "0A000", "attach or detach"),
        ("ALTER TABLE hippos ATTACH PARTITION spare FOR VALUES IN ('north')", "0A000", "attach or detach"),
        ("ALTER TABLE hippos SET UNLOGGED", "0A000", "persistence"),
        ("ALTER TABLE hippos ALTER COLUMN node_name DROP DEFAULT", "0A000", "node column"),
        ("ALTER TABLE hippos DROP COLUMN node_name", "0A000", "node column"),
        ("ALTER TABLE hippos RENAME COLUMN node_name TO origin", "0A000", "node column"),
        ("ALTER TABLE hippos DISABLE TRIGGER ALL", "0A000", "triggers"),
        ("ALTER TABLE hippos SET SCHEMA pg_temp", "0A000", "another schema"),
        ("CREATE TABLE hippos_north PARTITION OF hippos FOR VALUES IN ('north')", "0A000", "cannot add a partition"),
        ("GRANT SELECT ON hippos, spare TO PUBLIC", "0A000", "together with other tables"),
        ("BEGIN; INSERT INTO hippos (value) VALUES (1); ALTER TABLE hippos DROP COLUMN value; COMMIT", "0A000", "already wrote its rows"),
    ] {
        let e = east.expect_error(sql);
        assert_eq!(e.code, code, "{sql}: {e}");
        assert!(e.message.contains(needle), "{sql}: {e}");
        let hint = e.hint.as_deref().unwrap_or_default();
        assert!(hint.contains("unsafe_ddl") || hint.contains("transaction of its own"), "{sql}: {e}");
    }
    east.execute("ROLLBACK");
    assert_eq!(snapshot(east), e0);
    assert_eq!(snapshot(west), w0);

    // A member that is down: refused up front, naming it; nothing changed here.
    west.stop();
    let e = east.expect_error("ALTER TABLE hippos ADD COLUMN while_down int");
    assert_eq!(e.code, "08006", "{e}");
    assert!(e.message.contains("member \"west\" is unreachable"), "{e}");
    assert!(
        e.hint.as_deref().unwrap_or_default().contains("drop_node"),
        "{e}"
    );
    assert!(!columns(east, "hippos").contains("while_down"));
    west.start_again();
    // The escape hatch: this node only, and health() says so on both until they match again.
    east.execute("BEGIN; SET LOCAL federation.unsafe_ddl = on; ALTER TABLE hippos ADD COLUMN only_here int; COMMIT");
    assert!(columns(east, "hippos").contains("only_here"));
    assert!(!columns(west, "hippos").contains("only_here"));
    for n in c.all() {
        wait_until(
            &format!("{} to report the schemas differ", n.name),
            Duration::from_secs(60),
            &c.all(),
            || {
                let r = n.query("SELECT health, reason FROM federation.health()");
                let reason = r[0][1].clone().unwrap_or_default();
                if r[0][0].as_deref() == Some("WARNING")
                    && reason.contains("the columns of public.hippos differ")
                {
                    Ok(true)
                } else {
                    Err(format!("{:?}", r[0]))
                }
            },
        );
    }
    east.execute("BEGIN; SET LOCAL federation.unsafe_ddl = on; ALTER TABLE hippos DROP COLUMN only_here; COMMIT");
    same_schema_everywhere(&c, "hippos");
    for n in c.all() {
        wait_health_ok(n, &c.all());
    }
}

#[test]
fn a_schema_change_left_prepared_on_a_member_is_finished_as_its_origin_ended_it() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    // Two transactions of east's, one committed, one rolled back, as a member that missed
    // east's COMMIT PREPARED or ROLLBACK PREPARED holds them.
    let committed = east
        .scalar("BEGIN; SELECT pg_current_xact_id(); COMMIT")
        .unwrap();
    let aborted = east
        .scalar("BEGIN; SELECT pg_current_xact_id(); ROLLBACK")
        .unwrap();
    for (xid, col) in [(&committed, "made"), (&aborted, "undone")] {
        west.execute(&format!(
            "BEGIN; SET LOCAL federation.unsafe_ddl = on; ALTER TABLE hippos ADD COLUMN {col} int;
             PREPARE TRANSACTION 'pg_federation_ddl:east:{xid}'"
        ));
    }
    // One of a node that is not a member: health() names it once it is older than lag_warning.
    west.execute(
        "BEGIN; CREATE TABLE scratch (id int); PREPARE TRANSACTION 'pg_federation_ddl:ghost:42'",
    );
    wait_until(
        "west's worker to finish east's prepared changes",
        Duration::from_secs(60),
        &c.all(),
        || {
            Ok(west.row_count(
                "SELECT 1 FROM pg_prepared_xacts WHERE gid LIKE 'pg_federation_ddl:east:%'",
            ) == 0)
        },
    );
    let cols = columns(west, "hippos");
    assert!(cols.contains("made integer"), "{cols}");
    assert!(!cols.contains("undone"), "{cols}");
    wait_until(
        "west's health to name the prepared change",
        Duration::from_secs(30),
        &c.all(),
        || {
            let r = west.query(
                "SET federation.lag_warning = 1; SELECT health, reason FROM federation.health()",
            );
            let reason = r[0][1].clone().unwrap_or_default();
            if reason.contains("pg_federation_ddl:ghost:42") {
                Ok(true)
            } else {
                Err(format!("{:?}", r[0]))
            }
        },
    );
    west.execute("RESET federation.lag_warning");
    west.execute("ROLLBACK PREPARED 'pg_federation_ddl:ghost:42'");
    west.execute(
        "BEGIN; SET LOCAL federation.unsafe_ddl = on; ALTER TABLE hippos DROP COLUMN made; COMMIT",
    );
    same_schema_everywhere(&c, "hippos");
}

#[test]
fn a_member_killed_before_commit_leaves_the_change_nowhere_and_replication_running() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    let mut client = east.connect().unwrap();
    client
        .batch_execute("BEGIN; ALTER TABLE hippos ADD COLUMN doomed int")
        .unwrap();
    west.kill9();
    let e = client.batch_execute("COMMIT").unwrap_err();
    let db = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(db.contains("member \"west\""), "{e:?}");
    drop(client);
    west.start_again();
    wait_until(
        "west to have no prepared transaction",
        Duration::from_secs(60),
        &c.all(),
        || Ok(west.row_count("SELECT 1 FROM pg_prepared_xacts") == 0),
    );
    assert_nowhere_and_replicating(&c, "doomed", "after_crash");
}

/// After a change that failed on its way to COMMIT: `column` exists on no node, rows flow
/// both ways between east and west, and the next change (adding `next`) goes through.
fn assert_nowhere_and_replicating(c: &Cluster, column: &str, next: &str) {
    let (east, west) = (c.node("east"), c.node("west"));
    for n in [east, west] {
        assert!(!columns(n, "hippos").contains(column), "{}", n.name);
    }
    east.execute("INSERT INTO hippos (value) VALUES (10)");
    west.execute("INSERT INTO hippos (value) VALUES (20)");
    assert_converged(c, "hippos");
    east.execute(&format!("ALTER TABLE hippos ADD COLUMN {next} int"));
    same_schema_everywhere(c, "hippos");
}

#[test]
fn a_table_created_and_enabled_in_one_migration_reaches_every_member() {
    let c = joined(&["central", "east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in c.all() {
        n.execute("CREATE ROLE keeper");
    }
    let pens = "CREATE TABLE pens (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                    name text NOT NULL, capacity int CHECK (capacity > 0));
                CREATE INDEX pens_name ON pens (name);
                COMMENT ON TABLE pens IS 'where the herd sleeps';
                GRANT SELECT ON pens TO keeper;
                ALTER TABLE pens ADD COLUMN muddy boolean DEFAULT true;
                SELECT federation.enable('pens');
                INSERT INTO pens (name, capacity) VALUES ('mud', 3);";
    // Rolled back: no node has it.
    east.execute(&format!("BEGIN; {pens} ROLLBACK"));
    for n in c.all() {
        assert_eq!(
            n.scalar("SELECT to_regclass('pens')::text"),
            None,
            "{}",
            n.name
        );
    }
    east.execute(&format!("BEGIN; {pens} COMMIT"));
    east.execute("SELECT federation.wait_ready('60 s')");
    let schema = same_schema_everywhere(&c, "pens");
    assert!(schema.contains("muddy boolean"), "{schema}");
    for n in c.all() {
        assert_eq!(
            n.row_count("SELECT 1 FROM pg_indexes WHERE indexname = 'pens_name'"),
            1,
            "{}",
            n.name
        );
        assert_eq!(
            n.row_count("SELECT 1 FROM federation.federated_table WHERE relid = 'pens'::regclass"),
            1,
            "{}",
            n.name
        );
    }
    for n in c.all() {
        assert_eq!(
            n.scalar("SELECT obj_description('pens'::regclass, 'pg_class')")
                .as_deref(),
            Some("where the herd sleeps"),
            "{}",
            n.name
        );
        assert_eq!(
            n.scalar("SELECT has_table_privilege('keeper', 'pens', 'SELECT')::text")
                .as_deref(),
            Some("true"),
            "{}",
            n.name
        );
    }
    west.execute("INSERT INTO pens (name, capacity) VALUES ('reeds', 5)");
    assert_converged(&c, "pens");
    // The constraint came along: a bad row is refused on a member too.
    assert_eq!(
        west.expect_error("INSERT INTO pens (name, capacity) VALUES ('x', 0)")
            .code,
        "23514"
    );

    // Dropped on one node (the downgrade of that migration): gone everywhere, catalog
    // included, and the other tables keep replicating with no error.
    let errors: Vec<i64> = c.all().iter().map(|n| replication_errors(n)).collect();
    west.execute("DROP TABLE pens");
    for n in c.all() {
        assert_eq!(
            n.scalar("SELECT to_regclass('pens')::text"),
            None,
            "{}",
            n.name
        );
        assert_eq!(
            n.row_count("SELECT 1 FROM federation.partition WHERE partition::text LIKE 'pens%'"),
            0,
            "{}",
            n.name
        );
    }
    east.execute("INSERT INTO hippos (value) VALUES (1)");
    west.execute("INSERT INTO hippos (value) VALUES (2)");
    assert_converged(&c, "hippos");
    for (n, before) in c.all().iter().zip(errors) {
        assert_eq!(
            replication_errors(n),
            before,
            "replication errors on {}",
            n.name
        );
        wait_health_ok(n, &c.all());
    }
}

#[test]
fn disable_runs_in_the_migration_transaction_on_every_member_and_again_is_a_notice() {
    let c = joined(&["east", "west"]);
    let (east, west) = (c.node("east"), c.node("west"));
    east.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 10) g");
    west.execute("INSERT INTO hippos (value) SELECT g FROM generate_series(1, 7) g");
    assert_converged(&c, "hippos");
    east.execute("BEGIN; SELECT federation.disable('hippos'); ROLLBACK");
    for n in c.all() {
        assert_eq!(
            n.row_count("SELECT 1 FROM federation.federated_table"),
            1,
            "{}",
            n.name
        );
    }
    // A downgrade migration: a schema change, then disable(), in one transaction.
    east.execute("BEGIN; ALTER TABLE hippos ADD COLUMN last_seen date; SELECT federation.disable('hippos'); COMMIT");
    for n in c.all() {
        assert_eq!(
            n.scalar("SELECT relkind::text FROM pg_class WHERE relname = 'hippos'")
                .as_deref(),
            Some("r"),
            "{}",
            n.name
        );
        assert_eq!(
            n.row_count("SELECT 1 FROM hippos"),
            17,
            "every row kept on {}",
            n.name
        );
        assert!(
            columns(n, "hippos").contains("last_seen date"),
            "{}",
            n.name
        );
        assert_eq!(
            n.row_count("SELECT 1 FROM federation.federated_table"),
            0,
            "{}",
            n.name
        );
        assert_eq!(
            n.row_count("SELECT 1 FROM pg_prepared_xacts"),
            0,
            "{}",
            n.name
        );
    }
    let notices = west.notices("SELECT federation.disable('hippos')");
    assert!(
        notices
            .iter()
            .any(|n| n.contains("not federated here; nothing to do")),
        "{notices:?}"
    );
    for n in c.all() {
        wait_health_ok(n, &c.all());
    }
}

/// Rows set aside on `n` for `table`, as (owner, value), in order.
fn set_aside(n: &Node) -> Vec<(String, String)> {
    n.query("SELECT node, row_data->>'value' FROM federation.set_aside ORDER BY 1, 2")
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn enable_after_a_federation_wide_disable_claims_no_other_node_row_and_loses_none() {
    let c = joined(&["central", "east", "west"]);
    let (central, east, west) = (c.node("central"), c.node("east"), c.node("west"));
    for (n, k) in [(central, 1), (east, 2), (west, 3)] {
        n.execute(&format!(
            "INSERT INTO hippos (value) SELECT {k}00 + g FROM generate_series(1, 10) g"
        ));
    }
    assert_converged(&c, "hippos");
    east.execute("SELECT federation.disable('hippos')");
    // While the table is ordinary everywhere, the nodes go on writing: west changes one of
    // east's rows and adds rows of its own; east deletes one of its own rows.
    west.execute("UPDATE hippos SET value = 299 WHERE value = 201");
    west.execute("INSERT INTO hippos (value) VALUES (351), (352)");
    east.execute("DELETE FROM hippos WHERE value = 210");

    let notices = east.notices("SELECT federation.enable('hippos')");
    assert!(
        notices
            .iter()
            .any(|n| n.contains("20 row(s) in other members' names")
                && n.contains("10 of \"central\"")
                && n.contains("10 of \"west\"")),
        "{notices:?}"
    );
    // Nothing in another node's name was claimed by east.
    assert_eq!(
        east.row_count("SELECT 1 FROM hippos_east WHERE node_name <> 'east'"),
        0
    );
    east.execute("SELECT federation.wait_ready('90 s')");
    // Each owner's copy replaces what the others kept; the worker drops the set-aside rows
    // that the copies hold as they are, and keeps the two that differ, on the node that has them.
    for (n, want) in [
        (east, vec![]),
        (central, vec![("east".to_string(), "210".to_string())]),
        (
            west,
            vec![
                ("east".to_string(), "210".to_string()),
                ("east".to_string(), "299".to_string()),
            ],
        ),
    ] {
        wait_until(
            &format!("the rows set aside on {} to settle", n.name),
            Duration::from_secs(60),
            &c.all(),
            || {
                let got = set_aside(n);
                if got == want {
                    Ok(true)
                } else {
                    Err(format!("{got:?}"))
                }
            },
        );
    }
    assert_converged(&c, "hippos");
    assert_verified(east);
    for n in c.all() {
        // The owners' rows everywhere: west's new rows, east's row as east has it.
        assert_eq!(
            n.row_count("SELECT 1 FROM hippos WHERE value IN (351, 352, 201)"),
            3,
            "{}",
            n.name
        );
        assert_eq!(n.row_count("SELECT 1 FROM hippos"), 31, "{}", n.name);
    }
    // health() names what differs, on the nodes that keep it; OK where nothing is kept.
    wait_health_ok(east, &c.all());
    let (state, reason, repair) = {
        let r = west.query(
            "SELECT state, reason, repair FROM federation.status WHERE direction = 'set aside'",
        );
        assert_eq!(r.len(), 1, "{r:?}");
        (
            r[0][0].clone().unwrap(),
            r[0][1].clone().unwrap(),
            r[0][2].clone().unwrap(),
        )
    };
    assert_eq!(state, "differs");
    assert!(
        reason.contains("2 of the 2 row(s) of public.hippos") && reason.contains("east"),
        "{reason}"
    );
    assert!(repair.contains("federation.set_aside"), "{repair}");
    assert_eq!(
        west.scalar("SELECT health FROM federation.health()")
            .as_deref(),
        Some("WARNING")
    );
    // Application data: a role sees the rows of tables it may read, and no others.
    for n in c.all() {
        n.execute("CREATE ROLE reader; CREATE ROLE stranger");
    }
    west.execute("GRANT SELECT ON hippos TO reader");
    assert_eq!(
        west.scalar("SET ROLE stranger; SELECT count(*) FROM federation.set_aside")
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        west.scalar("SET ROLE reader; SELECT count(*) FROM federation.set_aside")
            .as_deref(),
        Some("2")
    );
    west.execute("RESET ROLE");
    // The DBA resolves them: health is OK again.
    west.execute("DELETE FROM federation.set_aside WHERE node = 'east'");
    central.execute("DELETE FROM federation.set_aside WHERE node = 'east'");
    for n in c.all() {
        wait_health_ok(n, &c.all());
    }
}

#[test]
fn two_nodes_changing_the_same_table_at_once_leave_one_schema_everywhere() {
    let c = joined(&["central", "east", "west"]);
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let runs: Vec<_> = ["east", "west"]
        .into_iter()
        .map(|name| {
            let conninfo = c.node(name).client_conninfo();
            let b = barrier.clone();
            std::thread::spawn(move || {
                let mut client = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
                b.wait();
                let r = client.batch_execute(&format!(
                    "BEGIN; ALTER TABLE hippos ADD COLUMN from_{name} int; ALTER TABLE hippos ADD COLUMN shared int; COMMIT"
                ));
                (name, r.map_err(|e| e.as_db_error().map(|d| (d.code().code().to_string(), d.message().to_string()))))
            })
        })
        .collect();
    let results: Vec<_> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    // Both add `shared`: one succeeds, the other then finds it there (42701) or, had the two
    // queued behind each other's locks past federation.ddl_timeout, gets 55P03; never both.
    let ok: Vec<&str> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(ok.len(), 1, "{results:?}");
    for (name, r) in &results {
        if let Err(Some((code, message))) = r {
            assert!(
                ["42701", "55P03"].contains(&code.as_str()),
                "{name}: {code} {message}"
            );
        }
    }
    let schema = same_schema_everywhere(&c, "hippos");
    assert!(
        schema.contains(&format!("from_{} integer", ok[0])) && schema.contains("shared integer"),
        "{schema}"
    );
    for n in c.all() {
        assert_eq!(
            n.row_count("SELECT 1 FROM pg_prepared_xacts"),
            0,
            "{}",
            n.name
        );
        wait_health_ok(n, &c.all());
    }
}

#[test]
fn a_link_cut_before_commit_leaves_the_change_nowhere_and_replication_heals() {
    let net = pg_test::Net::new(); // declared first: dropped after the servers
    let c = Cluster::start(&["east", "west"].map(|n| net.place(pg_test::NodeSpec::guc(n))));
    let (east, west) = (c.node("east"), c.node("west"));
    for n in c.all() {
        n.execute(pg_test::scenario::HIPPOS);
    }
    pg_test::scenario::join(west, east);
    let mut client = east.connect().unwrap();
    client
        .batch_execute("BEGIN; ALTER TABLE hippos ADD COLUMN cut_off int")
        .unwrap();
    net.cut(west);
    let e = client.batch_execute("COMMIT").unwrap_err();
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("member \"west\""), "{e:?}");
    drop(client);
    net.restore(west);
    // west's side of the change was never prepared, and its session ends (TCP keepalives),
    // releasing the table's locks there: west's writers go on.
    assert_eq!(west.row_count("SELECT 1 FROM pg_prepared_xacts"), 0);
    wait_until(
        "west's session of the failed change to end",
        Duration::from_secs(60),
        &c.all(),
        || {
            Ok(west.row_count("SELECT 1 FROM pg_stat_activity WHERE application_name = 'pg_federation' AND state LIKE 'idle in transaction%'") == 0)
        },
    );
    assert_nowhere_and_replicating(&c, "cut_off", "after_cut");
}

#[test]
fn a_node_joining_without_the_tables_gets_them_from_its_peer() {
    let c = Cluster::start(&[
        pg_test::NodeSpec::guc("east"),
        pg_test::NodeSpec::guc("west"),
    ]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in c.all() {
        n.execute("CREATE ROLE keeper");
    }
    east.execute(
        "CREATE TABLE herd (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                            name text COLLATE \"C\" NOT NULL DEFAULT 'unnamed',
                            weight numeric CHECK (weight > 0),
                            serial_no bigserial,
                            email text UNIQUE,
                            name_upper text GENERATED ALWAYS AS (upper(name)) STORED);
         COMMENT ON TABLE herd IS 'the herd';
         COMMENT ON COLUMN herd.weight IS 'kilograms';
         GRANT SELECT ON herd TO keeper;
         SELECT federation.enable('herd');
         CREATE INDEX herd_weight ON herd (weight);
         INSERT INTO herd (name, weight, email) SELECT 'h' || g, g, 'h' || g || '@example.org' FROM generate_series(1, 20) g;",
    );
    // west has nothing of it: join() makes it from east's definition, then wires the mesh.
    let notices = west.notices(&format!("SELECT federation.join('{}')", east.conninfo()));
    assert!(
        notices
            .iter()
            .any(|n| n.contains("created table public.herd from \"east\"'s definition")),
        "{notices:?}"
    );
    west.execute("SELECT federation.wait_ready('90 s')");
    let definition = |n: &Node| {
        n.scalar(
            "SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' '
                               || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' ' || a.attidentity::text || a.attgenerated::text
                               || ' ' || coalesce(col_description(a.attrelid, a.attnum), ''), '; ' ORDER BY a.attnum)
                    || ' | ' || (SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'herd'::regclass)
                    || ' | ' || (SELECT string_agg(indexdef, '; ' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'herd')
                    || ' | ' || obj_description('herd'::regclass, 'pg_class')
                    || ' | ' || has_table_privilege('keeper', 'herd', 'SELECT')
             FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = 'herd'::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .unwrap_or_default()
    };
    let (e, w) = (definition(east), definition(west));
    // The serial column's sequence has a node-specific name nowhere; everything else is equal.
    assert_eq!(w, e);
    assert!(
        e.contains("herd_weight")
            && e.contains("CHECK ((weight > (0)::numeric))")
            && e.contains("kilograms"),
        "{e}"
    );
    assert_converged(&c, "herd");
    let id: i64 = west
        .scalar("INSERT INTO herd (name, weight, email) VALUES ('w', 5, 'w@example.org') RETURNING serial_no")
        .unwrap()
        .parse()
        .unwrap();
    let k: i64 = west
        .scalar("SELECT node_number FROM federation.local_node")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(id >> 48, k, "west's serial draws from west's range");
    assert_converged(&c, "herd");
}

#[test]
fn a_member_without_prepared_transactions_is_named_before_anything_changes() {
    let c = Cluster::start(&[
        pg_test::NodeSpec::guc("east"),
        pg_test::NodeSpec::guc("west").with_conf("max_prepared_transactions = 0"),
    ]);
    let (east, west) = (c.node("east"), c.node("west"));
    for n in c.all() {
        n.execute(pg_test::scenario::HIPPOS);
    }
    pg_test::scenario::join(west, east);
    let e = east.expect_error("ALTER TABLE hippos ADD COLUMN never int");
    assert_eq!(e.code, "F0000", "{e}");
    assert!(
        e.message
            .contains("member \"west\" has max_prepared_transactions = 0"),
        "{e}"
    );
    assert!(
        e.hint
            .as_deref()
            .unwrap_or_default()
            .contains("max_prepared_transactions = 10"),
        "{e}"
    );
    for n in c.all() {
        assert!(!columns(n, "hippos").contains("never"), "{}", n.name);
    }
    // And west's health() says so before anyone tries.
    let r = west.query("SELECT health, reason FROM federation.status WHERE direction = 'settings'");
    assert_eq!(r[0][0].as_deref(), Some("WARNING"), "{r:?}");
    assert!(
        r[0][1]
            .as_deref()
            .unwrap_or_default()
            .contains("max_prepared_transactions = 0, needs at least 1"),
        "{r:?}"
    );
}

#[test]
fn a_table_renamed_on_one_node_is_renamed_with_its_partitions_on_every_member_and_goes_on_replicating(
) {
    let c = joined(&["east", "west"]);
    for n in c.all() {
        n.execute("INSERT INTO hippos (value) VALUES (1)");
    }
    assert_converged(&c, "hippos");
    c.node("west")
        .execute("ALTER TABLE hippos RENAME TO river_horses");
    for n in c.all() {
        assert_eq!(
            n.row_count("SELECT 1 FROM pg_class WHERE relname = 'hippos'"),
            0
        );
        let parts = n.query(
            "SELECT c.relname::text, obj_description(c.oid, 'pg_class') FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'river_horses'::regclass ORDER BY 1",
        );
        let names: Vec<&str> = parts.iter().map(|r| r[0].as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "river_horses_default",
                "river_horses_east",
                "river_horses_west"
            ],
            "on {}",
            n.name
        );
        for r in &parts {
            let comment = r[1].as_deref().unwrap_or_default();
            assert!(
                comment.contains("of federated table public.river_horses"),
                "on {}: {:?} says {comment}",
                n.name,
                r[0]
            );
        }
    }
    // Rows written after the rename reach the other node: each subscription finds the
    // renamed partition under its new name on both sides.
    for n in c.all() {
        n.execute("INSERT INTO river_horses (value) VALUES (2)");
    }
    assert_converged(&c, "river_horses");
    for n in c.all() {
        assert_eq!(
            n.scalar("SELECT count(*) FROM river_horses").as_deref(),
            Some("4"),
            "on {}",
            n.name
        );
        assert_eq!(replication_errors(n), 0, "on {}", n.name);
        wait_health_ok(n, &c.all());
    }
    assert_verified(c.node("east"));
}
