//! The write-decision cache: a write open that an agent was allowed once is allowed again
//! without resolving the path and looking the rules up, as long as nothing that decision
//! depended on can have changed.
//!
//! The file-open hook spends most of its time in `bpf_d_path` and the rule trie. Agents open
//! the same files for writing over and over (logs, build outputs, editor buffers), and for a
//! process inside an agent cgroup that cost is paid on every open. The cache keeps, per CPU, a
//! direct-mapped table of *allowed, unreported* write decisions (decision and enforcement both
//! `allow`: nothing to report, no hold or grant involved). Anything else is decided in full
//! every time.
//!
//! # What a decision depends on, and how a change is noticed
//!
//! An entry is a [`CacheKey`]: everything the decision was computed from, captured before the
//! path was resolved, and stored only when capturing it again after the decision gives the same
//! key ([`may_store`]: nothing changed while the path was resolved). A later open hits only when
//! the key it captures is equal, field by field:
//!
//! - the opened object: the dentry and the mount (`file->f_path`), and the task's root
//!   (`current->fs->root`), which `bpf_d_path` resolves against;
//! - the uid and gid the task acts as on files ([`CacheKey::ids`]), which select the agent's rule set
//!   when its rules have `user` or `group` conditions;
//! - the agent, and the policy generation ([`CacheKey::policy_gen`]), which the daemon changes
//!   after every change to rules, agent configurations, scope or protected paths (0 turns the
//!   cache off);
//! - the kernel's `rename_lock` and `mount_lock` sequence counts: every rename anywhere
//!   (`d_move`, `d_exchange`) and every change of the mount tree bumps them, and those are the
//!   only ways the path of a dentry that stays alive can change. An odd count means a change
//!   is in progress: nothing is cached or hit then;
//! - a counter per table slot ([`CacheKey::dentry_gen`]) that the `d_instantiate` hook bumps
//!   for every dentry that gets an inode, by any process: a dentry freed and its memory reused
//!   for another file gets an inode before anyone can open it, so a recycled address never
//!   matches;
//! - a counter of `chroot` calls by any process ([`CacheKey::chroots`]): a root directory freed
//!   and reused at the same address becomes a root again only through `chroot` (a mount's
//!   root changes with the mount tree, which `mount_lock` covers).
//!
//! And the dentry must still be hashed: a deleted file reopened through `/proc/PID/fd` has the
//! path `... (deleted)`, which the rules may judge otherwise.
//!
//! # Torn entries
//!
//! The table is per CPU, so no two CPUs write one entry. A program can still be preempted by
//! another on the same CPU, so every entry has a sequence count ([`CacheEntry::seq`]): odd while
//! it is being written; a reader that sees it odd, or changed across its read, misses.
//!
//! The pure parts (slot choice, key validity, hit test) live here and are tested on the host;
//! `jit-ebpf` reads the kernel state into a [`CacheKey`].
#![expect(
    clippy::inline_always,
    reason = "the eBPF programs call these: inlined, they need no BPF-to-BPF call"
)]

/// Entries of the per-CPU table (a power of two).
pub const CACHE_SLOTS: u32 = 4096;

/// Index in the invalidation counters of the count of `chroot` calls; the counters below it
/// belong to the table slots.
pub const CHROOT_COUNTER: u32 = CACHE_SLOTS;

/// Entries of the shared invalidation-counter array: one per slot, plus [`CHROOT_COUNTER`].
pub const INVALIDATION_COUNTERS: u32 = CACHE_SLOTS + 1;

/// The slot of `dentry` (a kernel `struct dentry *`) in the table: Fibonacci hashing of the
/// address without its low bits (dentries are at least 64-byte aligned).
#[must_use]
#[inline(always)]
pub fn slot_of(dentry: u64) -> u32 {
    const BITS: u32 = CACHE_SLOTS.trailing_zeros();
    // The shift leaves BITS bits: the conversion never fails.
    u32::try_from((dentry >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)).unwrap_or(0)
}

/// Everything an allowed write decision was computed from (see the module documentation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheKey {
    /// `file->f_path.dentry`.
    pub dentry: u64,
    /// `file->f_path.mnt`.
    pub mnt: u64,
    /// `current->fs->root.dentry`.
    pub root_dentry: u64,
    /// `current->fs->root.mnt`.
    pub root_mnt: u64,
    /// The daemon's policy generation; 0: the cache is off.
    pub policy_gen: u64,
    /// The agent the decision was made for.
    pub agent_id: u32,
    /// `rename_lock`'s sequence count.
    pub rename_seq: u32,
    /// `mount_lock`'s sequence count.
    pub mount_seq: u32,
    /// The invalidation counter of the dentry's slot.
    pub dentry_gen: u32,
    /// The invalidation counter of `chroot` calls.
    pub chroots: u32,
    /// 1 when the dentry is hashed (not deleted); entries are made and hit only then.
    pub hashed: u32,
    /// The uid (low half) and gid (high half) the task acts as on files: with `user`/`group`
    /// conditions they select the rule set, so an allow decided for one identity is not one
    /// for another.
    pub ids: u64,
}

impl CacheKey {
    /// Whether a decision made under this key may be cached, or looked up: the cache is on,
    /// every pointer is set, the dentry is not deleted and no rename or mount change is in
    /// progress.
    #[must_use]
    #[inline(always)]
    pub const fn usable(&self) -> bool {
        self.policy_gen != 0
            && self.dentry != 0
            && self.mnt != 0
            && self.root_dentry != 0
            && self.root_mnt != 0
            && self.hashed == 1
            && self.rename_seq & 1 == 0
            && self.mount_seq & 1 == 0
    }
}

/// One slot of the per-CPU table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheEntry {
    /// Odd while the entry is being written.
    pub seq: u32,
    pub pad: u32,
    /// What the cached allow was decided under; all zeros for an empty slot.
    pub key: CacheKey,
}

/// Whether an allow decided under `before` (captured before the path was resolved) may be
/// stored: the key is usable and `after`, captured once the decision was made, is the same. A
/// rename, mount change, `chroot`, policy change or deletion that ran meanwhile changed a count
/// or a pointer, and the path `bpf_d_path` returned may be one the key does not stand for.
#[must_use]
#[inline(always)]
pub fn may_store(before: &CacheKey, after: &CacheKey) -> bool {
    before.usable() && *before == *after
}

/// Whether an entry read as `seq_before`, `stored`, `seq_after` holds a usable allow for an
/// action under `probe`.
#[must_use]
#[inline(always)]
pub fn is_hit(seq_before: u32, stored: &CacheKey, seq_after: u32, probe: &CacheKey) -> bool {
    seq_before == seq_after && seq_before & 1 == 0 && probe.usable() && *stored == *probe
}

/// Kernel addresses of the two sequence locks the cache watches, found in `/proc/kallsyms` by
/// userspace and written into the programs before load. Zero: not found, the cache stays off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqLocks {
    /// `rename_lock` (a `seqlock_t`, whose first member is the `u32` sequence count).
    pub rename_lock: u64,
    /// `mount_lock` (likewise).
    pub mount_lock: u64,
}

impl SeqLocks {
    /// Not found: the value compiled into the object.
    pub const UNSET: Self = Self {
        rename_lock: 0,
        mount_lock: 0,
    };

    /// Whether both addresses are known.
    #[must_use]
    #[inline(always)]
    pub const fn known(&self) -> bool {
        self.rename_lock != 0 && self.mount_lock != 0
    }

    /// The addresses of `rename_lock` and `mount_lock` in `kallsyms` (the text of
    /// `/proc/kallsyms`); [`SeqLocks::UNSET`] when either is missing or shown as zero (a
    /// reader without `CAP_SYSLOG` sees zeros).
    #[must_use]
    pub fn from_kallsyms(kallsyms: &str) -> Self {
        let mut found = Self::UNSET;
        for line in kallsyms.lines() {
            let mut fields = line.split_ascii_whitespace();
            let (Some(address), Some(_kind), Some(name), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                // Module symbols carry a fourth field; the locks are in the kernel image.
                continue;
            };
            let slot = match name {
                "rename_lock" => &mut found.rename_lock,
                "mount_lock" => &mut found.mount_lock,
                _ => continue,
            };
            *slot = u64::from_str_radix(address, 16).unwrap_or(0);
        }
        if found.known() { found } else { Self::UNSET }
    }
}

/// Name of the read-only global in `jit-ebpf` holding the [`SeqLocks`].
pub const SEQLOCKS_GLOBAL: &str = "JIT_SEQLOCKS";

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, two u64 fields, no padding.
unsafe impl aya::Pod for SeqLocks {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey {
            dentry: 0xffff_8880_0123_4540,
            mnt: 0xffff_8880_0456_7800,
            root_dentry: 0xffff_8880_0000_1000,
            root_mnt: 0xffff_8880_0000_2000,
            policy_gen: 7,
            agent_id: 3,
            rename_seq: 40,
            mount_seq: 12,
            dentry_gen: 5,
            chroots: 0,
            hashed: 1,
            ids: 0x03e8 | (0x03e8 << 32),
        }
    }

    #[test]
    fn an_unchanged_key_hits() {
        assert!(is_hit(2, &key(), 2, &key()));
    }

    #[test]
    fn any_changed_field_misses() {
        let changes: [fn(&mut CacheKey); 12] = [
            |k| k.ids ^= 1 << 32,
            |k| k.dentry += 64,
            |k| k.mnt += 64,
            |k| k.root_dentry += 64,
            |k| k.root_mnt += 64,
            |k| k.policy_gen += 1,
            |k| k.agent_id += 1,
            |k| k.rename_seq += 2,
            |k| k.mount_seq += 2,
            |k| k.dentry_gen += 1,
            |k| k.chroots += 1,
            |k| k.hashed = 0,
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut probe = key();
            change(&mut probe);
            assert!(!is_hit(2, &key(), 2, &probe), "change {i} still hit");
        }
    }

    #[test]
    fn an_entry_being_written_or_rewritten_misses() {
        assert!(!is_hit(3, &key(), 3, &key()), "odd: being written");
        assert!(!is_hit(2, &key(), 4, &key()), "rewritten while read");
    }

    #[test]
    fn nothing_is_usable_while_off_deleted_or_changing() {
        assert!(key().usable());
        let unusable: [fn(&mut CacheKey); 8] = [
            |k| k.policy_gen = 0,
            |k| k.dentry = 0,
            |k| k.mnt = 0,
            |k| k.root_dentry = 0,
            |k| k.root_mnt = 0,
            |k| k.hashed = 0,
            |k| k.rename_seq += 1,
            |k| k.mount_seq += 1,
        ];
        for (i, change) in unusable.iter().enumerate() {
            let mut probe = key();
            change(&mut probe);
            assert!(!probe.usable(), "case {i} usable");
            // An entry stored under the same unusable key does not hit either.
            assert!(!is_hit(2, &probe, 2, &probe), "case {i} hit");
        }
    }

    #[test]
    fn only_a_decision_nothing_changed_under_is_stored() {
        assert!(may_store(&key(), &key()));
        let mut renamed = key();
        renamed.rename_seq += 2;
        assert!(
            !may_store(&key(), &renamed),
            "a rename ran during the decision"
        );
        let mut chrooted = key();
        chrooted.root_dentry += 64;
        assert!(
            !may_store(&key(), &chrooted),
            "the root changed during the decision"
        );
        let mut off = key();
        off.policy_gen = 0;
        assert!(!may_store(&off, &off), "cache off");
    }

    #[test]
    fn an_empty_slot_never_hits() {
        assert!(!is_hit(0, &CacheKey::default(), 0, &key()));
    }

    #[test]
    fn slots_stay_in_range_and_spread_neighbouring_dentries() {
        let mut seen = std::collections::BTreeSet::new();
        // 192-byte dentries side by side in a slab page, then pages apart.
        for page in 0..16u64 {
            for i in 0..21u64 {
                let slot = slot_of(0xffff_8880_1000_0000 + page * 4096 + i * 192);
                assert!(slot < CACHE_SLOTS);
                seen.insert(slot);
            }
        }
        // 336 neighbouring dentries: almost all in distinct slots.
        assert!(seen.len() > 300, "only {} distinct slots", seen.len());
    }

    #[test]
    fn seq_locks_are_read_from_kallsyms() {
        let text = "ffffffff81000000 T _stext\n\
                    ffffffff82a0c0c0 D rename_lock\n\
                    ffffffffc0001000 t helper\t[some_module]\n\
                    ffffffff82a0d100 d mount_lock\n";
        let locks = SeqLocks::from_kallsyms(text);
        assert_eq!(
            locks,
            SeqLocks {
                rename_lock: 0xffff_ffff_82a0_c0c0,
                mount_lock: 0xffff_ffff_82a0_d100,
            }
        );
        assert!(locks.known());
    }

    #[test]
    fn hidden_or_missing_seq_locks_leave_the_cache_off() {
        let hidden = "0000000000000000 D rename_lock\n0000000000000000 d mount_lock\n";
        assert_eq!(SeqLocks::from_kallsyms(hidden), SeqLocks::UNSET);
        let one = "ffffffff82a0c0c0 D rename_lock\n";
        assert_eq!(SeqLocks::from_kallsyms(one), SeqLocks::UNSET);
        // A module symbol of the same name is not the kernel's.
        let module = "ffffffffc0001000 d mount_lock\t[evil]\nffffffff82a0c0c0 D rename_lock\n";
        assert_eq!(SeqLocks::from_kallsyms(module), SeqLocks::UNSET);
    }
}
