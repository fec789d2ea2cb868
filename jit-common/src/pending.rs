//! Held actions and the answers to them, shared by the kernel and the daemon.
//!
//! A hold writes a [`PendingRequest`] into the `PENDING` map (keyed by the held thread's id, so a
//! restarted daemon finds every held task by iterating the map), stops the task with `SIGSTOP`
//! and makes the syscall restart when it is continued. Userspace answers by setting the entry's
//! `state` and sending `SIGCONT`: the restarted syscall finds the answer, consumes it and
//! proceeds or fails. An answer is bound to the exact action the reviewer was shown: the same
//! task, op and file (device + inode), so it cannot be spent on another file renamed into the
//! same place; for a rename or link also the other end (directory and name, `second`); for an
//! `execve` also the argument and environment strings (`args`, checked once the kernel has
//! copied them: see [`ArgsBinding`]).
#![expect(
    clippy::inline_always,
    reason = "the eBPF programs call these: inlined, they avoid BPF-to-BPF calls"
)]

/// Identity of the file an action is about, as the kernel sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileId {
    /// `inode->i_sb->s_dev` (kernel encoding).
    pub dev: u64,
    /// `inode->i_ino`.
    pub ino: u64,
    /// For actions that create a name (create, mkdir): `dev`/`ino` are the parent directory's
    /// and this is the new entry's `d_name.hash_len` (the kernel's salted name hash and length),
    /// so an answer cannot be spent on another name in the same directory. 0 otherwise.
    pub name: u64,
}

impl FileId {
    /// No file: what an action without a second end binds to.
    pub const ZERO: Self = Self {
        dev: 0,
        ino: 0,
        name: 0,
    };
}

/// What an approval of a held `execve` binds to besides the file: the argument and environment
/// strings, as the daemon read them from the held process and showed them to the reviewer.
///
/// A held syscall is restarted once continued and `execve` copies its arguments from the
/// caller's memory again, which another thread (or a process sharing the memory) may have
/// changed meanwhile, e.g. to add `LD_PRELOAD`. The kernel can only see its own copy of the
/// strings once the new program's memory is in place, past the point of no return: the
/// `bprm_committed_creds` program then hashes the copy (SipHash-2-4 under the secret
/// `BIND_KEY`, see `siphash`) and compares. A mismatch cannot be held or failed any more (the
/// old program is gone): the process is killed before it runs one instruction of the new one,
/// and the kill is reported. A restarted `execve` whose arguments still match proceeds.
///
/// The copied strings are `argv[0]\0 … argv[n]\0 env[0]\0 … env[m]\0`, contiguous below
/// the copied file name. A script or `binfmt_misc` handler replaces `argv[0]` with the
/// interpreter's arguments, so when the kernel sees one did (`bprm->interp` moved), only the
/// part from `argv[1]` on (`tail`) is compared: what replaced `argv[0]` comes from the
/// approved file itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ArgsBinding {
    /// Digest of all the strings.
    pub full: u64,
    /// Digest of the strings from `argv[1]` on.
    pub tail: u64,
    /// Bytes of all the strings, terminators included; 0 when nothing is bound.
    pub full_len: u32,
    /// Bytes of the strings from `argv[1]` on.
    pub tail_len: u32,
}

impl ArgsBinding {
    /// Whether the daemon bound an approval to arguments (a real `execve` always copies at least
    /// `argv[0]`, an empty one when the caller passed none, so `full_len` is never 0 then).
    #[must_use]
    #[inline(always)]
    pub const fn is_bound(&self) -> bool {
        self.full_len != 0
    }
}

/// Value of the `EXEC_BIND` map, keyed by task (the `task_struct` address): an approved `execve` whose copied arguments
/// the `bprm_committed_creds` program must still compare with the approval's binding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecBinding {
    /// The approved request.
    pub request_id: u64,
    /// The `struct linux_binprm *` of the `execve` the approval was spent on: an entry left by
    /// an `execve` that failed later is not applied to the thread's next one.
    pub bprm: u64,
    pub args: ArgsBinding,
    /// The rule of the hold, for the report.
    pub rule_id: u32,
    /// Explicit padding.
    pub pad: u32,
}

/// Slots of the kernel's per-thread-id hold counters (see [`held_slot`]).
pub const HELD_SLOTS: u32 = 4096;

/// The slot of thread `tid` in the kernel's hold counters. Each counts the `PENDING` entries the
/// kernel made for threads of that slot, minus those the kernel removed again: never less than
/// the entries there are (the daemon never makes one, it only answers existing entries; an entry
/// it removes, for a thread that died while held, stays counted). A thread whose slot counts 0
/// has no entry, and the hooks skip the `PENDING` lookup for it.
#[must_use]
#[inline(always)]
pub const fn held_slot(tid: u32) -> u32 {
    tid & (HELD_SLOTS - 1)
}

/// `PendingRequest::state`: waiting for a reviewer.
pub const STATE_PENDING: u8 = 0;
/// `PendingRequest::state`: approved; the next identical action of the task proceeds once.
pub const STATE_ALLOWED: u8 = 1;
/// `PendingRequest::state`: denied; the next identical action of the task fails with `EPERM`.
pub const STATE_DENIED: u8 = 2;

/// Value of the `PENDING` map, keyed by the held thread id (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingRequest {
    /// Unique per hold: `bpf_ktime_get_ns()` when the hold was created. Answers name it, so an
    /// answer meant for an earlier hold of the same thread never applies to a later one.
    pub request_id: u64,
    pub file: FileId,
    /// For a rename or link, the other end: the new entry's directory (`dev`, `ino`) and name
    /// (`name`, its `d_name.hash_len`). Zero otherwise.
    pub second: FileId,
    /// Written by the daemon with an approval of an `execve` (zero otherwise).
    pub args: ArgsBinding,
    pub tgid: u32,
    pub agent_id: u32,
    pub rule_id: u32,
    /// `policy::Op`.
    pub op: u8,
    /// `STATE_*`.
    pub state: u8,
    /// Explicit padding.
    pub pad: [u8; 2],
    /// The uid (low half) and gid (high half) the held thread did the action as (the ids
    /// `user`/`group` rules decided by): an approval applies only to the action done as them,
    /// so a thread that changes its credentials while held gets a refusal.
    pub ids: u64,
}

/// The uid and gid packed in [`PendingRequest::ids`] and [`GrantKey::ids`] (uid in the low
/// half, as the kernel's programs pack them).
#[must_use]
#[expect(clippy::cast_possible_truncation, reason = "the two halves of a u64")]
pub const fn split_ids(ids: u64) -> (u32, u32) {
    (ids as u32, (ids >> 32) as u32)
}

/// [`split_ids`] reversed.
#[must_use]
pub const fn join_ids(uid: u32, gid: u32) -> u64 {
    uid as u64 | ((gid as u64) << 32)
}

/// Key of the `GRANTS` map: an approval that covers every matching action of an agent until a
/// deadline (`jitctl approve --for`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantKey {
    pub file: FileId,
    pub agent_id: u32,
    /// `policy::Op`.
    pub op: u8,
    /// Explicit padding.
    pub pad: [u8; 3],
    /// The uid (low half) and gid (high half) the approved action was done as (see
    /// `PendingRequest::ids`): the grant covers the action done as them only.
    pub ids: u64,
}

/// Value of the `GRANTS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantValue {
    /// `CLOCK_MONOTONIC` nanoseconds (what `bpf_ktime_get_ns` returns) after which the grant no
    /// longer applies. Checked by the kernel, so a grant expires even when no daemon runs.
    pub expires_ns: u64,
    /// Rule id reported in the `GrantUsed` event.
    pub rule_id: u32,
    /// Explicit padding.
    pub pad: u32,
}

/// What the kernel does with an action of a task that has a pending entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingAnswer {
    /// The entry is about another action (a stale entry): decide afresh.
    NotThisAction,
    /// Still waiting: stop the task again.
    StillPending,
    /// Approved: consume the entry and proceed.
    Allow,
    /// Denied: consume the entry and fail with `EPERM`.
    Deny,
}

impl PendingRequest {
    /// How the entry answers action `op` on `file` (and `second`, the other end of a rename
    /// or link). An unknown state fails closed (deny).
    #[must_use]
    #[inline(always)]
    pub fn answer(&self, op: u8, file: &FileId, second: &FileId) -> PendingAnswer {
        if self.op != op || self.file != *file || self.second != *second {
            return PendingAnswer::NotThisAction;
        }
        match self.state {
            STATE_PENDING => PendingAnswer::StillPending,
            STATE_ALLOWED => PendingAnswer::Allow,
            _ => PendingAnswer::Deny,
        }
    }
}

impl GrantValue {
    /// Whether the grant still applies at monotonic time `now_ns`.
    #[must_use]
    #[inline(always)]
    pub const fn is_live(&self, now_ns: u64) -> bool {
        now_ns < self.expires_ns
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): `repr(C)` structs of integers with explicit padding.
    unsafe impl aya::Pod for super::FileId {}
    unsafe impl aya::Pod for super::PendingRequest {}
    unsafe impl aya::Pod for super::ExecBinding {}
    unsafe impl aya::Pod for super::GrantKey {}
    unsafe impl aya::Pod for super::GrantValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(state: u8) -> PendingRequest {
        PendingRequest {
            request_id: 1,
            file: FileId {
                dev: 8,
                ino: 42,
                name: 0,
            },
            second: FileId::default(),
            args: ArgsBinding::default(),
            tgid: 100,
            agent_id: 1,
            rule_id: 3,
            op: 0,
            state,
            pad: [0; 2],
            ids: 0,
        }
    }

    #[test]
    fn answers_only_the_exact_action() {
        let none = FileId::default();
        let file = FileId {
            dev: 8,
            ino: 42,
            name: 0,
        };
        assert_eq!(
            request(STATE_PENDING).answer(0, &file, &none),
            PendingAnswer::StillPending
        );
        assert_eq!(
            request(STATE_ALLOWED).answer(0, &file, &none),
            PendingAnswer::Allow
        );
        assert_eq!(
            request(STATE_DENIED).answer(0, &file, &none),
            PendingAnswer::Deny
        );
        assert_eq!(
            request(0xff).answer(0, &file, &none),
            PendingAnswer::Deny,
            "unknown state fails closed"
        );
        let renamed_into_place = FileId {
            dev: 8,
            ino: 43,
            name: 0,
        };
        let other_name = FileId {
            dev: 8,
            ino: 42,
            name: 7,
        };
        assert_eq!(
            request(STATE_ALLOWED).answer(0, &other_name, &none),
            PendingAnswer::NotThisAction
        );
        assert_eq!(
            request(STATE_ALLOWED).answer(0, &renamed_into_place, &none),
            PendingAnswer::NotThisAction
        );
        assert_eq!(
            request(STATE_ALLOWED).answer(1, &file, &none),
            PendingAnswer::NotThisAction
        );
    }

    #[test]
    fn answers_a_rename_only_to_the_same_destination() {
        let file = FileId {
            dev: 8,
            ino: 42,
            name: 0,
        };
        let to = FileId {
            dev: 8,
            ino: 7,
            name: 0x5_1234_5678,
        };
        let request = PendingRequest {
            second: to,
            ..request(STATE_ALLOWED)
        };
        assert_eq!(request.answer(0, &file, &to), PendingAnswer::Allow);
        for other in [
            FileId {
                name: 0x5_1234_5679,
                ..to
            },
            FileId { ino: 8, ..to },
            FileId::default(),
        ] {
            assert_eq!(
                request.answer(0, &file, &other),
                PendingAnswer::NotThisAction,
                "{other:?}"
            );
        }
    }

    #[test]
    fn grants_expire_at_their_deadline() {
        let grant = GrantValue {
            expires_ns: 1_000,
            rule_id: 0,
            pad: 0,
        };
        assert!(grant.is_live(999));
        assert!(!grant.is_live(1_000));
    }

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(
            core::mem::size_of::<PendingRequest>(),
            8 + 24 + 24 + 24 + 12 + 4 + 8
        );
        assert_eq!(core::mem::size_of::<ExecBinding>(), 16 + 24 + 8);
        assert_eq!(core::mem::size_of::<GrantKey>(), 24 + 8 + 8);
        assert_eq!(core::mem::size_of::<GrantValue>(), 16);
    }
}
