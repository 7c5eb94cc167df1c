//! In-database tests of node identity: each resolution path and each refusal.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::identity::{resolve, validate_node_name, Sources, KNOWN_NODE_LABELS};
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
            labels_paths: vec![path.to_string()],
            labels: vec![label.to_string()],
            try_pgnodemx: true,
        }
    }

    /// The defaults: federation.labels_path and federation.node_label not set, but the labels
    /// files looked for are `paths`.
    fn by_default(paths: &[&str]) -> Sources {
        Sources {
            guc: None,
            labels_paths: paths.iter().map(|p| p.to_string()).collect(),
            labels: KNOWN_NODE_LABELS.map(String::from).to_vec(),
            try_pgnodemx: false,
        }
    }

    /// A labels file as the kubelet writes it: a timestamped folder holding the file, a
    /// `..data` symlink to that folder, and `labels` a symlink through `..data`; an update
    /// writes a new folder and swaps `..data` atomically (rename of a new symlink over it).
    struct KubeletDir {
        dir: tempfile::TempDir,
        version: u32,
    }

    impl KubeletDir {
        fn new(contents: &str) -> KubeletDir {
            let mut k = KubeletDir {
                dir: tempfile::tempdir().expect("temp dir"),
                version: 0,
            };
            k.write(contents);
            std::os::unix::fs::symlink("..data/labels", k.dir.path().join("labels")).unwrap();
            k
        }

        fn write(&mut self, contents: &str) {
            self.version += 1;
            let folder = format!(
                "..2026_11_27_14_00_0{}.{}",
                self.version,
                100 + self.version
            );
            std::fs::create_dir(self.dir.path().join(&folder)).unwrap();
            std::fs::write(self.dir.path().join(&folder).join("labels"), contents).unwrap();
            let tmp = self.dir.path().join("..data_tmp");
            std::os::unix::fs::symlink(&folder, &tmp).unwrap();
            std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        }

        fn labels(&self) -> String {
            self.dir.path().join("labels").to_str().unwrap().to_string()
        }
    }

    /// The labels of a Crunchy PGO instance pod, sorted, Go-quoted, as the kubelet writes them.
    const PGO_LABELS: &str = "postgres-operator.crunchydata.com/cluster=\"east\"\n\
        postgres-operator.crunchydata.com/data=\"postgres\"\n\
        postgres-operator.crunchydata.com/instance=\"east-00-x7q2\"\n\
        postgres-operator.crunchydata.com/instance-set=\"00\"\n\
        postgres-operator.crunchydata.com/patroni=\"east-ha\"\n\
        postgres-operator.crunchydata.com/role=\"master\"\n\
        statefulset.kubernetes.io/pod-name=\"east-00-x7q2-0\"";

    /// The labels of a CloudNativePG instance pod.
    const CNPG_LABELS: &str = "cnpg.io/cluster=\"west\"\n\
        cnpg.io/instanceName=\"west-1\"\n\
        cnpg.io/instanceRole=\"primary\"\n\
        cnpg.io/podRole=\"instance\"\n\
        role=\"primary\"";

    #[pg_test]
    fn crunchy_pgo_labels_name_the_node_with_no_setting() {
        let k = KubeletDir::new(PGO_LABELS);
        let r = resolve(&by_default(&["/nonexistent/podinfo/labels", &k.labels()])).unwrap();
        assert_eq!(r.name, "east");
        assert!(
            r.source
                .contains("postgres-operator.crunchydata.com/cluster"),
            "{}",
            r.source
        );
    }

    #[pg_test]
    fn cloudnativepg_labels_name_the_node_with_no_setting() {
        let k = KubeletDir::new(CNPG_LABELS);
        let r = resolve(&by_default(&[
            "/nonexistent/a",
            "/nonexistent/b",
            &k.labels(),
        ]))
        .unwrap();
        assert_eq!(r.name, "west");
        assert!(r.source.contains("cnpg.io/cluster"), "{}", r.source);
    }

    #[pg_test]
    fn the_recipes_label_comes_first_and_the_default_places_are_the_operators() {
        let k = KubeletDir::new(&format!("{CNPG_LABELS}\npg-cluster=\"central\""));
        assert_eq!(
            resolve(&by_default(&[&k.labels()])).unwrap().name,
            "central"
        );
        assert_eq!(
            crate::identity::KNOWN_LABELS_PATHS,
            [
                "/etc/podinfo/labels",
                "/etc/database-containerinfo/labels",
                "/projected/labels"
            ]
        );
    }

    #[pg_test]
    fn a_labels_update_swapped_in_by_the_kubelet_is_read_through_its_symlinks() {
        let mut k = KubeletDir::new(CNPG_LABELS);
        assert_eq!(resolve(&by_default(&[&k.labels()])).unwrap().name, "west");
        k.write(&CNPG_LABELS.replace("\"west\"", "\"north\""));
        assert_eq!(resolve(&by_default(&[&k.labels()])).unwrap().name, "north");
    }

    #[pg_test]
    fn a_labels_file_with_none_of_the_default_labels_names_them_all() {
        let k = KubeletDir::new("app=\"hippo\"\nrole=\"primary\"");
        let e = resolve(&by_default(&[&k.labels()])).unwrap_err();
        assert_eq!(e.code, PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR);
        for l in KNOWN_NODE_LABELS {
            assert!(e.message.contains(l), "{}", e.message);
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
            labels_paths: vec!["/nonexistent/pg_federation/labels".into()],
            labels: vec!["pg-cluster".into()],
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
