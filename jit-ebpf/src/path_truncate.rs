//! Hook: `path_truncate` (LSM), op `truncate`.
//!
//! Runs before `truncate(2)` changes the size (and, on 6.1, before an `O_TRUNC` open truncates). Kernels from 6.2 route `ftruncate` and `O_TRUNC` through `file_truncate` instead, which jit does not hook yet: there the `write` decision on the open still applies.
//!
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM, with `CONFIG_SECURITY_PATH`);
//! jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{engine::decide_on_path, scope::current_agent};

#[lsm(hook = "path_truncate")]
pub fn jit_path_truncate(ctx: LsmContext) -> i32 {
    match try_path_truncate(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_path_truncate(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, path_truncate, const struct path *path): the previous program's verdict follows the arguments.
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    decide_on_path(Op::Truncate, agent, ctx.arg(0))
}
