//! Path resolution: the absolute path of a `struct path` or a dentry for the rules to match,
//! with `bpf_d_path` where the hook allows it and a checking walk of the dentry tree elsewhere;
//! mount namespaces and pseudo filesystems.
#![expect(
    clippy::cast_possible_truncation,
    reason = "lengths are bounded by PATH_MAX and the helpers pack two u32 into one u64"
)]
use core::ffi::c_void;

use aya_ebpf::helpers::generated::{bpf_d_path, bpf_probe_read_kernel};
use jit_common::{
    event::{EVENT_FLAG_PATH_TRUNCATED, EVENT_FLAG_PATH_UNRESOLVED, EVENT_PATH_MAX, counter},
    layout::KernelLayout,
};

use crate::{
    action::Where,
    kernel::{current_task, load_btf, load_ptr, offset, path_mnt, read_kernel},
    maps::{Scratch, WALK_LEN, count},
};

/// The superblock magic of the filesystem `place` lies on, read through its mount
/// (`vfsmount->mnt_sb`): the same superblock as the inode's `i_sb` (for `file_open`,
/// `file->f_inode->i_sb`), and available for entries that have no inode yet (mkdir, create).
#[inline(always)]
pub fn fs_magic(place: &Where) -> u64 {
    match *place {
        // SAFETY: a BTF-typed path (see `Where::Path`): `mnt` and `mnt_sb` are pointer members,
        // `s_magic` an unsigned long.
        Where::Path(path) => unsafe {
            let mnt = load_ptr(path.cast(), offset(|l| &l.path_mnt));
            let sb = load_ptr(mnt, offset(|l| &l.vfsmount_mnt_sb));
            load_btf(sb, offset(|l| &l.super_block_s_magic))
        },
        Where::Walk { mnt, .. } => {
            let sb: u64 = read_kernel(mnt, offset(|l| &l.vfsmount_mnt_sb));
            read_kernel(sb as *const u8, offset(|l| &l.super_block_s_magic))
        }
    }
}

/// Writes the resolved path of `place` into the event buffer; false when it cannot be
/// resolved (the decision then fails closed).
#[inline(always)]
pub fn resolve_path(place: &Where, s: &mut Scratch) -> bool {
    s.event.flags = 0;
    let resolved = match *place {
        Where::Path(path) => resolve_btf_path(path, s),
        Where::Walk { mnt, dentry } => walk_path(mnt, dentry, s),
    };
    if !resolved {
        s.event.flags = EVENT_FLAG_PATH_UNRESOLVED;
        s.event.path_len = 0;
        count(counter::ERRORS);
    }
    resolved
}

/// The current task's mount namespace (0 when it has none: an exiting task).
#[inline(always)]
fn current_mnt_ns() -> u64 {
    let task = current_task();
    let nsproxy: u64 = read_kernel(task, offset(|l| &l.task_nsproxy));
    read_kernel(nsproxy as *const u8, offset(|l| &l.nsproxy_mnt_ns))
}

/// Where the mount `mnt` (a `struct vfsmount *`) is attached, seen from the current task.
///
/// [`MountNs::Foreign`] for a detached tree (`open_tree(OPEN_TREE_CLONE)`, `fsmount`: an
/// anonymous namespace of its own), a lazily unmounted mount (none), or a mount of another
/// namespace reached through `/proc/PID/root` or a descriptor passed in: there the path a walk
/// or `d_path` builds is relative to some other root, not the path the rest of the system sees,
/// so a decision by it would be a decision about another file.
#[inline(always)]
pub fn mount_ns(mnt: u64) -> MountNs {
    let mount = mnt.wrapping_sub(offset(|l| &l.mount_mnt) as u64);
    let ns: u64 = read_kernel(mount as *const u8, offset(|l| &l.mount_mnt_ns));
    if ns == MNT_NS_INTERNAL {
        MountNs::Internal
    } else if ns != 0 && ns == current_mnt_ns() {
        MountNs::Here
    } else {
        MountNs::Foreign
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MountNs {
    /// Attached in the current task's mount namespace.
    Here,
    /// One of the kernel's internal mounts (`MNT_NS_INTERNAL`: pipes, sockets, `memfd`, System V
    /// shared memory, anonymous inodes). Their objects have no path anywhere; both resolvers
    /// name them as the kernel's `d_path` does (`/memfd:NAME (deleted)`), which only a rule for
    /// exactly that name matches.
    Internal,
    /// Anything else: the path would not be the one the rest of the system sees.
    Foreign,
}

/// `MNT_NS_INTERNAL` (`ERR_PTR(-EINVAL)`): the namespace of the kernel's internal mounts.
const MNT_NS_INTERNAL: u64 = (-22_i64).cast_unsigned();

/// Resolves a BTF-typed `struct path *` (see [`Where::Path`]): with `bpf_d_path` when its
/// result is the path the rest of the system sees, with the checking walk otherwise, and not
/// at all on a mount of another (or no) namespace.
///
/// `d_path` does not tell a path it could not connect to the root: a dentry that escaped the
/// root of a bind mount (the file was moved out of the bind-mounted directory while the agent
/// kept it open) or a disconnected one (`open_by_handle_at`) comes back as a path relative to
/// its filesystem, as if it were a mount root. Both are only possible on a mount of a
/// subdirectory (its root is not the filesystem's root) or for a dentry that is its own parent;
/// those take the walk, which refuses them ([`walk_path`]). Everything else, the common case,
/// keeps the faster helper.
#[inline(always)]
fn resolve_btf_path(path: *const c_void, s: &mut Scratch) -> bool {
    let path = path.cast::<u8>();
    let mnt: u64 = read_kernel(path, offset(|l| &l.path_mnt));
    let dentry: u64 = read_kernel(path, offset(|l| &l.path_dentry));
    match mount_ns(mnt) {
        MountNs::Foreign => return false,
        MountNs::Internal => {
            // Pseudo files (`memfd`, pipes) as the kernel names them; a path below a private
            // clone's root (an overlay layer's) is not one anyone else sees.
            let parent: u64 = read_kernel(dentry as *const u8, offset(|l| &l.dentry_d_parent));
            return parent == dentry && d_path(path.cast(), s);
        }
        MountNs::Here => {}
    }
    let mnt_root: u64 = read_kernel(mnt as *const u8, offset(|l| &l.vfsmount_mnt_root));
    let sb: u64 = read_kernel(mnt as *const u8, offset(|l| &l.vfsmount_mnt_sb));
    let fs_root: u64 = read_kernel(sb as *const u8, offset(|l| &l.super_block_s_root));
    let parent: u64 = read_kernel(dentry as *const u8, offset(|l| &l.dentry_d_parent));
    if mnt_root != fs_root || parent == dentry {
        walk_path(mnt as *const u8, dentry as *const u8, s)
    } else {
        d_path(path.cast(), s)
    }
}

/// The mount through which the current task's namespace shows the whole filesystem of `sb`
/// (a `struct super_block *`): the task's root mount when it is of that filesystem and shows
/// all of it (the common case: a file on the root filesystem), else the first of the
/// filesystem's mounts (`s_mounts`) attached here whose root is the filesystem's root; null
/// when there is none among the first [`SB_MOUNTS_SEARCHED`] (or the kernel's mount list is not
/// known to jit: kernels newer than 6.12 only get the root mount).
/// For hooks that only get a dentry (xattrs, timestamps): the path through such a mount is the
/// file's name in the namespace; a filesystem shown only through bind mounts of
/// subdirectories has no such name, and its decisions fail closed.
#[inline(always)]
pub fn whole_mount_of(sb: *const u8) -> *const u8 {
    let fs_root: u64 = read_kernel(sb, offset(|l| &l.super_block_s_root));
    let task = current_task();
    let fs: u64 = read_kernel(task, offset(|l| &l.task_fs));
    let root_path = (fs as *const u8).wrapping_add(offset(|l| &l.fs_struct_root));
    let root_mnt = path_mnt(root_path);
    let root_sb: u64 = read_kernel(root_mnt, offset(|l| &l.vfsmount_mnt_sb));
    let root_root: u64 = read_kernel(root_mnt, offset(|l| &l.vfsmount_mnt_root));
    if root_sb == sb as u64 && root_root == fs_root {
        return root_mnt;
    }
    let instance = offset(|l| &l.mount_mnt_instance);
    if instance == KernelLayout::ABSENT as usize {
        return core::ptr::null();
    }
    let head = (sb as u64).wrapping_add(offset(|l| &l.super_block_s_mounts) as u64);
    let ns = current_mnt_ns();
    let mount_mnt = offset(|l| &l.mount_mnt) as u64;
    // list_head.next is its first member.
    let mut node: u64 = read_kernel(head as *const u8, 0);
    for _ in 0..SB_MOUNTS_SEARCHED {
        if node == head || node == 0 {
            break;
        }
        let mount = node.wrapping_sub(instance as u64);
        let mnt = mount.wrapping_add(mount_mnt);
        let root: u64 = read_kernel(mnt as *const u8, offset(|l| &l.vfsmount_mnt_root));
        let mnt_ns: u64 = read_kernel(mount as *const u8, offset(|l| &l.mount_mnt_ns));
        if root == fs_root && ((mnt_ns == ns && ns != 0) || mnt_ns == MNT_NS_INTERNAL) {
            return mnt as *const u8;
        }
        node = read_kernel(node as *const u8, 0);
    }
    core::ptr::null()
}

/// How many mounts of one filesystem [`whole_mount_of`] looks at.
const SB_MOUNTS_SEARCHED: u32 = 16;

#[inline(always)]
fn d_path(path: *const c_void, s: &mut Scratch) -> bool {
    // SAFETY: `path` is a `struct path *` from the hook's arguments; the buffer is map memory
    // of exactly EVENT_PATH_MAX bytes.
    let len = unsafe {
        bpf_d_path(
            path as *mut _,
            s.event.path.as_mut_ptr().cast(),
            EVENT_PATH_MAX as u32,
        )
    };
    let Ok(len) = usize::try_from(len) else {
        return false;
    };
    // bpf_d_path counts the terminator.
    let path_len = len.saturating_sub(1) & (EVENT_PATH_MAX - 1);
    s.event.path_len = path_len as u32;
    if path_len >= EVENT_PATH_MAX - 1 {
        s.event.flags |= EVENT_FLAG_PATH_TRUNCATED;
    }
    true
}

/// Names the pseudo file `dentry` of an internal mount `mnt` as the kernel's `simple_dname`
/// does, `/NAME (deleted)`; fails for anything else on an internal mount (a path below a
/// private clone's root, such as an overlay layer's, is not a path anyone else sees).
/// Kept out of [`walk_path`]'s loop, where every branch multiplies the verifier's states.
#[inline(always)]
fn pseudo_name(mnt: *const u8, dentry: *const u8, s: &mut Scratch) -> bool {
    let root: u64 = read_kernel(mnt, offset(|l| &l.vfsmount_mnt_root));
    let parent: u64 = read_kernel(dentry, offset(|l| &l.dentry_d_parent));
    if dentry as u64 == root || dentry as u64 != parent {
        return false;
    }
    let d_name = dentry.wrapping_add(offset(|l| &l.dentry_d_name));
    // struct qstr { u32 hash; u32 len; ... } on little-endian; name follows.
    let len = read_kernel::<u32>(d_name, 4) as usize & 0xff;
    let name: u64 = read_kernel(d_name, offset(|l| &l.qstr_name));
    s.event.path[0] = b'/';
    // SAFETY: at most 255 bytes at offset 1, then 10 at offset at most 256: inside the event's
    // path buffer (EVENT_PATH_MAX bytes).
    unsafe {
        bpf_probe_read_kernel(
            s.event.path.as_mut_ptr().add(1).cast(),
            len as u32,
            name as *const c_void,
        );
        bpf_probe_read_kernel(
            s.event.path.as_mut_ptr().add((1 + len) & 0x1ff).cast(),
            DELETED.len() as u32,
            DELETED.as_ptr().cast(),
        );
    }
    s.event.path_len = (1 + len + DELETED.len()) as u32;
    true
}

/// What the kernel's `simple_dname` appends to the name of a pseudo file.
const DELETED: &[u8; 10] = b" (deleted)";

/// Deepest path the walk resolves, in components (mount crossings included).
const WALK_DEPTH: u32 = 64;

/// Builds the absolute path of `dentry` on mount `mnt` the way the kernel's `prepend_path`
/// does: names are prepended while walking `d_parent` up to the mount's root, then the walk
/// continues from the mountpoint in the parent mount, up to the root of the mount tree. Loop
/// state lives in scratch memory so the verifier can merge the branches of every iteration.
///
/// Fails (and the decision fails closed) wherever the result would not be the path the rest of
/// the system sees: a mount not attached in the task's namespace ([`mount_ns`]), a dentry
/// that is its own parent without being its mount's root (escaped from a bind mount, or
/// disconnected), a path deeper than [`WALK_DEPTH`] or longer than `WALK_LEN` (`prepend_path`
/// would name a suffix of it). The one dentry that is its own parent by design, the pseudo
/// file of an internal mount (`memfd`, System V shared memory), is named as the kernel names it
/// (`simple_dname`): `/NAME (deleted)`.
#[inline(always)]
pub fn walk_path(mnt: *const u8, dentry: *const u8, s: &mut Scratch) -> bool {
    const MASK: usize = WALK_LEN - 1;
    let d_name = offset(|l| &l.dentry_d_name);
    match mount_ns(mnt as u64) {
        MountNs::Foreign => return false,
        MountNs::Internal => return pseudo_name(mnt, dentry, s),
        MountNs::Here => {}
    }
    let mut dentry = dentry as u64;
    let mut mount = (mnt as u64).wrapping_sub(offset(|l| &l.mount_mnt) as u64);
    // SAFETY (volatile accesses): plain integers in scratch memory.
    unsafe {
        core::ptr::write_volatile(&raw mut s.walk_pos, WALK_LEN as u32);
        core::ptr::write_volatile(&raw mut s.walk_top_mnt, 0);
        core::ptr::write_volatile(&raw mut s.walk_top_dentry, 0);
    }
    let mut complete = false;
    for _ in 0..WALK_DEPTH {
        let mnt = mount.wrapping_add(offset(|l| &l.mount_mnt) as u64) as *const u8;
        let root: u64 = read_kernel(mnt, offset(|l| &l.vfsmount_mnt_root));
        let parent: u64 = read_kernel(dentry as *const u8, offset(|l| &l.dentry_d_parent));
        if dentry == 0 {
            break;
        }
        if dentry != root && dentry == parent {
            // Its own parent, yet not the mount's root: escaped or disconnected.
            break;
        }
        if dentry == root {
            let mount_parent: u64 =
                read_kernel(mount as *const u8, offset(|l| &l.mount_mnt_parent));
            if mount_parent == mount || mount_parent == 0 {
                complete = true;
                break;
            }
            dentry = read_kernel(mount as *const u8, offset(|l| &l.mount_mnt_mountpoint));
            mount = mount_parent;
            continue;
        }
        // struct qstr { u32 hash; u32 len; ... } on little-endian; name follows.
        let len = read_kernel::<u32>(dentry as *const u8, d_name + 4) as usize & 0xff;
        let name: u64 = read_kernel(dentry as *const u8, d_name + offset(|l| &l.qstr_name));
        // SAFETY: as above.
        let pos = unsafe { core::ptr::read_volatile(&raw const s.walk_pos) } as usize;
        if pos < len + 1 {
            // Longer than PATH_MAX: what fits is a suffix, not the path.
            break;
        }
        let start = pos - len - 1;
        // SAFETY: masked offset plus at most 255 bytes stays inside `walk` and its slack.
        unsafe {
            bpf_probe_read_kernel(
                s.walk.as_mut_ptr().add((start + 1) & MASK).cast(),
                len as u32,
                name as *const c_void,
            );
        }
        if let Some(sep) = s.walk.get_mut(start & MASK) {
            *sep = b'/';
        }
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&raw mut s.walk_pos, start as u32) };
        dentry = parent;
    }
    if !complete {
        return false;
    }
    // Where the walk ended: the root of the mount tree (see `jit_common::cache`, "Files an
    // agent creates", for who needs it).
    // SAFETY: as above.
    unsafe {
        core::ptr::write_volatile(
            &raw mut s.walk_top_mnt,
            mount.wrapping_add(offset(|l| &l.mount_mnt) as u64),
        );
        core::ptr::write_volatile(&raw mut s.walk_top_dentry, dentry);
    }
    // SAFETY: as above.
    let pos = unsafe { core::ptr::read_volatile(&raw const s.walk_pos) } as usize & MASK;
    let len = WALK_LEN - pos;
    if len == WALK_LEN {
        // Nothing prepended: the root itself.
        s.event.path[0] = b'/';
        s.event.path_len = 1;
        return true;
    }
    // SAFETY: both ranges lie inside scratch memory (masked offset, length at most WALK_LEN).
    unsafe {
        bpf_probe_read_kernel(
            s.event.path.as_mut_ptr().cast(),
            (len & MASK) as u32,
            s.walk.as_ptr().add(pos).cast(),
        );
    }
    s.event.path_len = (len & MASK) as u32;
    true
}
