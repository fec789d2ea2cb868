//! What the policy tooling tests share: running `jitctl` as an admin does, the repository's
//! files, scratch policy directories.
#![allow(
    dead_code,
    reason = "each test crate uses the helpers it needs; the others are unused there"
)]
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// Runs `jitctl args...`: exit status, stdout, stderr.
pub fn jitctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jitctl"))
        .args(args)
        .output()
        .expect("run jitctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn json(args: &[&str]) -> Value {
    let (code, stdout, stderr) = jitctl(args);
    assert_eq!(
        code, 0,
        "jitctl {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

pub fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .to_str()
        .unwrap()
        .to_owned()
}

pub fn fixture(path: &str) -> String {
    repo(&format!("jit-agent/tests/fixtures/tooling/{path}"))
}

/// A policy directory holding `files` (name, text).
pub fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A directory's path as a string argument.
pub fn s(dir: &tempfile::TempDir) -> String {
    dir.path().to_str().unwrap().to_owned()
}

/// The first `name` on `PATH`.
pub fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
