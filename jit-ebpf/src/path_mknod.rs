//! Hook: `path_mknod` (LSM), op `create`.
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
    decide_on_entry(Op::Create, agent, ctx.arg(0), ctx.arg(1), true)
}
