//! Op groups (`op = "modify"`, `op = "any"`): expansion at load time, errors, and what the
//! compiler adds for them (rename guards on the directories above a guarded path), checked
//! with the kernel's matcher through the policy tooling's model of the maps.
use jiff::Timestamp;
use jit_agent::{
    policy::{OpGroup, PolicySet, compile, load_str},
    tooling::model::AgentMaps,
};
use jit_common::policy::{Decision, Op};

const HEAD: &str = "[agent]\nname = \"a\"\ncgroups = [\"jit/a\"]\ndefault = \"allow\"\n\n\
                    [escalation]\napprovers = { users = [\"root\"] }\n\n";

fn load(rules: &str) -> PolicySet {
    load_str("a.toml", &format!("{HEAD}{rules}")).unwrap_or_else(|e| panic!("{e}"))
}

fn maps(set: &PolicySet) -> AgentMaps {
    let compiled = compile(set, Timestamp::UNIX_EPOCH);
    AgentMaps::new(compiled.agent("a").unwrap())
}

fn decide(maps: &AgentMaps, op: Op, path: &str) -> Decision {
    maps.decide(op, path.as_bytes()).decision
}

#[test]
fn groups_expand_to_their_ops_once() {
    let set = load(
        "[[rule]]\nname = \"m\"\nop = [\"write\", \"modify\", \"unlink\"]\npath = \"/srv/a\"\n\
         decision = \"deny\"\n\n[[rule]]\nname = \"x\"\nop = \"any\"\npath = \"/srv/b\"\n\
         decision = \"deny\"\n",
    );
    let rules = &set.agents()[0].rules;
    let mut modify: Vec<Op> = rules[0].ops.clone();
    modify.sort_by_key(|&op| op as u8);
    assert_eq!(modify, OpGroup::Modify.ops());
    assert_eq!(modify.len(), Op::ALL.len() - 1);
    assert!(!modify.contains(&Op::Exec));
    assert_eq!(rules[0].groups, [OpGroup::Modify]);
    assert_eq!(rules[1].ops, Op::ALL);
    assert_eq!(rules[1].groups, [OpGroup::Any]);
}

#[test]
fn an_unknown_op_names_the_groups_at_its_position() {
    let err = load_str(
        "a.toml",
        &format!(
            "{HEAD}[[rule]]\nname = \"m\"\nop = [\"exec\", \"modfiy\"]\npath = \"/srv/a\"\n\
             decision = \"deny\"\n"
        ),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "a.toml:11:15: unknown op `modfiy`: expected one of exec, write, create, unlink, \
         rename, truncate, mkdir, rmdir, link, symlink, chmod, chown, device, metadata, or a \
         group: modify, any"
    );
}

#[test]
fn a_guarding_group_rule_covers_every_write_like_op_and_the_rename_of_each_directory_above() {
    let set = load(
        "[[rule]]\nname = \"config\"\nop = \"modify\"\npath = \"/srv/app/config\"\n\
         decision = \"hold\"\n",
    );
    let m = maps(&set);
    for op in OpGroup::Modify.ops() {
        assert_eq!(decide(&m, op, "/srv/app/config"), Decision::Hold, "{op:?}");
    }
    assert_eq!(decide(&m, Op::Exec, "/srv/app/config"), Decision::Allow);
    // Moving a directory above it away is held by the same rule.
    for dir in ["/srv/app", "/srv"] {
        let v = m.decide(Op::Rename, dir.as_bytes());
        assert_eq!((v.decision, v.rule_id), (Decision::Hold, 1), "{dir}");
    }
    // Only the directories themselves: their other files and other ops stay as they were.
    assert_eq!(decide(&m, Op::Rename, "/srv/app/other"), Decision::Allow);
    assert_eq!(decide(&m, Op::Rmdir, "/srv/app"), Decision::Allow);
    assert_eq!(decide(&m, Op::Rename, "/"), Decision::Allow);
}

#[test]
fn directory_and_wildcard_patterns_guard_their_ancestors_too() {
    let set = load(
        "[[rule]]\nname = \"ssh\"\nop = \"modify\"\npath = [\"/home/*/.ssh/\", \"/etc/app/\"]\n\
         decision = \"deny\"\n",
    );
    let m = maps(&set);
    for dir in [
        "/home/alice/.ssh",
        "/home/alice",
        "/home",
        "/etc/app",
        "/etc",
    ] {
        assert_eq!(decide(&m, Op::Rename, dir), Decision::Deny, "{dir}");
    }
    assert_eq!(decide(&m, Op::Rename, "/home/alice/notes"), Decision::Allow);
    assert_eq!(
        decide(&m, Op::Unlink, "/home/bob/.ssh/id_ed25519"),
        Decision::Deny
    );
}

#[test]
fn ancestor_guards_never_weaken_a_broader_rule_or_the_default() {
    // A broader deny of renames stays in force: an exact `hold` on /srv would outrank it.
    let set = load(
        "[[rule]]\nname = \"no renames\"\nop = \"rename\"\npath = \"/\"\ndecision = \"deny\"\n\n\
         [[rule]]\nname = \"config\"\nop = \"modify\"\npath = \"/srv/app/config\"\n\
         decision = \"hold\"\n",
    );
    let m = maps(&set);
    let v = m.decide(Op::Rename, b"/srv");
    assert_eq!((v.decision, v.rule_id), (Decision::Deny, 1));
    let compiled = compile(&set, Timestamp::UNIX_EPOCH);
    assert!(
        !compiled
            .agent("a")
            .unwrap()
            .entries
            .iter()
            .any(|e| e.pattern == "/srv"),
        "no entry where a broader rule already decides more severely"
    );

    // A deny default is not turned into a hold either.
    let text = "[agent]\nname = \"a\"\ncgroups = [\"jit/a\"]\ndefault = \"deny\"\n\n\
                [escalation]\napprovers = { users = [\"root\"] }\n\n\
                [[rule]]\nname = \"config\"\nop = \"modify\"\npath = \"/srv/app/config\"\n\
                decision = \"hold\"\n";
    let set = load_str("a.toml", text).unwrap();
    let compiled = compile(&set, Timestamp::UNIX_EPOCH);
    let m = AgentMaps::new(compiled.agent("a").unwrap());
    assert_eq!(decide(&m, Op::Rename, "/srv"), Decision::Deny);
    assert_eq!(m.decide(Op::Rename, b"/srv").rule_id, 0);
}

#[test]
fn allow_rules_and_plain_op_lists_add_no_ancestor_guards() {
    let set = load(
        "[[rule]]\nname = \"work\"\nop = \"modify\"\npath = \"/srv/work/\"\ndecision = \"allow\"\n\n\
         [[rule]]\nname = \"listed\"\nop = [\"write\", \"rename\"]\npath = \"/opt/app/config\"\n\
         decision = \"deny\"\n",
    );
    let compiled = compile(&set, Timestamp::UNIX_EPOCH);
    let patterns: Vec<&str> = compiled
        .agent("a")
        .unwrap()
        .entries
        .iter()
        .map(|e| e.pattern.as_str())
        .collect();
    assert!(
        patterns
            .iter()
            .all(|p| ["/srv/work/", "/opt/app/config"].contains(p)),
        "{patterns:?}"
    );
}

/// Runs `jitctl args...`: exit status, stdout, stderr.
fn jitctl(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitctl"))
        .args(args)
        .output()
        .expect("run jitctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_policy_tools_know_the_guards_a_group_adds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        format!(
            "{HEAD}[[rule]]\nname = \"config\"\nop = \"modify\"\npath = \"/srv/app/config\"\n\
             decision = \"deny\"\n"
        ),
    )
    .unwrap();
    let policies = dir.path().to_str().unwrap();
    let (code, stdout, stderr) = jitctl(&[
        "policy",
        "explain",
        "--offline",
        "--policies",
        policies,
        "--agent",
        "a",
        "--op",
        "rename",
        "--json",
        "/srv",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let e: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(e["decision"], "deny", "{e:#}");
    let by = &e["decided_by"];
    assert_eq!(
        (&by["kind"], &by["name"], &by["pattern"]),
        (
            &serde_json::json!("rule"),
            &serde_json::json!("config"),
            &serde_json::json!("/srv")
        ),
        "{e:#}"
    );
    // `check --strict`: the group leaves no op open and no directory above renameable.
    let (code, _, stderr) = jitctl(&["policy", "check", "--offline", "--strict", policies]);
    assert!(!stderr.contains("rule \"config\""), "{stderr}");
    assert_eq!(code, 0, "{stderr}");
}
