//! Hooks: `kernel_read_file` and `kernel_load_data` (LSM), self-protection: no agent loads
//! code into the kernel.
//!
//! `init_module` and `kexec_load` pass their image as a buffer (`kernel_load_data`);
//! `finit_module` and `kexec_file_load` as a file (`kernel_read_file`), as do firmware, IMA
//! policy and certificate loads. A kernel module or a kexec'd kernel is beyond every hook jit
//! has, so every id is refused with `EPERM` for agents, before the kernel reads anything, and
//! reported as a self-protection denial of op `kernel` with the kernel's id of what was loaded.
//! (Modules the kernel loads by itself on demand, `request_module`, run `modprobe` outside the
//! agent from the host's module directory; see docs/threat-model.md.)
//!
//! Scope: agent cgroups only. Minimum kernel: 5.7 (BPF LSM); the signatures
//! `kernel_read_file(struct file *file, enum kernel_read_file_id id, bool contents)` and
//! `kernel_load_data(enum kernel_load_data_id id, bool contents)` are the same on 6.1 and 6.12.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::protect::event_op;

use crate::{protect::deny, scope::current_agent};

#[lsm(hook = "kernel_read_file")]
pub fn jit_kernel_read_file(ctx: LsmContext) -> i32 {
    let Some(agent) = current_agent() else {
        return 0;
    };
    let id: u32 = ctx.arg(1);
    deny(event_op::KERNEL, agent, 0, u64::from(id))
}

#[lsm(hook = "kernel_load_data")]
pub fn jit_kernel_load_data(ctx: LsmContext) -> i32 {
    let Some(agent) = current_agent() else {
        return 0;
    };
    let id: u32 = ctx.arg(0);
    deny(event_op::KERNEL, agent, 0, u64::from(id))
}
