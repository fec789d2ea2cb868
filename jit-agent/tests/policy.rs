//! Host tests of the policy module: the repository's example policies, good and bad fixtures
//! (every error asserted as its exact `file:line:col: message` text), compilation into map
//! entries, and a property test of compile + kernel matching against a reference matcher.
use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use jiff::Timestamp;
use jit_agent::policy::{
    Account, Compiled, Grant, OnTimeout, PolicySet, compile, load_dir, load_str,
};
use jit_common::policy::{
    AgentConfig, Decision, Mode, Op, PolicyKey, PolicyValue, RuleShape, evaluate,
};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    manifest_dir().join("tests/fixtures/policy")
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The errors of loading `dir`, with the fixture directory prefix removed.
fn dir_errors(dir: &Path) -> Vec<String> {
    let err = load_dir(dir).expect_err("the directory has errors");
    let prefix = format!("{}/", fixtures().display());
    err.to_string()
        .lines()
        .map(|l| l.replace(&prefix, ""))
        .collect()
}

#[test]
fn the_repository_policies_load() {
    let set = load_dir(&manifest_dir().join("../policies")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = set.agents().iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "coding-agent",
            "demo-agent",
            "deploy-bot",
            "ops-agent",
            "readonly-auditor"
        ]
    );
    // Weekend releases of the deploy bot wait for a reviewer: on a Saturday the hold rule is
    // active and, having the same key as the allow rule, wins the merge.
    let deploy = |at| {
        let compiled = compile(&set, ts(at));
        let agent = compiled.agent("deploy-bot").unwrap().clone();
        let entry = agent
            .entries
            .iter()
            .find(|e| e.op == Op::Create && e.pattern == "/srv/app/current")
            .unwrap()
            .clone();
        Decision::from_u8(entry.value.decision).unwrap()
    };
    assert_eq!(deploy("2025-06-04T10:00Z"), Decision::Allow);
    assert_eq!(deploy("2025-06-07T10:00Z"), Decision::Hold);

    // The coding agent decides as its comments say. Wednesday 10:00 in Berlin.
    let compiled = compile(&set, ts("2025-06-04T08:00Z"));
    let coding = compiled.agent("coding-agent").unwrap();
    let keys = coding.keys(1);
    let decide = |op, path: &str| {
        let lookup = PolicyKey::for_lookup(1, op, path.as_bytes());
        evaluate(|k| lpm(&keys, k), &lookup, &coding.config, &mut scratch()).decision
    };
    assert_eq!(decide(Op::Exec, "/usr/bin/git"), Decision::Allow);
    assert_eq!(decide(Op::Exec, "/usr/bin/curl"), Decision::Hold);
    assert_eq!(
        decide(Op::Exec, "/usr/bin/nc"),
        Decision::Hold,
        "the default"
    );
    assert_eq!(
        decide(Op::Write, "/srv/work/jit/src/main.rs"),
        Decision::Allow
    );
    assert_eq!(
        decide(Op::Write, "/srv/work/jit/.git/hooks/pre-commit"),
        Decision::Hold
    );
    assert_eq!(
        decide(Op::Write, "/home/alice/.ssh/authorized_keys"),
        Decision::Deny
    );
    assert_eq!(decide(Op::Unlink, "/etc/passwd"), Decision::Deny);
    // Files mapped executable are decided as exec: the loader, the libraries and Python's
    // extension modules are allowed, what a build produced runs reported, anything else waits.
    for lib in [
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
        "/usr/lib/gcc/x86_64-linux-gnu/12/liblto_plugin.so",
    ] {
        assert_eq!(decide(Op::Exec, lib), Decision::Allow, "{lib}");
    }
    assert_eq!(
        decide(
            Op::Exec,
            "/srv/work/jit/target/debug/deps/libserde_derive-1.so"
        ),
        Decision::Audit
    );
    assert_eq!(
        decide(Op::Exec, "/srv/work/jit/evil.so"),
        Decision::Hold,
        "the default"
    );
    assert_eq!(decide(Op::Write, "/dev/null"), Decision::Allow);
    // Saturday: git is still allowed, but reported.
    let weekend = compile(&set, ts("2025-06-07T10:00Z"));
    let git = weekend
        .agent("coding-agent")
        .unwrap()
        .entries
        .iter()
        .find(|e| e.op == Op::Exec && e.pattern == "/usr/bin/git")
        .unwrap()
        .value;
    assert_eq!(Decision::from_u8(git.decision), Some(Decision::Audit));
}

fn good() -> PolicySet {
    load_dir(&fixtures().join("good")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn good_fixtures_give_typed_policies_with_defaults() {
    let set = good();
    // `notes.txt` and `.editor-backup.toml` are not policies.
    assert_eq!(set.agents().len(), 2);
    let builder = set.agent("builder").unwrap();
    assert!(builder.file.ends_with("good/10-builder.toml"));
    assert_eq!(builder.at.line, 2);
    assert_eq!(builder.cgroups, ["jit/builder", "jit/builder-ci"]);
    assert_eq!(builder.mode, Mode::Enforce);
    assert_eq!(builder.default, Decision::Hold);
    let esc = &builder.escalation;
    assert_eq!(
        esc.approvers.users,
        [Account {
            name: "root".into(),
            id: 0
        }]
    );
    assert!(esc.approvers.groups.is_empty());
    assert_eq!(esc.timeout, Duration::from_mins(90));
    assert_eq!(esc.on_timeout, OnTimeout::Kill);
    assert_eq!(esc.grant, Grant::For(Duration::from_mins(15)));
    assert_eq!(esc.required_approvals, 1);
    assert!(esc.self_approval);
    assert_eq!(esc.max_grant, Some(Duration::from_hours(2)));
    // Rule overrides, and the agent's settings for everything else (0 = the default).
    let installs = builder
        .rules
        .iter()
        .find(|r| r.name == "installs wait")
        .unwrap();
    assert_eq!(
        builder.hold_timeout(installs.id),
        (Duration::from_secs(30), OnTimeout::Allow)
    );
    assert_eq!(
        builder.hold_timeout(0),
        (Duration::from_mins(90), OnTimeout::Kill)
    );

    let watcher = set.agent("watcher").unwrap();
    assert_eq!(watcher.cgroups, ["jit/watcher"]);
    assert_eq!(watcher.mode, Mode::Shadow);
    assert_eq!(watcher.default, Decision::Deny, "the documented default");
    let esc = &watcher.escalation;
    assert!(esc.approvers.is_empty());
    assert_eq!(esc.timeout, Duration::from_mins(5));
    assert_eq!(esc.on_timeout, OnTimeout::Deny);
    assert_eq!(esc.grant, Grant::Once);
    assert_eq!(esc.required_approvals, 1);
    assert!(!esc.self_approval, "separation of duties by default");
    assert_eq!(esc.max_grant, None);
}

#[test]
fn rule_ids_are_sequential_in_file_then_rule_order() {
    let set = good();
    let ids: Vec<(u32, &str)> = set
        .agents()
        .iter()
        .flat_map(|a| &a.rules)
        .map(|r| (r.id, r.name.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            (1, "toolchain"),
            (2, "make is reported"),
            (3, "ssh keys"),
            (4, "installs wait"),
            (5, "night builds are reported"),
            (6, "anything under /var"),
            (7, "logs, on weekdays"),
        ]
    );
    let (agent, rule) = set.rule(6).unwrap();
    assert_eq!(
        (agent.name.as_str(), rule.name.as_str()),
        ("watcher", "anything under /var")
    );
    assert!(set.rule(0).is_none());
    let compiled = compile(&set, ts("2025-06-02T12:00Z"));
    let info = &compiled.rules[&7];
    assert_eq!(
        (info.agent.as_str(), info.rule.as_str(), info.line),
        ("watcher", "logs, on weekdays", 13)
    );
    assert!(info.file.ends_with("good/20-watcher.toml"));
    assert_eq!(
        compiled.rules.len(),
        7,
        "inactive rules are in the table too"
    );
}

fn entries(compiled: &Compiled, agent: &str) -> Vec<(Op, String, Decision, u32)> {
    compiled
        .agent(agent)
        .unwrap()
        .entries
        .iter()
        .map(|e| {
            (
                e.op,
                e.pattern.clone(),
                Decision::from_u8(e.value.decision).unwrap(),
                e.value.rule_id,
            )
        })
        .collect()
}

#[test]
fn compile_expands_merges_and_sets_the_wildcard_mask() {
    let set = good();
    // Monday 14:00 in Berlin: the night rule is inactive, the weekday rule active.
    let day = compile(&set, ts("2025-06-02T12:00Z"));
    let builder = day.agent("builder").unwrap();
    assert_eq!(
        builder.config,
        // `/home/*/.ssh/`: `*` is component 1.
        AgentConfig::new(Decision::Hold, Mode::Enforce, 1 << 1)
    );
    let s = |p: &str| p.to_owned();
    assert_eq!(
        entries(&day, "builder"),
        [
            (Op::Exec, s("/usr/bin/cc"), Decision::Allow, 1),
            // Rules 1 and 2 both compile to (exec, /usr/bin/make): the audit wins the merge.
            (Op::Exec, s("/usr/bin/make"), Decision::Audit, 2),
            (Op::Write, s("/home/*/.ssh/"), Decision::Deny, 3),
            (Op::Write, s("/usr/local/"), Decision::Hold, 4),
            (Op::Create, s("/usr/local/"), Decision::Hold, 4),
            (Op::Unlink, s("/home/*/.ssh/"), Decision::Deny, 3),
        ]
    );
    let make = &builder.entries[1].value;
    let shape = RuleShape::parse(b"/usr/bin/make").unwrap();
    assert_eq!(*make, shape.value(Decision::Audit, 2));
    assert_eq!(
        day.agent("watcher").unwrap().config,
        // `/var/log/*/`: `*` is component 2.
        AgentConfig::new(Decision::Deny, Mode::Shadow, 1 << 2)
    );

    // Saturday 23:30 in Berlin: the night rule is active, the weekday rule is not.
    let night = compile(&set, ts("2025-06-07T21:30Z"));
    assert!(entries(&night, "builder").contains(&(Op::Exec, s("/usr/bin/"), Decision::Audit, 5)));
    assert_eq!(
        entries(&night, "watcher"),
        [
            (Op::Write, s("/var/"), Decision::Allow, 6),
            (Op::Create, s("/var/"), Decision::Allow, 6),
        ]
    );
    assert_eq!(
        night.agent("watcher").unwrap().config.wildcard_components,
        0
    );
}

#[test]
fn compile_is_deterministic_and_says_when_to_compile_again() {
    let at = ts("2025-06-02T12:00Z");
    let (a, b) = (compile(&good(), at), compile(&good(), at));
    assert_eq!(a, b);
    // Next change: the weekday window (UTC) closes at 18:00Z, before the night window
    // (Berlin, 22:00 CEST = 20:00Z) opens.
    assert_eq!(a.valid_until, Some(ts("2025-06-02T18:00Z")));
    assert_eq!(
        good().next_transition(ts("2025-06-02T18:00Z")),
        Some(ts("2025-06-02T20:00Z"))
    );
    let no_windows = load_str(
        "static.toml",
        "[agent]\nname = \"s\"\ncgroups = \"jit/s\"\n",
    )
    .unwrap();
    assert_eq!(compile(&no_windows, at).valid_until, None);
}

fn scratch() -> PolicyKey {
    PolicyKey::EMPTY
}

/// The LPM trie: the stored key with the longest prefix that is a prefix of `key`.
fn lpm(map: &[(PolicyKey, PolicyValue)], key: &PolicyKey) -> Option<PolicyValue> {
    map.iter()
        .filter(|(k, _)| {
            let n = k.significant_len();
            n <= key.significant_len() && k.data[..n] == key.data[..n]
        })
        .max_by_key(|(k, _)| k.prefixlen)
        .map(|(_, v)| *v)
}

#[test]
fn keys_carry_the_ruleset_id_and_drive_the_kernel_matcher() {
    let compiled = compile(&good(), ts("2025-06-02T12:00Z"));
    let builder = compiled.agent("builder").unwrap();
    let keys = builder.keys(42);
    assert_eq!(keys.len(), builder.entries.len());
    for ((key, value), entry) in keys.iter().zip(&builder.entries) {
        let (expected, _) = PolicyKey::for_rule(42, entry.op, entry.pattern.as_bytes()).unwrap();
        assert_eq!(*key, expected);
        assert_eq!(*value, entry.value);
    }
    let decide = |op, path: &str| {
        let lookup = PolicyKey::for_lookup(42, op, path.as_bytes());
        let v = evaluate(|k| lpm(&keys, k), &lookup, &builder.config, &mut scratch());
        (v.decision, v.rule_id)
    };
    assert_eq!(decide(Op::Exec, "/usr/bin/make"), (Decision::Audit, 2));
    assert_eq!(decide(Op::Exec, "/usr/bin/cc"), (Decision::Allow, 1));
    assert_eq!(decide(Op::Exec, "/usr/bin/python3"), (Decision::Hold, 0));
    assert_eq!(
        decide(Op::Write, "/home/alice/.ssh/id_ed25519"),
        (Decision::Deny, 3)
    );
    assert_eq!(
        decide(Op::Create, "/usr/local/bin/tool"),
        (Decision::Hold, 4)
    );
    // Another ruleset id matches nothing of this one.
    let other = PolicyKey::for_lookup(43, Op::Exec, b"/usr/bin/cc");
    assert_eq!(lpm(&keys, &other), None);
}

/// Bad fixtures: file name and every error it must produce, in order.
const BAD: &[(&str, &[&str])] = &[
    (
        "approvers.toml",
        &[
            "7:32: unknown user `jit-no-such-user`",
            "7:52: approver user `root` is listed twice",
            "7:71: unknown group `jit-no-such-group`",
            "8:11: `timeout` must be longer than 0s",
        ],
    ),
    (
        "hint.toml",
        &[
            "11:8: `hint` is empty: leave it out or say what to do instead",
            "18:8: `hint` is 201 bytes long; at most 200 (one line for the agent)",
            "25:8: `hint` contains the control character '\\n'; it must be one line of plain \
             text",
            "32:8: `hint` contains the control character '\\u{1b}'; it must be one line of \
             plain text",
        ],
    ),
    (
        "max-grant-value.toml",
        &[
            "8:13: `max_grant` = \"a while\" is not a duration like \"30s\", \"5m\" or \"1h30m\" \
             (expected number at 0)",
        ],
    ),
    (
        "max-grant.toml",
        &["8:9: `grant` is 3h, longer than `max_grant` (1h)"],
    ),
    (
        "missing.toml",
        &[
            "1:1: missing `[agent]` section",
            "4:1: missing field `decision`",
            "9:1: missing field `name`",
        ],
    ),
    (
        "names.toml",
        &[
            "2:8: bad agent name `-bad name`: use 1 to 64 letters, digits, `-`, `_` or `.`, not \
             starting with `-` or `.`",
            "3:12: bad cgroup `/`: the root cgroup holds every process on the host; name a \
             cgroup below it, like `jit/my-agent`",
            "3:17: bad cgroup `jit/../etc`: `.` and `..` components are not allowed",
            "3:31: bad cgroup `/sys/fs/cgroup/jit/x`: cgroup paths are relative to the cgroup2 \
             mount: write `jit/x`",
            "3:55: bad cgroup `jit//x`: empty component (`//`)",
            "3:75: cgroup `jit/ok` is listed twice",
            "12:8: duplicate rule name `same` (first used at 6:8)",
            "18:8: rule name is empty",
        ],
    ),
    (
        "no-approvers.toml",
        &[
            "15:12: this agent can hold actions, but `[escalation] approvers` lists nobody who \
           could release them",
        ],
    ),
    (
        "paths.toml",
        &[
            "8:9: bad path `srv/work/`: pattern must be an absolute path (start with `/`)",
            "8:22: bad path `/srv/../etc/`: pattern has a `.` or `..` component; rules match \
             resolved paths, which have none",
            "8:38: bad path `/srv//work`: pattern has an empty component (`//`)",
            "8:52: bad path `/var/log/*.log`: partial-component wildcards are not supported: \
             `*` must be a whole component, as in `/home/*/.ssh/`",
            "8:70: bad path `/a/**/b`: `**` is not supported: `*` matches exactly one \
             component; a pattern ending in `/` matches everything below a directory",
            "8:81: bad path `/home/*/x/*/`: at most one `*` component per pattern is supported",
            "13:6: `op` is empty: the rule would match nothing",
            "14:8: `path` is empty: the rule would match nothing",
            "19:6: invalid type: integer `3`, expected a string or a list of strings",
        ],
    ),
    (
        "required-approvals.toml",
        &[
            "8:22: `required_approvals` is 2, but only 1 approver user(s) and no group are \
           listed: no hold could ever be approved",
        ],
    ),
    (
        "self-approval.toml",
        &[
            "4:11: this agent can hold actions, but `[escalation] approvers` lists nobody who \
             could release them",
            "8:17: invalid type: string \"no\", expected a boolean",
        ],
    ),
    (
        "syntax.toml",
        &["5:1: missing comma between array elements, expected `,`"],
    ),
    (
        "unknown-fields.toml",
        &[
            "4:1: unknown field `defualt`, expected one of `name`, `cgroups`, `mode`, `default`",
            "9:1: unknown field `paths`, expected one of `name`, `op`, `path`, `decision`, \
             `when`, `timeout`, `on_timeout`, `hint`, `risk`, `approvers`, `required_approvals`, \
             `args`, `cwd`, `caller`, `ancestor`, `env`, `target`, `sha256`, `user`, `group`, `written_by`",
            "14:6: unknown op `exce`: expected one of exec, write, create, unlink, rename, \
             truncate, mkdir, rmdir, link, symlink, chmod, chown, device, metadata, or a \
             group: modify, any",
            "18:2: unknown section `limits`: expected `agent`, `escalation` or `rule`",
        ],
    ),
    (
        "values.toml",
        &[
            "4:8: unknown mode `enforcing`: expected one of enforce, shadow",
            "5:11: unknown decision `block`: expected one of allow, audit, hold, deny",
            "9:11: `timeout` = \"5 minutess\" is not a duration like \"30s\", \"5m\" or \
             \"1h30m\" (unknown time unit \"minutess\", supported units: ns, us/µs, ms, sec, \
             min, hours, days, weeks, months, years (and few variations))",
            "10:14: unknown on_timeout `ignore`: expected one of deny, allow, kill",
            "11:9: `grant` = \"forever\" is not \"once\" or a duration like \"30s\", \"5m\" or \
             \"1h30m\" (expected number at 0)",
            "12:22: `required_approvals` must be at least 1, not 0",
            "16:15: unknown op `read`: expected one of exec, write, create, unlink, rename, \
             truncate, mkdir, rmdir, link, symlink, chmod, chown, device, metadata, or a \
             group: modify, any",
            "16:32: unknown op `delete`: expected one of exec, write, create, unlink, rename, \
             truncate, mkdir, rmdir, link, symlink, chmod, chown, device, metadata, or a \
             group: modify, any",
            "18:12: unknown decision `permit`: expected one of allow, audit, hold, deny",
        ],
    ),
    (
        "when.toml",
        &[
            "12:8: `when` needs exactly one of `inside` and `outside`, like { outside = \
             \"Mon-Fri 08:00-18:00\", tz = \"UTC\" }",
            "19:19: bad time window `Mon-Fri 8-18`: bad time `8`: expected HH:MM from 00:00 to \
             23:59, or 24:00 as an end",
            "26:48: unknown time zone `Mars/Olympus_Mons`: use an IANA name like \
             \"Europe/Berlin\" or \"UTC\"",
            "33:8: `when` needs exactly one of `inside` and `outside`, like { outside = \
             \"Mon-Fri 08:00-18:00\", tz = \"UTC\" }",
            "41:11: `timeout` only applies to rules with decision = \"hold\"; this rule's \
             decision is \"allow\"",
            "42:14: `on_timeout` only applies to rules with decision = \"hold\"; this rule's \
             decision is \"allow\"",
        ],
    ),
];

#[test]
fn bad_fixtures_report_every_error_with_its_position() {
    let dir = fixtures().join("bad");
    let mut on_disk: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let listed: Vec<&str> = BAD.iter().map(|(f, _)| *f).collect();
    assert_eq!(on_disk, listed, "every bad fixture has expectations");
    for (file, expected) in BAD {
        let text = fs::read_to_string(dir.join(file)).unwrap();
        let name = format!("bad/{file}");
        let err = load_str(&name, &text).expect_err(file);
        let expected: Vec<String> = expected.iter().map(|e| format!("{name}:{e}")).collect();
        // Display is one error per line.
        assert_eq!(err.to_string(), expected.join("\n"), "{file}");
        assert_eq!(err.errors().len(), expected.len());
    }
}

#[test]
fn errors_of_a_directory_are_collected_across_files_and_sorted() {
    assert_eq!(
        dir_errors(&fixtures().join("conflicts")),
        [
            "conflicts/b.toml:2:8: agent `alpha` is already defined in conflicts/a.toml",
            "conflicts/b.toml:3:24: cgroup `jit/shared` is already claimed by agent `alpha` in \
             conflicts/a.toml",
            "conflicts/b.toml:3:38: cgroup `jit/alpha/sub` is inside cgroup `jit/alpha` of \
             agent `alpha` (conflicts/a.toml); a cgroup can belong to one agent only",
            "conflicts/c.toml:3:12: cgroup `jit` contains cgroup `jit/alpha` of agent `alpha` \
             (conflicts/a.toml); a cgroup can belong to one agent only",
            "conflicts/c.toml:9:12: unknown decision `alow`: expected one of allow, audit, \
             hold, deny",
            "conflicts/d.toml:1:7: unclosed table, expected `]`",
        ]
    );
}

#[test]
fn unusable_directories_and_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let err = load_dir(dir).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: no policy files (*.toml) in this directory",
            dir.display()
        )
    );
    let missing = dir.join("missing");
    assert_eq!(
        load_dir(&missing).unwrap_err().to_string(),
        format!(
            "{}: cannot read policy directory: No such file or directory (os error 2)",
            missing.display()
        )
    );
    fs::create_dir(dir.join("sub.toml")).unwrap();
    fs::write(dir.join("latin1.toml"), b"[agent]\nname = \"caf\xe9\"\n").unwrap();
    assert_eq!(
        load_dir(dir).unwrap_err().to_string(),
        format!(
            "{0}/latin1.toml: not valid UTF-8\n{0}/sub.toml: not a regular file",
            dir.display()
        )
    );
}

/// A reference for what the kernel decides, straight from the rules: the matching pattern
/// with the longest literal prefix, then the longest pattern, then the most severe decision,
/// then the lowest rule id; the default when nothing matches.
mod reference {
    use std::cmp::Reverse;

    use jit_common::policy::{Decision, RuleShape};

    pub struct Rule {
        pub id: u32,
        pub ops: Vec<usize>,
        pub paths: Vec<&'static str>,
        pub decision: Decision,
    }

    fn component_matches(pattern: &str, path: &str) -> bool {
        pattern == "*" && !path.is_empty() || pattern == path
    }

    pub fn matches(pattern: &str, path: &str) -> bool {
        if pattern == "/" {
            return true;
        }
        let pattern_parts: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
        let path_parts: Vec<&str> = path.split('/').collect();
        let directory = pattern.ends_with('/');
        let fits = if directory {
            path_parts.len() > pattern_parts.len()
        } else {
            path_parts.len() == pattern_parts.len()
        };
        fits && pattern_parts
            .iter()
            .zip(&path_parts)
            .all(|(a, b)| component_matches(a, b))
    }

    pub fn decide(rules: &[Rule], default: Decision, op: usize, path: &str) -> (Decision, u32) {
        // Larger wins: specificity, severity, then the lower id.
        type Rank = (u16, u16, u8, Reverse<u32>);
        let mut best: Option<(Rank, Decision)> = None;
        for r in rules.iter().filter(|r| r.ops.contains(&op)) {
            for p in r.paths.iter().filter(|p| matches(p, path)) {
                let s = RuleShape::parse(p.as_bytes()).unwrap();
                let rank = (
                    s.literal_len,
                    s.pattern_len,
                    r.decision.severity(),
                    Reverse(r.id),
                );
                if best.is_none_or(|(b, _)| rank > b) {
                    best = Some((rank, r.decision));
                }
            }
        }
        best.map_or((default, 0), |((_, _, _, Reverse(id)), d)| (d, id))
    }
}

mod properties {
    use std::fmt::Write as _;

    use proptest::{prelude::*, sample::subsequence};

    use super::*;

    const PATTERNS: [&str; 12] = [
        "/",
        "/etc/",
        "/etc/passwd",
        "/home/",
        "/home/*/",
        "/home/*/.ssh/",
        "/home/alice/.ssh/",
        "/home/alice/.ssh/id",
        "/usr/bin/",
        "/usr/bin/git",
        "/srv/*/x",
        "/srv/a/",
    ];
    const PROBES: [&str; 13] = [
        "/etc",
        "/etc/passwd",
        "/etc/x/y",
        "/home/alice/.ssh/id",
        "/home/bob/.ssh/id",
        "/home/alice",
        "/home/alice/x",
        "/usr/bin/git",
        "/usr/bin/gitk",
        "/srv/a/x",
        "/srv/b/x",
        "/srv/a/x/y",
        "/tmp/z",
    ];
    const OPS: [Op; 3] = [Op::Exec, Op::Write, Op::Unlink];

    fn rule() -> impl Strategy<Value = (Vec<usize>, Vec<&'static str>, Decision)> {
        (
            subsequence(vec![0usize, 1, 2], 1..=2),
            subsequence(PATTERNS.to_vec(), 1..=3),
            prop::sample::select(Decision::ALL.to_vec()),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Whatever the rules, the compiled entries make the kernel matcher decide exactly as
        /// the reference does on the rules themselves: expansion, merging and the wildcard mask
        /// lose nothing.
        #[test]
        fn compiled_entries_decide_like_the_rules(
            rules in prop::collection::vec(rule(), 1..8),
            default in prop::sample::select(Decision::ALL.to_vec()),
        ) {
            let mut text = format!(
                "[agent]\nname = \"p\"\ncgroups = \"jit/p\"\ndefault = \"{}\"\n\
                 [escalation]\napprovers = {{ users = [\"root\"] }}\n",
                default.name()
            );
            for (i, (ops, paths, decision)) in rules.iter().enumerate() {
                let ops: Vec<String> = ops.iter().map(|&o| format!("\"{}\"", OPS[o].name())).collect();
                let paths: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
                writeln!(
                    text,
                    "[[rule]]\nname = \"r{i}\"\nop = [{}]\npath = [{}]\ndecision = \"{}\"",
                    ops.join(", "),
                    paths.join(", "),
                    decision.name()
                )
                .unwrap();
            }
            let set = load_str("p.toml", &text).unwrap();
            let compiled = compile(&set, ts("2025-06-02T12:00Z"));
            let agent = &compiled.agents[0];
            let keys = agent.keys(7);
            let reference: Vec<reference::Rule> = rules
                .iter()
                .zip(1u32..)
                .map(|((ops, paths, decision), id)| reference::Rule {
                    id,
                    ops: ops.clone(),
                    paths: paths.clone(),
                    decision: *decision,
                })
                .collect();
            for (o, op) in OPS.iter().enumerate() {
                for path in PROBES {
                    let lookup = PolicyKey::for_lookup(7, *op, path.as_bytes());
                    let v = evaluate(|k| lpm(&keys, k), &lookup, &agent.config, &mut scratch());
                    prop_assert_eq!(
                        (v.decision, v.rule_id),
                        reference::decide(&reference, default, o, path),
                        "{} {}", op.name(), path
                    );
                }
            }
        }
    }
}
