//! `jitctl policy suggest`: rules proposed from what reviewers answered again and again, as
//! TOML to paste after review. Nothing is written to any policy file.
//!
//! The evidence is held actions that reviewers decided (approved, or denied or killed; holds
//! that ended by timeout are nobody's judgement and do not count). An action is its agent, op
//! and path. A path approved (or refused) at least `min` times and never the other way gives an
//! exact rule; paths below one directory that each fell short, together at least `min` times
//! the same way with none the other way anywhere below it, give a directory rule. Argument
//! vectors are shown as evidence: rules cannot match them yet.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
};

use jiff::Timestamp;
use jit_common::policy::{Decision, Op, RuleShape};
use serde::Serialize;

use super::{
    model::{Action, AgentMaps, Decider, compile_at},
    replay::{Trail, path_bytes},
    rfc3339,
};
use crate::{
    audit::{ApprovalDecision, RecordBody},
    policy::{AgentPolicy, LoadOptions, Position, Rule, RulePath, Subject, load_str_with},
    text::{argv_line, escape},
};

/// One held action and how reviewers ended it.
#[derive(Clone, Debug)]
struct Evidence {
    agent: String,
    op: String,
    path: String,
    approved: bool,
    reviewers: BTreeSet<String>,
    time: Timestamp,
    argv: Option<Vec<String>>,
}

/// A proposed rule and what it rests on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    pub agent: String,
    /// The agent's policy file, when a policy was given and has the agent.
    pub policy_file: Option<String>,
    pub op: String,
    pub pattern: String,
    pub decision: &'static str,
    /// Held actions decided this way.
    pub count: usize,
    /// Distinct paths among them.
    pub paths: Vec<String>,
    pub reviewers: Vec<String>,
    pub first: String,
    pub last: String,
    /// Commands of held execs and how often each was seen.
    pub commands: Vec<(String, usize)>,
    /// Why the rule as proposed would not decide in the given policy, and what to do instead.
    pub note: Option<String>,
    /// The rule, with comments saying what it rests on.
    pub toml: String,
}

/// A path reviewers answered both ways.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Disputed {
    pub agent: String,
    pub op: String,
    pub path: String,
    pub approved: usize,
    pub refused: usize,
}

/// The answer of `jitctl policy suggest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Suggestions {
    pub min: usize,
    /// Held actions that reviewers decided.
    pub decided_holds: usize,
    pub suggestions: Vec<Suggestion>,
    pub disputed: Vec<Disputed>,
    /// Proposals left out because the given policy already decides that way now.
    pub already_decided: usize,
}

/// A held action as its hold record names it: agent, op, path, time, command.
type Held = (String, String, String, Timestamp, Option<Vec<String>>);

/// The reviewers' decisions in `trail`, one per hold.
fn evidence(trail: &Trail) -> Vec<Evidence> {
    let mut holds: HashMap<u64, Held> = HashMap::new();
    let mut ended: BTreeMap<u64, Evidence> = BTreeMap::new();
    let mut reviewers: HashMap<u64, BTreeSet<String>> = HashMap::new();
    for (_, record) in &trail.records {
        match &record.body {
            RecordBody::Kernel(k) if k.kind == "hold" => {
                let (Some(id), Some(agent)) = (k.request_id, &k.agent) else {
                    continue;
                };
                let Ok(path) = String::from_utf8(path_bytes(k)) else {
                    continue;
                };
                let argv = k.process.as_ref().and_then(|p| p.exec_argv.clone());
                holds.insert(id, (agent.clone(), k.op.clone(), path, record.time, argv));
            }
            RecordBody::Approval(a) if a.reviewer != "timeout" => {
                reviewers
                    .entry(a.request_id)
                    .or_default()
                    .insert(a.reviewer.clone());
                let approved = match a.decision {
                    ApprovalDecision::Approve if a.approvals_missing > 0 => continue,
                    ApprovalDecision::Approve => true,
                    ApprovalDecision::Deny | ApprovalDecision::Kill => false,
                };
                let held = holds.get(&a.request_id).cloned().or_else(|| {
                    a.action.as_ref().map(|h| {
                        (
                            h.agent.clone(),
                            h.op.clone(),
                            h.path.clone(),
                            record.time,
                            None,
                        )
                    })
                });
                let Some((agent, op, path, time, argv)) = held else {
                    continue;
                };
                ended.entry(a.request_id).or_insert(Evidence {
                    agent,
                    op,
                    path,
                    approved,
                    reviewers: reviewers.get(&a.request_id).cloned().unwrap_or_default(),
                    time,
                    argv,
                });
            }
            _ => {}
        }
    }
    ended.into_values().collect()
}

/// One action a suggestion is about: its first path (or its pattern), as nobody in particular.
fn sample_action(s: &Suggestion, op: Op, now: Timestamp) -> Action {
    let sample = s.paths.first().map_or(s.pattern.clone(), Clone::clone);
    Action {
        agent: s.agent.clone(),
        op,
        path: sample.into_bytes(),
        target: None,
        at: now,
        facts: None,
        subject: Subject::default(),
    }
}

/// The proposals from `trail`, `min` decisions at least each. With `decider`, proposals the
/// policy already decides that way at `now` are left out, and each names its policy file.
#[must_use]
pub fn suggest(
    trail: &Trail,
    min: usize,
    decider: Option<&Decider<'_>>,
    now: Timestamp,
) -> Suggestions {
    let min = min.max(1);
    let all = evidence(trail);
    let mut out = Suggestions {
        min,
        decided_holds: all.len(),
        ..Suggestions::default()
    };
    // (agent, op, path) -> evidence.
    let mut by_path: BTreeMap<(String, String, String), Vec<&Evidence>> = BTreeMap::new();
    for e in &all {
        by_path
            .entry((e.agent.clone(), e.op.clone(), e.path.clone()))
            .or_default()
            .push(e);
    }
    let mut leftover: BTreeMap<(String, String, String), Vec<&Evidence>> = BTreeMap::new();
    for ((agent, op, path), items) in &by_path {
        let approved = items.iter().filter(|e| e.approved).count();
        let refused = items.len() - approved;
        if approved > 0 && refused > 0 {
            out.disputed.push(Disputed {
                agent: agent.clone(),
                op: op.clone(),
                path: path.clone(),
                approved,
                refused,
            });
            continue;
        }
        if items.len() >= min {
            out.suggestions.extend(propose(agent, op, path, items));
        } else if let Some((parent, _)) = path.rsplit_once('/')
            && !parent.is_empty()
        {
            leftover
                .entry((agent.clone(), op.clone(), format!("{parent}/")))
                .or_default()
                .extend(items);
        }
    }
    for ((agent, op, dir), items) in &leftover {
        let paths: BTreeSet<&str> = items.iter().map(|e| e.path.as_str()).collect();
        let approved = items[0].approved;
        let same_way = items.iter().all(|e| e.approved == approved);
        // Nothing below the directory was answered the other way, suggested exactly or not.
        let contrary = all.iter().any(|e| {
            e.agent == *agent
                && e.op == *op
                && e.path.starts_with(dir.as_str())
                && e.approved != approved
        });
        if items.len() >= min && paths.len() >= 2 && same_way && !contrary {
            out.suggestions.extend(propose(agent, op, dir, items));
        }
    }
    if let Some(decider) = decider {
        out.suggestions.retain(|s| {
            let Some(op) = Op::from_name(&s.op) else {
                return true;
            };
            let now_decided = decider
                .decide(&sample_action(s, op, now))
                .ok()
                .map(|o| o.verdict.decision.name());
            let keep = now_decided != Some(s.decision);
            if !keep {
                out.already_decided += 1;
            }
            keep
        });
        for s in &mut out.suggestions {
            let agent = decider.set().agent(&s.agent);
            s.policy_file = agent.map(|a| a.file.display().to_string());
            s.note = agent.and_then(|a| tie_note(a, s, now));
        }
    }
    for s in &mut out.suggestions {
        s.toml = toml_of(s);
    }
    // Each suggestion must load as policy: a proposal that would not is dropped, never shown.
    out.suggestions.retain(|s| {
        let text = format!(
            "[agent]\nname = \"check\"\ncgroups = [\"check\"]\n\n{}",
            s.toml
        );
        load_str_with(
            "suggestion.toml",
            &text,
            LoadOptions {
                resolve_accounts: false,
            },
        )
        .is_ok()
    });
    out
}

/// When the proposed rule, added to `agent`, would not decide its own evidence (a rule with
/// the same pattern wins the tie by severity): what to change instead.
fn tie_note(agent: &AgentPolicy, s: &Suggestion, now: Timestamp) -> Option<String> {
    let op = Op::from_name(&s.op)?;
    let shape = RuleShape::parse(s.pattern.as_bytes()).ok()?;
    let decision = Decision::from_name(s.decision)?;
    let mut with = agent.clone();
    let id = with.rules.iter().map(|r| r.id).max().unwrap_or(0) + 1;
    with.rules.push(Rule {
        id,
        name: "suggested".to_owned(),
        at: Position::START,
        ops: vec![op],
        groups: Vec::new(),
        paths: vec![RulePath {
            pattern: s.pattern.clone(),
            shape,
        }],
        decision,
        when: None,
        timeout: None,
        on_timeout: None,
        hint: None,
        risk: None,
        approvers: None,
        required_approvals: None,
        conditions: crate::policy::conditions::Conditions::default(),
        who: crate::policy::Who::default(),
    });
    let maps = AgentMaps::new(&compile_at(&with, now));
    let sample = s.paths.first()?;
    let verdict = maps.decide(op, sample.as_bytes());
    if verdict.rule_id == id {
        return None;
    }
    let winner = agent.rules.iter().find(|r| r.id == verdict.rule_id)?;
    Some(format!(
        "rule \"{}\" ({}:{}) is as specific and wins the tie ({} over {}): take `{}` out of \
         that rule rather than adding this one",
        winner.name,
        agent.file.display(),
        winner.at.line,
        winner.decision.name(),
        s.decision,
        s.pattern
    ))
}

/// The suggestion for `items` (all decided the same way) under `pattern`, if the pattern can
/// be a rule.
fn propose(agent: &str, op: &str, pattern: &str, items: &[&Evidence]) -> Option<Suggestion> {
    let shape = RuleShape::parse(pattern.as_bytes()).ok()?;
    // A path component that is literally `*` would be read as a wildcard.
    if shape.wildcard_component.is_some() || Op::from_name(op).is_none() {
        return None;
    }
    let approved = items.first()?.approved;
    let mut commands: BTreeMap<String, usize> = BTreeMap::new();
    for e in items {
        if let Some(argv) = &e.argv {
            *commands.entry(argv_line(argv)).or_default() += 1;
        }
    }
    let mut commands: Vec<(String, usize)> = commands.into_iter().collect();
    commands.sort_by_key(|c| std::cmp::Reverse(c.1));
    let paths: BTreeSet<String> = items.iter().map(|e| e.path.clone()).collect();
    Some(Suggestion {
        agent: agent.to_owned(),
        policy_file: None,
        op: op.to_owned(),
        pattern: pattern.to_owned(),
        decision: if approved {
            Decision::Allow.name()
        } else {
            Decision::Deny.name()
        },
        count: items.len(),
        paths: paths.into_iter().collect(),
        reviewers: items
            .iter()
            .flat_map(|e| e.reviewers.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        first: items.iter().map(|e| e.time).min().map(rfc3339)?,
        last: items.iter().map(|e| e.time).max().map(rfc3339)?,
        commands,
        note: None,
        toml: String::new(),
    })
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    // JSON's escapes are TOML's, except that TOML also wants DEL escaped.
    serde_json::to_string(s)
        .unwrap_or_default()
        .replace('\u{7f}', "\\u007F")
}

fn toml_of(s: &Suggestion) -> String {
    let mut out = String::new();
    let verb = if s.decision == "allow" {
        "approved"
    } else {
        "refused"
    };
    let _ = writeln!(
        out,
        "# For agent `{}`{}.",
        escape(&s.agent),
        s.policy_file
            .as_ref()
            .map_or_else(String::new, |f| format!(" ({})", escape(f)))
    );
    let _ = writeln!(
        out,
        "# Evidence: reviewers {verb} {} held {} action(s) on {} path(s) ({} .. {}), never the \
         other way; reviewers: {}.",
        s.count,
        escape(&s.op),
        s.paths.len(),
        s.first,
        s.last,
        escape(&s.reviewers.join(", "))
    );
    if s.pattern.ends_with('/') {
        for p in &s.paths {
            let _ = writeln!(out, "#   {}", escape(p));
        }
    }
    if !s.commands.is_empty() {
        let _ = writeln!(
            out,
            "# Commands seen (rules cannot match arguments yet: this rule covers every command \
             line):"
        );
        for (command, n) in &s.commands {
            let _ = writeln!(out, "#   {n}x {}", escape(command));
        }
    }
    if let Some(note) = &s.note {
        let _ = writeln!(out, "# Note: {}", escape(note));
    }
    let _ = writeln!(out, "[[rule]]");
    let _ = writeln!(
        out,
        "name = {}",
        quote(&format!("reviewers {verb}: {} {}", s.op, s.pattern))
    );
    let _ = writeln!(out, "op = {}", quote(&s.op));
    let _ = writeln!(out, "path = {}", quote(&s.pattern));
    let _ = writeln!(out, "decision = {}", quote(s.decision));
    out
}

/// The text `jitctl policy suggest` prints: the TOML of every suggestion, and what was not
/// suggested.
#[must_use]
pub fn render(s: &Suggestions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# jitctl policy suggest: {} held action(s) decided by reviewers; at least {} \
         decision(s) the same way per rule. Review before pasting: nothing was written.",
        s.decided_holds, s.min
    );
    if s.suggestions.is_empty() {
        let _ = writeln!(out, "# No rule to suggest.");
    }
    for sug in &s.suggestions {
        let _ = writeln!(out, "\n{}", sug.toml.trim_end());
    }
    if s.already_decided > 0 {
        let _ = writeln!(
            out,
            "\n# {} more left out: the given policy already decides them that way.",
            s.already_decided
        );
    }
    for d in &s.disputed {
        let _ = writeln!(
            out,
            "\n# Not suggested, reviewers disagreed: {} {} {} approved {}x, refused {}x.",
            escape(&d.agent),
            escape(&d.op),
            escape(&d.path),
            d.approved,
            d.refused
        );
    }
    out
}
