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
//! `bprm->filename`) is decided by the interpreter's own rules: a denial stands, and so does a
//! hold, enforced as a denial — one `execve` cannot be paused twice (its restart would decide
//! the script again), and a script must not run a held interpreter unreviewed.
//!
//! An approval of a held `execve` is bound to the arguments and environment the reviewer was
//! shown: the approved pass ties the binding to this `execve` (`EXEC_BIND`), and `exec_bind`
//! compares it with the kernel's copy of the strings once the new program's memory is in place.
//!
//! Every allowed pass records the file in `EXEC_IMAGE`, so the kernel's own executable mapping
//! of the new program is not decided a second time (see `mmap`).
//!
//! Scope: processes in an agent cgroup or a descendant; every other process returns 0 right
//! after the scope check. Minimum kernel: 5.7 (BPF LSM); jit supports 6.1 and newer.
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::lsm, programs::LsmContext};
use jit_common::{pending::FileId, policy::Op};

use crate::{
    action::{Action, Where},
    engine::decide,
    kernel::{file_id_btf, load_ptr, offset},
    maps::{EXEC_BIND, EXEC_IMAGE, bind_key},
    provenance::{exec_flags, write_stamp},
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
    let (path, inode, interpreter_pass, written_by) = unsafe {
        let file = load_ptr(bprm, offset(|l| &l.binprm_file));
        let filename = load_ptr(bprm, offset(|l| &l.binprm_filename));
        let interp = load_ptr(bprm, offset(|l| &l.binprm_interp));
        (
            file.add(offset(|l| &l.file_f_path)),
            load_ptr(file, offset(|l| &l.file_f_inode)),
            interp != filename,
            exec_flags(file, agent.agent_id),
        )
    };
    // SAFETY: `inode` was loaded from the BTF-typed `file`.
    let file = unsafe { file_id_btf(inode) };
    let process = (bpf_get_current_pid_tgid() >> 32) as u32;
    // An argument binding left by an earlier `execve` of this thread that failed after its
    // approval was spent is not this one's: an entry found after the decision below was made by
    // it (the interpreter pass keeps the one its script's pass made).
    // SAFETY: only checked for presence.
    let key = bind_key();
    if !interpreter_pass && unsafe { EXEC_BIND.get(key) }.is_some() {
        let _ = EXEC_BIND.remove(key);
    }
    let verdict = decide(&Action {
        op: Op::Exec,
        agent,
        path: Where::Path(path.cast()),
        second: None,
        second_file: FileId::ZERO,
        // An answer binds to the file as it was held: rewritten by an agent since, it is held
        // again (see `provenance::write_stamp`).
        file: FileId {
            name: write_stamp(inode),
            ..file
        },
        no_hold: interpreter_pass,
        // Who wrote the file: `written_by` rules decide by it (see `provenance`).
        flags: written_by,
    });
    if verdict == Ok(0) {
        // An approval spent here recorded its argument binding: tie it to this `execve`.
        if let Some(binding) = EXEC_BIND.get_ptr_mut(key) {
            // SAFETY: the map value, written in place.
            unsafe {
                if (*binding).bprm == 0 {
                    (*binding).bprm = bprm as u64;
                }
            }
        }
        // A full map drops its least recently used entry; the insert cannot fail for room.
        let _ = EXEC_IMAGE.insert(process, file, 0);
    }
    verdict
}
