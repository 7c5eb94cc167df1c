//! In-database tests of node identity: each resolution path and each refusal.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::identity::{resolve, validate_node_name, Sources};
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode;
    use std::io::Write;

    fn labels_file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(contents.as_bytes()).expect("write labels");
        f
    }

    fn from_file(path: &str, label: &str) -> Sources {
        Sources {
            guc: None,
            labels_path: Some(path.to_string()),
            label: label.to_string(),
            try_pgnodemx: true,
        }
    }

    #[pg_test]
    fn node_name_comes_from_the_setting() {
        // postgresql_conf_options() sets federation.node_name = 'pgrx_test'.
        let name = Spi::get_one::<String>("SELECT federation.node_name()").unwrap();
        assert_eq!(name.as_deref(), Some("pgrx_test"));
        let source = Spi::get_one::<String>("SELECT federation.node_name_source()")
            .unwrap()
            .unwrap();
        assert!(source.contains("federation.node_name"), "{source}");
    }

    #[pg_test]
    fn node_name_is_stable_not_immutable() {
        let vol = Spi::get_one::<String>(
            "SELECT provolatile::text FROM pg_proc WHERE oid = 'federation.node_name()'::regprocedure",
        )
        .unwrap();
        assert_eq!(vol.as_deref(), Some("s"));
    }

    #[pg_test]
    fn setting_wins_over_labels_file() {
        let f = labels_file("pg-cluster=\"west\"\n");
        let mut src = from_file(f.path().to_str().unwrap(), "pg-cluster");
        src.guc = Some("east".into());
        assert_eq!(resolve(&src).unwrap().name, "east");
    }

    #[pg_test]
    fn node_name_comes_from_labels_file() {
        let f = labels_file("app=\"hippo\"\npg-cluster=\"west\"\nother=\"x\"\n");
        let r = resolve(&from_file(f.path().to_str().unwrap(), "pg-cluster")).unwrap();
        assert_eq!(r.name, "west");
        assert!(r.source.contains("labels file"), "{}", r.source);
    }

    #[pg_test]
    fn node_label_selects_another_label() {
        let f = labels_file("postgres-operator.crunchydata.com/cluster=\"hippo-east\"\n");
        let r = resolve(&from_file(
            f.path().to_str().unwrap(),
            "postgres-operator.crunchydata.com/cluster",
        ))
        .unwrap();
        assert_eq!(r.name, "hippo-east");
    }

    #[pg_test]
    fn labels_file_without_the_label_is_refused() {
        let f = labels_file("app=\"hippo\"\ntier=\"db\"\n");
        let e = resolve(&from_file(f.path().to_str().unwrap(), "pg-cluster")).unwrap_err();
        assert_eq!(e.code, PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR);
        assert!(
            e.message.contains("no label \"pg-cluster\""),
            "{}",
            e.message
        );
        assert!(e.detail.as_deref().unwrap().contains("app, tier"), "{e}");
        assert!(e.hint.is_some());
    }

    #[pg_test]
    fn malformed_labels_file_is_refused() {
        let f = labels_file("app=\"hippo\"\npg-cluster=east\n");
        let e = resolve(&from_file(f.path().to_str().unwrap(), "pg-cluster")).unwrap_err();
        assert_eq!(e.code, PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR);
        assert!(e.message.contains("malformed at line 2"), "{}", e.message);
    }

    #[pg_test]
    fn unreadable_labels_file_is_refused() {
        // A directory exists but cannot be read as a file.
        let dir = tempfile::tempdir().unwrap();
        let e = resolve(&from_file(dir.path().to_str().unwrap(), "pg-cluster")).unwrap_err();
        assert_eq!(e.code, PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR);
        assert!(
            e.message.contains("could not read labels file"),
            "{}",
            e.message
        );
    }

    #[pg_test]
    fn invalid_name_in_labels_file_is_refused() {
        let f = labels_file("pg-cluster=\"Hippo East\"\n");
        let e = resolve(&from_file(f.path().to_str().unwrap(), "pg-cluster")).unwrap_err();
        assert_eq!(e.code, PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE);
        assert!(e.message.contains("Hippo East"), "{}", e.message);
        assert!(e.hint.as_deref().unwrap().contains("hippo_east"), "{e}");
    }

    #[pg_test]
    fn nothing_configured_is_refused_with_a_hint() {
        let src = Sources {
            guc: None,
            labels_path: Some("/nonexistent/pg_federation/labels".into()),
            label: "pg-cluster".into(),
            try_pgnodemx: true, // pgnodemx is not installed in the test database
        };
        let e = resolve(&src).unwrap_err();
        assert_eq!(
            e.code,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
        );
        assert_eq!(e.message, "no node name is configured for this server");
        assert!(
            e.hint
                .as_deref()
                .unwrap()
                .contains("ALTER SYSTEM SET federation.node_name"),
            "{e}"
        );
    }

    #[pg_test]
    fn node_name_rule() {
        for good in [
            "east",
            "a",
            "node_1",
            "hippo-east",
            "abcdefghijklmnopqrstuvwx",
        ] {
            assert!(
                validate_node_name(good, "test").is_ok(),
                "{good} should be valid"
            );
        }
        for bad in [
            "",
            "East",
            "1east",
            "_east",
            "-east",
            "east west",
            "east\"; DROP TABLE x; --",
            "ea.st",
            "abcdefghijklmnopqrstuvwxy",
            "default",
            "ëast",
        ] {
            let e = validate_node_name(bad, "test").unwrap_err();
            assert_eq!(
                e.code,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "{bad}"
            );
            assert!(
                e.detail.as_deref().unwrap().contains("1 to 24 bytes"),
                "{e}"
            );
        }
    }
}
