//! Hook: `path_mknod` (LSM), op `create`, and op `device` for character and block devices.
//!
//! A device node is not a file: writing `/srv/work/disk` made with `mknod ... b 8 0` writes
//! the host's first disk, whatever the rules say about `/dev/`. So a node of type `S_IFCHR`
//! or `S_IFBLK` is decided as op `device` (by the node's path), everything else (regular files,
//! FIFOs, sockets) as `create`.
//!
//! Runs before a new file is created: for `open(O_CREAT)` of a name that does not exist yet
//! (`may_o_create` calls it before the inode exists) and for `mknod`. Holding here rather than
//! at `file_open` keeps an `O_CREAT|O_EXCL` open restartable: the file does not exist while the
//! task is stopped, so the restarted open cannot fail with `EEXIST`. Answers bind to the parent
//! directory and the new name.
//!
//! The path is resolved by walking the new entry's dentry and the mount tree: the entry does
//! not exist yet, and this hook may not call `bpf_d_path`.
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM, with `CONFIG_SECURITY_PATH`);
//! jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{engine::decide_on_entry, scope::current_agent};

#[lsm(hook = "path_mknod")]
pub fn jit_path_mknod(ctx: LsmContext) -> i32 {
    match try_path_mknod(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_path_mknod(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode,
    // unsigned int dev): the previous program's verdict follows the arguments.
    let retval: i32 = ctx.arg(4);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    let mode: u16 = ctx.arg(2);
    let op = match mode & S_IFMT {
        S_IFCHR | S_IFBLK => Op::Device,
        _ => Op::Create,
    };
    decide_on_entry(op, agent, ctx.arg(0), ctx.arg(1), true)
}

/// File type bits of a `umode_t` and the two device types.
const S_IFMT: u16 = 0o170_000;
const S_IFCHR: u16 = 0o020_000;
const S_IFBLK: u16 = 0o060_000;
