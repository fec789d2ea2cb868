//! Hook: `bprm_check_security` (LSM), op `exec`.
//!
//! Runs for each binary handler pass of an `execve`/`execveat`, after the file to execute has
//! been opened and before the old program image is torn down, so a denial leaves the caller
//! intact and `execve` returns `EPERM`. Matches the file actually executed (`bprm->file`: symlinks
//! resolved, `/proc/self/fd/N` and `execveat` resolved to the real file).
//!
//! A `#!` script passes here twice in one `execve`: for the script, then for its interpreter
//! (`bprm->file` swapped). The script pass is the action that is decided and possibly held; the
//! interpreter pass (told apart by `bprm->interp`, which the script handler points away from
//! `bprm->filename`) is still evaluated, and a denial of the interpreter stands, but it is never
//! held a second time: one script exec is one action.
//!
//! Scope: processes in an agent cgroup or a descendant; every other process returns 0 right
//! after the scope check. Minimum kernel: 5.7 (BPF LSM); jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{
    engine::{Action, Where, decide, file_id_btf, load_ptr, offset},
    scope::current_agent,
};

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
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    let bprm: *const u8 = ctx.arg(0);
    // SAFETY: `bprm` is the hook's BTF-typed argument; offsets come from the kernel's BTF.
    let (path, inode, interpreter_pass) = unsafe {
        let file = load_ptr(bprm, offset(|l| &l.binprm_file));
        let filename = load_ptr(bprm, offset(|l| &l.binprm_filename));
        let interp = load_ptr(bprm, offset(|l| &l.binprm_interp));
        (
            file.add(offset(|l| &l.file_f_path)),
            load_ptr(file, offset(|l| &l.file_f_inode)),
            interp != filename,
        )
    };
    decide(&Action {
        op: Op::Exec,
        agent,
        path: Where::Path(path.cast()),
        second: None,
        // SAFETY: `inode` was loaded from the BTF-typed `file`.
        file: unsafe { file_id_btf(inode) },
        no_hold: interpreter_pass,
    })
}
