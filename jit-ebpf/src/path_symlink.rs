//! Hook: `path_symlink` (LSM), op `symlink`: the new link's own path.
//!
//! Runs before `symlink`/`symlinkat` creates the link. Only the link's path is evaluated: what
//! it points to is checked when something is opened or executed through it, on the resolved
//! path. Answers bind to the directory and the new name.
//!
//! The path is resolved by walking the dentry and mount trees (the entry does not exist yet).
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM, with `CONFIG_SECURITY_PATH`); jit
//! supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{engine::decide_on_entry, scope::current_agent};

#[lsm(hook = "path_symlink")]
pub fn jit_path_symlink(ctx: LsmContext) -> i32 {
    match try_path_symlink(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_path_symlink(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, path_symlink, const struct path *dir, struct dentry *dentry,
    // const char *old_name): the previous program's verdict follows the arguments.
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    decide_on_entry(Op::Symlink, agent, ctx.arg(0), ctx.arg(1), true)
}
