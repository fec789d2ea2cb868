//! `jitctl policy replay` and `suggest` on the trail of a VM run (see
//! `fixtures/tooling/README.md`) and on crafted trails.

mod tooling;

use std::fs;

use tooling::{fixture, jitctl, json};

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

#[test]
fn a_held_rename_is_replayed_with_both_ends() {
    let rename = |seq: u64, ends: bool| {
        let mut record = serde_json::json!({
            "v": 1, "seq": seq, "time": "2026-01-05T10:00:00.000000Z", "type": "kernel",
            "kind": "hold", "op": "rename", "path": "/srv/x", "decision": "hold",
            "enforced": "hold", "rule_id": 1, "rule": "renaming x waits", "agent_id": 1,
            "agent": "a", "pid": 10, "tgid": 10, "ppid": 1, "uid": 0, "gid": 0,
            "cgroup_id": 1, "request_id": seq, "ktime_ns": seq, "dev": 1, "ino": 1,
            "truncated": false, "unresolved": false, "process": null, "prev": "0".repeat(64),
        });
        if ends {
            record["source"] = "/srv/x".into();
            record["destination"] = "/etc/x".into();
        }
        record.to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("audit.jsonl");
    fs::write(
        &trail,
        format!("{}\n{}\n", rename(1, true), rename(2, false)),
    )
    .unwrap();
    // The new policy also denies renames into /etc: the held rename's destination decides.
    let policies = dir.path().join("policies");
    fs::create_dir(&policies).unwrap();
    fs::write(
        policies.join("a.toml"),
        r#"[agent]
name = "a"
cgroups = ["a"]
default = "allow"

[escalation]
approvers = { users = ["alice"] }

[[rule]]
name = "renaming x waits"
op = "rename"
path = "/srv/x"
decision = "hold"

[[rule]]
name = "nothing is renamed into /etc"
op = "rename"
path = "/etc/"
decision = "deny"
"#,
    )
    .unwrap();
    let r = json(&[
        "policy",
        "replay",
        "--offline",
        "--policies",
        policies.to_str().unwrap(),
        "--json",
        trail.to_str().unwrap(),
    ]);
    assert_eq!(r["replayed"], 2, "{r:#}");
    assert_eq!(r["changed"], 1, "{r:#}");
    assert_eq!(r["changes"][0]["seq"], 1, "{r:#}");
    assert_eq!(r["changes"][0]["to"]["decision"], "deny", "{r:#}");
    assert_eq!(
        r["changes"][0]["to"]["rule"], "nothing is renamed into /etc",
        "{r:#}"
    );
    // Without both ends only the recorded one is decided again, and the summary says so.
    assert_eq!(r["unchanged"], 1, "{r:#}");
    assert_eq!(r["one_end_only"], 1, "{r:#}");
}
