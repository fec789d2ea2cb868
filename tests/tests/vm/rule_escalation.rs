//! A rule's own escalation through the real daemon: a `critical` rule with its own approvers
//! and quorum. The agent's approver is refused for that rule (and only for it), two of the
//! rule's approvers release the hold, and the review card, the pending JSON and the audit
//! record of the hold show the risk and who may decide.
use std::{
    fs,
    path::Path,
    process::Output,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use jit_agent::approval::PendingView;
use jit_tests::{
    CGROUP2_ROOT, ExistingCgroup, TestDir,
    daemon::{DaemonFiles, describe, eventually, jitctl, jitctl_as},
    process_state, require_vm,
};

const CGROUP: &str = "jit-test-rule-esc/agent";
/// The guest's reviewer account (see xtask's initramfs): uid 1000, in group `sre` (1001).
const REVIEWER: (u32, u32) = (1000, 1001);
/// `nobody`, with `sre` as its group so that it may connect to the socket: refused or allowed
/// by the daemon as a user, never by that group (no approver list here names `sre`).
const NOBODY: (u32, u32) = (65534, 1001);

type Exec = JoinHandle<std::io::Result<std::process::ExitStatus>>;

fn pending(files: &DaemonFiles) -> Vec<PendingView> {
    let out = jitctl(files, &["pending", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("pending JSON")
}

fn wait_held(files: &DaemonFiles, path: &str) -> PendingView {
    let mut view = None;
    assert!(
        eventually(Duration::from_mins(1), || {
            view = pending(files).into_iter().find(|v| v.path == path);
            view.is_some()
        }),
        "{path} was not held"
    );
    view.unwrap()
}

fn join(exec: Exec) -> std::io::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_mins(1);
    while !exec.is_finished() {
        assert!(Instant::now() < deadline, "the exec did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    exec.join().expect("exec thread")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_rules_own_approvers_and_quorum_decide_its_holds() {
    require_vm();
    let work = TestDir::new("rule-esc");
    let critical = work.install_true("critical");
    let ordinary = work.install_true("ordinary");
    let mut files = DaemonFiles::new("rule-esc");
    files
        .cgroups
        .extend([CGROUP.to_owned(), "jit-test-rule-esc".to_owned()]);
    // Members of `sre` may connect: the daemon, not the socket's mode, must refuse `nobody`.
    files.set_socket_access("sre", "0660");
    files.write_policy(
        "rule-esc.toml",
        &format!(
            r#"[agent]
name = "rule-esc"
cgroups = ["{CGROUP}"]
default = "allow"

[escalation]
approvers = {{ users = ["nobody"] }}
timeout = "1h"

[escalation.critical]
timeout = "2h"

[[rule]]
name = "two-person tool"
op = "exec"
path = "{critical}"
decision = "hold"
risk = "critical"
approvers = {{ users = ["root", "reviewer"] }}
required_approvals = 2

[[rule]]
name = "ordinary tool"
op = "exec"
path = "{ordinary}"
decision = "hold"
"#
        ),
    );
    let daemon = files.start();
    let agent = ExistingCgroup(Path::new(CGROUP2_ROOT).join(CGROUP));

    let exec = agent.spawn(&critical);
    let view = wait_held(&files, &critical);
    assert_eq!(view.rule.as_deref(), Some("two-person tool"));
    assert_eq!(view.risk.as_deref(), Some("critical"));
    assert_eq!(view.approvers, ["root", "reviewer"]);
    assert_eq!(view.required_approvals, 2);
    assert!(
        view.timeout_in_secs > 3600,
        "the critical level's timeout: {view:?}"
    );
    let card = text(&jitctl(&files, &["pending"]));
    assert!(
        card.contains("[rule: two-person tool] [risk: critical]")
            && card.contains("decided by: root, reviewer (2 approvals needed)"),
        "{card}"
    );
    let id = view.id.to_string();

    // The agent's approver is not one of this rule's.
    let out = jitctl_as(&files, NOBODY.0, NOBODY.1, &["approve", &id]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out).contains("not among its approvers"),
        "{}",
        describe(&out)
    );
    assert_eq!(process_state(view.pid), 'T', "still held");

    // The rule's quorum: one approval is recorded, the second releases the exec.
    let out = jitctl(&files, &["approve", &id]);
    assert!(
        text(&out).contains("approval recorded"),
        "{}",
        describe(&out)
    );
    assert_eq!(process_state(view.pid), 'T', "still held after one of two");
    let out = jitctl_as(&files, REVIEWER.0, REVIEWER.1, &["approve", &id]);
    assert!(text(&out).contains("approved"), "{}", describe(&out));
    jit_tests::assert_ran(&join(exec), "approved by the rule's quorum");

    // The other rule keeps the agent's approvers: nobody decides it alone, the reviewer not.
    let exec = agent.spawn(&ordinary);
    let view = wait_held(&files, &ordinary);
    assert_eq!((view.risk.as_deref(), view.required_approvals), (None, 1));
    assert_eq!(view.approvers, ["nobody"]);
    let id = view.id.to_string();
    let out = jitctl_as(&files, REVIEWER.0, REVIEWER.1, &["deny", &id]);
    assert!(
        text(&out).contains("not among its approvers"),
        "{}",
        describe(&out)
    );
    let out = jitctl_as(&files, NOBODY.0, NOBODY.1, &["deny", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    jit_tests::assert_eperm(&join(exec), "denied by the agent's approver");

    // The audit record of the hold says the risk and who could decide.
    let log = fs::read_to_string(&files.audit).unwrap();
    assert!(
        log.lines().any(|l| l.contains("\"kind\":\"hold\"")
            && l.contains("\"risk\":\"critical\"")
            && l.contains("\"approvers\":[\"root\",\"reviewer\"]")
            && l.contains("\"required_approvals\":2")),
        "no hold record with the risk and approvers:\n{log}"
    );
    drop(daemon);
}
