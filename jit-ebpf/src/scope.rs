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

use crate::maps::{AGENT_CGROUPS, SCOPE_CONFIG};

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
