//! How reviewers reach held actions: the types every approval channel (control socket, HTTP
//! API, webhook notifier) shares, and the service the daemon implements for them.
//!
//! Channels authenticate the reviewer in their own way (peer credentials on the socket, bearer
//! tokens over HTTP) and then call [`ApprovalService`]; who may decide which request is checked
//! by the service, once, for every channel.
use serde::{Deserialize, Serialize};

pub mod http;
pub mod slack;
pub mod tls;
pub mod web;
pub mod webhook;

/// A held action as reviewers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingView {
    /// The request id reviewers name (`jitctl approve ID`): the kernel's hold id.
    pub id: u64,
    pub agent: String,
    pub op: String,
    /// The resolved path the action is about (invalid UTF-8 replaced by U+FFFD).
    pub path: String,
    /// The path's exact bytes in hex when it is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
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
    /// For a held exec: the environment it passes (values of secret-looking variables hidden,
    /// see `audit::process::shown_env`). An approval binds to `exec_argv` and this, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_env: Option<Vec<String>>,
    /// For a held rename or link: `[source, destination]` as the kernel resolved them,
    /// escaped. An approval binds to both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends: Option<(String, String)>,
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
    /// The risk of the rule that held it (`low`, `medium`, `high`, `critical`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<String>,
    /// Who may decide: user names and `group:NAME`, the rule's own approvers or the agent's.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// The policy author's `hint` of the rule that held it (what the agent is told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// What the agent said about why it needs the action (`jitctl agent justify`): its claim,
    /// not a fact jit checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<Justification>,
    /// The user and group the action is done as, which `user`/`group` rules decided by and an
    /// approval is bound to (policies/README.md, "Users and groups"): the filesystem ids for a
    /// file op, the effective ids for an exec. `uid`/`user` above are the process's real ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting: Option<Acting>,
    /// For a held exec of a file an agent wrote (README, "Provenance"): `this-agent` when the
    /// agent running it wrote it last, else `other-agent`. Absent for a file no agent wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
}

/// The identity a held action is done as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acting {
    pub uid: u32,
    pub gid: u32,
    /// Names from the host's databases, when they have them.
    pub user: Option<String>,
    pub group: Option<String>,
}

impl Acting {
    /// `root`, or `uid 1234` without a name; with the group when `gid` is not the user's own
    /// (`root, group adm`).
    #[must_use]
    pub fn describe(&self) -> String {
        use crate::text::escape;
        let user = self
            .user
            .as_deref()
            .map_or_else(|| format!("uid {}", self.uid), |u| escape(u).into_owned());
        let group = self
            .group
            .as_deref()
            .map_or_else(|| format!("gid {}", self.gid), |g| escape(g).into_owned());
        if self.group.is_some() && self.group == self.user {
            user
        } else {
            format!("{user}, group {group}")
        }
    }
}

/// A justification an agent attached to its own hold through the agent socket
/// (`crate::agent_api`). Untrusted: it says what the agent claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Justification {
    /// The text, [escaped](crate::text::escape): no control characters.
    pub text: String,
    /// Always `agent`: written by the held agent, not by a reviewer or by jit.
    pub source: String,
    /// The process that sent it (inside the agent's cgroup, identified by the kernel).
    pub pid: u32,
    /// When it was attached (RFC 3339).
    pub at: String,
}

impl PendingView {
    /// The path as it may be shown to a human: escaped ([`crate::text`]), from its exact bytes
    /// when it is not UTF-8.
    #[must_use]
    pub fn shown_path(&self) -> String {
        match self.path_hex.as_deref().and_then(crate::text::from_hex) {
            Some(bytes) => crate::text::escape_bytes(&bytes).into_owned(),
            None => crate::text::escape(&self.path).into_owned(),
        }
    }
}

/// The review card `jitctl pending` prints for `r`: a header line, then indented lines with the
/// command an exec would run and its environment (what an approval binds to), the caller's argv, exe and cwd, the target, the parents and the
/// approvals so far. Every string that came from the agent (or any other untrusted source) is
/// shown [escaped](crate::text), so nothing in it can move the cursor, erase or rewrite a line
/// of the card, or hide characters; argument boundaries are visible.
#[must_use]
pub fn review_card(r: &PendingView) -> String {
    use std::fmt::Write as _;

    use crate::text::{argv_line, escape};
    let opt = |s: &Option<String>| {
        s.as_deref()
            .map_or_else(|| "?".to_owned(), |s| escape(s).into_owned())
    };
    // The identity the action is done as, when it is not the process's real user.
    let acting = r
        .acting
        .as_ref()
        .filter(|a| a.uid != r.uid)
        .map_or_else(String::new, |a| format!(" as {}", a.describe()));
    let mut card = format!(
        "{}  {} {} {}{}  (agent {}, pid {}, user {}{acting}, held {}, {} in {})",
        r.id,
        escape(&r.op),
        r.shown_path(),
        r.rule.as_deref().map_or_else(
            || "[default]".to_owned(),
            |rule| format!("[rule: {}]", escape(rule))
        ),
        r.risk
            .as_deref()
            .map_or_else(String::new, |k| format!(" [risk: {}]", escape(k))),
        escape(&r.agent),
        r.pid,
        opt(&r.user),
        crate::text::human_duration(r.age_secs),
        escape(&r.on_timeout),
        crate::text::human_duration(r.timeout_in_secs)
    );
    if let Some(argv) = &r.exec_argv {
        let _ = write!(card, "\n    runs: {}", argv_line(argv));
    }
    if let Some(env) = &r.exec_env {
        let _ = write!(card, "\n    env: {}", argv_line(env));
    }
    if let Some(writer) = &r.written_by {
        let who = match writer.as_str() {
            "this-agent" => "this agent".to_owned(),
            "other-agent" => "another agent".to_owned(),
            other => escape(other).into_owned(),
        };
        let _ = write!(card, "\n    written by: {who} (not installed by the host)");
    }
    if let Some((from, to)) = &r.ends {
        // Escaped already, by the daemon (see `PendingView::ends`).
        let _ = write!(card, "\n    from: {from}  to: {to}");
    }
    if let Some(argv) = &r.argv {
        let by = if r.exec_argv.is_some() {
            "called by"
        } else {
            "argv"
        };
        let _ = write!(card, "\n    {by}: {}", argv_line(argv));
    }
    let _ = write!(card, "\n    exe: {}  cwd: {}", opt(&r.exe), opt(&r.cwd));
    if let Some(t) = &r.target {
        let _ = write!(
            card,
            "\n    target: {} bytes, owner {}, mode {}",
            t.size,
            opt(&t.owner),
            escape(&t.mode)
        );
    }
    if !r.parents.is_empty() {
        let parents: Vec<_> = r.parents.iter().map(|p| escape(p)).collect();
        let _ = write!(card, "\n    parents: {}", parents.join(" <- "));
    }
    if let Some(j) = &r.justification {
        // Escaped by the daemon already; escaped here only if it was not.
        let _ = write!(
            card,
            "\n    agent-provided justification (unverified, pid {}): \"{}\"",
            j.pid,
            crate::text::escaped_once(&j.text)
        );
    }
    if !r.approvers.is_empty() {
        let who: Vec<_> = r.approvers.iter().map(|a| escape(a)).collect();
        let _ = write!(
            card,
            "\n    decided by: {} ({} approval{} needed)",
            who.join(", "),
            r.required_approvals,
            if r.required_approvals == 1 { "" } else { "s" }
        );
    }
    if r.required_approvals > 1 {
        let approvals: Vec<_> = r.approvals.iter().map(|a| escape(a)).collect();
        let _ = write!(
            card,
            "\n    approvals: {}/{} ({})",
            r.approvals.len(),
            r.required_approvals,
            approvals.join(", ")
        );
    }
    card
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
    #[error(
        "request {0} is not pending: already decided (by another reviewer or its timeout), or \
         the held process is gone"
    )]
    NotPending(u64),
    #[error("{reviewer} may not decide for agent {agent}: not among its approvers")]
    NotAnApprover { reviewer: String, agent: String },
    #[error("{0} approved this request already; another approver has to")]
    AlreadyApproved(String),
    #[error(
        "{reviewer} started agent {agent} and may not approve its holds (its policy has \
         `self_approval = false`); another approver has to"
    )]
    SelfApproval { reviewer: String, agent: String },
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
