//! `jitctl --json` output shapes and `jitctl audit` (rotated files, filters, `--follow` across
//! a real rotation by the real audit writer). The daemon's side of the control socket is
//! played by a thread that answers with the protocol's own types (the real daemon needs BPF
//! LSM: the VM tests run it).
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixListener,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use jit_agent::{
    approval::Decided,
    audit::{
        Approval, ApprovalDecision, AuditOptions, AuditWriter, FsyncPolicy, KernelRecord,
        RecordBody, record::HeldAction,
    },
    control::{Request, Response},
};
use serde_json::Value;

fn jitctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jitctl"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run jitctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Answers one request on `socket` with `answer`, returning the request it got.
fn answer_once(socket: &Path, answer: Response) -> std::thread::JoinHandle<Request> {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        let mut reply = serde_json::to_vec(&answer).unwrap();
        reply.push(b'\n');
        (&stream).write_all(&reply).unwrap();
        serde_json::from_str(&line).unwrap()
    })
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

#[test]
fn decisions_and_reloads_print_json() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("jit.sock");
    let s = socket.to_str().unwrap();

    let server = answer_once(
        &socket,
        Response::Decided(Decided {
            id: 42,
            outcome: "denied".to_owned(),
            approvals_missing: 0,
        }),
    );
    let (code, stdout, stderr) = jitctl(&["--socket", s, "deny", "42", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        json(&stdout),
        serde_json::json!({"id": 42, "outcome": "denied", "approvals_missing": 0})
    );
    assert!(matches!(
        server.join().unwrap(),
        Request::Decide { id: 42, .. }
    ));
    std::fs::remove_file(&socket).unwrap();

    let server = answer_once(
        &socket,
        Response::Reloaded {
            generation: 3,
            files: vec!["/etc/jit/policies/a.toml".to_owned()],
        },
    );
    let (code, stdout, stderr) = jitctl(&["--socket", s, "policy", "reload", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        json(&stdout),
        serde_json::json!({"generation": 3, "files": ["/etc/jit/policies/a.toml"]})
    );
    server.join().unwrap();
    std::fs::remove_file(&socket).unwrap();

    // A refusal is JSON too, on stdout, with a failing exit status.
    let server = answer_once(
        &socket,
        Response::Error {
            error: "request 7 is not pending".to_owned(),
        },
    );
    let (code, stdout, _) = jitctl(&["--socket", s, "approve", "7", "--json"]);
    assert_eq!(code, 1);
    assert_eq!(
        json(&stdout),
        serde_json::json!({"error": "request 7 is not pending"})
    );
    server.join().unwrap();

    // No daemon at all: still JSON.
    let (code, stdout, _) = jitctl(&["--socket", "/nonexistent/jit.sock", "status", "--json"]);
    assert_eq!(code, 1);
    assert!(
        json(&stdout)["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect to the jit daemon")
    );
}

fn kernel(agent: &str, op: &str, decision: &str, kind: &str, request: Option<u64>) -> RecordBody {
    let value = serde_json::json!({
        "kind": kind, "op": op, "path": "/usr/bin/x", "decision": decision,
        "enforced": decision, "rule_id": 1, "rule": "r", "agent_id": 1, "agent": agent,
        "pid": 10, "tgid": 10, "ppid": 1, "uid": 0, "gid": 0, "cgroup_id": 1,
        "request_id": request, "ktime_ns": 1, "dev": 0, "ino": 0, "truncated": false,
        "unresolved": false,
    });
    RecordBody::Kernel(serde_json::from_value::<KernelRecord>(value).unwrap())
}

fn approval(request: u64, decision: ApprovalDecision) -> RecordBody {
    RecordBody::Approval(Approval {
        request_id: request,
        reviewer: "root".to_owned(),
        decision,
        scope: "once".to_owned(),
        reason: None,
        action: Some(HeldAction {
            agent: "build".to_owned(),
            op: "exec".to_owned(),
            path: "/usr/bin/x".to_owned(),
            pid: 10,
            rule_id: None,
        }),
        approvals_missing: 0,
    })
}

fn options(path: &Path, max_bytes: u64) -> AuditOptions {
    AuditOptions {
        path: path.to_owned(),
        fsync: FsyncPolicy::Never,
        max_bytes,
        keep: 8,
    }
}

fn seqs(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .map(|l| json(l)["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn audit_reads_rotated_files_in_order_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    // Small files: the writer rotates every few records.
    let mut writer = AuditWriter::open(options(&log, 1200)).unwrap();
    let t0: Timestamp = "2026-12-01T05:00:00Z".parse().unwrap();
    let at = |secs: i64| {
        t0.checked_add(jiff::SignedDuration::from_secs(secs))
            .unwrap()
    };
    for i in 0..10 {
        writer
            .append_at(kernel("build", "exec", "deny", "decision", None), at(i))
            .unwrap();
    }
    writer
        .append_at(kernel("build", "exec", "hold", "hold", Some(99)), at(20))
        .unwrap();
    writer
        .append_at(kernel("other", "write", "deny", "decision", None), at(30))
        .unwrap();
    writer
        .append_at(approval(99, ApprovalDecision::Deny), at(139))
        .unwrap();
    drop(writer);
    assert!(
        dir.path().join("audit.jsonl.2").exists(),
        "the writer rotated"
    );
    let file = log.to_str().unwrap();

    let (code, stdout, stderr) = jitctl(&["audit", "--json", "--file", file]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        seqs(&stdout),
        (1..=13).collect::<Vec<_>>(),
        "every file, in order"
    );

    let (_, stdout, _) = jitctl(&["audit", "--json", "--file", file, "--agent", "other"]);
    assert_eq!(seqs(&stdout), vec![12]);
    let (_, stdout, _) = jitctl(&["audit", "--json", "--file", file, "--request", "99"]);
    assert_eq!(seqs(&stdout), vec![11, 13]);
    let (_, stdout, _) = jitctl(&[
        "audit",
        "--json",
        "--file",
        file,
        "--decision",
        "deny",
        "--op",
        "exec",
    ]);
    assert_eq!(seqs(&stdout), (1..=10).chain([13]).collect::<Vec<_>>());
    let (_, stdout, _) = jitctl(&[
        "audit",
        "--json",
        "--file",
        file,
        "--since",
        "2026-12-01T05:00:05Z",
        "--until",
        "2026-12-01T05:00:30Z",
    ]);
    assert_eq!(seqs(&stdout), vec![6, 7, 8, 9, 10, 11]);
    let (code, _, stderr) = jitctl(&["audit", "--file", file, "--since", "yesterday-ish"]);
    assert_eq!(code, 2, "a bad time is an argument error");
    assert!(stderr.contains("RFC 3339"), "{stderr}");

    // The table: the answer says how long the reviewers took, humanly; no colour in a pipe.
    let (_, stdout, _) = jitctl(&["audit", "--file", file, "--request", "99"]);
    assert!(stdout.contains("(deny in 1m59s)"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "no colour when not a terminal");
    let (_, stdout, _) = jitctl(&[
        "--color",
        "always",
        "audit",
        "--file",
        file,
        "--request",
        "99",
    ]);
    assert!(stdout.contains("\x1b[31m"), "{stdout}");
}

#[test]
fn audit_follow_goes_on_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut writer = AuditWriter::open(options(&log, 1500)).unwrap();
    writer
        .append(kernel("build", "exec", "deny", "decision", None))
        .unwrap();
    let mut follower = Command::new(env!("CARGO_BIN_EXE_jitctl"))
        .args([
            "audit",
            "--follow",
            "--json",
            "--file",
            log.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let collect = |until: u64, seen: &mut Vec<u64>| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.last().copied().unwrap_or(0) < until && Instant::now() < deadline {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                seen.push(json(&line)["seq"].as_u64().unwrap());
            }
        }
    };
    collect(1, &mut seen);
    // Records written in bursts: some rotations happen while the follower sleeps, some
    // bursts rotate more than once between two of its looks.
    let mut written = 1;
    for burst in [1, 3, 7, 2, 12, 1] {
        for _ in 0..burst {
            writer
                .append(kernel("build", "exec", "deny", "decision", None))
                .unwrap();
            written += 1;
        }
        std::thread::sleep(Duration::from_millis(350));
    }
    collect(written, &mut seen);
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(writer.stats().rotations >= 3, "{:?}", writer.stats());
    assert_eq!(
        seen,
        (1..=written).collect::<Vec<_>>(),
        "every record once, in order, across {} rotations",
        writer.stats().rotations
    );
}
