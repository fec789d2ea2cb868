//! Daemon-side conditions through the real daemon (policies/README.md, "Conditions"): the
//! kernel holds the execs of a program some rule with conditions names, and the daemon decides
//! them by the command line, the working directory, the environment and the calling program —
//! automatically (audited as reviewer `policy`) or by escalating to the rule's own approvers.
//! An automatic approval binds to the command line the daemon read: a thread that changes the
//! arguments while the exec is held gets no approved run of the changed command.
use std::{
    ffi::CString,
    fs,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use jit_agent::approval::PendingView;
use jit_tests::{
    CGROUP2_ROOT, ExistingCgroup, TestDir,
    daemon::{DaemonFiles, describe, eventually, jitctl, jitctl_as},
    join_cgroup,
};

const CGROUP: &str = "jit-test-conditions/agent";
/// The guest's reviewer account (see xtask's initramfs): uid 1000, in group `sre` (1001).
const REVIEWER: (u32, u32) = (1000, 1001);

fn pending(files: &DaemonFiles) -> Vec<PendingView> {
    let out = jitctl(files, &["pending", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("pending JSON")
}

fn join(
    exec: std::thread::JoinHandle<std::io::Result<std::process::ExitStatus>>,
) -> std::io::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_mins(1);
    while !exec.is_finished() {
        assert!(Instant::now() < deadline, "the exec did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    exec.join().expect("exec thread")
}

/// The audit records of decisions by the policy's conditions.
fn policy_decisions(files: &DaemonFiles) -> Vec<serde_json::Value> {
    fs::read_to_string(&files.audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "approval" && r["reviewer"] == "policy")
        .collect()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one policy, one story from allow to escalation"
)]
fn execs_are_decided_by_their_command_line_cwd_env_and_caller() {
    jit_tests::require_vm();
    let work = TestDir::new("conditions");
    let tool = work.install_true("tool");
    let build = work.install_true("build");
    let allowed_dir = work.path().join("repo");
    fs::create_dir_all(allowed_dir.join("sub")).unwrap();
    let shell = fs::canonicalize("/bin/sh").unwrap();
    let shell = shell.to_str().unwrap();
    let mut files = DaemonFiles::new("conditions");
    files
        .cgroups
        .extend([CGROUP.to_owned(), "jit-test-conditions".to_owned()]);
    files.set_socket_access("sre", "0660");
    files.write_policy(
        "conditions.toml",
        &format!(
            r#"[agent]
name = "conditions"
cgroups = ["{CGROUP}"]
default = "allow"

[escalation]
approvers = {{ users = ["root"] }}
timeout = "1h"

[[rule]]
name = "tool status"
op = "exec"
path = "{tool}"
args = ["status", "**"]
decision = "allow"

[[rule]]
name = "tool push --force"
op = "exec"
path = "{tool}"
args = ["push", "--force", "**"]
decision = "deny"

[[rule]]
name = "tool push"
op = "exec"
path = "{tool}"
args = ["push", "**"]
decision = "hold"
risk = "high"
approvers = {{ users = ["reviewer"] }}

[[rule]]
name = "tool, anything else"
op = "exec"
path = "{tool}"
decision = "deny"

[[rule]]
name = "builds in the repository, from a shell, in CI"
op = "exec"
path = "{build}"
args = ["**"]
cwd = "{repo}/"
env = {{ CI = "true" }}
caller = "{shell}"
decision = "allow"

[[rule]]
name = "other builds"
op = "exec"
path = "{build}"
decision = "deny"
"#,
            repo = allowed_dir.display()
        ),
    );
    let daemon = files.start();
    let agent = ExistingCgroup(Path::new(CGROUP2_ROOT).join(CGROUP));

    // Allowed and denied by the command line, without a reviewer.
    jit_tests::assert_ran(&agent.run(&tool, &["status", "-s"]), "tool status");
    jit_tests::assert_eperm(
        &agent.run(&tool, &["push", "--force", "origin"]),
        "tool push --force",
    );
    jit_tests::assert_eperm(&agent.run(&tool, &["log"]), "no condition held: the deny");
    jit_tests::assert_eperm(&agent.run(&tool, &[]), "no arguments: the deny");
    assert!(pending(&files).is_empty(), "nothing waits for a reviewer");

    // Escalated to the rule's own approvers.
    let exec = agent.spawn_with_args(&tool, &["push", "origin"]);
    let mut view = None;
    assert!(
        eventually(Duration::from_mins(1), || {
            view = pending(&files).into_iter().find(|v| v.path == tool);
            view.is_some()
        }),
        "tool push was not held for reviewers"
    );
    let view = view.unwrap();
    assert_eq!(view.rule.as_deref(), Some("tool push"));
    assert_eq!(view.risk.as_deref(), Some("high"));
    assert_eq!(view.approvers, ["reviewer"]);
    let id = view.id.to_string();
    let out = jitctl(&files, &["approve", &id]);
    assert!(
        !out.status.success(),
        "root is the agent's approver, not this rule's: {}",
        describe(&out)
    );
    let out = jitctl_as(&files, REVIEWER.0, REVIEWER.1, &["approve", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    jit_tests::assert_ran(&join(exec), "tool push, approved by the rule's approver");

    // Working directory, environment and calling program.
    let in_repo = |cwd: &Path, ci: &str| {
        let script = format!("cd {} && CI={ci} exec {build} make", cwd.display());
        agent.run("/bin/sh", &["-c", &script])
    };
    jit_tests::assert_ran(
        &in_repo(&allowed_dir, "true"),
        "build in the repository, CI=true",
    );
    jit_tests::assert_ran(
        &in_repo(&allowed_dir.join("sub"), "true"),
        "build below the repository",
    );
    let refused = |r: std::io::Result<std::process::ExitStatus>, what: &str| {
        let status = r.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!status.success(), "{what}: the build ran");
    };
    refused(in_repo(&allowed_dir, "false"), "CI=false");
    refused(in_repo(work.path(), "true"), "outside the repository");
    // Not called by the shell: the test program itself is the caller.
    jit_tests::assert_eperm(
        &agent.run(&build, &["make"]),
        "a caller that is not the shell",
    );

    let decisions = policy_decisions(&files);
    let count = |decision: &str| {
        decisions
            .iter()
            .filter(|r| r["decision"] == decision)
            .count()
    };
    assert_eq!(
        (count("approve"), count("deny")),
        (3, 6),
        "every automatic decision is audited with reviewer policy: {decisions:#?}"
    );
    assert!(
        decisions.iter().any(|r| r["reason"]
            .as_str()
            .is_some_and(|s| s.contains("tool status"))),
        "the reason names the rule: {decisions:#?}"
    );
    drop(daemon);
}

/// Not a test of its own: the process [`a_changed_command_line_is_not_approved`] runs in the
/// agent's cgroup (the test binary run again with `JIT_RACE_SHELL` set). One thread flips the
/// last argument between `status` and `pushed` while the main thread execs the shell with it.
#[test]
fn race_helper_process() {
    static ARG: [std::sync::atomic::AtomicU8; 7] =
        [const { std::sync::atomic::AtomicU8::new(0) }; 7];
    static STOP: AtomicBool = AtomicBool::new(false);
    let Ok(shell) = std::env::var("JIT_RACE_SHELL") else {
        return;
    };
    let out = std::env::var("JIT_RACE_OUT").expect("JIT_RACE_OUT");
    for (slot, b) in ARG.iter().zip(b"status\0") {
        slot.store(*b, Ordering::Relaxed);
    }
    std::thread::spawn(|| {
        let words: [&[u8; 6]; 2] = [b"pushed", b"status"];
        let mut i = 0usize;
        while !STOP.load(Ordering::Relaxed) {
            for (slot, b) in ARG.iter().zip(words[i % 2]) {
                slot.store(*b, Ordering::Relaxed);
            }
            i += 1;
        }
    });
    let program = CString::new(shell).unwrap();
    let script = CString::new(format!("echo $0 >> {out}")).unwrap();
    let argv = [
        c"sh".as_ptr(),
        c"-c".as_ptr(),
        script.as_ptr(),
        ARG.as_ptr().cast::<libc::c_char>(),
        std::ptr::null(),
    ];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: NUL-terminated strings and vectors that outlive the call.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    STOP.store(true, Ordering::Relaxed);
    std::process::exit(if errno == Some(libc::EPERM) { 3 } else { 4 });
}

#[test]
fn a_changed_command_line_is_not_approved() {
    jit_tests::require_vm();
    let work = TestDir::new("conditions-race");
    let shell = work.path().join("sh");
    fs::copy(fs::canonicalize("/bin/sh").unwrap(), &shell).unwrap();
    let out = work.path().join("ran");
    let mut files = DaemonFiles::new("conditions-race");
    let cgroup = "jit-test-conditions-race/agent";
    files
        .cgroups
        .extend([cgroup.to_owned(), "jit-test-conditions-race".to_owned()]);
    files.write_policy(
        "race.toml",
        &format!(
            r#"[agent]
name = "race"
cgroups = ["{cgroup}"]
default = "allow"

[[rule]]
name = "status only"
op = "exec"
path = "{shell}"
args = ["-c", "*", "status"]
decision = "allow"

[[rule]]
name = "the shell copy"
op = "exec"
path = "{shell}"
decision = "deny"
"#,
            shell = shell.display()
        ),
    );
    let daemon = files.start();
    let procs = CString::new(format!("{CGROUP2_ROOT}/{cgroup}/cgroup.procs")).unwrap();
    let me = std::env::current_exe().unwrap();
    let (mut ran, mut denied, mut killed) = (0, 0, 0);
    for _ in 0..40 {
        let procs = procs.clone();
        let mut cmd = Command::new(&me);
        cmd.args([
            "--exact",
            "conditions::race_helper_process",
            "--test-threads=1",
        ])
        .env("JIT_RACE_SHELL", &shell)
        .env("JIT_RACE_OUT", &out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        // SAFETY: joining the cgroup makes async-signal-safe calls only.
        unsafe {
            cmd.pre_exec(move || join_cgroup(&procs));
        }
        let status = cmd.status().expect("run the race helper");
        match (status.code(), status.signal()) {
            (Some(0), _) => ran += 1,
            (Some(3), _) => denied += 1,
            (_, Some(libc::SIGKILL)) => killed += 1,
            other => panic!("unexpected end of the race helper: {other:?}"),
        }
    }
    let lines = fs::read_to_string(&out).unwrap_or_default();
    println!("race: {ran} ran, {denied} denied, {killed} killed; ran with: {lines:?}");
    assert!(
        lines.lines().all(|l| l == "status"),
        "a command line the daemon did not approve ran: {lines}"
    );
    assert_eq!(lines.lines().count(), ran, "every run wrote its argument");
    assert!(ran + denied + killed == 40);
    drop(daemon);
}
