//! Which processes jit evaluates at all: those in an agent cgroup or a descendant of one.
//!
//! The kernel side asks, for each cgroup level that holds at least one agent cgroup, "is my
//! ancestor at this level an agent cgroup?". A process outside every agent cgroup therefore
//! costs one hash lookup per *distinct level* holding agent cgroups — exactly one in the usual
//! layout where all agent cgroups sit at the same depth (for example `/jit/<agent>`) — and none
//! at all when no agent cgroup is registered.

/// Deepest cgroup level (root = 0) at which an agent cgroup can be registered.
///
/// Bounds the ancestor walk in the eBPF programs; registration of a deeper cgroup is refused.
pub const MAX_AGENT_CGROUP_LEVEL: u32 = 31;

/// Value of the `AGENT_CGROUPS` map, keyed by cgroup id (the cgroup directory's inode number).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentCgroup {
    /// Agent this cgroup belongs to (index assigned by the daemon).
    pub agent_id: u32,
    /// Level of this cgroup in the cgroup2 hierarchy (root = 0).
    pub level: u32,
}

/// Single entry of the `SCOPE_CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeConfig {
    /// Bit `n` set: at least one agent cgroup is registered at level `n`.
    pub level_mask: u32,
    /// Explicit padding: keeps the layout free of implicit holes.
    pub pad: u32,
}

impl ScopeConfig {
    /// The mask with `level` added. Returns `None` for a level beyond
    /// [`MAX_AGENT_CGROUP_LEVEL`].
    #[must_use]
    pub const fn with_level(self, level: u32) -> Option<Self> {
        if level > MAX_AGENT_CGROUP_LEVEL {
            return None;
        }
        Some(Self {
            level_mask: self.level_mask | (1 << level),
            pad: 0,
        })
    }

    /// Whether an agent cgroup may live at `level`.
    #[must_use]
    pub const fn has_level(self, level: u32) -> bool {
        level <= MAX_AGENT_CGROUP_LEVEL && self.level_mask & (1 << level) != 0
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are `repr(C)` structs of plain integers without padding.
    unsafe impl aya::Pod for super::AgentCgroup {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ScopeConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_accumulate_and_are_bounded() {
        let cfg = ScopeConfig::default()
            .with_level(2)
            .unwrap()
            .with_level(5)
            .unwrap();
        assert!(cfg.has_level(2));
        assert!(cfg.has_level(5));
        assert!(!cfg.has_level(3));
        assert!(!cfg.has_level(0));
        assert_eq!(
            ScopeConfig::default().with_level(MAX_AGENT_CGROUP_LEVEL + 1),
            None
        );
        assert!(!cfg.has_level(MAX_AGENT_CGROUP_LEVEL + 1));
    }

    #[test]
    fn layout_has_no_hidden_padding() {
        assert_eq!(core::mem::size_of::<AgentCgroup>(), 8);
        assert_eq!(core::mem::size_of::<ScopeConfig>(), 8);
    }
}
