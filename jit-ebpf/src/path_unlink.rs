//! Hook: `path_unlink` (LSM), op `unlink`.
//!
//! Runs before a name is removed (`unlink`, `unlinkat`). Answers bind to the inode being unlinked.
//!
//! The path is resolved by walking the entry's dentry and the mount tree; nothing has been
//! changed on disk when the hook runs, so a denial or hold has no side effect. The unlink of a
//! file the agent has just created may be allowed by the write-decision cache, from the seed
//! its create left (see `jit_common::cache`, "Files an agent creates").
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM, with `CONFIG_SECURITY_PATH`);
//! jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{engine::decide_on_entry, scope::current_agent};

#[lsm(hook = "path_unlink")]
pub fn jit_path_unlink(ctx: LsmContext) -> i32 {
    match try_path_unlink(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_path_unlink(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, path_unlink, const struct path *dir, struct dentry *dentry): the previous program's verdict follows the arguments.
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    decide_on_entry(Op::Unlink, agent, ctx.arg(0), ctx.arg(1), false)
}
