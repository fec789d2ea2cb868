//! Provenance: which files agents wrote (policies/README.md, "Provenance").
//!
//! Every regular file a process in an agent cgroup opens for writing (creating it, or
//! rewriting it) gets a *mark* in the kernel's `MARKS` map, keyed by the file's device and
//! inode number: the mark names the agent that wrote it last and when. A mark belongs to the
//! inode, not to a name, so it follows renames and hard links, and a copy is a new inode
//! written by whoever copied it. Writes by processes outside agent cgroups leave a mark as it
//! is (a file an agent wrote stays one). A mark goes when the inode is freed with no link left
//! (the file is deleted); the inode's generation number, kept in the mark, guards against an
//! inode number reused before that.
//!
//! `exec` rules (and executable mappings, decided as `exec`) can be conditioned on the mark
//! with `written_by`: the kernel decides them by a *writer class* like the identity classes of
//! `user` and `group` (see [`crate::policy::IdentityKey`]).

/// Key of the `MARKS` map: the file's identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MarkKey {
    /// `inode->i_sb->s_dev` (kernel encoding).
    pub dev: u64,
    /// `inode->i_ino`.
    pub ino: u64,
}

/// Value of the `MARKS` map: who wrote the file last, and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    /// `inode->i_generation` when the mark was made: a mark whose generation differs is of an
    /// earlier file with the same inode number, and does not count.
    pub generation: u32,
    /// The agent whose process opened the file for writing last.
    pub agent_id: u32,
    /// The first agent that wrote it (since the mark was made).
    pub first_agent_id: u32,
    /// Thread group id of the last writer.
    pub tgid: u32,
    /// `bpf_ktime_get_ns()` of the first and the last write open.
    pub first_ns: u64,
    pub last_ns: u64,
}

/// Capacity of the `MARKS` map (entries are allocated as they are made). When it is full, a
/// write open of an unmarked file by an agent is refused (`counter::MARKS_FULL`): a file
/// written without its mark would pass for one the host installed.
pub const MARKS_ENTRIES: u32 = 1 << 20;

/// Writer class of a file an agent executes: no agent wrote it (as far as the kernel saw).
pub const WRITER_NONE: u32 = 0;
/// Writer class: the executing agent wrote it last.
pub const WRITER_THIS_AGENT: u32 = 1;
/// Writer class: another agent wrote it last.
pub const WRITER_OTHER_AGENT: u32 = 2;
/// Number of writer classes.
pub const WRITER_CLASSES: u32 = 3;

/// The writer class of a file for the agent `agent_id`, given its mark (if any) and the
/// file's current generation.
#[must_use]
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "the eBPF programs call it: no BPF-to-BPF call"
)]
pub fn writer_class(mark: Option<&Mark>, generation: u32, agent_id: u32) -> u32 {
    match mark {
        Some(m) if m.generation == generation => {
            if m.agent_id == agent_id {
                WRITER_THIS_AGENT
            } else {
                WRITER_OTHER_AGENT
            }
        }
        _ => WRITER_NONE,
    }
}

/// The writer class an event's (or action's) `EVENT_FLAG_WRITTEN_BY_*` bits say.
#[must_use]
#[inline]
pub const fn writer_of_flags(flags: u32) -> u32 {
    use crate::event::{EVENT_FLAG_WRITTEN_BY_AGENT, EVENT_FLAG_WRITTEN_BY_THIS_AGENT};
    if flags & EVENT_FLAG_WRITTEN_BY_AGENT == 0 {
        WRITER_NONE
    } else if flags & EVENT_FLAG_WRITTEN_BY_THIS_AGENT != 0 {
        WRITER_THIS_AGENT
    } else {
        WRITER_OTHER_AGENT
    }
}

/// The name of a writer class in policies and audit records (`None` for `WRITER_NONE`).
#[must_use]
pub const fn writer_name(class: u32) -> Option<&'static str> {
    match class {
        WRITER_THIS_AGENT => Some("this-agent"),
        WRITER_OTHER_AGENT => Some("other-agent"),
        _ => None,
    }
}

/// The writer class of a name (`this-agent`, `other-agent`, or `none`: no agent wrote it), as
/// `jitctl policy` takes it.
#[must_use]
pub fn writer_from_name(name: &str) -> Option<u32> {
    match name {
        "this-agent" => Some(WRITER_THIS_AGENT),
        "other-agent" => Some(WRITER_OTHER_AGENT),
        "none" => Some(WRITER_NONE),
        _ => None,
    }
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers only, no implicit padding (checked by `mark_layouts`).
unsafe impl aya::Pod for MarkKey {}

#[cfg(feature = "user")]
// SAFETY: as `MarkKey`.
unsafe impl aya::Pod for Mark {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_layouts() {
        assert_eq!(core::mem::size_of::<MarkKey>(), 16);
        assert_eq!(core::mem::size_of::<Mark>(), 4 * 4 + 2 * 8);
    }

    #[test]
    fn writer_classes() {
        let mark = Mark {
            generation: 7,
            agent_id: 3,
            ..Mark::default()
        };
        assert_eq!(writer_class(None, 7, 3), WRITER_NONE);
        assert_eq!(writer_class(Some(&mark), 7, 3), WRITER_THIS_AGENT);
        assert_eq!(writer_class(Some(&mark), 7, 4), WRITER_OTHER_AGENT);
        assert_eq!(
            writer_class(Some(&mark), 8, 3),
            WRITER_NONE,
            "a reused inode number"
        );
    }
}
