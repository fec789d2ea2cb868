//! An approval binds to what the reviewer was shown, not to what the held syscall reads from
//! memory again when it restarts: another process of the agent sharing the memory changes the
//! strings between the review and the restart.
//!
//! - an `execve` whose arguments or environment changed is killed before the new program runs
//!   (reported with `EVENT_FLAG_ARGS_CHANGED`); unchanged, the same setup runs;
//! - an approval of an `execve` without a binding is enforced as a denial;
//! - a rename whose destination changed is held again as a new request, never released.
#![expect(
    clippy::cast_ptr_alignment,
    reason = "the shared page is page-aligned (mmap) and its words sit at multiples of 8"
)]
use std::{
    ffi::CString,
    path::Path,
    ptr,
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use jit_common::{
    event::{EVENT_FLAG_ARGS_CHANGED, EventKind},
    policy::{Decision, Mode, Op},
};
use jit_tests::{AgentSetup, ForkedChild, TestDir, c_path, require_vm, wait_stopped};

/// A page shared (`MAP_SHARED`) by the test and the agent processes it forks: a flag word, then
/// the strings and pointer vectors the held syscall reads.
struct SharedPage(*mut u8);

const PAGE: usize = 4096;
/// Offsets in the page.
const FLAG: usize = 0;
const STR_A: usize = 64;
const STR_B: usize = 1024;
const STR_C: usize = 2048;
const VEC_ARGV: usize = 3072;
const VEC_ENV: usize = 3584;

/// Flag values: the test asks the agent's second process to change the strings (`CHANGE`) or
/// to leave without changing them (`LEAVE`); it answers `CHANGED`.
const CHANGE: u64 = 1;
const CHANGED: u64 = 2;
const LEAVE: u64 = 3;

impl SharedPage {
    fn new() -> Self {
        // SAFETY: a fresh anonymous shared mapping, unmapped on drop.
        let at = unsafe {
            libc::mmap(
                ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED, "mmap");
        Self(at.cast())
    }

    fn put(&self, at: usize, s: &[u8]) -> *const libc::c_char {
        assert!(at + s.len() < PAGE);
        // SAFETY: inside the page.
        unsafe {
            ptr::copy_nonoverlapping(s.as_ptr(), self.0.add(at), s.len());
            *self.0.add(at + s.len()) = 0;
            self.0.add(at).cast()
        }
    }

    fn put_vec(&self, at: usize, strings: &[*const libc::c_char]) -> *const *const libc::c_char {
        // SAFETY: inside the page (asserted), pointer-aligned offsets.
        unsafe {
            let v = self.0.add(at).cast::<*const libc::c_char>();
            assert!(at + (strings.len() + 1) * 8 < PAGE);
            for (i, s) in strings.iter().enumerate() {
                *v.add(i) = *s;
            }
            *v.add(strings.len()) = ptr::null();
            v
        }
    }

    fn flag(&self) -> &AtomicU64 {
        // SAFETY: the first, aligned word of the page.
        unsafe { &*self.0.add(FLAG).cast::<AtomicU64>() }
    }

    /// Asks the agent's second process to act and waits until it did.
    fn ask(&self, what: u64) {
        self.flag().store(what, Ordering::SeqCst);
        if what == CHANGE {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.flag().load(Ordering::SeqCst) != CHANGED {
                assert!(Instant::now() < deadline, "the strings were not changed");
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.0.cast(), PAGE) };
    }
}

/// In the agent: forks a second process sharing `page` that waits for the test's request and
/// then overwrites `len` bytes at `at` with `with` (async-signal-safe: no allocation).
fn fork_changer(page: *mut u8, at: usize, with: &'static [u8]) {
    // SAFETY: the child only polls and writes the shared page, then leaves with _exit.
    if unsafe { libc::fork() } == 0 {
        // SAFETY: the page is mapped in this process too; the flag is its first word.
        let flag = unsafe { &*page.cast::<AtomicU64>() };
        for _ in 0..20_000 {
            match flag.load(Ordering::SeqCst) {
                CHANGE => {
                    // SAFETY: inside the page.
                    unsafe { ptr::copy_nonoverlapping(with.as_ptr(), page.add(at), with.len()) };
                    flag.store(CHANGED, Ordering::SeqCst);
                    break;
                }
                LEAVE => break,
                _ => {}
            }
            // SAFETY: plain sleep.
            unsafe { libc::usleep(1000) };
        }
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(0) };
    }
}

/// Waits for `child` to end; its raw wait status.
fn wait_status(child: &ForkedChild) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        if unsafe { libc::waitpid(child.0, &raw mut status, libc::WNOHANG) } == child.0 {
            return status;
        }
        assert!(Instant::now() < deadline, "the agent process did not end");
        thread::sleep(Duration::from_millis(5));
    }
}

/// What the agent's second process changes while an `execve` is held.
#[derive(Clone, Copy, Debug)]
enum Change {
    Nothing,
    /// `argv[1]`: `safe` → `evil`.
    Argument,
    /// `XX_PRELOAD=…` → `LD_PRELOAD=…` in the environment.
    Environment,
}

#[test]
fn an_approved_execve_runs_only_with_the_arguments_shown() {
    require_vm();
    let dir = TestDir::new("bind-exec");
    let tool = dir.install_true("held");
    let mut setup = AgentSetup::new("bind-exec", Decision::Allow, Mode::Enforce);
    let rule = setup.rule(Op::Exec, &tool, Decision::Hold);
    for change in [Change::Nothing, Change::Argument, Change::Environment] {
        let page = SharedPage::new();
        let path = page.put(STR_A, tool.as_bytes());
        let arg = page.put(STR_B, b"safe");
        let env = page.put(STR_C, b"XX_PRELOAD=/nonexistent.so");
        let argv = page.put_vec(VEC_ARGV, &[path, arg]);
        let envp = page.put_vec(VEC_ENV, &[env]);
        let (at, with): (usize, &'static [u8]) = match change {
            Change::Argument => (STR_B, b"evil"),
            _ => (STR_C, b"LD"),
        };
        let base = page.0 as usize;
        let child = ForkedChild::start(&setup.cgroup.procs(), move || {
            fork_changer(base as *mut u8, at, with);
            // SAFETY: the strings and vectors live in the shared page.
            unsafe { libc::execve(path, argv, envp) };
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        });
        let (tid, request) = setup.wait_for_hold();
        wait_stopped(request.tgid);
        // What a reviewer is shown, read from the stopped task as the daemon reads it.
        let shown = jit_agent::audit::exec_args(request.tgid, tid).expect("read the held execve");
        assert_eq!(shown.argv, [tool.as_str(), "safe"], "{change:?}");
        assert_eq!(shown.env, ["XX_PRELOAD=/nonexistent.so"], "{change:?}");
        let binding = shown.binding.expect("a binding");
        match change {
            Change::Nothing => page.ask(LEAVE),
            _ => page.ask(CHANGE),
        }
        setup
            .enforcer()
            .answer_bound(tid, request.request_id, true, binding)
            .expect("approve");
        let status = wait_status(&child);
        let events = setup.drain_events();
        let changed: Vec<_> = events
            .iter()
            .filter(|e| e.flags & EVENT_FLAG_ARGS_CHANGED != 0)
            .collect();
        if let Change::Nothing = change {
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "unchanged, the approved exec runs ({status:#x})"
            );
            assert!(changed.is_empty(), "no change reported");
        } else {
            assert!(
                libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
                "{change:?}: the changed exec is killed ({status:#x})"
            );
            assert_eq!(changed.len(), 1, "{change:?}: reported once");
            let e = changed[0];
            assert_eq!(
                (
                    e.kind,
                    e.op,
                    e.decision,
                    e.enforced,
                    e.request_id,
                    e.rule_id
                ),
                (
                    EventKind::Decision as u8,
                    Op::Exec as u8,
                    Decision::Hold as u8,
                    Decision::Deny as u8,
                    request.request_id,
                    rule
                ),
                "{change:?}"
            );
            assert_eq!(e.path_bytes(), tool.as_bytes());
        }
        assert!(setup.pending().is_empty(), "{change:?}: nothing left held");
    }
}

#[test]
fn an_approval_without_a_binding_is_enforced_as_a_denial() {
    require_vm();
    let dir = TestDir::new("bind-none");
    let tool = dir.install_true("held");
    let mut setup = AgentSetup::new("bind-none", Decision::Allow, Mode::Enforce);
    setup.rule(Op::Exec, &tool, Decision::Hold);
    let c_tool = CString::new(tool.clone()).unwrap();
    let child = ForkedChild::start(&setup.cgroup.procs(), move || {
        let argv = [c_tool.as_ptr(), ptr::null()];
        // SAFETY: valid strings and vectors.
        unsafe { libc::execve(c_tool.as_ptr(), argv.as_ptr(), ptr::null()) };
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(255)
    });
    let (tid, request) = setup.wait_for_hold();
    setup
        .enforcer()
        .answer(tid, request.request_id, true)
        .expect("approve without a binding");
    assert_eq!(child.result(), libc::EPERM, "an unbound approval denies");
}

#[test]
fn a_rename_whose_destination_changed_is_held_again() {
    require_vm();
    let dir = TestDir::new("bind-rename");
    let src = dir.path().join("report.txt");
    std::fs::write(&src, "data").unwrap();
    let dst_a = dir.path().join("shown-A");
    let dst_b = dir.path().join("shown-B");
    let mut setup = AgentSetup::new("bind-rename", Decision::Allow, Mode::Enforce);
    setup.rule(Op::Rename, src.to_str().unwrap(), Decision::Hold);
    let page = SharedPage::new();
    let c_src = c_path(&src);
    let to = page.put(STR_A, dst_a.as_os_str().as_encoded_bytes());
    let last = STR_A + dst_a.as_os_str().len() - 1; // the `A`
    let base = page.0 as usize;
    let child = ForkedChild::start(&setup.cgroup.procs(), move || {
        fork_changer(base as *mut u8, last, b"B");
        // SAFETY: valid strings; the destination lives in the shared page.
        if unsafe { libc::rename(c_src.as_ptr(), to) } == 0 {
            0
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        }
    });
    let (tid, first) = setup.wait_for_hold();
    wait_stopped(first.tgid);
    assert_ne!(first.second.ino, 0, "the destination is bound");
    page.ask(CHANGE);
    setup.approve(tid, &first);
    // The restarted rename names another destination: a new request, the task stopped again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        let again = setup.pending().into_iter().find(|(t, r)| {
            *t == tid
                && r.request_id != first.request_id
                && r.state == jit_common::pending::STATE_PENDING
        });
        if let Some((_, r)) = again {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the changed rename was not held again"
        );
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(second.file, first.file, "same source");
    assert_ne!(second.second, first.second, "another destination");
    wait_stopped(second.tgid);
    assert!(
        src.exists() && !exists(&dst_a) && !exists(&dst_b),
        "nothing renamed"
    );
    setup
        .enforcer()
        .answer(tid, second.request_id, false)
        .expect("deny");
    assert_eq!(child.result(), libc::EPERM, "the second request, denied");
    assert!(src.exists() && !exists(&dst_b), "nothing renamed");
}

fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

#[test]
fn both_ends_of_a_held_rename_are_reported() {
    require_vm();
    let dir = TestDir::new("bind-ends");
    let held_dir = dir.path().join("held");
    std::fs::create_dir(&held_dir).unwrap();
    let src = dir.path().join("held-src");
    std::fs::write(&src, "data").unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "data").unwrap();
    let mut setup = AgentSetup::new("bind-ends", Decision::Allow, Mode::Enforce);
    setup.rule(Op::Rename, src.to_str().unwrap(), Decision::Hold);
    setup.rule(
        Op::Rename,
        &format!("{}/", held_dir.to_str().unwrap()),
        Decision::Hold,
    );
    // The source decides (the peer is the destination), then the destination does.
    for (from, to, peer_is_source) in [
        (src.clone(), dir.path().join("out"), false),
        (plain.clone(), held_dir.join("in"), true),
    ] {
        let (c_from, c_to) = (c_path(&from), c_path(&to));
        let child = ForkedChild::start(&setup.cgroup.procs(), move || {
            // SAFETY: valid strings.
            if unsafe { libc::rename(c_from.as_ptr(), c_to.as_ptr()) } == 0 {
                0
            } else {
                std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(255)
            }
        });
        let (tid, request) = setup.wait_for_hold();
        let events = setup.drain_events();
        let hold = events
            .iter()
            .find(|e| e.kind == EventKind::Hold as u8)
            .expect("a hold event");
        let peer = events
            .iter()
            .find(|e| e.kind == EventKind::HoldPeer as u8)
            .expect("the other end, reported with the hold");
        assert_eq!(peer.request_id, request.request_id);
        assert_eq!(
            peer.flags & jit_common::event::EVENT_FLAG_PEER_IS_SOURCE != 0,
            peer_is_source
        );
        let record =
            jit_agent::audit::KernelRecord::from_event(hold, None).with_peer(hold, Some(peer));
        assert_eq!(
            (record.source.as_deref(), record.destination.as_deref()),
            (from.to_str(), to.to_str()),
            "both ends, whichever decided"
        );
        setup
            .enforcer()
            .answer(tid, request.request_id, false)
            .expect("deny");
        assert_eq!(child.result(), libc::EPERM);
    }
}
