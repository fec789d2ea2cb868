//! Holds: a held task is stopped inside its syscall (`SIGSTOP`, the syscall restarts when it
//! is continued), recorded in `PENDING`, and answered when it comes back (README "What an
//! approval binds to"; docs/ARCHITECTURE.md, I7).
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid,
    generated::{bpf_ktime_get_ns, bpf_send_signal},
};
use jit_common::{
    event::{EVENT_FLAG_MAPPING, EventKind, counter},
    layout::KernelLayout,
    pending::{ArgsBinding, ExecBinding, PendingAnswer, PendingRequest, STATE_PENDING, held_slot},
    policy::{Decision, Op, Verdict},
};

use crate::{
    EPERM,
    action::Action,
    kernel::{acting_ids, current_task, offset, opaque_eperm, read_kernel},
    maps::{EXEC_BIND, HELD, PENDING, Scratch, atomic_add, bind_key, count},
    report::{emit, fill_event, output},
    resolve::resolve_path,
};

/// Makes the interrupted syscall restart transparently once the task is continued. Only ever
/// returned together with a successfully sent `SIGSTOP`: without a pending signal it would leak
/// to userspace as errno 513.
const ERESTARTNOINTR: i32 = 513;

const SIGSTOP: u32 = 19;

const SIGCONT: u32 = 18;

/// `task_struct::flags` bits of tasks that cannot be stopped with a signal.
const PF_IO_WORKER: u32 = 0x0000_0010;

const PF_KTHREAD: u32 = 0x0020_0000;

/// Whether a hold cannot work for the current task, which then gets a denial instead: kernel
/// threads and `io_uring` workers cannot be stopped with a signal, and a task that has used
/// `io_uring` may be running this hook for a request issued inside `io_uring_enter` or from task
/// work, where the restart code would not restart anything but reach the request's completion
/// as errno 513.
pub fn current_cannot_stop() -> bool {
    let task = current_task();
    let flags: u32 = read_kernel(task, offset(|l| &l.task_flags));
    if flags & (PF_KTHREAD | PF_IO_WORKER) != 0 {
        return true;
    }
    let io_uring = offset(|l| &l.task_io_uring);
    io_uring != KernelLayout::ABSENT as usize && read_kernel::<u64>(task, io_uring) != 0
}

/// Removes the current thread's `PENDING` entry and uncounts it when this removal took it
/// (the daemon may have removed it first).
#[inline(always)]
fn forget_pending(tid: u32) {
    if PENDING.remove(tid).is_ok() {
        atomic_add(&HELD, held_slot(tid), u32::MAX);
    }
}

/// The answer to a held task that comes back here once continued, if the current task is
/// one; `None` to decide afresh.
#[inline(always)]
pub fn answer_pending(tid: u32, action: &Action, s: &mut Scratch) -> Option<Result<i32, i32>> {
    // SAFETY: the entry is copied out before any map update.
    let pending = unsafe { PENDING.get(tid) }.copied()?;
    // An entry older than this thread is another thread's, whose id was reused (it died while
    // held, or before it came back for its answer): never this thread's to consume or to be
    // stopped by. Decide afresh; a new hold overwrites it. (Request ids are
    // `bpf_ktime_get_ns` times; `start_time` is the thread's fork time on the same clock.)
    let task = current_task();
    if read_kernel::<u64>(task, offset(|l| &l.task_start_time)) > pending.request_id {
        return None;
    }
    match pending.answer(action.op as u8, &action.file, &action.second_file) {
        PendingAnswer::StillPending => Some(stop(tid)),
        answer @ (PendingAnswer::Allow | PendingAnswer::Deny) => {
            // An approval is for the action as it was held: done as the same user and group.
            let allowed = answer == PendingAnswer::Allow
                && acting_ids(action.op) == pending.ids
                && bind_exec(action, &pending);
            forget_pending(tid);
            resolve_path(&action.path, s);
            let verdict = Verdict {
                decision: Decision::Hold,
                enforced: if allowed {
                    Decision::Allow
                } else {
                    Decision::Deny
                },
                rule_id: pending.rule_id,
            };
            let (kind, counted) = if allowed {
                (EventKind::GrantUsed, counter::GRANTS_USED)
            } else {
                (
                    EventKind::GrantDenied,
                    counter::DECISION_BASE + Decision::Deny as u32,
                )
            };
            count(counted);
            emit(kind, action, &verdict, pending.request_id, s);
            Some(if allowed { Ok(0) } else { Err(opaque_eperm()) })
        }
        // Left over from a thread that died while held and whose id was reused: decide
        // afresh (a new hold overwrites it).
        PendingAnswer::NotThisAction => None,
    }
}

/// For an approved `execve` (not an executable mapping), hands the approval's argument binding
/// to the `bprm_committed_creds` program (see `exec_bind`), which compares it with the strings
/// the kernel copies for this very `execve`. False — the approval is enforced as a denial —
/// when the daemon bound nothing (an `execve` whose arguments it could not read) or the binding
/// cannot be recorded. Every other approved action needs no binding.
#[inline(always)]
fn bind_exec(action: &Action, pending: &PendingRequest) -> bool {
    if action.op != Op::Exec || action.flags & EVENT_FLAG_MAPPING != 0 {
        return true;
    }
    if !pending.args.is_bound() {
        count(counter::ERRORS);
        return false;
    }
    let binding = ExecBinding {
        request_id: pending.request_id,
        bprm: 0,
        args: pending.args,
        rule_id: pending.rule_id,
        pad: 0,
    };
    if EXEC_BIND.insert(bind_key(), binding, 0).is_err() {
        count(counter::ERRORS);
        return false;
    }
    true
}

/// Records the request, reports it, stops the task and restarts the syscall on continue. The
/// pending entry is written first: it is what keeps the task held, even when the event is
/// dropped or no daemon runs.
#[inline(always)]
pub fn hold(tid: u32, action: &Action, verdict: &Verdict, s: &mut Scratch) -> Result<i32, i32> {
    // SAFETY: helper without arguments.
    let request_id = unsafe { bpf_ktime_get_ns() };
    let request = PendingRequest {
        request_id,
        file: action.file,
        second: action.second_file,
        args: ArgsBinding {
            full: 0,
            tail: 0,
            full_len: 0,
            tail_len: 0,
        },
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        agent_id: action.agent.agent_id,
        rule_id: verdict.rule_id,
        op: action.op as u8,
        state: STATE_PENDING,
        pad: [0; 2],
        ids: acting_ids(action.op),
    };
    // Counted first: the count may exceed the entries, never fall short of them.
    atomic_add(&HELD, held_slot(tid), 1);
    if PENDING.insert(tid, request, 0).is_err() {
        count(counter::ERRORS);
        count(counter::DECISION_BASE + Decision::Deny as u32);
        let denied = Verdict {
            enforced: Decision::Deny,
            ..*verdict
        };
        emit(EventKind::Decision, action, &denied, 0, s);
        return Err(-EPERM);
    }
    count(counter::DECISION_BASE + Decision::Hold as u32);
    if action.second.is_some() {
        fill_event(
            &mut s.peer,
            EventKind::HoldPeer,
            action,
            verdict,
            request_id,
        );
        output(&s.peer);
    }
    emit(EventKind::Hold, action, verdict, request_id, s);
    stop(tid)
}

/// Stops the current task and asks for the syscall to be restarted on continue; denies when
/// the signal cannot be sent.
///
/// A reviewer may answer between the moment the task's request became visible and the moment
/// `SIGSTOP` is sent here; their `SIGCONT` would then come first and our stop would never be
/// undone. The reviewer writes the answer before signalling, and both signals take the task's
/// signal lock, so after sending `SIGSTOP` we look again: if the request was answered meanwhile
/// we cancel our own stop with `SIGCONT`, and the restarted syscall consumes the answer.
#[inline(always)]
pub fn stop(tid: u32) -> Result<i32, i32> {
    // SAFETY: helper with a plain signal number.
    if unsafe { bpf_send_signal(SIGSTOP) } != 0 {
        count(counter::ERRORS);
        forget_pending(tid);
        return Err(-EPERM);
    }
    // SAFETY: the state is copied out.
    let still_pending = unsafe { PENDING.get(tid) }.is_some_and(|p| p.state == STATE_PENDING);
    // SAFETY: helper with a plain signal number.
    if !still_pending && unsafe { bpf_send_signal(SIGCONT) } != 0 {
        // The stop cannot be undone: fail the syscall instead of stopping without a waiter.
        // The answer stays for the next identical action.
        count(counter::ERRORS);
        return Err(-EPERM);
    }
    Err(-ERESTARTNOINTR)
}
