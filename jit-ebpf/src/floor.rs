//! The floor: one program per hook that jit attaches to, each returning 0 at once.
//!
//! Never attached by the daemon (their names are in `program_names::FLOOR`, not in
//! `program_names::ALL`). `jit-bench` attaches them alone, in place of jit's programs, to time
//! what a BPF LSM program on these hooks costs before it does anything (the trampoline and the
//! call): the physical limit of any design built on these hooks, against which jit's own cost
//! is read (README, "Benchmarks").
//!
//! A program that returns 0 on a hook with an earlier denial does not overrule it: the
//! trampoline stops at the first non-zero return. Minimum kernel: 5.7 (BPF LSM).
use aya_ebpf::{macros::lsm, programs::LsmContext};

/// One `#[lsm]` program per `name = "hook"`, returning 0 without reading its context.
macro_rules! floor_programs {
    ($($name:ident = $hook:tt),* $(,)?) => {
        $(
            #[lsm(hook = $hook)]
            pub fn $name(_ctx: LsmContext) -> i32 {
                0
            }
        )*
    };
}

// Keep in step with `jit_common::program_names::FLOOR` (a host test checks that list covers
// every hook of `program_names::ALL` once).
floor_programs! {
    jit_floor_bprm_check_security = "bprm_check_security",
    jit_floor_bprm_committed_creds = "bprm_committed_creds",
    jit_floor_file_open = "file_open",
    jit_floor_path_mknod = "path_mknod",
    jit_floor_path_unlink = "path_unlink",
    jit_floor_path_mkdir = "path_mkdir",
    jit_floor_path_rmdir = "path_rmdir",
    jit_floor_path_truncate = "path_truncate",
    jit_floor_path_chmod = "path_chmod",
    jit_floor_path_chown = "path_chown",
    jit_floor_path_rename = "path_rename",
    jit_floor_path_link = "path_link",
    jit_floor_path_symlink = "path_symlink",
    jit_floor_mmap_file = "mmap_file",
    jit_floor_file_mprotect = "file_mprotect",
    jit_floor_file_truncate = "file_truncate",
    jit_floor_inode_setxattr = "inode_setxattr",
    jit_floor_inode_removexattr = "inode_removexattr",
    jit_floor_inode_set_acl = "inode_set_acl",
    jit_floor_inode_remove_acl = "inode_remove_acl",
    jit_floor_inode_setattr = "inode_setattr",
    jit_floor_file_ioctl = "file_ioctl",
    jit_floor_file_ioctl_compat = "file_ioctl_compat",
    jit_floor_task_kill = "task_kill",
    jit_floor_file_send_sigiotask = "file_send_sigiotask",
    jit_floor_ptrace_access_check = "ptrace_access_check",
    jit_floor_bpf = "bpf",
    jit_floor_ptrace_traceme = "ptrace_traceme",
    jit_floor_task_setrlimit = "task_setrlimit",
    jit_floor_task_setnice = "task_setnice",
    jit_floor_task_setioprio = "task_setioprio",
    jit_floor_task_setscheduler = "task_setscheduler",
    jit_floor_task_movememory = "task_movememory",
    jit_floor_task_alloc = "task_alloc",
    jit_floor_kernel_read_file = "kernel_read_file",
    jit_floor_kernel_load_data = "kernel_load_data",
    jit_floor_sb_mount = "sb_mount",
    jit_floor_sb_umount = "sb_umount",
    jit_floor_move_mount = "move_mount",
    jit_floor_sb_pivotroot = "sb_pivotroot",
    jit_floor_path_chroot = "path_chroot",
    jit_floor_d_instantiate = "d_instantiate",
    jit_floor_inode_free_security = "inode_free_security",
}
