//! The typed audit record (schema version [`SCHEMA_VERSION`]); see the [module docs](super) for
//! the field tables.

use jiff::Timestamp;
use jit_common::{
    event::{
        EVENT_FLAG_ARGS_CHANGED, EVENT_FLAG_MAPPING, EVENT_FLAG_PATH_TRUNCATED,
        EVENT_FLAG_PATH_UNRESOLVED, EVENT_FLAG_PEER_IS_SOURCE, Event, EventKind,
    },
    policy::{Decision, Op},
    protect::{SELF_PROTECTION_RULE_ID, event_op},
    provenance::{writer_name, writer_of_flags},
};
use serde::{Deserialize, Serialize};

use super::{chain::to_hex, process::ProcessContext};

/// Value of every record's `v`. Bumped only for changes old readers would misread (a field
/// renamed, removed or given another meaning); new optional fields and new `type`s do not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// One line of the audit log.
///
/// Field order is the order of the JSON object: `v`, `seq`, `time`, `type`, the fields of the
/// type, `prev`. `seq`, `time` and `prev` are assigned by [`AuditWriter`](super::AuditWriter);
/// callers only build the [`RecordBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// Position in the chain: 1 for the first record, then +1 per record, across rotations and
    /// daemon restarts.
    pub seq: u64,
    /// Wall-clock time the record was written, RFC 3339 UTC with microseconds.
    #[serde(with = "rfc3339_micros")]
    pub time: Timestamp,
    /// `type` and the type's fields.
    #[serde(flatten)]
    pub body: RecordBody,
    /// Lowercase hex SHA-256 of the previous record's line (without its newline); 64 zeros for
    /// `seq` 1.
    pub prev: String,
}

impl Record {
    /// The exact line written to the log for this record, without the newline.
    ///
    /// # Errors
    /// Only if serialization fails, which the record types cannot cause (no maps with non-string
    /// keys, no `PathBuf`s); kept as an error rather than a panic because audit must not crash
    /// the daemon.
    pub fn to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses one line (without its newline).
    ///
    /// # Errors
    /// When the line is not a record of a known `type` under this schema.
    pub fn from_line(line: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// `type` and the fields that go with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "kernel records are the common case: boxing them would add an allocation to most \
              records to make the rare ones smaller"
)]
pub enum RecordBody {
    /// An event the kernel reported (hold, decision, grant used or denied).
    Kernel(KernelRecord),
    /// A policy set was validated and loaded into the maps.
    PolicyLoaded(PolicyLoaded),
    /// A policy set was rejected; the previous one stays in force (docs/ARCHITECTURE.md, I3).
    PolicyRejected(PolicyRejected),
    /// The daemon started (after resuming the chain).
    DaemonStarted(DaemonStarted),
    /// The daemon is stopping in an orderly way. Its absence before the next `daemon_started`
    /// means the daemon crashed or was killed.
    DaemonStopped(DaemonStopped),
    /// The kernel could not deliver events (ring buffer full): docs/ARCHITECTURE.md, I4 requires saying so.
    EventsDropped(EventsDropped),
    /// Actions an `audit` rule allowed were refused because the kernel's ring buffer had no
    /// room for their records (docs/ARCHITECTURE.md, I4).
    AuditRefused(AuditRefused),
    /// Denials the kernel enforced while its ring buffer had no room for their records,
    /// counted per agent, rule and op (docs/ARCHITECTURE.md, I4).
    DenialsSummarized(DenialsSummarized),
    /// A reviewer answered a hold.
    Approval(Approval),
    /// The writer found a torn tail (a crash mid-write) when it opened the log and cut it off.
    AuditRecovered(AuditRecovered),
    /// A hold ended without a reviewer's decision: the held process exited or was killed by
    /// someone else.
    HoldEnded(HoldEnded),
    /// The writer opened a log that ends before its checkpoint (`PATH.head`): records were cut
    /// off the end while no writer had it open.
    AuditCut(AuditCut),
    /// A held agent attached a justification to its own hold (agent socket): its claim, for
    /// reviewers, not a decision.
    Justification(JustificationRecord),
}

impl RecordBody {
    /// The `type` string of this body.
    #[must_use]
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::Kernel(_) => "kernel",
            Self::PolicyLoaded(_) => "policy_loaded",
            Self::PolicyRejected(_) => "policy_rejected",
            Self::DaemonStarted(_) => "daemon_started",
            Self::DaemonStopped(_) => "daemon_stopped",
            Self::EventsDropped(_) => "events_dropped",
            Self::AuditRefused(_) => "audit_refused",
            Self::DenialsSummarized(_) => "denials_summarized",
            Self::Approval(_) => "approval",
            Self::AuditRecovered(_) => "audit_recovered",
            Self::HoldEnded(_) => "hold_ended",
            Self::AuditCut(_) => "audit_cut",
            Self::Justification(_) => "justification",
        }
    }
}

/// A kernel event. Enumerations are written as their names (`Op::name`, `Decision::name`); a
/// value this build does not know (a newer kernel object) is written as `unknown(N)` rather
/// than dropped, because a record must never be lost over a decoding question.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per kernel event flag, each a field of the documented record schema"
)]
pub struct KernelRecord {
    /// `hold`, `decision`, `grant_used` or `grant_denied`.
    pub kind: String,
    /// The operation (`exec`, `write`, ...).
    pub op: String,
    /// The resolved path; invalid UTF-8 is replaced by U+FFFD (see `path_hex`).
    pub path: String,
    /// The exact path bytes in hex, present only when they are not valid UTF-8, so that
    /// `path` stays a readable string and no byte is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// What the policy decided.
    pub decision: String,
    /// What the kernel applied; differs from `decision` in shadow mode.
    pub enforced: String,
    /// Rule that decided; 0 = the agent's default decision.
    pub rule_id: u32,
    /// Name of that rule, filled in by the daemon from the loaded policy (`null` when unknown).
    pub rule: Option<String>,
    /// Agent id as stored in the maps.
    pub agent_id: u32,
    /// Agent name, filled in by the daemon from the loaded policy (`null` when unknown).
    pub agent: Option<String>,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    /// The hold this event belongs to; `null` for events outside a hold.
    pub request_id: Option<u64>,
    /// Kernel monotonic clock (`bpf_ktime_get_ns`), nanoseconds since boot.
    pub ktime_ns: u64,
    /// Device of the file the action is about (kernel encoding).
    pub dev: u64,
    /// Inode of that file (of the parent directory for create/mkdir).
    pub ino: u64,
    /// The path did not fit the event and was cut.
    pub truncated: bool,
    /// The kernel could not resolve the path; the decision failed closed.
    pub unresolved: bool,
    /// An `exec` decided for an executable mapping (`mmap`/`mprotect` with `PROT_EXEC` of the
    /// file: a library, or a program run by the dynamic loader), not for an `execve`. Written
    /// only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mapping: bool,
    /// An approved `execve` copied other arguments or another environment than the reviewer
    /// approved: the kernel killed the process before the new program ran (`request_id` names
    /// the approval). Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_changed: bool,
    /// Of an `exec` of a file an agent wrote (README, "Provenance"): `this-agent` when the
    /// executing agent wrote it last, else `other-agent`. Absent for every other file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
    /// Of a held rename or link: both ends, as the kernel resolved them (one is `path`, the
    /// other came with the hold), [escaped](crate::text::escape_bytes) so invalid UTF-8 and
    /// control characters are visible. An approval binds to both. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// For self-protection denials of actions that are not file operations (`signal`,
    /// `ptrace`, `bpf`, `cgroup`, `resource`, `kernel`): the signal number, ptrace mode,
    /// `bpf()` command, clone flags, resource code or kernel load id (docs/audit-schema.md).
    /// Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<u64>,
    /// Of a hold: the deciding rule's risk (`low` ... `critical`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<String>,
    /// Of a hold: who may decide it (user names and `group:NAME`: the rule's own approvers,
    /// those of its risk level, or the agent's) and how many approvals it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_approvals: Option<u32>,
    /// Process details read from procfs when the event arrived (`null` when not captured).
    pub process: Option<ProcessContext>,
}

fn unknown(v: u8) -> String {
    format!("unknown({v})")
}

fn kind_name(v: u8) -> String {
    match EventKind::from_u8(v) {
        Some(EventKind::Hold) => "hold".to_owned(),
        Some(EventKind::Decision) => "decision".to_owned(),
        Some(EventKind::GrantUsed) => "grant_used".to_owned(),
        Some(EventKind::GrantDenied) => "grant_denied".to_owned(),
        Some(EventKind::HoldPeer) => "hold_peer".to_owned(),
        None => unknown(v),
    }
}

fn op_name(v: u8) -> String {
    Op::from_u8(v)
        .map(Op::name)
        .or_else(|| event_op::name(v))
        .map_or_else(|| unknown(v), str::to_owned)
}

/// The name of a rule id no policy defines.
const SELF_PROTECTION_RULE: &str = "self-protection";

fn decision_name(v: u8) -> String {
    Decision::from_u8(v).map_or_else(|| unknown(v), |d| d.name().to_owned())
}

impl KernelRecord {
    /// Converts a ring buffer event. `agent` and `rule` stay `None` (except the rule of
    /// self-protection, `"self-protection"`): only the daemon knows the names behind the ids
    /// (see [`KernelRecord::with_names`]).
    #[must_use]
    pub fn from_event(event: &Event, process: Option<ProcessContext>) -> Self {
        let bytes = event.path_bytes();
        let (path, path_hex) = match std::str::from_utf8(bytes) {
            Ok(s) => (s.to_owned(), None),
            Err(_) => (
                String::from_utf8_lossy(bytes).into_owned(),
                Some(to_hex(bytes)),
            ),
        };
        Self {
            kind: kind_name(event.kind),
            op: op_name(event.op),
            path,
            path_hex,
            decision: decision_name(event.decision),
            enforced: decision_name(event.enforced),
            rule_id: event.rule_id,
            rule: (event.rule_id == SELF_PROTECTION_RULE_ID)
                .then(|| SELF_PROTECTION_RULE.to_owned()),
            agent_id: event.agent_id,
            agent: None,
            pid: event.pid,
            tgid: event.tgid,
            ppid: event.ppid,
            uid: event.uid,
            gid: event.gid,
            cgroup_id: event.cgroup_id,
            request_id: (event.request_id != 0).then_some(event.request_id),
            ktime_ns: event.ts_ns,
            dev: event.file.dev,
            ino: event.file.ino,
            truncated: event.flags & EVENT_FLAG_PATH_TRUNCATED != 0,
            unresolved: event.flags & EVENT_FLAG_PATH_UNRESOLVED != 0,
            mapping: event.flags & EVENT_FLAG_MAPPING != 0,
            args_changed: event.flags & EVENT_FLAG_ARGS_CHANGED != 0,
            written_by: writer_name(writer_of_flags(event.flags)).map(str::to_owned),
            source: None,
            destination: None,
            detail: (event.rule_id == SELF_PROTECTION_RULE_ID && Op::from_u8(event.op).is_none())
                .then_some(event.file.name),
            risk: None,
            approvers: None,
            required_approvals: None,
            process,
        }
    }

    /// Sets who reviews this hold, as the policy says ([`crate::policy::AgentPolicy::review`]).
    #[must_use]
    pub fn with_review(mut self, review: Option<crate::policy::Review<'_>>) -> Self {
        if let Some(review) = review {
            self.risk = review.risk.map(|k| k.name().to_owned());
            self.approvers = Some(review.approver_names());
            self.required_approvals = Some(review.required_approvals);
        }
        self
    }

    /// Sets both ends of a held rename or link from `peer`, the `HoldPeer` event that came
    /// with the hold event this record is made of.
    #[must_use]
    pub fn with_peer(mut self, event: &Event, peer: Option<&Event>) -> Self {
        let Some(peer) = peer else {
            return self;
        };
        let this = crate::text::escape_bytes(event.path_bytes()).into_owned();
        let other = crate::text::escape_bytes(peer.path_bytes()).into_owned();
        if peer.flags & EVENT_FLAG_PEER_IS_SOURCE != 0 {
            self.source = Some(other);
            self.destination = Some(this);
        } else {
            self.source = Some(this);
            self.destination = Some(other);
        }
        self
    }

    /// Sets the agent and rule names the daemon looked up for `agent_id` and `rule_id`.
    #[must_use]
    /// Self-protection keeps its own rule name.
    pub fn with_names(mut self, agent: Option<String>, rule: Option<String>) -> Self {
        self.agent = agent;
        if self.rule_id != SELF_PROTECTION_RULE_ID {
            self.rule = rule;
        }
        self
    }
}

impl From<KernelRecord> for RecordBody {
    fn from(r: KernelRecord) -> Self {
        Self::Kernel(r)
    }
}

/// A policy set went into force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyLoaded {
    /// Increases with every successful load; identifies the policy in force.
    pub generation: u64,
    /// The policy files of the set.
    pub files: Vec<String>,
}

/// A policy set was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRejected {
    /// Every error, each as `FILE:LINE:COL: message` where a position is known.
    pub errors: Vec<String>,
}

/// The daemon started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStarted {
    /// `jit-agent` version.
    pub version: String,
    /// Daemon process id.
    pub pid: u32,
}

/// The daemon stops in an orderly way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStopped {
    /// Why (`SIGTERM`, `fatal error: ...`).
    pub reason: String,
}

/// Kernel events were lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsDropped {
    /// Newly dropped since the previous `events_dropped` record.
    pub count: u64,
    /// Dropped since the programs were loaded (the kernel counter).
    pub total: u64,
}

/// Audited actions were refused for want of room for their records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRefused {
    /// Newly refused since the previous `audit_refused` record.
    pub count: u64,
    /// Refused since the programs were loaded (the kernel counter).
    pub total: u64,
}

/// Denials enforced without records of their own: the ring buffer had less than its hold
/// reserve free (a flood of denials, or a daemon that did not read). Each is counted under its
/// agent, rule and op; a record says how many more there were since the previous one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenialsSummarized {
    /// Agent, rule and op of the denials; all `null` for denials for whose key the kernel's
    /// count map had no room either (counted, not keyed).
    pub agent_id: Option<u32>,
    pub agent: Option<String>,
    pub rule_id: Option<u32>,
    pub rule: Option<String>,
    pub op: Option<String>,
    /// `decision` (a rule, the default or self-protection denied) or `grant_denied` (a
    /// reviewer's denial enforced).
    pub kind: Option<String>,
    /// New since the previous record of this key.
    pub count: u64,
    /// Since the programs were loaded (the kernel's count).
    pub total: u64,
    /// Kernel monotonic clock of the first and latest of them; the latest's process and uid.
    pub first_ktime_ns: Option<u64>,
    pub last_ktime_ns: Option<u64>,
    pub last_tgid: Option<u32>,
    pub last_uid: Option<u32>,
}

impl DenialsSummarized {
    /// The record of `count` new denials counted under `key` (`total` since load).
    #[must_use]
    pub fn keyed(
        key: &jit_common::event::DenialKey,
        value: &jit_common::event::DenialCount,
        count: u64,
        agent: Option<String>,
        rule: Option<String>,
    ) -> Self {
        Self {
            agent_id: Some(key.agent_id),
            agent,
            rule_id: Some(key.rule_id),
            rule: if key.rule_id == SELF_PROTECTION_RULE_ID {
                Some(SELF_PROTECTION_RULE.to_owned())
            } else {
                rule
            },
            op: Some(op_name(key.op)),
            kind: Some(kind_name(key.kind)),
            count,
            total: value.count,
            first_ktime_ns: Some(value.first_ns),
            last_ktime_ns: Some(value.last_ns),
            last_tgid: Some(value.last_tgid),
            last_uid: Some(value.last_uid),
        }
    }

    /// The record of `count` new denials the kernel could count only in total.
    #[must_use]
    pub const fn unkeyed(count: u64, total: u64) -> Self {
        Self {
            agent_id: None,
            agent: None,
            rule_id: None,
            rule: None,
            op: None,
            kind: None,
            count,
            total,
            first_ktime_ns: None,
            last_ktime_ns: None,
            last_tgid: None,
            last_uid: None,
        }
    }
}

/// What a reviewer answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    Approve,
    Deny,
    Kill,
}

impl ApprovalDecision {
    /// The name written in records.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Kill => "kill",
        }
    }
}

/// A reviewer's answer to a hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The hold answered (`request_id` of its `kernel` records).
    pub request_id: u64,
    /// Who answered: a user name (socket peer), a token name (HTTP), or `timeout`.
    pub reviewer: String,
    pub decision: ApprovalDecision,
    /// `once` or a duration such as `15m`.
    pub scope: String,
    /// Free text the reviewer gave, if any.
    pub reason: Option<String>,
    /// The held action the decision applies to (absent when the daemon did not know it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<HeldAction>,
    /// Approvals still needed when the agent requires several (`required_approvals`): this
    /// approval was recorded but has not taken effect, the process is still held. Absent (0)
    /// when the decision took effect.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub approvals_missing: u32,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
const fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A held action, as approval and hold-end records name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAction {
    pub agent: String,
    pub op: String,
    pub path: String,
    pub pid: u32,
    /// The rule the hold is decided under (0: the agent's default): the rule that held it, or
    /// for an answer by the policy's conditions the rule whose conditions decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u32>,
}

/// See [`RecordBody::HoldEnded`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldEnded {
    pub request_id: u64,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<HeldAction>,
}

/// See [`RecordBody::Justification`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JustificationRecord {
    /// The hold it is attached to.
    pub request_id: u64,
    /// Always `agent`: the text is the held agent's, unverified.
    pub source: String,
    /// The process that sent it, as the kernel identified it (inside the agent's cgroup).
    pub pid: u32,
    /// The text, escaped (`crate::text::escape`): no control characters.
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<HeldAction>,
}

/// A torn tail was cut off the log when the writer opened it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecovered {
    /// The log file that had the torn tail.
    pub file: String,
    /// Offset at which the tail was cut (the length of the intact part).
    pub offset: u64,
    /// Length of the removed tail in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the removed bytes, so what was removed is still accounted for.
    pub sha256: String,
    /// The first removed bytes (at most 256), lossily decoded, for a human to judge.
    pub preview: String,
}

/// Body of `audit_cut`: the log's end did not match its checkpoint when the writer opened it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCut {
    /// `seq` and hash of the last record according to the checkpoint.
    pub checkpoint_seq: u64,
    pub checkpoint_hash: String,
    /// `seq` and hash of the last record actually found (the chain continues from it).
    pub log_seq: u64,
    pub log_hash: String,
}

/// Formats and parses `time`: RFC 3339 in UTC with exactly six fractional digits, so lines are
/// fixed-width in that field and sort lexically.
mod rfc3339_micros {
    use jiff::Timestamp;
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{ts:.6}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// `time` as written to the log.
#[must_use]
pub fn format_time(ts: Timestamp) -> String {
    format!("{ts:.6}")
}
