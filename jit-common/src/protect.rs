//! Self-protection: what no process in an agent cgroup may do, whatever its policy, mode,
//! default, rules or grants say (README, "Self-protection"; docs/threat-model.md).
//!
//! - signal the daemon (its thread group id is in the `PROTECT_CONFIG` map);
//! - trace, inspect or change the resources (limits, scheduling, priority, memory placement) of
//!   any process outside its own agent, the daemon included;
//! - start a child in another cgroup (`clone3(CLONE_INTO_CGROUP)`), load kernel modules or a
//!   kexec kernel;
//! - change anything on a cgroup filesystem (write a control file such as `cgroup.procs`,
//!   `mkdir`, `rmdir`, `rename`, ...): that is how a process leaves its cgroup, and with it
//!   jit's scope. Matched by the superblock magic, so every cgroup mount counts, not only
//!   `/sys/fs/cgroup`. bpffs is treated alike: unlinking jit's pins there detaches enforcement;
//! - call `bpf()` at all;
//! - modify the daemon's own files: the paths in the `PROTECTED` LPM trie.
//!
//! Denials are reported as decision events with rule id [`SELF_PROTECTION_RULE_ID`].
//!
//! # Protected paths
//!
//! `PROTECTED` uses the [`PolicyKey`] layout under the reserved rule set
//! [`PROTECTED_RULESET`] with op byte 0 ([`PROTECTED_OP`]): one entry covers every op. Each
//! protected path `P` becomes the exact entry `P`, the directory entry `P/` (everything below)
//! and an exact entry for every ancestor of `P` except `/`, so that `P` cannot be moved away by
//! renaming a directory above it ([`protected_patterns`]).
use crate::policy::{Decision, Op, PatternError, PolicyKey, Verdict};

/// `Event::rule_id` of a denial by self-protection (rules compiled from policy start at 1).
pub const SELF_PROTECTION_RULE_ID: u32 = u32::MAX;
/// The verdict of self-protection: denied and enforced in every mode.
pub const SELF_PROTECTION_VERDICT: Verdict = Verdict {
    decision: Decision::Deny,
    enforced: Decision::Deny,
    rule_id: SELF_PROTECTION_RULE_ID,
};
/// Rule set id of the keys in the `PROTECTED` trie. Policy rule sets never use it (the trie is
/// a map of its own anyway; the id keeps map dumps unambiguous).
pub const PROTECTED_RULESET: u32 = u32::MAX;
/// Op byte of every `PROTECTED` key: entries are not per op, and lookups always use this op.
pub const PROTECTED_OP: Op = Op::Exec;

/// `CGROUP2_SUPER_MAGIC` (`include/uapi/linux/magic.h`).
pub const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
/// `CGROUP_SUPER_MAGIC`: a cgroup v1 hierarchy is just as much a way out.
pub const CGROUP_SUPER_MAGIC: u64 = 0x0027_e0eb;
/// `BPF_FS_MAGIC`: bpffs, where jit pins its programs, links and maps.
pub const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// Whether a filesystem with superblock magic `magic` is off limits to agents.
#[must_use]
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "every file hook calls it: inlined, it costs the verifier no BPF-to-BPF call"
)]
pub const fn is_protected_fs(magic: u64) -> bool {
    matches!(
        magic,
        CGROUP2_SUPER_MAGIC | CGROUP_SUPER_MAGIC | BPF_FS_MAGIC
    )
}

/// `Event::op` of actions that are not file operations (beyond every [`Op`]): the audit log
/// names them `signal`, `ptrace` and `bpf`. For these events `Event::file.ino` holds the
/// target's thread group id (signal, ptrace) and `Event::file.name` the signal number, the
/// ptrace mode or the `bpf()` command.
pub mod event_op {
    /// `kill`, `tgkill`, `sigqueue`, `pidfd_send_signal`, ... aimed at the daemon.
    pub const SIGNAL: u8 = 100;
    /// `ptrace` attach, `process_vm_readv`, `/proc/PID/mem`, `pidfd_getfd`, ... on a process
    /// outside the agent (the daemon included), or `PTRACE_TRACEME` under such a parent.
    pub const PTRACE: u8 = 101;
    /// Any `bpf()` command.
    pub const BPF: u8 = 102;
    /// `mount`, `umount`, `move_mount` (bind mounts and remounts included).
    pub const MOUNT: u8 = 103;
    /// `chroot`, `pivot_root`.
    pub const CHROOT: u8 = 104;
    /// `clone3` with `CLONE_INTO_CGROUP`: a child started in another cgroup.
    pub const CGROUP: u8 = 105;
    /// Limits, scheduling, priority, I/O priority, memory placement or `/proc/PID/` files of a
    /// process outside the agent (`prlimit`, `setpriority`, `sched_setattr`, `ioprio_set`,
    /// `move_pages`, a write to `/proc/PID/oom_score_adj`, ...).
    /// `Event::file.name` holds which one ([`resource`]).
    pub const RESOURCE: u8 = 106;
    /// Loading code into the kernel: `init_module`, `finit_module`, `kexec_load`,
    /// `kexec_file_load` (any `kernel_read_file`/`kernel_load_data` id). `Event::file.name`
    /// holds the kernel's id of what was loaded.
    pub const KERNEL: u8 = 107;
    /// Setting the inode generation of a file an agent wrote (`FS_IOC_SETVERSION`,
    /// `EXT4_IOC_SETVERSION`), which would detach the file from its provenance mark.
    /// `Event::file.name` holds the ioctl command.
    pub const PROVENANCE: u8 = 108;

    /// The name of an op code of this module.
    #[must_use]
    pub const fn name(op: u8) -> Option<&'static str> {
        match op {
            SIGNAL => Some("signal"),
            PTRACE => Some("ptrace"),
            BPF => Some("bpf"),
            MOUNT => Some("mount"),
            CHROOT => Some("chroot"),
            CGROUP => Some("cgroup"),
            RESOURCE => Some("resource"),
            KERNEL => Some("kernel"),
            PROVENANCE => Some("provenance"),
            _ => None,
        }
    }
}

/// `Event::file.name` of an [`event_op::RESOURCE`] denial: which of a process's resources the
/// agent tried to change.
pub mod resource {
    /// `prlimit`/`setrlimit` of another process (`task_setrlimit`).
    pub const RLIMIT: u64 = 1;
    /// `setpriority`/`nice` (`task_setnice`).
    pub const NICE: u64 = 2;
    /// `ioprio_set` (`task_setioprio`).
    pub const IOPRIO: u64 = 3;
    /// `sched_setscheduler`, `sched_setattr`, `sched_setparam`, `sched_setaffinity`
    /// (`task_setscheduler`).
    pub const SCHEDULER: u64 = 4;
    /// `migrate_pages`, `move_pages` (`task_movememory`).
    pub const MEMORY: u64 = 5;
    /// A write open of one of its `/proc/PID/` files (`oom_score_adj`, `autogroup`, `comm`,
    /// `timerslack_ns`, `attr/*`, ...).
    pub const PROC: u64 = 6;

    /// The name of a code of this module.
    #[must_use]
    pub const fn name(code: u64) -> Option<&'static str> {
        match code {
            RLIMIT => Some("rlimit"),
            NICE => Some("nice"),
            IOPRIO => Some("ioprio"),
            SCHEDULER => Some("scheduler"),
            MEMORY => Some("memory"),
            PROC => Some("proc"),
            _ => None,
        }
    }
}

/// Single entry of the `PROTECT_CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtectConfig {
    /// Thread group id of the daemon that agents may neither signal nor trace; 0 = none set.
    pub daemon_tgid: u32,
    /// Explicit padding.
    pub pad: u32,
}

/// The patterns that protect `path` (absolute, without trailing `/` unless it is `/`
/// itself, which cannot be protected): the path itself, everything below it, and every
/// ancestor except `/` (exact). Calls `each` with each pattern (no allocation: `no_std`).
///
/// # Errors
/// When `path` is not absolute, is `/`, or a pattern cannot be compiled.
pub fn protected_patterns(
    path: &[u8],
    mut each: impl FnMut(&[u8]) -> Result<(), PatternError>,
) -> Result<(), PatternError> {
    let path = match path {
        [b'/'] | [] => return Err(PatternError::NotAbsolute),
        [rest @ .., b'/'] => rest,
        _ => path,
    };
    if path.first() != Some(&b'/') {
        return Err(PatternError::NotAbsolute);
    }
    // `P/` without allocating: patterns are at most PATH_CAPACITY bytes.
    let mut below = [0u8; crate::policy::PATH_CAPACITY + 1];
    let dir = below.get_mut(..=path.len()).ok_or(PatternError::TooLong {
        len: path.len() + 1,
        max: crate::policy::PATH_CAPACITY,
    })?;
    dir[..path.len()].copy_from_slice(path);
    dir[path.len()] = b'/';
    each(path)?;
    each(dir)?;
    for (i, &b) in path.iter().enumerate().skip(1) {
        if b == b'/' {
            each(&path[..i])?;
        }
    }
    Ok(())
}

/// The `PROTECTED` key of one pattern of [`protected_patterns`].
///
/// # Errors
/// When the pattern cannot be compiled (see [`PatternError`]); `*` is taken literally
/// nowhere, so a pattern with a `*` component is refused as well.
pub fn protected_key(pattern: &[u8]) -> Result<PolicyKey, PatternError> {
    let (key, shape) = PolicyKey::for_rule(PROTECTED_RULESET, PROTECTED_OP, pattern)?;
    if shape.wildcard_component.is_some() {
        return Err(PatternError::PartialWildcard);
    }
    Ok(key)
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)` struct of two u32, no padding.
unsafe impl aya::Pod for ProtectConfig {}

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::*;

    fn patterns(path: &str) -> Vec<std::string::String> {
        let mut out = Vec::new();
        protected_patterns(path.as_bytes(), |p| {
            out.push(std::string::String::from_utf8(p.to_vec()).unwrap());
            Ok(())
        })
        .unwrap();
        out
    }

    /// What the kernel's LPM trie answers: whether some stored key is a prefix of `key`.
    fn trie_matches(stored: &[PolicyKey], key: &PolicyKey) -> bool {
        stored.iter().any(|s| {
            s.prefixlen <= key.prefixlen
                && key.data.get(..s.significant_len()) == Some(s.significant())
        })
    }

    fn lookup(path: &str) -> PolicyKey {
        PolicyKey::for_lookup(PROTECTED_RULESET, PROTECTED_OP, path.as_bytes())
    }

    #[test]
    fn a_path_protects_itself_below_and_its_ancestors() {
        assert_eq!(
            patterns("/etc/jit/policies/"),
            vec![
                "/etc/jit/policies",
                "/etc/jit/policies/",
                "/etc",
                "/etc/jit"
            ]
        );
        assert_eq!(
            patterns("/run/jit.sock"),
            vec!["/run/jit.sock", "/run/jit.sock/", "/run"]
        );
    }

    #[test]
    fn root_and_relative_paths_are_refused() {
        assert!(protected_patterns(b"/", |_| Ok(())).is_err());
        assert!(protected_patterns(b"", |_| Ok(())).is_err());
        assert!(protected_patterns(b"etc/jit", |_| Ok(())).is_err());
        assert!(protected_key(b"/home/*/x").is_err());
    }

    #[test]
    fn lookups_match_the_protected_tree_and_nothing_next_to_it() {
        let mut stored = Vec::new();
        protected_patterns(b"/etc/jit/policies", |p| {
            stored.push(protected_key(p)?);
            Ok(())
        })
        .unwrap();
        for path in [
            "/etc/jit/policies",
            "/etc/jit/policies/a.toml",
            "/etc/jit/policies/sub/b.toml",
            "/etc/jit",
            "/etc",
        ] {
            assert!(trie_matches(&stored, &lookup(path)), "{path} protected");
        }
        for path in [
            "/etc/jit/policiesx",
            "/etc/jit/other",
            "/etc/passwd",
            "/",
            "/etcx",
        ] {
            assert!(
                !trie_matches(&stored, &lookup(path)),
                "{path} not protected"
            );
        }
    }

    #[test]
    fn filesystem_magics() {
        assert!(is_protected_fs(0x6367_7270));
        assert!(is_protected_fs(BPF_FS_MAGIC));
        assert!(!is_protected_fs(0xef53)); // ext4
        assert!(!is_protected_fs(0x0102_1994)); // tmpfs
        assert_eq!(core::mem::size_of::<ProtectConfig>(), 8);
        assert_eq!(event_op::name(event_op::BPF), Some("bpf"));
        assert!(Op::from_u8(event_op::SIGNAL).is_none());
    }
}
