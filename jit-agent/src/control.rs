//! The control socket protocol between `jitctl` and the daemon: one JSON request per line, one
//! JSON response per line, on a Unix socket. The daemon authorizes every request from the
//! credentials the kernel reports for the process that connected and wrote the request (see
//! `daemon::peer`), never from anything in the request.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The daemon's state ([`Status`]).
    Status,
    /// Re-read the policy directory now; the answer says whether it was loaded or rejected.
    Reload,
    /// Move the calling process (as the kernel identifies it) into `agent`'s cgroup.
    Run { agent: String },
    /// Held actions waiting for a decision.
    Pending,
    /// A reviewer's decision on held action `id`; the reviewer is the calling user.
    Decide {
        id: u64,
        action: crate::approval::ReviewAction,
        reason: Option<String>,
    },
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(Box<Status>),
    /// A policy set was loaded: its generation.
    Reloaded {
        generation: u64,
        files: Vec<String>,
    },
    /// The calling process is now in `cgroup` (relative to the cgroup2 mount).
    Placed {
        cgroup: String,
    },
    Pending {
        requests: Vec<crate::approval::PendingView>,
    },
    Decided(crate::approval::Decided),
    /// A reviewer's decision was not applied: why, typed (`message` is its text).
    Refused {
        refused: crate::approval::DecideError,
        message: String,
    },
    /// The request was refused or failed; `error` says why.
    Error {
        error: String,
    },
}

/// `jitctl status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    /// `loaded` (this daemon loaded the programs) or `adopted` (a previous daemon's programs,
    /// still attached, were taken over).
    pub startup: String,
    pub pin_dir: String,
    /// Programs attached (their pinned links exist).
    pub programs: Vec<String>,
    /// How many programs this kernel gets (hooks that older kernels lack are skipped there).
    #[serde(default)]
    pub programs_expected: usize,
    pub policy_generation: u64,
    pub policy_files: Vec<String>,
    /// The last rejected policy reload, if the current policy is not the newest attempt.
    pub policy_error: Option<String>,
    /// Where the policy reviewers are served comes from when it is not the policy directory
    /// (the directory did not load at start: the last good policy a previous run kept).
    #[serde(default)]
    pub policy_served: Option<String>,
    pub agents: Vec<AgentStatus>,
    /// Kernel counters by name.
    pub counters: Vec<(String, u64)>,
    pub events_dropped: u64,
    pub pending: usize,
    pub audit_log: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub name: String,
    pub id: u32,
    pub mode: String,
    pub default: String,
    pub rules: usize,
    pub cgroups: Vec<String>,
}

/// Errors of a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the jit daemon at {path}: {source} (is jit-agent running? is this \
         the socket path from its config?)"
    )]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the jit daemon failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the jit daemon sent an answer this jitctl does not understand: {0}")]
    Protocol(#[from] serde_json::Error),
    #[error("the jit daemon closed the connection without an answer")]
    NoAnswer,
}

/// Sends `request` to the daemon at `socket` and waits for its answer (at most `timeout`).
///
/// # Errors
/// When the daemon cannot be reached or answers nonsense.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(ClientError::NoAnswer);
    }
    Ok(serde_json::from_str(&answer)?)
}
