//! Types shared by the jit eBPF programs (`jit-ebpf`) and the userspace daemon (`jit-agent`).
//!
//! Everything here is `#[repr(C)]` with explicit padding so both sides agree on the byte layout
//! of every map key, map value and event. The crate is `no_std` so the eBPF side can use it; the
//! `user` feature adds [`aya::Pod`] impls for the userspace side.
#![no_std]

pub mod scope;

pub use scope::{AgentCgroup, ScopeConfig};

/// Names of the maps defined in `jit-ebpf`, as userspace looks them up.
pub mod map_names {
    /// `HashMap<u64 cgroup id, AgentCgroup>`: every registered agent cgroup.
    pub const AGENT_CGROUPS: &str = "AGENT_CGROUPS";
    /// `Array<ScopeConfig>` with one entry: which cgroup levels hold agent cgroups.
    pub const SCOPE_CONFIG: &str = "SCOPE_CONFIG";
}

/// Names of the programs in `jit-ebpf`.
pub mod program_names {
    /// LSM `bprm_check_security`: exec.
    pub const EXEC: &str = "jit_exec";
}
