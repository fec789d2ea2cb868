//! Hook: `file_send_sigiotask` (LSM), self-protection: no `SIGIO`/`SIGURG` to the daemon.
//!
//! Runs in `sigio_perm` before the kernel sends a file owner's signal (`F_SETOWN`/`O_ASYNC`
//! I/O readiness, out-of-band data, lease breaks) to a task. The signal is sent by whoever makes
//! the I/O happen, which need not be the agent that pointed the file's owner at the daemon (a
//! peer writing to a socket, an interrupt), and the daemon sets no file owner itself: so every
//! such signal to the daemon's thread group is refused, whoever triggers it. Without this hook
//! an agent could kill the daemon with `SIGIO`, whose default action terminates, past the
//! `task_kill` hook (file owner signals never go through it).
//!
//! Scope: every process (the hook runs only when a file owner's signal is sent, rarely).
//! Minimum kernel: 5.7 (BPF LSM); the signature `file_send_sigiotask(struct task_struct *tsk,
//! struct fown_struct *fown, int sig)` is the same on 6.1 and 6.12.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::{AgentCgroup, protect::event_op};

use crate::{
    kernel::task_tgid,
    protect::{daemon_tgid, deny},
    scope::current_agent,
};

const SIGIO: u32 = 29;

#[lsm(hook = "file_send_sigiotask")]
pub fn jit_file_send_sigiotask(ctx: LsmContext) -> i32 {
    match try_file_send_sigiotask(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_file_send_sigiotask(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, file_send_sigiotask, struct task_struct *tsk, struct fown_struct *fown,
    // int sig): the previous program's verdict follows the arguments.
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return Ok(retval);
    }
    let daemon = daemon_tgid();
    if daemon == 0 {
        return Ok(0);
    }
    let target: *const u8 = ctx.arg(0);
    let tgid = task_tgid(target);
    if tgid != daemon {
        return Ok(0);
    }
    // Reported against the agent that triggered it, if an agent did (agent id 0 otherwise).
    let agent = current_agent().unwrap_or(AgentCgroup {
        agent_id: 0,
        level: 0,
    });
    // The owner's `F_SETSIG` signal; 0 (none set) means `SIGIO`.
    let sig: i32 = ctx.arg(2);
    let sig = if sig == 0 { SIGIO } else { sig.cast_unsigned() };
    Err(deny(event_op::SIGNAL, agent, daemon, u64::from(sig)))
}
