//! What a reviewer (and the audit trail) needs to know about the process behind an event,
//! read from procfs.
//!
//! Every field is read on its own and becomes `None` when unreadable: a process may exit between
//! the event and the read, and some files (`exe`, `cwd`) need ptrace-read access. A partial
//! context is still worth recording; a failed read must never cost the record.

use std::path::Path;

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
}
