//! A fake kernel backend behind a real [`ApprovalService`]: held actions live in memory, a
//! decision removes them (or records one approval of a quorum) and, like the daemon, each hold
//! and each decision is published on the audit stream as the record the daemon would write
//! (docs/audit-schema.md). Who may decide is checked here, as the daemon's service does: a
//! reviewer not among the hold's `approvers` is refused.
#![allow(dead_code)]

use std::sync::Mutex;

use jit_agent::approval::{
    ApprovalService, DecideError, Decided, PendingView, ReviewAction, Reviewer,
};
use serde_json::json;
use tokio::sync::broadcast;

/// What the service was asked to do, and by whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: u64,
    pub reviewer: Reviewer,
    pub action: ReviewAction,
    pub reason: Option<String>,
}

pub struct FakeHolds {
    pub pending: Mutex<Vec<PendingView>>,
    pub decisions: Mutex<Vec<Decision>>,
    pub records: broadcast::Sender<String>,
    seq: Mutex<u64>,
}

impl Default for FakeHolds {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            decisions: Mutex::default(),
            records: broadcast::channel(256).0,
            seq: Mutex::new(0),
        }
    }
}

impl FakeHolds {
    fn publish(&self, mut record: serde_json::Value) {
        let mut seq = self.seq.lock().unwrap();
        *seq += 1;
        record["v"] = json!(1);
        record["seq"] = json!(*seq);
        record["time"] = json!(jiff::Timestamp::now().to_string());
        let _ = self.records.send(record.to_string());
    }

    /// A new held action, as the kernel's event and the daemon's hold record.
    pub fn hold(&self, view: PendingView) {
        let record = json!({
            "type": "kernel", "kind": "hold", "op": view.op, "path": view.path,
            "decision": "hold", "enforced": "hold", "agent": view.agent,
            "pid": view.pid, "tgid": view.pid, "request_id": view.id,
        });
        self.pending.lock().unwrap().push(view);
        self.publish(record);
    }

    /// The held process went away (`hold_ended`).
    pub fn end(&self, id: u64, reason: &str) {
        let view = {
            let mut pending = self.pending.lock().unwrap();
            let index = pending.iter().position(|p| p.id == id).unwrap();
            pending.remove(index)
        };
        self.publish(json!({
            "type": "hold_ended", "request_id": id, "reason": reason,
            "action": { "agent": view.agent, "op": view.op, "path": view.path, "pid": view.pid },
        }));
    }

    pub fn decisions(&self) -> Vec<Decision> {
        self.decisions.lock().unwrap().clone()
    }
}

impl ApprovalService for FakeHolds {
    fn pending(&self) -> Vec<PendingView> {
        self.pending.lock().unwrap().clone()
    }

    fn decide(
        &self,
        id: u64,
        reviewer: &Reviewer,
        action: ReviewAction,
        reason: Option<String>,
    ) -> Result<Decided, DecideError> {
        let mut pending = self.pending.lock().unwrap();
        let index = pending
            .iter()
            .position(|p| p.id == id)
            .ok_or(DecideError::NotPending(id))?;
        let view = pending[index].clone();
        if !view.approvers.is_empty() && !view.approvers.contains(&reviewer.name) {
            return Err(DecideError::NotAnApprover {
                reviewer: reviewer.name.clone(),
                agent: view.agent.clone(),
            });
        }
        pending.remove(index);
        drop(pending);
        self.decisions.lock().unwrap().push(Decision {
            id,
            reviewer: reviewer.clone(),
            action,
            reason: reason.clone(),
        });
        let (decision, scope, outcome) = match action {
            ReviewAction::Approve { once: true, .. } => ("approve", "once".to_owned(), "approved"),
            ReviewAction::Approve {
                for_secs: Some(s), ..
            } => ("approve", format!("{s}s"), "approved"),
            ReviewAction::Approve { .. } => ("approve", "once".to_owned(), "approved"),
            ReviewAction::Deny => ("deny", "once".to_owned(), "denied"),
            ReviewAction::Kill => ("kill", "once".to_owned(), "killed"),
        };
        self.publish(json!({
            "type": "approval", "request_id": id, "reviewer": reviewer.name,
            "decision": decision, "scope": scope, "reason": reason,
            "action": { "agent": view.agent, "op": view.op, "path": view.path, "pid": view.pid },
        }));
        Ok(Decided {
            id,
            outcome: outcome.to_owned(),
            approvals_missing: 0,
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<String> {
        self.records.subscribe()
    }
}

/// A held exec as the daemon would show it.
pub fn view(id: u64, path: &str) -> PendingView {
    PendingView {
        id,
        agent: "coding-agent".into(),
        op: "exec".into(),
        path: path.into(),
        path_hex: None,
        rule: Some("network tools need a reviewer".into()),
        pid: 4242,
        tid: 4242,
        uid: 1000,
        user: Some("dev".into()),
        exe: Some("/usr/bin/bash".into()),
        argv: Some(vec!["bash".into(), "./setup.sh".into()]),
        exec_argv: Some(vec![
            "curl".into(),
            "-fsSL".into(),
            "https://example.com/install.sh".into(),
        ]),
        exec_env: Some(vec!["PATH=/usr/bin:/bin".into(), "API_KEY=<hidden>".into()]),
        ends: None,
        cwd: Some("/srv/work/app".into()),
        parents: vec![
            "4190 bash /usr/bin/bash".into(),
            "4101 agent /usr/bin/python3.12".into(),
        ],
        held_at: "2026-01-02T09:14:03Z".into(),
        age_secs: 12,
        timeout_in_secs: 288,
        on_timeout: "deny".into(),
        target: None,
        approvals: vec![],
        required_approvals: 1,
        hint: Some("ask a reviewer before fetching scripts".into()),
        justification: None,
        acting: None,
        written_by: None,
        risk: Some("high".into()),
        approvers: vec!["alice".into(), "group:oncall".into()],
    }
}

/// A token file private to its owner.
pub fn write_token(
    dir: &std::path::Path,
    name: &str,
    secret: &str,
) -> jit_agent::config::HttpToken {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, secret).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    jit_agent::config::HttpToken {
        name: name.into(),
        token_file: path,
    }
}
