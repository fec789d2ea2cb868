//! Writes through `io_uring`: an `IORING_OP_OPENAT` for writing is decided like `open(2)`, and a
//! hold becomes a denial, whether the request runs inline or in a worker thread (`IOSQE_ASYNC`). A task cannot be held inside `io_uring_enter` (or in an `io_uring`
//! worker, or in task work): the syscall-restart code that makes holds transparent would reach
//! the request's completion as errno 513 instead of restarting anything.
//!
//! The `io_uring` instance is driven with raw syscalls in a forked child (no allocation between
//! `fork` and `_exit`), from inside the agent cgroup.
use std::{ffi::CString, fs, path::Path};

use jit_common::policy::{Decision, Mode, Op};
use jit_tests::{AgentSetup, ForkedChild, TestDir, require_vm};

/// Exit code of the child for a completion result that is no errno (`-res` above 255): what a
/// leaked `ERESTARTNOINTR` (513) looks like.
const NOT_AN_ERRNO: i32 = 250;
/// Exit code for a failure to set up or drive `io_uring` itself.
const SETUP_FAILED: i32 = 251;

#[repr(C)]
#[derive(Default)]
struct SqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_uring_params`.
#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqringOffsets,
    cq_off: CqringOffsets,
}

/// `struct io_uring_sqe`, as far as `IORING_OP_OPENAT` uses it.
#[repr(C)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    open_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    splice_fd_in: i32,
    addr3: u64,
    pad: u64,
}

const IORING_OP_OPENAT: u8 = 18;
/// `sqe.flags`: issue the request from an `io_uring` worker thread (`PF_IO_WORKER`), never
/// inline.
const IOSQE_ASYNC: u8 = 1 << 4;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_CQ_RING: i64 = 0x0800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;

/// In the forked child: one `IORING_OP_OPENAT(path, O_WRONLY)` through a fresh ring; the exit
/// code is 0 on success, the errno of a failed open, [`NOT_AN_ERRNO`] or [`SETUP_FAILED`].
///
/// # Safety
/// Only syscalls on memory prepared before the fork.
#[expect(
    clippy::cast_possible_truncation,
    reason = "a ring fd fits in i32; the ring sizes and offsets the kernel reports fit in usize"
)]
#[expect(
    clippy::cast_ptr_alignment,
    reason = "the kernel aligns every ring field and entry it reports an offset for"
)]
unsafe fn open_through_io_uring(path: &CString, sqe_flags: u8) -> i32 {
    // SAFETY: raw syscalls and mmaps, used within the sizes the kernel reported.
    unsafe {
        let mut params = Params::default();
        let fd = libc::syscall(libc::SYS_io_uring_setup, 4_u32, &raw mut params) as i32;
        if fd < 0 {
            return SETUP_FAILED;
        }
        let map = |len: usize, off: i64| {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                off,
            )
            .cast::<u8>()
        };
        let sq = map(
            params.sq_off.array as usize + params.sq_entries as usize * 4,
            IORING_OFF_SQ_RING,
        );
        let cq = map(
            params.cq_off.cqes as usize + params.cq_entries as usize * 16,
            IORING_OFF_CQ_RING,
        );
        let sqes = map(
            params.sq_entries as usize * size_of::<Sqe>(),
            IORING_OFF_SQES,
        );
        if [sq, cq, sqes].contains(&libc::MAP_FAILED.cast()) {
            return SETUP_FAILED;
        }
        sqes.cast::<Sqe>().write(Sqe {
            opcode: IORING_OP_OPENAT,
            flags: sqe_flags,
            ioprio: 0,
            fd: libc::AT_FDCWD,
            off: 0,
            addr: path.as_ptr() as u64,
            len: 0,
            open_flags: libc::O_WRONLY as u32,
            user_data: 7,
            buf_index: 0,
            personality: 0,
            splice_fd_in: 0,
            addr3: 0,
            pad: 0,
        });
        let tail = sq.add(params.sq_off.tail as usize).cast::<u32>();
        let mask = *sq.add(params.sq_off.ring_mask as usize).cast::<u32>();
        let slot = *tail & mask;
        *sq.add(params.sq_off.array as usize)
            .cast::<u32>()
            .add(slot as usize) = 0;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        *tail += 1;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let entered = libc::syscall(
            libc::SYS_io_uring_enter,
            fd,
            1_u32,
            1_u32,
            IORING_ENTER_GETEVENTS,
            std::ptr::null::<u8>(),
            0_usize,
        );
        if entered < 0 {
            return SETUP_FAILED;
        }
        let head = *cq.add(params.cq_off.head as usize).cast::<u32>();
        let cq_mask = *cq.add(params.cq_off.ring_mask as usize).cast::<u32>();
        let cqe = cq.add(params.cq_off.cqes as usize + (head & cq_mask) as usize * 16);
        let res = *cqe.add(8).cast::<i32>();
        match res {
            0.. => 0,
            -255..0 => -res,
            _ => NOT_AN_ERRNO,
        }
    }
}

/// Runs [`open_through_io_uring`] in a child in the agent cgroup and returns its exit code.
fn open_in_agent(setup: &AgentSetup, target: &Path, sqe_flags: u8) -> i32 {
    let path = CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: the child makes raw syscalls only.
    ForkedChild::start(&setup.cgroup.procs(), || unsafe {
        open_through_io_uring(&path, sqe_flags)
    })
    .result()
}

#[test]
fn io_uring_opens_are_decided_and_never_held() {
    require_vm();
    let dir = TestDir::new("uring");
    let allowed = dir.path().join("allowed");
    let denied = dir.path().join("denied");
    let held = dir.path().join("held");
    for file in [&allowed, &denied, &held] {
        fs::write(file, b"before").unwrap();
    }
    let mut setup = AgentSetup::new("uring", Decision::Deny, Mode::Enforce);
    setup.rule(Op::Write, allowed.to_str().unwrap(), Decision::Allow);
    setup.rule(Op::Write, held.to_str().unwrap(), Decision::Hold);
    // Without io_uring working here the test proves nothing: fail loudly.
    assert_ne!(
        open_in_agent(&setup, &allowed, 0),
        SETUP_FAILED,
        "io_uring could not be set up in the VM"
    );
    setup.drain_events();
    assert_eq!(open_in_agent(&setup, &allowed, 0), 0, "allowed by its rule");
    assert_eq!(
        open_in_agent(&setup, &denied, 0),
        libc::EPERM,
        "denied by the default"
    );
    let code = open_in_agent(&setup, &held, 0);
    assert_ne!(
        code, NOT_AN_ERRNO,
        "a held io_uring open leaked errno 513 into its completion"
    );
    assert_eq!(code, libc::EPERM, "a hold through io_uring is a denial");
    // The same from an io_uring worker thread, which has no io_uring context of its own: the
    // `PF_IO_WORKER` check denies it.
    assert_eq!(
        open_in_agent(&setup, &allowed, IOSQE_ASYNC),
        0,
        "allowed by its rule, from a worker"
    );
    let code = open_in_agent(&setup, &held, IOSQE_ASYNC);
    assert_ne!(
        code, NOT_AN_ERRNO,
        "a held open in an io_uring worker leaked errno 513 into its completion"
    );
    assert_eq!(
        code,
        libc::EPERM,
        "a hold in an io_uring worker is a denial"
    );
    assert!(
        setup.pending().is_empty(),
        "nothing is left held: {:?}",
        setup.pending()
    );
    let events = setup.drain_events();
    let on_held: Vec<_> = events
        .iter()
        .filter(|e| e.path_bytes() == held.as_os_str().as_encoded_bytes())
        .collect();
    assert!(
        on_held.iter().any(|e| e.pid != e.tgid),
        "one held open ran in a worker thread (a thread id other than the process id): {:?}",
        on_held.iter().map(|e| (e.pid, e.tgid)).collect::<Vec<_>>()
    );
    assert!(
        !on_held.is_empty()
            && on_held
                .iter()
                .all(|e| e.decision == Decision::Hold as u8 && e.enforced == Decision::Deny as u8),
        "the event says: held by policy, denied in fact: {:?}",
        on_held
            .iter()
            .map(|e| (e.decision, e.enforced))
            .collect::<Vec<_>>()
    );
}
