//! The control socket, a client of the other components: authorization from the kernel's
//! credentials of the process that connected and wrote the request ([`super::peer`]), checked
//! for every request, then the request. Reads of `/proc`, cgroupfs and NSS run on blocking
//! threads.
use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, chown},
    path::{Path, PathBuf},
};

use jit_common::{event::counter, policy::Decision};
use tokio::{
    io::AsyncWriteExt as _,
    net::{UnixListener, UnixStream},
};
use tracing::{info, warn};

use super::{
    Context, DaemonError,
    peer::{self, Caller, PeerError},
};
use crate::{
    approval::Reviewer,
    config::SocketConfig,
    control::{AgentStatus, Request, Response, Status},
};

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// Creates the socket with its configured mode (and group), replacing a stale one.
///
/// # Errors
/// When the directory or socket cannot be created.
pub fn bind(config: &SocketConfig) -> Result<UnixListener, DaemonError> {
    let path = &config.path;
    let err = |source| DaemonError::Socket {
        path: path.clone(),
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
    // Bound with no permissions at all, then opened up to the configured mode: no moment in
    // which the socket is more open than configured.
    let listener = {
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o777));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        bound.map_err(err)?
    };
    if let Some(group) = &config.group {
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .ok_or_else(|| {
                err(std::io::Error::other(format!(
                    "group {group} does not exist"
                )))
            })?;
        chown(path, None, Some(gid.gid.as_raw())).map_err(err)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(config.mode)).map_err(err)?;
    // Every message then carries the credentials of the process that wrote it.
    peer::pass_credentials(&listener).map_err(err)?;
    info!(socket = %path.display(), mode = format!("{:o}", config.mode), "control socket ready");
    Ok(listener)
}

/// Accepts connections until the daemon stops. Accept errors that are not about one connection
/// (`EMFILE`: out of file descriptors) are retried with a bounded backoff, logged once per burst:
/// retrying at once would spin.
pub async fn serve(context: Context, listener: UnixListener) {
    let mut backoff = crate::robust::AcceptBackoff::new("control socket");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                tokio::spawn(handle(context.clone(), stream));
            }
            Err(err) => {
                let wait = backoff.failed(&err);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Who is asking, as the kernel says, verified for this request ([`super::peer`]).
struct Peer {
    uid: u32,
    gid: u32,
    pid: u32,
    /// Supplementary groups, from `/proc/PID/status`.
    groups: Vec<u32>,
}

async fn handle(context: Context, stream: UnixStream) {
    // Pinning the connector reads `/proc/self/fdinfo`: on a blocking thread.
    let pinned = tokio::task::spawn_blocking(move || {
        let caller = peer::connector(&stream);
        (stream, caller)
    })
    .await;
    let Ok((stream, caller)) = pinned else {
        return;
    };
    let response = match read(&stream, caller).await {
        Err(err) => {
            warn!(error = %err, "refused a control connection");
            Response::Error {
                error: err.to_string(),
            }
        }
        Ok((caller, line)) => match serde_json::from_slice::<Request>(&line) {
            Err(err) => Response::Error {
                error: format!("malformed request: {err}"),
            },
            Ok(request) => answer(&context, caller, request).await,
        },
    };
    let mut bytes = serde_json::to_vec(&response).unwrap_or_default();
    bytes.push(b'\n');
    let (_, mut write) = stream.into_split();
    let _ = write.write_all(&bytes).await;
}

/// The connecting process, and the request line it wrote itself.
async fn read(
    stream: &UnixStream,
    caller: Result<Caller, PeerError>,
) -> Result<(Caller, Vec<u8>), PeerError> {
    let caller = caller?;
    let line = peer::read_request(stream, &caller, MAX_REQUEST).await?;
    Ok((caller, line))
}

fn refuse(caller: &Caller, request: &Request, why: &str) -> Response {
    warn!(
        pid = caller.pid,
        uid = caller.uid,
        ?request,
        why,
        "refused a control request: its process could not be verified"
    );
    Response::Error {
        error: format!(
            "refused: cannot verify the requesting process {}: {why}",
            caller.pid
        ),
    }
}

async fn answer(context: &Context, caller: Caller, request: Request) -> Response {
    tracing::debug!(
        pid = caller.pid,
        uid = caller.uid,
        ?request,
        "control request"
    );
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
            let why = format!("reading the registered agent cgroups: {err}");
            return refuse(&caller, &request, &why);
        }
        Err(err) => return refuse(&caller, &request, &err.to_string()),
    };
    // Read now, for this request, and only trusted if the caller still runs afterwards; any
    // doubt refuses (a reaped or unreadable process used to pass as "not in an agent cgroup").
    let root = context.config.cgroup_root.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let identity = caller.verify(|pid| {
            let cgroup = agent_cgroup_of(&root, &registered, pid)?;
            let groups = supplementary_groups(pid)?;
            Ok((cgroup, groups))
        });
        (caller, identity)
    })
    .await;
    let (caller, identity) = match checked {
        Ok(checked) => checked,
        Err(err) => {
            return Response::Error {
                error: format!("refused: checking the requesting process failed: {err}"),
            };
        }
    };
    let (cgroup, groups) = match identity {
        Ok(identity) => identity,
        Err(why) => return refuse(&caller, &request, &why),
    };
    let peer = Peer {
        uid: caller.uid,
        gid: caller.gid,
        pid: caller.pid,
        groups,
    };
    if let Some((cgroup, _)) = cgroup {
        warn!(
            pid = peer.pid,
            uid = peer.uid,
            cgroup,
            ?request,
            "refused a control request from inside an agent cgroup"
        );
        return Response::Error {
            error: format!(
                "refused: process {} is inside agent cgroup {cgroup}; agents cannot control jit",
                peer.pid
            ),
        };
    }
    // Reviewers decide as themselves (checked against the agent's approvers); only changing
    // what jit enforces, or placing processes, needs root.
    let needs_root = matches!(request, Request::Reload | Request::Run { .. });
    if needs_root && peer.uid != 0 {
        return Response::Error {
            error: format!(
                "refused: this request needs root (you are uid {})",
                peer.uid
            ),
        };
    }
    match request {
        Request::Status => Response::Status(Box::new(status(context).await)),
        Request::Reload => match context.policy.reload("jitctl policy reload").await {
            Ok((generation, files)) => Response::Reloaded { generation, files },
            Err(error) => Response::Error {
                error: format!("policy rejected; the previous policy stays in force:\n{error}"),
            },
        },
        Request::Run { agent } => place(context, peer, agent).await,
        Request::Pending => Response::Pending {
            requests: context.holds.pending().await,
        },
        Request::Decide { id, action, reason } => decide(context, peer, id, action, reason).await,
    }
}

async fn decide(
    context: &Context,
    peer: Peer,
    id: u64,
    action: crate::approval::ReviewAction,
    reason: Option<String>,
) -> Response {
    let reviewer = match tokio::task::spawn_blocking(move || reviewer_of(&peer)).await {
        Ok(reviewer) => reviewer,
        Err(err) => {
            return Response::Error {
                error: format!("looking up the reviewer failed: {err}"),
            };
        }
    };
    match context.holds.decide(id, &reviewer, action, reason).await {
        Ok(decided) => Response::Decided(decided),
        Err(refused) => Response::Refused {
            message: refused.to_string(),
            refused,
        },
    }
}

/// The reviewer a socket peer is: its user, with its primary and supplementary groups as the
/// kernel reports them for the connecting process.
fn reviewer_of(peer: &Peer) -> Reviewer {
    let name = nix::unistd::User::from_uid(peer.uid.into())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {}", peer.uid), |u| u.name);
    let mut gids = peer.groups.clone();
    gids.push(peer.gid);
    Reviewer {
        name,
        uid: Some(peer.uid),
        gids,
        channel: "socket".to_owned(),
    }
}

/// The supplementary groups of process `pid` (`Groups:` of `/proc/PID/status`, read with
/// `procfs`). An error when they cannot be read: callers refuse then.
fn supplementary_groups(pid: u32) -> Result<Vec<u32>, String> {
    let status = procfs::process::Process::new(pid.cast_signed())
        .and_then(|p| p.status())
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    Ok(status.groups)
}

/// The agent cgroup (as a path below the cgroup2 mount) that process `pid` is in, if any, and
/// its agent id: its cgroup or the nearest of that cgroup's ancestors registered in the kernel
/// (`registered`: cgroup inode, agent id). An error when that cannot be told (the process's
/// cgroup or the kernel's registry cannot be read): callers refuse then.
pub(super) fn agent_cgroup_of(
    root: &Path,
    registered: &[(u64, u32)],
    pid: u32,
) -> Result<Option<(String, u32)>, String> {
    let cgroups = procfs::process::Process::new(pid.cast_signed())
        .and_then(|p| p.cgroups())
        .map_err(|e| format!("reading /proc/{pid}/cgroup: {e}"))?;
    // The cgroup2 line is `0::PATH`: hierarchy 0, no controllers.
    let path = cgroups
        .into_iter()
        .find(|c| c.hierarchy == 0 && c.controllers.is_empty())
        .map(|c| c.pathname)
        .ok_or_else(|| format!("/proc/{pid}/cgroup names no cgroup2 cgroup"))?;
    let path = path.trim();
    let mut current = Some(Path::new(path));
    while let Some(dir) = current {
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        match fs::metadata(root.join(rel)) {
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt as _;
                if let Some((_, agent)) = registered.iter().find(|(ino, _)| *ino == meta.ino()) {
                    return Ok(Some((dir.display().to_string(), *agent)));
                }
            }
            // A cgroup removed meanwhile is no agent's any more; anything else is doubt.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", root.join(rel).display())),
        }
        current = dir.parent();
    }
    Ok(None)
}

async fn place(context: &Context, peer: Peer, agent: String) -> Response {
    let cgroup = {
        let snapshot = context.policy.current();
        match snapshot.installed.get(&agent) {
            None => {
                let known: Vec<&str> = snapshot.installed.keys().map(String::as_str).collect();
                return Response::Error {
                    error: format!(
                        "no agent named {agent:?} in the policy in force (agents: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                };
            }
            Some(installed) => match installed.cgroups.first() {
                Some((rel, _)) => rel.clone(),
                None => {
                    return Response::Error {
                        error: format!("agent {agent} has no cgroup"),
                    };
                }
            },
        }
    };
    let procs = context
        .config
        .cgroup_root
        .join(&cgroup)
        .join("cgroup.procs");
    // Separation of duties: the starter is on disk before its process is an agent.
    if let Err(error) = context.holds.record_starter(&agent, peer.uid).await {
        return Response::Error {
            error: format!("not placed: {error}"),
        };
    }
    let pid = peer.pid;
    let written = {
        let procs = procs.clone();
        tokio::task::spawn_blocking(move || fs::write(&procs, pid.to_string()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    match written {
        Ok(()) => {
            info!(
                agent,
                pid = peer.pid,
                uid = peer.uid,
                cgroup,
                "process placed in the agent's cgroup"
            );
            Response::Placed { cgroup }
        }
        Err(err) => Response::Error {
            error: format!(
                "moving process {} into {}: {err}",
                peer.pid,
                procs.display()
            ),
        },
    }
}

async fn status(context: &Context) -> Status {
    let (counters, pending) = context
        .kernel
        .call(|enforcer| {
            (
                enforcer.counters().ok(),
                enforcer.pending_requests().map(|p| {
                    p.iter()
                        .filter(|(_, r)| r.state == jit_common::pending::STATE_PENDING)
                        .count()
                }),
            )
        })
        .await
        .unwrap_or((None, Ok(0)));
    let links: PathBuf = context.config.bpffs.join("links");
    // The kernel's BTF and bpffs: read on a blocking thread.
    let (expected, programs) = tokio::task::spawn_blocking(move || {
        let expected = crate::bpf::programs_for_this_kernel()
            .unwrap_or_else(|_| jit_common::program_names::ALL.to_vec());
        let programs: Vec<String> = expected
            .iter()
            .filter(|(name, _)| links.join(name).exists())
            .map(|(name, hook)| format!("{name} ({hook})"))
            .collect();
        (expected.len(), programs)
    })
    .await
    .unwrap_or_default();
    // Decision counters are indexed by the decision's value, then the named counters.
    let names: [&str; counter::COUNT as usize] = [
        Decision::Allow.name(),
        Decision::Audit.name(),
        Decision::Hold.name(),
        Decision::Deny.name(),
        "events_emitted",
        "events_dropped",
        "errors",
        "grants_used",
        "write_cache_hits",
        "audit_refused",
        "denials_summarized",
        "denials_unkeyed",
        "marks_full",
    ];
    let counters = counters.unwrap_or_default();
    let state = context.policy.current();
    let agents = state
        .installed
        .iter()
        .map(|(name, a)| {
            let config = state
                .compiled
                .as_ref()
                .and_then(|c| c.agent(name))
                .map(|c| c.config);
            AgentStatus {
                name: name.clone(),
                id: a.id,
                mode: config
                    .and_then(|c| jit_common::policy::Mode::from_u8(c.mode))
                    .map_or("?", jit_common::policy::Mode::name)
                    .to_owned(),
                default: config
                    .map_or("?", |c| {
                        jit_common::policy::Decision::from_u8_or_deny(c.default_decision).name()
                    })
                    .to_owned(),
                rules: a.rules,
                cgroups: a.cgroups.iter().map(|(rel, _)| rel.clone()).collect(),
            }
        })
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        startup: match context.startup {
            crate::bpf::Startup::Loaded => "loaded",
            crate::bpf::Startup::Adopted => "adopted",
        }
        .to_owned(),
        pin_dir: context.config.bpffs.display().to_string(),
        programs,
        programs_expected: expected,
        policy_generation: state.generation,
        policy_files: state.files.clone(),
        policy_error: state.last_error.clone(),
        policy_served: state.served_note(),
        agents,
        counters: names
            .iter()
            .zip(counters.iter())
            .map(|(n, v)| ((*n).to_owned(), *v))
            .collect(),
        events_dropped: counters
            .get(counter::EVENTS_DROPPED as usize)
            .copied()
            .unwrap_or(0),
        pending: pending.unwrap_or(0),
        audit_log: context.config.audit.path.display().to_string(),
    }
}
