//! Hook: `path_link` (LSM), op `link`: the existing file and the new name both checked.
//!
//! Runs before `link`/`linkat` creates a hard link. The op is evaluated for the existing file's
//! path and for the new name and the more severe decision applies, so a file the agent may not
//! link cannot be given a second, allowed name (through which writes would bypass its rules).
//! Hard links never cross mounts: both paths are resolved on the new directory's mount.
//! Answers bind to the linked inode.
//!
//! Paths are resolved by walking the dentry and mount trees (6.1 does not allow `bpf_d_path`
//! here). Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM, with
//! `CONFIG_SECURITY_PATH`); jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{
    engine::{Pair, decide_on_pair},
    scope::current_agent,
};

#[lsm(hook = "path_link")]
pub fn jit_path_link(ctx: LsmContext) -> i32 {
    match try_path_link(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_path_link(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, path_link, struct dentry *old_dentry, const struct path *new_dir,
    // struct dentry *new_dentry): the previous program's verdict follows the arguments.
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    decide_on_pair(Op::Link, agent, &Pair::of_link(ctx))
}
