//! The validated policy of one agent: what the rest of the daemon reads. Values are only built
//! by the loader, so every one of them has passed validation (patterns compile, users exist).
use std::{fmt, path::PathBuf, time::Duration};

use jit_common::policy::{Decision, Mode, Op, RuleShape};

use super::{conditions::Conditions, error::Position, window::When};

/// One agent: who it is (its cgroups) and what it may do.
#[derive(Clone, Debug)]
pub struct AgentPolicy {
    pub name: String,
    /// The file the agent was read from.
    pub file: PathBuf,
    /// Position of the agent's `name` value.
    pub at: Position,
    /// Cgroup paths relative to the cgroup2 mount, normalized (`jit/coding-agent`).
    pub cgroups: Vec<String>,
    pub mode: Mode,
    /// Decision for operations no active rule matches.
    pub default: Decision,
    pub escalation: Escalation,
    /// In file order.
    pub rules: Vec<Rule>,
}

impl AgentPolicy {
    /// How long a hold decided by rule `rule_id` (or by the default, rule id 0) waits for a
    /// reviewer, and what happens then (see [`AgentPolicy::review`]).
    #[must_use]
    pub fn hold_timeout(&self, rule_id: u32) -> (Duration, OnTimeout) {
        let review = self.review(rule_id);
        (review.timeout, review.on_timeout)
    }

    /// Who reviews a hold decided by rule `rule_id` (0: the default), and how: each setting
    /// from the rule itself, else from `[escalation.<risk>]` of the rule's risk, else from
    /// `[escalation]`.
    #[must_use]
    pub fn review(&self, rule_id: u32) -> Review<'_> {
        let rule = self.rules.iter().find(|r| r.id == rule_id);
        let risk = rule.and_then(|r| r.risk);
        let level = risk.and_then(|k| self.escalation.level(k));
        let e = &self.escalation;
        Review {
            risk,
            approvers: rule
                .and_then(|r| r.approvers.as_ref())
                .or_else(|| level.and_then(|l| l.approvers.as_ref()))
                .unwrap_or(&e.approvers),
            required_approvals: rule
                .and_then(|r| r.required_approvals)
                .or_else(|| level.and_then(|l| l.required_approvals))
                .unwrap_or(e.required_approvals),
            timeout: rule
                .and_then(|r| r.timeout)
                .or_else(|| level.and_then(|l| l.timeout))
                .unwrap_or(e.timeout),
            on_timeout: rule
                .and_then(|r| r.on_timeout)
                .or_else(|| level.and_then(|l| l.on_timeout))
                .unwrap_or(e.on_timeout),
        }
    }

    /// Whether some decision of this agent can be a hold.
    #[must_use]
    pub fn can_hold(&self) -> bool {
        self.default == Decision::Hold
            || self
                .rules
                .iter()
                .any(|r| r.decision == Decision::Hold || r.is_conditional())
    }
}

/// `[escalation]`: who reviews held actions and what happens when nobody does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escalation {
    pub approvers: Approvers,
    /// How long a hold waits for a reviewer.
    pub timeout: Duration,
    pub on_timeout: OnTimeout,
    /// Default scope of an approval.
    pub grant: Grant,
    /// Approvals needed to release a hold (at least 1).
    pub required_approvals: u32,
    /// Whether a user who started this agent (`jitctl run`) may approve its holds.
    pub self_approval: bool,
    /// Longest time-boxed grant a reviewer may give (`--for`); longer ones are cut to it.
    pub max_grant: Option<Duration>,
    /// `[escalation.<risk>]`: defaults for the holds of rules of that risk, by risk.
    pub levels: Vec<(Risk, Level)>,
}

impl Escalation {
    /// The defaults `[escalation.<risk>]` sets, if any.
    #[must_use]
    pub fn level(&self, risk: Risk) -> Option<&Level> {
        self.levels.iter().find(|(k, _)| *k == risk).map(|(_, l)| l)
    }
}

/// `[escalation.<risk>]`: what it sets overrides `[escalation]` for rules of that risk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Level {
    pub approvers: Option<Approvers>,
    pub required_approvals: Option<u32>,
    pub timeout: Option<Duration>,
    pub on_timeout: Option<OnTimeout>,
}

/// How important a rule's actions are: shown to reviewers and in audit records, and the key
/// of `[escalation.<risk>]` defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

impl Risk {
    pub const ALL: [Self; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// Who reviews one rule's holds, and how: [`AgentPolicy::review`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Review<'a> {
    /// The rule's risk; `None` for the default and rules without one.
    pub risk: Option<Risk>,
    pub approvers: &'a Approvers,
    pub required_approvals: u32,
    pub timeout: Duration,
    pub on_timeout: OnTimeout,
}

impl Review<'_> {
    /// The approvers as reviewers read them: user names, then `group:NAME`.
    #[must_use]
    pub fn approver_names(&self) -> Vec<String> {
        self.approvers
            .users
            .iter()
            .map(|u| u.name.clone())
            .chain(
                self.approvers
                    .groups
                    .iter()
                    .map(|g| format!("group:{}", g.name)),
            )
            .collect()
    }
}

/// Reviewers, resolved against the host's user and group databases at load time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Approvers {
    pub users: Vec<Account>,
    pub groups: Vec<Account>,
}

impl Approvers {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// Who a rule is about: its `user` and `group` conditions, decided in the kernel by the
/// filesystem uid and gid of the process, which follow its effective ids (policies/README.md, "Users and groups"). Empty lists:
/// any process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Who {
    pub users: Vec<Account>,
    pub groups: Vec<Account>,
    /// `written_by`: bit `1 << class` for each writer class (`jit_common::provenance::WRITER_*`)
    /// the rule applies to, decided in the kernel by who wrote the executed file
    /// (policies/README.md, "Provenance"); 0: any file.
    pub writers: u8,
}

impl Who {
    /// Whether the rule applies to every process of its agent, whatever it executes.
    #[must_use]
    pub fn is_anyone(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.writers == 0
    }

    /// Whether the rule applies to a file of writer class `writer`
    /// (`jit_common::provenance::WRITER_*`).
    #[must_use]
    pub fn admits_writer(&self, writer: u32) -> bool {
        self.writers == 0 || (writer < 8 && self.writers & (1 << writer) != 0)
    }

    /// Whether the rule applies to a process acting as `uid` and `gid` on files; `None` is an
    /// id none of the agent's rules name (the kernel's class "anyone else").
    #[must_use]
    pub fn admits(&self, uid: Option<u32>, gid: Option<u32>) -> bool {
        let names = |accounts: &[Account], id: Option<u32>| {
            accounts.is_empty() || id.is_some_and(|id| accounts.iter().any(|a| a.id == id))
        };
        names(&self.users, uid) && names(&self.groups, gid)
    }

    /// [`Who::admits`] for a process known by name or by id (`jitctl policy`, where a policy
    /// loaded `--offline` has names only): an account matches by id when both are known, else
    /// by name.
    #[must_use]
    pub fn admits_subject(&self, subject: &Subject) -> bool {
        let matches = |accounts: &[Account], name: Option<&str>, id: Option<u32>| {
            accounts.is_empty()
                || accounts.iter().any(|a| {
                    (a.id != super::UNRESOLVED_ID && id.is_some_and(|id| id == a.id))
                        || name.is_some_and(|n| n == a.name)
                })
        };
        matches(&self.users, subject.user.as_deref(), subject.uid)
            && matches(&self.groups, subject.group.as_deref(), subject.gid)
            && self.admits_writer(subject.writer)
    }
}

/// The user and group a process acts as on files, as `jitctl policy` is told them: by name, by id, or
/// both. Nothing known: the process matches rules without `user`/`group` only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Subject {
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub group: Option<String>,
    pub gid: Option<u32>,
    /// Who wrote the executed file (`jit_common::provenance::WRITER_*`): by default
    /// `WRITER_NONE`, a file no agent wrote.
    pub writer: u32,
}

/// A user or a group: its name as written and the id it resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    /// uid or gid.
    pub id: u32,
}

/// What happens to a hold nobody decided in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OnTimeout {
    /// Refuse the operation (`EPERM`) and let the process continue.
    Deny,
    /// Let the operation happen.
    Allow,
    /// Kill the process.
    Kill,
}

impl OnTimeout {
    pub const ALL: [Self; 3] = [Self::Deny, Self::Allow, Self::Kill];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
            Self::Kill => "kill",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Scope of an approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// This one operation.
    Once,
    /// The same operation on the same path, for this long.
    For(Duration),
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Once => f.write_str("once"),
            Self::For(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// One `[[rule]]`.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique across the whole [`super::PolicySet`], never 0 (the id of default decisions);
    /// numbered from 1 in file-name order, then rule order.
    pub id: u32,
    pub name: String,
    /// Position of the rule's `name` value.
    pub at: Position,
    /// Every op the rule names, op groups expanded, each once.
    pub ops: Vec<Op>,
    /// The op groups the rule names (`op = "modify"`): a `deny` or `hold` rule with a group
    /// also guards renaming the directories above its paths (see [`Rule::guards_ancestors`]).
    pub groups: Vec<OpGroup>,
    pub paths: Vec<RulePath>,
    pub decision: Decision,
    /// When the rule is active; always when `None`.
    pub when: Option<When>,
    /// Hold rules only: overrides [`Escalation::timeout`].
    pub timeout: Option<Duration>,
    /// Hold rules only: overrides [`Escalation::on_timeout`].
    pub on_timeout: Option<OnTimeout>,
    /// One line from the policy author telling the agent why it was denied or held and what to
    /// do instead; served on the agent socket (`jitctl agent why`). At most [`MAX_HINT`] bytes,
    /// no control characters.
    pub hint: Option<String>,
    /// How important the rule's actions are.
    pub risk: Option<Risk>,
    /// Hold rules only: who may decide its holds instead of the agent's approvers.
    pub approvers: Option<Approvers>,
    /// Hold rules only: overrides [`Escalation::required_approvals`].
    pub required_approvals: Option<u32>,
    /// Daemon-side conditions: when any is set, the kernel holds the rule's actions and the
    /// daemon decides them (policies/README.md, "Conditions").
    pub conditions: Conditions,
    /// Kernel-side conditions on the uid and gid the process acts as on files.
    pub who: Who,
}

impl Rule {
    /// Whether the rule has daemon-side conditions: the kernel holds its actions and the
    /// daemon decides them.
    #[must_use]
    pub fn is_conditional(&self) -> bool {
        !self.conditions.is_empty()
    }

    /// Whether the compiler adds `rename` entries for the directories above this rule's paths:
    /// a `deny` or `hold` rule written with an op group guards every way to change its files,
    /// and moving a directory above one away (then refilling it and moving it back) is one.
    #[must_use]
    pub fn guards_ancestors(&self) -> bool {
        !self.groups.is_empty() && matches!(self.decision, Decision::Deny | Decision::Hold)
    }
}

/// A name for several ops at once, expanded when the policy is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpGroup {
    /// Every op that changes a file or what a name points to: every op but `exec`.
    Modify,
    /// Every op.
    Any,
}

impl OpGroup {
    pub const ALL: [Self; 2] = [Self::Modify, Self::Any];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Modify => "modify",
            Self::Any => "any",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.name() == name)
    }

    /// The ops of the group, in numeric order.
    #[must_use]
    pub fn ops(self) -> Vec<Op> {
        Op::ALL
            .into_iter()
            .filter(|&op| self == Self::Any || op != Op::Exec)
            .collect()
    }
}

/// Longest rule `hint`, in bytes.
pub const MAX_HINT: usize = 200;

/// A validated path pattern and its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulePath {
    pub pattern: String,
    pub shape: RuleShape,
}
