//! Hooks for op `metadata`: extended attributes (`inode_setxattr`, `inode_removexattr`, and on
//! 6.2+ `inode_set_acl`, `inode_remove_acl`), inode flags (`file_ioctl` with
//! `FS_IOC_SETFLAGS`/`FS_IOC_FSSETXATTR`: `chattr`; also the inode generation, fs-verity,
//! an encryption policy and FAT attributes) and timestamps (`inode_setattr` with new
//! access or modification times and no size change: `utimensat`, `utimes`, `touch`).
//!
//! None of these passed a decision before: `chattr +i` on the daemon's audit log would stop its
//! appends, `security.*` attributes steer other LSMs and file capabilities, ACLs grant access,
//! timestamps hide changes. Decided by the file's path like every op; the daemon's protected
//! paths and cgroup filesystems are refused by self-protection first (see `engine`).
//!
//! The xattr, ACL and attribute hooks get a dentry without its mount: the path is resolved
//! through the mount that shows the file's whole filesystem in the task's namespace
//! (`resolve::whole_mount_of`), and fails closed where there is none. Mode and owner changes
//! stay `chmod` and `chown` (`path_chmod`, `path_chown`); size changes are `truncate`.
//!
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM); `inode_set_acl` and
//! `inode_remove_acl` 6.2 (before, ACLs are set as `system.posix_acl_*` xattrs, which
//! `inode_setxattr` sees). The dentry is the second argument of every xattr and ACL hook on 6.1
//! and 6.12; `inode_setattr` gained a leading `idmap` in 6.3, so it has two programs, one per
//! signature.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::{AgentCgroup, policy::Op, protect::event_op};

use crate::{
    engine::{decide_on_dentry, decide_on_file},
    kernel::{offset, read_kernel},
    protect::deny,
    provenance::write_stamp,
    scope::current_agent,
};

/// `FS_IOC_SETFLAGS` (`_IOW('f', 2, long)`) and its 32-bit form `FS_IOC32_SETFLAGS`.
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
/// `FS_IOC_FSSETXATTR` (`_IOW('X', 32, struct fsxattr)`): the same flags, and project ids.
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
/// `FS_IOC_SETVERSION` (`_IOW('v', 2, long)`) and `FS_IOC32_SETVERSION`: the inode generation.
const FS_IOC_SETVERSION: u32 = 0x4008_7602;
const FS_IOC32_SETVERSION: u32 = 0x4004_7602;
/// `EXT4_IOC_SETVERSION` (`_IOW('f', 4, long)`) and its 32-bit form: the same, ext4's number.
const EXT4_IOC_SETVERSION: u32 = 0x4008_6604;
const EXT4_IOC32_SETVERSION: u32 = 0x4004_6604;
/// `FS_IOC_ENABLE_VERITY` (`_IOW('f', 133, struct fsverity_enable_arg)`): makes the file
/// read-only for good, with only read access needed.
const FS_IOC_ENABLE_VERITY: u32 = 0x4080_6685;
/// `FS_IOC_SET_ENCRYPTION_POLICY` (`_IOR('f', 19, struct fscrypt_policy_v1)`).
const FS_IOC_SET_ENCRYPTION_POLICY: u32 = 0x800c_6613;
/// `FAT_IOCTL_SET_ATTRIBUTES` (`_IOW('r', 0x11, __u32)`): the FAT attribute bits.
const FAT_IOCTL_SET_ATTRIBUTES: u32 = 0x4004_7211;
/// `ATTR_*` bits of `struct iattr::ia_valid`.
const ATTR_SIZE: u32 = 1 << 3;
const ATTR_ATIME: u32 = 1 << 4;
const ATTR_MTIME: u32 = 1 << 5;

#[inline(always)]
fn on_dentry(dentry: *const u8) -> i32 {
    match current_agent() {
        Some(agent) => metadata_of(agent, dentry),
        None => 0,
    }
}

/// Decides a metadata change of `dentry` by `agent`: the hook's return value.
#[inline(always)]
fn metadata_of(agent: AgentCgroup, dentry: *const u8) -> i32 {
    match decide_on_dentry(Op::Metadata, agent, dentry) {
        Ok(ret) | Err(ret) => ret,
    }
}

/// `inode_setxattr(idmap, struct dentry *dentry, const char *name, const void *value,
/// size_t size, int flags)` (6.1: `struct user_namespace *` first).
#[lsm(hook = "inode_setxattr")]
pub fn jit_inode_setxattr(ctx: LsmContext) -> i32 {
    on_dentry(ctx.arg(1))
}

/// `inode_removexattr(idmap, struct dentry *dentry, const char *name)`.
#[lsm(hook = "inode_removexattr")]
pub fn jit_inode_removexattr(ctx: LsmContext) -> i32 {
    on_dentry(ctx.arg(1))
}

/// `inode_set_acl(struct mnt_idmap *idmap, struct dentry *dentry, const char *acl_name,
/// struct posix_acl *kacl)` (6.2+).
#[lsm(hook = "inode_set_acl")]
pub fn jit_inode_set_acl(ctx: LsmContext) -> i32 {
    on_dentry(ctx.arg(1))
}

/// `inode_remove_acl(struct mnt_idmap *idmap, struct dentry *dentry, const char *acl_name)`
/// (6.2+).
#[lsm(hook = "inode_remove_acl")]
pub fn jit_inode_remove_acl(ctx: LsmContext) -> i32 {
    on_dentry(ctx.arg(1))
}

/// `inode_setattr(struct mnt_idmap *idmap, struct dentry *dentry, struct iattr *attr)` (6.3+):
/// only new timestamps without a size change are `metadata` (`notify_change` also carries
/// chmod, chown and truncate, decided by their own path hooks, and the kernel's own privilege
/// drops).
#[lsm(hook = "inode_setattr")]
pub fn jit_inode_setattr(ctx: LsmContext) -> i32 {
    on_setattr(ctx.arg(1), ctx.arg(2))
}

/// `inode_setattr(struct dentry *dentry, struct iattr *attr)` (before 6.3): the same, for the
/// older signature (userspace attaches the program that matches the kernel's).
#[lsm(hook = "inode_setattr")]
pub fn jit_inode_setattr_noidmap(ctx: LsmContext) -> i32 {
    on_setattr(ctx.arg(0), ctx.arg(1))
}

#[inline(always)]
fn on_setattr(dentry: *const u8, attr: *const u8) -> i32 {
    let Some(agent) = current_agent() else {
        return 0;
    };
    let valid: u32 = read_kernel(attr, offset(|l| &l.iattr_ia_valid));
    if valid & (ATTR_ATIME | ATTR_MTIME) == 0 || valid & ATTR_SIZE != 0 {
        return 0;
    }
    metadata_of(agent, dentry)
}

/// `file_ioctl(struct file *file, unsigned int cmd, unsigned long arg)`: `chattr`.
#[lsm(hook = "file_ioctl")]
pub fn jit_file_ioctl(ctx: LsmContext) -> i32 {
    on_ioctl(&ctx)
}

/// `file_ioctl_compat(struct file *file, unsigned int cmd, unsigned long arg)`: the same from
/// 32-bit processes (and `int 0x80`), where kernels with this hook (6.8, and stable updates of
/// older series, Debian's 6.1 among them) no longer call `file_ioctl`.
#[lsm(hook = "file_ioctl_compat")]
pub fn jit_file_ioctl_compat(ctx: LsmContext) -> i32 {
    on_ioctl(&ctx)
}

#[inline(always)]
fn on_ioctl(ctx: &LsmContext) -> i32 {
    let cmd: u32 = ctx.arg(1);
    let sets_version = matches!(
        cmd,
        FS_IOC_SETVERSION | FS_IOC32_SETVERSION | EXT4_IOC_SETVERSION | EXT4_IOC32_SETVERSION
    );
    if !sets_version
        && !matches!(
            cmd,
            FS_IOC_SETFLAGS
                | FS_IOC32_SETFLAGS
                | FS_IOC_FSSETXATTR
                | FS_IOC_ENABLE_VERITY
                | FS_IOC_SET_ENCRYPTION_POLICY
                | FAT_IOCTL_SET_ATTRIBUTES
        )
    {
        return 0;
    }
    let Some(agent) = current_agent() else {
        return 0;
    };
    // A file an agent wrote keeps its generation: its provenance mark is checked against it.
    if sets_version {
        let file: *const u8 = ctx.arg(0);
        let inode: u64 = read_kernel(file, offset(|l| &l.file_f_inode));
        if write_stamp(inode as *const u8) != 0 {
            return deny(event_op::PROVENANCE, agent, 0, u64::from(cmd));
        }
    }
    match decide_on_file(Op::Metadata, agent, ctx.arg(0), false, 0) {
        Ok(ret) | Err(ret) => ret,
    }
}
