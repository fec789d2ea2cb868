//! `jitctl policy test`: case files of actions and the decisions they must get, for CI.
//!
//! ```toml
//! agent = "coding-agent"               # optional: the agent of every case that names none
//! at = "2026-01-05T10:00:00+01:00"     # optional: the instant of every case that gives none
//!
//! [[case]]
//! name = "curl waits for a reviewer"   # optional
//! op = "exec"
//! path = "/usr/bin/curl"
//! expect = "hold"
//! rule = "network tools need a reviewer"   # optional; or `by_default = true`
//! ```
//!
//! Fields of a case: `agent`, `op`, `path`, `target` (the other end of a `rename` or `link`),
//! `at`, `expect` (the policy's decision), `enforced` (what the kernel applies, for shadow
//! mode), `rule` (the rule that must decide) or `by_default = true` (no rule may decide),
//! `user` and `group` (the user and group the process acts as on files, by name or id, for rules with
//! `user`/`group`), and the facts of rules with conditions (`args`, `cwd`, ...).
//! Every mistake in the file is reported as `FILE:LINE:COL: message`; a case whose `at` is
//! missing everywhere is decided at the current time.
use std::{ops::Range, path::Path};

use jiff::Timestamp;
use jit_common::policy::{Decision, Op};
use serde::{Deserialize, Serialize};
use toml::{
    Spanned,
    de::{DeTable, DeValue, ValueDeserializer},
};

use super::{
    diagnostics::Diagnostic,
    model::{Action, Decider, subject_of},
    parse_instant, rfc3339,
};
use crate::{
    policy::{
        PolicySet, Position, Subject,
        conditions::{Facts, Target},
    },
    text::escape_bytes,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Option<Spanned<String>>,
    agent: Option<Spanned<String>>,
    op: Spanned<String>,
    path: Spanned<String>,
    target: Option<Spanned<String>>,
    at: Option<Spanned<String>>,
    expect: Spanned<String>,
    enforced: Option<Spanned<String>>,
    rule: Option<Spanned<String>>,
    by_default: Option<Spanned<bool>>,
    /// What the daemon reads of the held action, for rules with conditions.
    args: Option<Vec<String>>,
    cwd: Option<String>,
    caller: Option<String>,
    ancestors: Option<Vec<String>>,
    env: Option<std::collections::BTreeMap<String, String>>,
    target_size: Option<u64>,
    target_exists: Option<bool>,
    /// The user and group the process acts as on files (name or numeric id), for `user`/`group` rules.
    user: Option<String>,
    group: Option<String>,
    /// Who wrote the executed file (`this-agent`, `other-agent`, `none`), for `written_by`
    /// rules.
    written_by: Option<Spanned<String>>,
}

/// Which rule must decide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedRule {
    Named(String),
    Default,
}

/// One checked case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    pub line: usize,
    pub name: Option<String>,
    pub action: Action,
    pub expect: Decision,
    pub enforced: Option<Decision>,
    pub rule: Option<ExpectedRule>,
}

/// Reads the cases of `file` (`text` is its content), checking them against `set`: every
/// error of the file, or the cases.
///
/// # Errors
/// Every mistake found, each with its position.
pub fn parse(file: &Path, text: &str, set: &PolicySet) -> Result<Vec<Case>, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut report = |span: &Range<usize>, message: String| {
        errors.push(Diagnostic::error(
            file.to_owned(),
            Some(Position::of_offset(text, span.start)),
            message,
        ));
    };
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            report(&e.span().unwrap_or(0..0), e.message().trim_end().to_owned());
            return Err(errors);
        }
    };
    let mut default_agent: Option<Spanned<String>> = None;
    let mut default_at: Option<Spanned<String>> = None;
    let mut raw = Vec::new();
    for (key, value) in root.into_inner() {
        let string = |value: Spanned<DeValue<'_>>| -> Result<Spanned<String>, toml::de::Error> {
            Spanned::<String>::deserialize(ValueDeserializer::from(value))
        };
        match key.get_ref().as_ref() {
            "agent" => match string(value) {
                Ok(s) => default_agent = Some(s),
                Err(e) => report(&e.span().unwrap_or(key.span()), e.message().to_owned()),
            },
            "at" => match string(value) {
                Ok(s) => default_at = Some(s),
                Err(e) => report(&e.span().unwrap_or(key.span()), e.message().to_owned()),
            },
            "case" => {
                let Some(items) = value.get_ref().as_array() else {
                    report(
                        &value.span(),
                        "`case` must be an array of tables (`[[case]]`)".to_owned(),
                    );
                    continue;
                };
                for item in items {
                    let span = item.span();
                    match RawCase::deserialize(ValueDeserializer::from(item.clone())) {
                        Ok(c) => raw.push((span, c)),
                        Err(e) => {
                            report(&e.span().unwrap_or(span), e.message().trim_end().to_owned());
                        }
                    }
                }
            }
            other => report(
                &key.span(),
                format!("unknown key `{other}`: expected `agent`, `at` or `case`"),
            ),
        }
    }
    let now = Timestamp::now();
    let default_at = default_at.as_ref().and_then(|at| {
        parse_instant(at.get_ref())
            .map_err(|e| report(&at.span(), e))
            .ok()
    });
    let defaults = Defaults {
        agent: default_agent.as_ref(),
        at: default_at.unwrap_or(now),
    };
    let cases: Vec<Case> = raw
        .into_iter()
        .filter_map(|(span, c)| case_of(text, set, &defaults, &span, c, &mut report))
        .collect();
    if cases.is_empty() && errors.is_empty() {
        errors.push(Diagnostic::error(
            file.to_owned(),
            None,
            "no cases (`[[case]]`) in this file".to_owned(),
        ));
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        errors.sort();
        Err(errors)
    }
}

/// What a case takes from the top of its file when it does not say.
struct Defaults<'a> {
    agent: Option<&'a Spanned<String>>,
    at: Timestamp,
}

/// One case, checked; its errors go to `report`.
fn case_of(
    text: &str,
    set: &PolicySet,
    defaults: &Defaults<'_>,
    span: &Range<usize>,
    c: RawCase,
    report: &mut dyn FnMut(&Range<usize>, String),
) -> Option<Case> {
    let line = Position::of_offset(text, span.start).line;
    let agent = match c.agent.as_ref().or(defaults.agent) {
        Some(a) if set.agent(a.get_ref()).is_some() => Some(a.get_ref().clone()),
        Some(a) => {
            report(
                &a.span(),
                format!("no agent named `{}` in the policy", a.get_ref()),
            );
            None
        }
        None => {
            report(
                span,
                "the case names no agent (set `agent` in it or at the top of the file)".to_owned(),
            );
            None
        }
    };
    let op = Op::from_name(c.op.get_ref());
    if op.is_none() {
        report(
            &c.op.span(),
            format!(
                "unknown op `{}`: expected one of {}",
                c.op.get_ref(),
                Op::ALL.map(Op::name).join(", ")
            ),
        );
    }
    let decision = |d: &Spanned<String>, report: &mut dyn FnMut(&Range<usize>, String)| {
        let found = Decision::from_name(d.get_ref());
        if found.is_none() {
            report(
                &d.span(),
                format!(
                    "unknown decision `{}`: expected one of allow, audit, hold, deny",
                    d.get_ref()
                ),
            );
        }
        found
    };
    let expect = decision(&c.expect, report);
    let enforced = c.enforced.as_ref().map(|e| decision(e, report));
    for p in std::iter::once(&c.path).chain(c.target.as_ref()) {
        if let Err(why) = check_resolved(p.get_ref()) {
            report(&p.span(), why);
        }
    }
    if let (Some(t), Some(op)) = (&c.target, op)
        && !matches!(op, Op::Rename | Op::Link)
    {
        report(
            &t.span(),
            format!("`target` is for rename and link only, not {}", op.name()),
        );
    }
    let rule = expected_rule(set, agent.as_deref(), &c, report);
    let at = match &c.at {
        Some(at) => parse_instant(at.get_ref())
            .map_err(|e| report(&at.span(), e))
            .ok(),
        None => Some(defaults.at),
    };
    let facts = facts_of_case(&c);
    let writer = writer_of_case(&c, report);
    if let (Some(agent), Some(op), Some(expect), Some(at), Some(writer)) =
        (agent, op, expect, at, writer)
    {
        return Some(Case {
            line,
            name: c.name.map(Spanned::into_inner),
            action: Action {
                agent,
                op,
                path: c.path.get_ref().clone().into_bytes(),
                target: c.target.map(|t| t.into_inner().into_bytes()),
                at,
                facts,
                subject: Subject {
                    writer,
                    ..subject_of(c.user.as_deref(), c.group.as_deref())
                },
            },
            expect,
            enforced: enforced.flatten(),
            rule,
        });
    }
    None
}

/// The writer class a case gives for `written_by` rules (none given: no agent wrote the file);
/// `None` after an error.
fn writer_of_case(c: &RawCase, report: &mut dyn FnMut(&Range<usize>, String)) -> Option<u32> {
    let Some(w) = &c.written_by else {
        return Some(jit_common::provenance::WRITER_NONE);
    };
    let class = jit_common::provenance::writer_from_name(w.get_ref());
    if class.is_none() {
        report(
            &w.span(),
            format!(
                "unknown writer `{}`: use this-agent, other-agent or none",
                w.get_ref()
            ),
        );
    }
    class
}

/// The facts a case gives for rules with conditions; `None` when it gives none.
fn facts_of_case(c: &RawCase) -> Option<Facts> {
    let target = match (c.target_exists, c.target_size) {
        (_, Some(n)) => Some(Target::Size(n)),
        (Some(false), None) => Some(Target::Missing),
        // Exists, of a size that does not matter here.
        (Some(true), None) => Some(Target::Size(0)),
        (None, None) => None,
    };
    let given = c.args.is_some()
        || c.cwd.is_some()
        || c.caller.is_some()
        || c.ancestors.is_some()
        || c.env.is_some()
        || target.is_some();
    given.then(|| Facts {
        args: c.args.clone(),
        cwd: c.cwd.clone(),
        caller: c.caller.clone(),
        ancestors: c
            .ancestors
            .as_ref()
            .map(|a| a.iter().cloned().map(Some).collect()),
        env: c
            .env
            .as_ref()
            .map(|e| e.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        sha256: None,
        target,
    })
}

/// The rule a case expects to decide, checked against its agent.
fn expected_rule(
    set: &PolicySet,
    agent: Option<&str>,
    c: &RawCase,
    report: &mut dyn FnMut(&Range<usize>, String),
) -> Option<ExpectedRule> {
    match (&c.rule, &c.by_default) {
        (Some(r), Some(d)) if *d.get_ref() => {
            report(
                &r.span(),
                "give `rule` or `by_default = true`, not both".to_owned(),
            );
            None
        }
        (Some(r), _) => {
            let known = agent
                .and_then(|a| set.agent(a))
                .is_none_or(|a| a.rules.iter().any(|x| x.name == *r.get_ref()));
            if !known {
                report(
                    &r.span(),
                    format!(
                        "agent `{}` has no rule named `{}`",
                        agent.unwrap_or(""),
                        r.get_ref()
                    ),
                );
            }
            Some(ExpectedRule::Named(r.get_ref().clone()))
        }
        (None, Some(d)) if *d.get_ref() => Some(ExpectedRule::Default),
        _ => None,
    }
}

/// Why `path` is not a path the kernel could report (absolute, no empty, `.` or `..`
/// components, no trailing `/`), if it is not.
///
/// # Errors
/// The reason, naming the path.
pub fn check_resolved(path: &str) -> Result<(), String> {
    let ok = path == "/"
        || (path.starts_with('/')
            && !path.ends_with('/')
            && path[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
            && !path.contains('\0'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a resolved path: the kernel decides absolute paths without `//`, `.`, \
             `..` or a trailing `/`",
            path.escape_debug()
        ))
    }
}

/// What one case got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    pub file: String,
    pub line: usize,
    pub name: Option<String>,
    pub agent: String,
    pub op: &'static str,
    pub path: String,
    pub target: Option<String>,
    pub at: String,
    pub expect: &'static str,
    pub expect_enforced: Option<&'static str>,
    pub expect_rule: Option<ExpectedRule>,
    pub decision: &'static str,
    pub enforced: &'static str,
    /// The rule that decided; `None` for the default or self-protection.
    pub rule: Option<String>,
    pub by: &'static str,
    pub pass: bool,
}

/// Runs `cases` (read from `file`).
///
/// # Panics
/// When a case names an agent `decider`'s policy does not have: [`parse`] checks that against
/// the same policy.
#[must_use]
pub fn run(decider: &Decider<'_>, file: &Path, cases: &[Case]) -> Vec<CaseResult> {
    cases
        .iter()
        .map(|case| {
            let a = &case.action;
            let outcome = decider
                .decide(a)
                .expect("agents are checked when cases are read");
            let v = outcome.verdict;
            let rule = decider.set().rule(v.rule_id).map(|(_, r)| r.name.clone());
            let by = if outcome.by_self_protection() {
                "self-protection"
            } else if rule.is_some() {
                "rule"
            } else {
                "default"
            };
            let rule_ok = match &case.rule {
                None => true,
                Some(ExpectedRule::Default) => by == "default",
                Some(ExpectedRule::Named(n)) => rule.as_deref() == Some(n.as_str()),
            };
            let pass = v.decision == case.expect
                && case.enforced.is_none_or(|e| e == v.enforced)
                && rule_ok;
            CaseResult {
                file: file.display().to_string(),
                line: case.line,
                name: case.name.clone(),
                agent: a.agent.clone(),
                op: a.op.name(),
                path: escape_bytes(&a.path).into_owned(),
                target: a.target.as_ref().map(|t| escape_bytes(t).into_owned()),
                at: rfc3339(a.at),
                expect: case.expect.name(),
                expect_enforced: case.enforced.map(Decision::name),
                expect_rule: case.rule.clone(),
                decision: v.decision.name(),
                enforced: v.enforced.name(),
                rule,
                by,
                pass,
            }
        })
        .collect()
}

/// One table row per case and a summary line.
#[must_use]
pub fn render(results: &[CaseResult]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for r in results {
        let what = format!(
            "{} {} {}{}",
            r.agent,
            r.op,
            r.path,
            r.target
                .as_ref()
                .map_or_else(String::new, |t| format!(" -> {t}"))
        );
        let got = describe(r.decision, r.enforced, r.by, r.rule.as_deref());
        let _ = write!(
            out,
            "{:<4} {}:{}  {what}: {got}",
            if r.pass { "ok" } else { "FAIL" },
            r.file,
            r.line
        );
        if let Some(name) = &r.name {
            let _ = write!(out, "  ({name})");
        }
        if !r.pass {
            let rule = match &r.expect_rule {
                None => String::new(),
                Some(ExpectedRule::Default) => " by the default".to_owned(),
                Some(ExpectedRule::Named(n)) => format!(" by rule \"{n}\""),
            };
            let enforced = r
                .expect_enforced
                .map_or_else(String::new, |e| format!(" (enforced: {e})"));
            let _ = write!(
                out,
                "\n     expected {}{enforced}{rule} at {}",
                r.expect, r.at
            );
        }
        out.push('\n');
    }
    let failed = results.iter().filter(|r| !r.pass).count();
    let _ = writeln!(
        out,
        "{} cases: {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    );
    out
}

fn describe(decision: &str, enforced: &str, by: &str, rule: Option<&str>) -> String {
    let enforced = if enforced == decision {
        String::new()
    } else {
        format!(" (enforced: {enforced})")
    };
    let by = match (by, rule) {
        ("rule", Some(r)) => format!("rule \"{r}\""),
        ("default", _) => "the default".to_owned(),
        (other, _) => other.to_owned(),
    };
    format!("{decision}{enforced} by {by}")
}
