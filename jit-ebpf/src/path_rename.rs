//! Hook: `path_rename` (LSM), op `rename`: source and target both checked.
//!
//! Runs before `rename`, `renameat` and `renameat2` (including `RENAME_EXCHANGE`) change
//! anything. The op is evaluated for the source path and for the target path and the more
//! severe decision applies: a denied file cannot be renamed into an allowed directory, and an
//! allowed file cannot be renamed over a denied name. Answers bind to the source inode.
//!
//! Paths are resolved by walking the dentry and mount trees (6.1 does not allow `bpf_d_path`
//! here). Scope: agent cgroups only. Minimum kernel: 5.19 (the `flags` argument); jit supports
//! 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{
    engine::{Pair, decide_on_pair},
    scope::current_agent,
};

#[lsm(hook = "path_rename")]
pub fn jit_path_rename(ctx: LsmContext) -> i32 {
    match try_path_rename(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_path_rename(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, path_rename, const struct path *old_dir, struct dentry *old_dentry,
    // const struct path *new_dir, struct dentry *new_dentry, unsigned int flags): the previous
    // program's verdict follows the arguments.
    let retval: i32 = ctx.arg(5);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    decide_on_pair(Op::Rename, agent, &Pair::of_rename(ctx))
}
