//! Hook: `ptrace_access_check` (LSM), self-protection: no agent may trace or inspect the
//! daemon.
//!
//! Runs in `__ptrace_may_access`, the check behind `ptrace(PTRACE_ATTACH/SEIZE)`,
//! `process_vm_readv/writev`, `/proc/PID/mem`, `/proc/PID/environ`, `pidfd_getfd`, `kcmp`,
//! ... (the kernel skips it for a task's own thread group). Matches a target in the daemon's
//! thread group and refuses every mode with `EPERM`: read access would expose the daemon's
//! memory and environment (API tokens), attach would let the agent stop or steer it.
//!
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM); the signature
//! `ptrace_access_check(struct task_struct *child, unsigned int mode)` is the same on 6.1 and
//! 6.12.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::protect::event_op;

use crate::{
    engine::{offset, read_kernel},
    protect::{daemon_tgid, deny},
    scope::current_agent,
};

#[lsm(hook = "ptrace_access_check")]
pub fn jit_ptrace_access_check(ctx: LsmContext) -> i32 {
    match try_ptrace_access_check(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_ptrace_access_check(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, ptrace_access_check, struct task_struct *child, unsigned int mode):
    // the previous program's verdict follows the arguments.
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    let daemon = daemon_tgid();
    let child: *const u8 = ctx.arg(0);
    let tgid = read_kernel::<i32>(child, offset(|l| &l.task_tgid)).cast_unsigned();
    if daemon == 0 || tgid != daemon {
        return Ok(0);
    }
    let mode: u32 = ctx.arg(1);
    Err(deny(event_op::PTRACE, agent, daemon, u64::from(mode)))
}
