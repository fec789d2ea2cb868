//! The decision engine every hook shares: resolve the path, evaluate the agent's rules with the
//! pure logic from `jit_common::policy`, count, report, and turn the verdict into a return value.
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
            bpf_probe_read_kernel,
        },
    },
    maps::lpm_trie::Key,
};
use jit_common::{
    AgentCgroup,
    event::{
        EVENT_FLAG_PATH_TRUNCATED, EVENT_FLAG_PATH_UNRESOLVED, EVENT_PATH_MAX, Event, EventKind,
        counter,
    },
    layout::KernelLayout,
    policy::{Decision, KEY_DATA_LEN, Op, PATH_CAPACITY, PolicyKey, Verdict, evaluate_with},
};

use crate::{
    EPERM,
    maps::{AGENT_CONFIG, EVENTS, POLICY, SCRATCH, Scratch, count},
};

/// Struct member offsets of the running kernel, written by userspace before load.
#[unsafe(no_mangle)]
static JIT_LAYOUT: KernelLayout = KernelLayout::UNSET;

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

fn parent_tgid() -> u32 {
    // SAFETY: helpers without pointer arguments, then bounded reads of kernel memory.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let mut parent: *const u8 = core::ptr::null();
        let mut tgid: i32 = 0;
        if bpf_probe_read_kernel(
            (&raw mut parent).cast(),
            8,
            task.add(offset(|l| &l.task_real_parent)).cast(),
        ) != 0
        {
            return 0;
        }
        if bpf_probe_read_kernel(
            (&raw mut tgid).cast(),
            4,
            parent.add(offset(|l| &l.task_tgid)).cast(),
        ) != 0
        {
            return 0;
        }
        tgid.cast_unsigned()
    }
}

/// Decides `op` on the file at `path` (a kernel `struct path *`) for `agent`: `Ok(0)` lets the
/// operation proceed, `Err(-errno)` refuses it.
#[inline(always)]
pub fn decide(op: Op, agent: AgentCgroup, path: *const c_void) -> Result<i32, i32> {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        count(counter::ERRORS);
        return Err(-EPERM);
    };
    // SAFETY: per-CPU scratch memory, used by one program at a time on this CPU.
    let scratch = unsafe { &mut *scratch };
    let verdict = evaluate_path(op, agent, path, scratch);
    count(counter::DECISION_BASE + verdict.enforced as u32);
    if verdict.decision != Decision::Allow || verdict.enforced != Decision::Allow {
        emit(op, agent, &verdict, scratch);
    }
    match verdict.enforced {
        Decision::Allow | Decision::Audit => Ok(0),
        // Holding needs the pending/grant machinery; until it exists a hold fails closed.
        Decision::Hold | Decision::Deny => Err(-EPERM),
    }
}

#[inline(always)]
fn evaluate_path(op: Op, agent: AgentCgroup, path: *const c_void, s: &mut Scratch) -> Verdict {
    s.event.flags = 0;
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
        s.event.flags = EVENT_FLAG_PATH_UNRESOLVED;
        s.event.path_len = 0;
        count(counter::ERRORS);
        return Verdict::fail_closed();
    };
    // bpf_d_path counts the terminator.
    let path_len = len.saturating_sub(1) & (EVENT_PATH_MAX - 1);
    s.event.path_len = path_len as u32;
    let Some(cfg) = (unsafe { AGENT_CONFIG.get(agent.agent_id) }) else {
        count(counter::ERRORS);
        return Verdict::fail_closed();
    };
    // The key holds the first PATH_CAPACITY bytes of the path; finish_lookup terminates it.
    // SAFETY: both buffers are map memory at least PATH_CAPACITY bytes long.
    unsafe {
        bpf_probe_read_kernel(
            s.key
                .data
                .as_mut_ptr()
                .add(KEY_DATA_LEN - PATH_CAPACITY)
                .cast(),
            PATH_CAPACITY as u32,
            s.event.path.as_ptr().cast(),
        );
    }
    if path_len >= EVENT_PATH_MAX - 1 {
        s.event.flags |= EVENT_FLAG_PATH_TRUNCATED;
    }
    s.key.finish_lookup(agent.agent_id, op, path_len);
    let lookup = |key: &PolicyKey| {
        // SAFETY: PolicyKey has the layout of aya's Key<[u8; KEY_DATA_LEN]> (repr(C) u32 + bytes).
        let key = unsafe { &*(core::ptr::from_ref(key).cast::<Key<[u8; KEY_DATA_LEN]>>()) };
        POLICY.get(key).copied()
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

#[inline(always)]
fn emit(op: Op, agent: AgentCgroup, verdict: &Verdict, s: &mut Scratch) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let e = &mut s.event;
    // SAFETY: helpers without pointer arguments.
    unsafe {
        e.ts_ns = bpf_ktime_get_ns();
        e.cgroup_id = bpf_get_current_cgroup_id();
    }
    e.pid = pid_tgid as u32;
    e.tgid = (pid_tgid >> 32) as u32;
    e.uid = uid_gid as u32;
    e.gid = (uid_gid >> 32) as u32;
    e.ppid = parent_tgid();
    e.agent_id = agent.agent_id;
    e.rule_id = verdict.rule_id;
    e.kind = EventKind::Decision as u8;
    e.op = op as u8;
    e.decision = verdict.decision as u8;
    e.enforced = verdict.enforced as u8;
    if EVENTS.output::<Event>(&*e, 0).is_ok() {
        count(counter::EVENTS_EMITTED);
    } else {
        count(counter::EVENTS_DROPPED);
    }
}
