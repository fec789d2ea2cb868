//! Every map of the jit programs. Names are shared with userspace via `jit_common::map_names`.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use jit_common::{
    AgentCgroup, ScopeConfig,
    cache::{CacheKey, CreateSeed},
    event::{DENIALS_ENTRIES, DenialCount, DenialKey, EVENTS_BYTES, Event, counter},
    pending::{ExecBinding, FileId, GrantKey, GrantValue, HELD_SLOTS, PendingRequest},
    policy::{AgentConfig, IdentityKey, KEY_DATA_LEN, PathLayout, PolicyKey, PolicyValue},
    protect::ProtectConfig,
    provenance::{MARKS_ENTRIES, Mark, MarkKey},
};

/// Registered agent cgroups, keyed by cgroup id. Written only by the daemon.
#[map(name = "AGENT_CGROUPS")]
pub static AGENT_CGROUPS: HashMap<u64, AgentCgroup> = HashMap::with_max_entries(4096, 0);

/// One entry: the agent cgroups when they fit in its slots, and the cgroup levels that hold
/// agent cgroups (see `jit_common::scope`).
#[map(name = "SCOPE_CONFIG")]
pub static SCOPE_CONFIG: Array<ScopeConfig> = Array::with_max_entries(1, 0);

/// Per-agent default decision, mode, wildcard positions and current rule set. An agent without
/// an entry fails closed (every action denied).
///
/// `BPF_F_NO_PREALLOC`: an update then replaces the element and frees the old one only after an
/// RCU grace period, so a program that looked the entry up sees the old or the new configuration
/// whole (a preallocated element can be recycled for another update while still being read).
#[map(name = "AGENT_CONFIG")]
pub static AGENT_CONFIG: HashMap<u32, AgentConfig> = HashMap::with_max_entries(1024, 1);

/// The rule set offsets of the uids and gids that agents' `user` and `group` conditions name
/// (see `jit_common::policy::IdentityKey`); read only for agents whose config says so.
#[map(name = "IDENTITY")]
pub static IDENTITY: HashMap<IdentityKey, u32> = HashMap::with_max_entries(8192, 0);

/// Compiled rules: longest-prefix match over (agent, op, path). `BPF_F_NO_PREALLOC` is
/// mandatory for LPM tries.
#[map(name = "POLICY")]
pub static POLICY: LpmTrie<[u8; KEY_DATA_LEN], PolicyValue> = LpmTrie::with_max_entries(262_144, 1);

/// Every held task, keyed by thread id: the daemon answers here. Survives the daemon (pinned
/// by it), so a restarted daemon finds every held task.
#[map(name = "PENDING")]
pub static PENDING: HashMap<u32, PendingRequest> = HashMap::with_max_entries(16_384, 0);

/// Time-boxed approvals, checked against `bpf_ktime_get_ns` in the kernel.
#[map(name = "GRANTS")]
pub static GRANTS: HashMap<GrantKey, GrantValue> = HashMap::with_max_entries(16_384, 0);

/// One entry: the daemon's thread group id, which agents may neither signal nor trace.
#[map(name = "PROTECT_CONFIG")]
pub static PROTECT_CONFIG: Array<ProtectConfig> = Array::with_max_entries(1, 0);

/// The daemon's own files and directories (see `jit_common::protect`): no agent may change
/// anything there. The value is unused. `BPF_F_NO_PREALLOC` is mandatory for LPM tries.
#[map(name = "PROTECTED")]
pub static PROTECTED: LpmTrie<[u8; KEY_DATA_LEN], u32> = LpmTrie::with_max_entries(1024, 1);

/// The program each process's last allowed `execve` pass loaded, by thread group id (the id
/// survives `execve`, a thread's id need not): while the kernel maps that very file inside the
/// same `execve`, the mapping is not decided again (see `mmap`). Least recently used entries
/// make room, so dead processes need no cleanup; a lost entry only means the mapping is
/// decided as an `exec` once more.
#[map(name = "EXEC_IMAGE")]
pub static EXEC_IMAGE: LruHashMap<u32, FileId> = LruHashMap::with_max_entries(16_384, 0);

/// One entry: the secret `SipHash` key of argument bindings (see
/// `jit_common::pending::ArgsBinding`). Written by the daemon when it finds it zero; read by `exec_bind`.
#[map(name = "BIND_KEY")]
pub static BIND_KEY: Array<[u64; 2]> = Array::with_max_entries(1, 0);

/// Approved `execve`s whose copied arguments `exec_bind` must still compare with the approval's
/// binding, by task (the `task_struct` address, see [`bind_key`]). Not least-recently-used: an entry must never be dropped to make room
/// (the comparison would be skipped); when the map is full the approval is enforced as a denial.
#[map(name = "EXEC_BIND")]
pub static EXEC_BIND: HashMap<u64, ExecBinding> = HashMap::with_max_entries(16_384, 0);

/// The key of the current thread's [`EXEC_BIND`] entry: its `task_struct`, not its thread id. A
/// non-leader thread that calls `execve` takes the leader's thread id in `de_thread`, between
/// the approval (`bprm_check_security`) and the comparison (`bprm_committed_creds`); the task
/// stays the same.
#[inline(always)]
pub fn bind_key() -> u64 {
    crate::kernel::current_task() as u64
}

/// Decision events for userspace.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Denials enforced while the ring buffer had no room for their records, counted per agent,
/// rule and op (see `jit_common::event::DenialKey`). Not least-recently-used: a count must never
/// be dropped to make room; a denial that finds no room here is counted in
/// `counter::DENIALS_UNKEYED`.
#[map(name = "DENIALS")]
pub static DENIALS: HashMap<DenialKey, DenialCount> = HashMap::with_max_entries(DENIALS_ENTRIES, 0);

/// The files agents wrote (see `jit_common::provenance`), pinned by the daemon so marks outlive
/// it. Not least-recently-used: a mark must never be dropped to make room (a full map refuses
/// the write instead, see `provenance`). `BPF_F_NO_PREALLOC`: entries are allocated as files
/// are written.
#[map(name = "MARKS")]
pub static MARKS: HashMap<MarkKey, Mark> = HashMap::with_max_entries(MARKS_ENTRIES, 1);

/// Decision, event and error counters (see `jit_common::event::counter`).
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Per-CPU working memory: far larger than the 512-byte BPF stack allows.
///
/// The keys come first: copies into them use offsets masked to 9 bits, and the event behind
/// them keeps every masked access inside the map value, as the verifier requires.
#[repr(C)]
pub struct Scratch {
    pub key: PolicyKey,
    pub wildcard_key: PolicyKey,
    pub layout: PathLayout,
    /// Next free byte (from the end) of `walk` while a path is built backwards.
    pub walk_pos: u32,
    /// 1 when the current action's object lies on a cgroup filesystem or bpffs (set by
    /// `engine::decide`).
    pub protected_fs: u32,
    /// A path built backwards by the dentry walk, ending at `WALK_LEN`, with slack behind it
    /// so every masked write of a name (at most 255 bytes) stays inside the value.
    pub walk: [u8; WALK_LEN + 512],
    pub event: Event,
    /// The kernel state a write open's decision depends on (see `crate::cache`), captured
    /// before the decision and stored with an allow.
    pub cache_key: CacheKey,
    /// The same state captured again after the decision (see `crate::cache::store`).
    pub cache_check: CacheKey,
    /// Of a rename or link: the end that does not decide, resolved while both are evaluated,
    /// reported with a hold (see `EventKind::HoldPeer`).
    pub peer: Event,
    /// The top of the mount tree the last dentry walk reached (a `struct vfsmount *` and its
    /// root dentry); zeros when it did not reach it.
    pub walk_top_mnt: u64,
    pub walk_top_dentry: u64,
    /// A create's seed, built here or copied here (see `crate::cache::leave_seed`).
    pub seed: CreateSeed,
}

/// Capacity of the dentry-walk path buffer (`PATH_MAX`).
pub const WALK_LEN: usize = 4096;

#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Per-thread-id-slot counts of the `PENDING` entries the kernel made (see
/// `jit_common::pending::held_slot`): a thread whose slot counts 0 is not held, and the hooks
/// skip the `PENDING` lookup for it. Only ever changed atomically, by the programs.
#[map(name = "HELD")]
pub static HELD: Array<u32> = Array::with_max_entries(HELD_SLOTS, 0);

/// Adds `delta` (wrapping: `u32::MAX` subtracts one) to entry `index` of `map`, atomically (a BPF
/// atomic add: `core` has no atomic types for the BPF target).
#[inline(always)]
pub fn atomic_add(map: &Array<u32>, index: u32, delta: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: a u32 in map memory, which stays valid while the program runs.
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(counter, delta) };
    }
}

/// Entry `index` of `map`, read once; 0 when out of range.
#[inline(always)]
pub fn read_u32(map: &Array<u32>, index: u32) -> u32 {
    map.get_ptr(index)
        // SAFETY: a u32 in map memory.
        .map_or(0, |c| unsafe { core::ptr::read_volatile(c) })
}

/// Adds one to counter `index` on this CPU.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; programs do not migrate CPUs while running.
        unsafe { *slot += 1 };
    }
}
