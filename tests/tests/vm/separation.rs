//! Separation of duties through the real daemon: a user who started an agent with `jitctl run`
//! may not approve its holds (`self_approval = false`, the default), also after the daemon was
//! killed and restarted (the starters are kept on disk, root only); another approver may, and
//! `max_grant` cuts a longer `--for` to it.
use std::{os::unix::fs::MetadataExt as _, path::PathBuf, time::Duration};

use jit_agent::approval::PendingView;
use jit_tests::{
    TestDir,
    daemon::{DaemonFiles, describe, eventually, jitctl, jitctl_as},
    process_state, require_vm,
};

const CGROUP: &str = "jit-test-sod/agent";
/// The guest's reviewer account (see xtask's initramfs): uid 1000, in group `sre` (1001).
const REVIEWER: (u32, u32) = (1000, 1001);

fn held(files: &DaemonFiles, path: &str) -> Option<PendingView> {
    let out = jitctl(files, &["pending", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let views: Vec<PendingView> = serde_json::from_slice(&out.stdout).expect("pending JSON");
    views.into_iter().find(|v| v.path == path)
}

fn wait_held(files: &DaemonFiles, path: &str) -> PendingView {
    let mut view = None;
    assert!(
        eventually(Duration::from_mins(1), || {
            view = held(files, path);
            view.is_some()
        }),
        "no hold of {path}"
    );
    view.expect("held")
}

#[test]
fn a_starter_cannot_approve_its_agent_even_after_a_restart() {
    require_vm();
    let work = TestDir::new("sod");
    let tool = work.install_true("tool");
    let mut files = DaemonFiles::new("sod");
    files
        .cgroups
        .extend([CGROUP.to_owned(), "jit-test-sod".to_owned()]);
    files.set_socket_access("sre", "0660");
    files.write_policy(
        "sod-agent.toml",
        &format!(
            r#"[agent]
name = "sod-agent"
cgroups = ["{CGROUP}"]
default = "allow"

[escalation]
approvers = {{ users = ["root", "reviewer"] }}
max_grant = "1m"

[[rule]]
name = "held tool"
op = "exec"
path = "{tool}"
decision = "hold"
"#
        ),
    );
    let mut daemon = files.start();
    std::thread::scope(|scope| {
        // Root starts the agent; its exec of the tool is held.
        let run = scope.spawn(|| jitctl(&files, &["run", "--agent", "sod-agent", "--", &tool]));
        let view = wait_held(&files, &tool);
        let starters = PathBuf::from(format!("{}.starters", files.audit.display()));
        let meta = std::fs::metadata(&starters).expect("the starters file exists");
        assert_eq!(meta.mode() & 0o777, 0o600, "root only");

        let refused = |what: &str| {
            let out = jitctl(&files, &["approve", &view.id.to_string()]);
            assert!(!out.status.success(), "{what}: {}", describe(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("may not approve its holds"),
                "{what}: {}",
                describe(&out)
            );
            assert_eq!(process_state(view.pid), 'T', "{what}: still held");
        };
        refused("the starter approves");

        // A daemon killed and started again still knows who started the agent.
        daemon.kill();
        daemon = files.start();
        let again = wait_held(&files, &tool);
        assert_eq!(again.id, view.id, "the same hold, adopted");
        refused("the starter approves after a restart");

        // Another approver may; a longer grant is cut to max_grant.
        let out = jitctl_as(
            &files,
            REVIEWER.0,
            REVIEWER.1,
            &["approve", &view.id.to_string(), "--for", "1h"],
        );
        assert!(out.status.success(), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("max_grant"),
            "the cut is said: {}",
            describe(&out)
        );
        let out = run.join().expect("jitctl run");
        assert!(
            out.status.success(),
            "the approved tool ran: {}",
            describe(&out)
        );
    });
    assert!(
        std::fs::read_to_string(&files.audit)
            .unwrap()
            .lines()
            .any(|l| l.contains("\"type\":\"approval\"") && l.contains("\"reviewer\":\"reviewer\"")),
        "the approval is audited"
    );
    drop(daemon);
}
