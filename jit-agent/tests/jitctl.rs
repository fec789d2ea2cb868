//! `jitctl` commands that work without a daemon, run as a user would run them.
use std::{path::Path, process::Command};

fn jitctl(args: &[&str]) -> (i32, String, String) {
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

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn policy_check_accepts_the_example_policies() {
    let (code, stdout, stderr) = jitctl(&["policy", "check", &repo("policies")]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("ok, 5 agents"), "{stdout}");
}

#[test]
fn policy_check_reports_every_error_with_its_position_and_fails() {
    let dir = repo("jit-agent/tests/fixtures/policy/bad");
    let (code, _, stderr) = jitctl(&["policy", "check", &dir]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("unknown-fields.toml:4:1: unknown field `defualt`"),
        "{stderr}"
    );
    assert!(
        stderr.lines().last().unwrap().ends_with("errors"),
        "{stderr}"
    );
}

#[test]
fn commands_that_need_the_daemon_say_how_to_reach_it() {
    let socket = tempfile::tempdir().unwrap().path().join("absent.sock");
    let (code, _, stderr) = jitctl(&["--socket", socket.to_str().unwrap(), "status"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot connect to the jit daemon") && stderr.contains("absent.sock"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_are_named() {
    let (code, _, stderr) = jitctl(&["run", "--agent", "x"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("CMD"), "{stderr}");
}
