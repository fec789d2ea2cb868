//! The write-decision cache (see `jit_common::cache` for what an entry depends on and why
//! that is enough): the kernel state the hooks capture, the per-CPU table, the seeds creates
//! leave for the opens that follow, and the hook that keeps a recycled dentry from matching.
//!
//! Hook: `d_instantiate` (LSM, no verdict), for every process: the moment a dentry gets an
//! inode (lookup, create, `open_by_handle_at`, pseudo files), before anyone can open it. It
//! bumps the invalidation counter of the dentry's table slot and returns; no scope check, one
//! array lookup and an atomic add. Minimum kernel: 5.7 (BPF LSM).
//!
//! `path_chroot` (in `mount.rs`) bumps the `chroot` counter the same way for every process.
use core::{
    ffi::c_void,
    sync::atomic::{Ordering, compiler_fence},
};

use aya_ebpf::{
    EbpfContext as _,
    helpers::generated::bpf_get_current_task_btf,
    macros::{lsm, map},
    maps::{Array, PerCpuArray},
    programs::LsmContext,
};
use jit_common::{
    cache::{
        CACHE_SLOTS, CHROOT_COUNTER, CacheEntry, CacheKey, CreateSeed, EntryName,
        INVALIDATION_COUNTERS, SeqLocks, is_hit, may_store, op_bit, slot_of,
    },
    pending::FileId,
    policy::Op,
};

use crate::{
    kernel::{acting_ids, hash_len_btf, load_btf, load_ptr, offset, read_kernel},
    maps::{atomic_add, read_u32},
};

/// The per-CPU table of allowed write opens.
#[map(name = "DECISION_CACHE")]
static DECISION_CACHE: PerCpuArray<CacheEntry> = PerCpuArray::with_max_entries(CACHE_SLOTS, 0);

/// Per CPU, the seed the last create allowed on it leaves for the write open that follows
/// (see `jit_common::cache`, "Files an agent creates").
#[map(name = "CREATE_SEED")]
static CREATE_SEED: PerCpuArray<CreateSeed> = PerCpuArray::with_max_entries(1, 0);

/// Invalidation counters, shared by all CPUs: one per table slot (bumped by `d_instantiate`)
/// and the `chroot` counter. Only ever incremented, atomically.
#[map(name = "CACHE_INVALIDATION")]
static CACHE_INVALIDATION: Array<u32> = Array::with_max_entries(INVALIDATION_COUNTERS, 0);

/// The policy generation, written by the daemon after every change of what decisions depend
/// on; 0 turns the cache off (and is what a fresh map holds).
#[map(name = "POLICY_GEN")]
static POLICY_GEN: Array<u64> = Array::with_max_entries(1, 0);

/// Addresses of `rename_lock` and `mount_lock`, written by userspace before load; zero when
/// they could not be found, which keeps the cache off.
#[unsafe(no_mangle)]
static JIT_SEQLOCKS: SeqLocks = SeqLocks::UNSET;

#[lsm(hook = "d_instantiate")]
pub fn jit_d_instantiate(ctx: LsmContext) -> i32 {
    // LSM_HOOK(void, LSM_RET_VOID, d_instantiate, struct dentry *dentry, struct inode *inode)
    // The argument is copied out of the context with a helper: loaded directly it is a
    // BTF-typed pointer, on which the verifier allows no arithmetic (the slot hash).
    let dentry: u64 = read_kernel(ctx.as_ptr().cast::<u8>(), 0);
    bump(slot_of(dentry));
    0
}

/// Counts a `chroot` call (see `jit_common::cache::CHROOT_COUNTER`).
#[inline(always)]
pub fn note_chroot() {
    bump(CHROOT_COUNTER);
}

/// Bumps invalidation counter `index`. Atomic, not a plain `+= 1`: a preempted plain increment
/// could write back an old count after a newer bump and make a recycled dentry match again.
#[inline(always)]
fn bump(index: u32) {
    atomic_add(&CACHE_INVALIDATION, index, 1);
}

#[inline(always)]
fn counter(index: u32) -> u32 {
    read_u32(&CACHE_INVALIDATION, index)
}

/// The sequence count of the seqlock at kernel address `lock`, or 1 (odd: "changing", which
/// keeps the cache out of the way) when it cannot be read.
#[inline(always)]
fn seq_count(lock: u64) -> u32 {
    if lock == 0 {
        return 1;
    }
    let mut seq: u32 = 1;
    // SAFETY: the helper checks the source address; the destination is a local u32.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (&raw mut seq).cast::<c_void>(),
            4,
            lock as *const c_void,
        );
    }
    seq
}

/// Captures the kernel state a write decision on `path` (a BTF-typed `struct path *` inside
/// the hook's `struct file`) by `agent_id` depends on.
#[inline(always)]
pub fn capture(path: *const u8, agent_id: u32, key: &mut CacheKey) {
    if !capture_policy(agent_id, key) {
        return;
    }
    // SAFETY: `path` is BTF-typed (see above); `dentry` and `mnt` are pointers, `d_hash.pprev`
    // a pointer read as u64.
    unsafe {
        let dentry = load_ptr(path, offset(|l| &l.path_dentry));
        key.dentry = dentry as u64;
        key.mnt = load_ptr(path, offset(|l| &l.path_mnt)) as u64;
        let pprev: u64 = load_btf(dentry, offset(|l| &l.dentry_d_hash) + 8);
        key.hashed = u32::from(pprev != 0);
    }
    capture_task(key);
}

/// [`capture`] for the entry `dentry` on the mount `mnt` (kernel pointers, read with probes):
/// the `path_*` hooks' objects.
#[inline(always)]
pub fn capture_entry(mnt: *const u8, dentry: *const u8, agent_id: u32, key: &mut CacheKey) {
    if !capture_policy(agent_id, key) {
        return;
    }
    key.dentry = dentry as u64;
    key.mnt = mnt as u64;
    let pprev: u64 = read_kernel(dentry, offset(|l| &l.dentry_d_hash) + 8);
    key.hashed = u32::from(pprev != 0);
    capture_task(key);
}

/// The policy generation, the sequence counts and the agent of a capture; false when the cache
/// is off (the key is then unusable as it is, and off costs nothing more).
#[inline(always)]
fn capture_policy(agent_id: u32, key: &mut CacheKey) -> bool {
    key.policy_gen = POLICY_GEN
        .get_ptr(0)
        // SAFETY: a u64 in map memory, read once.
        .map_or(0, |g| unsafe { core::ptr::read_volatile(g) });
    if key.policy_gen == 0 {
        return false;
    }
    // SAFETY: reads plain integers out of a static (volatile: the object file holds zeros).
    let locks = unsafe { core::ptr::read_volatile(&raw const JIT_SEQLOCKS) };
    key.rename_seq = seq_count(locks.rename_lock);
    key.mount_seq = seq_count(locks.mount_lock);
    key.agent_id = agent_id;
    true
}

/// The task's part of a capture (its root, its file ids) and the counters, once the dentry is
/// in `key`.
#[inline(always)]
fn capture_task(key: &mut CacheKey) {
    // SAFETY: the task from the helper is BTF-typed; `fs` and the root's members are pointers.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let fs = load_ptr(task, offset(|l| &l.task_fs));
        let root = offset(|l| &l.fs_struct_root);
        key.root_dentry = load_ptr(fs, root + offset(|l| &l.path_dentry)) as u64;
        key.root_mnt = load_ptr(fs, root + offset(|l| &l.path_mnt)) as u64;
    }
    key.dentry_gen = counter(slot(key));
    key.chroots = counter(CHROOT_COUNTER);
    // The cache holds file ops only, which act as the file ids.
    key.ids = acting_ids(Op::Write);
}

/// Where the new entry `dentry` (a kernel `struct dentry *`) of a create is: its directory and
/// its name (see `jit_common::cache::EntryName`), the directory's inode number and the name's
/// `hash_len` taken from `file`, the create's identity (its directory's inode and the name,
/// read by the engine already).
#[inline(always)]
pub fn entry_name_of_create(dentry: *const u8, file: &FileId) -> EntryName {
    let dir: u64 = read_kernel(dentry, offset(|l| &l.dentry_d_parent));
    let inode: u64 = read_kernel(dir as *const u8, offset(|l| &l.dentry_d_inode));
    EntryName {
        dir,
        dir_ino: file.ino,
        dir_generation: read_kernel(inode as *const u8, offset(|l| &l.inode_i_generation)),
        pad: 0,
        hash_len: file.name,
    }
}

/// Where the dentry of `path`, a BTF-typed `struct path *`, is (see
/// `jit_common::cache::EntryName`).
///
/// # Safety
/// `path` must be BTF-typed (a hook argument or inside one).
#[inline(always)]
pub unsafe fn entry_name_btf(path: *const u8) -> EntryName {
    // SAFETY: BTF-typed pointers all the way: `dentry`, `d_parent` and `d_inode` are pointer
    // members, `i_ino` a u64, `i_generation` a u32.
    unsafe {
        let dentry = load_ptr(path, offset(|l| &l.path_dentry));
        let dir = load_ptr(dentry, offset(|l| &l.dentry_d_parent));
        let inode = load_ptr(dir, offset(|l| &l.dentry_d_inode));
        EntryName {
            dir: dir as u64,
            dir_ino: load_btf(inode, offset(|l| &l.inode_i_ino)),
            dir_generation: load_btf(inode, offset(|l| &l.inode_i_generation)),
            pad: 0,
            hash_len: hash_len_btf(dentry),
        }
    }
}

/// Reads again, into `key`, what may change while a decision is made under it: the policy
/// generation, the sequence counts and the `chroot` counter.
#[inline(always)]
pub fn recapture_changes(key: &mut CacheKey) {
    let agent_id = key.agent_id;
    if !capture_policy(agent_id, key) {
        return;
    }
    key.chroots = counter(CHROOT_COUNTER);
}

/// Leaves `seed` for the open that follows on this CPU (see `CREATE_SEED`), under its sequence
/// count; a seed another program on this CPU is half way through writing is left to it.
#[inline(always)]
pub fn leave_seed(seed: &CreateSeed) {
    let Some(slot) = CREATE_SEED.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's seed in map memory, written under its sequence count.
    unsafe {
        let seq = core::ptr::read_volatile(&raw const (*slot).seq);
        if seq & 1 != 0 {
            return;
        }
        core::ptr::write_volatile(&raw mut (*slot).seq, seq.wrapping_add(1));
        compiler_fence(Ordering::SeqCst);
        core::ptr::write_volatile(&raw mut (*slot).tid, seed.tid);
        core::ptr::write_volatile(&raw mut (*slot).ops, seed.ops);
        core::ptr::write_volatile(&raw mut (*slot).name, seed.name);
        core::ptr::write_volatile(&raw mut (*slot).key, seed.key);
        compiler_fence(Ordering::SeqCst);
        core::ptr::write_volatile(&raw mut (*slot).seq, seq.wrapping_add(2));
    }
}

/// Copies this CPU's seed into `out`; a copy torn by a preempting writer gets an odd `seq`,
/// which never matches.
#[inline(always)]
pub fn read_seed(out: &mut CreateSeed) {
    out.seq = 1;
    let Some(slot) = CREATE_SEED.get_ptr(0) else {
        return;
    };
    // SAFETY: this CPU's seed in map memory, read under its sequence count.
    unsafe {
        let before = core::ptr::read_volatile(&raw const (*slot).seq);
        compiler_fence(Ordering::SeqCst);
        out.tid = core::ptr::read_volatile(&raw const (*slot).tid);
        out.ops = core::ptr::read_volatile(&raw const (*slot).ops);
        out.name = core::ptr::read_volatile(&raw const (*slot).name);
        out.key = core::ptr::read_volatile(&raw const (*slot).key);
        compiler_fence(Ordering::SeqCst);
        let after = core::ptr::read_volatile(&raw const (*slot).seq);
        out.seq = if before == after { before } else { 1 };
    }
}

/// The table slot of the dentry in `key`. Read back from map memory (the key lives in the
/// scratch map): there the pointer stored into it is a plain number, where the register it
/// came from is a BTF-typed pointer that the verifier allows no arithmetic on.
#[inline(always)]
fn slot(key: &CacheKey) -> u32 {
    // SAFETY: a u64 in map memory.
    slot_of(unsafe { core::ptr::read_volatile(&raw const key.dentry) })
}

/// Whether the table holds an allow of `op` for the state in `key` (see [`capture`]).
#[inline(always)]
pub fn lookup(key: &CacheKey, op: Op) -> bool {
    if !key.usable() {
        return false;
    }
    let Some(entry) = DECISION_CACHE.get_ptr(slot(key)) else {
        return false;
    };
    // SAFETY: this CPU's entry in map memory; read under its sequence count (see
    // `jit_common::cache`), so a copy torn by a preempting writer is never used.
    unsafe {
        let before = core::ptr::read_volatile(&raw const (*entry).seq);
        compiler_fence(Ordering::SeqCst);
        let stored = core::ptr::read_volatile(&raw const (*entry).key);
        let ops = core::ptr::read_volatile(&raw const (*entry).ops);
        compiler_fence(Ordering::SeqCst);
        let after = core::ptr::read_volatile(&raw const (*entry).seq);
        is_hit(before, &stored, ops, after, key, op)
    }
}

/// Stores the write allow decided under `before` when the state captured now (into `after`,
/// map memory like `before`, see [`slot`]), after the decision, is the same (see
/// `jit_common::cache::may_store`).
#[inline(always)]
pub fn store(path: *const u8, before: &CacheKey, after: &mut CacheKey) {
    capture(path, before.agent_id, after);
    if !may_store(before, after) {
        return;
    }
    store_ops(before, op_bit(Op::Write));
}

/// Stores an allow of `ops` under `key`, which holds for the state now.
#[inline(always)]
pub fn store_ops(key: &CacheKey, ops: u32) {
    let Some(entry) = DECISION_CACHE.get_ptr_mut(slot(key)) else {
        return;
    };
    // SAFETY: this CPU's entry in map memory, written under its sequence count.
    unsafe {
        let seq = core::ptr::read_volatile(&raw const (*entry).seq);
        if seq & 1 != 0 {
            // A writer this program preempted is half way through: leave the slot to it.
            return;
        }
        core::ptr::write_volatile(&raw mut (*entry).seq, seq.wrapping_add(1));
        compiler_fence(Ordering::SeqCst);
        core::ptr::write_volatile(&raw mut (*entry).key, *key);
        core::ptr::write_volatile(&raw mut (*entry).ops, ops);
        compiler_fence(Ordering::SeqCst);
        core::ptr::write_volatile(&raw mut (*entry).seq, seq.wrapping_add(2));
    }
}
