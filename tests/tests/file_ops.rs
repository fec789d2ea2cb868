//! Every hooked file operation × {allow, deny, hold→approve, hold→deny}: a real syscall made by
//! a child process inside the agent cgroup, asserting its errno and what happened on disk —
//! nothing while the task is held or after a denial, the change once allowed.
use std::{
    ffi::CString,
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use jit_common::policy::{Decision, Mode, Op};
use jit_tests::{AgentSetup, TestDir, join_cgroup, process_state, require_vm};

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
            Self::Create | Self::Mkdir => {}
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
        }
    }

    /// The syscall, in the forked child: returns 0 or the errno. Async-signal-safe.
    unsafe fn perform(self, path: &CString) -> i32 {
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

/// A child process that joined the agent cgroup and performs one file operation.
struct Child(libc::pid_t);

impl Child {
    fn start(setup: &AgentSetup, act: FileAct, target: &Path) -> Self {
        let procs = CString::new(
            setup
                .cgroup
                .path()
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        let path = CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: the child only makes async-signal-safe calls and leaves with _exit.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => unsafe {
                let code = match join_cgroup(&procs) {
                    Ok(()) => act.perform(&path),
                    Err(_) => 200,
                };
                libc::_exit(code)
            },
            pid => Self(pid),
        }
    }

    /// Waits for the child's result (its errno, 0 = success), failing after 30 s.
    fn result(self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            let ret = unsafe { libc::waitpid(self.0, &raw mut status, libc::WNOHANG) };
            if ret == self.0 {
                assert!(
                    libc::WIFEXITED(status),
                    "child did not exit normally ({status:#x})"
                );
                return libc::WEXITSTATUS(status);
            }
            if Instant::now() > deadline {
                // SAFETY: our own child.
                unsafe { libc::kill(self.0, libc::SIGKILL) };
                panic!(
                    "child {} did not finish within 30 s (state {})",
                    self.0,
                    process_state(self.0.cast_unsigned())
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
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
    assert_eq!(
        Child::start(&setup, act, &allowed).result(),
        0,
        "{}",
        what("allowed")
    );
    assert!(act.took_effect(&allowed), "{}: no effect", what("allowed"));

    // deny
    let denied = target("deny");
    setup.rule(op, denied.to_str().unwrap(), Decision::Deny);
    assert_eq!(
        Child::start(&setup, act, &denied).result(),
        libc::EPERM,
        "{}",
        what("denied")
    );
    assert!(!act.took_effect(&denied), "{}: took effect", what("denied"));

    // hold → approve, and hold → deny
    for (case, approve) in [("hold-approve", true), ("hold-deny", false)] {
        let held = target(case);
        setup.rule(op, held.to_str().unwrap(), Decision::Hold);
        let child = Child::start(&setup, act, &held);
        let (tid, request) = setup.wait_for_hold();
        assert_eq!(request.op, op as u8);
        assert_eq!(
            process_state(request.tgid),
            'T',
            "{}: task stopped",
            what(case)
        );
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
    assert!(
        setup.enforcer().pending_requests().unwrap().is_empty(),
        "every answer consumed"
    );
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
fn write_through_a_symlink_to_a_denied_file_is_denied() {
    require_vm();
    let dir = TestDir::new("file-symlink");
    let secret = dir.path().join("secret");
    fs::write(&secret, "data").unwrap();
    let link = dir.path().join("innocent");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let mut setup = AgentSetup::new("file-symlink", Decision::Allow, Mode::Enforce);
    setup.rule(Op::Write, secret.to_str().unwrap(), Decision::Deny);
    assert_eq!(
        Child::start(&setup, FileAct::Write, &link).result(),
        libc::EPERM
    );
    assert_eq!(fs::read_to_string(&secret).unwrap(), "data");
}
