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
mod assess;
mod manager;
mod review;
mod starters;

use std::time::Duration;

use jit_common::{event::Event, pending::FileId, policy::Op};
use tokio::sync::{mpsc, oneshot};

pub use self::{
    assess::{Assessment, ConditionCache, assess},
    manager::HoldManager,
};
use super::audit_sink::AuditSink;
use crate::{
    agent_api::JustifyError,
    approval::{
        ApprovalService, DecideError, Decided, Justification, PendingView, ReviewAction, Reviewer,
    },
    audit::ProcessContext,
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
    /// The uid and gid the held thread acts as on files, which its `user`/`group` rules were
    /// selected by: from the hold event, or from the kernel's pending entry for a hold adopted
    /// after a restart. `None`: unknown.
    pub ids: Option<(u32, u32)>,
    /// Of an exec: who wrote the file (`jit_common::provenance::WRITER_*`), which its
    /// `written_by` rules were selected by: from the hold event. `None`: unknown (a hold adopted
    /// after a restart).
    pub writer: Option<u32>,
    /// Of a rename or link: (source, destination), escaped, as in the hold's audit record.
    pub ends: Option<(String, String)>,
    /// Distinct reviewers who approved, when more than one approval is required.
    pub approvals: Vec<String>,
    /// What the agent said about it (agent socket): the latest justification.
    pub justification: Option<Justification>,
    /// Whether reviewers may see it: its audit record is durable (I5).
    pub(super) visible: bool,
    /// Decided by the daemon-side conditions of a rule ([`assess`]): approve (`true`) or deny
    /// once its record is durable, never shown to reviewers.
    pub(super) auto: Option<bool>,
    /// Why the conditions decided as they did (the audit record's reason).
    pub(super) assessed: Option<String>,
    /// The monotonic clock when it became visible (0 before): the start of the time to
    /// decision (`crate::metrics`).
    pub(super) shown_ns: u64,
}

impl Held {
    /// A hold as its event reports it, with the context read while the task is stopped.
    #[must_use]
    pub fn from_event(
        event: &Event,
        process: ProcessContext,
        path: String,
        ends: Option<(String, String)>,
    ) -> Self {
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
            ids: Some((event.uid, event.gid)),
            writer: Some(jit_common::provenance::writer_of_flags(event.flags)),
            ends,
            approvals: Vec::new(),
            justification: None,
            visible: false,
            auto: None,
            assessed: None,
            shown_ns: 0,
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
    /// The visible holds of one agent (agent socket): only that agent's.
    AgentPending {
        agent_id: u32,
        reply: oneshot::Sender<Vec<PendingView>>,
    },
    /// An agent's justification for its own hold (agent socket). Never a decision.
    Justify {
        agent_id: u32,
        pid: u32,
        id: u64,
        text: String,
        reply: oneshot::Sender<Result<String, JustifyError>>,
    },
    /// `uid` is about to start a process as `agent` (`jitctl run`): remember it (on disk)
    /// before the process is placed.
    Starter {
        agent: String,
        uid: u32,
        reply: oneshot::Sender<Result<(), String>>,
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

    /// Records (durably) that `uid` starts a process as `agent`; call it before placing the
    /// process, and do not place it on an error.
    ///
    /// # Errors
    /// When the starter could not be written to disk, or the daemon is stopping.
    pub async fn record_starter(&self, agent: &str, uid: u32) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Starter {
                agent: agent.to_owned(),
                uid,
                reply,
            })
            .map_err(|_| "the daemon is stopping".to_owned())?;
        answer
            .await
            .unwrap_or_else(|_| Err("the daemon is stopping".to_owned()))
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

    /// The visible holds of agent `agent_id`, oldest first.
    pub async fn agent_pending(&self, agent_id: u32) -> Vec<PendingView> {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::AgentPending { agent_id, reply })
            .is_err()
        {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Attaches `text` (checked and escaped: [`crate::agent_api::justification_text`]) from
    /// process `pid` of agent `agent_id` to that agent's pending hold `id`; the stored text on
    /// success, once its audit record is durable.
    ///
    /// # Errors
    /// See [`JustifyError`].
    pub async fn justify(
        &self,
        agent_id: u32,
        pid: u32,
        id: u64,
        text: String,
    ) -> Result<String, JustifyError> {
        let (reply, answer) = oneshot::channel();
        let stopping = || JustifyError::Invalid("the daemon is stopping".to_owned());
        self.commands
            .send(Command::Justify {
                agent_id,
                pid,
                id,
                text,
                reply,
            })
            .map_err(|_| stopping())?;
        answer.await.unwrap_or_else(|_| Err(stopping()))
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
pub(in crate::daemon) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(Duration::from(t).as_nanos()).unwrap_or(u64::MAX)
    })
}
