//! How reviewers reach held actions: the types every approval channel (control socket, HTTP
//! API, webhook notifier) shares, and the service the daemon implements for them.
//!
//! Channels authenticate the reviewer in their own way (peer credentials on the socket, bearer
//! tokens over HTTP) and then call [`ApprovalService`]; who may decide which request is checked
//! by the service, once, for every channel.
use serde::{Deserialize, Serialize};

pub mod http;
pub mod webhook;

/// A held action as reviewers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingView {
    /// The request id reviewers name (`jitctl approve ID`): the kernel's hold id.
    pub id: u64,
    pub agent: String,
    pub op: String,
    /// The resolved path the action is about.
    pub path: String,
    /// The rule that held it (`None`: the agent's default).
    pub rule: Option<String>,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub user: Option<String>,
    pub exe: Option<String>,
    pub argv: Option<Vec<String>>,
    /// For a held exec: the command that runs if approved (the arguments passed to `execve`);
    /// `argv` and `exe` are those of the program that called it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_argv: Option<Vec<String>>,
    pub cwd: Option<String>,
    /// Parent chain, nearest first: `pid comm exe`.
    pub parents: Vec<String>,
    /// When the action was held (RFC 3339) and how long ago, in seconds.
    pub held_at: String,
    pub age_secs: u64,
    /// Seconds until `on_timeout` applies.
    pub timeout_in_secs: u64,
    pub on_timeout: String,
    /// For write-like ops: the target as it is now (`None` when it does not exist).
    pub target: Option<TargetFacts>,
    /// Reviewers who approved so far (when `required_approvals` > 1).
    pub approvals: Vec<String>,
    pub required_approvals: u32,
}

/// The file a held write-like action would change, as it is while the action waits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFacts {
    pub size: u64,
    pub uid: u32,
    pub owner: Option<String>,
    /// Permission bits, octal.
    pub mode: String,
}

/// Who decides: authenticated by the channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reviewer {
    /// The name in audit records: the user name (socket) or the token's name (HTTP).
    pub name: String,
    /// The Unix identity, when the channel has one (the socket); HTTP reviewers are matched
    /// against `approvers.users` by `name`.
    pub uid: Option<u32>,
    /// Group ids (primary and supplementary) when the channel knows them.
    pub gids: Vec<u32>,
    /// `socket` or `http`.
    pub channel: String,
}

/// What a reviewer decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ReviewAction {
    /// Let the action proceed: once, or every matching action of the agent on the same file for
    /// `for_secs` seconds (enforced by the kernel's clock). Neither: the agent's `grant` default.
    Approve { once: bool, for_secs: Option<u64> },
    /// Fail the action with `EPERM`; the process continues.
    Deny,
    /// Kill the held process.
    Kill,
}

/// The outcome of a decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    pub id: u64,
    /// `approved`, `denied`, `killed`, or `approval recorded` (more approvals needed).
    pub outcome: String,
    /// Approvals still missing (0 when the decision took effect).
    pub approvals_missing: u32,
}

/// Why a decision was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DecideError {
    #[error("no pending request {0} (answered already, timed out, or the process is gone)")]
    NotPending(u64),
    #[error("{reviewer} may not decide for agent {agent}: not among its approvers")]
    NotAnApprover { reviewer: String, agent: String },
    #[error("{0} approved this request already; another approver has to")]
    AlreadyApproved(String),
    #[error("{0}")]
    Failed(String),
}

/// What the daemon offers to every approval channel.
pub trait ApprovalService: Send + Sync + 'static {
    /// Every held action waiting for a decision, oldest first.
    fn pending(&self) -> Vec<PendingView>;

    /// Applies `action` of `reviewer` to request `id`, after checking the reviewer may decide.
    ///
    /// # Errors
    /// [`DecideError`]: unknown request, reviewer not allowed, or the kernel refused.
    fn decide(
        &self,
        id: u64,
        reviewer: &Reviewer,
        action: ReviewAction,
        reason: Option<String>,
    ) -> Result<Decided, DecideError>;

    /// A stream of audit records (each one JSON object as written to the log) from now on.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String>;
}
