//! `jitctl policy explain|test|replay|suggest|check --offline --strict`, run as an admin runs
//! them: on the shipped policies, on crafted corner cases (ties, wildcards, time windows across
//! DST, rename pairs, self-protection) and on an audit trail a VM test produced.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

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

fn json(args: &[&str]) -> Value {
    let (code, stdout, stderr) = jitctl(args);
    assert_eq!(
        code, 0,
        "jitctl {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .to_str()
        .unwrap()
        .to_owned()
}

fn fixture(path: &str) -> String {
    repo(&format!("jit-agent/tests/fixtures/tooling/{path}"))
}

/// A policy directory holding `files` (name, text).
fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn s(dir: &tempfile::TempDir) -> String {
    dir.path().to_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// explain

#[test]
fn explain_names_the_rule_the_losers_and_the_hold() {
    let policies = repo("policies");
    let e = json(&[
        "policy",
        "explain",
        "--offline",
        "--policies",
        &policies,
        "--agent",
        "coding-agent",
        "--op",
        "write",
        "--at",
        "2026-01-05T10:00:00Z",
        "--json",
        "/srv/work/app/.git/hooks/pre-commit",
    ]);
    assert_eq!(e["decision"], "hold");
    assert_eq!(e["decided_by"]["kind"], "rule");
    assert_eq!(
        e["decided_by"]["name"],
        "git hooks run code on the next commit"
    );
    assert_eq!(e["decided_by"]["pattern"], "/srv/work/*/.git/hooks/");
    assert!(
        e["decided_by"]["file"]
            .as_str()
            .unwrap()
            .ends_with("coding-agent.toml")
    );
    assert_eq!(e["decided_by"]["line"], 119);
    let matches = e["paths"][0]["matches"].as_array().unwrap();
    let workspace = matches.iter().find(|m| m["name"] == "workspace").unwrap();
    assert_eq!(workspace["decides"], false);
    assert!(
        workspace["lost_because"]
            .as_str()
            .unwrap()
            .starts_with("less specific than `/srv/work/*/.git/hooks/`"),
        "{workspace}"
    );
    // The hold: approvers, quorum, timeout, scope.
    assert_eq!(e["hold"]["approver_users"], serde_json::json!(["root"]));
    assert_eq!(e["hold"]["approver_groups"], serde_json::json!(["adm"]));
    assert_eq!(e["hold"]["required_approvals"], 1);
    assert_eq!(e["hold"]["timeout"], "5m");
    assert_eq!(e["hold"]["on_timeout"], "deny");
    assert_eq!(e["hold"]["grant"], "once");

    // A rule's own timeout.
    let e = json(&[
        "policy",
        "explain",
        "--offline",
        "--policies",
        &policies,
        "--agent",
        "coding-agent",
        "--op",
        "exec",
        "--json",
        "/usr/bin/curl",
    ]);
    assert_eq!(e["hold"]["timeout"], "2m");
    assert!(
        e["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("interpreter pass of a `#!` script")),
        "{e:#}"
    );

    // The human form says the same.
    let (code, text, _) = jitctl(&[
        "policy",
        "explain",
        "--offline",
        "--policies",
        &policies,
        "--agent",
        "coding-agent",
        "--op",
        "write",
        "--at",
        "2026-01-05T10:00:00Z",
        "/srv/work/app/.git/hooks/pre-commit",
    ]);
    assert_eq!(code, 0);
    assert!(text.contains("decision: hold"), "{text}");
    assert!(
        text.contains("decided by: rule \"git hooks run code on the next commit\""),
        "{text}"
    );
    assert!(text.contains("allow  \"workspace\""), "{text}");
    assert!(
        text.contains("hold: approvers users root; groups adm"),
        "{text}"
    );
}

#[test]
fn explain_a_time_window_across_dst_and_a_tie() {
    let policies = repo("policies");
    let at = |when: &str| {
        json(&[
            "policy",
            "explain",
            "--offline",
            "--policies",
            &policies,
            "--agent",
            "coding-agent",
            "--op",
            "exec",
            "--at",
            when,
            "--json",
            "/usr/bin/git",
        ])
    };
    // 18:59 Berlin on a Monday: office hours, the allow decides; the after-hours rule is out of
    // force and says why.
    let e = at("2026-03-30T18:59:00[Europe/Berlin]");
    assert_eq!(e["decision"], "allow");
    assert_eq!(e["valid_until"], "2026-03-30T17:00:00Z", "19:00 CEST");
    let after = e["paths"][0]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "after hours, the toolchain is reported")
        .unwrap()
        .clone();
    assert_eq!(after["active"], false);
    assert!(
        after["lost_because"]
            .as_str()
            .unwrap()
            .contains("active only outside"),
        "{after}"
    );
    // 19:00 Berlin: the same pattern, the more severe rule wins the tie.
    let e = at("2026-03-30T17:00:00Z");
    assert_eq!(e["decision"], "audit");
    let toolchain = e["paths"][0]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "toolchain")
        .unwrap()
        .clone();
    assert!(
        toolchain["lost_because"]
            .as_str()
            .unwrap()
            .contains("less severe (allow < audit"),
        "{toolchain}"
    );
    // The week before, in CET, 19:00 Berlin is 18:00 UTC.
    assert_eq!(at("2026-03-23T17:30:00Z")["decision"], "allow");
    assert_eq!(at("2026-03-23T18:00:00Z")["decision"], "audit");
}

#[test]
fn explain_a_rename_decides_both_ends() {
    let policies = repo("policies");
    let e = json(&[
        "policy",
        "explain",
        "--offline",
        "--policies",
        &policies,
        "--agent",
        "coding-agent",
        "--op",
        "rename",
        "--json",
        "/srv/work/a",
        "/etc/passwd",
    ]);
    assert_eq!(e["decision"], "deny");
    assert_eq!(e["deciding_end"], "target");
    assert_eq!(e["paths"][0]["decision"], "allow");
    assert_eq!(e["paths"][1]["decision"], "deny");
    // The source decides when it is the more severe end.
    let e = json(&[
        "policy",
        "explain",
        "--offline",
        "--policies",
        &policies,
        "--agent",
        "coding-agent",
        "--op",
        "rename",
        "--json",
        "/etc/passwd",
        "/srv/work/a",
    ]);
    assert_eq!(e["deciding_end"], "source");
    // One end only: the note says the other one counts too.
    let e = json(&[
        "policy",
        "explain",
        "--offline",
        "--policies",
        &policies,
        "--agent",
        "coding-agent",
        "--op",
        "rename",
        "--json",
        "/srv/work/a",
    ]);
    assert!(
        e["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("both the source and the target")),
        "{e:#}"
    );
}

#[test]
fn explain_refuses_what_it_cannot_answer() {
    let policies = repo("policies");
    let (code, _, stderr) = jitctl(&[
        "policy",
        "explain",
        "--offline",
        "--policies",
        &policies,
        "--agent",
        "nobody",
        "--op",
        "exec",
        "/usr/bin/git",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no agent named `nobody`"), "{stderr}");
    for path in [
        "usr/bin/git",
        "/usr/bin/../bin/git",
        "/usr//bin",
        "/srv/work/",
    ] {
        let (code, _, stderr) = jitctl(&[
            "policy",
            "explain",
            "--offline",
            "--policies",
            &policies,
            "--agent",
            "coding-agent",
            "--op",
            "write",
            path,
        ]);
        assert_eq!(code, 1, "{path}");
        assert!(
            stderr.contains("is not a resolved path"),
            "{path}: {stderr}"
        );
    }
    let (code, _, stderr) = jitctl(&[
        "policy",
        "explain",
        "--offline",
        "--policies",
        &policies,
        "--agent",
        "coding-agent",
        "--op",
        "exce",
        "/usr/bin/git",
    ]);
    assert_eq!(code, 2, "clap's usage error");
    assert!(stderr.contains("unknown op `exce`"), "{stderr}");
}

#[test]
fn explain_wildcards_ties_and_self_protection() {
    let dir = policy_dir(&[(
        "a.toml",
        r#"[agent]
name = "a"
cgroups = ["a"]
default = "allow"

[[rule]]
name = "homes"
op = "write"
path = "/home/"
decision = "audit"

[[rule]]
name = "ssh keys"
op = "write"
path = "/home/*/.ssh/"
decision = "deny"

[[rule]]
name = "alice may"
op = "write"
path = "/home/alice/"
decision = "allow"

[[rule]]
name = "first allow"
op = "write"
path = "/srv/x"
decision = "allow"

[[rule]]
name = "second allow"
op = "write"
path = "/srv/x"
decision = "allow"
"#,
    )]);
    let explain = |path: &str| {
        json(&[
            "policy",
            "explain",
            "--policies",
            &s(&dir),
            "--agent",
            "a",
            "--op",
            "write",
            "--json",
            path,
        ])
    };
    // The wildcard rule is more specific than /home/ ...
    let e = explain("/home/bob/.ssh/id_ed25519");
    assert_eq!(e["decided_by"]["name"], "ssh keys");
    // ... and a longer literal prefix beats the wildcard.
    let e = explain("/home/alice/.ssh/id_ed25519");
    assert_eq!(e["decided_by"]["name"], "alice may");
    let lost: Vec<&str> = e["paths"][0]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["decides"] == false)
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(lost, ["homes", "ssh keys"]);
    // Equal rules: the first one decides.
    let e = explain("/srv/x");
    assert_eq!(e["decided_by"]["name"], "first allow");
    let second = &e["paths"][0]["matches"][1];
    assert!(
        second["lost_because"]
            .as_str()
            .unwrap()
            .contains("which comes first"),
        "{second}"
    );
    // The policy directory itself is protected from every agent, whatever its rules.
    let inside = format!("{}/a.toml", s(&dir));
    let e = explain(&inside);
    assert_eq!(e["decision"], "deny");
    assert_eq!(e["decided_by"]["kind"], "self_protection");
}

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
// replay and suggest, on the trail of a VM run (see fixtures/tooling/README.md)

#[test]
fn replay_of_a_vm_trail_under_its_own_policy_changes_nothing() {
    let r = json(&[
        "policy",
        "replay",
        "--offline",
        "--policies",
        &fixture("recorded"),
        "--json",
        &fixture("vm-audit.jsonl"),
    ]);
    assert_eq!(r["replayed"], 6, "{r:#}");
    assert_eq!(r["unchanged"], 6, "{r:#}");
    assert_eq!(r["changed"], 0, "{r:#}");
    // The approvals the kernel applied are not policy decisions.
    assert_eq!(
        r["skipped"]["approvals applied (a reviewer's grant, not the policy)"], 4,
        "{r:#}"
    );
}

#[test]
fn replay_of_a_vm_trail_shows_what_a_change_changes() {
    let r = json(&[
        "policy",
        "replay",
        "--offline",
        "--policies",
        &fixture("changed"),
        "--json",
        &fixture("vm-audit.jsonl"),
    ]);
    assert_eq!(r["replayed"], 6, "{r:#}");
    assert_eq!(r["changed"], 4, "{r:#}");
    let groups = r["groups"].as_array().unwrap();
    assert_eq!(groups[0]["count"], 3, "{r:#}");
    assert_eq!(groups[0]["from"]["decision"], "hold");
    assert_eq!(groups[0]["from"]["rule"], "deploys need a reviewer");
    assert_eq!(groups[0]["to"]["decision"], "allow");
    assert_eq!(groups[0]["to"]["rule"], "deploys need a reviewer");
    let changes = r["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 4);
    assert!(changes.iter().all(|c| c["seq"].as_u64().unwrap() > 0));
    let (code, text, _) = jitctl(&[
        "policy",
        "replay",
        "--offline",
        "--policies",
        &fixture("changed"),
        &fixture("vm-audit.jsonl"),
    ]);
    assert_eq!(code, 0);
    assert!(text.contains("4 would change decision"), "{text}");
    assert!(
        text.contains(
            "replay-agent exec: hold (rule \"deploys need a reviewer\") -> allow (rule \"deploys need \
             a reviewer\")"
        ),
        "{text}"
    );
}

#[test]
fn suggest_from_a_vm_trail_proposes_what_reviewers_approved() {
    let s = json(&[
        "policy",
        "suggest",
        "--min",
        "3",
        "--json",
        &fixture("vm-audit.jsonl"),
    ]);
    assert_eq!(s["decided_holds"], 4, "{s:#}");
    let proposals = s["suggestions"].as_array().unwrap();
    assert_eq!(proposals.len(), 1, "{s:#}");
    assert_eq!(proposals[0]["decision"], "allow");
    assert_eq!(proposals[0]["op"], "exec");
    assert_eq!(proposals[0]["count"], 3);
    let toml = proposals[0]["toml"].as_str().unwrap();
    assert!(
        toml.contains("# Evidence: reviewers approved 3 held exec"),
        "{toml}"
    );
    assert!(toml.contains("decision = \"allow\""), "{toml}");
    // Fewer decisions than asked for: nothing.
    let s = json(&[
        "policy",
        "suggest",
        "--min",
        "4",
        "--json",
        &fixture("vm-audit.jsonl"),
    ]);
    assert_eq!(s["suggestions"].as_array().unwrap().len(), 0, "{s:#}");
    // Against the policy that held them: the hold rule has the same path and would win the
    // tie, and the proposal says so.
    let s = json(&[
        "policy",
        "suggest",
        "--offline",
        "--policies",
        &fixture("recorded"),
        "--min",
        "3",
        "--json",
        &fixture("vm-audit.jsonl"),
    ]);
    let toml = s["suggestions"][0]["toml"].as_str().unwrap();
    assert!(
        toml.contains("# Note: rule \"deploys need a reviewer\"") && toml.contains("wins the tie"),
        "{toml}"
    );
    // Against a policy that already lets deploys run: nothing left to suggest.
    let s = json(&[
        "policy",
        "suggest",
        "--offline",
        "--policies",
        &fixture("changed"),
        "--min",
        "3",
        "--json",
        &fixture("vm-audit.jsonl"),
    ]);
    assert_eq!(s["suggestions"].as_array().unwrap().len(), 0, "{s:#}");
    assert_eq!(s["already_decided"], 1, "{s:#}");
}

/// A hold and its approval, as the daemon writes them, for crafted trails.
fn held_and_answered(seq: u64, id: u64, path: &str, decision: &str) -> [String; 2] {
    let hold = serde_json::json!({
        "v": 1, "seq": seq, "time": "2026-01-05T10:00:00.000000Z", "type": "kernel",
        "kind": "hold", "op": "exec", "path": path, "decision": "hold", "enforced": "hold",
        "rule_id": 0, "rule": null, "agent_id": 1, "agent": "a", "pid": 10, "tgid": 10,
        "ppid": 1, "uid": 0, "gid": 0, "cgroup_id": 1, "request_id": id, "ktime_ns": id,
        "dev": 1, "ino": 1, "truncated": false, "unresolved": false, "process": null,
        "prev": "0".repeat(64),
    });
    let answer = serde_json::json!({
        "v": 1, "seq": seq + 1, "time": "2026-01-05T10:00:01.000000Z", "type": "approval",
        "request_id": id, "reviewer": "alice", "decision": decision, "scope": "once",
        "reason": null, "prev": "0".repeat(64),
    });
    [hold.to_string(), answer.to_string()]
}

#[test]
fn suggest_generalizes_to_a_directory_and_leaves_disputes_alone() {
    let mut lines = Vec::new();
    let mut seq = 1;
    for (n, (path, decision)) in [
        ("/opt/tools/fmt", "approve"),
        ("/opt/tools/lint", "approve"),
        ("/opt/tools/test", "approve"),
        ("/opt/bin/rm-rf", "deny"),
        ("/opt/bin/rm-rf", "approve"),
        ("/opt/bin/rm-rf", "kill"),
    ]
    .into_iter()
    .enumerate()
    {
        lines.extend(held_and_answered(seq, 100 + n as u64, path, decision));
        seq += 2;
    }
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("audit.jsonl");
    fs::write(&trail, lines.join("\n") + "\n").unwrap();
    let s = json(&[
        "policy",
        "suggest",
        "--min",
        "3",
        "--json",
        trail.to_str().unwrap(),
    ]);
    let proposals = s["suggestions"].as_array().unwrap();
    assert_eq!(proposals.len(), 1, "{s:#}");
    assert_eq!(proposals[0]["pattern"], "/opt/tools/");
    assert_eq!(proposals[0]["paths"].as_array().unwrap().len(), 3);
    assert_eq!(s["disputed"][0]["path"], "/opt/bin/rm-rf");
    assert_eq!(s["disputed"][0]["approved"], 1);
    assert_eq!(s["disputed"][0]["refused"], 2);
    let (_, text, _) = jitctl(&["policy", "suggest", "--min", "3", trail.to_str().unwrap()]);
    assert!(text.contains("path = \"/opt/tools/\""), "{text}");
    assert!(text.contains("reviewers disagreed"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// check --offline, --strict, carets

#[test]
fn check_offline_skips_the_account_lookups_only() {
    let dir = policy_dir(&[(
        "a.toml",
        r#"[agent]
name = "a"
cgroups = ["a"]
default = "hold"

[escalation]
approvers = { users = ["no-such-user-jit-test"], groups = ["no-such-group-jit-test"] }
"#,
    )]);
    let (code, _, stderr) = jitctl(&["policy", "check", &s(&dir)]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("unknown user `no-such-user-jit-test`"),
        "{stderr}"
    );
    let (code, stdout, stderr) = jitctl(&["policy", "check", "--offline", &s(&dir)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Everything else is still checked.
    fs::write(
        dir.path().join("b.toml"),
        "[agent]\nname = \"a\"\ncgroups = [\"b\"]\n",
    )
    .unwrap();
    let (code, _, stderr) = jitctl(&["policy", "check", "--offline", &s(&dir)]);
    assert_eq!(code, 1);
    assert!(stderr.contains("agent `a` is already defined"), "{stderr}");
}

#[test]
fn strict_warns_about_the_sidesteps_in_the_shipped_policies() {
    let v = {
        let (code, stdout, _) = jitctl(&[
            "policy",
            "check",
            "--offline",
            "--strict",
            "--json",
            &repo("policies"),
        ]);
        assert_eq!(code, 2, "warnings only: {stdout}");
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let warnings: Vec<String> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "rule \"git hooks run code on the next commit\" holds write, create, rename, chmod, \
             metadata on `/srv/work/*/.git/hooks/`, but unlink, truncate, link, symlink are \
             allowed there"
        )),
        "{warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w
                .contains("renaming the directory `/srv/work/*/.git/hooks` above it is allowed")),
        "{warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("renaming the directory `/etc` above it is allowed")),
        "{warnings:#?}"
    );
}

#[test]
fn strict_knows_self_protection_guards_renames_above_the_policy_directory() {
    let top = tempfile::tempdir().unwrap();
    let t = top.path().to_str().unwrap();
    let policies = top.path().join("policies");
    fs::create_dir(&policies).unwrap();
    fs::write(
        policies.join("a.toml"),
        format!(
            r#"[agent]
name = "a"
cgroups = ["a"]
default = "allow"

[[rule]]
name = "beside the policies"
op = ["write", "create", "unlink", "rename", "truncate", "link", "symlink", "chmod", "chown", "metadata"]
path = ["{t}/guarded", "{t}/sub/guarded"]
decision = "deny"
"#
        ),
    )
    .unwrap();
    let (code, _, stderr) = jitctl(&[
        "policy",
        "check",
        "--offline",
        "--strict",
        policies.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    // `T` is above the policy directory: self-protection refuses renaming it (and `/tmp`).
    assert!(
        !stderr.contains(&format!("renaming the directory `{t}` ")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "renaming the directory `{t}/sub` above it is allowed"
        )),
        "{stderr}"
    );
}

#[test]
fn strict_finds_dead_rules_symlinked_patterns_and_allow_only_agents() {
    let host = tempfile::tempdir().unwrap();
    let real = host.path().join("real");
    fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, host.path().join("link")).unwrap();
    fs::write(real.join("file"), "").unwrap();
    let h = host.path().to_str().unwrap();
    let dir = policy_dir(&[(
        "a.toml",
        &format!(
            r#"[agent]
name = "a"
cgroups = ["a"]
default = "allow"

[[rule]]
name = "wide"
op = "write"
path = "/srv/"
decision = "audit"

[[rule]]
name = "same but weaker"
op = "write"
path = "/srv/"
decision = "allow"

[[rule]]
name = "through a symlink"
op = "write"
path = "{h}/link/"
decision = "audit"

[[rule]]
name = "a file as a directory"
op = "write"
path = "{h}/real/file/"
decision = "audit"
"#
        ),
    )]);
    let (code, _, stderr) = jitctl(&["policy", "check", "--offline", "--strict", &s(&dir)]);
    assert_eq!(code, 2, "{stderr}");
    let file = dir.path().join("a.toml");
    let f = file.display();
    for expected in [
        format!("{f}:2:8: warning: agent `a` has default = \"allow\" and no deny or hold rule"),
        format!("{f}:13:8: warning: rule \"same but weaker\" never decides"),
        format!(
            "{f}:19:8: warning: rule \"through a symlink\": `{h}/link/` cannot match on this host"
        ),
        format!("{f}:25:8: warning: rule \"a file as a directory\": `{h}/real/file/` matches"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected}:\n{stderr}");
    }
    // Without --strict: no warnings, exit 0.
    let (code, _, stderr) = jitctl(&["policy", "check", "--offline", &s(&dir)]);
    assert_eq!(code, 0);
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn errors_on_a_terminal_show_the_line_and_a_caret() {
    // `script` gives jitctl a terminal (util-linux, in every Debian).
    let Ok(script) = which("script") else {
        panic!("`script` (util-linux) is needed to test terminal output");
    };
    let dir = repo("jit-agent/tests/fixtures/policy/bad");
    let command = format!("{} policy check {dir}", env!("CARGO_BIN_EXE_jitctl"));
    let out = Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("unknown-fields.toml:4:1: unknown field `defualt`"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(lines[at + 1], "  |", "{text}");
    assert!(lines[at + 2].starts_with("4 | defualt"), "{text}");
    assert_eq!(lines[at + 3], "  | ^", "{text}");
    // Not on a terminal: one line per error, as before.
    let (_, _, stderr) = jitctl(&["policy", "check", &dir]);
    assert!(!stderr.contains(" | "), "{stderr}");
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

// ---------------------------------------------------------------------------------------------
// the tools decide as the daemon's maps do

/// The LPM trie, written here again: the stored key with the longest prefix that begins `key`.
fn lpm(
    map: &[(
        jit_common::policy::PolicyKey,
        jit_common::policy::PolicyValue,
    )],
    key: &jit_common::policy::PolicyKey,
) -> Option<jit_common::policy::PolicyValue> {
    map.iter()
        .filter(|(k, _)| {
            let n = k.significant_len();
            n <= key.significant_len() && k.data[..n] == key.data[..n]
        })
        .max_by_key(|(k, _)| k.prefixlen)
        .map(|(_, v)| *v)
}

#[test]
fn the_tools_decide_what_the_daemon_compiles() {
    use jit_agent::{
        policy::{LoadOptions, compile, load_dir_with},
        tooling::model::{Decider, Protected},
    };
    use jit_common::policy::{Op, PolicyKey, evaluate};
    let set = load_dir_with(
        Path::new(&repo("policies")),
        LoadOptions {
            resolve_accounts: false,
        },
    )
    .unwrap();
    let decider = Decider::new(&set, Protected::default());
    let paths = [
        "/usr/bin/git",
        "/usr/bin/curl",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/python3.11/lib-dynload/x.so",
        "/srv/work/app/.git/hooks/pre-commit",
        "/srv/work/app/target/debug/app",
        "/srv/app/releases/1/app",
        "/srv/app/current",
        "/home/alice/.ssh/authorized_keys",
        "/etc/passwd",
        "/dev/null",
        "/var/tmp/auditor/x",
        "/srv/demo/work/customers.db",
        "/",
    ];
    let mut checked = 0;
    // Weekdays and weekends, office hours and nights, both sides of a DST change.
    for at in [
        "2026-01-05T10:00:00Z",
        "2026-01-05T20:00:00Z",
        "2026-01-10T12:00:00Z",
        "2026-03-29T00:30:00Z",
        "2026-03-29T01:30:00Z",
        "2026-10-25T00:30:00Z",
        "2026-10-25T01:30:00Z",
    ] {
        let at: jiff::Timestamp = at.parse().unwrap();
        let compiled = compile(&set, at);
        for agent in &compiled.agents {
            let keys = agent.keys(9);
            let config = agent.config.with_ruleset(9);
            for op in Op::ALL {
                for path in paths {
                    let key = PolicyKey::for_lookup(9, op, path.as_bytes());
                    let mut scratch = PolicyKey::EMPTY;
                    let daemon = evaluate(|k| lpm(&keys, k), &key, &config, &mut scratch);
                    let tool = decider
                        .decide_path(&agent.name, op, path.as_bytes(), at)
                        .unwrap();
                    assert_eq!(tool, daemon, "{} {} {path} at {at}", agent.name, op.name());
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 7 * 4 * 14 * paths.len());
}
