//! The validated policy of one agent: what the rest of the daemon reads. Values are only built
//! by the loader, so every one of them has passed validation (patterns compile, users exist).
use std::{fmt, path::PathBuf, time::Duration};

use jit_common::policy::{Decision, Mode, Op, RuleShape};

use super::{error::Position, window::When};

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
    /// reviewer, and what happens then: the rule's overrides, else the agent's escalation.
    #[must_use]
    pub fn hold_timeout(&self, rule_id: u32) -> (Duration, OnTimeout) {
        let rule = self.rules.iter().find(|r| r.id == rule_id);
        (
            rule.and_then(|r| r.timeout)
                .unwrap_or(self.escalation.timeout),
            rule.and_then(|r| r.on_timeout)
                .unwrap_or(self.escalation.on_timeout),
        )
    }

    /// Whether some decision of this agent can be a hold.
    #[must_use]
    pub fn can_hold(&self) -> bool {
        self.default == Decision::Hold || self.rules.iter().any(|r| r.decision == Decision::Hold)
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
    pub ops: Vec<Op>,
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
}

/// Longest rule `hint`, in bytes.
pub const MAX_HINT: usize = 200;

/// A validated path pattern and its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulePath {
    pub pattern: String,
    pub shape: RuleShape,
}
