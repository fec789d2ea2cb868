//! Hooks: `sb_mount`, `sb_umount`, `move_mount`, `sb_pivotroot`, `path_chroot` (LSM),
//! self-protection: no agent may change how paths resolve.
//!
//! jit decides by path, resolved as the kernel sees it (`bpf_d_path`, or the dentry and mount
//! walk) relative to the task's root. An agent allowed to bind-mount a denied directory
//! somewhere allowed, `chroot` or `pivot_root` into a subtree (where `/srv/secret/x` resolves as
//! `/x`), or move a cloned mount tree into place would reach denied files under allowed names;
//! unmounting bpffs would drop jit's pins. So every mount, unmount, mount move, `pivot_root`
//! and `chroot` by a process in an agent cgroup is refused with `EPERM`, whatever its policy
//! says, and reported as a self-protection denial (op `mount` or `chroot`).
//!
//! The previous program's verdict is not read (see `bpf.rs`: a program only runs after every
//! earlier one returned 0). Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM;
//! `move_mount` 5.2); the five signatures are the same on 6.1 and 6.12.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::protect::event_op;

use crate::{cache::note_chroot, protect::deny, scope::current_agent};

/// Refuses the current task's operation `op` when it runs in an agent cgroup.
#[inline(always)]
fn refuse_agents(op: u8) -> i32 {
    match current_agent() {
        Some(agent) => deny(op, agent, 0, 0),
        None => 0,
    }
}

/// `sb_mount(const char *dev_name, const struct path *path, const char *type,
/// unsigned long flags, void *data)`: `mount(2)`, bind mounts and remounts included.
#[lsm(hook = "sb_mount")]
pub fn jit_sb_mount(_ctx: LsmContext) -> i32 {
    refuse_agents(event_op::MOUNT)
}

/// `sb_umount(struct vfsmount *mnt, int flags)`: `umount2(2)`.
#[lsm(hook = "sb_umount")]
pub fn jit_sb_umount(_ctx: LsmContext) -> i32 {
    refuse_agents(event_op::MOUNT)
}

/// `move_mount(const struct path *from_path, const struct path *to_path)`: attaching a tree
/// made with `open_tree`/`fsmount`, or moving a mount.
#[lsm(hook = "move_mount")]
pub fn jit_move_mount(_ctx: LsmContext) -> i32 {
    refuse_agents(event_op::MOUNT)
}

/// `sb_pivotroot(const struct path *old_path, const struct path *new_path)`.
#[lsm(hook = "sb_pivotroot")]
pub fn jit_sb_pivotroot(_ctx: LsmContext) -> i32 {
    refuse_agents(event_op::CHROOT)
}

/// `path_chroot(const struct path *path)`: `chroot(2)`. Every call, by any process, is also
/// counted for the write-decision cache (see `crate::cache`), before the root changes.
#[lsm(hook = "path_chroot")]
pub fn jit_path_chroot(_ctx: LsmContext) -> i32 {
    note_chroot();
    refuse_agents(event_op::CHROOT)
}
