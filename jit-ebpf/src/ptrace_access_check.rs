//! Hooks: `ptrace_access_check` and `ptrace_traceme` (LSM): an agent reaches only processes of
//! its own agent.
//!
//! `ptrace_access_check` runs in `__ptrace_may_access`, the check behind
//! `ptrace(PTRACE_ATTACH/SEIZE)`, `process_vm_readv/writev`, `/proc/PID/mem`,
//! `/proc/PID/environ`, `/proc/PID/maps`, `pidfd_getfd`, `kcmp`, `process_madvise`, ...
//! (the kernel skips it for a task's own thread group). A target outside the caller's agent —
//! the daemon, PID 1, a user's shell, another agent — is refused in every mode: attaching or
//! writing memory injects code into a process jit does not confine, reading memory or the
//! environment exposes secrets (the daemon's API tokens). Checks the kernel makes for harmless
//! fields (`PTRACE_MODE_NOAUDIT`, such as `/proc/PID/stat`'s wait channel for `ps`) are refused
//! too, without an event: they would flood the audit trail and reveal nothing anyone needs.
//!
//! `ptrace_traceme` runs for `PTRACE_TRACEME`: it makes the parent the tracer, so it is refused
//! when the parent is not of the caller's agent (the agent would hand itself to a process jit
//! does not confine, which then steers it).
//!
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM); the signatures
//! `ptrace_access_check(struct task_struct *child, unsigned int mode)` and
//! `ptrace_traceme(struct task_struct *parent)` are the same on 6.1 and 6.12.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::{event::counter, policy::Decision, protect::event_op};

use crate::{
    EPERM,
    kernel::task_tgid,
    maps::count,
    protect::deny,
    scope::{current_agent, task_agent},
};

/// `PTRACE_MODE_NOAUDIT`.
const PTRACE_MODE_NOAUDIT: u32 = 0x04;
/// `Event::file.name` of a refused `PTRACE_TRACEME` (beyond every `PTRACE_MODE_*` bit).
const TRACEME: u64 = 0x100;

#[lsm(hook = "ptrace_access_check")]
pub fn jit_ptrace_access_check(ctx: LsmContext) -> i32 {
    let Some(agent) = current_agent() else {
        return 0;
    };
    let child: *const u8 = ctx.arg(0);
    if task_agent(child) == Some(agent.agent_id) {
        return 0;
    }
    let mode: u32 = ctx.arg(1);
    if mode & PTRACE_MODE_NOAUDIT != 0 {
        count(counter::DECISION_BASE + Decision::Deny as u32);
        return -EPERM;
    }
    let tgid = task_tgid(child);
    deny(event_op::PTRACE, agent, tgid, u64::from(mode))
}

#[lsm(hook = "ptrace_traceme")]
pub fn jit_ptrace_traceme(ctx: LsmContext) -> i32 {
    let Some(agent) = current_agent() else {
        return 0;
    };
    let parent: *const u8 = ctx.arg(0);
    if task_agent(parent) == Some(agent.agent_id) {
        return 0;
    }
    let tgid = task_tgid(parent);
    deny(event_op::PTRACE, agent, tgid, TRACEME)
}
