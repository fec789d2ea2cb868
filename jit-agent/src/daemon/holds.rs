//! The hold manager: held actions waiting for a reviewer — the queue, reviewers' decisions,
//! quorum, timeouts, and the reconciliation with the kernel's pending map that makes all of it
//! restart-safe (docs/ARCHITECTURE.md, I5, I7 and I8).
//!
//! One task owns the queue; the event reader announces holds, the channels (control socket,
//! HTTP) send requests with oneshot replies, and a timer reconciles. Decisions are therefore
//! applied one at a time: two reviewers racing for one hold get one answer each, the second
//! [`DecideError::NotPending`]. Reads of `/proc`, of the audit log and NSS lookups run on
//! blocking threads; map operations are commands to the kernel handle.
//!
//! The kernel's `PENDING` map is the truth: a held task stays stopped until its entry is
//! answered, whatever happens to the daemon. The queue here adds what reviewers need (path,
//! process context, deadline) and is rebuilt from the map at start: a hold the daemon has not
//! seen (made while it was down) is adopted with the path from the audit log's hold record.
//! Deadlines derive from the hold's id, which is the kernel's monotonic clock at the hold, so a
//! timeout that passed while no daemon ran is applied at once on restart.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    time::Duration,
};

use jiff::Timestamp;
use jit_common::{
    event::Event,
    pending::{FileId, GrantKey, PendingRequest, STATE_PENDING},
    policy::Op,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{
    audit_sink::AuditSink,
    kernel::KernelHandle,
    policy_store::{PolicySnapshot, PolicyStore},
};
use crate::{
    approval::{
        ApprovalService, DecideError, Decided, PendingView, ReviewAction, Reviewer, TargetFacts,
        webhook::WebhookHandle,
    },
    audit::{
        ProcessContext,
        record::{Approval, ApprovalDecision, HeldAction, HoldEnded, RecordBody},
    },
    bpf::BpfError,
    policy::{AgentPolicy, Grant, OnTimeout},
};

/// How often the queue is reconciled with the kernel's pending map (and timeouts applied).
const RECONCILE: Duration = Duration::from_millis(500);
/// A kernel hold not announced by the event reader is adopted only once it is this old: its
/// event may still be on its way (in the ring buffer, or its record being committed), and a
/// hold is shown to reviewers only after its record is durable (I5). At start every hold is
/// adopted at once.
const ADOPT_AFTER: Duration = Duration::from_secs(2);

/// One held action.
#[derive(Clone, Debug)]
pub struct Held {
    pub request_id: u64,
    pub tid: u32,
    pub tgid: u32,
    pub agent_id: u32,
    pub op: Op,
    pub rule_id: u32,
    pub file: FileId,
    /// From the hold event (or the audit log after a restart).
    pub path: String,
    /// The path's exact bytes in hex when it is not UTF-8 (as in the hold's audit record).
    pub path_hex: Option<String>,
    pub process: ProcessContext,
    /// Distinct reviewers who approved, when more than one approval is required.
    pub approvals: Vec<String>,
    /// Whether reviewers may see it: its audit record is durable (I5).
    visible: bool,
}

impl Held {
    /// A hold as its event reports it, with the context read while the task is stopped.
    #[must_use]
    pub fn from_event(event: &Event, process: ProcessContext, path: String) -> Self {
        Self {
            request_id: event.request_id,
            tid: event.pid,
            tgid: event.tgid,
            agent_id: event.agent_id,
            op: Op::from_u8(event.op).unwrap_or(Op::Exec),
            rule_id: event.rule_id,
            file: event.file,
            path_hex: std::str::from_utf8(event.path_bytes())
                .is_err()
                .then(|| crate::audit::to_hex(event.path_bytes())),
            path,
            process,
            approvals: Vec::new(),
            visible: false,
        }
    }
}

enum Command {
    /// A hold event was read; its record is being committed.
    Announce(Box<Held>),
    /// The hold's record is durable: reviewers may see it now.
    Durable(u64),
    Pending(oneshot::Sender<Vec<PendingView>>),
    Decide {
        id: u64,
        reviewer: Reviewer,
        action: ReviewAction,
        reason: Option<String>,
        reply: oneshot::Sender<Result<Decided, DecideError>>,
    },
    /// `uid` started a process as `agent` (`jitctl run`).
    Starter {
        agent: String,
        uid: u32,
    },
}

/// The hold manager's clients: the event reader and every approval channel. Clones share it.
#[derive(Clone)]
pub struct Holds {
    commands: mpsc::UnboundedSender<Command>,
    audit: AuditSink,
}

fn stopping() -> DecideError {
    DecideError::Failed("the daemon is stopping".to_owned())
}

impl Holds {
    /// A hold event was read: the manager knows it from now on (reconciliation will not adopt
    /// it), and shows it once [`Holds::durable`] says its record is on disk.
    pub fn announce(&self, held: Held) {
        let _ = self.commands.send(Command::Announce(Box::new(held)));
    }

    /// Hold `id`'s audit record is durable.
    pub fn durable(&self, id: u64) {
        let _ = self.commands.send(Command::Durable(id));
    }

    /// Records that `uid` started a process as `agent`.
    pub fn record_starter(&self, agent: &str, uid: u32) {
        let _ = self.commands.send(Command::Starter {
            agent: agent.to_owned(),
            uid,
        });
    }

    fn ask_pending(&self) -> Option<oneshot::Receiver<Vec<PendingView>>> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Pending(reply)).ok()?;
        Some(answer)
    }

    /// Every held action reviewers may see, oldest first.
    pub async fn pending(&self) -> Vec<PendingView> {
        match self.ask_pending() {
            Some(answer) => answer.await.unwrap_or_default(),
            None => Vec::new(),
        }
    }

    fn ask_decide(
        &self,
        id: u64,
        reviewer: &Reviewer,
        action: ReviewAction,
        reason: Option<String>,
    ) -> Result<oneshot::Receiver<Result<Decided, DecideError>>, DecideError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Decide {
                id,
                reviewer: reviewer.clone(),
                action,
                reason,
                reply,
            })
            .map_err(|_| stopping())?;
        Ok(answer)
    }

    /// A reviewer's decision.
    ///
    /// # Errors
    /// See [`DecideError`].
    pub async fn decide(
        &self,
        id: u64,
        reviewer: &Reviewer,
        action: ReviewAction,
        reason: Option<String>,
    ) -> Result<Decided, DecideError> {
        self.ask_decide(id, reviewer, action, reason)?
            .await
            .unwrap_or_else(|_| Err(stopping()))
    }
}

/// The HTTP API calls the service from blocking threads.
impl ApprovalService for Holds {
    fn pending(&self) -> Vec<PendingView> {
        self.ask_pending()
            .and_then(|answer| answer.blocking_recv().ok())
            .unwrap_or_default()
    }

    fn decide(
        &self,
        id: u64,
        reviewer: &Reviewer,
        action: ReviewAction,
        reason: Option<String>,
    ) -> Result<Decided, DecideError> {
        self.ask_decide(id, reviewer, action, reason)?
            .blocking_recv()
            .unwrap_or_else(|_| Err(stopping()))
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.audit.subscribe()
    }
}

/// The kernel's monotonic clock (what `bpf_ktime_get_ns` reads), in nanoseconds.
pub(super) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(Duration::from(t).as_nanos()).unwrap_or(u64::MAX)
    })
}

/// Whether held task `thread` of `process` is gone for sure. A task whose state cannot be read
/// (the daemon is out of file descriptors, for example) is kept: dropping its pending entry
/// would leave it stopped forever (I8). Logged once per run of such failures. Reads `/proc`:
/// call it on a blocking thread.
fn dead(thread: u32, process: u32) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::robust::{Liveness, task_liveness};
    static WARNED: AtomicBool = AtomicBool::new(false);
    match task_liveness(thread, process) {
        Liveness::Dead => true,
        Liveness::Alive => {
            WARNED.store(false, Ordering::Relaxed);
            false
        }
        Liveness::Unknown => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                warn!(
                    pid = process,
                    tid = thread,
                    "cannot tell whether a held task lives (reading /proc failed); keeping its \
                     hold"
                );
            }
            false
        }
    }
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => Some(value),
        Err(err) => {
            warn!(error = %err, "a blocking task failed");
            None
        }
    }
}

/// The task that owns the queue.
pub struct HoldManager {
    held: BTreeMap<u64, Held>,
    /// Users who started processes as each agent (`jitctl run`), by agent name, since this
    /// daemon started: with `self_approval = false` they may not approve the agent's holds.
    starters: BTreeMap<String, BTreeSet<u32>>,
    kernel: KernelHandle,
    audit: AuditSink,
    policy: PolicyStore,
    /// Where new holds are announced, when a webhook is configured.
    webhook: Option<WebhookHandle>,
    audit_path: PathBuf,
    /// The monotonic clock when this daemon started: timeouts whose deadline passed before it
    /// were missed by a daemon that was not running.
    started_ns: u64,
    adopt_all: bool,
    commands: mpsc::UnboundedReceiver<Command>,
}

impl HoldManager {
    /// The manager and its clients.
    #[must_use]
    pub fn new(
        kernel: KernelHandle,
        audit: AuditSink,
        policy: PolicyStore,
        webhook: Option<WebhookHandle>,
        audit_path: PathBuf,
        started_ns: u64,
    ) -> (Self, Holds) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let manager = Self {
            held: BTreeMap::new(),
            starters: BTreeMap::new(),
            kernel,
            audit: audit.clone(),
            policy,
            webhook,
            audit_path,
            started_ns,
            adopt_all: true,
            commands: receiver,
        };
        (manager, Holds { commands, audit })
    }

    /// Serves its clients and reconciles until every client is gone.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(RECONCILE);
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => return,
                },
                _ = tick.tick() => self.reconcile().await,
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Announce(held) => {
                // An adopted hold keeps the approvals it collected and stays visible.
                let (approvals, visible) = self
                    .held
                    .get(&held.request_id)
                    .map_or((Vec::new(), false), |h| (h.approvals.clone(), h.visible));
                self.held.insert(
                    held.request_id,
                    Held {
                        approvals,
                        visible,
                        ..*held
                    },
                );
            }
            Command::Durable(id) => {
                if let Some(held) = self.held.get_mut(&id)
                    && !held.visible
                {
                    held.visible = true;
                    let held = held.clone();
                    self.notify(held).await;
                }
            }
            Command::Pending(reply) => {
                let _ = reply.send(self.pending_views().await);
            }
            Command::Decide {
                id,
                reviewer,
                action,
                reason,
                reply,
            } => {
                let _ = reply.send(self.decide(id, &reviewer, action, reason).await);
            }
            Command::Starter { agent, uid } => {
                self.starters.entry(agent).or_default().insert(uid);
            }
        }
    }

    /// Tells reviewers about a new held action: the log, and the webhook when configured.
    async fn notify(&self, held: Held) {
        let snapshot = self.policy.current();
        let Some(view) = blocking(move || view(&snapshot, &held, monotonic_ns())).await else {
            return;
        };
        if let Some(webhook) = &self.webhook {
            webhook.notify(view.clone());
        }
        info!(
            id = view.id,
            agent = %view.agent,
            op = %view.op,
            path = %view.path,
            pid = view.pid,
            "held for review: `jitctl approve {}` or `jitctl deny {}`",
            view.id,
            view.id
        );
    }

    /// Every visible hold, oldest first.
    async fn pending_views(&self) -> Vec<PendingView> {
        let held: Vec<Held> = self.held.values().filter(|h| h.visible).cloned().collect();
        let snapshot = self.policy.current();
        blocking(move || {
            let now = monotonic_ns();
            held.iter().map(|h| view(&snapshot, h, now)).collect()
        })
        .await
        .unwrap_or_default()
    }

    async fn decide(
        &mut self,
        id: u64,
        reviewer: &Reviewer,
        action: ReviewAction,
        reason: Option<String>,
    ) -> Result<Decided, DecideError> {
        let held = self
            .held
            .get(&id)
            .filter(|h| h.visible)
            .cloned()
            .ok_or(DecideError::NotPending(id))?;
        let snapshot = self.policy.current();
        let agent_name = snapshot
            .agent_name(held.agent_id)
            .unwrap_or_else(|| format!("agent {:#010x}", held.agent_id));
        let Some(agent) = snapshot.agent_policy(held.agent_id).cloned() else {
            return Err(DecideError::NotAnApprover {
                reviewer: reviewer.name.clone(),
                agent: agent_name,
            });
        };
        if !may_decide(&agent, reviewer) {
            warn!(reviewer = %reviewer.name, agent = %agent.name, id, "refused a decision from a non-approver");
            return Err(DecideError::NotAnApprover {
                reviewer: reviewer.name.clone(),
                agent: agent.name.clone(),
            });
        }
        if let ReviewAction::Approve { .. } = action
            && !agent.escalation.self_approval
            && self.started_agent(&agent.name, reviewer).await
        {
            warn!(reviewer = %reviewer.name, agent = %agent.name, id, "refused a self-approval");
            return Err(DecideError::SelfApproval {
                reviewer: reviewer.name.clone(),
                agent: agent.name.clone(),
            });
        }
        let (scope, capped) = scope_of(action, &agent);
        if let ReviewAction::Approve { .. } = action {
            let required = agent.escalation.required_approvals.max(1);
            if required > 1 {
                let entry = self.held.get_mut(&id).ok_or(DecideError::NotPending(id))?;
                if entry.approvals.contains(&reviewer.name) {
                    return Err(DecideError::AlreadyApproved(reviewer.name.clone()));
                }
                entry.approvals.push(reviewer.name.clone());
                let have = u32::try_from(entry.approvals.len()).unwrap_or(u32::MAX);
                if have < required {
                    info!(id, reviewer = %reviewer.name, have, required, "approval recorded");
                    self.audit
                        .record_durable(RecordBody::Approval(Approval {
                            approvals_missing: required - have,
                            ..approval(
                                &held,
                                &agent.name,
                                &reviewer.name,
                                ApprovalDecision::Approve,
                                scope,
                                reason,
                            )
                        }))
                        .await;
                    return Ok(Decided {
                        id,
                        outcome: "approval recorded".to_owned(),
                        approvals_missing: required - have,
                    });
                }
            }
        }
        let decision = match action {
            ReviewAction::Approve { .. } => ApprovalDecision::Approve,
            ReviewAction::Deny => ApprovalDecision::Deny,
            ReviewAction::Kill => ApprovalDecision::Kill,
        };
        match self.apply(&held, decision, scope).await {
            Ok(()) => {}
            Err(ApplyError::NotPending) => {
                // Answered meanwhile in the kernel (timed out, or the task is gone).
                self.held.remove(&id);
                return Err(DecideError::NotPending(id));
            }
            Err(err) => return Err(DecideError::Failed(err.to_string())),
        }
        self.held.remove(&id);
        self.audit_decision(&held, &agent.name, &reviewer.name, decision, scope, reason)
            .await;
        let outcome = match decision {
            ApprovalDecision::Approve => "approved",
            ApprovalDecision::Deny => "denied",
            ApprovalDecision::Kill => "killed",
        };
        Ok(Decided {
            id,
            outcome: match capped {
                Some(max) => format!(
                    "{outcome} for {} (the agent's max_grant; less than asked)",
                    humantime::format_duration(max)
                ),
                None => outcome.to_owned(),
            },
            approvals_missing: 0,
        })
    }

    /// Whether `reviewer` started a process as `agent`: by uid, or for reviewers without one
    /// (HTTP) by the starter's user name.
    async fn started_agent(&self, agent: &str, reviewer: &Reviewer) -> bool {
        let Some(starters) = self.starters.get(agent).cloned() else {
            return false;
        };
        if let Some(uid) = reviewer.uid {
            return starters.contains(&uid);
        }
        let name = reviewer.name.clone();
        blocking(move || {
            starters.iter().any(|&uid| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .is_some_and(|u| u.name == name)
            })
        })
        .await
        // Cannot tell: refuse, as a starter would be.
        .unwrap_or(true)
    }

    /// Writes the decision into the kernel and resumes (or kills) the task.
    async fn apply(
        &self,
        held: &Held,
        decision: ApprovalDecision,
        scope: Grant,
    ) -> Result<(), ApplyError> {
        let held = held.clone();
        let result = self
            .kernel
            .call(move |enforcer| match decision {
                ApprovalDecision::Approve => {
                    if let Grant::For(duration) = scope {
                        let key = GrantKey {
                            file: held.file,
                            agent_id: held.agent_id,
                            op: held.op as u8,
                            pad: [0; 3],
                        };
                        enforcer.grant_for(key, duration, held.rule_id)?;
                    }
                    enforcer.answer(held.tid, held.request_id, true)
                }
                ApprovalDecision::Deny => enforcer.answer(held.tid, held.request_id, false),
                ApprovalDecision::Kill => {
                    let pid = nix::unistd::Pid::from_raw(held.tgid.cast_signed());
                    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).map_err(
                        |source| BpfError::Continue {
                            tgid: held.tgid,
                            source,
                        },
                    )?;
                    enforcer.remove_pending(held.tid, held.request_id)
                }
            })
            .await
            .map_err(|_| ApplyError::Stopped)?;
        match result {
            Ok(()) => Ok(()),
            Err(BpfError::NotPending { .. }) => Err(ApplyError::NotPending),
            Err(err) => Err(ApplyError::Kernel(err)),
        }
    }

    async fn audit_decision(
        &self,
        held: &Held,
        agent: &str,
        reviewer: &str,
        decision: ApprovalDecision,
        scope: Grant,
        reason: Option<String>,
    ) {
        let record = approval(held, agent, reviewer, decision, scope, reason);
        info!(
            id = held.request_id,
            reviewer,
            decision = decision.name(),
            scope = %record.scope,
            path = %held.path,
            pid = held.tgid,
            "hold answered"
        );
        self.audit
            .record_durable(RecordBody::Approval(record))
            .await;
    }

    /// Aligns the queue with the kernel's pending map: adopts holds the daemon has not seen,
    /// drops answered ones, cleans up after tasks that died while held, and applies timeouts.
    pub async fn reconcile(&mut self) {
        let now = monotonic_ns();
        let entries = match self
            .kernel
            .call(crate::bpf::Enforcer::pending_requests)
            .await
        {
            Ok(Ok(entries)) => entries,
            Ok(Err(err)) => {
                warn!(error = %err, "reading the pending map failed");
                return;
            }
            Err(_) => return,
        };
        // Which tasks are gone: `/proc`, on a blocking thread.
        let tasks: Vec<(u32, u32)> = entries.iter().map(|(tid, r)| (*tid, r.tgid)).collect();
        let Some(gone) = blocking(move || {
            tasks
                .into_iter()
                .filter(|&(tid, tgid)| dead(tid, tgid))
                .map(|(tid, _)| tid)
                .collect::<BTreeSet<u32>>()
        })
        .await
        else {
            return;
        };
        let waiting: BTreeMap<u64, (u32, PendingRequest)> = entries
            .iter()
            .filter(|(_, r)| r.state == STATE_PENDING)
            .map(|&(tid, r)| (r.request_id, (tid, r)))
            .collect();
        self.held.retain(|id, _| waiting.contains_key(id));
        let adopt_before = if self.adopt_all {
            u64::MAX
        } else {
            now.saturating_sub(u64::try_from(ADOPT_AFTER.as_nanos()).unwrap_or(u64::MAX))
        };
        self.adopt_all = false;
        let mut ended = Vec::new();
        let mut adopted = Vec::new();
        for (id, (tid, request)) in &waiting {
            if gone.contains(tid) {
                ended.push((*tid, *request, self.held.remove(id)));
            } else if !self.held.contains_key(id) && *id < adopt_before {
                adopted.push((*tid, *request));
            }
        }
        // Answered entries whose task is gone are never consumed: remove them too.
        let mut removals: Vec<(u32, u64)> = entries
            .iter()
            .filter(|(tid, r)| r.state != STATE_PENDING && gone.contains(tid))
            .map(|(tid, r)| (*tid, r.request_id))
            .collect();
        removals.extend(ended.iter().map(|(tid, r, _)| (*tid, r.request_id)));
        if !removals.is_empty() {
            let _ = self
                .kernel
                .call(move |enforcer| {
                    for (tid, request_id) in removals {
                        let _ = enforcer.remove_pending(tid, request_id);
                    }
                })
                .await;
        }
        let snapshot = self.policy.current();
        for (_, request, held) in ended {
            let agent = snapshot.agent_name(request.agent_id).unwrap_or_default();
            let action = held.as_ref().map(|h| held_action(h, &agent));
            warn!(
                id = request.request_id,
                pid = request.tgid,
                "held process exited before a decision"
            );
            self.audit.record(RecordBody::HoldEnded(HoldEnded {
                request_id: request.request_id,
                reason: "the held process exited before a decision".to_owned(),
                action,
            }));
        }
        self.adopt(adopted).await;
        self.apply_timeouts(now, &snapshot).await;
    }

    /// Queues holds found in the kernel that the daemon has not seen, with the path from their
    /// audit records and the context of their processes.
    async fn adopt(&mut self, adopted: Vec<(u32, PendingRequest)>) {
        if !adopted.is_empty() {
            let audit_path = self.audit_path.clone();
            let found = blocking(move || {
                adopted
                    .into_iter()
                    .map(|(tid, request)| {
                        let (path, path_hex) = find_hold_record(&audit_path, request.request_id)
                            .unwrap_or_else(|| {
                                ("(unknown: held before this audit log)".to_owned(), None)
                            });
                        let op = Op::from_u8(request.op).unwrap_or(Op::Exec);
                        Held {
                            request_id: request.request_id,
                            tid,
                            tgid: request.tgid,
                            agent_id: request.agent_id,
                            op,
                            rule_id: request.rule_id,
                            file: request.file,
                            path,
                            path_hex,
                            process: ProcessContext::read_held(request.tgid, tid, op == Op::Exec),
                            approvals: Vec::new(),
                            // Its record, if any, was committed long ago (ADOPT_AFTER).
                            visible: true,
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for held in found {
                info!(id = held.request_id, pid = held.tgid, path = %held.path, "adopted a held action from the kernel");
                self.held.insert(held.request_id, held);
            }
        }
    }

    async fn apply_timeouts(&mut self, now_ns: u64, snapshot: &PolicySnapshot) {
        let held: Vec<Held> = self.held.values().cloned().collect();
        for h in held {
            let Some(agent) = snapshot.agent_policy(h.agent_id) else {
                continue;
            };
            let (timeout, on_timeout) = agent.hold_timeout(h.rule_id);
            let age = Duration::from_nanos(now_ns.saturating_sub(h.request_id));
            if age < timeout {
                continue;
            }
            let decision = match on_timeout {
                OnTimeout::Allow => ApprovalDecision::Approve,
                OnTimeout::Deny => ApprovalDecision::Deny,
                OnTimeout::Kill => ApprovalDecision::Kill,
            };
            match self.apply(&h, decision, Grant::Once).await {
                Ok(()) => {
                    self.held.remove(&h.request_id);
                    let deadline_ns = h
                        .request_id
                        .saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
                    let reason = if deadline_ns < self.started_ns {
                        format!(
                            "no decision within {}; applied late, at the daemon's start: no \
                             daemon was running at the deadline ({} ago)",
                            humantime::format_duration(timeout),
                            humantime::format_duration(Duration::from_secs(
                                now_ns.saturating_sub(deadline_ns) / 1_000_000_000
                            ))
                        )
                    } else {
                        format!("no decision within {}", humantime::format_duration(timeout))
                    };
                    self.audit_decision(
                        &h,
                        &agent.name,
                        "timeout",
                        decision,
                        Grant::Once,
                        Some(reason),
                    )
                    .await;
                }
                Err(err) => warn!(id = h.request_id, error = %err, "applying a timeout failed"),
            }
        }
    }
}

/// Why a decision could not be written into the kernel.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error("the request is not pending in the kernel")]
    NotPending,
    #[error("the kernel handle has stopped")]
    Stopped,
    #[error(transparent)]
    Kernel(BpfError),
}

/// What reviewers see of `held`. Reads the target's metadata and looks up its owner (NSS):
/// call it on a blocking thread.
fn view(snapshot: &PolicySnapshot, held: &Held, now_ns: u64) -> PendingView {
    let agent = snapshot.agent_policy(held.agent_id);
    let rule = snapshot.rule_name(held.rule_id);
    let (timeout, on_timeout) = agent
        .map_or((crate::policy::DEFAULT_TIMEOUT, OnTimeout::Deny), |a| {
            a.hold_timeout(held.rule_id)
        });
    let age = Duration::from_nanos(now_ns.saturating_sub(held.request_id));
    let held_at = Timestamp::now()
        .checked_sub(jiff::SignedDuration::try_from(age).unwrap_or_default())
        .unwrap_or_else(|_| Timestamp::now());
    let target = match held.op {
        Op::Write
        | Op::Truncate
        | Op::Chmod
        | Op::Chown
        | Op::Metadata
        | Op::Unlink
        | Op::Rename => fs::metadata(&held.path).ok().map(|m| TargetFacts {
            size: m.len(),
            uid: m.uid(),
            owner: nix::unistd::User::from_uid(m.uid().into())
                .ok()
                .flatten()
                .map(|u| u.name),
            mode: format!("{:o}", m.mode() & 0o7777),
        }),
        _ => None,
    };
    PendingView {
        id: held.request_id,
        agent: snapshot
            .agent_name(held.agent_id)
            .unwrap_or_else(|| format!("agent {:#010x}", held.agent_id)),
        op: held.op.name().to_owned(),
        path: held.path.clone(),
        path_hex: held.path_hex.clone(),
        rule,
        pid: held.tgid,
        tid: held.tid,
        uid: held.process.uid.unwrap_or(u32::MAX),
        user: held.process.user.clone(),
        exe: held.process.exe.clone(),
        argv: held.process.argv.clone(),
        exec_argv: held.process.exec_argv.clone(),
        cwd: held.process.cwd.clone(),
        parents: held
            .process
            .parents
            .iter()
            .map(|p| {
                format!(
                    "{} {} {}",
                    p.pid,
                    p.comm.as_deref().unwrap_or("?"),
                    p.exe.as_deref().unwrap_or("?")
                )
            })
            .collect(),
        held_at: format!("{held_at:.0}"),
        age_secs: age.as_secs(),
        timeout_in_secs: timeout.saturating_sub(age).as_secs(),
        on_timeout: on_timeout.name().to_owned(),
        target,
        approvals: held.approvals.clone(),
        required_approvals: agent.map_or(1, |a| a.escalation.required_approvals),
    }
}

/// The path (and its exact bytes in hex, when not UTF-8) of hold `request_id` from the audit
/// log's hold record. Reads the log: call it on a blocking thread.
fn find_hold_record(path: &std::path::Path, request_id: u64) -> Option<(String, Option<String>)> {
    let files = [crate::audit::rotated_path(path, 1), path.to_owned()];
    let mut found = None;
    for file in files {
        let Ok(f) = fs::File::open(&file) else {
            continue;
        };
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            if !line.contains("\"hold\"") {
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["type"] == "kernel" && v["kind"] == "hold" && v["request_id"] == request_id {
                found = Some((
                    v["path"].as_str().unwrap_or_default().to_owned(),
                    v["path_hex"].as_str().map(str::to_owned),
                ));
            }
        }
    }
    found
}

fn held_action(held: &Held, agent: &str) -> HeldAction {
    HeldAction {
        agent: agent.to_owned(),
        op: held.op.name().to_owned(),
        path: held.path.clone(),
        pid: held.tgid,
    }
}

/// The scope of a reviewer's `action`, and the agent's `max_grant` when it cut a longer `--for`.
fn scope_of(action: ReviewAction, agent: &AgentPolicy) -> (Grant, Option<Duration>) {
    match action {
        ReviewAction::Approve {
            once: false,
            for_secs: Some(secs),
        } => {
            let asked = Duration::from_secs(secs);
            match agent.escalation.max_grant {
                Some(max) if asked > max => (Grant::For(max), Some(max)),
                _ => (Grant::For(asked), None),
            }
        }
        ReviewAction::Approve {
            once: false,
            for_secs: None,
        } => (agent.escalation.grant, None),
        ReviewAction::Approve { once: true, .. } | ReviewAction::Deny | ReviewAction::Kill => {
            (Grant::Once, None)
        }
    }
}

/// Whether `reviewer` is among `agent`'s approvers: by uid or user name, or by a group.
fn may_decide(agent: &AgentPolicy, reviewer: &Reviewer) -> bool {
    let approvers = &agent.escalation.approvers;
    approvers.users.iter().any(|u| match reviewer.uid {
        Some(uid) => u.id == uid,
        None => u.name == reviewer.name,
    }) || approvers
        .groups
        .iter()
        .any(|g| reviewer.gids.contains(&g.id))
}

/// The audit record of `reviewer`'s `decision` on `held` (one that took effect: no approvals
/// missing).
fn approval(
    held: &Held,
    agent: &str,
    reviewer: &str,
    decision: ApprovalDecision,
    scope: Grant,
    reason: Option<String>,
) -> Approval {
    Approval {
        request_id: held.request_id,
        reviewer: reviewer.to_owned(),
        decision,
        scope: scope_name(scope),
        reason,
        action: Some(held_action(held, agent)),
        approvals_missing: 0,
    }
}

/// How an approval's scope is written in audit records: `once` or a duration such as `15m`.
fn scope_name(scope: Grant) -> String {
    match scope {
        Grant::Once => "once".to_owned(),
        Grant::For(d) => humantime::format_duration(d).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(escalation: &str) -> AgentPolicy {
        let text = format!(
            "[agent]\nname = \"a\"\ncgroups = [\"jit/a\"]\ndefault = \"hold\"\n\n[escalation]\n\
             approvers = {{ users = [\"root\"] }}\n{escalation}"
        );
        crate::policy::load_str("a.toml", &text)
            .unwrap()
            .agent("a")
            .unwrap()
            .clone()
    }

    #[test]
    fn max_grant_cuts_longer_grants() {
        let capped = agent("grant = \"10m\"\nmax_grant = \"1h\"\n");
        let approve = |for_secs| ReviewAction::Approve {
            once: false,
            for_secs,
        };
        assert_eq!(
            scope_of(approve(Some(7200)), &capped),
            (
                Grant::For(Duration::from_hours(1)),
                Some(Duration::from_hours(1))
            )
        );
        assert_eq!(
            scope_of(approve(Some(600)), &capped),
            (Grant::For(Duration::from_mins(10)), None)
        );
        assert_eq!(
            scope_of(approve(None), &capped),
            (Grant::For(Duration::from_mins(10)), None)
        );
        assert_eq!(scope_of(ReviewAction::Deny, &capped), (Grant::Once, None));
        let free = agent("");
        assert_eq!(
            scope_of(approve(Some(86_400)), &free),
            (Grant::For(Duration::from_hours(24)), None)
        );
        assert!(!free.escalation.self_approval);
    }
}
