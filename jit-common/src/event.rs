//! Records the eBPF programs send to userspace over the `EVENTS` ring buffer, and the per-CPU
//! counters they keep.

/// Longest path an event carries (the kernel's `PATH_MAX`, terminator included).
pub const EVENT_PATH_MAX: usize = 4096;

/// What an [`Event`] reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A policy decision other than a silent allow: audit, deny, hold, or any decision in
    /// shadow mode (then `decision` differs from `enforced`).
    Decision = 0,
    /// An action was held: the task is stopped and a `PendingRequest` waits in `PENDING`.
    Hold = 1,
    /// An action proceeded on an approval (a pending entry answered "allow", or a timed grant).
    GrantUsed = 2,
    /// An action failed on a reviewer's denial.
    GrantDenied = 3,
    /// The other end of a held rename or link (the `Hold` event names the end that decided),
    /// emitted just before that `Hold` event with the same `request_id`: a reviewer is shown
    /// both ends, as the kernel resolved them. `EVENT_FLAG_PEER_IS_SOURCE` says which end it is.
    HoldPeer = 4,
}

impl EventKind {
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Decision),
            1 => Some(Self::Hold),
            2 => Some(Self::GrantUsed),
            3 => Some(Self::GrantDenied),
            4 => Some(Self::HoldPeer),
            _ => None,
        }
    }
}

/// `Event::flags`: the path did not fit and was cut at [`EVENT_PATH_MAX`].
pub const EVENT_FLAG_PATH_TRUNCATED: u32 = 1;
/// `Event::flags`: the kernel could not resolve the path; the decision failed closed.
pub const EVENT_FLAG_PATH_UNRESOLVED: u32 = 2;
/// `Event::flags`: an `exec` decided for an executable mapping (`mmap`/`mprotect` with
/// `PROT_EXEC` of the file), not for an `execve`.
pub const EVENT_FLAG_MAPPING: u32 = 4;
/// `Event::flags`: an approved `execve` copied other arguments or another environment than the
/// approval was bound to (see `pending::ArgsBinding`): the process was killed before the new
/// program ran. Reported as a `Decision` event, enforced `deny`.
pub const EVENT_FLAG_ARGS_CHANGED: u32 = 8;
/// `Event::flags` of a `HoldPeer` event: its path is the source of the rename or link (the
/// destination decided the hold); without it, the destination.
pub const EVENT_FLAG_PEER_IS_SOURCE: u32 = 16;
/// `Event::flags` of an `exec`: an agent wrote the file (it has a mark; see `provenance`).
pub const EVENT_FLAG_WRITTEN_BY_AGENT: u32 = 32;
/// `Event::flags` of an `exec`, with [`EVENT_FLAG_WRITTEN_BY_AGENT`]: the agent that wrote
/// the file last is the one executing it.
pub const EVENT_FLAG_WRITTEN_BY_THIS_AGENT: u32 = 64;

/// Bytes of an [`Event`] before its path: a record on the ring buffer is these and the
/// `path_len` bytes of the path in use (see [`Event::wire_len`]).
pub const EVENT_HEADER_LEN: usize = core::mem::offset_of!(Event, path);

/// Bytes of the ring buffer kept for records that must not be lost (denials, holds, answers,
/// self-protection): a record of an action that is allowed and only audited is written only
/// while more than this is free, else the action is refused (see `counter::AUDIT_REFUSED`).
pub const EVENTS_RESERVE: u64 = 1024 * 1024;

/// Bytes of the ring buffer kept for holds and reviewers' answers: a denial's record is written
/// only while more than this is free, else the denial is counted in the `DENIALS` map (see
/// [`DenialKey`]) instead, so that a flood of denials can take neither the room of a hold's
/// record nor its own count.
pub const EVENTS_HOLD_RESERVE: u64 = 256 * 1024;

/// Size of the `EVENTS` ring buffer.
pub const EVENTS_BYTES: u32 = 4 * 1024 * 1024;

/// One record of the `EVENTS` ring buffer; `path[..path_len]` is the resolved path. On the ring
/// it is cut after the path (see [`Event::wire_len`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: monotonic, nanoseconds since boot.
    pub ts_ns: u64,
    /// The hold this event belongs to (`PendingRequest::request_id`); 0 for other events.
    pub request_id: u64,
    /// The file the action is about.
    pub file: crate::pending::FileId,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub agent_id: u32,
    /// Rule that decided; 0 when the agent's default decided.
    pub rule_id: u32,
    /// Bytes of `path` in use, terminator excluded.
    pub path_len: u32,
    /// [`EventKind`].
    pub kind: u8,
    /// `jit_common::policy::Op`.
    pub op: u8,
    /// What the policy decided (`Decision`).
    pub decision: u8,
    /// What the kernel applied (`Decision`): differs from `decision` in shadow mode.
    pub enforced: u8,
    /// `EVENT_FLAG_*` bits.
    pub flags: u32,
    pub path: [u8; EVENT_PATH_MAX],
}

impl Event {
    /// Decodes a ring buffer record (the header and the path bytes in use, see
    /// [`Event::wire_len`]); `None` when it is shorter than the header, longer than an event,
    /// or shorter than its `path_len` says.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < EVENT_HEADER_LEN || bytes.len() > core::mem::size_of::<Self>() {
            return None;
        }
        let mut event = Self::zeroed();
        // SAFETY: at most `size_of::<Self>()` bytes into an `Event`, every bit pattern of which
        // is valid (integers only).
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (&raw mut event).cast::<u8>(),
                bytes.len(),
            );
        }
        (EVENT_HEADER_LEN + event.path_len as usize <= bytes.len()).then_some(event)
    }

    /// An event of zeros.
    #[must_use]
    pub const fn zeroed() -> Self {
        // SAFETY: integers only: zero is valid for every field.
        unsafe { core::mem::zeroed() }
    }

    /// Bytes of the record on the ring buffer: the header and the path in use.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "the eBPF programs call it: no BPF-to-BPF call"
    )]
    #[inline(always)]
    pub const fn wire_len(&self) -> usize {
        let len = EVENT_HEADER_LEN + self.path_len as usize;
        if len > core::mem::size_of::<Self>() {
            core::mem::size_of::<Self>()
        } else {
            len
        }
    }

    /// The resolved path bytes.
    #[must_use]
    pub fn path_bytes(&self) -> &[u8] {
        let len = (self.path_len as usize).min(EVENT_PATH_MAX);
        &self.path[..len]
    }
}

/// Key of the `DENIALS` map: the denials the kernel enforced while the ring buffer had no room
/// for their records (less than [`EVENTS_HOLD_RESERVE`] free), counted per agent, rule and op.
/// The daemon turns every increase into a `denials_summarized` audit record, so a denial is
/// always either a record of its own or counted in one of these (docs/ARCHITECTURE.md, I4).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DenialKey {
    pub agent_id: u32,
    /// The rule that denied (`Event::rule_id`): 0 for the agent's default,
    /// `protect::SELF_PROTECTION_RULE_ID` for self-protection.
    pub rule_id: u32,
    /// `Event::op`.
    pub op: u8,
    /// `Event::kind`: a `Decision`, or a `GrantDenied` (a reviewer's denial enforced).
    pub kind: u8,
    pub pad: [u8; 2],
}

/// Value of the `DENIALS` map: how many denials of its key had no record, and the last one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenialCount {
    /// Denials since the programs were loaded: only ever increased (atomically).
    pub count: u64,
    /// `bpf_ktime_get_ns()` of the first and of the latest.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Thread group id and acting uid of the latest.
    pub last_tgid: u32,
    pub last_uid: u32,
}

/// Capacity of the `DENIALS` map. Its entries stay until the programs are unloaded; a denial
/// whose key finds no room is counted in `counter::DENIALS_UNKEYED`.
pub const DENIALS_ENTRIES: u32 = 8192;

/// Indices of the per-CPU `COUNTERS` array.
pub mod counter {
    /// Enforced decisions, indexed by the `Decision` value (allow, audit, hold, deny).
    pub const DECISION_BASE: u32 = 0;
    /// Events written to the ring buffer.
    pub const EVENTS_EMITTED: u32 = 4;
    /// Events the ring buffer had no room for.
    pub const EVENTS_DROPPED: u32 = 5;
    /// Hook errors (unresolvable path, missing agent config, signal failure); each failed
    /// closed.
    pub const ERRORS: u32 = 6;
    /// Actions that proceeded on an approval (pending answer or timed grant).
    pub const GRANTS_USED: u32 = 7;
    /// Actions allowed by the write-decision cache (counted in the allow decisions too): write
    /// opens, and the opens and unlinks of files just created (see `cache`, "Files an agent
    /// creates").
    pub const CACHE_HITS: u32 = 8;
    /// Actions a policy `audit` rule allowed but whose record the ring buffer had no room for
    /// (above `EVENTS_RESERVE`): refused with `EPERM` rather than done unrecorded. Not counted
    /// in the decisions.
    pub const AUDIT_REFUSED: u32 = 9;
    /// Denials enforced without a record of their own, counted in the `DENIALS` map (see
    /// `DenialKey`). Counted in the decisions too.
    pub const DENIALS_SUMMARIZED: u32 = 10;
    /// Denials enforced with neither a record nor room in the `DENIALS` map: counted here only.
    pub const DENIALS_UNKEYED: u32 = 11;
    /// Write opens of unmarked files by agents refused because the `MARKS` map was full (see
    /// `provenance::MARKS_ENTRIES`).
    pub const MARKS_FULL: u32 = 12;
    /// Size of the array.
    pub const COUNT: u32 = 13;
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)` with every field an integer or byte array and no implicit padding
// (checked by `event_layout_has_no_padding`).
unsafe impl aya::Pod for Event {}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers only, no implicit padding (checked by `denial_layouts`).
unsafe impl aya::Pod for DenialKey {}

#[cfg(feature = "user")]
// SAFETY: as `DenialKey`.
unsafe impl aya::Pod for DenialCount {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_layout_has_no_padding() {
        // 3 u64 + FileId (3 u64) + 8 u32 + 4 u8 + 1 u32 + path.
        assert_eq!(
            core::mem::size_of::<Event>(),
            48 + 32 + 4 + 4 + EVENT_PATH_MAX
        );
        assert_eq!(core::mem::size_of::<Event>() % 8, 0);
    }

    #[test]
    fn denial_layouts() {
        assert_eq!(core::mem::size_of::<DenialKey>(), 4 + 4 + 1 + 1 + 2);
        assert_eq!(core::mem::size_of::<DenialCount>(), 3 * 8 + 2 * 4);
    }
}
