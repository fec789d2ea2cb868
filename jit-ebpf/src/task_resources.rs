//! Hooks: `task_setrlimit`, `task_setnice`, `task_setioprio`, `task_setscheduler`,
//! `task_movememory` (LSM): an agent changes the resources of processes of its own agent only.
//!
//! The daemon can be taken down without a signal: `prlimit` of its `RLIMIT_NOFILE` to a few
//! descriptors or of `RLIMIT_CPU` to a second (the kernel then kills it), `SCHED_IDLE` or
//! nice 19 while the agent spins, the idle I/O class, its memory moved to a far node. The same
//! calls against any other process outside the agent (a user's shell, a database, PID 1)
//! degrade the host. So each of them is refused with `EPERM` when the target is not of the
//! caller's agent, reported as a self-protection denial of op `resource` with the target's
//! thread group id and which resource (`jit_common::protect::resource`). A process of the
//! agent may still change its own and its siblings' limits and priorities.
//!
//! The hooks: `task_setrlimit` (`prlimit64`/`setrlimit`; the kernel calls it only when a new
//! limit is given), `task_setnice` (`setpriority`, `nice`), `task_setioprio` (`ioprio_set`),
//! `task_setscheduler` (`sched_setscheduler`, `sched_setparam`, `sched_setattr`,
//! `sched_setaffinity`), `task_movememory` (`migrate_pages`, `move_pages`).
//!
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM); the target is the first argument
//! of each hook on 6.1 and 6.12.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::protect::{event_op, resource};

use crate::{
    kernel::task_tgid,
    protect::deny,
    scope::{current_agent, task_agent},
};

/// Refuses a change of `which` resource of `target` (a `struct task_struct *`) unless the
/// caller is outside every agent or the target is of its agent.
#[inline(always)]
fn own_agent_only(target: *const u8, which: u64) -> i32 {
    let Some(agent) = current_agent() else {
        return 0;
    };
    if task_agent(target) == Some(agent.agent_id) {
        return 0;
    }
    let tgid = task_tgid(target);
    deny(event_op::RESOURCE, agent, tgid, which)
}

/// `task_setrlimit(struct task_struct *p, unsigned int resource, struct rlimit *new_rlim)`.
#[lsm(hook = "task_setrlimit")]
pub fn jit_task_setrlimit(ctx: LsmContext) -> i32 {
    own_agent_only(ctx.arg(0), resource::RLIMIT)
}

/// `task_setnice(struct task_struct *p, int nice)`.
#[lsm(hook = "task_setnice")]
pub fn jit_task_setnice(ctx: LsmContext) -> i32 {
    own_agent_only(ctx.arg(0), resource::NICE)
}

/// `task_setioprio(struct task_struct *p, int ioprio)`.
#[lsm(hook = "task_setioprio")]
pub fn jit_task_setioprio(ctx: LsmContext) -> i32 {
    own_agent_only(ctx.arg(0), resource::IOPRIO)
}

/// `task_setscheduler(struct task_struct *p)`.
#[lsm(hook = "task_setscheduler")]
pub fn jit_task_setscheduler(ctx: LsmContext) -> i32 {
    own_agent_only(ctx.arg(0), resource::SCHEDULER)
}

/// `task_movememory(struct task_struct *p)`.
#[lsm(hook = "task_movememory")]
pub fn jit_task_movememory(ctx: LsmContext) -> i32 {
    own_agent_only(ctx.arg(0), resource::MEMORY)
}
