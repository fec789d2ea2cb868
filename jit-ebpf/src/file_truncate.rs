//! Hook: `file_truncate` (LSM, Linux 6.2+), op `truncate`.
//!
//! From 6.2 the kernel truncates an open file without `path_truncate`: `open` with `O_TRUNC`
//! (`handle_truncate`, also for `O_RDONLY|O_TRUNC`, which truncates without any write open
//! being decided) and `ftruncate` call `security_file_truncate` instead. Decided as `truncate`
//! of the file, so every road to an emptied file meets the same rules; on 6.1 both roads still
//! pass `path_truncate`, and this program is not attached (the kernel has no such hook).
//!
//! A hold restarts the `open` or `ftruncate` whole: the truncation happens after this hook,
//! and an `O_CREAT` open that created the file does not truncate it.
//!
//! Scope: agent cgroups only. Minimum kernel: 6.2.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use jit_common::policy::Op;

use crate::{engine::decide_on_file, scope::current_agent};

#[lsm(hook = "file_truncate")]
pub fn jit_file_truncate(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, file_truncate, struct file *file)
    let Some(agent) = current_agent() else {
        return 0;
    };
    match decide_on_file(Op::Truncate, agent, ctx.arg(0), false, 0) {
        Ok(ret) | Err(ret) => ret,
    }
}
