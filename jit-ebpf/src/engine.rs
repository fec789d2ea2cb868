//! The decision engine every hook shares: answer a held task (`holds`), resolve the path
//! (`resolve`), evaluate the agent's rules with the pure logic from `jit_common::policy`, hold
//! (`holds`), count, report (`report`), and turn the outcome into the hook's return value.
//! Kernel memory access is the leaf module `kernel`.
#![expect(
    clippy::cast_possible_truncation,
    reason = "lengths are bounded by PATH_MAX and the helpers pack two u32 into one u64"
)]

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    },
    maps::lpm_trie::Key,
    programs::LsmContext,
};
use jit_common::{
    AgentCgroup,
    cache::{CreateSeed, SEEDED_OPS, may_seed, op_bit, seed_matches},
    event::{EVENT_FLAG_PEER_IS_SOURCE, EventKind, counter},
    pending::{FileId, GrantKey, held_slot},
    policy::{
        AgentConfig, Decision, KEY_DATA_LEN, Op, PATH_CAPACITY, PolicyKey, PolicyValue, Verdict,
        evaluate_with, first_of_pair_decides, identity_ruleset, verdict_for,
    },
    protect::{PROTECTED_OP, PROTECTED_RULESET, SELF_PROTECTION_VERDICT, is_protected_fs},
    provenance::writer_of_flags,
};

use crate::{
    EPERM,
    action::{Action, Where},
    cache,
    holds::{answer_pending, current_cannot_stop, hold},
    kernel::{
        acting_ids, current_task, dentry_inode, file_id, file_id_btf, hash_len_btf, load_ptr,
        offset, opaque_eperm, path_dentry, path_mnt, read_kernel,
    },
    maps::{
        AGENT_CONFIG, GRANTS, HELD, IDENTITY, POLICY, PROTECTED, SCRATCH, Scratch, count, read_u32,
    },
    provenance::write_stamp,
    report::{above_reserve, emit, fill_event, keep_peer, output},
    resolve::{fs_magic, resolve_path, whole_mount_of},
};

/// [`PolicyValue::NO_MATCH`], the lookup result when no rule matches. Read from writable memory
/// on purpose: the verifier then knows nothing about its fields, exactly as about a value found
/// in the map, and the states of "matched" and "not matched" paths stay alike enough to be
/// pruned. Built from the constant, the precise field values split every state of the wildcard
/// loop in two, and verifying the rename program took minutes instead of seconds.
///
/// Nothing writes it (only root could, through `bpf()`, which agents are refused).
#[unsafe(no_mangle)]
static mut JIT_NO_MATCH: PolicyValue = PolicyValue::NO_MATCH;

/// Decides `op` on the existing object at `path` (a kernel `struct path *`).
#[inline(always)]
pub fn decide_on_path(op: Op, agent: AgentCgroup, path: *const u8) -> Result<i32, i32> {
    let dentry = path_dentry(path);
    decide(&Action {
        op,
        agent,
        path: Where::Walk {
            mnt: read_kernel::<u64>(path, offset(|l| &l.path_mnt)) as *const u8,
            dentry,
        },
        second: None,
        second_file: FileId::ZERO,
        file: file_id(dentry_inode(dentry)),
        no_hold: false,
        flags: 0,
    })
}

/// Decides `op` on the open file `file` (a kernel `struct file *`), its path resolved by the
/// checking walk. `no_hold` and `flags` as in [`Action`].
#[inline(always)]
pub fn decide_on_file(
    op: Op,
    agent: AgentCgroup,
    file: *const u8,
    no_hold: bool,
    flags: u32,
) -> Result<i32, i32> {
    let path = file.wrapping_add(offset(|l| &l.file_f_path));
    let inode: u64 = read_kernel(file, offset(|l| &l.file_f_inode));
    let id = file_id(inode as *const u8);
    decide(&Action {
        op,
        agent,
        path: Where::Walk {
            mnt: path_mnt(path),
            dentry: path_dentry(path),
        },
        second: None,
        second_file: FileId::ZERO,
        // An executable mapping, as an `execve`: an answer binds to the file as an agent last
        // wrote it.
        file: FileId {
            name: if op == Op::Exec {
                write_stamp(inode as *const u8)
            } else {
                0
            },
            ..id
        },
        no_hold,
        flags,
    })
}

/// Decides `op` on the existing file `dentry` for a hook that gets no mount: its path is
/// resolved through the mount that shows its whole filesystem in the task's namespace
/// ([`whole_mount_of`]); without one the decision fails closed.
///
/// One exception: a filesystem the task's namespace does not show at all, changed while the
/// kernel acts under other credentials than the task's own — overlayfs copying a file up to
/// its upper layer (timestamps, xattrs) for an operation the agent made on the overlay, which
/// was decided there. Those pass. (`io_uring` requests with a registered personality run under
/// such credentials too: on such a filesystem they pass as well; docs/threat-model.md.)
#[inline(always)]
pub fn decide_on_dentry(op: Op, agent: AgentCgroup, dentry: *const u8) -> Result<i32, i32> {
    let inode = dentry_inode(dentry);
    let sb: u64 = read_kernel(inode, offset(|l| &l.inode_i_sb));
    let mnt = whole_mount_of(sb as *const u8);
    if mnt.is_null() && acting_under_other_credentials() {
        return Ok(0);
    }
    decide(&Action {
        op,
        agent,
        path: Where::Walk { mnt, dentry },
        second: None,
        second_file: FileId::ZERO,
        file: file_id(inode),
        no_hold: false,
        flags: 0,
    })
}

/// Whether the current task runs under credentials other than its own (`cred != real_cred`).
#[inline(always)]
fn acting_under_other_credentials() -> bool {
    let task = current_task();
    let cred: u64 = read_kernel(task, offset(|l| &l.task_cred));
    let real: u64 = read_kernel(task, offset(|l| &l.task_real_cred));
    cred != real
}

/// Whether the kernel is loading a new program into the current task: inside `execve`, after
/// the new memory replaced the old, while `load_elf_binary` maps the program and its ELF
/// interpreter, and before it records where the code lies (`mm->start_code`, which a fresh
/// `mm_struct` has as 0; it is set after the mappings). User space cannot bring it back to 0:
/// `prctl(PR_SET_MM)` refuses addresses below `mmap_min_addr`. (`fs_struct::in_exec` does not
/// tell this: kernels with the 2025 fix of its race clear it before the mappings; and
/// `mm->arg_start` is set before them, by `setup_arg_pages`.)
#[inline(always)]
pub fn loading_new_program() -> bool {
    let task = current_task();
    let mm: u64 = read_kernel(task, offset(|l| &l.task_mm));
    mm != 0 && read_kernel::<u64>(mm as *const u8, offset(|l| &l.mm_struct_start_code)) == 0
}

/// Decides `op` on the entry `dentry` in directory `dir` (a kernel `struct path *`), both the
/// hook's BTF-typed arguments. `creates` marks ops that make a new name, whose answers bind to
/// the directory and the name; the others bind to the entry's inode.
#[inline(always)]
pub fn decide_on_entry(
    op: Op,
    agent: AgentCgroup,
    dir: *const u8,
    dentry: *const u8,
    creates: bool,
) -> Result<i32, i32> {
    // SAFETY: every caller passes its hook's BTF-typed arguments (`const struct path *dir`,
    // `struct dentry *dentry`): direct loads, checked by the verifier, no helper calls.
    // `d_inode` of a negative dentry is null, which a direct load reads as zeros.
    let file = unsafe {
        if creates {
            let dir_dentry = load_ptr(dir, offset(|l| &l.path_dentry));
            FileId {
                name: hash_len_btf(dentry),
                ..file_id_btf(load_ptr(dir_dentry, offset(|l| &l.dentry_d_inode)))
            }
        } else {
            file_id_btf(load_ptr(dentry, offset(|l| &l.dentry_d_inode)))
        }
    };
    decide(&Action {
        op,
        agent,
        path: Where::Walk {
            mnt: read_kernel::<u64>(dir, offset(|l| &l.path_mnt)) as *const u8,
            dentry,
        },
        second: None,
        second_file: FileId::ZERO,
        file,
        no_hold: false,
        flags: 0,
    })
}

/// The two ends of a rename or link, as the hook's arguments give them: the source entry
/// `src` (a dentry) on the mount `src_dir_mnt`, and the new entry `dst` (a dentry) in the
/// directory `dst_dir` (a `struct path *`).
pub struct Pair {
    pub src_dir_mnt: *const u8,
    pub src: *const u8,
    pub dst_dir: *const u8,
    pub dst: *const u8,
}

impl Pair {
    /// From `path_rename(const struct path *old_dir, struct dentry *old_dentry,
    /// const struct path *new_dir, struct dentry *new_dentry, unsigned int flags)`.
    #[inline(always)]
    pub fn of_rename(ctx: &LsmContext) -> Self {
        Self {
            src_dir_mnt: path_mnt(ctx.arg(0)),
            src: ctx.arg(1),
            dst_dir: ctx.arg(2),
            dst: ctx.arg(3),
        }
    }

    /// From `path_link(struct dentry *old_dentry, const struct path *new_dir,
    /// struct dentry *new_dentry)`: a hard link stays on its filesystem, so the source is
    /// resolved on the new directory's mount.
    #[inline(always)]
    pub fn of_link(ctx: &LsmContext) -> Self {
        let new_dir: *const u8 = ctx.arg(1);
        Self {
            src_dir_mnt: path_mnt(new_dir),
            src: ctx.arg(0),
            dst_dir: new_dir,
            dst: ctx.arg(2),
        }
    }

    /// The action of `op` on both ends. Answers bind to the source inode and to the new
    /// entry: its directory's inode and its name (`d_name.hash_len`, the name's salted hash and
    /// length, as for creates), so an approval cannot be spent on another destination.
    #[inline(always)]
    fn action(&self, op: Op, agent: AgentCgroup) -> Action {
        let d_name = self.dst.wrapping_add(offset(|l| &l.dentry_d_name));
        let second_file = FileId {
            name: read_kernel(d_name, 0),
            ..file_id(dentry_inode(path_dentry(self.dst_dir)))
        };
        Action {
            op,
            agent,
            path: Where::Walk {
                mnt: self.src_dir_mnt,
                dentry: self.src,
            },
            second: Some(Where::Walk {
                mnt: path_mnt(self.dst_dir),
                dentry: self.dst,
            }),
            file: file_id(dentry_inode(self.src)),
            second_file,
            no_hold: false,
            flags: 0,
        }
    }
}

/// Decides a two-path op (rename, link): both ends are evaluated, the more severe decision
/// applies.
#[inline(always)]
pub fn decide_on_pair(op: Op, agent: AgentCgroup, pair: &Pair) -> Result<i32, i32> {
    decide(&pair.action(op, agent))
}

/// Self-protection of a two-path op (see [`protect_pair`]).
#[inline(always)]
pub fn protect_on_pair(op: Op, agent: AgentCgroup, pair: &Pair) -> Result<i32, i32> {
    protect_pair(&pair.action(op, agent))
}

/// Decides `action`: `Ok(0)` lets the operation proceed, `Err(-errno)` refuses it (or, for a
/// hold, stops the task and restarts the syscall when it is continued).
#[inline(always)]
pub fn decide(action: &Action) -> Result<i32, i32> {
    decide_with(action, |_| None)
}

/// [`decide`] with `checks` run once a write open missed the write-decision cache, before its
/// decision: a verdict from them is the hook's (`file_open`'s checks that are not rules). A
/// cached allow skips them: it was only stored after they passed, for the same file.
#[inline(always)]
pub fn decide_with(
    action: &Action,
    checks: impl FnOnce(&mut Scratch) -> Option<Result<i32, i32>>,
) -> Result<i32, i32> {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        count(counter::ERRORS);
        return Err(-EPERM);
    };
    // SAFETY: per-CPU scratch memory, used by one program at a time on this CPU.
    let s = unsafe { &mut *scratch };
    let tid = bpf_get_current_pid_tgid() as u32;

    // A held task comes back here when it is continued: answer it before anything else. Only
    // threads whose slot has kernel-made entries can have one (see `held_slot`).
    if read_u32(&HELD, held_slot(tid)) != 0
        && let Some(answer) = answer_pending(tid, action, s)
    {
        return answer;
    }

    let cached_path = cacheable(action);
    if let Some(path) = cached_path {
        if cache_allows(path, action, s) {
            return Ok(0);
        }
        if let Some(verdict) = checks(s) {
            return verdict;
        }
    }
    // A create may leave a seed, an unlink may be allowed by one (see `jit_common::cache`,
    // "Files an agent creates"): both capture the entry's state first.
    let entry = cache_entry(action);
    if let Some((mnt, dentry)) = entry
        && entry_allowed(mnt, dentry, action, s)
    {
        return Ok(0);
    }

    // Self-protection of single-path ops: is the object on a cgroup filesystem or bpffs? Kept
    // in scratch memory rather than a register live across the path walk, which would keep
    // the verifier from merging its states. Two-path ops (rename, link) are protected by
    // programs of their own (`protect_pair`): inlined here, the checks pushed
    // `jit_path_rename` past the verifier's 1M-instruction budget on both kernels.
    if action.second.is_none() {
        let on_protected_fs = action.op != Op::Exec && is_protected_fs(fs_magic(&action.path));
        // SAFETY: plain integer in scratch memory.
        unsafe { core::ptr::write_volatile(&raw mut s.protected_fs, u32::from(on_protected_fs)) };
    }
    let mut verdict = if action.second.is_none() {
        evaluate_single(&action.path, action, s)
    } else {
        evaluate_where(&action.path, action, s)
    };
    if let Some(second) = &action.second {
        let first = verdict;
        // Both ends go to a reviewer: the source, kept while the destination is evaluated…
        keep_peer(s, EVENT_FLAG_PEER_IS_SOURCE);
        verdict = evaluate_where(second, action, s);
        if first_of_pair_decides(&first, &verdict) {
            // The first path decides: it is the one the event must name; …or the destination.
            keep_peer(s, 0);
            verdict = first;
            resolve_path(&action.path, s);
        }
    }
    if let Some(path) = cached_path {
        remember_allow(path, &verdict, s);
    }
    if action.op == Op::Create
        && let Some((_, dentry)) = entry
    {
        seed_create(dentry, action, &verdict, s);
    }
    if verdict.enforced == Decision::Hold {
        let grant = GrantKey {
            file: action.file,
            agent_id: action.agent.agent_id,
            op: action.op as u8,
            pad: [0; 3],
            ids: acting_ids(action.op),
        };
        // SAFETY: the value is copied out before any map update.
        if let Some(grant) = unsafe { GRANTS.get(grant) }.copied() {
            // SAFETY: helper without arguments.
            if grant.is_live(unsafe { bpf_ktime_get_ns() }) {
                verdict.enforced = Decision::Allow;
                verdict.rule_id = grant.rule_id;
                count(counter::GRANTS_USED);
                emit(EventKind::GrantUsed, action, &verdict, 0, s);
                return Ok(0);
            }
        }
        if action.no_hold || current_cannot_stop() {
            verdict.enforced = Decision::Deny;
        } else {
            return hold(tid, action, &verdict, s);
        }
    }
    if verdict.enforced == Decision::Audit {
        // Lossless audit (docs/ARCHITECTURE.md, I4): the record of an allowed, audited action
        // leaves the last EVENTS_RESERVE bytes of the ring to the records that must not be
        // lost (denials, holds, answers, self-protection). An `audit` rule's action is done
        // only once its record is on the ring, else refused; a shadow-mode record (the policy
        // would deny or hold, the kernel allows) is dropped and counted instead, because
        // shadow mode never refuses anything.
        fill_event(&mut s.event, EventKind::Decision, action, &verdict, 0);
        let room = above_reserve();
        if !(room && output(&s.event)) {
            if verdict.decision == Decision::Audit {
                count(counter::AUDIT_REFUSED);
                return Err(opaque_eperm());
            }
            if !room {
                count(counter::EVENTS_DROPPED);
            }
        }
        count(counter::DECISION_BASE + Decision::Audit as u32);
        return Ok(0);
    }
    count(counter::DECISION_BASE + verdict.enforced as u32);
    if verdict.decision != Decision::Allow || verdict.enforced != Decision::Allow {
        emit(EventKind::Decision, action, &verdict, 0, s);
    }
    match verdict.enforced {
        Decision::Allow | Decision::Audit => Ok(0),
        Decision::Hold | Decision::Deny => Err(-EPERM),
    }
}

/// The path of `action` when its decision may come from, and go into, the write-decision
/// cache (see `jit_common::cache`): a write open, the only `write` on a [`Where::Path`]. For
/// every other program this is `None` at compile time, and the cache code goes away.
#[inline(always)]
fn cacheable(action: &Action) -> Option<*const u8> {
    match action.path {
        Where::Path(path) if action.op == Op::Write => Some(path.cast()),
        _ => None,
    }
}

/// The entry of a create or an unlink (its mount and dentry), which the cache serves too: a
/// create seeds the open and the unlink that follow (see `jit_common::cache`, "Files an agent
/// creates"). `None` for every other action; for every program but `path_mknod` and
/// `path_unlink` at compile time.
#[inline(always)]
fn cache_entry(action: &Action) -> Option<(*const u8, *const u8)> {
    match action.path {
        Where::Walk { mnt, dentry }
            if action.second.is_none() && matches!(action.op, Op::Create | Op::Unlink) =>
        {
            Some((mnt, dentry))
        }
        _ => None,
    }
}

/// Captures the state of the entry `dentry` on `mnt` into `s.cache_key`; for an unlink, whether
/// the cache allows it (counted as an allow and a cache hit).
#[inline(always)]
fn entry_allowed(mnt: *const u8, dentry: *const u8, action: &Action, s: &mut Scratch) -> bool {
    cache::capture_entry(mnt, dentry, action.agent.agent_id, &mut s.cache_key);
    if action.op == Op::Unlink && cache::lookup(&s.cache_key, Op::Unlink) {
        count_cache_hit();
        return true;
    }
    false
}

/// Counts an action the cache allowed: an allow, and a cache hit.
#[inline(always)]
pub fn count_cache_hit() {
    count(counter::DECISION_BASE + Decision::Allow as u32);
    count(counter::CACHE_HITS);
}

/// Whether the cache allows the write open of `path` again, with nothing it depended on
/// changed since; counted as an allow (and a cache hit). Leaves the captured state in
/// `s.cache_key` for [`remember_allow`].
#[inline(always)]
fn cache_allows(path: *const u8, action: &Action, s: &mut Scratch) -> bool {
    cache::capture(path, action.agent.agent_id, &mut s.cache_key);
    if !cache::lookup(&s.cache_key, Op::Write) {
        return false;
    }
    count_cache_hit();
    true
}

/// After a create of the entry `dentry` was allowed plainly (nothing reported, the path whole;
/// its state captured in `s.cache_key`), evaluates the ops of `SEEDED_OPS` on the path just resolved and leaves what
/// they allow as a seed for the write open that follows (see `jit_common::cache`, "Files an
/// agent creates"). Only for a task whose root is the root of the mount tree the walk reached
/// (there the walk's path is the one `bpf_d_path` gives the open), and only for agents without
/// wildcard components: one rule lookup per op, nothing more.
#[inline(always)]
fn seed_create(dentry: *const u8, action: &Action, verdict: &Verdict, s: &mut Scratch) {
    if s.cache_key.policy_gen == 0
        || verdict.decision != Decision::Allow
        || verdict.enforced != Decision::Allow
        || s.event.flags != 0
        || s.walk_top_mnt != s.cache_key.root_mnt
        || s.walk_top_dentry != s.cache_key.root_dentry
    {
        return;
    }
    // SAFETY: the value is only read, while the program runs.
    let Some(cfg) = (unsafe { AGENT_CONFIG.get(action.agent.agent_id) }) else {
        return;
    };
    if cfg.wildcard_components != 0 {
        return;
    }
    let ruleset = ruleset_of(action, cfg);
    let mut ops = 0;
    for op in SEEDED_OPS {
        s.key.finish_lookup(ruleset, op, s.event.path_len as usize);
        let seeded = verdict_for(policy_lookup(&s.key), cfg);
        if seeded.decision == Decision::Allow && seeded.enforced == Decision::Allow {
            ops |= op_bit(op);
        }
    }
    if ops == 0 {
        return;
    }
    // What can change while the path was resolved and the rules looked up: the sequence
    // counts, the policy, a `chroot` (the rest of the key is the entry's and the thread's own).
    s.cache_check = s.cache_key;
    cache::recapture_changes(&mut s.cache_check);
    if !may_seed(&s.cache_key, &s.cache_check) {
        return;
    }
    s.seed = CreateSeed {
        seq: 0,
        tid: bpf_get_current_pid_tgid() as u32,
        ops,
        pad: 0,
        name: cache::entry_name_of_create(dentry, &action.file),
        key: s.cache_key,
    };
    cache::leave_seed(&s.seed);
}

/// Whether the seed the create of the file just opened (`s.cache_key`, captured by
/// [`cache_allows`]) left allows its write open; if so the entry is stored with every op the
/// seed allows, and the open counts as a cache hit.
#[inline(always)]
pub fn seeded_open(path: *const u8, s: &mut Scratch) -> bool {
    cache::read_seed(&mut s.seed);
    let tid = bpf_get_current_pid_tgid() as u32;
    if s.seed.tid != tid || s.seed.key.dentry != s.cache_key.dentry {
        return false;
    }
    // SAFETY: `path` is the BTF-typed `f_path` of the hook's file.
    let name = unsafe { cache::entry_name_btf(path) };
    if !seed_matches(&s.seed, tid, &name, &s.cache_key) || s.seed.ops & op_bit(Op::Write) == 0 {
        return false;
    }
    cache::store_ops(&s.cache_key, s.seed.ops);
    count_cache_hit();
    true
}

/// Caches `verdict` for the write open of `path` when it is an allow nothing was reported
/// for, on a path resolved whole.
#[inline(always)]
fn remember_allow(path: *const u8, verdict: &Verdict, s: &mut Scratch) {
    if verdict.decision == Decision::Allow
        && verdict.enforced == Decision::Allow
        && s.event.flags == 0
    {
        cache::store(path, &s.cache_key, &mut s.cache_check);
    }
}

/// Resolves `place` and evaluates the agent's rules for it; fails closed when the path
/// cannot be resolved.
#[inline(always)]
fn evaluate_where(place: &Where, action: &Action, s: &mut Scratch) -> Verdict {
    if resolve_path(place, s) {
        load_key_path(s);
        evaluate_path(action, s)
    } else {
        Verdict::fail_closed()
    }
}

/// [`evaluate_where`] for a single-path op, with self-protection first (two-path ops have
/// programs of their own for it, see [`protect_pair`]).
///
/// Self-protection denies whatever the agent's mode (shadow too), default, rules and grants
/// say: a file op on a cgroup filesystem or bpffs, or on one of the daemon's protected paths.
/// Exec is no change to a file and is left to the policy. (A task held before a path became
/// protected still gets the reviewer's answer: the pending check runs before this.)
#[inline(always)]
fn evaluate_single(place: &Where, action: &Action, s: &mut Scratch) -> Verdict {
    if !resolve_path(place, s) {
        return Verdict::fail_closed();
    }
    load_key_path(s);
    if action.op != Op::Exec {
        // SAFETY: plain integer in scratch memory, written by `decide`.
        let on_protected_fs = unsafe { core::ptr::read_volatile(&raw const s.protected_fs) } != 0;
        if on_protected_fs || is_protected_path(s) {
            return SELF_PROTECTION_VERDICT;
        }
    }
    evaluate_path(action, s)
}

/// Self-protection of a two-path op (rename, link), run by a program of its own on the same
/// hook as the engine's: `Err(-EPERM)` with a self-protection event when either end lies on a
/// cgroup filesystem or bpffs or under a protected path, `Ok(0)` otherwise (the engine's
/// program then decides; it also fails closed on a path that cannot be resolved).
#[inline(always)]
pub fn protect_pair(action: &Action) -> Result<i32, i32> {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        count(counter::ERRORS);
        return Err(-EPERM);
    };
    // SAFETY: per-CPU scratch memory, used by one program at a time on this CPU.
    let s = unsafe { &mut *scratch };
    // Both ends lie on one filesystem (else EXDEV): one magic check covers them.
    let on_protected_fs = is_protected_fs(fs_magic(&action.path));
    let mut protected = resolve_path(&action.path, s) && {
        load_key_path(s);
        on_protected_fs || is_protected_path(s)
    };
    if !protected && let Some(second) = &action.second {
        protected = resolve_path(second, s) && {
            load_key_path(s);
            is_protected_path(s)
        };
    }
    if !protected {
        return Ok(0);
    }
    count(counter::DECISION_BASE + Decision::Deny as u32);
    emit(EventKind::Decision, action, &SELF_PROTECTION_VERDICT, 0, s);
    Err(-EPERM)
}

/// Whether the path in `s.key` (see [`load_key_path`]) is one of the daemon's protected paths.
#[inline(always)]
fn is_protected_path(s: &mut Scratch) -> bool {
    s.key
        .finish_lookup(PROTECTED_RULESET, PROTECTED_OP, s.event.path_len as usize);
    // SAFETY: PolicyKey has the layout of aya's Key<[u8; KEY_DATA_LEN]> (repr(C) u32 + bytes).
    let key = unsafe { &*(core::ptr::from_ref(&s.key).cast::<Key<[u8; KEY_DATA_LEN]>>()) };
    PROTECTED.get(key).is_some()
}

/// Copies the resolved path (its first `PATH_CAPACITY` bytes when longer) into the path part
/// of the lookup key; [`PolicyKey::finish_lookup`] then makes it the key of a map. Only the
/// path's own bytes are copied: the key's header, terminator and prefix length are rewritten for
/// every map the key is used with, and the trie never reads past the prefix length.
#[inline(always)]
fn load_key_path(s: &mut Scratch) {
    let len = (s.event.path_len as usize).min(PATH_CAPACITY);
    // SAFETY: the destination is the key's path part (PATH_CAPACITY bytes, and the mask keeps
    // the length below 256 for the verifier: the scratch value continues after the key); the
    // source is the event's path buffer, longer than PATH_CAPACITY.
    unsafe {
        bpf_probe_read_kernel(
            s.key
                .data
                .as_mut_ptr()
                .add(KEY_DATA_LEN - PATH_CAPACITY)
                .cast(),
            (len & 0xff) as u32,
            s.event.path.as_ptr().cast(),
        );
    }
}

#[inline(always)]
fn evaluate_path(action: &Action, s: &mut Scratch) -> Verdict {
    let Some(cfg) = (unsafe { AGENT_CONFIG.get(action.agent.agent_id) }) else {
        count(counter::ERRORS);
        return Verdict::fail_closed();
    };
    // The key holds the path (see `load_key_path`); finish_lookup terminates it.
    let ruleset = ruleset_of(action, cfg);
    s.key
        .finish_lookup(ruleset, action.op, s.event.path_len as usize);
    evaluate_with(
        policy_lookup,
        &s.key,
        cfg,
        &mut s.layout,
        &mut s.wildcard_key,
        copy_key_bytes,
    )
}

/// The agent's current rule set for `action`, read once: a policy reload switches it
/// atomically. With `user`/`group` conditions, the one of the task's identity class
/// (policies/README.md, "Users and groups"); with `written_by` conditions, also the class of
/// who wrote the executed file (policies/README.md, "Provenance").
#[inline(always)]
fn ruleset_of(action: &Action, cfg: &AgentConfig) -> u32 {
    if cfg.identity == 0 {
        return cfg.ruleset;
    }
    let ids = acting_ids(action.op);
    let writer = writer_of_flags(action.flags);
    // SAFETY: the value is copied out of the map at once.
    identity_ruleset(cfg, ids as u32, (ids >> 32) as u32, writer, |key| unsafe {
        IDENTITY.get(key).copied()
    })
}

/// The rule `POLICY` holds for `key`, or [`JIT_NO_MATCH`].
#[inline(always)]
fn policy_lookup(key: &PolicyKey) -> PolicyValue {
    // SAFETY: PolicyKey has the layout of aya's Key<[u8; KEY_DATA_LEN]> (repr(C) u32 + bytes).
    let key = unsafe { &*(core::ptr::from_ref(key).cast::<Key<[u8; KEY_DATA_LEN]>>()) };
    match POLICY.get(key) {
        Some(v) => *v,
        // SAFETY: plain read of a global.
        None => unsafe { core::ptr::read_volatile(&raw const JIT_NO_MATCH) },
    }
}

/// The byte copy `evaluate_with` needs, with a helper instead of a loop. Offsets and length are
/// masked to 9 bits: both keys sit at the start of the scratch value, so every masked access
/// stays inside it.
#[inline(always)]
fn copy_key_bytes(out: &mut PolicyKey, out_at: usize, src: &PolicyKey, src_at: usize, len: usize) {
    const MASK: usize = 0x1ff;
    // SAFETY: both pointers point into the per-CPU scratch value (see above); a failed read
    // leaves zeros, which can only make the lookup miss.
    unsafe {
        bpf_probe_read_kernel(
            out.data.as_mut_ptr().add(out_at & MASK).cast(),
            (len & MASK) as u32,
            src.data.as_ptr().add(src_at & MASK).cast(),
        );
    }
}
