//! Which processes jit evaluates at all: those in an agent cgroup or a descendant of one.
//!
//! Every hook asks this first, for every process on the host, so the answer for a process
//! outside all agent cgroups must cost next to nothing. Two ways to answer, chosen by
//! [`ScopeConfig::slots_used`]:
//!
//! - **Slots** (up to [`SCOPE_SLOTS`] agent cgroups, the usual case): the agent cgroups are
//!   listed in the single `SCOPE_CONFIG` array entry itself. Per slot, the kernel compares the
//!   task's ancestor at the slot's level with the slot's cgroup id: no hash lookup at all (array
//!   lookups are inlined by the verifier).
//! - **By level** (more agent cgroups, or while the slots are being rewritten): for each cgroup
//!   level that holds at least one agent cgroup ([`ScopeConfig::level_mask`]), one lookup of the
//!   task's ancestor at that level in the `AGENT_CGROUPS` hash map.
//!
//! Both give the same answer: the deepest registered cgroup among the task's ancestors (nested
//! agent cgroups: the most specific wins). [`ScopeConfig::find_in_slots`] is the slot search the
//! eBPF programs run; the host tests compare it with a reference.
//!
//! # Updating without a torn read
//!
//! Userspace writes the entry with one `bpf_map_update_elem`, a plain copy that a running program
//! may observe half done. The `AGENT_CGROUPS` hash map and the level mask are always complete
//! (written before the slots when a cgroup is added), and the slots change only while no program
//! can be reading them (see [`ScopeConfig::slot_update`]):
//!
//! 1. write [`SLOTS_REBUILDING`] as `slots_used`, slots unchanged: programs switch to the
//!    by-level search. Any mix of the old count's bytes and `0xff` bytes is either the old count
//!    (old slots, still intact) or above [`SCOPE_SLOTS`] (by level), so even a torn read is safe;
//! 2. wait for an RCU grace period (`membarrier(MEMBARRIER_CMD_GLOBAL)`): every program that read
//!    the old count has returned (BPF LSM programs run inside an RCU read-side section);
//! 3. write the new slots, still with [`SLOTS_REBUILDING`];
//! 4. write the new count, slots unchanged (again any torn count is safe).

#![expect(
    clippy::inline_always,
    reason = "the eBPF programs call the slot search: inlined, it needs no BPF-to-BPF call"
)]

/// Deepest cgroup level (root = 0) at which an agent cgroup can be registered.
///
/// Bounds the ancestor walk in the eBPF programs; registration of a deeper cgroup is refused.
pub const MAX_AGENT_CGROUP_LEVEL: u32 = 31;

/// Agent cgroups the scope check finds without a hash lookup.
pub const SCOPE_SLOTS: usize = 8;

/// [`ScopeConfig::slots_used`] while the slots do not list every agent cgroup (more than
/// [`SCOPE_SLOTS`] are registered, or the slots are being rewritten): search by level.
pub const SLOTS_REBUILDING: u32 = u32::MAX;

/// Value of the `AGENT_CGROUPS` map, keyed by cgroup id (the cgroup directory's inode number).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentCgroup {
    /// Agent this cgroup belongs to (index assigned by the daemon).
    pub agent_id: u32,
    /// Level of this cgroup in the cgroup2 hierarchy (root = 0).
    pub level: u32,
}

/// One agent cgroup listed in [`ScopeConfig::slots`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeSlot {
    /// Cgroup id; 0 for an empty slot (no cgroup has id 0).
    pub cgroup_id: u64,
    /// See [`AgentCgroup::agent_id`].
    pub agent_id: u32,
    /// See [`AgentCgroup::level`].
    pub level: u32,
}

impl ScopeSlot {
    const EMPTY: Self = Self {
        cgroup_id: 0,
        agent_id: 0,
        level: 0,
    };
}

/// Single entry of the `SCOPE_CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeConfig {
    /// Bit `n` set: at least one agent cgroup is registered at level `n`. Always complete.
    pub level_mask: u32,
    /// How many leading [`ScopeConfig::slots`] to search, when at most [`SCOPE_SLOTS`];
    /// otherwise (normally [`SLOTS_REBUILDING`]) the slots are not to be used.
    pub slots_used: u32,
    /// The agent cgroups, when they fit.
    pub slots: [ScopeSlot; SCOPE_SLOTS],
}

impl Default for ScopeConfig {
    /// Nothing registered: every task is outside.
    fn default() -> Self {
        Self {
            level_mask: 0,
            slots_used: 0,
            slots: [ScopeSlot::EMPTY; SCOPE_SLOTS],
        }
    }
}

/// The outcome of [`ScopeConfig::find_in_slots`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotSearch {
    /// The task is in this agent cgroup (or a descendant of it).
    Agent(AgentCgroup),
    /// The task is in no agent cgroup.
    Outside,
    /// The slots do not list every agent cgroup: search by level.
    ByLevel,
}

impl ScopeConfig {
    /// The mask with `level` added. Returns `None` for a level beyond
    /// [`MAX_AGENT_CGROUP_LEVEL`].
    #[must_use]
    pub const fn with_level(self, level: u32) -> Option<Self> {
        if level > MAX_AGENT_CGROUP_LEVEL {
            return None;
        }
        let mut next = self;
        next.level_mask |= 1 << level;
        Some(next)
    }

    /// Whether an agent cgroup may live at `level`.
    #[must_use]
    pub const fn has_level(&self, level: u32) -> bool {
        level <= MAX_AGENT_CGROUP_LEVEL && self.level_mask & (1 << level) != 0
    }

    /// Searches the slots: `ancestor(level)` is the id of the task's ancestor cgroup at `level`
    /// (its own cgroup at its own level, 0 when the task's cgroup is not that deep). The slots
    /// are ordered deepest level first ([`ScopeConfig::for_cgroups`]), so the first match is the
    /// most specific agent cgroup.
    ///
    /// The first match returns at once, with values straight from the map: paths through the
    /// loop then end in equivalent states, which keeps the verifier's work for the rest of the
    /// program from multiplying by the number of slots.
    #[inline(always)]
    pub fn find_in_slots(&self, ancestor: impl Fn(u32) -> u64) -> SlotSearch {
        let used = self.slots_used as usize;
        if used > SCOPE_SLOTS {
            return SlotSearch::ByLevel;
        }
        for i in 0..SCOPE_SLOTS {
            if i >= used {
                break;
            }
            let Some(slot) = self.slots.get(i) else {
                break;
            };
            if slot.cgroup_id != 0 && ancestor(slot.level) == slot.cgroup_id {
                return SlotSearch::Agent(AgentCgroup {
                    agent_id: slot.agent_id,
                    level: slot.level,
                });
            }
        }
        SlotSearch::Outside
    }

    /// The level mask and slots for exactly the agent cgroups `registered` (cgroup id and
    /// entry, any order), slots ordered deepest level first, then by id; `slots_used` is
    /// [`SLOTS_REBUILDING`] when they do not fit. Levels beyond [`MAX_AGENT_CGROUP_LEVEL`] are left out of the mask
    /// (registration refuses them).
    #[must_use]
    pub fn for_cgroups(registered: impl IntoIterator<Item = (u64, AgentCgroup)>) -> Self {
        let mut cfg = Self::default();
        let mut count = 0_usize;
        for (id, cgroup) in registered {
            cfg = cfg.with_level(cgroup.level).unwrap_or(cfg);
            // Insertion sort into the slots (deepest first, then by id), so the result does not
            // depend on iteration order.
            if count < SCOPE_SLOTS {
                let after = |s: &ScopeSlot| (core::cmp::Reverse(s.level), s.cgroup_id);
                let slot = ScopeSlot {
                    cgroup_id: id,
                    agent_id: cgroup.agent_id,
                    level: cgroup.level,
                };
                let mut at = count;
                while at > 0 && after(&cfg.slots[at - 1]) > after(&slot) {
                    cfg.slots[at] = cfg.slots[at - 1];
                    at -= 1;
                }
                cfg.slots[at] = slot;
            }
            count += 1;
        }
        cfg.slots_used = if count <= SCOPE_SLOTS {
            #[expect(clippy::cast_possible_truncation, reason = "at most SCOPE_SLOTS")]
            {
                count as u32
            }
        } else {
            // Slots that are not searched are better empty.
            cfg.slots = [ScopeSlot::EMPTY; SCOPE_SLOTS];
            SLOTS_REBUILDING
        };
        cfg
    }

    /// How to go from `self` (the current entry) to `target` (see [`ScopeConfig::for_cgroups`])
    /// without a program ever searching slots that are being rewritten (module docs).
    #[must_use]
    pub fn slot_update(&self, target: &Self) -> SlotUpdate {
        if self.slots_used == target.slots_used && self.slots == target.slots {
            // Only the mask changes (or nothing): one write, whose torn reads keep every bit
            // that is set before and after.
            return SlotUpdate::Direct(*target);
        }
        let hide = Self {
            level_mask: target.level_mask | self.level_mask,
            slots_used: SLOTS_REBUILDING,
            slots: self.slots,
        };
        let rewrite = Self {
            slots_used: SLOTS_REBUILDING,
            ..*target
        };
        SlotUpdate::Rebuild {
            hide,
            rewrite,
            publish: *target,
        }
    }
}

/// The writes of one scope change, in order (see [`ScopeConfig::slot_update`]).
#[expect(
    clippy::large_enum_variant,
    reason = "made once per registration and consumed at once, never stored"
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotUpdate {
    /// The slots stay: write this value.
    Direct(ScopeConfig),
    /// Write `hide`, wait for an RCU grace period, write `rewrite`, write `publish`.
    Rebuild {
        hide: ScopeConfig,
        rewrite: ScopeConfig,
        publish: ScopeConfig,
    },
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)` structs of plain integers without padding.
    unsafe impl aya::Pod for super::AgentCgroup {}
    // SAFETY: as above (u32, u32, then 16-byte slots of u64, u32, u32).
    unsafe impl aya::Pod for super::ScopeConfig {}
}

#[cfg(test)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "test cgroup ids and slot counts are small"
)]
mod tests {
    use std::{collections::BTreeMap, vec::Vec};

    use proptest::prelude::*;

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
        assert_eq!(core::mem::size_of::<ScopeSlot>(), 16);
        assert_eq!(core::mem::size_of::<ScopeConfig>(), 8 + 16 * SCOPE_SLOTS);
    }

    #[test]
    fn nothing_registered_is_outside_without_a_lookup() {
        let cfg = ScopeConfig::for_cgroups([]);
        assert_eq!(cfg, ScopeConfig::default());
        assert_eq!(
            cfg.find_in_slots(|_| panic!("no ancestor lookup")),
            SlotSearch::Outside
        );
    }

    #[test]
    fn too_many_cgroups_search_by_level() {
        let many = (1..=9).map(|id| {
            (
                id,
                AgentCgroup {
                    agent_id: 1,
                    level: 2,
                },
            )
        });
        let cfg = ScopeConfig::for_cgroups(many);
        assert_eq!(cfg.slots_used, SLOTS_REBUILDING);
        assert!(cfg.has_level(2));
        assert_eq!(cfg.find_in_slots(|_| 1), SlotSearch::ByLevel);
    }

    #[test]
    fn a_mask_only_change_is_one_write_and_slot_changes_hide_first() {
        let a = (
            7,
            AgentCgroup {
                agent_id: 1,
                level: 1,
            },
        );
        let b = (
            9,
            AgentCgroup {
                agent_id: 2,
                level: 3,
            },
        );
        let one = ScopeConfig::for_cgroups([a]);
        let two = ScopeConfig::for_cgroups([a, b]);
        assert_eq!(one.slot_update(&one), SlotUpdate::Direct(one));
        let SlotUpdate::Rebuild {
            hide,
            rewrite,
            publish,
        } = one.slot_update(&two)
        else {
            panic!("slots change");
        };
        // Hidden: old slots, searched by level with both masks.
        assert_eq!(hide.slots, one.slots);
        assert_eq!(hide.find_in_slots(|_| 7), SlotSearch::ByLevel);
        assert!(hide.has_level(1) && hide.has_level(3));
        assert_eq!(rewrite.slots, two.slots);
        assert_eq!(rewrite.find_in_slots(|_| 7), SlotSearch::ByLevel);
        assert_eq!(publish, two);
    }

    /// Every mix of the bytes of two counts, as a torn read could see them.
    fn torn(a: u32, b: u32) -> Vec<u32> {
        let (a, b) = (a.to_ne_bytes(), b.to_ne_bytes());
        (0..16_u32)
            .map(|pick| {
                let mut mixed = [0; 4];
                for (i, byte) in mixed.iter_mut().enumerate() {
                    *byte = if pick & (1 << i) != 0 { b[i] } else { a[i] };
                }
                u32::from_ne_bytes(mixed)
            })
            .collect()
    }

    #[test]
    fn a_torn_count_is_the_old_count_or_searches_by_level() {
        for old in 0..=SCOPE_SLOTS as u32 {
            for seen in torn(old, SLOTS_REBUILDING)
                .into_iter()
                .chain(torn(SLOTS_REBUILDING, old))
            {
                assert!(
                    seen == old || seen as usize > SCOPE_SLOTS,
                    "{old} -> rebuilding seen as {seen}"
                );
            }
        }
    }

    /// The reference: the deepest registered ancestor of a task whose cgroup path (ids from the
    /// level-1 ancestor down) is `path`.
    fn reference(registered: &BTreeMap<u64, AgentCgroup>, path: &[u64]) -> Option<AgentCgroup> {
        path.iter().rev().find_map(|id| registered.get(id).copied())
    }

    fn ancestor_of(path: &[u64]) -> impl Fn(u32) -> u64 + '_ {
        move |level| match level {
            0 => 1,
            l => path.get(l as usize - 1).copied().unwrap_or(0),
        }
    }

    proptest! {
        /// Random hierarchies (ids 2..40, a tree through `parent_of`), random registrations,
        /// random tasks: the slot search agrees with the reference whenever the cgroups fit.
        #[test]
        fn slot_search_matches_reference(
            parent_of in proptest::collection::vec(0_usize..40, 40),
            chosen in proptest::collection::btree_set(2_u64..40, 0..=SCOPE_SLOTS),
            agents in proptest::collection::vec(1_u32..5, 40),
            task in 2_u64..40,
        ) {
            // Cgroup `id` (2..40) has parent `parent_of[id] % id` when that is >= 2, else the
            // root (1): ids grow downwards, so this is a tree.
            let parent = |id: u64| {
                let p = (parent_of[id as usize] % id as usize) as u64;
                if p >= 2 { p } else { 1 }
            };
            let path_of = |id: u64| {
                let mut path = Vec::new();
                let mut at = id;
                while at != 1 {
                    path.push(at);
                    at = parent(at);
                }
                path.reverse();
                path
            };
            let registered: BTreeMap<u64, AgentCgroup> = chosen
                .iter()
                .map(|&id| {
                    let level = u32::try_from(path_of(id).len()).unwrap();
                    (id, AgentCgroup { agent_id: agents[id as usize], level })
                })
                .collect();
            let cfg = ScopeConfig::for_cgroups(registered.iter().map(|(&k, &v)| (k, v)));
            let path = path_of(task);
            let expected = reference(&registered, &path)
                .map_or(SlotSearch::Outside, SlotSearch::Agent);
            prop_assert_eq!(cfg.find_in_slots(ancestor_of(&path)), expected);
            for c in registered.values() {
                prop_assert!(cfg.has_level(c.level));
            }
            let used = cfg.slots_used as usize;
            prop_assert!(cfg.slots[..used].windows(2).all(|w| w[0].level >= w[1].level));
        }
    }
}
