//! The control socket's identity of a request (`daemon::peer`), on a real Unix socket without
//! privileges: the process that connected must be the one that writes, and must still run.
//! A connection handed to another process (inherited, or passed with `SCM_RIGHTS` by a child
//! that then exits) is refused; so are descriptors sent along. (The daemon's refusal of these
//! tricks from inside an agent cgroup is tested in the VM.)
// The forked child uses raw libc calls only (no allocation after fork): C's integer types.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]

use std::{
    ffi::CString,
    io::Write as _,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::net::UnixStream as StdStream,
    },
    path::{Path, PathBuf},
    process::Command,
};

use jit_agent::daemon::peer::{self, PeerError};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tokio::net::UnixListener;

const REQUEST: &[u8] = b"{\"cmd\":\"status\"}\n";

fn listener(dir: &Path) -> (UnixListener, PathBuf) {
    let path = dir.join("jit.sock");
    let listener = UnixListener::bind(&path).unwrap();
    peer::pass_credentials(&listener).unwrap();
    (listener, path)
}

/// Accepts one connection and reads its request as the daemon does: the caller's pid and the
/// line, or why it was refused.
async fn serve_one(listener: &UnixListener) -> Result<(u32, Vec<u8>), PeerError> {
    let (stream, _) = listener.accept().await.unwrap();
    let caller = peer::connector(&stream)?;
    let line = peer::read_request(&stream, &caller, 64 * 1024).await?;
    // What the server reads about the caller is only trusted while it still runs.
    caller.verify(Ok).map_err(PeerError::Unidentified)?;
    Ok((caller.pid, line))
}

#[tokio::test]
async fn the_connecting_process_writing_is_identified() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, path) = listener(dir.path());
    let client = std::thread::spawn(move || {
        let mut s = StdStream::connect(path).unwrap();
        s.write_all(REQUEST).unwrap();
        s
    });
    let (pid, line) = serve_one(&listener).await.unwrap();
    assert_eq!(pid, std::process::id());
    assert_eq!(line, &REQUEST[..REQUEST.len() - 1]);
    drop(client.join());
}

#[tokio::test]
async fn a_request_written_on_an_inherited_connection_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, path) = listener(dir.path());
    // This process connects; a shell that inherited the socket as its stdout writes.
    let socket = StdStream::connect(&path).unwrap();
    let fd = OwnedFd::from(socket.try_clone().unwrap());
    let mut writer = Command::new("/bin/sh")
        .args(["-c", "printf '{\"cmd\":\"status\"}\\n'"])
        .stdout(fd)
        .spawn()
        .unwrap();
    let result = serve_one(&listener).await;
    let sender = writer.id();
    writer.wait().unwrap();
    match result {
        Err(PeerError::HandedOn {
            connector,
            sender: s,
        }) => {
            assert_eq!(connector, std::process::id());
            assert!(s.starts_with(&format!("{sender} ")), "{s}");
        }
        other => panic!("not refused: {other:?}"),
    }
    drop(socket);
}

/// The trick: a child connects, hands the connection to its parent and exits; the
/// parent (after reaping it) writes the request. The kernel's `SO_PEERCRED` still names the
/// child.
#[tokio::test]
async fn a_connection_from_a_reaped_child_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, path) = listener(dir.path());
    let (parent_end, child_end) = StdStream::pair().unwrap();
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: sockaddr_un is plain data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(c_path.as_bytes_with_nul()) {
        *dst = *src as libc::c_char;
    }
    let pass = child_end.as_raw_fd();
    // Everything the child needs is prepared: it only makes syscalls, then _exit.
    let mut byte = [0u8; 1];
    let mut cmsg_buf = [0u64; 8];
    // SAFETY: the child makes async-signal-safe calls only.
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if libc::connect(
                s,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_un>() as libc::socklen_t,
            ) != 0
            {
                libc::_exit(1);
            }
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: 1,
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg_buf.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as usize;
            libc::CMSG_DATA(cmsg)
                .cast::<libc::c_int>()
                .write_unaligned(s);
            let sent = libc::sendmsg(pass, &raw const msg, 0);
            libc::_exit(if sent == 1 { 0 } else { 2 });
        }
    }
    assert!(child > 0, "fork failed");
    drop(child_end);
    // Receive the connection, reap the child, then write on the connection.
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        parent_end.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    let fd = msg
        .cmsgs()
        .unwrap()
        .find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .expect("the child passed its connection");
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(child, &raw mut status, 0) }, child);
    assert_eq!(libc::WEXITSTATUS(status), 0, "child failed");
    // SAFETY: the received descriptor is ours.
    let mut inherited = StdStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    inherited.write_all(REQUEST).unwrap();
    match serve_one(&listener).await {
        Err(PeerError::ConnectorGone(pid) | PeerError::HandedOn { connector: pid, .. }) => {
            assert_eq!(pid, child.cast_unsigned());
        }
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test]
async fn descriptors_sent_with_a_request_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, path) = listener(dir.path());
    let client = std::thread::spawn(move || {
        let s = StdStream::connect(path).unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let fds = [devnull.as_raw_fd()];
        sendmsg::<()>(
            s.as_raw_fd(),
            &[std::io::IoSlice::new(REQUEST)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        s
    });
    assert_eq!(
        serve_one(&listener).await.map(|_| ()),
        Err(PeerError::Descriptors)
    );
    drop(client.join());
}
