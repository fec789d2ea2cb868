//! Hook: `file_open` (LSM), op `write`: an open with write access.
//!
//! Runs in `do_dentry_open` once the file is resolved, before the open returns a descriptor and
//! before `O_TRUNC` truncates, so a denial or hold has no side effect. Opens without
//! `FMODE_WRITE` return at once. The path is the file really opened (symlinks, `/proc/self/fd`
//! and `openat` resolved). An `O_CREAT` that creates the file is decided before this, as
//! `create`, by `path_mknod`.
//!
//! A write open of a `/proc/PID/` file of a process outside the caller's agent (its
//! `oom_score_adj`, `autogroup`, `comm`, `timerslack_ns`, ...: knobs the kernel lets the owner
//! turn without any other check) is refused as a self-protection denial of op `resource`, like
//! the resource syscalls (see `task_resources`).
//!
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM); jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::{
    pending::FileId,
    policy::Op,
    protect::{event_op, resource},
};

use crate::{
    action::{Action, Where},
    engine::{decide_with, seeded_open},
    kernel::{file_id_btf, load_btf, load_ptr, offset, opaque_eperm, read_kernel, task_tgid},
    maps::Scratch,
    protect::deny,
    provenance::mark_written,
    resolve::{MountNs, mount_ns},
    scope::{current_agent, task_agent},
};

/// Whether `path` (the file's `f_path`) is a backing file's: a file below the root of a private
/// clone of a mount (an internal mount, not a pseudo file), which stacking filesystems
/// (overlayfs, FUSE passthrough) open for a file the caller opened through them. That open was
/// decided there, by the path the caller sees; this one is the kernel's own. (Agents cannot
/// make such clones: their own stacked mounts are detached, and decisions on those fail
/// closed.)
#[inline(always)]
fn is_backing_file(path: *const u8) -> bool {
    let mnt: u64 = read_kernel(path, offset(|l| &l.path_mnt));
    if mount_ns(mnt) != MountNs::Internal {
        return false;
    }
    let dentry: u64 = read_kernel(path, offset(|l| &l.path_dentry));
    let parent: u64 = read_kernel(dentry as *const u8, offset(|l| &l.dentry_d_parent));
    parent != dentry
}

/// `PROC_SUPER_MAGIC`.
const PROC_SUPER_MAGIC: u64 = 0x9fa0;

/// The thread group id of the process whose `/proc/PID/` entry `inode` is, when that process is
/// alive and not of agent `agent_id`; `None` for every other file.
#[inline(always)]
fn foreign_proc_entry(agent_id: u32, inode: *const u8) -> Option<u32> {
    // SAFETY: `inode` is the BTF-typed `f_inode` of the hook's file; `i_sb` is a pointer
    // member, `s_magic` an unsigned long.
    let magic: u64 = unsafe {
        let sb = load_ptr(inode, offset(|l| &l.inode_i_sb));
        load_btf(sb, offset(|l| &l.super_block_s_magic))
    };
    if magic != PROC_SUPER_MAGIC {
        return None;
    }
    let proc_inode = (inode as u64).wrapping_sub(offset(|l| &l.proc_inode_vfs_inode) as u64);
    let pid: u64 = read_kernel(proc_inode as *const u8, offset(|l| &l.proc_inode_pid));
    if pid == 0 {
        return None;
    }
    // pid->tasks[PIDTYPE_PID].first: the task's pid_links[PIDTYPE_PID] node.
    let node: u64 = read_kernel(pid as *const u8, offset(|l| &l.pid_tasks));
    if node == 0 {
        return None;
    }
    let task = node.wrapping_sub(offset(|l| &l.task_pid_links) as u64) as *const u8;
    if task_agent(task) == Some(agent_id) {
        return None;
    }
    Some(task_tgid(task))
}

/// `fmode_t` bits of an open for writing, and of an open that created its file.
const FMODE_WRITE: u32 = 0x2;
const FMODE_CREATED: u32 = 0x10_0000;

#[lsm(hook = "file_open")]
pub fn jit_file_open(ctx: LsmContext) -> i32 {
    match try_file_open(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_file_open(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, file_open, struct file *file)
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    let file: *const u8 = ctx.arg(0);
    // SAFETY: `file` is the hook's BTF-typed argument; `f_mode` is a u32 (`fmode_t`).
    let mode: u32 = unsafe { load_btf(file, offset(|l| &l.file_f_mode)) };
    if mode & FMODE_WRITE == 0 {
        return Ok(0);
    }
    // SAFETY: `file` is the hook's BTF-typed argument; offsets come from the kernel's BTF.
    let (path, inode) = unsafe {
        (
            file.add(offset(|l| &l.file_f_path)),
            load_ptr(file, offset(|l| &l.file_f_inode)),
        )
    };
    let checks = |s: &mut Scratch| {
        // A file this open has just created: its create may have decided this open already
        // (a file `path_mknod` let this thread create, on a mount of its namespace: neither a
        // backing file nor a `/proc/PID/` entry, which the checks below are for).
        if mode & FMODE_CREATED != 0 && seeded_open(path, s) {
            return Some(Ok(0));
        }
        if is_backing_file(path) {
            return Some(Ok(0));
        }
        foreign_proc_entry(agent.agent_id, inode)
            .map(|tgid| Err(deny(event_op::RESOURCE, agent, tgid, resource::PROC)))
    };
    let verdict = decide_with(
        &Action {
            op: Op::Write,
            agent,
            path: Where::Path(path.cast()),
            second: None,
            second_file: FileId::ZERO,
            // SAFETY: `inode` was loaded from the BTF-typed `file`.
            file: unsafe { file_id_btf(inode) },
            no_hold: false,
            flags: 0,
        },
        checks,
    );
    // The open is allowed: the file is now written by this agent (see `provenance`). Without
    // room for its mark it would pass for a file the host installed: refused.
    // SAFETY: `inode` was loaded from the BTF-typed `file`.
    if verdict == Ok(0) && !unsafe { mark_written(inode, agent.agent_id) } {
        return Err(opaque_eperm());
    }
    verdict
}
