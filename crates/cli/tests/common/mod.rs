//! Helpers shared by the CLI end-to-end tests.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

#[allow(dead_code)] // not every test file uses every helper
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A committed tiny checkpoint under tests/fixtures/models.
#[allow(dead_code)]
pub fn tiny(name: &str) -> String {
    root()
        .join("tests/fixtures/models")
        .join(name)
        .display()
        .to_string()
}

/// Runs, expects success, and parses stdout as JSON.
#[allow(dead_code)]
pub fn json_of(args: &[&str]) -> serde_json::Value {
    let out = lmcompare().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Copies the files (not subfolders) of `from` into `to`.
#[allow(dead_code)]
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

pub fn lmcompare() -> Command {
    Command::cargo_bin("lmcompare").unwrap()
}

/// Runs and expects exit 2 with one stderr line containing `needle`, and no panic.
#[allow(dead_code)]
pub fn bad(args: &[&str], needle: &str) {
    let out = lmcompare().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"));
}

pub mod toy_server;
