//! The committed `completions/` and `man/` must be exactly what the current clap definition
//! generates: this test regenerates both with the real binary and compares file by file.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::run_lbx;

const REFRESH: &str =
    "run `cargo run -- generate completions completions && cargo run -- generate man man` \
     and commit the result";

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("lbx-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// File names directly inside `dir` (empty when it does not exist).
fn names(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .map(|e| {
            e.expect("read dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Generates `what` into a temp dir and lists every way it differs from the committed `what/`.
fn drift(what: &str) -> Vec<String> {
    let tmp = TempDir::new(what);
    let out_dir = tmp.0.join(what);
    let out_str = out_dir.to_str().expect("utf-8 temp path");
    let out = run_lbx(&["generate", what, out_str], Duration::from_secs(30));
    assert!(
        out.status.success(),
        "lbx generate {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join(what);
    let (want, have) = (names(&out_dir), names(&committed));
    assert!(!want.is_empty(), "lbx generate {what} wrote nothing");
    let mut problems = Vec::new();
    for name in want.difference(&have) {
        problems.push(format!("{what}/{name} is missing"));
    }
    for name in have.difference(&want) {
        problems.push(format!("{what}/{name} is not generated any more"));
    }
    for name in want.intersection(&have) {
        let fresh = fs::read(out_dir.join(name)).expect("read generated file");
        let old = fs::read(committed.join(name)).expect("read committed file");
        if fresh != old {
            problems.push(format!("{what}/{name} is out of date"));
        }
    }
    problems
}

#[test]
fn completions_are_up_to_date() {
    let problems = drift("completions");
    assert!(problems.is_empty(), "{}\n{REFRESH}", problems.join("\n"));
}

#[test]
fn man_pages_are_up_to_date() {
    let problems = drift("man");
    assert!(problems.is_empty(), "{}\n{REFRESH}", problems.join("\n"));
}

#[test]
fn generate_creates_missing_directories() {
    let tmp = TempDir::new("nested");
    let deep = tmp.0.join("a").join("b");
    let out = run_lbx(
        &["generate", "man", deep.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    assert!(deep.join("lbx.1").is_file());
}

#[test]
fn generate_names_the_path_it_cannot_write() {
    let tmp = TempDir::new("blocked");
    let file = tmp.0.join("plain-file");
    fs::write(&file, b"not a directory").unwrap();
    let target = file.join("man");
    let out = run_lbx(
        &["generate", "man", target.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(target.to_str().unwrap()),
        "error should name {}: {err}",
        target.display()
    );
}
