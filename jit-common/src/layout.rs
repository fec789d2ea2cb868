//! Offsets of the kernel struct members the eBPF programs read.
//!
//! Rust eBPF code has no CO-RE relocations, and these structs change layout between kernel
//! versions (`struct file` was reorganised in 6.12), so userspace reads the offsets from the
//! running kernel's BTF and writes them into the programs' read-only `JIT_LAYOUT` global
//! before loading. The verifier sees them as constants.

/// Name of the read-only global in `jit-ebpf` holding a [`KernelLayout`].
pub const LAYOUT_GLOBAL: &str = "JIT_LAYOUT";

/// Byte offsets of struct members, as found in the kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// `struct linux_binprm`, member `file` (the file being executed).
    pub binprm_file: u32,
    /// `struct file`, member `f_path`.
    pub file_f_path: u32,
    /// `struct file`, member `f_inode`.
    pub file_f_inode: u32,
    /// `struct inode`, member `i_ino`.
    pub inode_i_ino: u32,
    /// `struct inode`, member `i_sb`.
    pub inode_i_sb: u32,
    /// `struct super_block`, member `s_dev`.
    pub super_block_s_dev: u32,
    /// `struct task_struct`, member `real_parent`.
    pub task_real_parent: u32,
    /// `struct task_struct`, member `tgid`.
    pub task_tgid: u32,
    /// `struct dentry`, member `d_name`.
    pub dentry_d_name: u32,
    /// `struct qstr`, member `name`.
    pub qstr_name: u32,
    /// `struct linux_binprm`, member `filename` (the name passed to execve).
    pub binprm_filename: u32,
    /// `struct linux_binprm`, member `interp`: equal to `filename` until a script or misc
    /// handler names an interpreter, which tells the interpreter pass of a `#!` exec apart.
    pub binprm_interp: u32,
    /// `struct task_struct`, member `flags` (`PF_KTHREAD`, `PF_IO_WORKER`).
    pub task_flags: u32,
    /// `struct file`, member `f_mode` (`FMODE_WRITE`).
    pub file_f_mode: u32,
    /// `struct path`, member `dentry`.
    pub path_dentry: u32,
    /// `struct dentry`, member `d_inode`.
    pub dentry_d_inode: u32,
    /// `struct dentry`, member `d_parent`.
    pub dentry_d_parent: u32,
    /// `struct path`, member `mnt`.
    pub path_mnt: u32,
    /// `struct vfsmount`, member `mnt_root`.
    pub vfsmount_mnt_root: u32,
    /// `struct mount`, member `mnt` (the embedded `struct vfsmount`).
    pub mount_mnt: u32,
    /// `struct mount`, member `mnt_parent`.
    pub mount_mnt_parent: u32,
    /// `struct mount`, member `mnt_mountpoint`.
    pub mount_mnt_mountpoint: u32,
    /// `struct vfsmount`, member `mnt_sb` (the mounted filesystem's superblock).
    pub vfsmount_mnt_sb: u32,
    /// `struct super_block`, member `s_magic` (which filesystem: cgroup2, bpffs, ...).
    pub super_block_s_magic: u32,
    /// `struct task_struct`, member `io_uring` (set once the task used `io_uring`), or
    /// [`KernelLayout::ABSENT`] on a kernel built without `io_uring`.
    pub task_io_uring: u32,
    /// `struct dentry`, member `d_hash` (its `pprev` is null once the dentry is unhashed:
    /// deleted, or dropped from the dcache).
    pub dentry_d_hash: u32,
    /// `struct task_struct`, member `fs` (root and working directory).
    pub task_fs: u32,
    /// `struct fs_struct`, member `root` (a `struct path`: the task's root directory).
    pub fs_struct_root: u32,
    /// `struct mount`, member `mnt_ns`: the mount namespace it is attached in (an anonymous one for
    /// a detached tree, null once unmounted).
    pub mount_mnt_ns: u32,
    /// `struct task_struct`, member `nsproxy`.
    pub task_nsproxy: u32,
    /// `struct nsproxy`, member `mnt_ns`: the task's mount namespace.
    pub nsproxy_mnt_ns: u32,
    /// `struct super_block`, member `s_root`: the filesystem's root dentry.
    pub super_block_s_root: u32,
    /// `struct super_block`, member `s_mounts`: the list of the filesystem's mounts.
    pub super_block_s_mounts: u32,
    /// `struct mount`, member `mnt_instance`: its node in `s_mounts`, or
    /// [`KernelLayout::ABSENT`] on kernels that track a superblock's mounts otherwise (newer
    /// than 6.12): the programs then only use the task's root mount.
    pub mount_mnt_instance: u32,
    /// `struct task_struct`, member `mm`.
    pub task_mm: u32,
    /// `struct mm_struct`, member `start_code`: 0 in a new program's memory until `execve` has
    /// mapped the program and its ELF interpreter.
    pub mm_struct_start_code: u32,
    /// `struct vm_area_struct`, member `vm_file`: the mapped file, null for anonymous memory.
    pub vm_area_struct_vm_file: u32,
    /// `struct task_struct`, member `cgroups` (its `css_set`).
    pub task_cgroups: u32,
    /// `struct css_set`, member `dfl_cgrp`: the task's cgroup v2 cgroup.
    pub css_set_dfl_cgrp: u32,
    /// `struct cgroup`, member `kn` (its kernfs node, whose id is the cgroup id).
    pub cgroup_kn: u32,
    /// `struct kernfs_node`, member `id`.
    pub kernfs_node_id: u32,
    /// `struct cgroup`, member `self` (its own `cgroup_subsys_state`).
    pub cgroup_self: u32,
    /// `struct cgroup_subsys_state`, member `parent` (the parent cgroup's `self`).
    pub css_parent: u32,
    /// `struct iattr`, member `ia_valid` (`ATTR_*` bits of what `notify_change` changes).
    pub iattr_ia_valid: u32,
    /// `struct proc_inode`, member `vfs_inode` (a procfs inode is embedded in one).
    pub proc_inode_vfs_inode: u32,
    /// `struct proc_inode`, member `pid`: the process a `/proc/PID/` entry is about (null elsewhere).
    pub proc_inode_pid: u32,
    /// `struct pid`, member `tasks` (the first list head is `PIDTYPE_PID`'s).
    pub pid_tasks: u32,
    /// `struct task_struct`, member `pid_links` (the first node is `PIDTYPE_PID`'s).
    pub task_pid_links: u32,
    /// `struct task_struct`, member `cred` (the credentials in effect, which the kernel overrides
    /// while it acts on its own account, e.g. overlayfs copying up under the mounter's).
    pub task_cred: u32,
    /// `struct task_struct`, member `real_cred`.
    pub task_real_cred: u32,
    /// `struct task_struct`, member `start_time` (monotonic nanoseconds at fork, the clock of
    /// `bpf_ktime_get_ns` and so of request ids).
    pub task_start_time: u32,
    /// `struct linux_binprm`, member `p`: the lowest byte of the argument and environment
    /// strings the kernel copied onto the new program's stack (an address in the new mm).
    pub binprm_p: u32,
    /// `struct linux_binprm`, member `exec`: where the copied file name starts, just above the
    /// environment strings.
    pub binprm_exec: u32,
    /// `struct cred`, member `fsuid`: the uid file access is checked as, which `user`
    /// conditions decide file ops by.
    pub cred_fsuid: u32,
    /// `struct cred`, member `fsgid`: the gid file access is checked as.
    pub cred_fsgid: u32,
    /// `struct cred`, member `euid`: the uid a program runs as, which `user` conditions decide
    /// `exec` by.
    pub cred_euid: u32,
    /// `struct cred`, member `egid`.
    pub cred_egid: u32,
    /// `struct inode`, member `i_generation` (a file's generation number: a new inode that
    /// reuses an inode number gets another one), kept in provenance marks.
    pub inode_i_generation: u32,
    /// `struct inode`, member `i_nlink` (in an anonymous union with `__i_nlink`): 0 once the
    /// file's last link is gone.
    pub inode_i_nlink: u32,
    /// `struct inode`, member `i_mode` (`umode_t`, a u16: type and permission bits).
    pub inode_i_mode: u32,
}

impl KernelLayout {
    /// All offsets zero: the value compiled into the object, always overridden before load.
    pub const UNSET: Self = Self {
        binprm_file: 0,
        file_f_path: 0,
        file_f_inode: 0,
        inode_i_ino: 0,
        inode_i_sb: 0,
        super_block_s_dev: 0,
        task_real_parent: 0,
        task_tgid: 0,
        dentry_d_name: 0,
        qstr_name: 0,
        binprm_filename: 0,
        binprm_interp: 0,
        task_flags: 0,
        file_f_mode: 0,
        path_dentry: 0,
        dentry_d_inode: 0,
        dentry_d_parent: 0,
        path_mnt: 0,
        vfsmount_mnt_root: 0,
        mount_mnt: 0,
        mount_mnt_parent: 0,
        mount_mnt_mountpoint: 0,
        vfsmount_mnt_sb: 0,
        super_block_s_magic: 0,
        task_io_uring: 0,
        dentry_d_hash: 0,
        task_fs: 0,
        fs_struct_root: 0,
        mount_mnt_ns: 0,
        task_nsproxy: 0,
        nsproxy_mnt_ns: 0,
        super_block_s_root: 0,
        super_block_s_mounts: 0,
        mount_mnt_instance: 0,
        task_mm: 0,
        mm_struct_start_code: 0,
        vm_area_struct_vm_file: 0,
        task_cgroups: 0,
        css_set_dfl_cgrp: 0,
        cgroup_kn: 0,
        kernfs_node_id: 0,
        cgroup_self: 0,
        css_parent: 0,
        iattr_ia_valid: 0,
        proc_inode_vfs_inode: 0,
        proc_inode_pid: 0,
        pid_tasks: 0,
        task_pid_links: 0,
        task_cred: 0,
        task_real_cred: 0,
        task_start_time: 0,
        binprm_p: 0,
        binprm_exec: 0,
        cred_fsuid: 0,
        cred_fsgid: 0,
        cred_euid: 0,
        cred_egid: 0,
        inode_i_generation: 0,
        inode_i_nlink: 0,
        inode_i_mode: 0,
    };

    /// The offset of an optional member this kernel does not have.
    pub const ABSENT: u32 = u32::MAX;

    /// Members that may be missing ([`KernelLayout::ABSENT`]): the programs then skip what
    /// needs them.
    pub const OPTIONAL: [(&'static str, &'static str); 2] =
        [("task_struct", "io_uring"), ("mount", "mnt_instance")];

    /// `(struct, member)` for every field, in field order: what userspace looks up in BTF.
    pub const MEMBERS: [(&'static str, &'static str); 60] = [
        ("linux_binprm", "file"),
        ("file", "f_path"),
        ("file", "f_inode"),
        ("inode", "i_ino"),
        ("inode", "i_sb"),
        ("super_block", "s_dev"),
        ("task_struct", "real_parent"),
        ("task_struct", "tgid"),
        ("dentry", "d_name"),
        ("qstr", "name"),
        ("linux_binprm", "filename"),
        ("linux_binprm", "interp"),
        ("task_struct", "flags"),
        ("file", "f_mode"),
        ("path", "dentry"),
        ("dentry", "d_inode"),
        ("dentry", "d_parent"),
        ("path", "mnt"),
        ("vfsmount", "mnt_root"),
        ("mount", "mnt"),
        ("mount", "mnt_parent"),
        ("mount", "mnt_mountpoint"),
        ("vfsmount", "mnt_sb"),
        ("super_block", "s_magic"),
        ("task_struct", "io_uring"),
        ("dentry", "d_hash"),
        ("task_struct", "fs"),
        ("fs_struct", "root"),
        ("mount", "mnt_ns"),
        ("task_struct", "nsproxy"),
        ("nsproxy", "mnt_ns"),
        ("super_block", "s_root"),
        ("super_block", "s_mounts"),
        ("mount", "mnt_instance"),
        ("task_struct", "mm"),
        ("mm_struct", "start_code"),
        ("vm_area_struct", "vm_file"),
        ("task_struct", "cgroups"),
        ("css_set", "dfl_cgrp"),
        ("cgroup", "kn"),
        ("kernfs_node", "id"),
        ("cgroup", "self"),
        ("cgroup_subsys_state", "parent"),
        ("iattr", "ia_valid"),
        ("proc_inode", "vfs_inode"),
        ("proc_inode", "pid"),
        ("pid", "tasks"),
        ("task_struct", "pid_links"),
        ("task_struct", "cred"),
        ("task_struct", "real_cred"),
        ("task_struct", "start_time"),
        ("linux_binprm", "p"),
        ("linux_binprm", "exec"),
        ("cred", "fsuid"),
        ("cred", "fsgid"),
        ("cred", "euid"),
        ("cred", "egid"),
        ("inode", "i_generation"),
        ("inode", "i_nlink"),
        ("inode", "i_mode"),
    ];

    /// Builds the layout from offsets given in [`Self::MEMBERS`] order.
    #[must_use]
    pub const fn from_offsets(o: [u32; 60]) -> Self {
        Self {
            binprm_file: o[0],
            file_f_path: o[1],
            file_f_inode: o[2],
            inode_i_ino: o[3],
            inode_i_sb: o[4],
            super_block_s_dev: o[5],
            task_real_parent: o[6],
            task_tgid: o[7],
            dentry_d_name: o[8],
            qstr_name: o[9],
            binprm_filename: o[10],
            binprm_interp: o[11],
            task_flags: o[12],
            file_f_mode: o[13],
            path_dentry: o[14],
            dentry_d_inode: o[15],
            dentry_d_parent: o[16],
            path_mnt: o[17],
            vfsmount_mnt_root: o[18],
            mount_mnt: o[19],
            mount_mnt_parent: o[20],
            mount_mnt_mountpoint: o[21],
            vfsmount_mnt_sb: o[22],
            super_block_s_magic: o[23],
            task_io_uring: o[24],
            dentry_d_hash: o[25],
            task_fs: o[26],
            fs_struct_root: o[27],
            mount_mnt_ns: o[28],
            task_nsproxy: o[29],
            nsproxy_mnt_ns: o[30],
            super_block_s_root: o[31],
            super_block_s_mounts: o[32],
            mount_mnt_instance: o[33],
            task_mm: o[34],
            mm_struct_start_code: o[35],
            vm_area_struct_vm_file: o[36],
            task_cgroups: o[37],
            css_set_dfl_cgrp: o[38],
            cgroup_kn: o[39],
            kernfs_node_id: o[40],
            cgroup_self: o[41],
            css_parent: o[42],
            iattr_ia_valid: o[43],
            proc_inode_vfs_inode: o[44],
            proc_inode_pid: o[45],
            pid_tasks: o[46],
            task_pid_links: o[47],
            task_cred: o[48],
            task_real_cred: o[49],
            task_start_time: o[50],
            binprm_p: o[51],
            binprm_exec: o[52],
            cred_fsuid: o[53],
            cred_fsgid: o[54],
            cred_euid: o[55],
            cred_egid: o[56],
            inode_i_generation: o[57],
            inode_i_nlink: o[58],
            inode_i_mode: o[59],
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, only `u32` fields, no padding.
unsafe impl aya::Pod for KernelLayout {}
