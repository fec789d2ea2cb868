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
//! # Files an agent creates
//!
//! A file an agent creates is opened for writing at once and, for build outputs and temporary
//! files, often unlinked soon after: three decisions on one path (`create` by `path_mknod`,
//! `write` by `file_open`, `unlink` by `path_unlink`), and the first open of a new dentry always
//! misses the table. So when `path_mknod` allows a create, it also evaluates `write` and
//! `unlink` on the path it has just resolved, for the price of two rule lookups, and leaves a
//! [`CreateSeed`] for the open that follows in the same syscall: the entry's key as captured
//! before and after that resolution (the dentry's slot counter aside: `d_instantiate` bumps it
//! when the file is created) and the ops allowed ([`SEEDED_OPS`]). The open then hits when
//! [`seed_matches`]: the same thread, the same dentry, in the same directory (by inode and
//! generation, see [`EntryName`]) under the same name, and nothing else of the key changed; it stores the entry with those ops, and the `unlink` of the
//! same dentry hits it too, under the usual rules above. Entries hold, per op, an allow of
//! that op ([`CacheEntry::ops`]); a write open stores only `write`.
//!
//! A seed is made only when the task's root is the root of its mount namespace: `path_mknod`
//! and `path_unlink` resolve by walking to the top of the mount tree, `file_open` with
//! `bpf_d_path`, relative to the task's root, and only then are the two the same path.
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

use crate::policy::Op;

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
    /// The ops allowed under the key: bit `1 << op` per op (see [`op_bit`]).
    pub ops: u32,
    /// What the cached allow was decided under; all zeros for an empty slot.
    pub key: CacheKey,
}

/// The bit of `op` in [`CacheEntry::ops`] and [`CreateSeed::ops`].
#[must_use]
#[inline(always)]
pub const fn op_bit(op: Op) -> u32 {
    1 << (op as u32 & 31)
}

/// The ops a create seeds (see "Files an agent creates" above), besides `create` itself.
pub const SEEDED_OPS: [Op; 2] = [Op::Write, Op::Unlink];

/// Where a dentry is: its directory (the parent dentry, and that directory's inode by number
/// and generation) and its name (`d_name.hash_len`). A directory has one path on a
/// filesystem (no hard links to directories) and keeps it while `rename_lock` does not move:
/// the same directory inode under the same name is the same path on the same mount. (Names are
/// compared by their salted hash and length, as the answers to held creates are bound; a seed
/// also needs the same dentry, by the same thread.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryName {
    pub dir: u64,
    pub dir_ino: u64,
    pub dir_generation: u32,
    pub pad: u32,
    pub hash_len: u64,
}

/// What `path_mknod` leaves, per CPU, for the write open of the file it allowed to be created
/// (see "Files an agent creates" above).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreateSeed {
    /// Odd while the seed is being written (a program on this CPU may be preempted by another
    /// that reads or writes it).
    pub seq: u32,
    /// The thread that created the file; 0: no seed.
    pub tid: u32,
    /// The ops allowed on the new file's path ([`op_bit`] of [`SEEDED_OPS`]).
    pub ops: u32,
    pub pad: u32,
    /// The new entry, where it was seeded.
    pub name: EntryName,
    /// The key captured for the new dentry on the directory's mount, before and after its
    /// path was resolved (equal, but for `hashed`: a dentry not yet hashed is seeded too).
    pub key: CacheKey,
}

/// Whether a key captured before and after a create's path was resolved (`before`, `after`)
/// may seed (see [`CreateSeed`]): as [`may_store`], but the new dentry need not be hashed yet.
#[must_use]
#[inline(always)]
pub fn may_seed(before: &CacheKey, after: &CacheKey) -> bool {
    let hashed = CacheKey {
        hashed: 1,
        ..*before
    };
    hashed.usable() && *before == *after
}

/// Whether `seed` (see [`CreateSeed`]) allows the write open, by thread `tid`, of the dentry
/// whose key is `probe` (captured by the open) and which is now `name`: the seed is this
/// thread's, for this dentry under the same name in the same directory, and nothing its
/// decisions depended on changed. The slot counter may differ (`d_instantiate` bumped it for
/// this very dentry), and `hashed` is the probe's, which must be usable.
#[must_use]
#[inline(always)]
pub fn seed_matches(seed: &CreateSeed, tid: u32, name: &EntryName, probe: &CacheKey) -> bool {
    let seeded = CacheKey {
        dentry_gen: probe.dentry_gen,
        hashed: probe.hashed,
        ..seed.key
    };
    seed.tid != 0
        && seed.tid == tid
        && seed.seq & 1 == 0
        && seed.name == *name
        && seed.ops != 0
        && probe.usable()
        && seeded == *probe
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

/// Whether an entry read as `seq_before`, `stored` (allowing `ops`), `seq_after` holds a usable
/// allow of `op` for an action under `probe`.
#[must_use]
#[inline(always)]
pub fn is_hit(
    seq_before: u32,
    stored: &CacheKey,
    ops: u32,
    seq_after: u32,
    probe: &CacheKey,
    op: Op,
) -> bool {
    seq_before == seq_after
        && seq_before & 1 == 0
        && ops & op_bit(op) != 0
        && probe.usable()
        && *stored == *probe
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

    /// An entry allowing write opens.
    const W: u32 = op_bit(Op::Write);

    /// A change of each field of a key that both a cache hit and a seed require unchanged.
    const KEY_CHANGES: [fn(&mut CacheKey); 10] = [
        |k| k.ids ^= 1 << 32,
        |k| k.dentry += 64,
        |k| k.mnt += 64,
        |k| k.root_dentry += 64,
        |k| k.root_mnt += 64,
        |k| k.policy_gen += 1,
        |k| k.agent_id += 1,
        |k| k.rename_seq += 2,
        |k| k.mount_seq += 2,
        |k| k.chroots += 1,
    ];

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
        assert!(is_hit(2, &key(), W, 2, &key(), Op::Write));
    }

    #[test]
    fn any_changed_field_misses() {
        // Every field a seed keeps too, and the two a seed lets differ.
        let slot_and_hashed: [fn(&mut CacheKey); 2] = [|k| k.dentry_gen += 1, |k| k.hashed = 0];
        let changes = KEY_CHANGES.iter().chain(&slot_and_hashed);
        for (i, change) in changes.enumerate() {
            let mut probe = key();
            change(&mut probe);
            assert!(
                !is_hit(2, &key(), W, 2, &probe, Op::Write),
                "change {i} still hit"
            );
        }
    }

    #[test]
    fn an_entry_being_written_or_rewritten_misses() {
        assert!(
            !is_hit(3, &key(), W, 3, &key(), Op::Write),
            "odd: being written"
        );
        assert!(
            !is_hit(2, &key(), W, 4, &key(), Op::Write),
            "rewritten while read"
        );
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
            assert!(!is_hit(2, &probe, W, 2, &probe, Op::Write), "case {i} hit");
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
    fn an_entry_hits_only_for_the_ops_it_allows() {
        assert!(!is_hit(2, &key(), W, 2, &key(), Op::Unlink));
        let both = W | op_bit(Op::Unlink);
        assert!(is_hit(2, &key(), both, 2, &key(), Op::Unlink));
        assert!(is_hit(2, &key(), both, 2, &key(), Op::Write));
        assert!(!is_hit(2, &key(), both, 2, &key(), Op::Rename));
        assert!(!is_hit(2, &key(), 0, 2, &key(), Op::Write));
    }

    fn seed() -> CreateSeed {
        CreateSeed {
            seq: 2,
            tid: 4242,
            ops: W | op_bit(Op::Unlink),
            pad: 0,
            name: EntryName {
                dir: 0xffff_8880_0999_0000,
                dir_ino: 77,
                dir_generation: 0x1234,
                pad: 0,
                hash_len: 0x0000_0005_1234_5678,
            },
            key: CacheKey { hashed: 0, ..key() },
        }
    }

    #[test]
    fn a_seed_serves_the_open_of_the_file_it_was_made_for() {
        let mut probe = key();
        // d_instantiate bumped the slot when the file was created.
        probe.dentry_gen += 1;
        let s = seed();
        assert!(seed_matches(&s, 4242, &s.name, &probe));
        assert!(may_seed(&s.key, &s.key), "an unhashed new dentry seeds");
    }

    #[test]
    fn a_seed_serves_nothing_else() {
        let s = seed();
        let probe = key();
        assert!(!seed_matches(&s, 4243, &s.name, &probe), "other thread");
        let names: [fn(&mut EntryName); 4] = [
            |n| n.dir += 64,
            |n| n.dir_ino += 1,
            |n| n.dir_generation += 1,
            |n| n.hash_len += 1,
        ];
        for (i, change) in names.iter().enumerate() {
            let mut name = s.name;
            change(&mut name);
            assert!(
                !seed_matches(&s, 4242, &name, &probe),
                "name change {i} matched"
            );
        }
        let blank = CreateSeed::default();
        assert!(!seed_matches(&blank, 0, &blank.name, &CacheKey::default()));
        let none = CreateSeed { ops: 0, ..seed() };
        assert!(
            !seed_matches(&none, 4242, &s.name, &probe),
            "nothing allowed"
        );
        let writing = CreateSeed { seq: 3, ..seed() };
        assert!(
            !seed_matches(&writing, 4242, &s.name, &probe),
            "being written"
        );
        for (i, change) in KEY_CHANGES.iter().enumerate() {
            let mut probe = key();
            change(&mut probe);
            assert!(
                !seed_matches(&s, 4242, &s.name, &probe),
                "change {i} still matched"
            );
        }
        let mut deleted = key();
        deleted.hashed = 0;
        assert!(!seed_matches(&s, 4242, &s.name, &deleted), "unhashed");
        let mut renamed = s.key;
        renamed.rename_seq += 2;
        assert!(!may_seed(&s.key, &renamed), "a rename ran while seeding");
        let mut changing = s.key;
        changing.mount_seq += 1;
        assert!(
            !may_seed(&changing, &changing),
            "a mount change in progress"
        );
    }

    #[test]
    fn an_empty_slot_never_hits() {
        assert!(!is_hit(0, &CacheKey::default(), 0, 0, &key(), Op::Write));
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
