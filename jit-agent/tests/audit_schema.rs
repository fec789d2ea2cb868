//! The audit record schema: exact serialized lines (golden), the conversion from kernel
//! events, procfs process context, and the table view.

use jiff::Timestamp;
use jit_agent::audit::{
    Approval, ApprovalDecision, AuditRecovered, DaemonStarted, DaemonStopped, EventsDropped,
    GENESIS_PREV, JustificationRecord, KernelRecord, PolicyLoaded, PolicyRejected, ProcessContext,
    Record, RecordBody,
    table::{format_line, format_row, table_header},
};
use jit_common::{
    event::{EVENT_FLAG_PATH_TRUNCATED, EVENT_PATH_MAX, Event, EventKind},
    pending::FileId,
    policy::{Decision, Op},
    protect::{SELF_PROTECTION_RULE_ID, event_op},
};

/// 2026-01-02T03:04:05.000006Z: microseconds set so the fixed precision shows.
fn time() -> Timestamp {
    Timestamp::new(1_767_323_045, 6_000).unwrap()
}

fn event(path: &[u8]) -> Event {
    let mut buf = [0; EVENT_PATH_MAX];
    buf[..path.len()].copy_from_slice(path);
    Event {
        ts_ns: 123_456_789,
        request_id: 987_654_321,
        file: FileId {
            dev: 2049,
            ino: 42,
            name: 0,
        },
        cgroup_id: 7777,
        pid: 100,
        tgid: 100,
        ppid: 99,
        uid: 1000,
        gid: 1000,
        agent_id: 3,
        rule_id: 2,
        path_len: u32::try_from(path.len()).unwrap(),
        kind: EventKind::Hold as u8,
        op: Op::Exec as u8,
        decision: Decision::Hold as u8,
        enforced: Decision::Hold as u8,
        flags: 0,
        path: buf,
    }
}

fn line(body: RecordBody) -> String {
    let record = Record {
        v: 1,
        seq: 5,
        time: time(),
        body,
        prev: GENESIS_PREV.to_owned(),
    };
    let line = String::from_utf8(record.to_line().unwrap()).unwrap();
    // Every line parses back to the same record.
    assert_eq!(Record::from_line(line.as_bytes()).unwrap(), record);
    line
}

const HEAD: &str = r#"{"v":1,"seq":5,"time":"2026-01-02T03:04:05.000006Z","#;
const TAIL: &str = r#","prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#;

fn golden(body: RecordBody, fields: &str) {
    assert_eq!(line(body), format!("{HEAD}{fields}{TAIL}"));
}

#[test]
fn kernel_record_golden() {
    let rec = KernelRecord::from_event(&event(b"/usr/bin/curl"), None)
        .with_names(Some("coding-agent".into()), Some("network tools".into()));
    golden(
        rec.into(),
        r#""type":"kernel","kind":"hold","op":"exec","path":"/usr/bin/curl","decision":"hold","enforced":"hold","rule_id":2,"rule":"network tools","agent_id":3,"agent":"coding-agent","pid":100,"tgid":100,"ppid":99,"uid":1000,"gid":1000,"cgroup_id":7777,"request_id":987654321,"ktime_ns":123456789,"dev":2049,"ino":42,"truncated":false,"unresolved":false,"process":null"#,
    );
}

#[test]
fn kernel_record_with_process_golden() {
    let process = ProcessContext {
        pid: 100,
        exe: Some("/usr/bin/curl".into()),
        argv: Some(vec!["curl".into(), "https://example.com".into()]),
        exec_argv: None,
        exec_env: None,
        exec_binding: None,
        exec_strings: None,
        argv_truncated: false,
        cwd: Some("/srv/work".into()),
        uid: Some(1000),
        user: Some("dev".into()),
        parents: vec![jit_agent::audit::ParentProcess {
            pid: 1,
            comm: Some("systemd".into()),
            exe: None,
        }],
    };
    let mut ev = event(b"/usr/bin/curl");
    ev.kind = EventKind::Decision as u8;
    ev.request_id = 0;
    ev.decision = Decision::Deny as u8;
    ev.enforced = Decision::Audit as u8;
    golden(
        KernelRecord::from_event(&ev, Some(process)).into(),
        r#""type":"kernel","kind":"decision","op":"exec","path":"/usr/bin/curl","decision":"deny","enforced":"audit","rule_id":2,"rule":null,"agent_id":3,"agent":null,"pid":100,"tgid":100,"ppid":99,"uid":1000,"gid":1000,"cgroup_id":7777,"request_id":null,"ktime_ns":123456789,"dev":2049,"ino":42,"truncated":false,"unresolved":false,"process":{"pid":100,"exe":"/usr/bin/curl","argv":["curl","https://example.com"],"argv_truncated":false,"cwd":"/srv/work","uid":1000,"user":"dev","parents":[{"pid":1,"comm":"systemd","exe":null}]}"#,
    );
}

#[test]
fn self_protection_records_name_their_rule_and_op() {
    let mut ev = event(b"");
    ev.kind = EventKind::Decision as u8;
    ev.request_id = 0;
    ev.rule_id = SELF_PROTECTION_RULE_ID;
    ev.decision = Decision::Deny as u8;
    ev.enforced = Decision::Deny as u8;
    for (op, name) in [
        (event_op::SIGNAL, "signal"),
        (event_op::PTRACE, "ptrace"),
        (event_op::BPF, "bpf"),
        (Op::Write as u8, "write"),
    ] {
        ev.op = op;
        // The daemon knows no rule by that id: the name stays.
        let rec = KernelRecord::from_event(&ev, None).with_names(Some("a".into()), None);
        assert_eq!(rec.op, name);
        assert_eq!(rec.rule.as_deref(), Some("self-protection"));
        assert_eq!(rec.rule_id, u32::MAX);
    }
}

#[test]
fn kernel_record_odd_values_are_kept_not_dropped() {
    let mut ev = event(b"/tmp/\xff\xfe");
    ev.kind = 9;
    ev.op = 200;
    ev.decision = 7;
    ev.flags = EVENT_FLAG_PATH_TRUNCATED;
    let rec = KernelRecord::from_event(&ev, None);
    assert_eq!(rec.kind, "unknown(9)");
    assert_eq!(rec.op, "unknown(200)");
    assert_eq!(rec.decision, "unknown(7)");
    assert_eq!(rec.path, "/tmp/\u{fffd}\u{fffd}");
    assert_eq!(rec.path_hex.as_deref(), Some("2f746d702ffffe"));
    assert!(rec.truncated);
    assert!(!rec.unresolved);
    let l = line(rec.into());
    assert!(
        l.contains(r#""path":"/tmp/��","path_hex":"2f746d702ffffe","#),
        "{l}"
    );
}

#[test]
fn other_records_golden() {
    golden(
        RecordBody::PolicyLoaded(PolicyLoaded {
            generation: 3,
            files: vec!["/etc/jit/policies/coding-agent.toml".into()],
        }),
        r#""type":"policy_loaded","generation":3,"files":["/etc/jit/policies/coding-agent.toml"]"#,
    );
    golden(
        RecordBody::PolicyRejected(PolicyRejected {
            errors: vec!["a.toml:3:8: unknown op `exce`".into()],
        }),
        r#""type":"policy_rejected","errors":["a.toml:3:8: unknown op `exce`"]"#,
    );
    golden(
        RecordBody::DaemonStarted(DaemonStarted {
            version: "0.1.0".into(),
            pid: 4242,
        }),
        r#""type":"daemon_started","version":"0.1.0","pid":4242"#,
    );
    golden(
        RecordBody::DaemonStopped(DaemonStopped {
            reason: "SIGTERM".into(),
        }),
        r#""type":"daemon_stopped","reason":"SIGTERM""#,
    );
    golden(
        RecordBody::EventsDropped(EventsDropped {
            count: 2,
            total: 10,
        }),
        r#""type":"events_dropped","count":2,"total":10"#,
    );
    golden(
        RecordBody::Approval(Approval {
            request_id: 987_654_321,
            reviewer: "alice".into(),
            decision: ApprovalDecision::Approve,
            scope: "15m".into(),
            reason: None,
            action: None,
            approvals_missing: 0,
        }),
        r#""type":"approval","request_id":987654321,"reviewer":"alice","decision":"approve","scope":"15m","reason":null"#,
    );
    golden(
        RecordBody::Justification(JustificationRecord {
            request_id: 987_654_321,
            source: "agent".into(),
            pid: 4242,
            text: "INC-42\\x1b[2J".into(),
            action: None,
        }),
        r#""type":"justification","request_id":987654321,"source":"agent","pid":4242,"text":"INC-42\\x1b[2J""#,
    );
    golden(
        RecordBody::AuditRecovered(AuditRecovered {
            file: "/var/log/jit/audit.jsonl".into(),
            offset: 100,
            bytes: 3,
            sha256: "ab".repeat(32),
            preview: "{\"v".into(),
        }),
        &format!(
            r#""type":"audit_recovered","file":"/var/log/jit/audit.jsonl","offset":100,"bytes":3,"sha256":"{}","preview":"{{\"v""#,
            "ab".repeat(32)
        ),
    );
}

#[test]
fn unknown_type_and_bad_time_do_not_parse() {
    let l = format!(r#"{HEAD}"type":"martian"{TAIL}"#);
    assert!(Record::from_line(l.as_bytes()).is_err());
    let l = format!(r#"{HEAD}"type":"daemon_stopped","reason":"x"{TAIL}"#).replace("03:04", "3:4");
    assert!(Record::from_line(l.as_bytes()).is_err());
}

#[test]
fn process_context_of_this_process() {
    let ctx = ProcessContext::read(std::process::id());
    assert_eq!(ctx.pid, std::process::id());
    let exe = std::env::current_exe().unwrap();
    assert_eq!(ctx.exe.as_deref(), Some(exe.to_str().unwrap()));
    let argv: Vec<String> = std::env::args().collect();
    assert_eq!(ctx.argv.as_ref(), Some(&argv));
    assert!(!ctx.argv_truncated);
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(ctx.cwd.as_deref(), Some(cwd.to_str().unwrap()));
    assert_eq!(ctx.uid, Some(nix::unistd::getuid().as_raw()));
    let parents = &ctx.parents;
    assert!(!parents.is_empty());
    assert_eq!(
        parents[0].pid,
        nix::unistd::getppid().as_raw().unsigned_abs()
    );
    assert!(parents[0].comm.is_some());
    assert!(parents.len() <= jit_agent::audit::MAX_PARENTS);
    // The chain walks towards init; each step's pid differs from the one before.
    assert!(parents.windows(2).all(|w| w[0].pid != w[1].pid));
}

#[test]
fn process_context_of_a_dead_process_is_empty() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap(); // reaped: /proc/PID is gone (barring pid reuse within the test).
    let ctx = ProcessContext::read(pid);
    assert_eq!(
        ctx,
        ProcessContext {
            pid,
            ..ProcessContext::default()
        }
    );
    // pids beyond i32 cannot exist either.
    assert_eq!(ProcessContext::read(u32::MAX).exe, None);
}

#[test]
fn table_rows() {
    let rec = |body| Record {
        v: 1,
        seq: 1,
        time: time(),
        body,
        prev: GENESIS_PREV.to_owned(),
    };
    assert_eq!(
        table_header(),
        "TIME                 TYPE            AGENT            OP       DECISION          PID PATH / SUMMARY"
    );
    let k = KernelRecord::from_event(&event(b"/usr/bin/curl"), None)
        .with_names(Some("coding-agent".into()), Some("network tools".into()));
    assert_eq!(
        format_row(&rec(k.into())),
        "2026-01-02T03:04:05Z hold            coding-agent     exec     hold              100 \
         /usr/bin/curl  rule: network tools  request 987654321"
    );
    // Shadow mode shows both decisions; unknown names fall back to ids; control characters
    // in paths are escaped so they cannot forge a second line.
    let mut ev = event(b"/tmp/x\ny\x1b[2J");
    ev.kind = EventKind::Decision as u8;
    ev.request_id = 0;
    ev.decision = Decision::Deny as u8;
    ev.enforced = Decision::Audit as u8;
    ev.op = Op::Write as u8;
    assert_eq!(
        format_row(&rec(KernelRecord::from_event(&ev, None).into())),
        "2026-01-02T03:04:05Z decision        #3               write    deny->audit       100 \
         /tmp/x\\ny\\x1b[2J  rule: #2"
    );
    assert_eq!(
        format_row(&rec(RecordBody::Approval(Approval {
            request_id: 5,
            reviewer: "alice".into(),
            decision: ApprovalDecision::Kill,
            scope: "once".into(),
            reason: Some("not today".into()),
            action: None,
            approvals_missing: 0,
        }))),
        "2026-01-02T03:04:05Z approval        -                -        kill                - \
         request 5 by alice, scope once: not today"
    );
    assert_eq!(
        format_row(&rec(RecordBody::EventsDropped(EventsDropped {
            count: 2,
            total: 9
        }))),
        "2026-01-02T03:04:05Z events_dropped  -                -        -                   - \
         2 event(s) dropped, 9 in total"
    );
    assert!(format_line(b"{oops").starts_with("unreadable record ("));
    // A path that is not UTF-8 is shown from its exact bytes, not as replacement characters.
    let mut ev = event(b"/tmp/\xff\r\xfe");
    ev.kind = EventKind::Decision as u8;
    ev.request_id = 0;
    ev.decision = Decision::Deny as u8;
    ev.enforced = Decision::Deny as u8;
    ev.op = Op::Write as u8;
    assert_eq!(
        format_row(&rec(KernelRecord::from_event(&ev, None).into())),
        "2026-01-02T03:04:05Z decision        #3               write    deny              100 \
         /tmp/\\xff\\r\\xfe  rule: #2"
    );
}
