//! Who sent a control request, as the kernel says — an identity that cannot be stale.
//!
//! `SO_PEERCRED` names the process that *connected*, as it was at `connect()`. Trusted alone it
//! can be made to lie: a child in an agent cgroup connects and exits, and its parent (in the
//! same agent cgroup) writes `decide` on the inherited connection — the daemon then looked up
//! a reaped process, found no cgroup, and allowed it; or a process outside any agent cgroup
//! connects and hands the connected socket to an agent (`SCM_RIGHTS`, or simply by letting it
//! inherit the descriptor). So the daemon identifies a request by what the kernel attaches to
//! every message and refuses on any doubt:
//!
//! - The listening socket has `SO_PASSCRED` (accepted sockets inherit it, and the kernel
//!   attaches credentials to data sent before the accept anyway), so every chunk of the request
//!   arrives with `SCM_CREDENTIALS`: the process that *wrote* it. Every chunk must come from the
//!   process that connected (`SO_PEERCRED`): a connection cannot be handed on. A chunk without
//!   credentials, or with file descriptors attached, is refused.
//! - The connecting process is pinned at accept by a pidfd: from `SO_PEERPIDFD` where the
//!   kernel has it (6.5+, race-free), else `pidfd_open` of the `SO_PEERCRED` pid. A process
//!   that is gone at that point is refused.
//! - After the request was read, its cgroup and groups are read from `/proc/PID`, and then the
//!   pidfd must show the process still running (not exited, not a zombie): so what was read
//!   belonged to that process and not to a later one with the same pid. Anything that cannot
//!   be read refuses the request ([`Caller::verify`]).
//!
//! What this cannot stop: a sender with `CAP_SYS_ADMIN` may put another process's pid into
//! `SCM_CREDENTIALS` (the kernel allows that), so a root agent holding a socket that a process
//! outside the agent cgroups connected and handed to it could pass as that process. No agent
//! can connect such a socket itself (it is refused as itself), and the socket is root-only by
//! default. On 6.1, where there is no `SO_PEERPIDFD`, a connecting process that exits and whose
//! pid is reused between `connect()` and the daemon's `accept()` is not told apart by the pid
//! alone; the request must then also come from the process now holding that pid.
use std::{
    io::{self, IoSliceMut},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use tokio::{io::Interest, net::UnixStream};

/// `SO_PEERPIDFD` (Linux 6.5), not in every libc yet.
const SO_PEERPIDFD: libc::c_int = 77;

/// Why a request was refused before it was looked at.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    #[error("cannot identify the requesting process: {0}")]
    Unidentified(String),
    #[error(
        "refused: the process that connected (pid {0}) has exited; a connection is only good \
         for the process that made it"
    )]
    ConnectorGone(u32),
    #[error(
        "refused: the request was written by process {sender}, not by the process that \
         connected (pid {connector}): a connection to jit cannot be handed on"
    )]
    HandedOn { connector: u32, sender: String },
    #[error("refused: file descriptors were sent with the request")]
    Descriptors,
    #[error("reading the request failed: {0}")]
    Read(String),
    #[error("the request is longer than {0} bytes")]
    TooLong(usize),
}

/// The process that connected and wrote the request, pinned by a pidfd.
#[derive(Debug)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pidfd: OwnedFd,
}

/// Turns on `SO_PASSCRED` on the listening socket; accepted connections inherit it.
///
/// # Errors
/// When the option cannot be set.
pub fn pass_credentials(listener: &impl std::os::fd::AsFd) -> io::Result<()> {
    setsockopt(listener, sockopt::PassCred, &true).map_err(io::Error::from)
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall; the result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(RawFd::try_from(fd).map_err(io::Error::other)?) })
}

/// The connecting process's pidfd from `SO_PEERPIDFD`; `None` where the kernel lacks it.
fn peer_pidfd(fd: RawFd) -> Option<OwnedFd> {
    let mut pidfd: libc::c_int = -1;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).ok()?;
    // SAFETY: getsockopt writes at most `len` bytes into `pidfd`.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut pidfd).cast(),
            &raw mut len,
        )
    };
    // SAFETY: on success the kernel returned a new descriptor.
    (ret == 0 && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) })
}

/// The pid a pidfd refers to, from `/proc/self/fdinfo` (`Pid: -1` once it exited, on newer
/// kernels).
fn pidfd_pid(pidfd: &OwnedFd) -> Option<i64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|p| p.trim().parse().ok())
}

/// Whether the process behind `pidfd` is still running: a pidfd becomes readable when the
/// process exits (zombies included). Errors count as "not running".
fn running(pidfd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let ret = unsafe { libc::poll(&raw mut poll, 1, 0) };
    ret == 0
}

/// Pins the process that connected `stream`: its `SO_PEERCRED` and a pidfd of it.
///
/// # Errors
/// When the kernel names no process, or it has exited already.
pub fn connector(stream: &UnixStream) -> Result<Caller, PeerError> {
    let cred = stream
        .peer_cred()
        .map_err(|e| PeerError::Unidentified(e.to_string()))?;
    let pid = cred
        .pid()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| PeerError::Unidentified("the kernel names no process".to_owned()))?;
    let pidfd = match peer_pidfd(stream.as_raw_fd()) {
        Some(pidfd) => {
            if pidfd_pid(&pidfd).is_some_and(|p| p != i64::from(pid)) {
                return Err(PeerError::ConnectorGone(pid));
            }
            pidfd
        }
        None => pidfd_open(pid).map_err(|e| {
            if e.raw_os_error() == Some(libc::ESRCH) {
                PeerError::ConnectorGone(pid)
            } else {
                PeerError::Unidentified(format!("pidfd_open({pid}): {e}"))
            }
        })?,
    };
    if !running(&pidfd) {
        return Err(PeerError::ConnectorGone(pid));
    }
    Ok(Caller {
        pid,
        uid: cred.uid(),
        gid: cred.gid(),
        pidfd,
    })
}

/// Reads one request line (without its newline; at most `max` bytes) from `stream`, checking
/// that every chunk of it was written by `caller` ([`SCM_CREDENTIALS`](self)).
///
/// # Errors
/// [`PeerError::HandedOn`] when another process wrote (part of) it, [`PeerError::Descriptors`]
/// when descriptors came with it, or a read error. End of stream ends the line.
pub async fn read_request(
    stream: &UnixStream,
    caller: &Caller,
    max: usize,
) -> Result<Vec<u8>, PeerError> {
    let mut line = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        let chunk = loop {
            stream
                .readable()
                .await
                .map_err(|e| PeerError::Read(e.to_string()))?;
            match stream.try_io(Interest::READABLE, || {
                recv_chunk(stream.as_raw_fd(), &mut buf)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => break other.map_err(|e| PeerError::Read(e.to_string()))?,
            }
        };
        let Chunk {
            len,
            sender,
            descriptors,
        } = chunk;
        if len == 0 {
            return Ok(line);
        }
        if descriptors {
            return Err(PeerError::Descriptors);
        }
        match sender {
            Some((pid, uid, _)) if pid == caller.pid && uid == caller.uid => {}
            Some((pid, uid, _)) => {
                return Err(PeerError::HandedOn {
                    connector: caller.pid,
                    sender: format!("{pid} (uid {uid})"),
                });
            }
            None => {
                return Err(PeerError::HandedOn {
                    connector: caller.pid,
                    sender: "unknown (no credentials attached)".to_owned(),
                });
            }
        }
        let data = &buf[..len];
        if let Some(end) = data.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&data[..end]);
            if line.len() > max {
                return Err(PeerError::TooLong(max));
            }
            return Ok(line);
        }
        line.extend_from_slice(data);
        if line.len() > max {
            return Err(PeerError::TooLong(max));
        }
    }
}

struct Chunk {
    len: usize,
    /// pid, uid, gid of the writer, from `SCM_CREDENTIALS`.
    sender: Option<(u32, u32, u32)>,
    descriptors: bool,
}

fn recv_chunk(fd: RawFd, buf: &mut [u8]) -> io::Result<Chunk> {
    let mut cmsg = nix::cmsg_space!(libc::ucred, [RawFd; 8]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut chunk = Chunk {
        len: msg.bytes,
        sender: None,
        descriptors: msg.flags.contains(MsgFlags::MSG_CTRUNC),
    };
    for message in msg.cmsgs().map_err(io::Error::from)? {
        match message {
            ControlMessageOwned::ScmCredentials(c) => {
                chunk.sender = u32::try_from(c.pid())
                    .ok()
                    .filter(|&p| p > 0)
                    .map(|p| (p, c.uid(), c.gid()));
            }
            ControlMessageOwned::ScmRights(fds) => {
                chunk.descriptors = true;
                for fd in fds {
                    // SAFETY: received descriptors are ours to close.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            _ => {}
        }
    }
    Ok(chunk)
}

impl Caller {
    /// Reads `what` about the caller (from `/proc/PID/...`) and returns it only if the caller
    /// was still running afterwards — so it was read from the caller, not from a process that
    /// got its pid after it exited. Fails closed: a read error or an exited caller is an error.
    ///
    /// # Errors
    /// A message saying why the caller could not be verified.
    pub fn verify<T>(&self, what: impl FnOnce(u32) -> Result<T, String>) -> Result<T, String> {
        if !running(&self.pidfd) {
            return Err(PeerError::ConnectorGone(self.pid).to_string());
        }
        let value = what(self.pid)?;
        if !running(&self.pidfd) {
            return Err(PeerError::ConnectorGone(self.pid).to_string());
        }
        Ok(value)
    }
}
