//! Types shared by the jit eBPF programs (`jit-ebpf`) and the userspace daemon (`jit-agent`).
//!
//! Everything here is `#[repr(C)]` with explicit padding so both sides agree on the byte layout
//! of every map key, map value and event. The crate is `no_std` so the eBPF side can use it; the
//! `user` feature adds [`aya::Pod`] impls for the userspace side.
#![no_std]

// The unit tests use std collections and formatting.
#[cfg(test)]
extern crate std;

pub mod cache;
pub mod event;
pub mod layout;
pub mod pending;
pub mod policy;
pub mod protect;
pub mod provenance;
pub mod scope;
pub mod siphash;

pub use policy::{
    AgentConfig, Decision, Mode, Op, PatternError, PolicyKey, PolicyValue, RuleShape, Verdict,
};
pub use scope::{AgentCgroup, ScopeConfig};

/// Names of the maps defined in `jit-ebpf`, as userspace looks them up.
pub mod map_names {
    /// `HashMap<u64 cgroup id, AgentCgroup>`: every registered agent cgroup.
    pub const AGENT_CGROUPS: &str = "AGENT_CGROUPS";
    /// `Array<ScopeConfig>` with one entry: the agent cgroups when they fit in its slots, and
    /// the cgroup levels that hold agent cgroups (see `scope`).
    pub const SCOPE_CONFIG: &str = "SCOPE_CONFIG";
    /// `LpmTrie<PolicyKey, PolicyValue>`: the compiled rules of every agent.
    pub const POLICY: &str = "POLICY";
    /// `HashMap<u32 agent id, AgentConfig>`: default decision, mode, wildcard positions.
    pub const AGENT_CONFIG: &str = "AGENT_CONFIG";
    /// `RingBuf` of `Event`s.
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<u64>` indexed by `event::counter::*`.
    pub const COUNTERS: &str = "COUNTERS";
    /// `HashMap<u32 thread id, PendingRequest>`: every held task.
    pub const PENDING: &str = "PENDING";
    /// `HashMap<GrantKey, GrantValue>`: time-boxed approvals.
    pub const GRANTS: &str = "GRANTS";
    /// `Array<ProtectConfig>` with one entry: the daemon's thread group id.
    pub const PROTECT_CONFIG: &str = "PROTECT_CONFIG";
    /// `LpmTrie<PolicyKey, u32>`: the daemon's own files and directories (see `protect`).
    pub const PROTECTED: &str = "PROTECTED";
    /// `Array<u64>` with one entry: the policy generation the write-decision cache checks
    /// (see `cache`); 0 turns the cache off.
    pub const POLICY_GEN: &str = "POLICY_GEN";
    /// `Array<[u64; 2]>` with one entry: the secret `SipHash` key of argument bindings (see
    /// `pending::ArgsBinding`), made by the daemon when it finds it zero.
    pub const BIND_KEY: &str = "BIND_KEY";
    /// `HashMap<u32 thread id, ExecBinding>`: approved `execve`s whose copied arguments are
    /// still to be compared with what was approved.
    pub const EXEC_BIND: &str = "EXEC_BIND";
    /// `HashMap<IdentityKey, u32>`: the rule set offsets of the uids and gids that agents'
    /// `user` and `group` conditions name (see `policy::IdentityKey`).
    pub const IDENTITY: &str = "IDENTITY";
    /// `HashMap<DenialKey, DenialCount>`: denials enforced while the ring buffer had no room
    /// for their records (see `event::DenialKey`).
    pub const DENIALS: &str = "DENIALS";
    /// `HashMap<MarkKey, Mark>`: the files agents wrote (see `provenance`).
    pub const MARKS: &str = "MARKS";
}

/// Names of the programs in `jit-ebpf`.
pub mod program_names {
    /// LSM `bprm_check_security`: exec.
    pub const EXEC: &str = "jit_exec";

    /// Hooks that older supported kernels lack: their programs are attached where the running
    /// kernel has the hook (`bpf_lsm_HOOK` in its BTF) and skipped elsewhere. On 6.1 the
    /// kernel routes what these would see through hooks jit attaches anyway (`O_TRUNC` and
    /// `ftruncate` through `path_truncate`, ACLs through `inode_setxattr`).
    pub const OPTIONAL_HOOKS: [&str; 4] = [
        "file_truncate",
        "inode_set_acl",
        "inode_remove_acl",
        "file_ioctl_compat",
    ];

    /// Programs written for one signature of a hook that changed between supported kernels:
    /// each is attached only where the hook has this many parameters (`inode_setattr` gained a
    /// leading `struct mnt_idmap *` in 6.3).
    pub const FOR_SIGNATURE: [(&str, u32); 2] =
        [("jit_inode_setattr", 3), ("jit_inode_setattr_noidmap", 2)];

    /// Every program with the LSM hook it attaches to.
    pub const ALL: [(&str, &str); 46] = [
        (EXEC, "bprm_check_security"),
        // An approved execve runs only with the arguments the reviewer saw (see `exec_bind`).
        ("jit_exec_committed", "bprm_committed_creds"),
        ("jit_file_open", "file_open"),
        ("jit_path_mknod", "path_mknod"),
        ("jit_path_unlink", "path_unlink"),
        ("jit_path_mkdir", "path_mkdir"),
        ("jit_path_rmdir", "path_rmdir"),
        ("jit_path_truncate", "path_truncate"),
        ("jit_path_chmod", "path_chmod"),
        ("jit_path_chown", "path_chown"),
        ("jit_path_rename", "path_rename"),
        ("jit_path_link", "path_link"),
        ("jit_path_symlink", "path_symlink"),
        // Code mapped without execve is decided as exec (see `mmap`); truncation of an open
        // file on 6.2+; device nodes are decided in jit_path_mknod; metadata.
        ("jit_mmap_file", "mmap_file"),
        ("jit_file_mprotect", "file_mprotect"),
        ("jit_file_truncate", "file_truncate"),
        ("jit_inode_setxattr", "inode_setxattr"),
        ("jit_inode_removexattr", "inode_removexattr"),
        ("jit_inode_set_acl", "inode_set_acl"),
        ("jit_inode_remove_acl", "inode_remove_acl"),
        ("jit_inode_setattr", "inode_setattr"),
        ("jit_inode_setattr_noidmap", "inode_setattr"),
        ("jit_file_ioctl", "file_ioctl"),
        ("jit_file_ioctl_compat", "file_ioctl_compat"),
        // Self-protection (see `protect`): agents may not signal (also by SIGIO) or trace the
        // daemon, nor call bpf(); rename and link have their file checks in programs of their own
        // (single-path ops have them in the engine's programs). Attached after the engine's:
        // newer programs on a hook run first.
        ("jit_protect_path_rename", "path_rename"),
        ("jit_protect_path_link", "path_link"),
        ("jit_task_kill", "task_kill"),
        ("jit_file_send_sigiotask", "file_send_sigiotask"),
        ("jit_ptrace_access_check", "ptrace_access_check"),
        ("jit_bpf", "bpf"),
        // The agent's boundary: only its own agent's processes (tracing, resources), no child
        // in another cgroup, no code loaded into the kernel.
        ("jit_ptrace_traceme", "ptrace_traceme"),
        ("jit_task_setrlimit", "task_setrlimit"),
        ("jit_task_setnice", "task_setnice"),
        ("jit_task_setioprio", "task_setioprio"),
        ("jit_task_setscheduler", "task_setscheduler"),
        ("jit_task_movememory", "task_movememory"),
        ("jit_task_alloc", "task_alloc"),
        ("jit_kernel_read_file", "kernel_read_file"),
        ("jit_kernel_load_data", "kernel_load_data"),
        // Nor change how paths resolve (see `mount`).
        ("jit_sb_mount", "sb_mount"),
        ("jit_sb_umount", "sb_umount"),
        ("jit_move_mount", "move_mount"),
        ("jit_sb_pivotroot", "sb_pivotroot"),
        ("jit_path_chroot", "path_chroot"),
        // Keeps the write-decision cache from trusting a recycled dentry (see `cache`); runs
        // for every process and only bumps a counter.
        ("jit_d_instantiate", "d_instantiate"),
        // Forgets the provenance marks of deleted files (see `provenance`); runs for every
        // inode that leaves memory and only reads its link count unless it was deleted.
        ("jit_inode_free_security", "inode_free_security"),
    ];

    /// The floor (`jit-ebpf/src/floor.rs`): one program per hook of [`ALL`], each returning 0
    /// at once. For `jit-bench` only, which attaches them alone to time what any BPF LSM program
    /// on these hooks costs; the daemon never attaches them.
    pub const FLOOR: [(&str, &str); 43] = [
        ("jit_floor_bprm_check_security", "bprm_check_security"),
        ("jit_floor_bprm_committed_creds", "bprm_committed_creds"),
        ("jit_floor_file_open", "file_open"),
        ("jit_floor_path_mknod", "path_mknod"),
        ("jit_floor_path_unlink", "path_unlink"),
        ("jit_floor_path_mkdir", "path_mkdir"),
        ("jit_floor_path_rmdir", "path_rmdir"),
        ("jit_floor_path_truncate", "path_truncate"),
        ("jit_floor_path_chmod", "path_chmod"),
        ("jit_floor_path_chown", "path_chown"),
        ("jit_floor_path_rename", "path_rename"),
        ("jit_floor_path_link", "path_link"),
        ("jit_floor_path_symlink", "path_symlink"),
        ("jit_floor_mmap_file", "mmap_file"),
        ("jit_floor_file_mprotect", "file_mprotect"),
        ("jit_floor_file_truncate", "file_truncate"),
        ("jit_floor_inode_setxattr", "inode_setxattr"),
        ("jit_floor_inode_removexattr", "inode_removexattr"),
        ("jit_floor_inode_set_acl", "inode_set_acl"),
        ("jit_floor_inode_remove_acl", "inode_remove_acl"),
        ("jit_floor_inode_setattr", "inode_setattr"),
        ("jit_floor_file_ioctl", "file_ioctl"),
        ("jit_floor_file_ioctl_compat", "file_ioctl_compat"),
        ("jit_floor_task_kill", "task_kill"),
        ("jit_floor_file_send_sigiotask", "file_send_sigiotask"),
        ("jit_floor_ptrace_access_check", "ptrace_access_check"),
        ("jit_floor_bpf", "bpf"),
        ("jit_floor_ptrace_traceme", "ptrace_traceme"),
        ("jit_floor_task_setrlimit", "task_setrlimit"),
        ("jit_floor_task_setnice", "task_setnice"),
        ("jit_floor_task_setioprio", "task_setioprio"),
        ("jit_floor_task_setscheduler", "task_setscheduler"),
        ("jit_floor_task_movememory", "task_movememory"),
        ("jit_floor_task_alloc", "task_alloc"),
        ("jit_floor_kernel_read_file", "kernel_read_file"),
        ("jit_floor_kernel_load_data", "kernel_load_data"),
        ("jit_floor_sb_mount", "sb_mount"),
        ("jit_floor_sb_umount", "sb_umount"),
        ("jit_floor_move_mount", "move_mount"),
        ("jit_floor_sb_pivotroot", "sb_pivotroot"),
        ("jit_floor_path_chroot", "path_chroot"),
        ("jit_floor_d_instantiate", "d_instantiate"),
        ("jit_floor_inode_free_security", "inode_free_security"),
    ];

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_floor_has_one_program_on_every_hook_jit_uses() {
            let mut floor: [&str; FLOOR.len()] = FLOOR.map(|(_, hook)| hook);
            floor.sort_unstable();
            let mut hooks = ALL.map(|(_, hook)| hook);
            hooks.sort_unstable();
            let mut unique = [""; ALL.len()];
            let mut n = 0;
            for hook in hooks {
                if n == 0 || unique[n - 1] != hook {
                    unique[n] = hook;
                    n += 1;
                }
            }
            assert_eq!(floor.as_slice(), &unique[..n]);
            for (name, hook) in FLOOR {
                assert_eq!(name.strip_prefix("jit_floor_"), Some(hook));
            }
        }
    }
}
