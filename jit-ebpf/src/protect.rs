//! Self-protection outside the file hooks: who the daemon is, and how a denial is reported.
//! (File ops are checked by the engine, see `engine::evaluate_where`.)
#![expect(
    clippy::cast_possible_truncation,
    reason = "the helpers pack two u32 into one u64"
)]
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
};
use jit_common::{
    AgentCgroup,
    event::{EVENT_HEADER_LEN, EventKind, counter},
    pending::FileId,
    policy::Decision,
    protect::SELF_PROTECTION_RULE_ID,
};

use crate::{
    EPERM,
    engine::parent_tgid,
    maps::{EVENTS, PROTECT_CONFIG, SCRATCH, count},
};

/// The daemon's thread group id, 0 while none is set.
#[inline(always)]
pub fn daemon_tgid() -> u32 {
    PROTECT_CONFIG.get(0).map_or(0, |c| c.daemon_tgid)
}

/// Reports a self-protection denial of `op` (a `jit_common::protect::event_op` code) by
/// `agent` against `target` (a thread group id, or 0) with `detail` (signal, ptrace mode or
/// bpf command), and returns the hook's verdict: `-EPERM`.
#[inline(always)]
pub fn deny(op: u8, agent: AgentCgroup, target: u32, detail: u64) -> i32 {
    count(counter::DECISION_BASE + Decision::Deny as u32);
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        count(counter::ERRORS);
        return -EPERM;
    };
    // SAFETY: per-CPU scratch memory, used by one program at a time on this CPU.
    let e = unsafe { &mut (*scratch).event };
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: helpers without pointer arguments.
    unsafe {
        e.ts_ns = bpf_ktime_get_ns();
        e.cgroup_id = bpf_get_current_cgroup_id();
    }
    e.request_id = 0;
    e.file = FileId {
        dev: 0,
        ino: u64::from(target),
        name: detail,
    };
    e.pid = pid_tgid as u32;
    e.tgid = (pid_tgid >> 32) as u32;
    e.uid = uid_gid as u32;
    e.gid = (uid_gid >> 32) as u32;
    e.ppid = parent_tgid();
    e.agent_id = agent.agent_id;
    e.rule_id = SELF_PROTECTION_RULE_ID;
    e.path_len = 0;
    e.kind = EventKind::Decision as u8;
    e.op = op;
    e.decision = Decision::Deny as u8;
    e.enforced = Decision::Deny as u8;
    e.flags = 0;
    // SAFETY: the header of `e`: a self-protection record has no path.
    let bytes =
        unsafe { core::slice::from_raw_parts((&raw const *e).cast::<u8>(), EVENT_HEADER_LEN) };
    if EVENTS.output::<[u8]>(bytes, 0).is_ok() {
        count(counter::EVENTS_EMITTED);
    } else {
        count(counter::EVENTS_DROPPED);
    }
    -EPERM
}
