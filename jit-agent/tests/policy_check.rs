//! `jitctl policy check --offline --strict`, and errors with carets on a terminal.

mod tooling;

use std::{fs, process::Command};

use serde_json::Value;
use tooling::{jitctl, policy_dir, repo, s, which};

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
    // The demo's database is held for unlink only: everything else the workspace allows.
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "rule \"deleting the customer database needs a reviewer\" holds unlink on \
             `/srv/demo/work/customers.db`, but write, create, rename, truncate, link, symlink, \
             chmod, chown, metadata are allowed there"
        )),
        "{warnings:#?}"
    );
    // The git-hooks rule guards every op that puts a file in place; only the rename of the
    // hooks directory itself, a path in the workspace, is left.
    assert!(
        !warnings
            .iter()
            .any(|w| w.starts_with("rule \"git hooks run code on the next commit\" holds")),
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

#[test]
fn strict_says_identity_rules_restrict_only_who_cannot_leave_them() {
    let dir = policy_dir(&[(
        "a.toml",
        r#"[agent]
name = "a"
cgroups = ["a"]
default = "allow"

[[rule]]
name = "root does not touch /srv"
op = "modify"
path = "/srv/"
user = "root"
decision = "deny"

[[rule]]
name = "deploy writes releases"
op = "write"
path = "/srv/releases/"
user = "deploy"
decision = "allow"

[[rule]]
name = "everyone else is refused /opt"
op = "write"
path = "/opt/"
decision = "deny"

[[rule]]
name = "root may write /opt/app"
op = "write"
path = "/opt/app/"
user = "root"
decision = "allow"
"#,
    )]);
    let (code, _, stderr) = jitctl(&["policy", "check", "--offline", "--strict", &s(&dir)]);
    assert_eq!(code, 2, "{stderr}");
    let f = dir.path().join("a.toml");
    let f = f.display();
    assert!(
        stderr.contains(&format!(
            "{f}:7:8: warning: rule \"root does not touch /srv\" (deny) binds only processes \
             acting as user root"
        )),
        "{stderr}"
    );
    // A grant by identity is what `user` is for: no warning, and rules only some identities
    // have do not compete with the others' rules ("never decides").
    assert!(!stderr.contains("deploy writes releases"), "{stderr}");
    assert!(!stderr.contains("never decides"), "{stderr}");
    assert!(
        stderr.contains("rule \"everyone else is refused /opt\" denies write on `/opt/`"),
        "{stderr}"
    );
}
