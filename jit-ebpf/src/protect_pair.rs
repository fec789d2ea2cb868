//! Hooks: `path_rename` and `path_link` (LSM), self-protection of the two-path ops: no agent
//! may rename or link from or into a cgroup filesystem, bpffs, or a protected path.
//!
//! Programs of their own, next to the engine's `jit_path_rename` and `jit_path_link`: inlined
//! into those, the two extra lookups pushed `jit_path_rename` past the verifier's
//! 1M-instruction budget on 6.1 and 6.12. Both programs run on every rename and link; for an
//! int LSM hook the BPF trampoline stops at the first non-zero verdict, so whichever runs
//! first, a protected rename ends in `EPERM` (if the engine's runs first and holds, the
//! approved, restarted rename is refused here). They are attached after the engine's, and
//! newer links run first, so normally there is no hold at all.
//!
//! Paths are resolved by walking the dentry and mount trees, like the engine's (6.1 does not
//! allow `bpf_d_path` here). Scope: agent cgroups only. Minimum kernel: 5.19 (the `flags`
//! argument of `path_rename`); jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{
    engine::{Pair, protect_on_pair},
    scope::current_agent,
};

#[lsm(hook = "path_rename")]
pub fn jit_protect_path_rename(ctx: LsmContext) -> i32 {
    match try_protect_path_rename(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_protect_path_rename(ctx: &LsmContext) -> Result<i32, i32> {
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
    protect_on_pair(Op::Rename, agent, &Pair::of_rename(ctx))
}

#[lsm(hook = "path_link")]
pub fn jit_protect_path_link(ctx: LsmContext) -> i32 {
    match try_protect_path_link(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_protect_path_link(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, path_link, struct dentry *old_dentry, const struct path *new_dir,
    // struct dentry *new_dentry): the previous program's verdict follows the arguments.
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    protect_on_pair(Op::Link, agent, &Pair::of_link(ctx))
}
