//! Hook: `task_alloc` (LSM), self-protection: no agent starts a child in another cgroup.
//!
//! `clone3` with `CLONE_INTO_CGROUP` and a descriptor of any cgroup directory (even one opened
//! `O_PATH`, which no write decision sees) starts the child directly in that cgroup: outside
//! every agent cgroup, unconfined, without a single write to a cgroup filesystem. `task_alloc`
//! runs in `copy_process` in the parent's context, before the child can run, with the clone
//! flags: such a clone from an agent is refused with `EPERM` and reported as a self-protection
//! denial of op `cgroup`. Every other clone (threads, `fork`, `vfork`, namespaces) passes.
//!
//! Scope: agent cgroups only (the scope check comes after the flag test, so other processes
//! pay a bit test only). Minimum kernel: 5.7 (BPF LSM; `CLONE_INTO_CGROUP` 5.7); the signature
//! `task_alloc(struct task_struct *task, unsigned long clone_flags)` is the same on 6.1 and
//! 6.12.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::protect::event_op;

use crate::{protect::deny, scope::current_agent};

/// `CLONE_INTO_CGROUP` (`include/uapi/linux/sched.h`).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[lsm(hook = "task_alloc")]
pub fn jit_task_alloc(ctx: LsmContext) -> i32 {
    let flags: u64 = ctx.arg(1);
    if flags & CLONE_INTO_CGROUP == 0 {
        return 0;
    }
    match current_agent() {
        Some(agent) => deny(event_op::CGROUP, agent, 0, flags),
        None => 0,
    }
}
