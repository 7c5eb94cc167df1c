//! In-database tests of enable(): the shape a table takes, and every refusal (its SQLSTATE,
//! and that nothing changed). Node name: 'pgrx_test' (see pg_test::postgresql_conf_options).

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::enable::enable;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode;

    fn oid(name: &str) -> pg_sys::Oid {
        Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::regclass::oid", &[name.into()])
            .unwrap()
            .unwrap()
    }

    /// Everything enable() could change: relations and triggers in the schema, catalog rows,
    /// publications.
    fn snapshot(schema: &str) -> String {
        Spi::get_one_with_args::<String>(
            "SELECT concat_ws(' | ',
                (SELECT string_agg(c.relname || ':' || c.relkind::text, ',' ORDER BY c.relname) FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1),
                (SELECT string_agg(t.tgname, ',' ORDER BY t.tgname) FROM pg_trigger t
                   JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1),
                (SELECT count(*) FROM federation.federated_table), (SELECT count(*) FROM federation.partition),
                (SELECT string_agg(pubname, ',') FROM pg_publication))",
            &[schema.into()],
        )
        .unwrap()
        .unwrap_or_default()
    }

    fn refused(setup: &str, table: &str, column: &str, code: PgSqlErrorCode, needle: &str) {
        Spi::run("CREATE SCHEMA IF NOT EXISTS r").unwrap();
        Spi::run(setup).unwrap();
        let before = snapshot("r");
        let e = enable(oid(table), column).expect_err(&format!("enable({table}) must be refused"));
        assert_eq!(e.code, code, "{table}: {e}");
        assert!(
            e.message.contains(needle),
            "{table}: message {:?} should mention {needle:?}",
            e.message
        );
        assert!(e.hint.is_some(), "{table}: refusal without a HINT: {e}");
        assert_eq!(
            snapshot("r"),
            before,
            "{table}: refused, yet something changed"
        );
    }

    #[pg_test]
    fn refuses_views_and_other_relations() {
        refused(
            "CREATE VIEW r.v AS SELECT 1 AS id",
            "r.v",
            "node_name",
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            "is a view",
        );
        refused(
            "CREATE MATERIALIZED VIEW r.mv AS SELECT 1 AS id",
            "r.mv",
            "node_name",
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            "materialized view",
        );
        refused(
            "CREATE SEQUENCE r.s",
            "r.s",
            "node_name",
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            "sequence",
        );
        refused(
            "CREATE EXTENSION IF NOT EXISTS postgres_fdw; CREATE SERVER IF NOT EXISTS elsewhere FOREIGN DATA WRAPPER postgres_fdw;
             CREATE FOREIGN TABLE r.ft (id int) SERVER elsewhere",
            "r.ft", "node_name", PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, "foreign table",
        );
    }

    #[pg_test]
    fn refuses_temporary_unlogged_and_system_tables() {
        refused(
            "CREATE TEMP TABLE tt (id int PRIMARY KEY)",
            "tt",
            "node_name",
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "temporary",
        );
        refused(
            "CREATE UNLOGGED TABLE r.u (id int PRIMARY KEY)",
            "r.u",
            "node_name",
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "unlogged",
        );
        refused(
            "SELECT 1",
            "pg_catalog.pg_class",
            "node_name",
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "system catalog",
        );
        refused(
            "SELECT 1",
            "federation.node",
            "node_name",
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "pg_federation itself",
        );
    }

    #[pg_test]
    fn refuses_tables_without_primary_key() {
        refused(
            "CREATE TABLE r.nopk (id int, v text)",
            "r.nopk",
            "node_name",
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "no primary key",
        );
    }

    #[pg_test]
    fn accepts_replica_identity_full_without_primary_key() {
        Spi::run("CREATE TABLE full_ri (id int, v text); ALTER TABLE full_ri REPLICA IDENTITY FULL; INSERT INTO full_ri VALUES (1, 'a')").unwrap();
        Spi::run("INSERT INTO federation.node (node_name, state) VALUES ('west', 'ready')")
            .unwrap();
        enable(oid("full_ri"), "node_name").unwrap();
        let ri = Spi::get_one::<String>(
            "SELECT relreplident::text FROM pg_class WHERE relname = 'full_ri_west'",
        )
        .unwrap();
        assert_eq!(
            ri.as_deref(),
            Some("f"),
            "other nodes' partitions keep REPLICA IDENTITY FULL"
        );
    }

    #[pg_test]
    fn refuses_inheritance_and_other_partitioning() {
        refused(
            "CREATE TABLE r.ip (id int PRIMARY KEY); CREATE TABLE r.ic (x int) INHERITS (r.ip)",
            "r.ip",
            "node_name",
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "inherit from it",
        );
        refused(
            "CREATE TABLE r.ip2 (id int PRIMARY KEY); CREATE TABLE r.ic2 (x int) INHERITS (r.ip2)",
            "r.ic2",
            "node_name",
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "inherits from",
        );
        refused(
            "CREATE TABLE r.rng (id int, node_name text) PARTITION BY RANGE (id)",
            "r.rng",
            "node_name",
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "not by LIST",
        );
        refused(
            "CREATE TABLE r.lp (id int, node_name text) PARTITION BY LIST (node_name);
             CREATE TABLE r.lp_ab PARTITION OF r.lp (PRIMARY KEY (id)) FOR VALUES IN ('a', 'b')",
            "r.lp",
            "node_name",
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "not one node",
        );
        refused(
            "CREATE TABLE r.lp2 (id int, node_name text) PARTITION BY LIST (node_name);
             CREATE TABLE r.lp2_a PARTITION OF r.lp2 (PRIMARY KEY (id)) FOR VALUES IN ('a')",
            "r.lp2_a",
            "node_name",
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "is a partition of",
        );
    }

    #[pg_test]
    fn refuses_a_wrong_node_column() {
        refused(
            "CREATE TABLE r.wt (id int PRIMARY KEY, node_name int)",
            "r.wt",
            "node_name",
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            "not text",
        );
        refused(
            "CREATE TABLE r.oc (id int PRIMARY KEY, node_name text); INSERT INTO r.oc VALUES (1, 'pgrx_test'), (2, 'west')",
            "r.oc", "node_name", PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "not members",
        );
        refused(
            "CREATE TABLE r.gc (id int PRIMARY KEY, n text GENERATED ALWAYS AS ('x') STORED)",
            "r.gc",
            "n",
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "generated",
        );
        refused(
            "CREATE TABLE r.ln (id int PRIMARY KEY)",
            "r.ln",
            "",
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "not valid",
        );
    }

    #[pg_test]
    fn refuses_what_cannot_be_carried_over() {
        refused(
            "CREATE TABLE r.pk (id int PRIMARY KEY); CREATE TABLE r.fk (id int PRIMARY KEY, p int REFERENCES r.pk)",
            "r.pk", "node_name", PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, "references it",
        );
        refused(
            "CREATE TABLE r.vt (id int PRIMARY KEY); CREATE VIEW r.vv AS SELECT * FROM r.vt",
            "r.vt",
            "node_name",
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "views or rules depend on it",
        );
        refused(
            "CREATE TABLE r.rls (id int PRIMARY KEY); ALTER TABLE r.rls ENABLE ROW LEVEL SECURITY",
            "r.rls",
            "node_name",
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "row-level security",
        );
        refused(
            "CREATE TABLE r.taken (id int PRIMARY KEY); CREATE TABLE r.taken_pgrx_test (x int)",
            "r.taken",
            "node_name",
            PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
            "already taken",
        );
    }

    #[pg_test]
    fn enables_an_empty_table() {
        Spi::run("CREATE TABLE hippos (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), value numeric, created_at timestamptz DEFAULT now())").unwrap();
        enable(oid("hippos"), "node_name").unwrap();
        let kind = Spi::get_one::<String>(
            "SELECT relkind::text FROM pg_class WHERE oid = 'hippos'::regclass",
        )
        .unwrap();
        assert_eq!(kind.as_deref(), Some("p"));
        let parts = Spi::get_one::<String>(
            "SELECT string_agg(partition::text || '=' || owner_node, ',' ORDER BY partition::text) FROM federation.tables",
        )
        .unwrap();
        assert_eq!(
            parts.as_deref(),
            Some("hippos_default=(default),hippos_pgrx_test=pgrx_test")
        );
        let node =
            Spi::get_one::<String>("INSERT INTO hippos (value) VALUES (1) RETURNING node_name")
                .unwrap();
        assert_eq!(node.as_deref(), Some("pgrx_test"));
        let published = Spi::get_one::<String>("SELECT string_agg(tablename, ',') FROM pg_publication_tables WHERE pubname = 'federation_pgrx_test'").unwrap();
        assert_eq!(published.as_deref(), Some("hippos_pgrx_test"));
        let local_triggers = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'hippos_pgrx_test'::regclass",
        )
        .unwrap();
        assert_eq!(
            local_triggers,
            Some(0),
            "the local partition carries no trigger"
        );
    }
}
