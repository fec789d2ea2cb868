//! What keeps the daemon working when the host (or an agent) starves it: a held task is dead
//! only when the kernel says so, the file descriptor limit is raised at start, and accept loops
//! back off instead of spinning on errors such as `EMFILE`.
use std::{io, time::Duration};

use tracing::{info, warn};

/// What the daemon knows about a held task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Definitely gone: no such process or thread (or a zombie, which never runs again).
    Dead,
    /// Could not be told (out of file descriptors, memory, permission, ...): keep the hold.
    Unknown,
}

/// Liveness from the result of reading `/proc/PID/task/TID/stat`.
///
/// Only `ENOENT` (no such entry) and `ESRCH` (the task went away during the read) mean dead;
/// every other error (`EMFILE`, `ENFILE`, `ENOMEM`, `EACCES`, `EINTR`, ...) says nothing about
/// the task, and taking it for dead would drop its pending entry while it stays stopped forever.
#[must_use]
pub fn liveness(read: &io::Result<String>) -> Liveness {
    match read {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => Liveness::Dead,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Liveness::Dead,
        Err(_) => Liveness::Unknown,
        Ok(stat) => {
            // The state letter follows the command name, which may itself contain ") ".
            match stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
            {
                Some('Z' | 'X' | 'x') => Liveness::Dead,
                Some(_) => Liveness::Alive,
                // A format we do not know (or an empty read): not a definite answer.
                None => Liveness::Unknown,
            }
        }
    }
}

/// Whether the held task `thread` of process `process` still lives: it exists, is a thread of
/// that process (not a reused id) and has not exited. See [`liveness`].
#[must_use]
pub fn task_liveness(thread: u32, process: u32) -> Liveness {
    liveness(&std::fs::read_to_string(format!(
        "/proc/{process}/task/{thread}/stat"
    )))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: a daemon that holds agents' work must not
/// be the first process on the host to run out of descriptors. Returns `(old, new)` soft limits.
///
/// # Errors
/// When the limit cannot be read or set.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let old = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((old, limit.rlim_cur))
}

/// First wait after a failed accept.
const FIRST_DELAY: Duration = Duration::from_millis(10);
/// Longest wait between accept attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// Whether an accept error is about the one connection (the peer gave up before it was
/// accepted): retry at once. Everything else (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, ...) is
/// about the daemon and retrying at once would spin.
#[must_use]
pub fn transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// The wait after the `failures`-th consecutive failure: doubling from 10 ms, at most 1 s.
#[must_use]
pub fn accept_delay(failures: u32) -> Duration {
    FIRST_DELAY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_DELAY)
}

/// Backoff state of one accept loop: logs a burst of failures once when it starts and once
/// when it ends, not once per failure.
#[derive(Debug)]
pub struct AcceptBackoff {
    what: &'static str,
    failures: u32,
}

impl AcceptBackoff {
    #[must_use]
    pub fn new(what: &'static str) -> Self {
        Self { what, failures: 0 }
    }

    /// How long to wait after `err` (zero for a transient error).
    pub fn failed(&mut self, err: &io::Error) -> Duration {
        if transient_accept_error(err) {
            return Duration::ZERO;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures == 1 {
            warn!(
                listener = self.what,
                error = %err,
                "accepting connections fails; retrying with backoff (up to {MAX_DELAY:?}) until \
                 it works again"
            );
        }
        accept_delay(self.failures)
    }

    /// A connection was accepted: ends a burst of failures.
    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            info!(
                listener = self.what,
                failures = self.failures,
                "accepting connections works again"
            );
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32) -> io::Result<String> {
        Err(io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn only_no_such_process_is_dead() {
        assert_eq!(liveness(&os(libc::ENOENT)), Liveness::Dead);
        assert_eq!(liveness(&os(libc::ESRCH)), Liveness::Dead);
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::EACCES,
            libc::EPERM,
            libc::EINTR,
            libc::EIO,
            libc::EAGAIN,
        ] {
            assert_eq!(liveness(&os(errno)), Liveness::Unknown, "errno {errno}");
        }
        let stat = |s: &str| liveness(&Ok(s.to_owned()));
        assert_eq!(stat("42 (sleep) T 1 42 42 0"), Liveness::Alive);
        assert_eq!(stat("42 (a) Z (b) S 1 42"), Liveness::Alive);
        assert_eq!(stat("42 (a) Z (b) Z 1 42"), Liveness::Dead);
        assert_eq!(stat("42 (defunct) X 1"), Liveness::Dead);
        assert_eq!(stat(""), Liveness::Unknown);
        assert_eq!(stat("garbage"), Liveness::Unknown);
    }

    #[test]
    fn own_task_is_alive_and_a_missing_one_dead() {
        let pid = std::process::id();
        assert_eq!(task_liveness(pid, pid), Liveness::Alive);
        // Above the kernel's PID_MAX_LIMIT (4M): never a process.
        assert_eq!(task_liveness(u32::MAX - 1, u32::MAX - 1), Liveness::Dead);
    }

    #[test]
    fn accept_backoff_is_bounded_and_skips_transient_errors() {
        let waits: Vec<u128> = (1..=9).map(|n| accept_delay(n).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(accept_delay(u32::MAX), MAX_DELAY);
        let mut backoff = AcceptBackoff::new("test");
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(backoff.failed(&emfile), Duration::from_millis(10));
        assert_eq!(backoff.failed(&emfile), Duration::from_millis(20));
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(backoff.failed(&aborted), Duration::ZERO);
        backoff.succeeded();
        assert_eq!(backoff.failed(&emfile), Duration::from_millis(10));
    }

    #[test]
    fn nofile_limit_is_raised_to_the_hard_limit() {
        let (old, new) = raise_nofile_limit().unwrap();
        assert!(new >= old);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }
}
