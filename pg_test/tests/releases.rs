//! Released files are never edited: every install script of a release (kept in
//! pg_test/fixtures/releases) and every upgrade script of a release has the hash it had when
//! it was released (fixtures/releases/SHA256SUMS). And every release upgrades to the next:
//! the chain of `sql/pg_federation--A--B.sql` leads from the first release to the current
//! version. (No server needed.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn current_version() -> String {
    let toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("version in Cargo.toml")
        .to_string()
}

#[test]
fn released_scripts_are_unchanged() {
    let sums =
        std::fs::read_to_string(root().join("pg_test/fixtures/releases/SHA256SUMS")).unwrap();
    let mut checked = 0;
    for line in sums
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (want, file) = line.split_once("  ").expect("<hash>  <path>");
        let out = Command::new("sha256sum")
            .arg(root().join(file))
            .output()
            .expect("run sha256sum");
        assert!(
            out.status.success(),
            "{file} is missing: a released file was removed"
        );
        let got = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            got.split_whitespace().next(),
            Some(want),
            "{file} was edited after its release; put the change in a new upgrade script instead"
        );
        checked += 1;
    }
    assert!(checked >= 3, "SHA256SUMS lists the released files");
}

#[test]
fn every_release_upgrades_to_the_current_version() {
    let current = current_version();
    let mut releases: Vec<String> = std::fs::read_dir(root().join("pg_test/fixtures/releases"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("pg_federation--")?
                .strip_suffix(".sql")
                .map(str::to_string)
        })
        .collect();
    releases.sort();
    assert!(!releases.is_empty());
    for r in &releases {
        let mut at = r.clone();
        let mut steps = 0;
        while at != current {
            let next = std::fs::read_dir(root().join("sql"))
                .unwrap()
                .filter_map(|e| {
                    let name = e.unwrap().file_name().into_string().unwrap();
                    name.strip_prefix(&format!("pg_federation--{at}--"))?
                        .strip_suffix(".sql")
                        .map(str::to_string)
                })
                .next()
                .unwrap_or_else(|| {
                    panic!("no upgrade script from {at} (on the way from {r} to {current})")
                });
            at = next;
            steps += 1;
            assert!(steps < 100, "upgrade scripts loop");
        }
    }
}
