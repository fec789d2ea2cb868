//! Hooks: `mmap_file` and `file_mprotect` (LSM), op `exec` for executable mappings.
//!
//! Code does not need `execve` to run: the dynamic loader run as a program
//! (`ld-linux-x86-64.so.2 /path/prog`) maps `prog` itself, `LD_PRELOAD` and `dlopen` map
//! libraries, and any process can `mmap` (or `mprotect`) a file with `PROT_EXEC`, also through
//! `shmat(SHM_EXEC)`. So mapping a file executable is decided as `exec` of that file, by the same
//! rules, with its path resolved like every path (the checking walk; see `resolve::walk_path`).
//! An exec allowlist therefore has to cover the loader and the shared libraries its programs
//! map (README, "What jit decides"). Anonymous executable memory (JIT compilers) is no file and
//! is not decided.
//!
//! A hold is a real hold: the task is stopped inside `mmap`/`mprotect` (before the mapping lock
//! is taken, or after it was dropped) and the call restarts when it is continued. One exception:
//! inside `execve` the kernel maps the new program's ELF interpreter past the point of no
//! return, where nothing can be restarted; a hold there is enforced as a denial. The program
//! being executed was decided by `bprm_check_security` an instant before: the kernel's mapping
//! of that same file (recorded in `EXEC_IMAGE` by `exec`) is not decided again.
//!
//! Events carry `EVENT_FLAG_MAPPING`. Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM);
//! the signatures are the same on 6.1 and 6.12.
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::lsm, programs::LsmContext};
use jit_common::{AgentCgroup, event::EVENT_FLAG_MAPPING, policy::Op};

use crate::{
    engine::{decide_on_file, loading_new_program},
    kernel::{file_id, offset, read_kernel},
    maps::EXEC_IMAGE,
    provenance::exec_flags,
    scope::current_agent,
};

/// `PROT_EXEC` of `mmap`/`mprotect`.
const PROT_EXEC: u64 = 0x4;

#[lsm(hook = "mmap_file")]
pub fn jit_mmap_file(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, mmap_file, struct file *file, unsigned long reqprot, unsigned long prot,
    // unsigned long flags): `prot` is what the mapping gets (READ_IMPLIES_EXEC applied).
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    let Some(agent) = current_agent() else {
        return 0;
    };
    let file: *const u8 = ctx.arg(0);
    match decide_mapping(agent, file) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[lsm(hook = "file_mprotect")]
pub fn jit_file_mprotect(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, file_mprotect, struct vm_area_struct *vma, unsigned long reqprot,
    // unsigned long prot)
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    let Some(agent) = current_agent() else {
        return 0;
    };
    let vma: *const u8 = ctx.arg(0);
    let file: u64 = read_kernel(vma, offset(|l| &l.vm_area_struct_vm_file));
    match decide_mapping(agent, file as *const u8) {
        Ok(ret) | Err(ret) => ret,
    }
}

/// Decides the executable mapping of `file` (null: anonymous memory, not decided).
#[inline(always)]
fn decide_mapping(agent: AgentCgroup, file: *const u8) -> Result<i32, i32> {
    if file.is_null() {
        return Ok(0);
    }
    let in_exec = loading_new_program();
    if in_exec {
        let inode: u64 = read_kernel(file, offset(|l| &l.file_f_inode));
        let id = file_id(inode as *const u8);
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        // SAFETY: the value is copied out before any map update.
        if unsafe { EXEC_IMAGE.get(tgid) }.is_some_and(|image| *image == id) {
            return Ok(0);
        }
    }
    let flags = EVENT_FLAG_MAPPING | exec_flags(file, agent.agent_id);
    decide_on_file(Op::Exec, agent, file, in_exec, flags)
}
