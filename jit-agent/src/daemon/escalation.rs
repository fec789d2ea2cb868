//! Held actions waiting for a reviewer: the queue, reviewers' decisions, timeouts, and the
//! reconciliation with the kernel's pending map that makes all of it restart-safe.
//!
//! The kernel's `PENDING` map is the truth: a held task stays stopped until its entry is
//! answered, whatever happens to the daemon. The queue here adds what reviewers need (path,
//! process context, deadline) and is rebuilt from the map at start: a hold the daemon has not
//! seen (made while it was down) is adopted with the path from the audit log's hold record.
//! Deadlines derive from the hold's id, which is the kernel's monotonic clock at the hold, so a
//! timeout that passed while no daemon ran is applied at once on restart.
use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    time::Duration,
};

use jiff::Timestamp;
use jit_common::{
    event::Event,
    pending::{FileId, GrantKey, PendingRequest, STATE_PENDING},
    policy::Op,
};
use tracing::{info, warn};

use super::Daemon;
use crate::{
    approval::{DecideError, Decided, PendingView, ReviewAction, Reviewer, TargetFacts},
    audit::{
        ProcessContext,
        record::{Approval, ApprovalDecision, HeldAction, HoldEnded, RecordBody},
    },
    policy::{AgentPolicy, Grant, OnTimeout},
};

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
}

/// The queue, by request id.
#[derive(Default)]
pub struct Queue {
    pub held: BTreeMap<u64, Held>,
    /// Users who started processes as each agent (`jitctl run`), by agent name, since this
    /// daemon started: with `self_approval = false` they may not approve the agent's holds.
    pub starters: BTreeMap<String, std::collections::BTreeSet<u32>>,
}

/// The kernel's monotonic clock (what `bpf_ktime_get_ns` reads), in nanoseconds.
pub(super) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(Duration::from(t).as_nanos()).unwrap_or(u64::MAX)
    })
}

/// Whether held task `thread` of `process` is gone for sure. A task whose state cannot be read
/// (the daemon is out of file descriptors, for example) is kept: dropping its pending entry
/// would leave it stopped forever. Logged once per run of such failures.
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

impl Daemon {
    /// A hold event: the task is stopped; queue it with its context.
    pub(super) fn on_hold(&self, event: &Event, process: ProcessContext, path: String) {
        let op = Op::from_u8(event.op).unwrap_or(Op::Exec);
        let held = Held {
            request_id: event.request_id,
            tid: event.pid,
            tgid: event.tgid,
            agent_id: event.agent_id,
            op,
            rule_id: event.rule_id,
            file: event.file,
            path_hex: std::str::from_utf8(event.path_bytes())
                .is_err()
                .then(|| crate::audit::to_hex(event.path_bytes())),
            path,
            process,
            approvals: Vec::new(),
        };
        self.queue().held.insert(held.request_id, held.clone());
        let view = self.view(&held, monotonic_ns());
        self.notify(&view);
    }

    /// The agent policy of `agent_id` in force, with its name.
    fn agent_policy(&self, agent_id: u32) -> Option<AgentPolicy> {
        let state = self.policy();
        let name = state.agent_name(agent_id)?;
        state.set.as_ref()?.agent(&name).cloned()
    }

    /// What reviewers see of `held`.
    fn view(&self, held: &Held, now_ns: u64) -> PendingView {
        let agent = self.agent_policy(held.agent_id);
        let rule = self.policy().rule_name(held.rule_id);
        let (timeout, on_timeout) = agent
            .as_ref()
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
            agent: self
                .policy()
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

    /// Every queued hold, oldest first.
    pub fn pending_views(&self) -> Vec<PendingView> {
        let now = monotonic_ns();
        let held: Vec<Held> = self.queue().held.values().cloned().collect();
        held.iter().map(|h| self.view(h, now)).collect()
    }

    /// A reviewer's decision.
    ///
    /// # Errors
    /// See [`DecideError`].
    pub fn decide(
        &self,
        id: u64,
        reviewer: &Reviewer,
        action: ReviewAction,
        reason: Option<String>,
    ) -> Result<Decided, DecideError> {
        let held = self
            .queue()
            .held
            .get(&id)
            .cloned()
            .ok_or(DecideError::NotPending(id))?;
        let agent = self.agent_policy(held.agent_id);
        let agent_name = self
            .policy()
            .agent_name(held.agent_id)
            .unwrap_or_else(|| format!("agent {:#010x}", held.agent_id));
        let Some(agent) = agent else {
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
            && self.started_agent(&agent.name, reviewer)
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
                let mut queue = self.queue();
                let entry = queue.held.get_mut(&id).ok_or(DecideError::NotPending(id))?;
                if entry.approvals.contains(&reviewer.name) {
                    return Err(DecideError::AlreadyApproved(reviewer.name.clone()));
                }
                entry.approvals.push(reviewer.name.clone());
                let have = u32::try_from(entry.approvals.len()).unwrap_or(u32::MAX);
                if have < required {
                    drop(queue);
                    info!(id, reviewer = %reviewer.name, have, required, "approval recorded");
                    self.audit(RecordBody::Approval(Approval {
                        approvals_missing: required - have,
                        ..approval(
                            &held,
                            &agent.name,
                            &reviewer.name,
                            ApprovalDecision::Approve,
                            scope,
                            reason,
                        )
                    }));
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
        self.apply(&held, decision, scope)
            .map_err(DecideError::Failed)?;
        self.queue().held.remove(&id);
        self.audit_decision(&held, &agent.name, &reviewer.name, decision, scope, reason);
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

    /// Records that `uid` started a process as `agent` (`jitctl run`).
    pub(super) fn record_starter(&self, agent: &str, uid: u32) {
        self.queue()
            .starters
            .entry(agent.to_owned())
            .or_default()
            .insert(uid);
    }

    /// Whether `reviewer` started a process as `agent`: by uid, or for reviewers without one
    /// (HTTP) by the starter's user name.
    fn started_agent(&self, agent: &str, reviewer: &Reviewer) -> bool {
        let queue = self.queue();
        let Some(starters) = queue.starters.get(agent) else {
            return false;
        };
        match reviewer.uid {
            Some(uid) => starters.contains(&uid),
            None => starters.iter().any(|&uid| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .is_some_and(|u| u.name == reviewer.name)
            }),
        }
    }

    /// Writes the decision into the kernel and resumes (or kills) the task.
    fn apply(&self, held: &Held, decision: ApprovalDecision, scope: Grant) -> Result<(), String> {
        let mut enforcer = self.enforcer();
        match decision {
            ApprovalDecision::Approve => {
                if let Grant::For(duration) = scope {
                    let key = GrantKey {
                        file: held.file,
                        agent_id: held.agent_id,
                        op: held.op as u8,
                        pad: [0; 3],
                    };
                    enforcer
                        .grant_for(key, duration, held.rule_id)
                        .map_err(|e| e.to_string())?;
                }
                enforcer
                    .answer(held.tid, held.request_id, true)
                    .map_err(|e| e.to_string())
            }
            ApprovalDecision::Deny => enforcer
                .answer(held.tid, held.request_id, false)
                .map_err(|e| e.to_string()),
            ApprovalDecision::Kill => {
                let pid = nix::unistd::Pid::from_raw(held.tgid.cast_signed());
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
                    .map_err(|e| format!("killing process {}: {e}", held.tgid))?;
                enforcer
                    .remove_pending(held.tid, held.request_id)
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn audit_decision(
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
        self.audit(RecordBody::Approval(record));
    }

    /// Aligns the queue with the kernel's pending map: adopts holds the daemon has not seen,
    /// drops answered ones, cleans up after tasks that died while held, and applies timeouts.
    pub(super) fn reconcile(&self) {
        let now = monotonic_ns();
        let mut adopted = Vec::new();
        let mut ended = Vec::new();
        // The pending map is read while the queue is locked: a hold queued by the event handler
        // had its kernel entry written before its event, so the snapshot has it. Read before
        // locking, a hold queued in between would be dropped here as answered and re-adopted
        // later, possibly before its audit record is on disk, then without its path.
        let entries = {
            let mut queue = self.queue();
            let entries = match self.enforcer().pending_requests() {
                Ok(entries) => entries,
                Err(err) => {
                    warn!(error = %err, "reading the pending map failed");
                    return;
                }
            };
            let waiting: BTreeMap<u64, (u32, PendingRequest)> = entries
                .iter()
                .filter(|(_, r)| r.state == STATE_PENDING)
                .map(|&(tid, r)| (r.request_id, (tid, r)))
                .collect();
            queue.held.retain(|id, _| waiting.contains_key(id));
            for (id, (tid, request)) in &waiting {
                if dead(*tid, request.tgid) {
                    ended.push((*tid, *request, queue.held.remove(id)));
                } else if !queue.held.contains_key(id) {
                    adopted.push((*tid, *request));
                }
            }
            entries
        };
        // Answered entries whose task is gone are never consumed: remove them too.
        for (tid, request) in &entries {
            if request.state != STATE_PENDING && dead(*tid, request.tgid) {
                let _ = self.enforcer().remove_pending(*tid, request.request_id);
            }
        }
        for (tid, request, held) in ended {
            let _ = self.enforcer().remove_pending(tid, request.request_id);
            let agent = self
                .policy()
                .agent_name(request.agent_id)
                .unwrap_or_default();
            let action = held.as_ref().map(|h| held_action(h, &agent));
            warn!(
                id = request.request_id,
                pid = request.tgid,
                "held process exited before a decision"
            );
            self.audit(RecordBody::HoldEnded(HoldEnded {
                request_id: request.request_id,
                reason: "the held process exited before a decision".to_owned(),
                action,
            }));
        }
        for (tid, request) in adopted {
            let (path, path_hex) = self
                .find_hold_record(request.request_id)
                .unwrap_or_else(|| ("(unknown: held before this audit log)".to_owned(), None));
            let held = Held {
                request_id: request.request_id,
                tid,
                tgid: request.tgid,
                agent_id: request.agent_id,
                op: Op::from_u8(request.op).unwrap_or(Op::Exec),
                rule_id: request.rule_id,
                file: request.file,
                path,
                path_hex,
                process: ProcessContext::read_held(
                    request.tgid,
                    tid,
                    Op::from_u8(request.op) == Some(Op::Exec),
                ),
                approvals: Vec::new(),
            };
            info!(id = held.request_id, pid = held.tgid, path = %held.path, "adopted a held action from the kernel");
            self.queue().held.insert(held.request_id, held);
        }
        self.apply_timeouts(now);
    }

    fn apply_timeouts(&self, now_ns: u64) {
        let held: Vec<Held> = self.queue().held.values().cloned().collect();
        for h in held {
            let Some(agent) = self.agent_policy(h.agent_id) else {
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
            match self.apply(&h, decision, Grant::Once) {
                Ok(()) => {
                    self.queue().held.remove(&h.request_id);
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
                    );
                }
                Err(err) => warn!(id = h.request_id, error = %err, "applying a timeout failed"),
            }
        }
    }

    /// The path (and its exact bytes in hex, when not UTF-8) of hold `request_id` from the
    /// audit log's hold record.
    fn find_hold_record(&self, request_id: u64) -> Option<(String, Option<String>)> {
        let path = &self.config.audit.path;
        let files = [crate::audit::rotated_path(path, 1), path.clone()];
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
