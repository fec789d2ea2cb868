//! The agent socket through the real daemon, from real processes inside agent cgroups
//! (`jitctl agent why|pending|justify` and raw requests): each agent sees only its own
//! denials and holds (with the rule's hint), a justification reaches `jitctl pending`, the
//! webhook-facing JSON and the audit trail escaped and marked agent-provided, an agent can
//! neither decide nor justify another agent's hold nor flood, bad input is refused, a
//! connection handed to another agent is refused, and the control socket still refuses agents.
use std::{
    ffi::CString,
    fs,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use jit_agent::{
    agent_api::{AgentResponse, MAX_JUSTIFICATION},
    approval::PendingView,
};
use jit_tests::{
    CGROUP2_ROOT, ExistingCgroup, ForkedChild, TestDir,
    daemon::{DaemonFiles, JITCTL, describe, eventually, jitctl},
    join_cgroup, process_state, require_vm,
};

use super::escalation::raw;

const CGROUP_A: &str = "jit-test-why/a";
const CGROUP_B: &str = "jit-test-why/b";
const HINT_DENY: &str = "deploys go through the release pipeline";
const HINT_HOLD: &str = "a reviewer in #ops answers within minutes";
/// The guest's unprivileged account (see xtask's initramfs).
const USER: (u32, u32) = (1000, 1001);

fn procs(cgroup: &str) -> CString {
    CString::new(
        Path::new(CGROUP2_ROOT)
            .join(cgroup)
            .join("cgroup.procs")
            .to_str()
            .unwrap(),
    )
    .unwrap()
}

/// Runs `jitctl args...` inside agent cgroup `cgroup` (as `uid`/`gid` when given), with the
/// agent socket in `JIT_AGENT_SOCKET` as `jitctl run` sets it. Output through files: a held
/// child must not keep a pipe open.
fn jitctl_in(files: &DaemonFiles, cgroup: &str, user: Option<(u32, u32)>, args: &[&str]) -> Output {
    let procs = procs(cgroup);
    let out = files.dir.join(format!(".agent-out-{}", std::process::id()));
    let err = files.dir.join(format!(".agent-err-{}", std::process::id()));
    let mut cmd = Command::new(JITCTL);
    cmd.arg("--config")
        .arg(&files.config)
        .args(args)
        .env("JIT_AGENT_SOCKET", &files.agent_socket)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    // Joins the cgroup as root, then drops to `user`: std's uid switch would come first.
    // SAFETY: only async-signal-safe syscalls on memory made before fork.
    unsafe {
        cmd.pre_exec(move || {
            join_cgroup(&procs)?;
            if let Some((uid, gid)) = user
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().expect("run jitctl in the agent cgroup");
    Output {
        status,
        stdout: fs::read(&out).unwrap_or_default(),
        stderr: fs::read(&err).unwrap_or_default(),
    }
}

/// `jitctl agent ... --json` inside `cgroup`, parsed.
fn agent_json(files: &DaemonFiles, cgroup: &str, args: &[&str]) -> AgentResponse {
    let mut all = vec!["agent"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = jitctl_in(files, cgroup, None, &all);
    assert!(out.status.success(), "jitctl {all:?}: {}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)))
}

/// Sends `request` (raw bytes, newline included by the caller) on the agent socket from a
/// process forked into `cgroup` and returns the answer line. No allocation in the child.
fn raw_request(files: &DaemonFiles, cgroup: &str, request: &[u8]) -> String {
    let procs = procs(cgroup);
    let addr = raw::address(&files.agent_socket);
    let answer_path = files.dir.join(format!(".raw-{}", request.len()));
    let answer_file = fs::File::create(&answer_path).unwrap();
    let answer_fd = answer_file.as_raw_fd();
    let mut buf = vec![0u8; 64 * 1024];
    let child = ForkedChild::start(&procs, || {
        let s = raw::connect(&addr);
        if s < 0 {
            return 3;
        }
        // SAFETY: plain syscalls on buffers made before fork.
        unsafe {
            let mut sent = 0;
            while sent < request.len() {
                let n = libc::write(s, request[sent..].as_ptr().cast(), request.len() - sent);
                if n <= 0 {
                    // The daemon may close early on a request that is too long.
                    break;
                }
                sent += n.cast_unsigned();
            }
            let mut have = 0;
            loop {
                let n = libc::read(s, buf[have..].as_mut_ptr().cast(), buf.len() - have);
                if n <= 0 {
                    break;
                }
                have += n.cast_unsigned();
                if buf[..have].contains(&b'\n') || have == buf.len() {
                    break;
                }
            }
            libc::write(answer_fd, buf.as_ptr().cast(), have);
        }
        0
    });
    assert_eq!(child.result(), 0, "the agent process could not connect");
    drop(answer_file);
    let answer = fs::read_to_string(&answer_path).unwrap_or_default();
    let _ = fs::remove_file(answer_path);
    answer
}

fn is_error(answer: &str) -> bool {
    answer.contains("\"result\":\"error\"")
}

fn policies(files: &DaemonFiles, denied_a: &str, denied_b: &str, held: &str) {
    files.write_policy(
        "why-a.toml",
        &format!(
            r#"[agent]
name = "why-a"
cgroups = ["{CGROUP_A}"]
default = "allow"

[escalation]
approvers = {{ users = ["root"] }}
timeout = "1h"
on_timeout = "deny"
self_approval = true

[[rule]]
name = "no deploys"
op = "exec"
path = "{denied_a}"
decision = "deny"
hint = "{HINT_DENY}"

[[rule]]
name = "reviewed tool"
op = "exec"
path = "{held}"
decision = "hold"
hint = "{HINT_HOLD}"
"#
        ),
    );
    files.write_policy(
        "why-b.toml",
        &format!(
            r#"[agent]
name = "why-b"
cgroups = ["{CGROUP_B}"]
default = "allow"

[escalation]
approvers = {{ users = ["root"] }}
timeout = "1h"

[[rule]]
name = "b secret rule"
op = "exec"
path = "{denied_b}"
decision = "deny"
hint = "only b may read this hint"

[[rule]]
name = "b reviewed tool"
op = "exec"
path = "{held}"
decision = "hold"
"#
        ),
    );
}

fn pending_of(files: &DaemonFiles, id: u64) -> Option<PendingView> {
    let out = jitctl(files, &["pending", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let all: Vec<PendingView> = serde_json::from_slice(&out.stdout).expect("pending JSON");
    all.into_iter().find(|v| v.id == id)
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario on one daemon: each start verifies every program"
)]
fn agent_socket_tells_each_agent_only_its_own() {
    require_vm();
    let work = TestDir::new("why");
    let denied_a = work.install_true("deny-a");
    let denied_b = work.install_true("deny-b");
    let held = work.install_true("held");
    let mut files = DaemonFiles::new("why");
    files.cgroups.extend([
        CGROUP_A.to_owned(),
        CGROUP_B.to_owned(),
        "jit-test-why".to_owned(),
    ]);
    policies(&files, &denied_a, &denied_b, &held);
    let daemon = files.start();
    let a = ExistingCgroup(PathBuf::from(CGROUP2_ROOT).join(CGROUP_A));
    let b = ExistingCgroup(PathBuf::from(CGROUP2_ROOT).join(CGROUP_B));

    // The socket anyone may connect to; the daemon decides who is asking.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&files.agent_socket)
            .expect("the agent socket exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o666, "agent socket mode {mode:o}");
    }

    eprintln!("agent_socket: why shows each agent only its own denials");
    jit_tests::assert_eperm(&a.run(&denied_a, &[]), "a's denied tool");
    jit_tests::assert_eperm(&b.run(&denied_b, &[]), "b's denied tool");
    let mut records = Vec::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            if let AgentResponse::Why { agent, records: r } = agent_json(&files, CGROUP_A, &["why"])
            {
                assert_eq!(agent, "why-a");
                records = r;
            }
            records.iter().any(|r| r.path == denied_a)
        }),
        "a's denial never showed in `agent why`: {records:?}\n{}",
        daemon.log()
    );
    let denial = records.iter().find(|r| r.path == denied_a).unwrap();
    assert_eq!(denial.kind, "deny");
    assert_eq!(denial.op, "exec");
    assert_eq!(denial.rule.as_deref(), Some("no deploys"));
    assert_eq!(denial.hint.as_deref(), Some(HINT_DENY));
    assert!(
        records
            .iter()
            .all(|r| r.path != denied_b && r.rule.as_deref() != Some("b secret rule")),
        "a sees b's records: {records:?}"
    );
    // The human form, by an agent process that is not root.
    let out = jitctl_in(
        &files,
        CGROUP_A,
        Some(USER),
        &["agent", "why", "--last", "5"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("deny exec {denied_a} [rule: no deploys]"))
            && text.contains(&format!("hint: {HINT_DENY}")),
        "{}",
        describe(&out)
    );
    match agent_json(&files, CGROUP_B, &["why"]) {
        AgentResponse::Why { agent, records } => {
            assert_eq!(agent, "why-b");
            assert!(
                records.iter().any(|r| r.path == denied_b),
                "b's own denial: {records:?}"
            );
            assert!(
                records.iter().all(|r| r.path != denied_a),
                "b sees a's records: {records:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Outside every agent cgroup: refused (reviewers use the control socket).
    let out = jitctl(
        &files,
        &[
            "agent",
            "--agent-socket",
            files.agent_socket.to_str().unwrap(),
            "why",
        ],
    );
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("not in an agent cgroup"),
        "{}",
        describe(&out)
    );

    eprintln!("agent_socket: pending and justify");
    let exec = a.spawn(&held);
    let mut view = None;
    assert!(
        eventually(Duration::from_mins(1), || {
            let out = jitctl(&files, &["pending", "--json"]);
            let all: Vec<PendingView> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            view = all.into_iter().find(|v| v.path == held);
            view.is_some()
        }),
        "the held exec never became pending:\n{}",
        daemon.log()
    );
    let view = view.unwrap();
    let id = view.id;
    assert_eq!(
        view.hint.as_deref(),
        Some(HINT_HOLD),
        "reviewers see the hint"
    );
    match agent_json(&files, CGROUP_A, &["pending"]) {
        AgentResponse::Pending { agent, holds } => {
            assert_eq!(agent, "why-a");
            let mine = holds
                .iter()
                .find(|h| h.id == id)
                .unwrap_or_else(|| panic!("a's own hold: {holds:?}"));
            assert_eq!(mine.rule.as_deref(), Some("reviewed tool"));
            assert_eq!(mine.hint.as_deref(), Some(HINT_HOLD));
            assert_eq!(mine.on_timeout, "deny");
            assert!(
                mine.timeout_in_secs > 3000 && mine.timeout_in_secs <= 3600,
                "{mine:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    match agent_json(&files, CGROUP_B, &["pending"]) {
        AgentResponse::Pending { holds, .. } => {
            assert!(holds.is_empty(), "b sees a's hold: {holds:?}");
        }
        other => panic!("{other:?}"),
    }
    // `why` lists the hold with the id justify takes.
    match agent_json(&files, CGROUP_A, &["why"]) {
        AgentResponse::Why { records, .. } => assert!(
            records
                .iter()
                .any(|r| r.kind == "hold" && r.request_id == Some(id) && r.path == held),
            "{records:?}"
        ),
        other => panic!("{other:?}"),
    }

    // b cannot justify a's hold, and learns nothing about it from trying.
    let out = jitctl_in(
        &files,
        CGROUP_B,
        None,
        &["agent", "justify", &id.to_string(), "b says: approve it"],
    );
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr)
                .contains(&format!("request {id} is not a pending hold of your agent")),
        "{}",
        describe(&out)
    );
    assert_eq!(pending_of(&files, id).unwrap().justification, None);

    // a justifies its hold, with control characters that must not reach a terminal.
    let said = "needed for INC-42\u{1b}[2J\r    approvals: 2/2 (root)";
    let out = jitctl_in(
        &files,
        CGROUP_A,
        Some(USER),
        &["agent", "justify", &id.to_string(), said],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let shown = "needed for INC-42\\x1b[2J\\r    approvals: 2/2 (root)";
    let seen = pending_of(&files, id).expect("still pending");
    let justification = seen.justification.expect("reviewers see the justification");
    assert_eq!(justification.text, shown);
    assert_eq!(justification.source, "agent");
    let card = jitctl(&files, &["pending"]);
    let card_text = String::from_utf8_lossy(&card.stdout);
    assert!(
        card_text.contains(&format!(
            "agent-provided justification (unverified, pid {}): \"{shown}\"",
            justification.pid
        )) && !card_text.contains('\u{1b}'),
        "{}",
        describe(&card)
    );
    let lines = audit_lines(&files.audit);
    let record = lines
        .iter()
        .find(|r| r["type"] == "justification" && r["request_id"] == id)
        .unwrap_or_else(|| panic!("no justification record in the audit trail"));
    assert_eq!(record["source"], "agent");
    assert_eq!(record["text"], shown);
    assert_eq!(record["action"]["agent"], "why-a");
    assert!(
        !fs::read_to_string(&files.audit).unwrap().contains('\u{1b}'),
        "a raw escape reached the audit log"
    );

    eprintln!("agent_socket: nothing on this socket decides");
    let request = |s: &str| format!("{s}\n").into_bytes();
    for attempt in [
        format!(
            r#"{{"cmd":"decide","id":{id},"action":{{"action":"approve","once":true,"for_secs":null}},"reason":null}}"#
        ),
        format!(r#"{{"cmd":"approve","id":{id}}}"#),
        format!(r#"{{"cmd":"justify","id":{id},"text":"ok","approve":true}}"#),
        format!(r#"{{"cmd":"justify","id":{id},"text":"ok","timeout":"24h"}}"#),
    ] {
        let answer = raw_request(&files, CGROUP_A, &request(&attempt));
        assert!(is_error(&answer), "{attempt}: {answer}");
    }
    assert_eq!(process_state(view.pid), 'T', "still held");
    let after = pending_of(&files, id).expect("still pending");
    assert!(
        after.timeout_in_secs <= view.timeout_in_secs,
        "the deadline did not move"
    );

    eprintln!("agent_socket: bad input");
    let huge = "x".repeat(MAX_JUSTIFICATION + 1);
    let answer = raw_request(
        &files,
        CGROUP_A,
        &request(&format!(r#"{{"cmd":"justify","id":{id},"text":"{huge}"}}"#)),
    );
    assert!(
        is_error(&answer) && answer.contains("at most 500"),
        "{answer}"
    );
    let answer = raw_request(&files, CGROUP_A, &request(&"y".repeat(64 * 1024)));
    assert!(is_error(&answer), "a 64 KiB line: {answer}");
    let mut invalid = format!(r#"{{"cmd":"justify","id":{id},"text":"bad "#).into_bytes();
    invalid.extend_from_slice(b"\xff\xfe\"}\n");
    let answer = raw_request(&files, CGROUP_A, &invalid);
    assert!(
        is_error(&answer) && answer.contains("not UTF-8"),
        "{answer}"
    );
    let answer = raw_request(
        &files,
        CGROUP_A,
        &request(&format!(
            r#"{{"cmd":"justify","id":{id},"text":"half \udc80"}}"#
        )),
    );
    assert!(is_error(&answer), "a lone surrogate: {answer}");
    assert_eq!(
        pending_of(&files, id)
            .and_then(|v| v.justification)
            .map(|j| j.text)
            .as_deref(),
        Some(shown),
        "refused input changed nothing"
    );

    eprintln!("agent_socket: a connection handed to another agent is refused");
    // A process in a connects and hands the connection to a process in b, which asks `why`:
    // it must not get a's records (the request is not written by the connector).
    let (a_end, b_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let (pass_a, pass_b) = (a_end.as_raw_fd(), b_end.as_raw_fd());
    let addr = raw::address(&files.agent_socket);
    let why = request(r#"{"cmd":"why"}"#);
    let receiver = ForkedChild::start(&procs(CGROUP_B), || {
        let fd = raw::recv_fd(pass_b);
        if fd < 0 {
            return 4;
        }
        raw::ask(fd, &why)
    });
    let giver = ForkedChild::start(&procs(CGROUP_A), || {
        let s = raw::connect(&addr);
        if s < 0 || !raw::send_fd(pass_a, s) {
            return 4;
        }
        0
    });
    assert_eq!(giver.result(), 0);
    let result = receiver.result();
    assert!(
        matches!(result, 0 | 3),
        "b read a's history on a connection a handed it ({result})"
    );
    drop((a_end, b_end));

    eprintln!("agent_socket: agents cannot remove or replace the sockets");
    let moved = jit_tests::c_path(&files.dir.join("moved.sock"));
    let fake = raw::address(&files.dir.join("fake.sock"));
    for path in [&files.agent_socket, &files.socket] {
        let c = jit_tests::c_path(path);
        // SAFETY (both closures): plain syscalls on C strings made before fork.
        let errno = jit_tests::errno_of(Some(&a.0), || unsafe { libc::unlink(c.as_ptr()) == 0 });
        assert_eq!(errno, libc::EPERM, "unlink {}", path.display());
        let errno = jit_tests::errno_of(Some(&a.0), || unsafe {
            libc::rename(c.as_ptr(), moved.as_ptr()) == 0
        });
        assert_eq!(errno, libc::EPERM, "rename {}", path.display());
        assert!(path.exists(), "{} is still there", path.display());
    }
    // Nor bind a look-alike socket beside them.
    let errno = jit_tests::errno_of(Some(&a.0), || {
        let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_un>()).unwrap_or(0);
        // SAFETY: plain syscalls on an address made before fork.
        unsafe {
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            s >= 0 && libc::bind(s, std::ptr::from_ref(&fake).cast(), len) == 0
        }
    });
    assert_eq!(errno, libc::EPERM, "bind a socket in the socket directory");

    eprintln!("agent_socket: the control socket still refuses agents");
    let out = jitctl_in(
        &files,
        CGROUP_A,
        None,
        &["approve", &id.to_string(), "--once"],
    );
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("agents cannot control jit"),
        "{}",
        describe(&out)
    );
    let out = jitctl_in(&files, CGROUP_A, None, &["pending"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(process_state(view.pid), 'T', "still held");

    eprintln!("agent_socket: justifications are rate-limited");
    // One accepted so far; the burst allows five a minute.
    for n in 2..=5 {
        let out = jitctl_in(
            &files,
            CGROUP_A,
            None,
            &[
                "agent",
                "justify",
                &id.to_string(),
                &format!("reason number {n}"),
            ],
        );
        assert!(
            out.status.success(),
            "justification {n}: {}",
            describe(&out)
        );
    }
    let out = jitctl_in(
        &files,
        CGROUP_A,
        None,
        &["agent", "justify", &id.to_string(), "one too many"],
    );
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("too many justifications"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        pending_of(&files, id)
            .and_then(|v| v.justification)
            .map(|j| j.text)
            .as_deref(),
        Some("reason number 5")
    );

    eprintln!("agent_socket: a flood of idle connections starves nobody for long");
    let flood: Vec<std::os::unix::net::UnixStream> = (0..64)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&files.agent_socket).ok())
        .collect();
    assert!(flood.len() >= 32, "connected {}", flood.len());
    let started = Instant::now();
    let status = jitctl(&files, &["status"]);
    assert!(status.status.success(), "{}", describe(&status));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the control socket waited for the flood: {:?}",
        started.elapsed()
    );
    // Slots free up as idle connections time out; an agent gets its answer.
    let started = Instant::now();
    match agent_json(&files, CGROUP_A, &["pending"]) {
        AgentResponse::Pending { holds, .. } => assert!(holds.iter().any(|h| h.id == id)),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    drop(flood);

    // The reviewer answers; the agent's hold is gone from its list.
    let out = jitctl(&files, &["deny", &id.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    let deadline = Instant::now() + Duration::from_mins(1);
    while !exec.is_finished() {
        assert!(Instant::now() < deadline, "the denied exec did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    jit_tests::assert_eperm(&exec.join().unwrap(), "denied after the justification");
    match agent_json(&files, CGROUP_A, &["pending"]) {
        AgentResponse::Pending { holds, .. } => assert!(holds.is_empty(), "{holds:?}"),
        other => panic!("{other:?}"),
    }
    drop(daemon);
    drop(work);
}
