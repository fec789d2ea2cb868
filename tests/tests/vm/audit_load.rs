//! Lossless audit under load: an agent flooding audited operations while nobody reads the ring
//! buffer. Every audited operation that succeeded has its record; those the buffer had no room
//! for failed with `EPERM` and were counted; nothing was dropped; and the records that must not
//! be lost (a denial) still find room in the reserve.
use std::{
    ptr,
    sync::atomic::{AtomicU64, Ordering},
};

use jit_common::{
    event::{EventKind, counter},
    policy::{Decision, Mode, Op},
};
use jit_tests::{AgentSetup, ForkedChild, TestDir, c_path, require_vm};

/// More audited opens than the ring buffer has room for (about 150 bytes a record, 3 MiB for
/// them).
const OPENS: u64 = 40_000;

#[test]
fn an_audit_flood_refuses_what_it_cannot_record_and_keeps_denials() {
    require_vm();
    let dir = TestDir::new("audit-load");
    let file = dir.path().join("audited");
    std::fs::write(&file, "x").unwrap();
    let denied = dir.path().join("denied");
    std::fs::write(&denied, "x").unwrap();
    let mut setup = AgentSetup::new("audit-load", Decision::Allow, Mode::Enforce);
    let audit_rule = setup.rule(Op::Write, file.to_str().unwrap(), Decision::Audit);
    let deny_rule = setup.rule(Op::Write, denied.to_str().unwrap(), Decision::Deny);
    let _ = setup.drain_events();
    let before = setup.enforcer().counters().expect("counters");

    let [ok, refused, other, denied_errno] = flood(&setup, &file, &denied);

    let events = setup.drain_events();
    let after = setup.enforcer().counters().expect("counters");
    let delta = |c: u32| after[c as usize] - before[c as usize];
    let audited = events
        .iter()
        .filter(|e| {
            e.kind == EventKind::Decision as u8
                && e.enforced == Decision::Audit as u8
                && e.rule_id == audit_rule
        })
        .count() as u64;
    let denials = events
        .iter()
        .filter(|e| e.enforced == Decision::Deny as u8 && e.rule_id == deny_rule)
        .count();
    eprintln!(
        "audit flood: {OPENS} opens, {ok} succeeded, {refused} refused, {audited} audit records, \
         {} events emitted, {} dropped",
        delta(counter::EVENTS_EMITTED),
        delta(counter::EVENTS_DROPPED)
    );
    assert_eq!(other, 0, "no other errors");
    assert!(refused > 0, "the flood outgrew the buffer");
    assert!(ok > 1000, "audited opens succeed while there is room");
    assert_eq!(
        audited, ok,
        "every audited open that succeeded has its record"
    );
    assert_eq!(
        delta(counter::AUDIT_REFUSED),
        refused,
        "every refusal counted"
    );
    assert_eq!(delta(counter::EVENTS_DROPPED), 0, "nothing dropped");
    assert_eq!(denied_errno, libc::EPERM as u64);
    assert_eq!(denials, 1, "the denial found room in the reserve");
    assert_eq!(
        delta(counter::EVENTS_EMITTED),
        events.len() as u64,
        "emitted = read"
    );
}

/// An agent of `setup` opens `file` for writing [`OPENS`] times, then `denied` once:
/// `[succeeded, refused with EPERM, failed otherwise, errno of the last open]`.
fn flood(setup: &AgentSetup, file: &std::path::Path, denied: &std::path::Path) -> [u64; 4] {
    flood_in(&setup.cgroup.procs(), file, denied)
}

/// [`flood`] from the cgroup whose `cgroup.procs` is `procs`.
fn flood_in(
    procs: &std::ffi::CString,
    file: &std::path::Path,
    denied: &std::path::Path,
) -> [u64; 4] {
    // [succeeded, refused, other errno, the denied open's errno], shared with the child.
    // SAFETY: a fresh anonymous shared mapping, unmapped at the end.
    let page = unsafe {
        libc::mmap(
            ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    let base = page as usize;
    let (c_file, c_denied) = (c_path(file), c_path(denied));
    let child = ForkedChild::start(procs, move || {
        // SAFETY: four aligned words of the shared page.
        let slots = unsafe { &*(base as *const [AtomicU64; 4]) };
        for _ in 0..OPENS {
            // SAFETY: a valid path.
            let fd = unsafe { libc::open(c_file.as_ptr(), libc::O_WRONLY) };
            if fd >= 0 {
                slots[0].fetch_add(1, Ordering::Relaxed);
                // SAFETY: our own descriptor.
                unsafe { libc::close(fd) };
            } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                slots[1].fetch_add(1, Ordering::Relaxed);
            } else {
                slots[2].fetch_add(1, Ordering::Relaxed);
            }
        }
        // SAFETY: a valid path.
        let fd = unsafe { libc::open(c_denied.as_ptr(), libc::O_WRONLY) };
        let errno = if fd >= 0 {
            0
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        };
        slots[3].store(u64::try_from(errno).unwrap_or(255), Ordering::Relaxed);
        0
    });
    assert_eq!(child.result(), 0);
    // SAFETY: as in the child.
    let slots = unsafe { &*(base as *const [AtomicU64; 4]) };
    let counts = [0, 1, 2, 3].map(|i| slots[i].load(Ordering::Relaxed));
    // SAFETY: our own mapping.
    unsafe { libc::munmap(page, 4096) };
    counts
}

/// Shadow mode never refuses: when the ring buffer is down to its reserve, the records of what
/// the policy would have refused are dropped and counted instead, and the reserve stays free.
#[test]
fn a_shadow_flood_drops_and_counts_and_refuses_nothing() {
    require_vm();
    let dir = TestDir::new("audit-load-shadow");
    let file = dir.path().join("would-deny");
    std::fs::write(&file, "x").unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, "x").unwrap();
    let mut setup = AgentSetup::new("audit-shadow", Decision::Allow, Mode::Shadow);
    let rule = setup.rule(Op::Write, file.to_str().unwrap(), Decision::Deny);
    let _ = setup.drain_events();
    let before = setup.enforcer().counters().expect("counters");
    let [ok, refused, failed, last] = flood(&setup, &file, &other);
    let events = setup.drain_events();
    let after = setup.enforcer().counters().expect("counters");
    let delta = |c: u32| after[c as usize] - before[c as usize];
    let recorded = events.iter().filter(|e| e.rule_id == rule).count() as u64;
    eprintln!(
        "shadow flood: {OPENS} opens, {ok} succeeded, {recorded} records, {} dropped",
        delta(counter::EVENTS_DROPPED)
    );
    assert_eq!(
        (ok, refused, failed, last),
        (OPENS, 0, 0, 0),
        "nothing refused"
    );
    assert!(
        delta(counter::EVENTS_DROPPED) > 0,
        "the flood outgrew the buffer"
    );
    assert_eq!(
        recorded + delta(counter::EVENTS_DROPPED),
        OPENS,
        "every would-be denial is recorded or counted as dropped"
    );
    assert_eq!(delta(counter::AUDIT_REFUSED), 0);
    let used: u64 = events.iter().map(|e| e.wire_len() as u64).sum();
    assert!(
        used <= u64::from(jit_common::event::EVENTS_BYTES - 1024 * 1024),
        "the reserve stayed free ({used} bytes used)"
    );
}

/// A denial flood while nobody reads: every denial is refused and is either a record of its
/// own or counted under its agent, rule and op in the kernel's `DENIALS` map; nothing is
/// dropped; the denials leave the hold reserve free, so a hold made after the flood still has
/// its record and is answered.
#[test]
fn a_denial_flood_is_counted_and_leaves_room_for_holds() {
    use jit_common::event::{DenialKey, EVENTS_BYTES, EVENTS_HOLD_RESERVE};

    require_vm();
    let dir = TestDir::new("audit-load-deny");
    let denied = dir.path().join("denied");
    std::fs::write(&denied, "x").unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, "x").unwrap();
    let mut setup = AgentSetup::new("audit-deny", Decision::Allow, Mode::Enforce);
    let deny_rule = setup.rule(Op::Write, denied.to_str().unwrap(), Decision::Deny);
    let tool = dir.install_true("held");
    let hold_rule = setup.rule(Op::Exec, &tool, Decision::Hold);
    let _ = setup.drain_events();
    let before = setup.enforcer().counters().expect("counters");
    let key = DenialKey {
        agent_id: setup.agent,
        rule_id: deny_rule,
        op: Op::Write as u8,
        kind: EventKind::Decision as u8,
        pad: [0; 2],
    };
    let counted_before = denied_count(&mut setup, &key);

    let [ok, refused, failed, last] = flood(&setup, &denied, &other);

    let after = setup.enforcer().counters().expect("counters");
    let delta = |c: u32| after[c as usize] - before[c as usize];
    let counted = denied_count(&mut setup, &key) - counted_before;
    // A hold after the flood, with the ring still unread: its record is there.
    let child = setup.cgroup.spawn(&tool);
    let (tid, request) = setup.wait_for_hold();
    let events = setup.drain_events();
    setup.approve(tid, &request);
    jit_tests::assert_ran(&setup.join(child), "the approved exec");

    let recorded = events
        .iter()
        .filter(|e| e.rule_id == deny_rule && e.enforced == Decision::Deny as u8)
        .count() as u64;
    let holds = events
        .iter()
        .filter(|e| e.kind == EventKind::Hold as u8 && e.rule_id == hold_rule)
        .count();
    let denial_bytes: u64 = events
        .iter()
        .filter(|e| e.rule_id == deny_rule)
        .map(|e| e.wire_len() as u64 + 8)
        .sum();
    eprintln!(
        "denial flood: {OPENS} opens, {refused} refused, {recorded} records, {counted} counted \
         in DENIALS, {} dropped, {denial_bytes} bytes of denial records",
        delta(counter::EVENTS_DROPPED)
    );
    assert_eq!(
        (ok, refused, failed, last),
        (0, OPENS, 0, 0),
        "every open refused"
    );
    assert!(counted > 0, "the flood outgrew the room for denial records");
    assert_eq!(
        recorded + counted,
        OPENS,
        "every denial is a record or counted under its key"
    );
    assert_eq!(delta(counter::DENIALS_SUMMARIZED), counted);
    assert_eq!(delta(counter::DENIALS_UNKEYED), 0);
    assert_eq!(delta(counter::EVENTS_DROPPED), 0, "nothing dropped");
    assert!(
        denial_bytes <= u64::from(EVENTS_BYTES) - EVENTS_HOLD_RESERVE,
        "the hold reserve stayed free of denials ({denial_bytes} bytes)"
    );
    assert_eq!(holds, 1, "the hold after the flood has its record");
}

/// The kernel's count of denials without records under `key` (0 without an entry).
fn denied_count(setup: &mut AgentSetup, key: &jit_common::event::DenialKey) -> u64 {
    setup
        .enforcer()
        .denials()
        .expect("read the DENIALS map")
        .into_iter()
        .find(|(k, _)| k == key)
        .map_or(0, |(_, v)| v.count)
}

/// The same flood against the real daemon, stopped (`SIGSTOP`) so that nobody reads the ring:
/// once it runs again, its audit log accounts for every denial, each either a `kernel` record
/// of its own or counted in a `denials_summarized` record naming the agent, the rule and the op.
#[test]
fn the_daemon_audits_every_denial_of_a_flood() {
    use std::time::Duration;

    use jit_tests::daemon::{DaemonFiles, eventually};
    use nix::{sys::signal, unistd::Pid};

    const CGROUP: &str = "jit-test-denial-flood/agent";
    require_vm();
    let dir = TestDir::new("audit-load-daemon");
    let denied = dir.path().join("denied");
    std::fs::write(&denied, "x").unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, "x").unwrap();
    let mut files = DaemonFiles::new("denial-flood");
    files
        .cgroups
        .extend([CGROUP.to_owned(), "jit-test-denial-flood".to_owned()]);
    files.write_policy(
        "flooder.toml",
        &format!(
            r#"[agent]
name = "flooder"
cgroups = ["{CGROUP}"]
default = "allow"

[[rule]]
name = "no-flood"
op = "write"
path = "{}"
decision = "deny"
"#,
            denied.display()
        ),
    );
    let daemon = files.start();
    let pid = Pid::from_raw(i32::try_from(daemon.pid()).unwrap());
    signal::kill(pid, signal::Signal::SIGSTOP).expect("stop the daemon");
    let procs = jit_tests::procs_of(&std::path::Path::new("/sys/fs/cgroup").join(CGROUP));
    let counts = flood_in(&procs, &denied, &other);
    signal::kill(pid, signal::Signal::SIGCONT).expect("let the daemon go on");
    assert_eq!(
        counts,
        [0, OPENS, 0, 0],
        "every open refused, the other allowed"
    );

    // (kernel records of the rule's denials, sum of `count` of its `denials_summarized`)
    let tally = || {
        let log = std::fs::read_to_string(&files.audit).unwrap_or_default();
        let mut recorded = 0_u64;
        let mut summarized = 0_u64;
        for line in log.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["rule"] != "no-flood" {
                continue;
            }
            match v["type"].as_str() {
                Some("kernel") if v["enforced"] == "deny" => recorded += 1,
                Some("denials_summarized") => {
                    assert_eq!(v["agent"], "flooder", "{line}");
                    assert_eq!(v["op"], "write", "{line}");
                    summarized += v["count"].as_u64().unwrap();
                }
                _ => {}
            }
        }
        (recorded, summarized)
    };
    let complete = eventually(Duration::from_mins(3), || {
        let (recorded, summarized) = tally();
        recorded + summarized >= OPENS
    });
    let (recorded, summarized) = tally();
    eprintln!(
        "daemon denial flood: {OPENS} denials, {recorded} kernel records, {summarized} in \
         denials_summarized records"
    );
    assert!(
        complete,
        "the log accounts for every denial:\n{}",
        daemon.log()
    );
    assert!(
        summarized > 0,
        "the flood outgrew the room for denial records"
    );
    assert_eq!(recorded + summarized, OPENS, "no denial is counted twice");
}
