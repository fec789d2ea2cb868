//! Event reporting: one function fills every record the programs send (decisions, holds,
//! answers, self-protection), one sends it to userspace and counts it (docs/ARCHITECTURE.md,
//! I4).
#![expect(
    clippy::cast_possible_truncation,
    reason = "lengths are bounded by PATH_MAX and the helpers pack two u32 into one u64"
)]
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid,
    generated::{bpf_get_current_cgroup_id, bpf_ktime_get_ns, bpf_probe_read_kernel},
};
use jit_common::{
    event::{
        DenialCount, DenialKey, EVENT_PATH_MAX, EVENTS_BYTES, EVENTS_HOLD_RESERVE, EVENTS_RESERVE,
        Event, EventKind, counter,
    },
    pending::FileId,
    policy::{Decision, Op, Verdict},
};

use crate::{
    action::Action,
    kernel::{acting_ids, parent_tgid},
    maps::{DENIALS, EVENTS, SCRATCH, Scratch, count},
    resolve::resolve_path,
};

/// `bpf_map_update_elem` flag: only when the key is not there yet.
const BPF_NOEXIST: u64 = 1;

/// `bpf_ringbuf_query` flag: bytes written and not yet consumed.
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Whether more than `EVENTS_RESERVE` bytes of the ring are free: the room a record of an
/// allowed, audited action may take (the reserve is for records that must not be lost).
#[inline(always)]
pub fn above_reserve() -> bool {
    room_above(EVENTS_RESERVE)
}

/// Whether more than `reserve` bytes of the ring are free.
#[inline(always)]
fn room_above(reserve: u64) -> bool {
    EVENTS.query(BPF_RB_AVAIL_DATA) <= u64::from(EVENTS_BYTES) - reserve
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
pub fn emit(kind: EventKind, action: &Action, verdict: &Verdict, request_id: u64, s: &mut Scratch) {
    fill_event(&mut s.event, kind, action, verdict, request_id);
    let _ = output(&s.event);
}

/// Fills every field of `e` but the path (and its flags, to which `action.flags` are added).
#[inline(always)]
pub fn fill_event(
    e: &mut Event,
    kind: EventKind,
    action: &Action,
    verdict: &Verdict,
    request_id: u64,
) {
    fill_record(
        e,
        kind,
        action.op as u8,
        action.agent.agent_id,
        action.file,
        verdict,
        request_id,
    );
    e.flags |= action.flags;
}

/// Fills every field of `e` but the path and the flags: the one place that writes records, for
/// the decision engine ([`fill_event`]) and for self-protection (`protect::deny`, whose `op` is
/// a `jit_common::protect::event_op` code).
#[inline(always)]
pub fn fill_record(
    e: &mut Event,
    kind: EventKind,
    op: u8,
    agent_id: u32,
    file: FileId,
    verdict: &Verdict,
    request_id: u64,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // The ids the task acts as on files: the ones `user`/`group` conditions decide by.
    let uid_gid = acting_ids(Op::from_u8(op).unwrap_or(Op::Write));
    // SAFETY: helpers without pointer arguments.
    unsafe {
        e.ts_ns = bpf_ktime_get_ns();
        e.cgroup_id = bpf_get_current_cgroup_id();
    }
    e.request_id = request_id;
    e.file = file;
    e.pid = pid_tgid as u32;
    e.tgid = (pid_tgid >> 32) as u32;
    e.uid = uid_gid as u32;
    e.gid = (uid_gid >> 32) as u32;
    e.ppid = parent_tgid();
    e.agent_id = agent_id;
    e.rule_id = verdict.rule_id;
    e.kind = kind as u8;
    e.op = op;
    e.decision = verdict.decision as u8;
    e.enforced = verdict.enforced as u8;
}

/// Sends `e` to userspace (its header and the path bytes in use), counting it as emitted or
/// dropped; whether it was sent.
///
/// The ring's last `EVENTS_HOLD_RESERVE` bytes are for holds and answers: an enforced denial's
/// record is written only while more is free. A denial that gets no record is counted per
/// agent, rule and op in `DENIALS` instead (docs/ARCHITECTURE.md, I4), so a flood of denials
/// (one agent's or many) neither takes a hold's room nor disappears.
#[inline(always)]
pub fn output(e: &Event) -> bool {
    let denial = e.enforced == Decision::Deny as u8
        && (e.kind == EventKind::Decision as u8 || e.kind == EventKind::GrantDenied as u8);
    if !denial || room_above(EVENTS_HOLD_RESERVE) {
        // SAFETY: the first `wire_len` (at most `size_of::<Event>()`) bytes of `e`.
        let bytes =
            unsafe { core::slice::from_raw_parts((&raw const *e).cast::<u8>(), e.wire_len()) };
        if EVENTS.output::<[u8]>(bytes, 0).is_ok() {
            count(counter::EVENTS_EMITTED);
            return true;
        }
        if !denial {
            count(counter::EVENTS_DROPPED);
            return false;
        }
    }
    count_denial(e);
    false
}

/// Counts the denial `e` in `DENIALS` (its first under its key inserts the entry), or in
/// `counter::DENIALS_UNKEYED` when the map has no room for its key.
#[inline(always)]
fn count_denial(e: &Event) {
    let key = DenialKey {
        agent_id: e.agent_id,
        rule_id: e.rule_id,
        op: e.op,
        kind: e.kind,
        pad: [0; 2],
    };
    if bump_denial(&key, e) {
        return;
    }
    let first = DenialCount {
        count: 1,
        first_ns: e.ts_ns,
        last_ns: e.ts_ns,
        last_tgid: e.tgid,
        last_uid: e.uid,
    };
    // Another CPU may insert the same key first: then count on its entry.
    if DENIALS.insert(key, first, BPF_NOEXIST).is_ok() {
        count(counter::DENIALS_SUMMARIZED);
    } else if !bump_denial(&key, e) {
        count(counter::DENIALS_UNKEYED);
    }
}

/// Adds the denial `e` to the entry of `key` when there is one; whether there was.
#[inline(always)]
fn bump_denial(key: &DenialKey, e: &Event) -> bool {
    let Some(entry) = DENIALS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: a value in map memory, which stays valid while the program runs; the count is
    // added atomically, the latest-denial fields are last-writer-wins.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*entry).count, 1);
        (*entry).last_ns = e.ts_ns;
        (*entry).last_tgid = e.tgid;
        (*entry).last_uid = e.uid;
    }
    count(counter::DENIALS_SUMMARIZED);
    true
}

/// Copies the path just resolved into `s.peer`, with `role` (`EVENT_FLAG_PEER_IS_SOURCE` or 0)
/// as its flags besides the resolution's.
#[inline(always)]
pub fn keep_peer(s: &mut Scratch, role: u32) {
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
