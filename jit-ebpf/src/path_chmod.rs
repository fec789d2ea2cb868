//! Hook: `path_chmod` (LSM), op `chmod`.
//!
//! Runs before the mode changes (`chmod`, `fchmod`, `fchmodat`).
//!
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM, with `CONFIG_SECURITY_PATH`);
//! jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{engine::decide_on_path, scope::current_agent};

#[lsm(hook = "path_chmod")]
pub fn jit_path_chmod(ctx: LsmContext) -> i32 {
    match try_path_chmod(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_path_chmod(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, path_chmod, const struct path *path, umode_t mode): the previous program's verdict follows the arguments.
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    decide_on_path(Op::Chmod, agent, ctx.arg(0))
}
