//! The daemon end to end: `jitctl run`, live policy edits, a broken edit, SIGKILL and restart
//! without an enforcement gap, the audit trail and its verification, the control socket's
//! refusal of agents.
//!
//! One scenario rather than several tests: starting a daemon loads and verifies every program,
//! tens of seconds under software emulation, and the restart steps need the state the earlier
//! steps built.
use std::{fs, path::Path, process::Output, time::Duration};

use jit_tests::{
    CGROUP2_ROOT, TestDir,
    daemon::{DaemonFiles, describe, eventually, jitctl},
    require_vm,
};

const AGENT: &str = "vm-agent";
const CGROUP: &str = "jit-test-daemon/vm-agent";

fn policy(allowed_decision: &str, allowed: &str, denied: &str) -> String {
    format!(
        r#"[agent]
name = "{AGENT}"
cgroups = ["{CGROUP}"]
default = "allow"

[[rule]]
name = "the tool we test with"
op = "exec"
path = "{allowed}"
decision = "{allowed_decision}"

[[rule]]
name = "never this one"
op = "exec"
path = "{denied}"
decision = "deny"
"#
    )
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Runs `program` in the agent's cgroup without asking the daemon (it may be down), as a
/// process the test moves there itself.
fn exec_in_agent_cgroup(program: &str) -> std::io::Result<std::process::ExitStatus> {
    let cgroup = jit_tests::ExistingCgroup(Path::new(CGROUP2_ROOT).join(CGROUP));
    cgroup.run(program, &[])
}

fn audit_records(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: each step needs the state the steps before it built"
)]
fn daemon_enforces_reloads_survives_sigkill_and_audits() {
    require_vm();
    let work = TestDir::new("daemon");
    let allowed = work.install_true("allowed");
    let denied = work.install_true("denied");
    let mut files = DaemonFiles::new("e2e");
    files.cgroups.push(CGROUP.to_owned());
    files.cgroups.push("jit-test-daemon".to_owned());
    files.write_policy("vm-agent.toml", &policy("allow", &allowed, &denied));

    // Start: programs loaded and pinned, the policy in force.
    let mut daemon = files.start();
    let status = daemon.status();
    assert_eq!(status.startup, "loaded", "{status:?}");
    let expected = jit_agent::bpf::programs_for_this_kernel().expect("kernel BTF");
    assert_eq!(status.programs.len(), expected.len());
    assert_eq!(status.programs_expected, expected.len());
    assert_eq!(status.policy_generation, 1);
    assert_eq!(status.agents.len(), 1);
    assert_eq!(status.agents[0].cgroups, vec![CGROUP.to_owned()]);

    // `jitctl run` puts the command under the agent's policy.
    let out = jitctl(&files, &["run", "--agent", AGENT, "--", &allowed]);
    assert_eq!(
        code(&out),
        0,
        "allowed exec via jitctl run: {}",
        describe(&out)
    );
    let out = jitctl(&files, &["run", "--agent", AGENT, "--", &denied]);
    assert_eq!(
        code(&out),
        126,
        "denied exec via jitctl run: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        describe(&out)
    );
    let out = jitctl(&files, &["run", "--agent", "no-such-agent", "--", &allowed]);
    assert_ne!(code(&out), 0, "unknown agent: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no agent named"),
        "{}",
        describe(&out)
    );

    // The control socket refuses requests from inside an agent cgroup.
    let out = jitctl(
        &files,
        &[
            "run",
            "--agent",
            AGENT,
            "--",
            "/jit/bin/jitctl",
            "--config",
            files.config.to_str().unwrap(),
            "status",
        ],
    );
    assert_ne!(
        code(&out),
        0,
        "status from inside the agent cgroup: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "status from inside the agent cgroup: {}",
        describe(&out)
    );

    // A policy edit applies live (file change, no signal).
    files.write_policy("vm-agent.toml", &policy("deny", &allowed, &denied));
    assert!(
        eventually(Duration::from_secs(20), || {
            jit_tests::assert_eperm_quiet(&exec_in_agent_cgroup(&allowed))
        }),
        "the edited policy (deny the allowed tool) did not apply within 20 s:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.status().policy_generation, 2);

    // A broken edit is rejected with file:line:col and enforcement continues unchanged.
    files.write_policy(
        "vm-agent.toml",
        &policy("deny", &allowed, &denied).replace(
            "default = \"allow\"",
            "default = \"allow\"\ncolour = \"blue\"",
        ),
    );
    assert!(
        eventually(Duration::from_secs(20), || daemon
            .status()
            .policy_error
            .is_some()),
        "the broken policy was not reported within 20 s:\n{}",
        daemon.log()
    );
    let status = daemon.status();
    assert_eq!(
        status.policy_generation, 2,
        "a broken policy must not replace the old one"
    );
    let error = status.policy_error.unwrap();
    assert!(
        error.contains("vm-agent.toml:5:1:"),
        "position of the error: {error}"
    );
    jit_tests::assert_eperm(
        &exec_in_agent_cgroup(&allowed),
        "allowed tool, still denied by generation 2",
    );
    jit_tests::assert_eperm(
        &exec_in_agent_cgroup(&denied),
        "denied tool under the broken edit",
    );
    let out = jitctl(&files, &["policy", "reload"]);
    assert_ne!(
        code(&out),
        0,
        "reload of a broken policy: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stays in force"),
        "{}",
        describe(&out)
    );
    let out = jitctl(
        &files,
        &["policy", "check", files.policies.to_str().unwrap()],
    );
    assert_ne!(
        code(&out),
        0,
        "policy check of a broken policy: {}",
        describe(&out)
    );

    // Back to a valid policy (tool allowed again).
    files.write_policy("vm-agent.toml", &policy("allow", &allowed, &denied));
    assert!(
        eventually(Duration::from_secs(20), || daemon
            .status()
            .policy_generation
            == 3),
        "the fixed policy did not load:\n{}",
        daemon.log()
    );

    // SIGKILL: the kernel keeps enforcing with no daemon at all.
    daemon.kill();
    jit_tests::assert_eperm(
        &exec_in_agent_cgroup(&denied),
        "denied tool while the daemon is dead",
    );
    jit_tests::assert_ran(
        &exec_in_agent_cgroup(&allowed),
        "allowed tool while the daemon is dead",
    );

    // Restart: the pinned programs are adopted, the audit chain continues, and the denial that
    // happened while no daemon ran reaches the audit log from the ring buffer.
    let before_restart = audit_records(&files.audit).len();
    let mut daemon = files.start();
    let status = daemon.status();
    assert_eq!(status.startup, "adopted", "{status:?}");
    jit_tests::assert_eperm(
        &exec_in_agent_cgroup(&denied),
        "denied tool after the restart",
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            audit_records(&files.audit)[before_restart..]
                .iter()
                .filter(|r| r["type"] == "kernel" && r["path"] == denied.as_str())
                .count()
                >= 2
        }),
        "the new daemon did not audit both denials (one from while it was down):\n{}",
        fs::read_to_string(&files.audit).unwrap_or_default()
    );
    let records = audit_records(&files.audit);
    let starts = records
        .iter()
        .filter(|r| r["type"] == "daemon_started")
        .count();
    assert_eq!(starts, 2, "two daemon starts in one chain");
    assert!(records.iter().any(|r| r["type"] == "policy_rejected"));

    // The chain verifies, and one changed byte breaks it.
    let audit = files.audit.to_str().unwrap().to_owned();
    let out = jitctl(&files, &["audit", "verify", &audit]);
    assert_eq!(code(&out), 0, "audit verify: {}", describe(&out));
    let mut bytes = fs::read(&files.audit).unwrap();
    let middle = bytes.len() / 2;
    // A digit or letter swapped for another of the same class keeps the line valid JSON.
    bytes[middle] = match bytes[middle] {
        b'0'..=b'8' | b'a'..=b'y' | b'A'..=b'Y' => bytes[middle] + 1,
        b'9' => b'0',
        b'z' => b'a',
        b'Z' => b'A',
        _ => b' ',
    };
    let tampered = files.dir.join("tampered.jsonl");
    fs::write(&tampered, &bytes).unwrap();
    let out = jitctl(&files, &["audit", "verify", tampered.to_str().unwrap()]);
    assert_eq!(
        code(&out),
        1,
        "verify of a tampered log: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("BROKEN"),
        "{}",
        describe(&out)
    );

    // `jitctl audit` prints the trail as a table.
    let out = jitctl(&files, &["audit"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&denied),
        "{}",
        describe(&out)
    );

    // Records cut off the end while the daemon is down: the chain alone still verifies, the
    // daemon's checkpoint (audit.jsonl.head) shows the cut.
    daemon.kill();
    let text = fs::read_to_string(&files.audit).unwrap();
    let kept: Vec<&str> = text.split_inclusive('\n').collect();
    fs::write(&files.audit, kept[..kept.len() - 2].concat()).unwrap();
    let out = jitctl(&files, &["audit", "verify", &audit, "--no-checkpoint"]);
    assert_eq!(code(&out), 0, "the chain alone: {}", describe(&out));
    let out = jitctl(&files, &["audit", "verify"]);
    assert_eq!(code(&out), 1, "verify of a cut log: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 record(s) were cut off the end"),
        "{}",
        describe(&out)
    );
    drop(daemon);
}
