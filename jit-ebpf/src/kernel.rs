//! Kernel memory access for every program: struct member offsets of the running kernel
//! (`JIT_LAYOUT`, written by userspace before load), direct and probed loads, file identities,
//! and the current task. A leaf module: it uses no other module of this crate but the maps.
#![expect(
    clippy::cast_possible_truncation,
    reason = "lengths are bounded by PATH_MAX and the helpers pack two u32 into one u64"
)]

use aya_ebpf::helpers::generated::{
    bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel,
};
use jit_common::{layout::KernelLayout, pending::FileId, policy::Op};

use crate::EPERM;

/// Struct member offsets of the running kernel, written by userspace before load.
#[unsafe(no_mangle)]
static JIT_LAYOUT: KernelLayout = KernelLayout::UNSET;

/// `-EPERM`, in read-only data: the verifier knows its value (the section is frozen), the
/// compiler cannot fold it into arithmetic. Where allow and deny share code, the compiler
/// otherwise computes `Err(-EPERM)` as the negation of a 0/1 flag, whose result the 6.12
/// verifier does not track: the hook's return value is then unbounded and the program refused.
#[unsafe(no_mangle)]
static JIT_EPERM: i32 = -EPERM;

/// [`JIT_EPERM`], read so the compiler cannot see its value.
#[inline(always)]
pub fn opaque_eperm() -> i32 {
    // SAFETY: reads a plain integer out of a static.
    unsafe { core::ptr::read_volatile(&raw const JIT_EPERM) }
}

/// Reads one offset of [`JIT_LAYOUT`]. Volatile, so the compiler does not fold the zeros the
/// object file carries.
#[inline(always)]
pub fn offset(field: fn(&KernelLayout) -> &u32) -> usize {
    // SAFETY: reads a plain integer out of a static.
    unsafe { core::ptr::read_volatile(field(&JIT_LAYOUT)) as usize }
}

/// Reads the pointer stored at `base + off` (a BTF-typed kernel pointer stays BTF-typed).
#[inline(always)]
#[expect(
    clippy::cast_ptr_alignment,
    reason = "`off` is the BTF offset of a pointer member, which the kernel ABI aligns to 8"
)]
pub unsafe fn load_ptr(base: *const u8, off: usize) -> *const u8 {
    // SAFETY: `base` is a kernel pointer the verifier tracks; the load is checked by it.
    unsafe { *(base.add(off).cast::<*const u8>()) }
}

/// Copies a `T` out of kernel memory at `base + off`; zero when unreadable.
#[inline(always)]
pub fn read_kernel<T: Copy + Default>(base: *const u8, off: usize) -> T {
    let mut value = T::default();
    // SAFETY: the helper checks the source address; the destination is a local of size T.
    unsafe {
        bpf_probe_read_kernel(
            (&raw mut value).cast(),
            size_of::<T>() as u32,
            base.wrapping_add(off).cast(),
        );
    }
    value
}

/// Copies the `T` at `base + off` with a direct load. Only for a BTF-typed `base` (a hook
/// argument or a pointer read from one with [`load_ptr`]) and the offset of a member of type
/// `T`: the verifier checks the access against the kernel's BTF and turns it into a single
/// fault-safe load, far cheaper than a `bpf_probe_read_kernel` call.
#[inline(always)]
pub unsafe fn load_btf<T: Copy>(base: *const u8, off: usize) -> T {
    // SAFETY: as documented; the verifier rejects anything else at load time.
    unsafe { *(base.add(off).cast::<T>()) }
}

/// [`file_id`] for a BTF-typed `inode` (see [`load_btf`]).
#[inline(always)]
pub unsafe fn file_id_btf(inode: *const u8) -> FileId {
    // SAFETY: `inode` is BTF-typed; `i_sb` is a pointer member, `s_dev` a u32, `i_ino` a u64.
    unsafe {
        let sb = load_ptr(inode, offset(|l| &l.inode_i_sb));
        FileId {
            dev: u64::from(load_btf::<u32>(sb, offset(|l| &l.super_block_s_dev))),
            ino: load_btf(inode, offset(|l| &l.inode_i_ino)),
            name: 0,
        }
    }
}

/// `d_name.hash_len` of the BTF-typed `dentry`: the name's salted hash (low half) and length
/// (high half). Two 4-byte loads: 6.1's verifier takes the member at that offset for the union's
/// `hash` (4 bytes) and refuses an 8-byte load there.
///
/// # Safety
/// `dentry` must be a BTF-typed `struct dentry *`.
#[inline(always)]
pub unsafe fn hash_len_btf(dentry: *const u8) -> u64 {
    let d_name = offset(|l| &l.dentry_d_name);
    // SAFETY: `d_name` is a `struct qstr` whose first 8 bytes are `u32 hash; u32 len`.
    unsafe {
        let hash: u32 = load_btf(dentry, d_name);
        let len: u32 = load_btf(dentry, d_name + 4);
        u64::from(hash) | (u64::from(len) << 32)
    }
}

/// Device and inode of `inode` (a kernel `struct inode *`).
#[inline(always)]
pub fn file_id(inode: *const u8) -> FileId {
    let sb: u64 = read_kernel(inode, offset(|l| &l.inode_i_sb));
    let dev: u32 = read_kernel(sb as *const u8, offset(|l| &l.super_block_s_dev));
    FileId {
        dev: u64::from(dev),
        ino: read_kernel(inode, offset(|l| &l.inode_i_ino)),
        name: 0,
    }
}

/// The inode of `dentry` (a kernel `struct dentry *`); null for a negative dentry.
#[inline(always)]
pub fn dentry_inode(dentry: *const u8) -> *const u8 {
    read_kernel::<u64>(dentry, offset(|l| &l.dentry_d_inode)) as *const u8
}

/// The dentry of `path` (a kernel `struct path *`).
#[inline(always)]
pub fn path_dentry(path: *const u8) -> *const u8 {
    read_kernel::<u64>(path, offset(|l| &l.path_dentry)) as *const u8
}

/// The mount of `path` (a kernel `struct path *`).
#[inline(always)]
pub fn path_mnt(path: *const u8) -> *const u8 {
    read_kernel::<u64>(path, offset(|l| &l.path_mnt)) as *const u8
}

/// The uid (low half) and gid (high half) the current task does `op` as: for a file op the
/// filesystem ids (`fsuid`, `fsgid`: what every file access is checked as; they follow the
/// effective ids unless changed with `setfsuid`/`setfsgid`), for `exec` the effective ids (what
/// the program will run as: `execve` sets the filesystem ids back to them; a set-user-ID bit is
/// applied only after this decision), of the credentials it acts with (`task->cred`, the
/// subjective credentials). For an `io_uring` request those are the submitter's at
/// submission or its registered personality's, also in an io-wq worker, whose own `real_cred`
/// is a copy made when the worker started and may be another identity by now. What `user` and
/// `group` conditions decide by (policies/README.md, "Users and groups"), what events report,
/// and part of the write-decision cache's key.
#[inline(always)]
pub fn acting_ids(op: Op) -> u64 {
    let (uid_at, gid_at) = if op == Op::Exec {
        (offset(|l| &l.cred_euid), offset(|l| &l.cred_egid))
    } else {
        (offset(|l| &l.cred_fsuid), offset(|l| &l.cred_fsgid))
    };
    // SAFETY: the task from the helper is BTF-typed; `cred` is a pointer member, the ids are
    // `u32` members of `struct cred` (kuid_t and kgid_t wrap one).
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let cred = load_ptr(task, offset(|l| &l.task_cred));
        let uid: u32 = load_btf(cred, uid_at);
        let gid: u32 = load_btf(cred, gid_at);
        u64::from(uid) | (u64::from(gid) << 32)
    }
}

/// The current task (a kernel `struct task_struct *`, read with [`read_kernel`]).
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// The thread group id of `task` (a kernel `struct task_struct *`).
#[inline(always)]
pub fn task_tgid(task: *const u8) -> u32 {
    read_kernel::<i32>(task, offset(|l| &l.task_tgid)).cast_unsigned()
}

pub fn parent_tgid() -> u32 {
    let task = current_task();
    let parent: u64 = read_kernel(task, offset(|l| &l.task_real_parent));
    task_tgid(parent as *const u8)
}
