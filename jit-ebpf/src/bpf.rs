//! Hook: `bpf` (LSM), self-protection: no agent may call `bpf()` at all.
//!
//! Runs at the start of the `bpf()` syscall, for every command. Every command from an agent is
//! refused with `EPERM`. Why all of them rather than a list: jit's whole state is reachable
//! through `bpf()` by a privileged process (`BPF_OBJ_GET` on the pins in `/sys/fs/bpf/jit`,
//! then map updates that answer its own holds, grant itself, or drop its cgroup from
//! `AGENT_CGROUPS`; `BPF_LINK_DETACH`; loading a program that overrides jit's verdicts), new
//! commands keep being added, and an agent has no business with BPF. Filtering by command would
//! have to be right about every one of them, on every kernel; refusing all needs nothing.
//!
//! The previous program's verdict is not read here: its position moved (6.1 has
//! `bpf(int cmd, union bpf_attr *attr, unsigned int size)`, later kernels add
//! `bool kernel`), and it is always 0 anyway: int LSM hooks run their BPF programs like
//! `fmod_ret`, and the trampoline stops at the first non-zero verdict, so a program only runs
//! after every earlier one returned 0.
//!
//! Scope: agent cgroups only; everyone else, the daemon included, returns 0 right after the
//! scope check. Minimum kernel: 5.7 (BPF LSM); jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::protect::event_op;

use crate::{protect::deny, scope::current_agent};

#[lsm(hook = "bpf")]
pub fn jit_bpf(ctx: LsmContext) -> i32 {
    match try_bpf(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_bpf(ctx: &LsmContext) -> Result<i32, i32> {
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    let cmd: i32 = ctx.arg(0);
    Err(deny(
        event_op::BPF,
        agent,
        0,
        u64::from(cmd.cast_unsigned()),
    ))
}
