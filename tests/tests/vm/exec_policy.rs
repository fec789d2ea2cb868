//! Exec decisions from policy rules, on the real `bprm_check_security` hook: allow, deny and
//! audit by rule and by default, shadow mode, most-specific-wins, wildcards, symlinks, `execveat`
//! (directory fd, `AT_EMPTY_PATH`, `/proc/self/fd`), `memfd` programs, and the events and counters
//! each decision produces.
use std::{
    ffi::CStr,
    fs,
    io::{self, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _},
    path::Path,
};

use jit_common::{
    event::{Event, counter},
    policy::{Decision, Mode, Op},
};
use jit_tests::{AgentSetup as Setup, TestDir, assert_eperm, assert_ran, require_vm};

fn only_event(setup: &mut Setup) -> Event {
    let events = setup.drain_events();
    assert_eq!(
        events.len(),
        1,
        "expected exactly one event, got {}",
        events.len()
    );
    events[0]
}

#[test]
fn exact_rule_allows_and_default_denies() {
    require_vm();
    let dir = TestDir::new("exec-allow");
    let allowed = dir.install_true("allowed");
    let other = dir.install_true("other");
    let mut setup = Setup::new("allow", Decision::Deny, Mode::Enforce);
    setup.rule(Op::Exec, &allowed, Decision::Allow);
    assert_ran(&setup.exec(&allowed), "exec allowed by an exact rule");
    assert!(
        setup.drain_events().is_empty(),
        "a silent allow emits no event"
    );
    assert_eperm(&setup.exec(&other), "exec falling to the default deny");
    let event = only_event(&mut setup);
    assert_eq!(event.path_bytes(), other.as_bytes());
    assert_eq!(
        (event.decision, event.enforced, event.rule_id),
        (Decision::Deny as u8, Decision::Deny as u8, 0)
    );
}

#[test]
fn directory_rule_denies_with_an_event_naming_the_rule() {
    require_vm();
    let dir = TestDir::new("exec-deny");
    let denied = dir.install_true("denied");
    let fine = dir.install_true("fine");
    let mut setup = Setup::new("deny", Decision::Allow, Mode::Enforce);
    let rule = setup.rule(
        Op::Exec,
        &format!("{}/denied/", dir.path().display()),
        Decision::Deny,
    );
    assert_eperm(&setup.exec(&denied), "exec under a denied directory");
    let event = only_event(&mut setup);
    assert_eq!(event.rule_id, rule);
    assert_eq!(event.op, Op::Exec as u8);
    assert_eq!(event.agent_id, setup.agent);
    assert_eq!(event.path_bytes(), denied.as_bytes());
    assert!(
        event.pid > 0 && event.tgid == event.pid && event.ppid == std::process::id(),
        "pid {} tgid {} ppid {}",
        event.pid,
        event.tgid,
        event.ppid
    );
    assert_ran(&setup.exec(&fine), "exec outside the denied directory");
}

#[test]
fn symlink_to_a_denied_binary_is_denied() {
    require_vm();
    let dir = TestDir::new("exec-symlink");
    let denied = dir.install_true("denied");
    let link = dir.path().join("innocent-name");
    std::os::unix::fs::symlink(&denied, &link).expect("symlink");
    let mut setup = Setup::new("symlink", Decision::Allow, Mode::Enforce);
    setup.rule(Op::Exec, &denied, Decision::Deny);
    assert_eperm(
        &setup.exec(link.to_str().unwrap()),
        "exec through a symlink",
    );
    assert_eq!(
        only_event(&mut setup).path_bytes(),
        denied.as_bytes(),
        "the event names the resolved path"
    );
}

#[test]
fn audit_rule_runs_and_reports() {
    require_vm();
    let dir = TestDir::new("exec-audit");
    let audited = dir.install_true("audited");
    let mut setup = Setup::new("audit", Decision::Deny, Mode::Enforce);
    setup.rule(Op::Exec, &audited, Decision::Audit);
    assert_ran(&setup.exec(&audited), "exec under an audit rule");
    let event = only_event(&mut setup);
    assert_eq!(
        (event.decision, event.enforced),
        (Decision::Audit as u8, Decision::Audit as u8)
    );
}

#[test]
fn shadow_mode_reports_the_denial_but_allows() {
    require_vm();
    let dir = TestDir::new("exec-shadow");
    let denied = dir.install_true("denied");
    let mut setup = Setup::new("shadow", Decision::Allow, Mode::Shadow);
    setup.rule(Op::Exec, &denied, Decision::Deny);
    assert_ran(&setup.exec(&denied), "exec denied by a rule in shadow mode");
    let event = only_event(&mut setup);
    assert_eq!(
        event.decision,
        Decision::Deny as u8,
        "the event says what enforce mode would do"
    );
    assert_ne!(event.enforced, Decision::Deny as u8);
}

#[test]
fn most_specific_rule_wins() {
    require_vm();
    let dir = TestDir::new("exec-specific");
    let tool = dir.install_true("tools");
    let other = dir.install_true("other");
    let mut setup = Setup::new("specific", Decision::Allow, Mode::Enforce);
    setup.rule(
        Op::Exec,
        &format!("{}/", dir.path().display()),
        Decision::Deny,
    );
    setup.rule(Op::Exec, &tool, Decision::Allow);
    assert_ran(&setup.exec(&tool), "exact allow inside a denied directory");
    assert_eperm(&setup.exec(&other), "the rest of the denied directory");
}

#[test]
fn wildcard_component_matches_one_component() {
    require_vm();
    let dir = TestDir::new("exec-wildcard");
    let a = dir.install_true("a");
    let b = dir.install_true("b");
    let nested = dir.install_true("c/d");
    let mut setup = Setup::new("wildcard", Decision::Allow, Mode::Enforce);
    setup.rule(
        Op::Exec,
        &format!("{}/*/true", dir.path().display()),
        Decision::Deny,
    );
    assert_eperm(&setup.exec(&a), "wildcard matches a");
    assert_eperm(&setup.exec(&b), "wildcard matches b");
    assert_ran(
        &setup.exec(&nested),
        "a wildcard never spans two components",
    );
}

#[test]
fn counters_agree_with_events() {
    require_vm();
    let dir = TestDir::new("exec-counters");
    let denied = dir.install_true("denied");
    let audited = dir.install_true("audited");
    let mut setup = Setup::new("counters", Decision::Allow, Mode::Enforce);
    setup.rule(Op::Exec, &denied, Decision::Deny);
    setup.rule(Op::Exec, &audited, Decision::Audit);
    let before = setup.enforcer().counters().expect("counters");
    for _ in 0..3 {
        assert_eperm(&setup.exec(&denied), "denied exec");
        assert_ran(&setup.exec(&audited), "audited exec");
    }
    let after = setup.enforcer().counters().expect("counters");
    let events = setup.drain_events();
    let delta = |i: u32| after[i as usize] - before[i as usize];
    assert_eq!(delta(counter::DECISION_BASE + Decision::Deny as u32), 3);
    assert_eq!(delta(counter::DECISION_BASE + Decision::Audit as u32), 3);
    assert_eq!(delta(counter::EVENTS_EMITTED), 6);
    assert_eq!(delta(counter::EVENTS_DROPPED), 0);
    assert_eq!(events.len(), 6, "every counted event arrived");
}

/// `execveat(dirfd, path, [name], [], flags)`; returns only on failure. Async-signal-safe.
fn execveat(dirfd: i32, path: &'static CStr, flags: i32, name: &'static CStr) -> io::Result<()> {
    let args = [name.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: NUL-terminated strings and NULL-terminated arrays that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            dirfd,
            path.as_ptr(),
            args.as_ptr(),
            envp.as_ptr(),
            flags,
        );
    }
    Err(io::Error::last_os_error())
}

#[test]
fn execveat_and_fd_paths_are_decided_on_the_file_executed() {
    require_vm();
    let dir = TestDir::new("execveat");
    let denied = dir.install_true("denied");
    let allowed = dir.install_true("allowed");
    let mut setup = Setup::new("execveat", Decision::Allow, Mode::Enforce);
    let rule = setup.rule(Op::Exec, &denied, Decision::Deny);
    let expect_denied = |setup: &mut Setup, what: &str| {
        let event = only_event(setup);
        assert_eq!(
            (event.path_bytes(), event.rule_id),
            (denied.as_bytes(), rule),
            "{what}: the event names the file executed"
        );
    };

    // A directory fd and a name relative to it.
    let parent = fs::File::open(Path::new(&denied).parent().unwrap()).expect("open directory");
    let dirfd = parent.as_raw_fd();
    assert_eperm(
        &setup
            .cgroup
            .run_exec(move || execveat(dirfd, c"true", 0, c"true")),
        "execveat(dirfd, \"true\")",
    );
    expect_denied(&mut setup, "execveat(dirfd, name)");

    // An O_PATH descriptor and AT_EMPTY_PATH (what fexecve does).
    let opath = open_path(&denied, libc::O_PATH);
    let fd = opath.as_raw_fd();
    assert_eperm(
        &setup
            .cgroup
            .run_exec(move || execveat(fd, c"", libc::AT_EMPTY_PATH, c"true")),
        "execveat(O_PATH fd, \"\", AT_EMPTY_PATH)",
    );
    expect_denied(&mut setup, "execveat(fd, AT_EMPTY_PATH)");

    // /proc/self/fd/N of a descriptor open on the file.
    let file = fs::File::open(&denied).expect("open denied program");
    let via_proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    assert_eperm(&setup.exec(&via_proc), "execve(/proc/self/fd/N)");
    expect_denied(&mut setup, "execve(/proc/self/fd/N)");

    // The same ways to an allowed program run.
    let allowed_fd = open_path(&allowed, libc::O_PATH);
    let fd = allowed_fd.as_raw_fd();
    assert_ran(
        &setup
            .cgroup
            .run_exec(move || execveat(fd, c"", libc::AT_EMPTY_PATH, c"true")),
        "execveat of an allowed program",
    );
}

#[test]
fn memfd_exec_is_decided_by_its_memfd_path() {
    require_vm();
    let dir = TestDir::new("memfd");
    let allowed = dir.install_true("allowed");
    let mut setup = Setup::new("memfd", Decision::Deny, Mode::Enforce);
    setup.rule(Op::Exec, &allowed, Decision::Allow);
    // The bytes of the allowed program, in an anonymous memory file.
    // SAFETY: NUL-terminated name.
    let raw = unsafe { libc::memfd_create(c"jit-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0, "memfd_create: {}", io::Error::last_os_error());
    // SAFETY: a descriptor we own.
    let mut memfd = unsafe { fs::File::from_raw_fd(raw) };
    memfd
        .write_all(&fs::read(&allowed).expect("read allowed program"))
        .expect("fill memfd");
    let fd = memfd.as_raw_fd();
    assert_eperm(
        &setup
            .cgroup
            .run_exec(move || execveat(fd, c"", libc::AT_EMPTY_PATH, c"true")),
        "a memfd holding an allowed program falls to the default deny",
    );
    let event = only_event(&mut setup);
    assert!(
        event.path_bytes().starts_with(b"/memfd:jit-test"),
        "the event names the memfd: {:?}",
        String::from_utf8_lossy(event.path_bytes())
    );
    // The same bytes from the allowed path run: the path decides, not the content.
    assert_ran(&setup.exec(&allowed), "the allowed program itself");
}

fn open_path(path: &str, flags: i32) -> fs::File {
    let c = std::ffi::CString::new(path).expect("path without NUL");
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    assert!(fd >= 0, "open {path}: {}", io::Error::last_os_error());
    // SAFETY: a descriptor we own.
    unsafe { fs::File::from_raw_fd(fd) }
}
