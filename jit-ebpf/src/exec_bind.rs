//! Hook: `bprm_committed_creds` (LSM, no verdict): an approved `execve` runs only with the
//! arguments and environment the reviewer was shown.
//!
//! A held `execve` is restarted once approved and copies its strings from the caller's memory
//! again; another thread could have changed them while the task was stopped. The approval
//! carries a binding (`jit_common::pending::ArgsBinding`, SipHash-2-4 digests of the strings the
//! daemon read and showed); `exec` ties it to the `execve` that spent the approval. Here, the
//! new program's memory is in place and the kernel's own copy of the strings is readable at
//! `bprm->p .. bprm->exec` in the current mm: it is hashed with the same secret key and
//! compared. This is the earliest point the kernel's copy can be read, and it is past the point
//! of no return, so a mismatch can neither be held again nor fail the `execve`: the process is
//! killed with `SIGKILL` before the new program runs a single instruction, and the kill is
//! reported (a `Decision` event with `EVENT_FLAG_ARGS_CHANGED`). What the kernel cannot read
//! fails closed the same way.
//!
//! Scope: processes in an agent cgroup or a descendant; every other process returns right after
//! the scope check. Inside, only a thread with an approved `execve` does more than a map lookup.
#![expect(
    clippy::cast_possible_truncation,
    reason = "word counts are bounded by MAX_WORDS"
)]
use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_probe_read_user, bpf_send_signal},
    macros::lsm,
    programs::LsmContext,
};
use jit_common::{
    Verdict,
    event::{EVENT_FLAG_ARGS_CHANGED, EventKind},
    pending::{ExecBinding, FileId},
    policy::{Decision, Op},
    siphash::Sip,
};

use crate::{
    action::{Action, Where},
    kernel::{file_id_btf, load_btf, load_ptr, offset},
    maps::{BIND_KEY, EXEC_BIND, bind_key},
    report::report,
    scope::current_agent,
};

const SIGKILL: u32 = 9;
/// Most 8-byte words `bpf_loop` runs over (its own limit is 1 << 23); the kernel's copy of an
/// `execve`'s strings is at most a quarter of the stack limit and never above 6 MiB.
const MAX_WORDS: u64 = 1 << 23;

#[lsm(hook = "bprm_committed_creds")]
pub fn jit_exec_committed(ctx: LsmContext) -> i32 {
    check(&ctx);
    0
}

#[inline(always)]
fn check(ctx: &LsmContext) {
    let Some(agent) = current_agent() else {
        return;
    };
    // By task: a non-leader thread that execs has the leader's thread id by now.
    let key = bind_key();
    // SAFETY: the value is copied out before the map update.
    let Some(binding) = (unsafe { EXEC_BIND.get(key) }).copied() else {
        return;
    };
    let _ = EXEC_BIND.remove(key);
    let bprm: *const u8 = ctx.arg(0);
    if binding.bprm != bprm as u64 {
        // Left by an earlier `execve` of this thread that failed after its approval was spent.
        return;
    }
    if matches_binding(bprm, &binding) {
        return;
    }
    // SAFETY: helper with a plain signal number. The task is past the point of no return and
    // single-threaded: the signal ends it before the new program runs.
    unsafe { bpf_send_signal(SIGKILL) };
    // SAFETY: `bprm` is the hook's BTF-typed argument; offsets come from the kernel's BTF.
    let (path, file) = unsafe {
        let file = load_ptr(bprm, offset(|l| &l.binprm_file));
        (
            file.add(offset(|l| &l.file_f_path)),
            file_id_btf(load_ptr(file, offset(|l| &l.file_f_inode))),
        )
    };
    report(
        EventKind::Decision,
        &Action {
            op: Op::Exec,
            agent,
            path: Where::Path(path.cast()),
            second: None,
            second_file: FileId::ZERO,
            file,
            no_hold: true,
            flags: EVENT_FLAG_ARGS_CHANGED,
        },
        &Verdict {
            decision: Decision::Hold,
            enforced: Decision::Deny,
            rule_id: binding.rule_id,
        },
        binding.request_id,
    );
}

/// Whether the kernel's copy of the strings hashes to what the approval was bound to.
#[inline(always)]
fn matches_binding(bprm: *const u8, binding: &ExecBinding) -> bool {
    let Some(key) = BIND_KEY.get(0).copied() else {
        return false;
    };
    if key == [0, 0] {
        return false;
    }
    // SAFETY: `bprm` is the hook's BTF-typed argument; offsets come from the kernel's BTF and
    // name members of these types.
    let (p, exec, filename, interp) = unsafe {
        (
            load_btf::<u64>(bprm, offset(|l| &l.binprm_p)),
            load_btf::<u64>(bprm, offset(|l| &l.binprm_exec)),
            load_ptr(bprm, offset(|l| &l.binprm_filename)),
            load_ptr(bprm, offset(|l| &l.binprm_interp)),
        )
    };
    let copied = exec.wrapping_sub(p);
    let args = binding.args;
    // A script or misc handler replaced argv[0] (it moved `interp`): compare from argv[1] on.
    let (start, len, want) = if interp == filename {
        if copied != u64::from(args.full_len) {
            return false;
        }
        (p, copied, args.full)
    } else {
        let len = u64::from(args.tail_len);
        if copied < len {
            return false;
        }
        (exec - len, len, args.tail)
    };
    digest(key, start, len) == Some(want)
}

/// State of one `bpf_loop` over the words of the copied strings (on the stack, as the helper
/// requires of its context).
#[repr(C)]
struct Hashing {
    sip: Sip,
    at: u64,
    failed: u64,
}

/// SipHash-2-4 of the `len` bytes of the current task's memory at `at`; `None` when any of it
/// cannot be read.
#[inline(always)]
fn digest(key: [u64; 2], at: u64, len: u64) -> Option<u64> {
    let words = len / 8;
    if words > MAX_WORDS {
        return None;
    }
    let mut state = Hashing {
        sip: Sip::new(key),
        at,
        failed: 0,
    };
    // SAFETY: `absorb` is a BPF callback of the helper's signature; the context is this stack
    // variable, alive for the whole call.
    let done = unsafe {
        bpf_loop(
            words as u32,
            absorb as *mut c_void,
            (&raw mut state).cast(),
            0,
        )
    };
    if u64::try_from(done).ok() != Some(words) || state.failed != 0 {
        return None;
    }
    let rest_len = (len & 7) as u32;
    let mut rest: u64 = 0;
    if rest_len != 0 {
        // SAFETY: reads at most 7 bytes into a local of 8.
        let read = unsafe {
            bpf_probe_read_user(
                (&raw mut rest).cast(),
                rest_len & 7,
                (at + words * 8) as *const c_void,
            )
        };
        if read != 0 {
            return None;
        }
    }
    Some(state.sip.finish(rest, len))
}

/// `bpf_loop` callback: absorbs word `index` of the strings; stops the loop when it cannot be
/// read.
#[inline(never)]
extern "C" fn absorb(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: the context `digest` passed, a `Hashing` on its stack.
    let state = unsafe { &mut *ctx.cast::<Hashing>() };
    let mut word: u64 = 0;
    // SAFETY: reads 8 bytes into a local of 8; the helper checks the source address.
    let read = unsafe {
        bpf_probe_read_user(
            (&raw mut word).cast(),
            8,
            (state.at + index * 8) as *const c_void,
        )
    };
    if read != 0 {
        state.failed = 1;
        return 1;
    }
    // Little-endian target: the word is the 8 bytes read as SipHash takes them.
    state.sip.word(word);
    0
}
