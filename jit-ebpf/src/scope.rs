//! Is the current task in an agent cgroup (or a descendant of one)?
//!
//! This runs first in every hook, for every process on the host, so it must stay cheap: with no
//! agent cgroup registered it is one array read; otherwise one hash lookup per cgroup level that
//! holds agent cgroups (see `jit_common::scope`).
use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use jit_common::{AgentCgroup, scope::MAX_AGENT_CGROUP_LEVEL};

use crate::maps::{AGENT_CGROUPS, SCOPE_CONFIG};

/// The agent cgroup the current task belongs to, if any.
#[inline(always)]
pub fn current_agent() -> Option<AgentCgroup> {
    let mask = SCOPE_CONFIG.get(0)?.level_mask;
    if mask == 0 {
        return None;
    }
    // Walk from the deepest level up so the most specific agent cgroup wins when agent cgroups
    // are nested.
    let mut level = MAX_AGENT_CGROUP_LEVEL;
    loop {
        if mask & (1 << level) != 0 {
            // SAFETY: helper without pointer arguments.
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level.cast_signed()) };
            if id != 0 {
                // SAFETY: the value is copied out before any other map operation.
                if let Some(agent) = unsafe { AGENT_CGROUPS.get(id) } {
                    return Some(*agent);
                }
            }
        }
        if level == 0 {
            return None;
        }
        level -= 1;
    }
}
