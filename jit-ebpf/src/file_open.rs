//! Hook: `file_open` (LSM), op `write`: an open with write access.
//!
//! Runs in `do_dentry_open` once the file is resolved, before the open returns a descriptor and
//! before `O_TRUNC` truncates, so a denial or hold has no side effect. Opens without
//! `FMODE_WRITE` return at once. The path is the file really opened (symlinks, `/proc/self/fd`
//! and `openat` resolved). An `O_CREAT` that creates the file is decided before this, as
//! `create`, by `path_mknod`.
//!
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM); jit supports 6.1 and newer.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{
    engine::{Action, Where, decide, file_id_btf, load_btf, load_ptr, offset},
    scope::current_agent,
};

/// `fmode_t` bit of an open for writing.
const FMODE_WRITE: u32 = 0x2;

#[lsm(hook = "file_open")]
pub fn jit_file_open(ctx: LsmContext) -> i32 {
    match try_file_open(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_file_open(ctx: &LsmContext) -> Result<i32, i32> {
    // LSM_HOOK(int, 0, file_open, struct file *file)
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(agent) = current_agent() else {
        return Ok(0);
    };
    let file: *const u8 = ctx.arg(0);
    // SAFETY: `file` is the hook's BTF-typed argument; `f_mode` is a u32 (`fmode_t`).
    let mode: u32 = unsafe { load_btf(file, offset(|l| &l.file_f_mode)) };
    if mode & FMODE_WRITE == 0 {
        return Ok(0);
    }
    // SAFETY: `file` is the hook's BTF-typed argument; offsets come from the kernel's BTF.
    let (path, inode) = unsafe {
        (
            file.add(offset(|l| &l.file_f_path)),
            load_ptr(file, offset(|l| &l.file_f_inode)),
        )
    };
    decide(&Action {
        op: Op::Write,
        agent,
        path: Where::Path(path.cast()),
        second: None,
        // SAFETY: `inode` was loaded from the BTF-typed `file`.
        file: unsafe { file_id_btf(inode) },
        no_hold: false,
        flags: 0,
    })
}
