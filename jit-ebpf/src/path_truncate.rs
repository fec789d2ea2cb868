//! Hook: `path_truncate` (LSM), op `truncate`.
//!
//! Runs before `truncate(2)` changes the size (and, on 6.1, before an `O_TRUNC` open truncates). Kernels from 6.2 route `ftruncate` and `O_TRUNC` through `file_truncate` instead, which jit does not hook yet: there the `write` decision on the open still applies.
//!
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM, with `CONFIG_SECURITY_PATH`);
//! jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{
    engine::decide_on_path,
    kernel::{load_ptr, offset, opaque_eperm},
    provenance::mark_written,
    scope::current_agent,
};

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
    let path: *const u8 = ctx.arg(0);
    let verdict = decide_on_path(Op::Truncate, agent, path.cast());
    // A file the agent truncated has the agent's content now (a shortened script runs other
    // code): marked like a write (see `provenance`).
    if verdict == Ok(0) {
        // SAFETY: `path` is the hook's BTF-typed argument; `dentry` and `d_inode` are pointer
        // members, so the inode stays BTF-typed.
        let marked = unsafe {
            let dentry = load_ptr(path, offset(|l| &l.path_dentry));
            mark_written(
                load_ptr(dentry, offset(|l| &l.dentry_d_inode)),
                agent.agent_id,
            )
        };
        if !marked {
            return Err(opaque_eperm());
        }
    }
    verdict
}
