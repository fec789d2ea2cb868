//! What reviewers see of a hold, and the pure rules of a decision: who may decide, the scope of
//! an approval, the audit record of it.
use std::{fs, os::unix::fs::MetadataExt as _, time::Duration};

use jiff::Timestamp;
use jit_common::policy::Op;

use super::Held;
use crate::{
    approval::{PendingView, ReviewAction, Reviewer, TargetFacts},
    audit::record::{Approval, ApprovalDecision, HeldAction},
    daemon::policy_store::PolicySnapshot,
    policy::{AgentPolicy, Grant, OnTimeout},
};

/// What reviewers see of `held`. Reads the target's metadata and looks up its owner (NSS):
/// call it on a blocking thread.
pub(super) fn view(snapshot: &PolicySnapshot, held: &Held, now_ns: u64) -> PendingView {
    let agent = snapshot.agent_policy(held.agent_id);
    let rule = snapshot.rule_name(held.rule_id);
    let review = agent.map(|a| a.review(held.rule_id));
    let (timeout, on_timeout) = review
        .map_or((crate::policy::DEFAULT_TIMEOUT, OnTimeout::Deny), |r| {
            (r.timeout, r.on_timeout)
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
        acting: held.ids.map(|(uid, gid)| crate::approval::Acting {
            uid,
            gid,
            user: nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name),
            group: nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                .ok()
                .flatten()
                .map(|g| g.name),
        }),
        written_by: held
            .writer
            .and_then(jit_common::provenance::writer_name)
            .map(str::to_owned),
        exe: held.process.exe.clone(),
        argv: held.process.argv.clone(),
        exec_argv: held.process.exec_argv.clone(),
        exec_env: held.process.exec_env.clone(),
        ends: held.ends.clone(),
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
        required_approvals: review.map_or(1, |r| r.required_approvals),
        risk: review.and_then(|r| r.risk).map(|k| k.name().to_owned()),
        approvers: review.map(|r| r.approver_names()).unwrap_or_default(),
        hint: snapshot.rule_hint(held.rule_id),
        justification: held.justification.clone(),
    }
}

pub(super) fn held_action(held: &Held, agent: &str) -> HeldAction {
    HeldAction {
        agent: agent.to_owned(),
        op: held.op.name().to_owned(),
        path: held.path.clone(),
        pid: held.tgid,
        rule_id: Some(held.rule_id),
    }
}

/// The scope of a reviewer's `action`, and the agent's `max_grant` when it cut a longer `--for`.
pub(super) fn scope_of(action: ReviewAction, agent: &AgentPolicy) -> (Grant, Option<Duration>) {
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

/// Whether `reviewer` is among the approvers of holds by rule `rule_id` of `agent` (the rule's
/// own, those of its risk level, or the agent's: [`AgentPolicy::review`]): by uid or user
/// name, or by a group.
pub(super) fn may_decide(agent: &AgentPolicy, rule_id: u32, reviewer: &Reviewer) -> bool {
    let approvers = agent.review(rule_id).approvers;
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
pub(super) fn approval(
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
