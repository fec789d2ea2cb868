//! What a reviewer (and the audit trail) needs to know about the process behind an event,
//! read from procfs.
//!
//! Every field is read on its own and becomes `None` when unreadable: a process may exit between
//! the event and the read, and some files (`exe`, `cwd`) need ptrace-read access. A partial
//! context is still worth recording; a failed read must never cost the record.

use std::path::Path;

use jit_common::pending::ArgsBinding;
use nix::unistd::{Uid, User};
use procfs::process::Process;
use serde::{Deserialize, Serialize};

/// Longest parent chain recorded. Bounds the work per event; real trees are shallower.
pub const MAX_PARENTS: usize = 16;

/// Bytes of `argv` kept (sum of the argument lengths). Keeps one record bounded even for a
/// command line near `ARG_MAX`; `argv_truncated` says when arguments were dropped or cut.
pub const MAX_ARGV_BYTES: usize = 32 * 1024;

/// A process as procfs showed it when the event was handled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessContext {
    /// The process read.
    pub pid: u32,
    /// `/proc/PID/exe` (may end in ` (deleted)`).
    pub exe: Option<String>,
    /// `/proc/PID/cmdline`; `None` for zombies, kernel threads' empty lines are `Some([])`.
    pub argv: Option<Vec<String>>,
    /// Arguments were dropped or cut to stay within [`MAX_ARGV_BYTES`].
    #[serde(default)]
    pub argv_truncated: bool,
    /// For a held `exec`: the argument list the process passed to `execve`/`execveat`, that is
    /// the command that runs if the hold is approved (`argv` still shows the program that
    /// called exec). Read from the stopped task's memory; `None` for other events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_argv: Option<Vec<String>>,
    /// For a held `exec`: the environment it passes, as [`shown_env`] shows it. `None` for
    /// other events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_env: Option<Vec<String>>,
    /// For a held `execve`: what an approval is bound to (see [`crate::bind`]). Not recorded:
    /// a restarted daemon reads it again from the still-stopped task.
    #[serde(skip)]
    pub exec_binding: Option<ArgsBinding>,
    /// For a held `exec`: the whole argument list and environment as passed (not bounded, no
    /// value hidden), for the daemon-side conditions of rules (policies/README.md,
    /// "Conditions"). Never recorded or shown.
    #[serde(skip)]
    pub exec_strings: Option<(Vec<String>, Vec<String>)>,
    /// `/proc/PID/cwd`.
    pub cwd: Option<String>,
    /// Real uid (`/proc/PID/status`).
    pub uid: Option<u32>,
    /// Name of `uid` from the user database.
    pub user: Option<String>,
    /// Ancestors, nearest first, up to and including pid 1, at most [`MAX_PARENTS`].
    pub parents: Vec<ParentProcess>,
}

/// One ancestor of the process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentProcess {
    pub pid: u32,
    /// `comm` from `/proc/PID/stat` (at most 15 bytes, set by the process itself).
    pub comm: Option<String>,
    /// `/proc/PID/exe`.
    pub exe: Option<String>,
}

fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn bounded_argv(args: Vec<String>) -> (Vec<String>, bool) {
    let mut used = 0;
    let mut out = Vec::with_capacity(args.len());
    for mut arg in args {
        let room = MAX_ARGV_BYTES - used;
        if arg.len() > room {
            let mut cut = room;
            while !arg.is_char_boundary(cut) {
                cut -= 1;
            }
            arg.truncate(cut);
            out.push(arg);
            return (out, true);
        }
        used += arg.len();
        out.push(arg);
    }
    (out, false)
}

impl ProcessContext {
    /// Reads what procfs shows about `pid`. Never fails: what cannot be read is `None` (all of
    /// it, and no parents, when the process is gone).
    #[must_use]
    pub fn read(pid: u32) -> Self {
        let mut ctx = Self {
            pid,
            ..Self::default()
        };
        let Ok(raw_pid) = i32::try_from(pid) else {
            return ctx;
        };
        let Ok(process) = Process::new(raw_pid) else {
            return ctx;
        };
        ctx.exe = process.exe().ok().map(|p| lossy(&p));
        if let Ok(args) = process.cmdline() {
            let (argv, truncated) = bounded_argv(args);
            ctx.argv = Some(argv);
            ctx.argv_truncated = truncated;
        }
        ctx.cwd = process.cwd().ok().map(|p| lossy(&p));
        ctx.uid = process
            .status()
            .ok()
            .map(|s| s.ruid)
            .or_else(|| process.uid().ok());
        ctx.user = ctx.uid.and_then(|uid| {
            User::from_uid(Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
        });
        let mut next = process.stat().ok().map(|s| s.ppid);
        while let Some(p) = next.filter(|&p| p > 0) {
            if ctx.parents.len() == MAX_PARENTS {
                break;
            }
            let parent = Process::new(p).ok();
            let stat = parent.as_ref().and_then(|pr| pr.stat().ok());
            ctx.parents.push(ParentProcess {
                pid: p.unsigned_abs(),
                comm: stat.as_ref().map(|s| s.comm.clone()),
                exe: parent.and_then(|pr| pr.exe().ok()).map(|e| lossy(&e)),
            });
            if p == 1 {
                break;
            }
            next = stat.map(|s| s.ppid);
        }
        ctx
    }

    /// [`ProcessContext::read`] for a held task (thread `tid`); for a held exec also the
    /// command it is about to run ([`ProcessContext::exec_argv`], `exec_env`, `exec_binding`).
    #[must_use]
    pub fn read_held(pid: u32, tid: u32, exec: bool) -> Self {
        let mut ctx = Self::read(pid);
        if exec && let Some(args) = exec_args_once_stopped(pid, tid) {
            ctx.exec_argv = Some(args.argv);
            ctx.exec_env = Some(args.env);
            ctx.argv_truncated |= args.truncated;
            ctx.exec_binding = args.binding;
            ctx.exec_strings = Some((args.all_argv, args.all_env));
        }
        ctx
    }
}

/// Most strings read from a held exec's argument or environment vector (the kernel's own limit
/// is far higher, but a vector this long is not reviewable anyway: no binding, see below).
const MAX_EXEC_STRINGS: u64 = 65_536;
/// Most bytes of strings read from a held exec (the kernel copies at most 6 MiB).
const MAX_EXEC_BYTES: usize = 6 << 20;

/// The strings a held `execve` passes, as read from the stopped task's memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecArgs {
    /// `argv`, bounded like [`ProcessContext::argv`] for display.
    pub argv: Vec<String>,
    /// The environment, bounded for display, with the values of variables whose names look
    /// like secrets (see [`shown_env`]) replaced by their length.
    pub env: Vec<String>,
    /// Strings were dropped or cut for display (the binding still covers all of them).
    pub truncated: bool,
    /// What an approval binds to (`None` when the binding key is not known yet).
    pub binding: Option<ArgsBinding>,
    /// Every argument, whole (lossy UTF-8).
    pub all_argv: Vec<String>,
    /// Every environment string, whole, no value hidden (lossy UTF-8).
    pub all_env: Vec<String>,
}

/// The argument list and environment thread `tid` of process `pid` passed to the `execve` or
/// `execveat` it is stopped in (a held exec), read through `/proc/PID/task/TID/syscall` and
/// `/proc/PID/mem`. `None` when the thread is not in one of those syscalls (a held executable
/// mapping, or not stopped), or its memory cannot be read whole: an approval of an `execve`
/// without a binding is then enforced as a denial by the kernel.
#[must_use]
pub fn exec_args(pid: u32, tid: u32) -> Option<ExecArgs> {
    use std::os::unix::fs::FileExt as _;

    // "NR arg0 arg1 ... sp pc" while the thread is blocked in a syscall (else "running" or -1).
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let mut fields = syscall.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    let args: Vec<u64> = fields
        .take(6)
        .map(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let (argv_at, env_at) = if nr == libc::SYS_execve {
        (*args.get(1)?, *args.get(2)?)
    } else if nr == libc::SYS_execveat {
        (*args.get(2)?, *args.get(3)?)
    } else {
        return None;
    };
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let read_u64 = |at: u64| {
        let mut buf = [0; 8];
        mem.read_exact_at(&mut buf, at)
            .ok()
            .map(|()| u64::from_ne_bytes(buf))
    };
    let mut total = 0usize;
    let mut read_str = |at: u64| {
        // Reads in small chunks up to the NUL: a string may end just before unmapped memory.
        let mut out = Vec::new();
        let mut chunk = [0; 256];
        loop {
            let n = mem.read_at(&mut chunk, at + out.len() as u64).ok()?;
            if n == 0 {
                return None;
            }
            let part = chunk.get(..n)?;
            if let Some(end) = part.iter().position(|&b| b == 0) {
                out.extend_from_slice(part.get(..end)?);
                total += out.len() + 1;
                return (total <= MAX_EXEC_BYTES).then_some(out);
            }
            out.extend_from_slice(part);
            if total + out.len() > MAX_EXEC_BYTES {
                return None;
            }
        }
    };
    // Like the kernel: a null vector is empty, and the vector ends at its first null pointer.
    let mut vector = |at: u64| -> Option<Vec<Vec<u8>>> {
        let mut strings = Vec::new();
        if at != 0 {
            for i in 0..=MAX_EXEC_STRINGS {
                let ptr = read_u64(at + i * 8)?;
                if ptr == 0 {
                    return Some(strings);
                }
                if i == MAX_EXEC_STRINGS {
                    return None;
                }
                strings.push(read_str(ptr)?);
            }
        }
        Some(strings)
    };
    let arguments = vector(argv_at)?;
    let environment = vector(env_at)?;
    let binding = crate::bind::exec_binding(&arguments, &environment);
    let lossy = |v: &[Vec<u8>]| -> Vec<String> {
        v.iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    let all_argv = lossy(&arguments);
    let all_env = lossy(&environment);
    let (argv_shown, argv_cut) = bounded_argv(all_argv.clone());
    let (env_shown, env_cut) = bounded_argv(shown_env(all_env.clone()));
    Some(ExecArgs {
        argv: argv_shown,
        env: env_shown,
        truncated: argv_cut || env_cut,
        binding,
        all_argv,
        all_env,
    })
}

/// [`exec_args`] once the held thread has stopped: the kernel reports a hold just before it
/// stops the thread, and until then `/proc/PID/task/TID/syscall` says `running`. The gap is
/// the return from the hook to the signal's delivery, usually over before the daemon looks:
/// the checks start 50 us apart and back off to 10 ms, so a hold the daemon decides (a rule's
/// conditions) is not delayed by a whole polling period. Waits at most a second.
fn exec_args_once_stopped(pid: u32, tid: u32) -> Option<ExecArgs> {
    let path = format!("/proc/{pid}/task/{tid}/syscall");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut pause = std::time::Duration::from_micros(50);
    loop {
        let running = std::fs::read_to_string(&path).is_ok_and(|s| s.starts_with("running"));
        if !running || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(10));
    }
    exec_args(pid, tid)
}

/// Name parts of environment variables that usually hold secrets.
const SECRET_NAME_PARTS: [&str; 9] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "PRIVATE",
    "API_KEY",
    "ACCESS_KEY",
    "AUTH",
];

/// The environment as reviewers and the audit trail see it: every variable, but the values of
/// those whose names look like secrets (`*TOKEN*`, `*SECRET*`, `*PASSWORD*`, …) replaced by
/// `<N bytes hidden>`, so approvals do not spread credentials to chat tools and logs. Hidden
/// values are still bound: a changed one fails the approval like any other change.
#[must_use]
pub fn shown_env(env: Vec<String>) -> Vec<String> {
    env.into_iter()
        .map(|var| match var.split_once('=') {
            Some((name, value))
                if SECRET_NAME_PARTS
                    .iter()
                    .any(|part| name.to_ascii_uppercase().contains(part)) =>
            {
                format!("{name}=<{} bytes hidden>", value.len())
            }
            _ => var,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_bounded_on_a_char_boundary() {
        let big = "é".repeat(MAX_ARGV_BYTES); // 2 bytes each
        let (argv, truncated) = bounded_argv(vec!["a".into(), big]);
        assert!(truncated);
        assert_eq!(argv.len(), 2);
        assert!(argv[0].len() + argv[1].len() <= MAX_ARGV_BYTES);
        let (argv, truncated) = bounded_argv(vec!["a".into(), "b".into()]);
        assert!(!truncated);
        assert_eq!(argv, ["a", "b"]);
    }

    #[test]
    fn secrets_in_the_environment_are_hidden() {
        let env = shown_env(vec![
            "PATH=/usr/bin".into(),
            "GITHUB_TOKEN=ghp_abc".into(),
            "aws_secret_access_key=x".into(),
            "NOVALUE".into(),
        ]);
        assert_eq!(
            env,
            [
                "PATH=/usr/bin",
                "GITHUB_TOKEN=<7 bytes hidden>",
                "aws_secret_access_key=<1 bytes hidden>",
                "NOVALUE"
            ]
        );
    }
}
