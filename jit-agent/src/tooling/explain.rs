//! `jitctl policy explain`: the decision for one action, the rule behind it, every other rule
//! that matched and why it lost, what a hold would need, and what the kernel decides beyond
//! the policy.
use std::{fmt::Write as _, os::unix::ffi::OsStrExt as _, path::Path};

use jit_common::policy::{Decision, Op, PATH_CAPACITY, PolicyValue, RuleShape, Verdict};
use serde::Serialize;

use super::{
    model::{Action, DecideError, Decider, End, is_active, on_protected_fs, pattern_matches},
    rfc3339,
};
use crate::{
    policy::{Activity, AgentPolicy, Rule, RulePath, ancestor_guards},
    text::escape_bytes,
};

/// A rule as the output names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    pub id: u32,
    pub name: String,
    pub file: String,
    pub line: usize,
}

impl RuleRef {
    #[must_use]
    pub fn new(agent: &AgentPolicy, rule: &Rule) -> Self {
        Self {
            id: rule.id,
            name: rule.name.clone(),
            file: agent.file.display().to_string(),
            line: rule.at.line,
        }
    }
}

/// What decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecidedBy {
    /// A rule of the agent, through one of its patterns.
    Rule {
        #[serde(flatten)]
        rule: RuleRef,
        pattern: String,
    },
    /// No active rule matched: the agent's `default`.
    Default,
    /// The daemon's own files, refused to every agent whatever its policy.
    SelfProtection,
}

/// A rule pattern that matches the path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Match {
    #[serde(flatten)]
    pub rule: RuleRef,
    pub pattern: String,
    pub decision: &'static str,
    /// Whether the rule's `when` holds at the instant asked about.
    pub active: bool,
    pub decides: bool,
    /// Why it did not decide.
    pub lost_because: Option<String>,
}

/// One path of the action and how it was decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathReport {
    /// For a rename or link with both ends: which end this is.
    pub end: Option<End>,
    pub path: String,
    pub decision: &'static str,
    pub decided_by: DecidedBy,
    pub matches: Vec<Match>,
}

/// What a hold by this decision waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HoldReport {
    /// The deciding rule's risk, if it has one.
    pub risk: Option<&'static str>,
    pub approver_users: Vec<String>,
    pub approver_groups: Vec<String>,
    pub required_approvals: u32,
    pub timeout: String,
    pub on_timeout: &'static str,
    pub grant: String,
    pub max_grant: Option<String>,
    pub self_approval: bool,
}

/// The answer of `jitctl policy explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub agent: String,
    pub policy_file: String,
    pub op: &'static str,
    pub path: String,
    pub target: Option<String>,
    pub at: String,
    pub mode: &'static str,
    /// What the policy decides (reported in audit records).
    pub decision: &'static str,
    /// What the kernel applies (differs in shadow mode).
    pub enforced: &'static str,
    pub decided_by: DecidedBy,
    /// For a rename or link given both ends: the end whose verdict applies.
    pub deciding_end: Option<End>,
    pub paths: Vec<PathReport>,
    pub hold: Option<HoldReport>,
    /// The next instant a `when` window of a rule matching this action opens or closes, after
    /// which the answer may differ.
    pub valid_until: Option<String>,
    /// What the kernel decides beyond the policy, for this action.
    pub notes: Vec<String>,
}

/// Explains `action` under `decider`'s policy.
///
/// # Errors
/// When the agent is not in the policy.
pub fn explain(decider: &Decider<'_>, action: &Action) -> Result<Explanation, DecideError> {
    let agent = decider
        .set()
        .agent(&action.agent)
        .ok_or_else(|| DecideError::UnknownAgent(action.agent.clone()))?;
    let outcome = decider.decide(action)?;
    let mut paths = Vec::new();
    let ends: Vec<(Option<End>, &[u8])> = match &action.target {
        None => vec![(None, &action.path[..])],
        Some(t) => vec![
            (Some(End::Source), &action.path[..]),
            (Some(End::Target), &t[..]),
        ],
    };
    let mut conditions = Vec::new();
    for (end, path) in ends {
        let (verdict, why) = decider.decide_path_with(
            &action.agent,
            action.op,
            path,
            action.at,
            &action.subject,
            action.facts.as_ref(),
        )?;
        paths.push(report_path(agent, action, end, path, verdict));
        conditions.extend(why);
    }
    let deciding = match outcome.end {
        Some(End::Target) => paths.get(1),
        _ => paths.first(),
    };
    let decided_by = deciding.map_or(DecidedBy::Default, |p| p.decided_by.clone());
    let hold = (outcome.verdict.decision == Decision::Hold
        && !outcome.by_self_protection()
        && outcome.verdict.enforced == Decision::Hold)
        .then(|| hold_report(agent, outcome.verdict.rule_id));
    let mut notes = notes(decider, agent, action, outcome.verdict);
    notes.extend(
        conditions
            .into_iter()
            .map(|why| format!("conditions: {why}")),
    );
    if action.facts.is_none()
        && let Some(rule) = agent
            .rules
            .iter()
            .find(|r| r.id == outcome.verdict.rule_id && r.is_conditional())
    {
        notes.push(format!(
            "rule `{}` has conditions: the kernel holds and the daemon decides by what it reads \
             of the held action (give it with --arg, --cwd, --caller, --ancestor, --env, \
             --target-size or --target-missing)",
            rule.name
        ));
    }
    Ok(Explanation {
        agent: agent.name.clone(),
        policy_file: agent.file.display().to_string(),
        op: action.op.name(),
        path: escape_bytes(&action.path).into_owned(),
        target: action.target.as_ref().map(|t| escape_bytes(t).into_owned()),
        at: rfc3339(action.at),
        mode: agent.mode.name(),
        decision: outcome.verdict.decision.name(),
        enforced: outcome.verdict.enforced.name(),
        decided_by,
        deciding_end: outcome.end,
        paths,
        hold,
        valid_until: valid_until(agent, action),
        notes,
    })
}

/// The next instant a `when` window of a rule that matches this action opens or closes: the
/// answer can change then, and only then.
fn valid_until(agent: &AgentPolicy, action: &Action) -> Option<String> {
    std::iter::once(&action.path)
        .chain(action.target.as_ref())
        .flat_map(|path| matching_patterns(agent, action.op, path))
        .filter_map(|(rule, _)| rule.when.as_ref()?.next_transition(action.at))
        .min()
        .map(rfc3339)
}

/// Every pattern of the agent's rules for `op` that matches `path`, by the kernel's matcher.
fn matching_patterns<'a>(
    agent: &'a AgentPolicy,
    op: Op,
    path: &'a [u8],
) -> impl Iterator<Item = (&'a Rule, &'a RulePath)> + 'a {
    agent
        .rules
        .iter()
        .filter(move |r| r.ops.contains(&op))
        .flat_map(|r| r.paths.iter().map(move |p| (r, p)))
        .filter(move |(_, p)| pattern_matches(op, &p.pattern, path))
}

fn report_path(
    agent: &AgentPolicy,
    action: &Action,
    end: Option<End>,
    path: &[u8],
    verdict: Verdict,
) -> PathReport {
    let mut candidates: Vec<(&Rule, RulePath, PolicyValue, bool)> =
        matching_patterns(agent, action.op, path)
            .map(|(r, p)| {
                (
                    r,
                    p.clone(),
                    p.shape.value(r.decision, r.id),
                    is_active(r, action.at) && r.who.admits_subject(&action.subject),
                )
            })
            .collect();
    // The renames of the directories above a group rule's paths, which the compiler guards
    // with entries of their own (policies/README.md, Op groups).
    if action.op == Op::Rename {
        let guards = ancestor_guards(agent, |r| {
            is_active(r, action.at) && r.who.admits_subject(&action.subject)
        });
        for (id, pattern) in guards {
            let (Some(rule), Ok(shape)) = (
                agent.rules.iter().find(|r| r.id == id),
                RuleShape::parse(pattern.as_bytes()),
            ) else {
                continue;
            };
            if pattern_matches(Op::Rename, &pattern, path) {
                let value = shape.value(rule.decision, rule.id);
                candidates.push((rule, RulePath { pattern, shape }, value, true));
            }
        }
    }
    // The kernel's choice among the active ones, by its own ordering.
    let best = candidates
        .iter()
        .filter(|c| c.3)
        .fold(PolicyValue::NO_MATCH, |best, c| best.best_of(c.2));
    let self_protected = verdict.rule_id == jit_common::protect::SELF_PROTECTION_RULE_ID;
    // Rules with conditions: the kernel puts one first among rules of its path, and the daemon
    // decides by the conditions (policies/README.md, "Conditions"); the verdict says which rule
    // that was, and it may not be the one the plain ordering picks.
    let conditional = candidates.iter().any(|c| c.3 && c.0.is_conditional());
    let best = if conditional && !self_protected {
        candidates
            .iter()
            .filter(|c| c.3 && c.0.id == verdict.rule_id)
            .fold(PolicyValue::NO_MATCH, |b, c| b.best_of(c.2))
    } else {
        best
    };
    let mut decided_by = if self_protected {
        DecidedBy::SelfProtection
    } else {
        DecidedBy::Default
    };
    let mut matches = Vec::new();
    for (rule, pattern, value, active) in &candidates {
        let decides = !self_protected && *active && best.is_match() && *value == best;
        if decides {
            decided_by = DecidedBy::Rule {
                rule: RuleRef::new(agent, rule),
                pattern: pattern.pattern.clone(),
            };
        }
        let lost_because = (!decides).then(|| {
            if self_protected {
                "self-protection decides before any rule".to_owned()
            } else if !active {
                inactive_reason(rule, action)
            } else if conditional {
                if best.is_match() {
                    "the daemon decided by the conditions of the rules of this path (see the \
                     conditions note)"
                        .to_owned()
                } else {
                    "the daemon decided by the conditions: none held, and no rule without \
                     conditions decides (see the conditions note)"
                        .to_owned()
                }
            } else {
                let winner = candidates
                    .iter()
                    .find(|c| c.2 == best)
                    .map_or("", |c| c.1.pattern.as_str());
                lost_reason(value, &best, winner)
            }
        });
        matches.push(Match {
            rule: RuleRef::new(agent, rule),
            pattern: pattern.pattern.clone(),
            decision: rule.decision.name(),
            active: *active,
            decides,
            lost_because,
        });
    }
    // The maps and the rule texts must agree; they are the same code, so this only fails if
    // the compiler and this report drift apart.
    debug_assert!(
        self_protected || (best.is_match() == (verdict.rule_id != 0)) || conditional,
        "explain disagrees with the compiled maps: {best:?} vs {verdict:?}"
    );
    PathReport {
        end,
        path: escape_bytes(path).into_owned(),
        decision: verdict.decision.name(),
        decided_by,
        matches,
    }
}

fn inactive_reason(rule: &Rule, action: &Action) -> String {
    if !rule.who.admits_subject(&action.subject) {
        let names = |kind: &str, accounts: &[crate::policy::Account]| {
            (!accounts.is_empty()).then(|| {
                let list: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
                format!("{kind} {}", list.join(", "))
            })
        };
        let who: Vec<String> = [
            names("user", &rule.who.users),
            names("group", &rule.who.groups),
        ]
        .into_iter()
        .flatten()
        .collect();
        let given = match (&action.subject.user, action.subject.uid) {
            (None, None) if action.subject.group.is_none() && action.subject.gid.is_none() => {
                " (no --user or --group given)".to_owned()
            }
            _ => String::new(),
        };
        return format!(
            "applies only to processes running as {}{given}",
            who.join(" and ")
        );
    }
    let Some(when) = &rule.when else {
        return "inactive".to_owned();
    };
    let side = match when.activity {
        Activity::Inside => "inside",
        Activity::Outside => "outside",
    };
    format!(
        "not in force at {}: active only {side} {} ({}); it is {} there",
        rfc3339(action.at),
        when.window,
        when.tz_name,
        when.tz.to_datetime(action.at).strftime("%a %Y-%m-%d %H:%M")
    )
}

fn lost_reason(loser: &PolicyValue, winner: &PolicyValue, winner_pattern: &str) -> String {
    let name = |v: &PolicyValue| Decision::from_u8_or_deny(v.decision).name();
    if loser.literal_len != winner.literal_len {
        format!(
            "less specific than `{winner_pattern}`: {} literal bytes before any `*` against {}",
            loser.literal_len, winner.literal_len
        )
    } else if loser.pattern_len != winner.pattern_len {
        format!(
            "less specific than `{winner_pattern}`: the same literal prefix, a shorter pattern \
             ({} bytes against {})",
            loser.pattern_len, winner.pattern_len
        )
    } else if loser.decision != winner.decision {
        format!(
            "as specific as `{winner_pattern}` but less severe ({} < {}; deny > hold > audit > \
             allow)",
            name(loser),
            name(winner)
        )
    } else if loser.rule_id != winner.rule_id {
        format!(
            "as specific and as severe as rule {} (`{winner_pattern}`), which comes first",
            winner.rule_id
        )
    } else {
        format!("another pattern of the same rule, `{winner_pattern}`, is more specific")
    }
}

fn hold_report(agent: &AgentPolicy, rule_id: u32) -> HoldReport {
    let e = &agent.escalation;
    let review = agent.review(rule_id);
    HoldReport {
        risk: review.risk.map(crate::policy::Risk::name),
        approver_users: review
            .approvers
            .users
            .iter()
            .map(|a| a.name.clone())
            .collect(),
        approver_groups: review
            .approvers
            .groups
            .iter()
            .map(|a| a.name.clone())
            .collect(),
        required_approvals: review.required_approvals,
        timeout: humantime::format_duration(review.timeout).to_string(),
        on_timeout: review.on_timeout.name(),
        grant: e.grant.to_string(),
        max_grant: e
            .max_grant
            .map(|d| humantime::format_duration(d).to_string()),
        self_approval: e.self_approval,
    }
}

/// What the kernel decides beyond the policy, where it concerns this action.
fn notes(
    decider: &Decider<'_>,
    agent: &AgentPolicy,
    action: &Action,
    verdict: Verdict,
) -> Vec<String> {
    let mut notes = Vec::new();
    if verdict.rule_id == jit_common::protect::SELF_PROTECTION_RULE_ID {
        notes.push(
            "self-protection: changes to the daemon's policy directory, audit log directory, \
             socket directory and config file (and to the directories above them), and to \
             anything on a cgroup filesystem or bpffs, are refused to all agents, whatever their \
             policy or mode (README, \"Self-protection\")"
                .to_owned(),
        );
    }
    for path in std::iter::once(&action.path).chain(action.target.as_ref()) {
        path_notes(decider, action.op, path, &mut notes);
    }
    if matches!(action.op, Op::Rename | Op::Link) && action.target.is_none() {
        notes.push(format!(
            "{} is decided for both the source and the target path and the more severe decision \
             applies: give the other end as a second path to see both",
            action.op.name()
        ));
    }
    if agent.mode == jit_common::policy::Mode::Shadow {
        notes.push(
            "mode = \"shadow\": nothing is blocked or held; what the policy decides is reported \
             (enforced: audit for anything but allow)"
                .to_owned(),
        );
    }
    if verdict.decision == Decision::Hold && verdict.enforced == Decision::Hold {
        notes.push(
            "a time-boxed approval (`jitctl approve --for`) of this op on this file lets it \
             through without a hold until it expires; approvals live in the kernel, not in the \
             policy"
                .to_owned(),
        );
        notes.push(
            "the kernel enforces this hold as a deny for tasks that cannot be stopped: kernel \
             threads, io_uring workers and any task that has used io_uring (README, \"Who \
             cannot be held\")"
                .to_owned(),
        );
        if action.op == Op::Exec {
            notes.push(
                "exec holds are denies where one execve cannot be paused twice: the \
                 interpreter pass of a `#!` script, and the dynamic loader mapped inside \
                 execve (policies/README.md, \"Scripts and interpreters\", \"Executable \
                 mappings\")"
                    .to_owned(),
            );
        }
    }
    if action.op == Op::Exec {
        notes.push(
            "exec also decides every executable mapping of this file (mmap or mprotect with \
             PROT_EXEC, shmat with SHM_EXEC): a library is allowed or refused by this same \
             decision"
                .to_owned(),
        );
    }
    notes
}

/// Notes about how the kernel will see `path` on this host.
fn path_notes(decider: &Decider<'_>, op: Op, path: &[u8], notes: &mut Vec<String>) {
    let shown = escape_bytes(path);
    if path.len() >= PATH_CAPACITY {
        notes.push(format!(
            "{shown} is {} bytes long: matching sees its first {PATH_CAPACITY} bytes, so no \
             exact rule can match it (directory rules still do)",
            path.len()
        ));
    }
    let fs_path = Path::new(std::ffi::OsStr::from_bytes(path));
    if let Some(resolved) = resolved_on_this_host(fs_path, op)
        && resolved.as_os_str().as_encoded_bytes() != path
    {
        notes.push(format!(
            "on this host {shown} resolves to {}: the kernel decides the resolved path (explain \
             that one)",
            escape_bytes(resolved.as_os_str().as_encoded_bytes())
        ));
    }
    if op != Op::Exec && on_protected_fs(path) && !decider.protected().covers(path) {
        notes.push(format!(
            "on this host {shown} is on a cgroup filesystem or bpffs: every change there is \
             refused to agents by self-protection, whatever the policy"
        ));
    }
}

/// The path the kernel would see for `path` on this host, when something on the way is a
/// symlink: the whole path resolved for ops that follow the last component, the parent
/// resolved for ops on the entry itself.
fn resolved_on_this_host(path: &Path, op: Op) -> Option<std::path::PathBuf> {
    let follows_last = matches!(
        op,
        Op::Exec | Op::Write | Op::Truncate | Op::Chmod | Op::Chown | Op::Metadata
    );
    if follows_last && let Ok(resolved) = std::fs::canonicalize(path) {
        return Some(resolved);
    }
    let parent = std::fs::canonicalize(path.parent()?).ok()?;
    Some(parent.join(path.file_name()?))
}

/// The text `jitctl policy explain` prints.
#[must_use]
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let target = e
        .target
        .as_ref()
        .map_or_else(String::new, |t| format!(" -> {t}"));
    let _ = writeln!(
        out,
        "{}: {} {}{target} at {} (policy {}, mode {})",
        e.agent, e.op, e.path, e.at, e.policy_file, e.mode
    );
    let enforced = if e.enforced == e.decision {
        String::new()
    } else {
        format!(" (enforced: {})", e.enforced)
    };
    let _ = writeln!(out, "decision: {}{enforced}", e.decision);
    let end = match e.deciding_end {
        Some(End::Source) => " (the source decides)",
        Some(End::Target) => " (the target decides)",
        None => "",
    };
    let _ = writeln!(out, "decided by: {}{end}", describe(&e.decided_by));
    for p in &e.paths {
        if let Some(end) = p.end {
            let _ = writeln!(
                out,
                "{} {}: {} by {}",
                if end == End::Source {
                    "source"
                } else {
                    "target"
                },
                p.path,
                p.decision,
                describe(&p.decided_by)
            );
        }
        let others: Vec<&Match> = p.matches.iter().filter(|m| !m.decides).collect();
        if others.is_empty() {
            let _ = writeln!(out, "  no other rule matches");
        } else {
            let _ = writeln!(out, "  other matching rules:");
            for m in others {
                let _ = writeln!(
                    out,
                    "    {:<6} \"{}\" ({}:{}) `{}`: {}",
                    m.decision,
                    m.rule.name,
                    m.rule.file,
                    m.rule.line,
                    m.pattern,
                    m.lost_because.as_deref().unwrap_or("")
                );
            }
        }
    }
    if let Some(h) = &e.hold {
        let mut who = Vec::new();
        if !h.approver_users.is_empty() {
            who.push(format!("users {}", h.approver_users.join(", ")));
        }
        if !h.approver_groups.is_empty() {
            who.push(format!("groups {}", h.approver_groups.join(", ")));
        }
        let _ = writeln!(
            out,
            "hold{}: approvers {}; {} approval(s) needed{}; waits {} then {}; an approval's \
             default scope: {}{}",
            h.risk.map_or_else(String::new, |k| format!(" (risk {k})")),
            who.join("; "),
            h.required_approvals,
            if h.self_approval {
                ""
            } else {
                " (not by the user who started the agent)"
            },
            h.timeout,
            h.on_timeout,
            h.grant,
            h.max_grant
                .as_ref()
                .map_or_else(String::new, |m| format!(", at most {m}"))
        );
    }
    if let Some(until) = &e.valid_until {
        let _ = writeln!(
            out,
            "valid until: {until} (a `when` window of a matching rule opens or closes then)"
        );
    }
    for note in &e.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

fn describe(by: &DecidedBy) -> String {
    match by {
        DecidedBy::Rule { rule, pattern } => format!(
            "rule \"{}\" ({}:{}), pattern `{pattern}`",
            rule.name, rule.file, rule.line
        ),
        DecidedBy::Default => "the agent's default (no active rule matches)".to_owned(),
        DecidedBy::SelfProtection => {
            "self-protection (the daemon's own files, cgroup filesystems, bpffs)".to_owned()
        }
    }
}
