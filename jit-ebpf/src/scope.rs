//! Is the current task in an agent cgroup (or a descendant of one)?
//!
//! This runs first in every hook, for every process on the host, so it must stay cheap (see
//! `jit_common::scope`): with up to `SCOPE_SLOTS` agent cgroups, one inlined array read plus one
//! ancestor-id helper call and compare per agent cgroup; with more, one hash lookup per cgroup
//! level that holds agent cgroups.
use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use jit_common::{
    AgentCgroup,
    scope::{ScopeConfig, SlotSearch},
};

use crate::{
    kernel::{offset, read_kernel},
    maps::{AGENT_CGROUPS, SCOPE_CONFIG},
};

/// The agent cgroup the current task belongs to, if any.
#[inline(always)]
pub fn current_agent() -> Option<AgentCgroup> {
    let cfg = SCOPE_CONFIG.get(0)?;
    match cfg.find_in_slots(ancestor) {
        SlotSearch::Agent(agent) => Some(agent),
        SlotSearch::Outside => None,
        SlotSearch::ByLevel => by_level(cfg),
    }
}

/// The id of the current task's ancestor cgroup at `level` (0 when its cgroup is not that deep).
#[inline(always)]
fn ancestor(level: u32) -> u64 {
    // SAFETY: helper without pointer arguments.
    unsafe { bpf_get_current_ancestor_cgroup_id(level.cast_signed()) }
}

/// The hash-map search, for when the slots do not list every agent cgroup.
#[inline(always)]
fn by_level(cfg: &ScopeConfig) -> Option<AgentCgroup> {
    let mut mask = cfg.level_mask;
    // Visit only the levels that hold agent cgroups, deepest first so the most specific agent
    // cgroup wins when agent cgroups are nested. Each pass clears one bit of the 32, so the loop
    // ends by itself; the explicit bound is for the verifier, which cannot see that.
    for _ in 0..u32::BITS {
        if mask == 0 {
            return None;
        }
        // The highest set bit; `mask != 0`, so `leading_zeros() <= 31`.
        #[expect(
            clippy::manual_ilog2,
            reason = "ilog2 carries a panic path for 0, which must not reach a BPF program"
        )]
        let level = 31 - mask.leading_zeros();
        mask &= !(1 << level);
        let id = ancestor(level);
        if id != 0 {
            // SAFETY: the value is copied out before any other map operation.
            if let Some(agent) = unsafe { AGENT_CGROUPS.get(id) } {
                return Some(*agent);
            }
        }
    }
    None
}

/// Deepest cgroup level [`task_agent`] climbs from.
const TASK_CGROUP_DEPTH: u32 = 32;

/// The agent of another task `task` (a kernel `struct task_struct *`): the agent of the deepest
/// agent cgroup among its cgroup v2 cgroup and that cgroup's ancestors; `None` outside every
/// agent cgroup. Reads the task's `css_set` without its lock: a task moved meanwhile is seen
/// in its old or its new cgroup, as a concurrent move would allow anyway; agents cannot move
/// tasks (self-protection refuses every write to a cgroup filesystem).
#[inline(always)]
pub fn task_agent(task: *const u8) -> Option<u32> {
    let css_set: u64 = read_kernel(task, offset(|l| &l.task_cgroups));
    let mut cgroup: u64 = read_kernel(css_set as *const u8, offset(|l| &l.css_set_dfl_cgrp));
    let own_css = offset(|l| &l.cgroup_self) as u64;
    for _ in 0..TASK_CGROUP_DEPTH {
        if cgroup == 0 {
            return None;
        }
        let kn: u64 = read_kernel(cgroup as *const u8, offset(|l| &l.cgroup_kn));
        let id: u64 = read_kernel(kn as *const u8, offset(|l| &l.kernfs_node_id));
        // SAFETY: the value is copied out before any other map operation.
        if let Some(agent) = unsafe { AGENT_CGROUPS.get(id) } {
            return Some(agent.agent_id);
        }
        let parent_css: u64 =
            read_kernel((cgroup + own_css) as *const u8, offset(|l| &l.css_parent));
        cgroup = if parent_css == 0 {
            0
        } else {
            parent_css.wrapping_sub(own_css)
        };
    }
    None
}
