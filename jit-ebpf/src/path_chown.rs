//! Hook: `path_chown` (LSM), op `chown`.
//!
//! Runs before the owner changes (`chown`, `fchown`, `lchown`, `fchownat`).
//!
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM, with `CONFIG_SECURITY_PATH`);
//! jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{engine::decide_on_path, scope::current_agent};

#[lsm(hook = "path_chown")]
pub fn jit_path_chown(ctx: LsmContext) -> i32 {
    match try_path_chown(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_path_chown(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, path_chown, const struct path *path, kuid_t uid, kgid_t gid): the previous program's verdict follows the arguments.
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    decide_on_path(Op::Chown, agent, ctx.arg(0))
}
