//! The decision engine every hook shares: answer a held task, resolve the path, evaluate the
//! agent's rules with the pure logic from `jit_common::policy`, hold, count, report, and turn
//! the outcome into the hook's return value.
#![expect(
    clippy::cast_possible_truncation,
    reason = "lengths are bounded by PATH_MAX and the helpers pack two u32 into one u64"
)]
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_d_path, bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_ns,
            bpf_probe_read_kernel, bpf_send_signal,
        },
    },
    maps::lpm_trie::Key,
    programs::LsmContext,
};
use jit_common::{
    AgentCgroup,
    event::{
        EVENT_FLAG_MAPPING, EVENT_FLAG_PATH_TRUNCATED, EVENT_FLAG_PATH_UNRESOLVED,
        EVENT_FLAG_PEER_IS_SOURCE, EVENT_PATH_MAX, EVENTS_BYTES, EVENTS_RESERVE, Event, EventKind,
        counter,
    },
    layout::KernelLayout,
    pending::{
        ArgsBinding, ExecBinding, FileId, GrantKey, PendingAnswer, PendingRequest, STATE_PENDING,
        held_slot,
    },
    policy::{
        Decision, KEY_DATA_LEN, Op, PATH_CAPACITY, PolicyKey, PolicyValue, Verdict, evaluate_with,
        first_of_pair_decides,
    },
    protect::{PROTECTED_OP, PROTECTED_RULESET, SELF_PROTECTION_VERDICT, is_protected_fs},
};

use crate::{
    EPERM, cache,
    maps::{
        AGENT_CONFIG, EVENTS, EXEC_BIND, GRANTS, HELD, PENDING, POLICY, PROTECTED, SCRATCH,
        Scratch, WALK_LEN, atomic_add, count, read_u32,
    },
};

/// Makes the interrupted syscall restart transparently once the task is continued. Only ever
/// returned together with a successfully sent `SIGSTOP`: without a pending signal it would leak
/// to userspace as errno 513.
const ERESTARTNOINTR: i32 = 513;
const SIGSTOP: u32 = 19;
/// `bpf_ringbuf_query` flag: bytes written and not yet consumed.
const BPF_RB_AVAIL_DATA: u64 = 0;
const SIGCONT: u32 = 18;
/// `task_struct::flags` bits of tasks that cannot be stopped with a signal.
const PF_IO_WORKER: u32 = 0x0000_0010;
const PF_KTHREAD: u32 = 0x0020_0000;

/// [`PolicyValue::NO_MATCH`], the lookup result when no rule matches. Read from writable memory
/// on purpose: the verifier then knows nothing about its fields, exactly as about a value found
/// in the map, and the states of "matched" and "not matched" paths stay alike enough to be
/// pruned. Built from the constant, the precise field values split every state of the wildcard
/// loop in two, and verifying the rename program took minutes instead of seconds.
///
/// Nothing writes it (only root could, through `bpf()`, which agents are refused).
#[unsafe(no_mangle)]
static mut JIT_NO_MATCH: PolicyValue = PolicyValue::NO_MATCH;

/// Struct member offsets of the running kernel, written by userspace before load.
#[unsafe(no_mangle)]
static JIT_LAYOUT: KernelLayout = KernelLayout::UNSET;

/// `-EPERM`, in read-only data: the verifier knows its value (the section is frozen), the
/// compiler cannot fold it into arithmetic. Where allow and deny share code, the compiler
/// otherwise computes `Err(-EPERM)` as the negation of a 0/1 flag, whose result the 6.12
/// verifier does not track: the hook's return value is then unbounded and the program refused.
#[unsafe(no_mangle)]
static JIT_EPERM: i32 = -EPERM;

/// [`JIT_EPERM`], read so the compiler cannot see its value.
#[inline(always)]
fn opaque_eperm() -> i32 {
    // SAFETY: reads a plain integer out of a static.
    unsafe { core::ptr::read_volatile(&raw const JIT_EPERM) }
}

/// Reads one offset of [`JIT_LAYOUT`]. Volatile, so the compiler does not fold the zeros the
/// object file carries.
#[inline(always)]
pub fn offset(field: fn(&KernelLayout) -> &u32) -> usize {
    // SAFETY: reads a plain integer out of a static.
    unsafe { core::ptr::read_volatile(field(&JIT_LAYOUT)) as usize }
}

/// Reads the pointer stored at `base + off` (a BTF-typed kernel pointer stays BTF-typed).
#[inline(always)]
#[expect(
    clippy::cast_ptr_alignment,
    reason = "`off` is the BTF offset of a pointer member, which the kernel ABI aligns to 8"
)]
pub unsafe fn load_ptr(base: *const u8, off: usize) -> *const u8 {
    // SAFETY: `base` is a kernel pointer the verifier tracks; the load is checked by it.
    unsafe { *(base.add(off).cast::<*const u8>()) }
}

/// Copies a `T` out of kernel memory at `base + off`; zero when unreadable.
#[inline(always)]
pub fn read_kernel<T: Copy + Default>(base: *const u8, off: usize) -> T {
    let mut value = T::default();
    // SAFETY: the helper checks the source address; the destination is a local of size T.
    unsafe {
        bpf_probe_read_kernel(
            (&raw mut value).cast(),
            size_of::<T>() as u32,
            base.wrapping_add(off).cast(),
        );
    }
    value
}

/// Copies the `T` at `base + off` with a direct load. Only for a BTF-typed `base` (a hook
/// argument or a pointer read from one with [`load_ptr`]) and the offset of a member of type
/// `T`: the verifier checks the access against the kernel's BTF and turns it into a single
/// fault-safe load, far cheaper than a `bpf_probe_read_kernel` call.
#[inline(always)]
pub unsafe fn load_btf<T: Copy>(base: *const u8, off: usize) -> T {
    // SAFETY: as documented; the verifier rejects anything else at load time.
    unsafe { *(base.add(off).cast::<T>()) }
}

/// [`file_id`] for a BTF-typed `inode` (see [`load_btf`]).
#[inline(always)]
pub unsafe fn file_id_btf(inode: *const u8) -> FileId {
    // SAFETY: `inode` is BTF-typed; `i_sb` is a pointer member, `s_dev` a u32, `i_ino` a u64.
    unsafe {
        let sb = load_ptr(inode, offset(|l| &l.inode_i_sb));
        FileId {
            dev: u64::from(load_btf::<u32>(sb, offset(|l| &l.super_block_s_dev))),
            ino: load_btf(inode, offset(|l| &l.inode_i_ino)),
            name: 0,
        }
    }
}

/// Device and inode of `inode` (a kernel `struct inode *`).
#[inline(always)]
pub fn file_id(inode: *const u8) -> FileId {
    let sb: u64 = read_kernel(inode, offset(|l| &l.inode_i_sb));
    let dev: u32 = read_kernel(sb as *const u8, offset(|l| &l.super_block_s_dev));
    FileId {
        dev: u64::from(dev),
        ino: read_kernel(inode, offset(|l| &l.inode_i_ino)),
        name: 0,
    }
}

/// The inode of `dentry` (a kernel `struct dentry *`); null for a negative dentry.
#[inline(always)]
pub fn dentry_inode(dentry: *const u8) -> *const u8 {
    read_kernel::<u64>(dentry, offset(|l| &l.dentry_d_inode)) as *const u8
}

/// The dentry of `path` (a kernel `struct path *`).
#[inline(always)]
pub fn path_dentry(path: *const u8) -> *const u8 {
    read_kernel::<u64>(path, offset(|l| &l.path_dentry)) as *const u8
}

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
    decide(&Action {
        op,
        agent,
        path: Where::Walk {
            mnt: path_mnt(path),
            dentry: path_dentry(path),
        },
        second: None,
        second_file: FileId::ZERO,
        file: file_id(inode as *const u8),
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

/// Decides `op` on the entry `dentry` in directory `dir` (a kernel `struct path *`).
/// `creates` marks ops that make a new name, whose answers bind to the directory and the name;
/// the others bind to the entry's inode.
#[inline(always)]
pub fn decide_on_entry(
    op: Op,
    agent: AgentCgroup,
    dir: *const u8,
    dentry: *const u8,
    creates: bool,
) -> Result<i32, i32> {
    let file = if creates {
        let d_name = dentry.wrapping_add(offset(|l| &l.dentry_d_name));
        FileId {
            name: read_kernel(d_name, 0),
            ..file_id(dentry_inode(path_dentry(dir)))
        }
    } else {
        file_id(dentry_inode(dentry))
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

/// The mount of `path` (a kernel `struct path *`).
#[inline(always)]
pub fn path_mnt(path: *const u8) -> *const u8 {
    read_kernel::<u64>(path, offset(|l| &l.path_mnt)) as *const u8
}

/// The current task (a kernel `struct task_struct *`, read with [`read_kernel`]).
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// The thread group id of `task` (a kernel `struct task_struct *`).
#[inline(always)]
pub fn task_tgid(task: *const u8) -> u32 {
    read_kernel::<i32>(task, offset(|l| &l.task_tgid)).cast_unsigned()
}

pub fn parent_tgid() -> u32 {
    let task = current_task();
    let parent: u64 = read_kernel(task, offset(|l| &l.task_real_parent));
    task_tgid(parent as *const u8)
}

/// Whether a hold cannot work for the current task, which then gets a denial instead: kernel
/// threads and `io_uring` workers cannot be stopped with a signal, and a task that has used
/// `io_uring` may be running this hook for a request issued inside `io_uring_enter` or from task
/// work, where the restart code would not restart anything but reach the request's completion
/// as errno 513.
fn current_cannot_stop() -> bool {
    let task = current_task();
    let flags: u32 = read_kernel(task, offset(|l| &l.task_flags));
    if flags & (PF_KTHREAD | PF_IO_WORKER) != 0 {
        return true;
    }
    let io_uring = offset(|l| &l.task_io_uring);
    io_uring != KernelLayout::ABSENT as usize && read_kernel::<u64>(task, io_uring) != 0
}

/// How to resolve the path of an action's object.
pub enum Where {
    /// A BTF-typed kernel `struct path *` (inside a hook argument), resolved with `bpf_d_path`
    /// (the exec and open hooks, where every supported kernel allows that helper).
    Path(*const c_void),
    /// A dentry on a mount, resolved by walking the dentry and mount trees: the `path_*` hooks,
    /// where 6.1 does not allow `bpf_d_path`, and entries that do not exist yet.
    Walk { mnt: *const u8, dentry: *const u8 },
}

/// One operation to decide.
pub struct Action {
    pub op: Op,
    pub agent: AgentCgroup,
    /// Where the object is, to resolve its path.
    pub path: Where,
    /// For two-path ops (rename, link): the other end. Both are evaluated and the more severe
    /// decision applies, so a denied file cannot be renamed or linked into an allowed place.
    pub second: Option<Where>,
    /// The object's identity, which answers to holds are bound to.
    pub file: FileId,
    /// For two-path ops, the other end's identity (its directory and name), which answers to
    /// holds are bound to as well; [`FileId::ZERO`] otherwise.
    pub second_file: FileId,
    /// This action cannot be held: a hold verdict is enforced as a denial, reported. Set for
    /// the interpreter pass of a `#!` exec (the script's own pass may have been held already,
    /// and one `execve` cannot be paused twice: its restart would decide the script again) and
    /// for the executable mappings the kernel makes inside `execve` (past the point of no
    /// return, a restart is impossible).
    pub no_hold: bool,
    /// `EVENT_FLAG_*` bits every event of this action carries (e.g. `EVENT_FLAG_MAPPING`).
    pub flags: u32,
}

/// Decides `action`: `Ok(0)` lets the operation proceed, `Err(-errno)` refuses it (or, for a
/// hold, stops the task and restarts the syscall when it is continued).
#[inline(always)]
pub fn decide(action: &Action) -> Result<i32, i32> {
    decide_with(action, || None)
}

/// [`decide`] with `checks` run once a write open missed the write-decision cache, before its
/// decision: a verdict from them is the hook's (`file_open`'s checks that are not rules). A
/// cached allow skips them: it was only stored after they passed, for the same file.
#[inline(always)]
pub fn decide_with(
    action: &Action,
    checks: impl FnOnce() -> Option<Result<i32, i32>>,
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
        if let Some(verdict) = checks() {
            return verdict;
        }
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
    if verdict.enforced == Decision::Hold {
        let grant = GrantKey {
            file: action.file,
            agent_id: action.agent.agent_id,
            op: action.op as u8,
            pad: [0; 3],
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
        let room = EVENTS.query(BPF_RB_AVAIL_DATA) <= u64::from(EVENTS_BYTES) - EVENTS_RESERVE;
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

/// Removes the current thread's `PENDING` entry and uncounts it when this removal took it
/// (the daemon may have removed it first).
#[inline(always)]
fn forget_pending(tid: u32) {
    if PENDING.remove(tid).is_ok() {
        atomic_add(&HELD, held_slot(tid), u32::MAX);
    }
}

/// The answer to a held task that comes back here once continued, if the current task is
/// one; `None` to decide afresh.
#[inline(always)]
fn answer_pending(tid: u32, action: &Action, s: &mut Scratch) -> Option<Result<i32, i32>> {
    // SAFETY: the entry is copied out before any map update.
    let pending = unsafe { PENDING.get(tid) }.copied()?;
    // An entry older than this thread is another thread's, whose id was reused (it died while
    // held, or before it came back for its answer): never this thread's to consume or to be
    // stopped by. Decide afresh; a new hold overwrites it. (Request ids are
    // `bpf_ktime_get_ns` times; `start_time` is the thread's fork time on the same clock.)
    let task = current_task();
    if read_kernel::<u64>(task, offset(|l| &l.task_start_time)) > pending.request_id {
        return None;
    }
    match pending.answer(action.op as u8, &action.file, &action.second_file) {
        PendingAnswer::StillPending => Some(stop(tid)),
        answer @ (PendingAnswer::Allow | PendingAnswer::Deny) => {
            let allowed = answer == PendingAnswer::Allow && bind_exec(tid, action, &pending);
            forget_pending(tid);
            resolve_path(&action.path, s);
            let verdict = Verdict {
                decision: Decision::Hold,
                enforced: if allowed {
                    Decision::Allow
                } else {
                    Decision::Deny
                },
                rule_id: pending.rule_id,
            };
            let (kind, counted) = if allowed {
                (EventKind::GrantUsed, counter::GRANTS_USED)
            } else {
                (
                    EventKind::GrantDenied,
                    counter::DECISION_BASE + Decision::Deny as u32,
                )
            };
            count(counted);
            emit(kind, action, &verdict, pending.request_id, s);
            Some(if allowed { Ok(0) } else { Err(opaque_eperm()) })
        }
        // Left over from a thread that died while held and whose id was reused: decide
        // afresh (a new hold overwrites it).
        PendingAnswer::NotThisAction => None,
    }
}

/// For an approved `execve` (not an executable mapping), hands the approval's argument binding
/// to the `bprm_committed_creds` program (see `exec_bind`), which compares it with the strings
/// the kernel copies for this very `execve`. False — the approval is enforced as a denial —
/// when the daemon bound nothing (an `execve` whose arguments it could not read) or the binding
/// cannot be recorded. Every other approved action needs no binding.
#[inline(always)]
fn bind_exec(tid: u32, action: &Action, pending: &PendingRequest) -> bool {
    if action.op != Op::Exec || action.flags & EVENT_FLAG_MAPPING != 0 {
        return true;
    }
    if !pending.args.is_bound() {
        count(counter::ERRORS);
        return false;
    }
    let binding = ExecBinding {
        request_id: pending.request_id,
        bprm: 0,
        args: pending.args,
        rule_id: pending.rule_id,
        pad: 0,
    };
    if EXEC_BIND.insert(tid, binding, 0).is_err() {
        count(counter::ERRORS);
        return false;
    }
    true
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

/// Whether the cache allows the write open of `path` again, with nothing it depended on
/// changed since; counted as an allow (and a cache hit). Leaves the captured state in
/// `s.cache_key` for [`remember_allow`].
#[inline(always)]
fn cache_allows(path: *const u8, action: &Action, s: &mut Scratch) -> bool {
    cache::capture(path, action.agent.agent_id, &mut s.cache_key);
    if !cache::lookup(&s.cache_key) {
        return false;
    }
    count(counter::DECISION_BASE + Decision::Allow as u32);
    count(counter::CACHE_HITS);
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

/// Records the request, reports it, stops the task and restarts the syscall on continue. The
/// pending entry is written first: it is what keeps the task held, even when the event is
/// dropped or no daemon runs.
#[inline(always)]
fn hold(tid: u32, action: &Action, verdict: &Verdict, s: &mut Scratch) -> Result<i32, i32> {
    // SAFETY: helper without arguments.
    let request_id = unsafe { bpf_ktime_get_ns() };
    let request = PendingRequest {
        request_id,
        file: action.file,
        second: action.second_file,
        args: ArgsBinding {
            full: 0,
            tail: 0,
            full_len: 0,
            tail_len: 0,
        },
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        agent_id: action.agent.agent_id,
        rule_id: verdict.rule_id,
        op: action.op as u8,
        state: STATE_PENDING,
        pad: [0; 2],
    };
    // Counted first: the count may exceed the entries, never fall short of them.
    atomic_add(&HELD, held_slot(tid), 1);
    if PENDING.insert(tid, request, 0).is_err() {
        count(counter::ERRORS);
        count(counter::DECISION_BASE + Decision::Deny as u32);
        let denied = Verdict {
            enforced: Decision::Deny,
            ..*verdict
        };
        emit(EventKind::Decision, action, &denied, 0, s);
        return Err(-EPERM);
    }
    count(counter::DECISION_BASE + Decision::Hold as u32);
    if action.second.is_some() {
        fill_event(
            &mut s.peer,
            EventKind::HoldPeer,
            action,
            verdict,
            request_id,
        );
        output(&s.peer);
    }
    emit(EventKind::Hold, action, verdict, request_id, s);
    stop(tid)
}

/// Stops the current task and asks for the syscall to be restarted on continue; denies when
/// the signal cannot be sent.
///
/// A reviewer may answer between the moment the task's request became visible and the moment
/// `SIGSTOP` is sent here; their `SIGCONT` would then come first and our stop would never be
/// undone. The reviewer writes the answer before signalling, and both signals take the task's
/// signal lock, so after sending `SIGSTOP` we look again: if the request was answered meanwhile
/// we cancel our own stop with `SIGCONT`, and the restarted syscall consumes the answer.
#[inline(always)]
fn stop(tid: u32) -> Result<i32, i32> {
    // SAFETY: helper with a plain signal number.
    if unsafe { bpf_send_signal(SIGSTOP) } != 0 {
        count(counter::ERRORS);
        forget_pending(tid);
        return Err(-EPERM);
    }
    // SAFETY: the state is copied out.
    let still_pending = unsafe { PENDING.get(tid) }.is_some_and(|p| p.state == STATE_PENDING);
    // SAFETY: helper with a plain signal number.
    if !still_pending && unsafe { bpf_send_signal(SIGCONT) } != 0 {
        // The stop cannot be undone: fail the syscall instead of stopping without a waiter.
        // The answer stays for the next identical action.
        count(counter::ERRORS);
        return Err(-EPERM);
    }
    Err(-ERESTARTNOINTR)
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

/// The superblock magic of the filesystem `place` lies on, read through its mount
/// (`vfsmount->mnt_sb`): the same superblock as the inode's `i_sb` (for `file_open`,
/// `file->f_inode->i_sb`), and available for entries that have no inode yet (mkdir, create).
#[inline(always)]
fn fs_magic(place: &Where) -> u64 {
    match *place {
        // SAFETY: a BTF-typed path (see `Where::Path`): `mnt` and `mnt_sb` are pointer members,
        // `s_magic` an unsigned long.
        Where::Path(path) => unsafe {
            let mnt = load_ptr(path.cast(), offset(|l| &l.path_mnt));
            let sb = load_ptr(mnt, offset(|l| &l.vfsmount_mnt_sb));
            load_btf(sb, offset(|l| &l.super_block_s_magic))
        },
        Where::Walk { mnt, .. } => {
            let sb: u64 = read_kernel(mnt, offset(|l| &l.vfsmount_mnt_sb));
            read_kernel(sb as *const u8, offset(|l| &l.super_block_s_magic))
        }
    }
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

/// Writes the resolved path of `place` into the event buffer; false when it cannot be
/// resolved (the decision then fails closed).
#[inline(always)]
fn resolve_path(place: &Where, s: &mut Scratch) -> bool {
    s.event.flags = 0;
    let resolved = match *place {
        Where::Path(path) => resolve_btf_path(path, s),
        Where::Walk { mnt, dentry } => walk_path(mnt, dentry, s),
    };
    if !resolved {
        s.event.flags = EVENT_FLAG_PATH_UNRESOLVED;
        s.event.path_len = 0;
        count(counter::ERRORS);
    }
    resolved
}

/// The current task's mount namespace (0 when it has none: an exiting task).
#[inline(always)]
fn current_mnt_ns() -> u64 {
    let task = current_task();
    let nsproxy: u64 = read_kernel(task, offset(|l| &l.task_nsproxy));
    read_kernel(nsproxy as *const u8, offset(|l| &l.nsproxy_mnt_ns))
}

/// Where the mount `mnt` (a `struct vfsmount *`) is attached, seen from the current task.
///
/// [`MountNs::Foreign`] for a detached tree (`open_tree(OPEN_TREE_CLONE)`, `fsmount`: an
/// anonymous namespace of its own), a lazily unmounted mount (none), or a mount of another
/// namespace reached through `/proc/PID/root` or a descriptor passed in: there the path a walk
/// or `d_path` builds is relative to some other root, not the path the rest of the system sees,
/// so a decision by it would be a decision about another file.
#[inline(always)]
pub fn mount_ns(mnt: u64) -> MountNs {
    let mount = mnt.wrapping_sub(offset(|l| &l.mount_mnt) as u64);
    let ns: u64 = read_kernel(mount as *const u8, offset(|l| &l.mount_mnt_ns));
    if ns == MNT_NS_INTERNAL {
        MountNs::Internal
    } else if ns != 0 && ns == current_mnt_ns() {
        MountNs::Here
    } else {
        MountNs::Foreign
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MountNs {
    /// Attached in the current task's mount namespace.
    Here,
    /// One of the kernel's internal mounts (`MNT_NS_INTERNAL`: pipes, sockets, `memfd`, System V
    /// shared memory, anonymous inodes). Their objects have no path anywhere; both resolvers
    /// name them as the kernel's `d_path` does (`/memfd:NAME (deleted)`), which only a rule for
    /// exactly that name matches.
    Internal,
    /// Anything else: the path would not be the one the rest of the system sees.
    Foreign,
}

/// `MNT_NS_INTERNAL` (`ERR_PTR(-EINVAL)`): the namespace of the kernel's internal mounts.
const MNT_NS_INTERNAL: u64 = (-22_i64).cast_unsigned();

/// Resolves a BTF-typed `struct path *` (see [`Where::Path`]): with `bpf_d_path` when its
/// result is the path the rest of the system sees, with the checking walk otherwise, and not
/// at all on a mount of another (or no) namespace.
///
/// `d_path` does not tell a path it could not connect to the root: a dentry that escaped the
/// root of a bind mount (the file was moved out of the bind-mounted directory while the agent
/// kept it open) or a disconnected one (`open_by_handle_at`) comes back as a path relative to
/// its filesystem, as if it were a mount root. Both are only possible on a mount of a
/// subdirectory (its root is not the filesystem's root) or for a dentry that is its own parent;
/// those take the walk, which refuses them ([`walk_path`]). Everything else, the common case,
/// keeps the faster helper.
#[inline(always)]
fn resolve_btf_path(path: *const c_void, s: &mut Scratch) -> bool {
    let path = path.cast::<u8>();
    let mnt: u64 = read_kernel(path, offset(|l| &l.path_mnt));
    let dentry: u64 = read_kernel(path, offset(|l| &l.path_dentry));
    match mount_ns(mnt) {
        MountNs::Foreign => return false,
        MountNs::Internal => {
            // Pseudo files (`memfd`, pipes) as the kernel names them; a path below a private
            // clone's root (an overlay layer's) is not one anyone else sees.
            let parent: u64 = read_kernel(dentry as *const u8, offset(|l| &l.dentry_d_parent));
            return parent == dentry && d_path(path.cast(), s);
        }
        MountNs::Here => {}
    }
    let mnt_root: u64 = read_kernel(mnt as *const u8, offset(|l| &l.vfsmount_mnt_root));
    let sb: u64 = read_kernel(mnt as *const u8, offset(|l| &l.vfsmount_mnt_sb));
    let fs_root: u64 = read_kernel(sb as *const u8, offset(|l| &l.super_block_s_root));
    let parent: u64 = read_kernel(dentry as *const u8, offset(|l| &l.dentry_d_parent));
    if mnt_root != fs_root || parent == dentry {
        walk_path(mnt as *const u8, dentry as *const u8, s)
    } else {
        d_path(path.cast(), s)
    }
}

/// The mount through which the current task's namespace shows the whole filesystem of `sb`
/// (a `struct super_block *`): the task's root mount when it is of that filesystem and shows
/// all of it (the common case: a file on the root filesystem), else the first of the
/// filesystem's mounts (`s_mounts`) attached here whose root is the filesystem's root; null
/// when there is none among the first [`SB_MOUNTS_SEARCHED`] (or the kernel's mount list is not
/// known to jit: kernels newer than 6.12 only get the root mount).
/// For hooks that only get a dentry (xattrs, timestamps): the path through such a mount is the
/// file's name in the namespace; a filesystem shown only through bind mounts of
/// subdirectories has no such name, and its decisions fail closed.
#[inline(always)]
pub fn whole_mount_of(sb: *const u8) -> *const u8 {
    let fs_root: u64 = read_kernel(sb, offset(|l| &l.super_block_s_root));
    let task = current_task();
    let fs: u64 = read_kernel(task, offset(|l| &l.task_fs));
    let root_path = (fs as *const u8).wrapping_add(offset(|l| &l.fs_struct_root));
    let root_mnt = path_mnt(root_path);
    let root_sb: u64 = read_kernel(root_mnt, offset(|l| &l.vfsmount_mnt_sb));
    let root_root: u64 = read_kernel(root_mnt, offset(|l| &l.vfsmount_mnt_root));
    if root_sb == sb as u64 && root_root == fs_root {
        return root_mnt;
    }
    let instance = offset(|l| &l.mount_mnt_instance);
    if instance == KernelLayout::ABSENT as usize {
        return core::ptr::null();
    }
    let head = (sb as u64).wrapping_add(offset(|l| &l.super_block_s_mounts) as u64);
    let ns = current_mnt_ns();
    let mount_mnt = offset(|l| &l.mount_mnt) as u64;
    // list_head.next is its first member.
    let mut node: u64 = read_kernel(head as *const u8, 0);
    for _ in 0..SB_MOUNTS_SEARCHED {
        if node == head || node == 0 {
            break;
        }
        let mount = node.wrapping_sub(instance as u64);
        let mnt = mount.wrapping_add(mount_mnt);
        let root: u64 = read_kernel(mnt as *const u8, offset(|l| &l.vfsmount_mnt_root));
        let mnt_ns: u64 = read_kernel(mount as *const u8, offset(|l| &l.mount_mnt_ns));
        if root == fs_root && ((mnt_ns == ns && ns != 0) || mnt_ns == MNT_NS_INTERNAL) {
            return mnt as *const u8;
        }
        node = read_kernel(node as *const u8, 0);
    }
    core::ptr::null()
}

/// How many mounts of one filesystem [`whole_mount_of`] looks at.
const SB_MOUNTS_SEARCHED: u32 = 16;

#[inline(always)]
fn d_path(path: *const c_void, s: &mut Scratch) -> bool {
    // SAFETY: `path` is a `struct path *` from the hook's arguments; the buffer is map memory
    // of exactly EVENT_PATH_MAX bytes.
    let len = unsafe {
        bpf_d_path(
            path as *mut _,
            s.event.path.as_mut_ptr().cast(),
            EVENT_PATH_MAX as u32,
        )
    };
    let Ok(len) = usize::try_from(len) else {
        return false;
    };
    // bpf_d_path counts the terminator.
    let path_len = len.saturating_sub(1) & (EVENT_PATH_MAX - 1);
    s.event.path_len = path_len as u32;
    if path_len >= EVENT_PATH_MAX - 1 {
        s.event.flags |= EVENT_FLAG_PATH_TRUNCATED;
    }
    true
}

/// Names the pseudo file `dentry` of an internal mount `mnt` as the kernel's `simple_dname`
/// does, `/NAME (deleted)`; fails for anything else on an internal mount (a path below a
/// private clone's root, such as an overlay layer's, is not a path anyone else sees).
/// Kept out of [`walk_path`]'s loop, where every branch multiplies the verifier's states.
#[inline(always)]
fn pseudo_name(mnt: *const u8, dentry: *const u8, s: &mut Scratch) -> bool {
    let root: u64 = read_kernel(mnt, offset(|l| &l.vfsmount_mnt_root));
    let parent: u64 = read_kernel(dentry, offset(|l| &l.dentry_d_parent));
    if dentry as u64 == root || dentry as u64 != parent {
        return false;
    }
    let d_name = dentry.wrapping_add(offset(|l| &l.dentry_d_name));
    // struct qstr { u32 hash; u32 len; ... } on little-endian; name follows.
    let len = read_kernel::<u32>(d_name, 4) as usize & 0xff;
    let name: u64 = read_kernel(d_name, offset(|l| &l.qstr_name));
    s.event.path[0] = b'/';
    // SAFETY: at most 255 bytes at offset 1, then 10 at offset at most 256: inside the event's
    // path buffer (EVENT_PATH_MAX bytes).
    unsafe {
        bpf_probe_read_kernel(
            s.event.path.as_mut_ptr().add(1).cast(),
            len as u32,
            name as *const c_void,
        );
        bpf_probe_read_kernel(
            s.event.path.as_mut_ptr().add((1 + len) & 0x1ff).cast(),
            DELETED.len() as u32,
            DELETED.as_ptr().cast(),
        );
    }
    s.event.path_len = (1 + len + DELETED.len()) as u32;
    true
}

/// What the kernel's `simple_dname` appends to the name of a pseudo file.
const DELETED: &[u8; 10] = b" (deleted)";

/// Deepest path the walk resolves, in components (mount crossings included).
const WALK_DEPTH: u32 = 64;

/// Builds the absolute path of `dentry` on mount `mnt` the way the kernel's `prepend_path`
/// does: names are prepended while walking `d_parent` up to the mount's root, then the walk
/// continues from the mountpoint in the parent mount, up to the root of the mount tree. Loop
/// state lives in scratch memory so the verifier can merge the branches of every iteration.
///
/// Fails (and the decision fails closed) wherever the result would not be the path the rest of
/// the system sees: a mount not attached in the task's namespace ([`mount_ns`]), a dentry
/// that is its own parent without being its mount's root (escaped from a bind mount, or
/// disconnected), a path deeper than [`WALK_DEPTH`] or longer than `WALK_LEN` (`prepend_path`
/// would name a suffix of it). The one dentry that is its own parent by design, the pseudo
/// file of an internal mount (`memfd`, System V shared memory), is named as the kernel names it
/// (`simple_dname`): `/NAME (deleted)`.
#[inline(always)]
fn walk_path(mnt: *const u8, dentry: *const u8, s: &mut Scratch) -> bool {
    const MASK: usize = WALK_LEN - 1;
    let d_name = offset(|l| &l.dentry_d_name);
    match mount_ns(mnt as u64) {
        MountNs::Foreign => return false,
        MountNs::Internal => return pseudo_name(mnt, dentry, s),
        MountNs::Here => {}
    }
    let mut dentry = dentry as u64;
    let mut mount = (mnt as u64).wrapping_sub(offset(|l| &l.mount_mnt) as u64);
    // SAFETY (volatile accesses): plain integers in scratch memory.
    unsafe { core::ptr::write_volatile(&raw mut s.walk_pos, WALK_LEN as u32) };
    let mut complete = false;
    for _ in 0..WALK_DEPTH {
        let mnt = mount.wrapping_add(offset(|l| &l.mount_mnt) as u64) as *const u8;
        let root: u64 = read_kernel(mnt, offset(|l| &l.vfsmount_mnt_root));
        let parent: u64 = read_kernel(dentry as *const u8, offset(|l| &l.dentry_d_parent));
        if dentry == 0 {
            break;
        }
        if dentry != root && dentry == parent {
            // Its own parent, yet not the mount's root: escaped or disconnected.
            break;
        }
        if dentry == root {
            let mount_parent: u64 =
                read_kernel(mount as *const u8, offset(|l| &l.mount_mnt_parent));
            if mount_parent == mount || mount_parent == 0 {
                complete = true;
                break;
            }
            dentry = read_kernel(mount as *const u8, offset(|l| &l.mount_mnt_mountpoint));
            mount = mount_parent;
            continue;
        }
        // struct qstr { u32 hash; u32 len; ... } on little-endian; name follows.
        let len = read_kernel::<u32>(dentry as *const u8, d_name + 4) as usize & 0xff;
        let name: u64 = read_kernel(dentry as *const u8, d_name + offset(|l| &l.qstr_name));
        // SAFETY: as above.
        let pos = unsafe { core::ptr::read_volatile(&raw const s.walk_pos) } as usize;
        if pos < len + 1 {
            // Longer than PATH_MAX: what fits is a suffix, not the path.
            break;
        }
        let start = pos - len - 1;
        // SAFETY: masked offset plus at most 255 bytes stays inside `walk` and its slack.
        unsafe {
            bpf_probe_read_kernel(
                s.walk.as_mut_ptr().add((start + 1) & MASK).cast(),
                len as u32,
                name as *const c_void,
            );
        }
        if let Some(sep) = s.walk.get_mut(start & MASK) {
            *sep = b'/';
        }
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&raw mut s.walk_pos, start as u32) };
        dentry = parent;
    }
    if !complete {
        return false;
    }
    // SAFETY: as above.
    let pos = unsafe { core::ptr::read_volatile(&raw const s.walk_pos) } as usize & MASK;
    let len = WALK_LEN - pos;
    if len == WALK_LEN {
        // Nothing prepended: the root itself.
        s.event.path[0] = b'/';
        s.event.path_len = 1;
        return true;
    }
    // SAFETY: both ranges lie inside scratch memory (masked offset, length at most WALK_LEN).
    unsafe {
        bpf_probe_read_kernel(
            s.event.path.as_mut_ptr().cast(),
            (len & MASK) as u32,
            s.walk.as_ptr().add(pos).cast(),
        );
    }
    s.event.path_len = (len & MASK) as u32;
    true
}

#[inline(always)]
fn evaluate_path(action: &Action, s: &mut Scratch) -> Verdict {
    let Some(cfg) = (unsafe { AGENT_CONFIG.get(action.agent.agent_id) }) else {
        count(counter::ERRORS);
        return Verdict::fail_closed();
    };
    // The key holds the path (see `load_key_path`); finish_lookup terminates it.
    // The agent's current rule set, read once: a policy reload switches it atomically.
    s.key
        .finish_lookup(cfg.ruleset, action.op, s.event.path_len as usize);
    let lookup = |key: &PolicyKey| {
        // SAFETY: PolicyKey has the layout of aya's Key<[u8; KEY_DATA_LEN]> (repr(C) u32 + bytes).
        let key = unsafe { &*(core::ptr::from_ref(key).cast::<Key<[u8; KEY_DATA_LEN]>>()) };
        match POLICY.get(key) {
            Some(v) => *v,
            // SAFETY: plain read of a global.
            None => unsafe { core::ptr::read_volatile(&raw const JIT_NO_MATCH) },
        }
    };
    evaluate_with(
        lookup,
        &s.key,
        cfg,
        &mut s.layout,
        &mut s.wildcard_key,
        copy_key_bytes,
    )
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

/// Reports `action` with `verdict` outside a decision (resolving its path first), counted as
/// an enforced `verdict.enforced`.
#[inline(always)]
pub fn report(kind: EventKind, action: &Action, verdict: &Verdict, request_id: u64) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        count(counter::ERRORS);
        return;
    };
    // SAFETY: per-CPU scratch memory, used by one program at a time on this CPU.
    let s = unsafe { &mut *scratch };
    resolve_path(&action.path, s);
    count(counter::DECISION_BASE + verdict.enforced as u32);
    emit(kind, action, verdict, request_id, s);
}

#[inline(always)]
fn emit(kind: EventKind, action: &Action, verdict: &Verdict, request_id: u64, s: &mut Scratch) {
    fill_event(&mut s.event, kind, action, verdict, request_id);
    let _ = output(&s.event);
}

/// Fills every field of `e` but the path (and its flags, to which `action.flags` are added).
#[inline(always)]
fn fill_event(e: &mut Event, kind: EventKind, action: &Action, verdict: &Verdict, request_id: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: helpers without pointer arguments.
    unsafe {
        e.ts_ns = bpf_ktime_get_ns();
        e.cgroup_id = bpf_get_current_cgroup_id();
    }
    e.request_id = request_id;
    e.file = action.file;
    e.pid = pid_tgid as u32;
    e.tgid = (pid_tgid >> 32) as u32;
    e.uid = uid_gid as u32;
    e.gid = (uid_gid >> 32) as u32;
    e.ppid = parent_tgid();
    e.agent_id = action.agent.agent_id;
    e.rule_id = verdict.rule_id;
    e.kind = kind as u8;
    e.op = action.op as u8;
    e.decision = verdict.decision as u8;
    e.enforced = verdict.enforced as u8;
    e.flags |= action.flags;
}

/// Sends `e` to userspace (its header and the path bytes in use), counting it as emitted or
/// dropped; whether it was sent.
#[inline(always)]
fn output(e: &Event) -> bool {
    // SAFETY: the first `wire_len` (at most `size_of::<Event>()`) bytes of `e`.
    let bytes = unsafe { core::slice::from_raw_parts((&raw const *e).cast::<u8>(), e.wire_len()) };
    if EVENTS.output::<[u8]>(bytes, 0).is_ok() {
        count(counter::EVENTS_EMITTED);
        true
    } else {
        count(counter::EVENTS_DROPPED);
        false
    }
}

/// Copies the path just resolved into `s.peer`, with `role` (`EVENT_FLAG_PEER_IS_SOURCE` or 0)
/// as its flags besides the resolution's.
#[inline(always)]
fn keep_peer(s: &mut Scratch, role: u32) {
    s.peer.path_len = s.event.path_len;
    s.peer.flags = s.event.flags | role;
    // SAFETY: both buffers are `EVENT_PATH_MAX` bytes of the same map value.
    unsafe {
        bpf_probe_read_kernel(
            s.peer.path.as_mut_ptr().cast(),
            EVENT_PATH_MAX as u32,
            s.event.path.as_ptr().cast(),
        );
    }
}
