//! jit's BPF LSM programs.
//!
//! One file per kernel hook; each hook is a thin `#[lsm]` wrapper around a `try_*` function.
//! Maps live in [`maps`], the agent-cgroup scope check in [`scope`]; the decision engine the
//! hooks share in [`engine`], with its parts: [`action`], [`kernel`] (kernel memory access),
//! [`resolve`] (paths), [`holds`] and [`report`] (events).
#![no_std]
#![no_main]
// `atomic_xadd` for the cache's invalidation counters: `core` has no atomic types for the BPF
// target, and a BPF atomic add is what those counters need (see `cache`).
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core_intrinsics, for atomic_xadd (see above)"
)]
#![expect(
    clippy::inline_always,
    reason = "hook bodies are inlined on purpose: BPF-to-BPF calls add verifier work on every hook"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "the #[lsm] macro hands each program its context by value"
)]

mod action;
mod bpf;
mod cache;
mod engine;
mod exec;
mod exec_bind;
mod file_open;
mod file_send_sigiotask;
mod file_truncate;
mod floor;
mod holds;
mod kernel;
mod kernel_load;
mod maps;
mod metadata;
mod mmap;
mod mount;
mod path_chmod;
mod path_chown;
mod path_link;
mod path_mkdir;
mod path_mknod;
mod path_rename;
mod path_rmdir;
mod path_symlink;
mod path_truncate;
mod path_unlink;
mod protect;
mod protect_pair;
mod provenance;
mod ptrace_access_check;
mod report;
mod resolve;
mod scope;
mod task_alloc;
mod task_kill;
mod task_resources;

/// `EPERM`: what a denied operation returns to the calling process.
const EPERM: i32 = 1;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic; this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
