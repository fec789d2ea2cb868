//! Every map of the jit programs. Names are shared with userspace via `jit_common::map_names`.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use jit_common::{AgentCgroup, ScopeConfig};

/// Registered agent cgroups, keyed by cgroup id. Written only by the daemon.
#[map(name = "AGENT_CGROUPS")]
pub static AGENT_CGROUPS: HashMap<u64, AgentCgroup> = HashMap::with_max_entries(4096, 0);

/// One entry: the cgroup levels at which agent cgroups are registered.
#[map(name = "SCOPE_CONFIG")]
pub static SCOPE_CONFIG: Array<ScopeConfig> = Array::with_max_entries(1, 0);
