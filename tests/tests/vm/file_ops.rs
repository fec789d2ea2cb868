//! Every hooked file operation × {allow, deny, hold→approve, hold→deny}: a real syscall made by
//! a child process inside the agent cgroup, asserting its errno and what happened on disk —
//! nothing while the task is held or after a denial, the change once allowed.
use std::{
    ffi::CString,
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use jit_common::policy::{Decision, Mode, Op};
use jit_tests::{AgentSetup, ForkedChild, TestDir, require_vm, wait_stopped};

/// One file operation: how to prepare its target, the syscall, and whether it took effect.
#[derive(Clone, Copy)]
enum FileAct {
    /// `open(O_WRONLY)`, write, close.
    Write,
    /// `open(O_CREAT | O_EXCL | O_WRONLY)`.
    Create,
    Unlink,
    Mkdir,
    Rmdir,
    /// `truncate(path, 0)`.
    Truncate,
    /// `chmod(path, 0600)`.
    Chmod,
    /// `chown(path, 1, 1)`.
    Chown,
    /// `rename(source, target)`, `source` beside the target.
    Rename,
    /// `link(source, target)`.
    Link,
    /// `symlink("/nowhere", target)`.
    Symlink,
}

/// The existing file two-path ops start from, next to `target`.
fn source_of(target: &Path) -> PathBuf {
    target.with_file_name("source")
}

impl FileAct {
    fn op(self) -> Op {
        match self {
            Self::Write => Op::Write,
            Self::Create => Op::Create,
            Self::Unlink => Op::Unlink,
            Self::Mkdir => Op::Mkdir,
            Self::Rmdir => Op::Rmdir,
            Self::Truncate => Op::Truncate,
            Self::Chmod => Op::Chmod,
            Self::Chown => Op::Chown,
            Self::Rename => Op::Rename,
            Self::Link => Op::Link,
            Self::Symlink => Op::Symlink,
        }
    }

    fn prepare(self, target: &Path) {
        match self {
            Self::Write | Self::Unlink | Self::Truncate | Self::Chown => {
                fs::write(target, "data").unwrap();
            }
            Self::Chmod => {
                fs::write(target, "data").unwrap();
                fs::set_permissions(target, fs::Permissions::from_mode(0o644)).unwrap();
            }
            Self::Rmdir => fs::create_dir(target).unwrap(),
            Self::Rename | Self::Link => fs::write(source_of(target), "data").unwrap(),
            Self::Create | Self::Mkdir | Self::Symlink => {}
        }
    }

    fn took_effect(self, target: &Path) -> bool {
        let meta = fs::symlink_metadata(target);
        match self {
            Self::Write => fs::read_to_string(target).unwrap() == "new!",
            Self::Create => meta.is_ok_and(|m| m.is_file()),
            Self::Mkdir => meta.is_ok_and(|m| m.is_dir()),
            Self::Unlink | Self::Rmdir => meta.is_err(),
            Self::Truncate => meta.unwrap().len() == 0,
            Self::Chmod => meta.unwrap().mode() & 0o777 == 0o600,
            Self::Chown => meta.unwrap().uid() == 1,
            Self::Rename => meta.is_ok() && !source_of(target).exists(),
            Self::Link => meta.is_ok_and(|m| m.is_file()) && source_of(target).exists(),
            Self::Symlink => meta.is_ok_and(|m| m.file_type().is_symlink()),
        }
    }

    /// The syscall, in the forked child: returns 0 or the errno. Async-signal-safe.
    unsafe fn perform(self, path: &CString, source: &CString) -> i32 {
        // SAFETY: plain syscalls on a valid C string.
        let ret = unsafe {
            match self {
                Self::Write => {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_TRUNC);
                    if fd >= 0 {
                        libc::write(fd, b"new!".as_ptr().cast(), 4);
                        libc::close(fd);
                    }
                    fd
                }
                Self::Create => {
                    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
                    let fd = libc::open(path.as_ptr(), flags, 0o644);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    fd
                }
                Self::Unlink => libc::unlink(path.as_ptr()),
                Self::Mkdir => libc::mkdir(path.as_ptr(), 0o755),
                Self::Rmdir => libc::rmdir(path.as_ptr()),
                Self::Truncate => libc::truncate(path.as_ptr(), 0),
                Self::Chmod => libc::chmod(path.as_ptr(), 0o600),
                Self::Chown => libc::chown(path.as_ptr(), 1, 1),
                Self::Rename => libc::rename(source.as_ptr(), path.as_ptr()),
                Self::Link => libc::link(source.as_ptr(), path.as_ptr()),
                Self::Symlink => libc::symlink(c"/nowhere".as_ptr(), path.as_ptr()),
            }
        };
        if ret < 0 {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        } else {
            0
        }
    }
}

/// A child process in the agent cgroup that performs one file operation on `target`.
fn start(setup: &AgentSetup, act: FileAct, target: &Path) -> ForkedChild {
    let path = CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
    let source = CString::new(source_of(target).into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: `perform` is async-signal-safe.
    ForkedChild::start(&setup.cgroup.procs(), move || unsafe {
        act.perform(&path, &source)
    })
}

/// Runs the four cases of one operation, each on its own target in `dir`.
fn check_op(act: FileAct) {
    require_vm();
    let op = act.op();
    let dir = TestDir::new(&format!("file-{}", op.name()));
    let mut setup = AgentSetup::new(
        &format!("file-{}", op.name()),
        Decision::Allow,
        Mode::Enforce,
    );
    let target = |case: &str| -> PathBuf {
        let sub = dir.path().join(case);
        fs::create_dir_all(&sub).unwrap();
        let target = sub.join("target");
        act.prepare(&target);
        target
    };
    let what = |case: &str| format!("{} {case}", op.name());

    // allow: an exact allow beats a deny of its whole directory.
    let allowed = target("allow");
    setup.rule(
        op,
        &format!("{}/", allowed.parent().unwrap().display()),
        Decision::Deny,
    );
    setup.rule(op, allowed.to_str().unwrap(), Decision::Allow);
    if matches!(act, FileAct::Rename | FileAct::Link) {
        // Both ends are checked: the source, in the same denied directory, needs its own allow.
        setup.rule(op, source_of(&allowed).to_str().unwrap(), Decision::Allow);
    }
    assert_eq!(
        start(&setup, act, &allowed).result(),
        0,
        "{}",
        what("allowed")
    );
    assert!(act.took_effect(&allowed), "{}: no effect", what("allowed"));

    // deny
    let denied = target("deny");
    setup.rule(op, denied.to_str().unwrap(), Decision::Deny);
    assert_eq!(
        start(&setup, act, &denied).result(),
        libc::EPERM,
        "{}",
        what("denied")
    );
    assert!(!act.took_effect(&denied), "{}: took effect", what("denied"));

    // hold → approve, and hold → deny
    for (case, approve) in [("hold-approve", true), ("hold-deny", false)] {
        let held = target(case);
        setup.rule(op, held.to_str().unwrap(), Decision::Hold);
        let child = start(&setup, act, &held);
        let (tid, request) = setup.wait_for_hold();
        assert_eq!(request.op, op as u8);
        wait_stopped(request.tgid);
        thread::sleep(Duration::from_millis(100));
        assert!(
            !act.took_effect(&held),
            "{}: took effect while held",
            what(case)
        );
        setup
            .enforcer()
            .answer(tid, request.request_id, approve)
            .expect("answer");
        let expected = if approve { 0 } else { libc::EPERM };
        assert_eq!(child.result(), expected, "{}", what(case));
        assert_eq!(act.took_effect(&held), approve, "{}: effect", what(case));
    }
    assert!(setup.pending().is_empty(), "every answer consumed");
}

#[test]
fn write() {
    check_op(FileAct::Write);
}

/// Held before the inode exists: an `O_EXCL` create held and then approved succeeds (no
/// `EEXIST` from the restarted open), and a denied one leaves no file.
#[test]
fn create_with_o_excl() {
    check_op(FileAct::Create);
}

#[test]
fn unlink() {
    check_op(FileAct::Unlink);
}

#[test]
fn mkdir() {
    check_op(FileAct::Mkdir);
}

#[test]
fn rmdir() {
    check_op(FileAct::Rmdir);
}

#[test]
fn truncate() {
    check_op(FileAct::Truncate);
}

#[test]
fn chmod() {
    check_op(FileAct::Chmod);
}

#[test]
fn chown() {
    check_op(FileAct::Chown);
}

#[test]
fn rename_checks_source_and_target() {
    check_op(FileAct::Rename);
}

#[test]
fn link() {
    check_op(FileAct::Link);
}

#[test]
fn symlink() {
    check_op(FileAct::Symlink);
}

#[test]
fn hard_link_to_a_denied_file_is_denied() {
    require_vm();
    let dir = TestDir::new("file-hardlink");
    let secret = dir.path().join("secrets").join("source");
    fs::create_dir_all(secret.parent().unwrap()).unwrap();
    fs::write(&secret, "data").unwrap();
    let open = dir.path().join("open");
    fs::create_dir_all(&open).unwrap();
    let alias = open.join("target");
    fs::rename(&secret, source_of(&alias)).ok();
    // The secret lives at secrets/source; give the attacker's link a name in an allowed place.
    fs::rename(source_of(&alias), &secret).unwrap();
    let mut setup = AgentSetup::new("file-hardlink", Decision::Allow, Mode::Enforce);
    setup.rule(
        Op::Link,
        &format!("{}/", secret.parent().unwrap().display()),
        Decision::Deny,
    );
    setup.rule(
        Op::Write,
        &format!("{}/", secret.parent().unwrap().display()),
        Decision::Deny,
    );
    let procs = setup.cgroup.path().join("cgroup.procs");
    let status = run_in_cgroup(&procs, || {
        // SAFETY: plain syscall on valid C strings.
        unsafe { libc::link(c_path(&secret).as_ptr(), c_path(&alias).as_ptr()) }
    });
    assert_eq!(
        status,
        libc::EPERM,
        "link of a file under a denied directory"
    );
    assert!(!alias.exists(), "no second name was created");
}

#[test]
fn renaming_a_denied_file_into_an_allowed_directory_is_denied() {
    require_vm();
    let dir = TestDir::new("file-rename-out");
    let secrets = dir.path().join("secrets");
    fs::create_dir_all(&secrets).unwrap();
    let secret = secrets.join("key");
    fs::write(&secret, "data").unwrap();
    let open = dir.path().join("open");
    fs::create_dir_all(&open).unwrap();
    let moved = open.join("key");
    let mut setup = AgentSetup::new("file-rename-out", Decision::Allow, Mode::Enforce);
    setup.rule(
        Op::Rename,
        &format!("{}/", secrets.display()),
        Decision::Deny,
    );
    setup.rule(Op::Rename, &format!("{}/", open.display()), Decision::Allow);
    let procs = setup.cgroup.path().join("cgroup.procs");
    let (from, to) = (c_path(&secret), c_path(&moved));
    let status = run_in_cgroup(&procs, || {
        // SAFETY: plain syscall on valid C strings.
        unsafe { libc::rename(from.as_ptr(), to.as_ptr()) }
    });
    assert_eq!(status, libc::EPERM, "rename out of a denied directory");
    assert!(secret.exists() && !moved.exists());
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
}

/// Runs `syscall` in a forked child inside the cgroup whose `cgroup.procs` is `procs`; returns
/// its errno (0 = success). The closure must be async-signal-safe: build its strings first.
fn run_in_cgroup(procs: &Path, syscall: impl Fn() -> i32) -> i32 {
    ForkedChild::start(&c_path(procs), || {
        if syscall() == 0 {
            0
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        }
    })
    .result()
}

#[test]
fn write_through_a_symlink_to_a_denied_file_is_denied() {
    require_vm();
    let dir = TestDir::new("file-symlink");
    let secret = dir.path().join("secret");
    fs::write(&secret, "data").unwrap();
    let link = dir.path().join("innocent");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let mut setup = AgentSetup::new("file-symlink", Decision::Allow, Mode::Enforce);
    setup.rule(Op::Write, secret.to_str().unwrap(), Decision::Deny);
    assert_eq!(start(&setup, FileAct::Write, &link).result(), libc::EPERM);
    assert_eq!(fs::read_to_string(&secret).unwrap(), "data");
}

/// A hold is made even when the event ring buffer is full: the pending entry, not the event,
/// keeps the task held, and the dropped events are counted. Denials cannot fill the ring (they
/// leave the last 256 KiB to holds and are counted instead, see `audit_load`), so the ring is
/// filled with the records of a timed grant in use: 40,000 opens of a file a grant covers, each
/// reported, that nobody reads.
#[test]
fn hold_with_a_full_ring_buffer() {
    use jit_common::{event::counter, pending::GrantKey};
    require_vm();
    let dir = TestDir::new("ringfull");
    let granted = dir.path().join("granted");
    let held = dir.path().join("held");
    fs::write(&granted, b"").unwrap();
    fs::write(&held, b"before").unwrap();
    let mut setup = AgentSetup::new("ringfull", Decision::Allow, Mode::Enforce);
    setup.rule(Op::Write, granted.to_str().unwrap(), Decision::Hold);
    setup.rule(Op::Write, held.to_str().unwrap(), Decision::Hold);
    let procs = setup.cgroup.procs();
    let (granted_c, held_c) = (
        CString::new(granted.as_os_str().as_encoded_bytes()).unwrap(),
        CString::new(held.as_os_str().as_encoded_bytes()).unwrap(),
    );
    // SAFETY (in the child): plain syscalls on a C string built before the fork.
    let first = ForkedChild::start(&procs, || unsafe {
        let fd = libc::open(granted_c.as_ptr(), libc::O_WRONLY);
        if fd >= 0 {
            0
        } else {
            *libc::__errno_location()
        }
    });
    let (tid, request) = setup.wait_for_hold();
    let key = GrantKey {
        file: request.file,
        agent_id: setup.agent,
        op: Op::Write as u8,
        pad: [0; 3],
        ids: request.ids,
    };
    setup
        .enforcer()
        .grant_for(key, Duration::from_mins(10), request.rule_id)
        .expect("grant");
    setup.approve(tid, &request);
    assert_eq!(first.result(), 0, "the first open, approved");
    let _ = setup.drain_events();
    let dropped_before =
        setup.enforcer().counters().expect("counters")[counter::EVENTS_DROPPED as usize];
    // SAFETY (in the child): as above.
    let child = ForkedChild::start(&procs, || unsafe {
        // Records are cut after their path (about 150 bytes here): 40,000 are more than the
        // 4 MiB ring holds.
        for _ in 0..40_000 {
            let fd = libc::open(granted_c.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return 201;
            }
            libc::close(fd);
        }
        let fd = libc::open(held_c.as_ptr(), libc::O_WRONLY);
        if fd >= 0 {
            0
        } else {
            *libc::__errno_location()
        }
    });
    let (tid, request) = setup.wait_for_hold();
    wait_stopped(request.tgid);
    let dropped = setup.enforcer().counters().expect("counters")[counter::EVENTS_DROPPED as usize]
        - dropped_before;
    assert!(
        dropped > 0,
        "the ring buffer never filled (no event dropped): the test proves nothing"
    );
    setup.approve(tid, &request);
    assert_eq!(child.result(), 0, "the held open, approved, succeeded");
    assert!(setup.pending().is_empty(), "the answer was consumed");
}
