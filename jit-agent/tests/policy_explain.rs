//! `jitctl policy explain` as an admin runs it: the shipped policies and crafted corner cases
//! (ties, wildcards, time windows across DST, rename pairs, self-protection); and the proof
//! that the tools decide exactly what the daemon compiles.

mod tooling;

use std::path::Path;

use tooling::{jitctl, json, policy_dir, repo, s};

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
    assert_eq!(e["decided_by"]["line"], 122);
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
    assert_eq!(e["hold"]["risk"], "medium");
    let (_, text, _) = jitctl(&[
        "policy",
        "explain",
        "--offline",
        "--policies",
        &policies,
        "--agent",
        "coding-agent",
        "--op",
        "exec",
        "/usr/bin/curl",
    ]);
    assert!(
        text.contains("hold (risk medium): approvers users root"),
        "{text}"
    );
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
    assert_eq!(checked, 7 * 5 * 14 * paths.len());
}
