//! The agent socket (`[agent_socket]`, protocol in [`crate::agent_api`]): agents ask why they
//! were denied or held, list their own pending holds and justify them. A client of the hold
//! manager and of the agent history, like the control socket; it owns nothing but its
//! connections.
//!
//! Identity is the control socket's ([`super::peer`]): the process that connected is pinned by
//! a pidfd, every chunk of the request must carry that process's credentials (a connection
//! handed on by `SCM_RIGHTS` or inheritance, or one whose connector exited, is refused), and
//! the agent is read from that process's cgroup, trusted only if the process still runs
//! afterwards. Any doubt refuses. A caller outside every agent cgroup is refused too: this
//! socket answers agents about themselves, reviewers use the control socket.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections are served at once (further ones wait in
//! the listen backlog, so a flood costs the daemon no descriptors beyond those), each gets
//! [`CONNECTION_TIME`] to send its request and be answered, and `EMFILE` on accept backs off
//! ([`crate::robust::AcceptBackoff`]).
use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, sync::Arc, time::Duration};

use tokio::{
    io::AsyncWriteExt as _,
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};
use tracing::{info, warn};

use super::{Context, DaemonError, peer, server::agent_cgroup_of};
use crate::{
    agent_api::{AgentHold, AgentRequest, AgentResponse, MAX_REQUEST, clamp_last, parse_request},
    approval::PendingView,
};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long one connection may take, request and answer.
pub const CONNECTION_TIME: Duration = Duration::from_secs(5);

/// Creates the socket, mode `0666` (the caller's identity comes from the kernel, not from
/// file permissions), replacing a stale one.
///
/// # Errors
/// When the directory or socket cannot be created.
pub fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |source| DaemonError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = {
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o777));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        bound.map_err(err)?
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o666)).map_err(err)?;
    peer::pass_credentials(&listener).map_err(err)?;
    info!(socket = %path.display(), "agent socket ready");
    Ok(listener)
}

/// Accepts connections until the daemon stops, at most [`MAX_CONNECTIONS`] at a time.
pub async fn serve(context: Context, listener: UnixListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = crate::robust::AcceptBackoff::new("agent socket");
    loop {
        // A slot first: while every slot is taken, nothing is accepted.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                let context = context.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    handle(context, stream).await;
                });
            }
            Err(err) => {
                drop(slot);
                let wait = backoff.failed(&err);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

async fn handle(context: Context, stream: UnixStream) {
    let pinned = tokio::task::spawn_blocking(move || {
        let caller = peer::connector(&stream);
        (stream, caller)
    })
    .await;
    let Ok((stream, caller)) = pinned else {
        return;
    };
    let answered = tokio::time::timeout(CONNECTION_TIME, async {
        match caller {
            Err(err) => error(err.to_string()),
            Ok(caller) => match peer::read_request(&stream, &caller, MAX_REQUEST).await {
                Err(err) => error(err.to_string()),
                Ok(line) => match parse_request(&line) {
                    Err(message) => error(message),
                    Ok(request) => answer(&context, caller, request).await,
                },
            },
        }
    })
    .await;
    let response = answered.unwrap_or_else(|_| {
        error(format!(
            "no complete request within {} s",
            CONNECTION_TIME.as_secs()
        ))
    });
    if let AgentResponse::Error { error } = &response {
        warn!(error, "refused an agent socket request");
    }
    let mut bytes = serde_json::to_vec(&response).unwrap_or_default();
    bytes.push(b'\n');
    let (_, mut write) = stream.into_split();
    let _ = tokio::time::timeout(CONNECTION_TIME, write.write_all(&bytes)).await;
}

fn error(error: String) -> AgentResponse {
    AgentResponse::Error { error }
}

async fn answer(context: &Context, caller: peer::Caller, request: AgentRequest) -> AgentResponse {
    let registered: Vec<(u64, u32)> = match context
        .kernel
        .call(crate::bpf::Enforcer::registered_cgroups)
        .await
    {
        Ok(Ok(registered)) => registered
            .into_iter()
            .map(|(id, cgroup)| (id, cgroup.agent_id))
            .collect(),
        Ok(Err(err)) => {
            return error(format!(
                "refused: cannot read the registered agent cgroups: {err}"
            ));
        }
        Err(err) => return error(format!("refused: {err}")),
    };
    let root = context.config.cgroup_root.clone();
    let pid = caller.pid;
    let checked = tokio::task::spawn_blocking(move || {
        caller.verify(|pid| agent_cgroup_of(&root, &registered, pid))
    })
    .await;
    let agent_id = match checked {
        Ok(Ok(Some((_, agent_id)))) => agent_id,
        Ok(Ok(None)) => {
            return error(format!(
                "refused: process {pid} is not in an agent cgroup; this socket answers agents \
                 about themselves (reviewers use `jitctl pending` on the control socket)"
            ));
        }
        Ok(Err(why)) => {
            return error(format!(
                "refused: cannot verify the requesting process {pid}: {why}"
            ));
        }
        Err(err) => return error(format!("refused: checking the requesting process: {err}")),
    };
    let agent = context
        .policy
        .current()
        .agent_name(agent_id)
        .unwrap_or_else(|| format!("agent {agent_id:#010x}"));
    tracing::debug!(pid, agent, ?request, "agent socket request");
    match request {
        AgentRequest::Why { last } => AgentResponse::Why {
            records: context.history.recent(agent_id, clamp_last(last)).await,
            agent,
        },
        AgentRequest::Pending => AgentResponse::Pending {
            holds: context
                .holds
                .agent_pending(agent_id)
                .await
                .iter()
                .map(agent_hold)
                .collect(),
            agent,
        },
        AgentRequest::Justify { id, text } => {
            match context.holds.justify(agent_id, pid, id, text).await {
                Ok(text) => AgentResponse::Justified { id, text },
                Err(err) => error(err.to_string()),
            }
        }
    }
}

/// What an agent sees of its own hold: what it did and the clock, not the reviewers' context.
fn agent_hold(view: &PendingView) -> AgentHold {
    AgentHold {
        id: view.id,
        op: view.op.clone(),
        path: view.shown_path(),
        rule: view.rule.clone(),
        hint: view.hint.clone(),
        pid: view.pid,
        held_at: view.held_at.clone(),
        age_secs: view.age_secs,
        timeout_in_secs: view.timeout_in_secs,
        on_timeout: view.on_timeout.clone(),
        justification: view.justification.clone(),
    }
}
