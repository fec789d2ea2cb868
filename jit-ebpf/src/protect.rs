//! Self-protection outside the file hooks: who the daemon is, and how a denial is reported.
//! (File ops are checked by the engine, see `engine::evaluate_where`.)
use jit_common::{
    AgentCgroup,
    event::{EventKind, counter},
    pending::FileId,
    policy::Decision,
    protect::SELF_PROTECTION_VERDICT,
};

use crate::{
    EPERM,
    maps::{PROTECT_CONFIG, SCRATCH, count},
    report::{fill_record, output},
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
    let file = FileId {
        dev: 0,
        ino: u64::from(target),
        name: detail,
    };
    fill_record(
        e,
        EventKind::Decision,
        op,
        agent.agent_id,
        file,
        &SELF_PROTECTION_VERDICT,
        0,
    );
    // A self-protection record has no path: only its header is sent.
    e.path_len = 0;
    e.flags = 0;
    let _ = output(e);
    -EPERM
}
