//! Hook: `bprm_check_security` (LSM), exec.
//!
//! Runs once per binary handler pass of an `execve`/`execveat`, after the file to execute has
//! been opened, before the old program image is torn down — so a denial leaves the calling process
//! intact and returns `EPERM` from `execve`.
//!
//! Matches: processes in an agent cgroup or a descendant of one; every other process returns 0
//! right after the scope check. Minimum kernel: 5.7 (BPF LSM); jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::{EPERM, scope::current_agent};

#[lsm(hook = "bprm_check_security")]
pub fn jit_exec(ctx: LsmContext) -> i32 {
    match try_exec(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_exec(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, bprm_check_security, struct linux_binprm *bprm): the previous program's
    // verdict follows the hook arguments. Never overrule an earlier denial.
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return Ok(retval);
    }
    if current_agent().is_none() {
        return Ok(0);
    }
    Err(-EPERM)
}
