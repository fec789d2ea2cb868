//! Hook: `task_kill` (LSM), self-protection: no agent may signal the daemon.
//!
//! Runs in `check_kill_permission` for every signal a task sends on its own account (`kill`,
//! `tgkill`, `tkill`, `rt_sigqueueinfo`, `pidfd_send_signal`, ...) before it is delivered,
//! signal 0 (the existence probe) included. Signals the kernel sends itself (`SIGCHLD`,
//! `bpf_send_signal` of a hold) do not come here. Matches a target in the daemon's thread
//! group (the `PROTECT_CONFIG` map); every signal is refused with `EPERM`, so an agent can
//! neither stop nor kill the daemon that reviews it.
//!
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM); the signature
//! `task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig,
//! const struct cred *cred)` is the same on 6.1 and 6.12.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::protect::event_op;

use crate::{
    kernel::task_tgid,
    protect::{daemon_tgid, deny},
    scope::current_agent,
};

#[lsm(hook = "task_kill")]
pub fn jit_task_kill(ctx: LsmContext) -> i32 {
    match try_task_kill(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_task_kill(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig,
    // const struct cred *cred): the previous program's verdict follows the arguments.
    let retval: i32 = ctx.arg(4);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    let daemon = daemon_tgid();
    let target: *const u8 = ctx.arg(0);
    let tgid = task_tgid(target);
    if daemon == 0 || tgid != daemon {
        return Ok(0);
    }
    let sig: i32 = ctx.arg(2);
    Err(deny(
        event_op::SIGNAL,
        agent,
        daemon,
        u64::from(sig.cast_unsigned()),
    ))
}
