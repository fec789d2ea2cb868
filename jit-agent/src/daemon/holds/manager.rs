//! The hold manager's task: the queue and everything that changes it.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fs,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    time::Duration,
};

use jit_common::{
    pending::{GrantKey, PendingRequest, STATE_PENDING},
    policy::Op,
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    Assessment, Command, Held, Holds, assess, monotonic_ns,
    review::{approval, held_action, may_decide, scope_of, view},
    starters::{self, Starters, starters_path},
};
use crate::{
    agent_api::{JUSTIFY_BURST, JUSTIFY_WINDOW, JustifyError, justification_text},
    approval::{
        DecideError, Decided, Justification, PendingView, ReviewAction, Reviewer,
        webhook::WebhookHandle,
    },
    audit::{
        ProcessContext,
        record::{Approval, ApprovalDecision, HoldEnded, JustificationRecord, RecordBody},
    },
    bpf::BpfError,
    daemon::{
        audit_sink::AuditSink,
        kernel::KernelHandle,
        policy_store::{PolicySnapshot, PolicyStore},
    },
    metrics::Metrics,
    policy::{Grant, OnTimeout},
};

/// The reviewer named in the audit records of the daemon's own answers (daemon-side conditions).
pub const POLICY_REVIEWER: &str = "policy";

/// How often the queue is reconciled with the kernel's pending map (and timeouts applied).
const RECONCILE: Duration = Duration::from_millis(500);
/// A kernel hold not announced by the event reader is adopted only once it is this old: its
/// event may still be on its way (in the ring buffer, or its record being committed), and a
/// hold is shown to reviewers only after its record is durable (I5). At start every hold is
/// adopted at once.
const ADOPT_AFTER: Duration = Duration::from_secs(2);

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
    /// Users who started processes as each agent (`jitctl run`), kept on disk
    /// (`starters.rs`): with `self_approval = false` they may not approve the agent's holds.
    starters: Starters,
    starters_path: PathBuf,
    /// When each agent's recent justifications were accepted (rate limit, per agent id).
    justified: BTreeMap<u32, VecDeque<std::time::Instant>>,
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
    metrics: Metrics,
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
        metrics: Metrics,
    ) -> (Self, Holds) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let starters_path = starters_path(&audit_path);
        let starters = Starters::load(&starters_path);
        if let Some(why) = starters.unreadable() {
            warn!(
                error = why,
                "cannot read who started the agents: every reviewer is taken for a starter \
                 (agents with self_approval = false cannot be approved until this is fixed)"
            );
        }
        let manager = Self {
            held: BTreeMap::new(),
            starters,
            starters_path,
            justified: BTreeMap::new(),
            kernel,
            audit: audit.clone(),
            policy,
            webhook,
            audit_path,
            started_ns,
            adopt_all: true,
            commands: receiver,
            metrics,
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
            self.metrics
                .holds_pending(self.held.values().filter(|h| h.visible).count());
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Announce(held) => {
                // An adopted hold keeps the approvals it collected and stays visible.
                let (approvals, visible, justification, shown_ns) =
                    self.held.get(&held.request_id).map_or_else(
                        || (Vec::new(), false, None, 0),
                        |h| {
                            (
                                h.approvals.clone(),
                                h.visible,
                                h.justification.clone(),
                                h.shown_ns,
                            )
                        },
                    );
                let id = held.request_id;
                self.held.insert(
                    id,
                    Held {
                        approvals,
                        justification,
                        visible,
                        shown_ns,
                        ..*held
                    },
                );
                self.assess(id).await;
            }
            Command::Durable(id) => {
                if let Some(held) = self.held.get_mut(&id)
                    && !held.visible
                {
                    if held.auto.is_some() {
                        // The hold's record is durable: the daemon's answer may follow (I5).
                        // Its time to decision counts from here, as a reviewer's would.
                        held.shown_ns = monotonic_ns();
                        let held = held.clone();
                        self.auto_answer(held).await;
                    } else {
                        held.visible = true;
                        held.shown_ns = monotonic_ns();
                        let held = held.clone();
                        self.notify(held).await;
                    }
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
            Command::AgentPending { agent_id, reply } => {
                let _ = reply.send(self.views(Some(agent_id)).await);
            }
            Command::Justify {
                agent_id,
                pid,
                id,
                text,
                reply,
            } => {
                let _ = reply.send(self.justify(agent_id, pid, id, &text).await);
            }
            Command::Starter { agent, uid, reply } => {
                let result = if self.starters.contains(&agent, uid) {
                    Ok(())
                } else {
                    let path = self.starters_path.clone();
                    let name = agent.clone();
                    match blocking(move || starters::append(&path, &name, uid)).await {
                        Some(Ok(())) => {
                            self.starters.insert(agent, uid);
                            Ok(())
                        }
                        Some(Err(e)) => Err(format!(
                            "recording the starter in {}: {e}",
                            self.starters_path.display()
                        )),
                        None => Err("recording the starter failed".to_owned()),
                    }
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Decides what happens to hold `id` by the daemon-side conditions of the policy's rules
    /// (see [`assess`]): an automatic answer is kept for when its record is durable; an
    /// escalation moves the hold to the rule that decided (its approvers, quorum, timeout).
    async fn assess(&mut self, id: u64) {
        let snapshot = self.policy.current();
        // Most holds are by rules without conditions: no blocking hop, no clone for them.
        let Some(held) = self
            .held
            .get(&id)
            .filter(|h| snapshot.rule_is_conditional(h.agent_id, h.rule_id))
            .cloned()
        else {
            return;
        };
        let Some(outcome) = blocking(move || assess(&snapshot, &held)).await else {
            return;
        };
        let Some(entry) = self.held.get_mut(&id) else {
            return;
        };
        match outcome {
            Assessment::Review => {}
            Assessment::Escalate { rule_id, why } => {
                info!(id, rule_id, why, "conditions: held for reviewers");
                entry.rule_id = rule_id;
                entry.assessed = Some(why);
            }
            Assessment::Auto {
                approve,
                rule_id,
                why,
            } => {
                entry.rule_id = rule_id;
                entry.auto = Some(approve);
                entry.assessed = Some(why);
            }
        }
    }

    /// Applies the daemon's own answer to `held` and audits it with reviewer `policy`. When the
    /// kernel refuses the answer (not a missing hold), reviewers get the hold instead.
    async fn auto_answer(&mut self, held: Held) {
        let id = held.request_id;
        let approve = held.auto == Some(true);
        let decision = if approve {
            ApprovalDecision::Approve
        } else {
            ApprovalDecision::Deny
        };
        let snapshot = self.policy.current();
        let agent = snapshot
            .agent_name(held.agent_id)
            .unwrap_or_else(|| format!("agent {:#010x}", held.agent_id));
        match self.apply(&held, decision, Grant::Once).await {
            Ok(()) => {
                self.finish(
                    &held,
                    decision.name(),
                    Some(crate::metrics::channel::POLICY),
                );
                info!(id, agent = %agent, path = %held.path, decision = decision.name(), "decided by the policy's conditions");
                self.audit_decision(
                    &held,
                    &agent,
                    POLICY_REVIEWER,
                    decision,
                    Grant::Once,
                    held.assessed.clone(),
                )
                .await;
            }
            Err(ApplyError::NotPending) => {
                // Answered meanwhile in the kernel (the task is gone).
                self.held.remove(&id);
            }
            Err(err) => {
                warn!(id, error = %err, "applying the policy's decision failed: reviewers decide");
                if let Some(entry) = self.held.get_mut(&id) {
                    entry.auto = None;
                    entry.visible = true;
                    let held = entry.clone();
                    self.notify(held).await;
                }
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
        self.views(None).await
    }

    /// The visible holds (of agent `only`, when given), oldest first.
    async fn views(&self, only: Option<u32>) -> Vec<PendingView> {
        let held: Vec<Held> = self
            .held
            .values()
            .filter(|h| h.visible && only.is_none_or(|a| a == h.agent_id))
            .cloned()
            .collect();
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
        if !may_decide(&agent, held.rule_id, reviewer) {
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
            let required = agent.review(held.rule_id).required_approvals.max(1);
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
        self.finish(&held, decision.name(), Some(&reviewer.channel));
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

    /// An agent's justification for its own visible hold: rate-limited per agent, audited
    /// (durable before it is acknowledged or shown), then shown on every channel (pending
    /// list, HTTP, and the webhook once more). Changes nothing else about the hold: not its
    /// deadline, its order or its approvals.
    async fn justify(
        &mut self,
        agent_id: u32,
        pid: u32,
        id: u64,
        raw: &str,
    ) -> Result<String, JustifyError> {
        let Some(held) = self
            .held
            .get(&id)
            .filter(|h| h.visible && h.agent_id == agent_id)
            .cloned()
        else {
            // The same answer for another agent's hold and for no hold at all.
            return Err(JustifyError::NotYours(id));
        };
        let text = justification_text(raw)?;
        let now = std::time::Instant::now();
        let sent = self.justified.entry(agent_id).or_default();
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= JUSTIFY_WINDOW)
        {
            sent.pop_front();
        }
        if sent.len() >= JUSTIFY_BURST {
            let oldest = sent.front().copied().unwrap_or(now);
            let retry = JUSTIFY_WINDOW.saturating_sub(now.duration_since(oldest));
            warn!(agent_id, pid, id, "refused a justification: rate limit");
            return Err(JustifyError::RateLimited {
                burst: JUSTIFY_BURST,
                window_secs: JUSTIFY_WINDOW.as_secs(),
                retry_in_secs: retry.as_secs().max(1),
            });
        }
        sent.push_back(now);
        let snapshot = self.policy.current();
        let agent = snapshot
            .agent_name(agent_id)
            .unwrap_or_else(|| format!("agent {agent_id:#010x}"));
        self.audit
            .record_durable(RecordBody::Justification(JustificationRecord {
                request_id: id,
                source: "agent".to_owned(),
                pid,
                text: text.clone(),
                action: Some(held_action(&held, &agent)),
            }))
            .await;
        let justification = Justification {
            text: text.clone(),
            source: "agent".to_owned(),
            pid,
            at: format!("{:.0}", jiff::Timestamp::now()),
        };
        let Some(entry) = self.held.get_mut(&id) else {
            return Err(JustifyError::NotYours(id));
        };
        entry.justification = Some(justification);
        let updated = entry.clone();
        info!(id, agent = %agent, pid, "the agent justified its hold");
        // Reviewers who were told of the hold are told what the agent says about it.
        self.notify(updated).await;
        Ok(text)
    }

    /// Whether `reviewer` started a process as `agent`: by uid, or for reviewers without one
    /// (HTTP) by the starter's user name.
    async fn started_agent(&self, agent: &str, reviewer: &Reviewer) -> bool {
        let Some(starters) = self.starters.of(agent) else {
            // The starters file could not be read: anyone may have started it.
            return true;
        };
        if starters.is_empty() {
            return false;
        }
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

    /// Drops a hold that ended from the queue and counts it: its held time, and its time to
    /// decision on `channel`.
    fn finish(&mut self, held: &Held, outcome: &str, channel: Option<&str>) {
        self.held.remove(&held.request_id);
        let now = monotonic_ns();
        let since = |ns: u64| Duration::from_nanos(now.saturating_sub(ns));
        let shown = (held.shown_ns > 0).then(|| since(held.shown_ns));
        self.metrics
            .hold_ended(outcome, since(held.request_id), channel.zip(shown));
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
                            // Only as the identity the reviewer approved (none matches when
                            // it is unknown).
                            ids: held.ids.map_or(u64::MAX, |(uid, gid)| {
                                jit_common::pending::join_ids(uid, gid)
                            }),
                        };
                        enforcer.grant_for(key, duration, held.rule_id)?;
                    }
                    // A held `execve` runs only with the strings the reviewer was shown.
                    let args = held.process.exec_binding.unwrap_or_default();
                    enforcer.answer_bound(held.tid, held.request_id, true, args)
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
            if let Some(held) = &held {
                self.finish(held, "exited", None);
            }
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
                        let (path, path_hex, ends) =
                            find_hold_record(&audit_path, request.request_id).unwrap_or_else(
                                || {
                                    (
                                        "(unknown: held before this audit log)".to_owned(),
                                        None,
                                        None,
                                    )
                                },
                            );
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
                            // The ids the kernel recorded with the hold.
                            ids: Some(jit_common::pending::split_ids(request.ids)),
                            // Not in the pending entry: `written_by` rules decide as for
                            // unreadable facts.
                            writer: None,
                            ends,
                            approvals: Vec::new(),
                            justification: None,
                            // Its record, if any, was committed long ago (ADOPT_AFTER).
                            visible: true,
                            auto: None,
                            assessed: None,
                            shown_ns: monotonic_ns(),
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for held in found {
                info!(id = held.request_id, pid = held.tgid, path = %held.path, "adopted a held action from the kernel");
                let id = held.request_id;
                self.held.insert(id, held);
                // Its record is durable: a daemon-side decision applies at once.
                self.assess(id).await;
                if let Some(held) = self.held.get(&id).filter(|h| h.auto.is_some()).cloned() {
                    self.auto_answer(held).await;
                }
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
                    self.finish(&h, decision.name(), Some(crate::metrics::channel::TIMEOUT));
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

/// The path (and its exact bytes in hex, when not UTF-8) of hold `request_id` from the audit
/// log's hold record. Reads the log: call it on a blocking thread.
#[expect(clippy::type_complexity, reason = "path, its hex form, the two ends")]
fn find_hold_record(
    path: &std::path::Path,
    request_id: u64,
) -> Option<(String, Option<String>, Option<(String, String)>)> {
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
                    v["source"]
                        .as_str()
                        .zip(v["destination"].as_str())
                        .map(|(s, d)| (s.to_owned(), d.to_owned())),
                ));
            }
        }
    }
    found
}
