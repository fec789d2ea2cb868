//! `jitctl policy test`: the shipped case files, cases across DST changes, failures and
//! mistakes in case files.

mod tooling;

use std::fs;

use serde_json::Value;
use tooling::{jitctl, policy_dir, repo, s};

// test

#[test]
fn the_shipped_cases_pass() {
    let mut files: Vec<String> = fs::read_dir(repo("policies/tests"))
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_owned())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut args = vec!["policy", "test", "--offline", "--policies"];
    let policies = repo("policies");
    args.push(&policies);
    args.extend(files.iter().map(String::as_str));
    let (code, stdout, stderr) = jitctl(&args);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

const DST_POLICY: &str = r#"[agent]
name = "night"
cgroups = ["night"]
default = "deny"

[[rule]]
name = "spring"
op = "exec"
path = "/usr/bin/spring"
when = { inside = "Sun 02:30-03:30", tz = "Europe/Berlin" }
decision = "allow"

[[rule]]
name = "autumn"
op = "exec"
path = "/usr/bin/autumn"
when = { inside = "Sun 02:15-02:45", tz = "Europe/Berlin" }
decision = "allow"
"#;

#[test]
fn cases_across_dst_and_failures_exit_1() {
    let dir = policy_dir(&[("night.toml", DST_POLICY)]);
    let cases = dir.path().join("cases");
    fs::create_dir(&cases).unwrap();
    // 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST at 01:00 UTC; 02:30 does not
    // happen, so the window opens at the jump. 2026-10-25: 03:00 CEST falls back to 02:00 CET
    // at 01:00 UTC; 02:15-02:45 happens twice, and so does the window.
    fs::write(
        cases.join("dst.toml"),
        r#"agent = "night"

[[case]]
op = "exec"
path = "/usr/bin/spring"
at = "2026-03-29T00:59:59Z"
expect = "deny"
by_default = true

[[case]]
op = "exec"
path = "/usr/bin/spring"
at = "2026-03-29T01:00:00Z"
expect = "allow"
rule = "spring"

[[case]]
op = "exec"
path = "/usr/bin/spring"
at = "2026-03-29T01:30:00Z"
expect = "deny"

[[case]]
op = "exec"
path = "/usr/bin/autumn"
at = "2026-10-25T00:30:00Z"
expect = "allow"

[[case]]
op = "exec"
path = "/usr/bin/autumn"
at = "2026-10-25T01:00:00Z"
expect = "deny"

[[case]]
op = "exec"
path = "/usr/bin/autumn"
at = "2026-10-25T01:30:00Z"
expect = "allow"
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = jitctl(&[
        "policy",
        "test",
        "--policies",
        &s(&dir),
        cases.join("dst.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("6 cases: 6 passed, 0 failed"), "{stdout}");

    // A wrong expectation fails, says what it got and exits 1.
    fs::write(
        cases.join("wrong.toml"),
        "agent = \"night\"\n\n[[case]]\nop = \"exec\"\npath = \"/usr/bin/spring\"\nat = \
         \"2026-03-29T01:00:00Z\"\nexpect = \"allow\"\nrule = \"autumn\"\n",
    )
    .unwrap();
    let (code, stdout, _) = jitctl(&[
        "policy",
        "test",
        "--policies",
        &s(&dir),
        "--json",
        cases.join("wrong.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    let results: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(results[0]["pass"], false);
    assert_eq!(results[0]["decision"], "allow");
    assert_eq!(results[0]["rule"], "spring");
    assert_eq!(results[0]["line"], 3);
}

#[test]
fn case_file_mistakes_are_reported_with_positions() {
    let dir = policy_dir(&[("night.toml", DST_POLICY)]);
    let cases = tempfile::tempdir().unwrap();
    let file = cases.path().join("bad-cases.toml");
    fs::write(
        &file,
        r#"agent = "night"

[[case]]
op = "exce"
path = "/usr/bin/spring"
expect = "allow"

[[case]]
op = "exec"
path = "usr/bin/spring"
expect = "maybe"
rule = "no such rule"

[[case]]
op = "exec"
path = "/usr/bin/spring"
expect = "allow"
colour = "blue"
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = jitctl(&[
        "policy",
        "test",
        "--policies",
        &s(&dir),
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}");
    let f = file.display();
    for expected in [
        format!("{f}:4:6: unknown op `exce`"),
        format!("{f}:10:8: `usr/bin/spring` is not a resolved path"),
        format!("{f}:11:10: unknown decision `maybe`"),
        format!("{f}:12:8: agent `night` has no rule named `no such rule`"),
        format!("{f}:18:1: unknown field `colour`"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected}:\n{stderr}");
    }
}
