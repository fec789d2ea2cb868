//! A restarted daemon whose policy directory no longer loads keeps serving reviews for pending
//! holds from the last good policy it kept (docs/ARCHITECTURE.md, I6): the agent keeps its
//! name, its approvers and its quorum; `jitctl status` says the directory is invalid and which
//! copy is served; the kernel keeps enforcing what was installed. Also: a second answer to an
//! answered hold is refused as "already decided", not as a failure.
use std::{path::Path, time::Duration};

use jit_agent::approval::PendingView;
use jit_tests::{
    CGROUP2_ROOT, ExistingCgroup, TestDir,
    daemon::{DaemonFiles, describe, eventually, jitctl, jitctl_as},
    process_state, require_vm,
};

const CGROUP: &str = "jit-test-lastgood/agent";
/// The guest's reviewer account (see xtask's initramfs): uid 1000, in group `sre` (1001).
const REVIEWER: (u32, u32) = (1000, 1001);

fn policy(held: &str) -> String {
    format!(
        r#"[agent]
name = "lastgood-agent"
cgroups = ["{CGROUP}"]
default = "allow"

[escalation]
approvers = {{ users = ["reviewer"] }}
timeout = "1h"

[[rule]]
name = "held tool"
op = "exec"
path = "{held}"
decision = "hold"
"#
    )
}

fn pending(files: &DaemonFiles) -> Vec<PendingView> {
    let out = jitctl(files, &["pending", "--json"]);
    assert!(out.status.success(), "jitctl pending: {}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("pending JSON")
}

fn wait_held(files: &DaemonFiles, path: &str) -> PendingView {
    let mut found = None;
    let held = eventually(Duration::from_mins(1), || {
        found = pending(files).into_iter().find(|v| v.path == path);
        found.is_some()
    });
    assert!(held, "no hold of {path} listed");
    found.expect("found")
}

/// The held exec's result, once its process is released.
fn join(
    exec: std::thread::JoinHandle<std::io::Result<std::process::ExitStatus>>,
) -> std::io::Result<std::process::ExitStatus> {
    let found = eventually(Duration::from_mins(1), || exec.is_finished());
    assert!(found, "the exec did not finish within 60 s");
    exec.join().expect("exec thread")
}

#[test]
fn a_restart_with_a_broken_policy_directory_serves_the_last_good_policy() {
    require_vm();
    let work = TestDir::new("lastgood");
    let held = work.install_true("held");
    let mut files = DaemonFiles::new("lastgood");
    files
        .cgroups
        .extend([CGROUP.to_owned(), "jit-test-lastgood".to_owned()]);
    files.set_socket_access("sre", "0660");
    files.write_policy("lastgood.toml", &policy(&held));
    let mut daemon = files.start();
    let agent = ExistingCgroup(Path::new(CGROUP2_ROOT).join(CGROUP));

    let exec = agent.spawn(&held);
    let view = wait_held(&files, &held);
    assert_eq!(view.agent, "lastgood-agent");
    daemon.kill();

    // The directory breaks while no daemon runs (line 4: an unknown decision).
    files.write_policy(
        "lastgood.toml",
        &policy(&held).replace("default = \"allow\"", "default = \"alow\""),
    );
    let daemon = files.start();
    let status = daemon.status();
    let error = status.policy_error.clone().unwrap_or_default();
    assert!(
        error.contains("lastgood.toml:4:"),
        "the directory's error with its position: {status:?}\n{}",
        daemon.log()
    );
    let served = status.policy_served.clone().unwrap_or_default();
    assert!(
        served.contains("last good policy") && served.contains("last-good-policy"),
        "status names the copy served: {status:?}"
    );
    let human = jitctl(&files, &["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("policy served to reviewers: the last good policy")
            && text.contains("REJECTED")
            && text.contains("lastgood.toml:4:"),
        "{}",
        describe(&human)
    );
    assert!(
        daemon.log().contains("lastgood.toml:4:"),
        "the error is logged:\n{}",
        daemon.log()
    );
    assert_eq!(
        status
            .agents
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["lastgood-agent"],
        "the agent by name: {status:?}"
    );

    // The hold is re-adopted under its agent's name, with its approvers: root is not one.
    let view = wait_held(&files, &held);
    assert_eq!(view.agent, "lastgood-agent", "{view:?}");
    assert_eq!(process_state(view.pid), 'T', "still held");
    let id = view.id.to_string();
    let out = jitctl(&files, &["approve", &id]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("not among its approvers"),
        "root is no approver of this agent: {}",
        describe(&out)
    );
    let out = jitctl_as(&files, REVIEWER.0, REVIEWER.1, &["approve", &id]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("approved"),
        "the reviewer approves from the last good policy: {}",
        describe(&out)
    );
    jit_tests::assert_ran(&join(exec), "approved after the restart");

    // A second answer to the same request: refused as already decided.
    let out = jitctl_as(&files, REVIEWER.0, REVIEWER.1, &["deny", &id]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already decided"),
        "{}",
        describe(&out)
    );

    // The kernel still enforces the installed policy: the next exec is held again.
    let exec = agent.spawn(&held);
    let view = wait_held(&files, &held);
    let out = jitctl_as(
        &files,
        REVIEWER.0,
        REVIEWER.1,
        &["deny", &view.id.to_string()],
    );
    assert!(out.status.success(), "{}", describe(&out));
    jit_tests::assert_eperm(&join(exec), "denied after the restart");
    drop(daemon);
}
