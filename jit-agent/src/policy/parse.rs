//! One policy file: TOML text to a validated [`AgentPolicy`], reporting every mistake it can
//! find. Each section (`[agent]`, `[escalation]`, each `[[rule]]`) is deserialized on its own,
//! so a structural error (an unknown field, a wrong type) hides nothing in other sections.
use std::{collections::HashMap, ops::Range, path::Path};

use jit_common::policy::{Decision, MAX_IDENTITY_RULESETS, Mode, Op, RuleShape};
use serde::de::DeserializeOwned;
use toml::{
    Spanned,
    de::{DeTable, DeValue, ValueDeserializer},
};

use super::{
    LoadOptions,
    args::ArgsPattern,
    conditions::{Conditions, TargetCondition, parse_size},
    error::{FileErrors, PolicyError, Position},
    escalation::{approvers, escalation_of, required_approvals},
    identity::{Identity, identity},
    model::{Account, AgentPolicy, Approvers, Escalation, OpGroup, Risk, Rule, RulePath, Who},
    raw::{RawAgent, RawEscalation, RawRule, RawSize, RawTarget, RawWhen, StringOrList},
    values::{decision, duration, named, on_timeout},
    window::{Activity, TimeWindow, When},
};

#[derive(Default)]
pub(super) struct FileOutcome {
    pub identity: Option<Identity>,
    /// `Some` only when the file has no error.
    pub agent: Option<AgentPolicy>,
}

/// Parses and validates one file; errors go to `errors`.
pub(super) fn parse_file(
    file: &Path,
    text: &str,
    options: LoadOptions,
    errors: &mut Vec<PolicyError>,
) -> FileOutcome {
    let before = errors.len();
    let mut errs = FileErrors::new(file.to_owned(), text, errors);
    // Only the first syntax error: after it, the parser's recovery guesses and its further
    // errors are mostly echoes of the first. The rest of the file is checked once it parses.
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            toml_error(&mut errs, &e);
            return FileOutcome::default();
        }
    };
    let mut agent = None;
    let mut agent_seen = false;
    let mut escalation = None;
    let mut raw_rules = Vec::new();
    for (key, value) in root.into_inner() {
        match key.get_ref().as_ref() {
            "agent" => {
                agent_seen = true;
                agent =
                    section::<RawAgent>(&mut errs, value, "`agent` must be a table (`[agent]`)");
            }
            "escalation" => {
                escalation = section::<RawEscalation>(
                    &mut errs,
                    value,
                    "`escalation` must be a table (`[escalation]`)",
                );
            }
            "rule" => raw_rules = rules(&mut errs, &value),
            other => errs.at(
                &key.span(),
                format!("unknown section `{other}`: expected `agent`, `escalation` or `rule`"),
            ),
        }
    }
    if !agent_seen {
        errs.at_position(Position::START, "missing `[agent]` section");
    }

    let identity = agent.as_ref().and_then(|a| identity(&mut errs, a));
    let mode = agent.as_ref().and_then(|a| {
        a.mode.as_ref().map_or(Some(Mode::Enforce), |m| {
            named(
                &mut errs,
                m,
                "mode",
                Mode::from_name,
                Mode::ALL.map(Mode::name),
            )
        })
    });
    let default = agent.as_ref().and_then(|a| {
        // Omitted: deny, the fail-closed choice that needs no reviewer (see policies/README.md).
        a.default
            .as_ref()
            .map_or(Some(Decision::Deny), |d| decision(&mut errs, d))
    });
    let escalation = escalation_of(&mut errs, escalation.as_ref(), options);
    let mut names: HashMap<String, Position> = HashMap::new();
    let rules: Vec<Rule> = raw_rules
        .iter()
        .filter_map(|r| rule(&mut errs, r, &mut names, escalation.as_ref(), options))
        .collect();

    if let (Some(esc), Some(a)) = (&escalation, &agent) {
        check_releasable(&mut errs, a, &raw_rules, esc);
    }
    check_identity_classes(&mut errs, &rules);

    let clean = errs.errors.len() == before;
    let agent = match (clean, identity.as_ref(), mode, default, escalation) {
        (true, Some(id), Some(mode), Some(default), Some(escalation)) => Some(AgentPolicy {
            name: id.name.clone(),
            file: file.to_owned(),
            at: id.name_at,
            cgroups: id.cgroups.iter().map(|(c, _)| c.clone()).collect(),
            mode,
            default,
            escalation,
            rules,
        }),
        _ => None,
    };
    FileOutcome { identity, agent }
}

/// A hold nobody can release always ends in `on_timeout`: refuse an agent that can hold without
/// approvers, pointing at the first place that asks for a hold. A rule with approvers of its
/// own (or from `[escalation.<risk>]` of its risk) does not need the agent's.
fn check_releasable(
    errs: &mut FileErrors<'_>,
    agent: &RawAgent,
    rules: &[RawRule],
    escalation: &Escalation,
) {
    if !escalation.approvers.is_empty() {
        return;
    }
    let own_approvers = |r: &RawRule| {
        r.approvers.is_some()
            || r.risk
                .as_ref()
                .and_then(|k| Risk::from_name(k.get_ref()))
                .and_then(|k| escalation.level(k))
                .is_some_and(|l| l.approvers.is_some())
    };
    let hold_at = agent
        .default
        .as_ref()
        .filter(|d| d.get_ref() == Decision::Hold.name())
        .map(Spanned::span)
        .or_else(|| {
            rules
                .iter()
                .find(|r| r.decision.get_ref() == Decision::Hold.name() && !own_approvers(r))
                .map(|r| r.decision.span())
        });
    if let Some(span) = hold_at {
        errs.at(
            &span,
            "this agent can hold actions, but `[escalation] approvers` lists nobody who could \
             release them",
        );
    }
}

fn toml_error(errs: &mut FileErrors<'_>, e: &toml::de::Error) {
    errs.at(&e.span().unwrap_or(0..0), e.message().trim_end());
}

/// Deserializes one table, reporting `not_table` when it is some other value.
fn section<T: DeserializeOwned>(
    errs: &mut FileErrors<'_>,
    value: Spanned<DeValue<'_>>,
    not_table: &str,
) -> Option<T> {
    if !value.get_ref().is_table() {
        errs.at(&value.span(), not_table);
        return None;
    }
    T::deserialize(ValueDeserializer::from(value))
        .map_err(|e| toml_error(errs, &e))
        .ok()
}

fn rules(errs: &mut FileErrors<'_>, value: &Spanned<DeValue<'_>>) -> Vec<RawRule> {
    let not_array = "`rule` must be an array of tables (`[[rule]]`)";
    let Some(items) = value.get_ref().as_array() else {
        errs.at(&value.span(), not_array);
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| section::<RawRule>(errs, item.clone(), not_array))
        .collect()
}

/// A name from a fixed set (`mode`, `decision`, `on_timeout`, `op`).
/// One rule, checked; its id is assigned once the whole set is known.
fn rule(
    errs: &mut FileErrors<'_>,
    raw: &RawRule,
    names: &mut HashMap<String, Position>,
    escalation: Option<&Escalation>,
    options: LoadOptions,
) -> Option<Rule> {
    let before = errs.errors.len();
    let name = raw.name.get_ref();
    let at = errs.position(&raw.name.span());
    if name.trim().is_empty() {
        errs.at(&raw.name.span(), "rule name is empty");
    } else if let Some(first) = names.get(name) {
        errs.at(
            &raw.name.span(),
            format!("duplicate rule name `{name}` (first used at {first})"),
        );
    } else {
        names.insert(name.clone(), at);
    }

    let (ops, groups) = ops(errs, raw);
    let paths = list(
        errs,
        &raw.path,
        "path",
        |errs, path, span| match RuleShape::parse(path.as_bytes()) {
            Ok(shape) => Some(RulePath {
                pattern: path.to_owned(),
                shape,
            }),
            Err(e) => {
                errs.at(span, format!("bad path `{path}`: {e}"));
                None
            }
        },
    );
    let decision = decision(errs, &raw.decision);
    let when = raw.when.as_ref().and_then(|w| when(errs, w));
    let is_hold = decision == Some(Decision::Hold);
    let hold_only = |errs: &mut FileErrors<'_>, span: Range<usize>, key: &str| {
        if decision.is_some() && !is_hold {
            errs.at(
                &span,
                format!(
                    "`{key}` only applies to rules with decision = \"hold\"; this rule's \
                     decision is \"{}\"",
                    raw.decision.get_ref()
                ),
            );
        }
    };
    let timeout = raw.timeout.as_ref().and_then(|t| {
        hold_only(errs, t.span(), "timeout");
        duration(errs, t, "timeout")
    });
    let on_timeout = raw.on_timeout.as_ref().and_then(|t| {
        hold_only(errs, t.span(), "on_timeout");
        on_timeout(errs, t)
    });
    let hint = raw.hint.as_ref().and_then(|h| hint(errs, h));
    let risk = raw
        .risk
        .as_ref()
        .and_then(|r| named(errs, r, "risk", Risk::from_name, Risk::ALL.map(Risk::name)));
    if let Some(a) = &raw.approvers {
        hold_only(errs, a.span(), "approvers");
    }
    if let Some(n) = &raw.required_approvals {
        hold_only(errs, n.span(), "required_approvals");
    }
    let (approvers, required_approvals) =
        rule_approvers(errs, raw, risk, escalation, options, is_hold);
    let conditions = conditions(errs, raw, &ops);
    let who = who(errs, raw, &ops, options);
    (errs.errors.len() == before).then(|| Rule {
        id: 0,
        name: name.clone(),
        at,
        ops,
        groups,
        paths,
        decision: decision.unwrap_or(Decision::Deny),
        when,
        timeout,
        on_timeout,
        hint,
        risk,
        approvers,
        required_approvals,
        conditions,
        who,
    })
}

/// A rule's `user` and `group` conditions, resolved through NSS like approvers (ids compare in
/// the kernel; `--offline` keeps names only).
fn who(errs: &mut FileErrors<'_>, raw: &RawRule, ops: &[Op], options: LoadOptions) -> Who {
    let mut who = Who::default();
    if let Some(writers) = &raw.written_by {
        who.writers = written_by(errs, writers, ops);
    }
    if let Some(users) = &raw.user {
        who.users = list(errs, users, "user", |errs, name, span| {
            account(errs, name, span, "user", options, |n| {
                nix::unistd::User::from_name(n).map(|u| u.map(|u| u.uid.as_raw()))
            })
        });
        duplicates(errs, users, "user");
    }
    if let Some(groups) = &raw.group {
        who.groups = list(errs, groups, "group", |errs, name, span| {
            account(errs, name, span, "group", options, |n| {
                nix::unistd::Group::from_name(n).map(|g| g.map(|g| g.gid.as_raw()))
            })
        });
        duplicates(errs, groups, "group");
    }
    who
}

/// The writer classes of a rule's `written_by` (bits `1 << WRITER_*`); 0 after an error.
fn written_by(errs: &mut FileErrors<'_>, value: &Spanned<StringOrList>, ops: &[Op]) -> u8 {
    use jit_common::provenance::{WRITER_OTHER_AGENT, WRITER_THIS_AGENT};
    if !ops.is_empty() && ops != [Op::Exec] {
        errs.at(
            &value.span(),
            "`written_by` is a condition on the file an exec runs: it needs op = \"exec\" (and no \
             other op); write the other ops in a rule of their own",
        );
        return 0;
    }
    if StringOrList::items(value).next().is_none() {
        errs.at(
            &value.span(),
            "`written_by` is empty: name \"this-agent\", \"other-agent\" or \"any-agent\", or \
             leave it out for a rule about any file",
        );
        return 0;
    }
    let this = 1u8 << WRITER_THIS_AGENT;
    let other = 1u8 << WRITER_OTHER_AGENT;
    let mut bits = 0u8;
    for (name, span) in StringOrList::items(value) {
        match name {
            "this-agent" => bits |= this,
            "other-agent" => bits |= other,
            "any-agent" | "agent" => bits |= this | other,
            _ => errs.at(
                &span,
                format!(
                    "unknown writer `{name}`: use \"this-agent\" (the agent running it wrote the \
                     file last), \"other-agent\", or \"any-agent\" (also \"agent\")"
                ),
            ),
        }
    }
    bits
}

/// One name of a `user` or `group` list, resolved unless loading offline.
fn account(
    errs: &mut FileErrors<'_>,
    name: &str,
    span: &Range<usize>,
    kind: &str,
    options: LoadOptions,
    resolve: impl Fn(&str) -> nix::Result<Option<u32>>,
) -> Option<Account> {
    if !options.resolve_accounts {
        return Some(Account {
            name: name.to_owned(),
            id: super::UNRESOLVED_ID,
        });
    }
    match resolve(name) {
        Ok(Some(id)) => Some(Account {
            name: name.to_owned(),
            id,
        }),
        Ok(None) => {
            errs.at(span, format!("unknown {kind} `{name}`"));
            None
        }
        Err(e) => {
            errs.at(span, format!("cannot look up {kind} `{name}`: {e}"));
            None
        }
    }
}

/// Reports a name listed twice in `value`.
fn duplicates(errs: &mut FileErrors<'_>, value: &Spanned<StringOrList>, key: &str) {
    let mut seen: Vec<&str> = Vec::new();
    for (name, span) in StringOrList::items(value) {
        if seen.contains(&name) {
            errs.at(&span, format!("{key} `{name}` is listed twice"));
        } else {
            seen.push(name);
        }
    }
}

/// The kernel keeps a copy of an agent's rules per combination of the users and groups its
/// rules name (and "anyone else"): refuse an agent whose combinations exceed
/// [`MAX_IDENTITY_RULESETS`], at the first rule that goes past it.
fn check_identity_classes(errs: &mut FileErrors<'_>, rules: &[Rule]) {
    let key = |a: &Account| {
        if a.id == super::UNRESOLVED_ID {
            Err(a.name.clone())
        } else {
            Ok(a.id)
        }
    };
    let mut users = std::collections::BTreeSet::new();
    let mut groups = std::collections::BTreeSet::new();
    let mut writers = 1;
    for rule in rules {
        users.extend(rule.who.users.iter().map(key));
        groups.extend(rule.who.groups.iter().map(key));
        if rule.who.writers != 0 {
            writers = jit_common::provenance::WRITER_CLASSES as usize;
        }
        let sets = (users.len() + 1) * (groups.len() + 1) * writers;
        if sets > MAX_IDENTITY_RULESETS {
            errs.at_position(
                rule.at,
                format!(
                    "this rule brings the users and groups named in `user` and `group` to {} \
                     and {}: the kernel would need {sets} copies of the agent's rules (one per \
                     combination, and one for anyone else, times 3 with `written_by`), at most \
                     {MAX_IDENTITY_RULESETS} are allowed; name fewer users or groups, or give \
                     them an agent of their own",
                    users.len(),
                    groups.len()
                ),
            );
            return;
        }
    }
}

/// A rule's daemon-side conditions (policies/README.md, "Conditions").
fn conditions(errs: &mut FileErrors<'_>, raw: &RawRule, ops: &[Op]) -> Conditions {
    let exec_only = |errs: &mut FileErrors<'_>, span: Range<usize>, key: &str| {
        if !ops.is_empty() && ops != [Op::Exec] {
            errs.at(
                &span,
                format!(
                    "`{key}` is a condition on what an exec runs: it needs op = \"exec\" (and \
                     no other op); write the other ops in a rule of their own"
                ),
            );
        }
    };
    let args = raw.args.as_ref().and_then(|a| {
        exec_only(errs, a.span(), "args");
        let items = a.get_ref();
        let texts: Vec<&str> = items.iter().map(|i| i.get_ref().as_str()).collect();
        ArgsPattern::parse(&texts)
            .map_err(|e| {
                let span = items.get(e.index).map_or_else(|| a.span(), Spanned::span);
                errs.at(&span, format!("bad `args`: {e}"));
            })
            .ok()
    });
    let programs = |errs: &mut FileErrors<'_>, value: &Option<Spanned<StringOrList>>, key: &str| {
        value.as_ref().map_or_else(Vec::new, |v| {
            list(errs, v, key, |errs, path, span| {
                match RuleShape::parse(path.as_bytes()) {
                    Ok(shape) => Some(RulePath {
                        pattern: path.to_owned(),
                        shape,
                    }),
                    Err(e) => {
                        errs.at(span, format!("bad `{key}` pattern `{path}`: {e}"));
                        None
                    }
                }
            })
        })
    };
    let cwd = programs(errs, &raw.cwd, "cwd");
    let caller = programs(errs, &raw.caller, "caller");
    let ancestor = programs(errs, &raw.ancestor, "ancestor");
    let mut env = Vec::new();
    if let Some(table) = &raw.env {
        exec_only(errs, table.span(), "env");
        if table.get_ref().is_empty() {
            errs.at(
                &table.span(),
                "`env` is empty: name at least one variable, like { CI = \"true\" }",
            );
        }
        for (name, value) in table.get_ref() {
            let n = name.get_ref();
            if n.is_empty() || n.contains(['=', '\0']) {
                errs.at(
                    &name.span(),
                    format!("bad environment variable name `{n}`: not empty, no `=` or NUL"),
                );
                continue;
            }
            if value.get_ref() == "**" {
                errs.at(
                    &value.span(),
                    "`**` is for `args`; any value of a variable is `*`",
                );
                continue;
            }
            match ArgsPattern::parse(&[value.get_ref().as_str()]) {
                Ok(p) => env.push((n.clone(), p)),
                Err(e) => errs.at(
                    &value.span(),
                    format!("bad value pattern for `{n}`: {}", e.message),
                ),
            }
        }
    }
    let target = raw.target.as_ref().and_then(|t| target(errs, t));
    let sha256 = raw.sha256.as_ref().map_or_else(Vec::new, |v| {
        exec_only(errs, v.span(), "sha256");
        digests(errs, v)
    });
    Conditions {
        args,
        cwd,
        caller,
        ancestor,
        env,
        target,
        sha256,
    }
}

/// The digests of a rule's `sha256`, each checked.
fn digests(errs: &mut FileErrors<'_>, value: &Spanned<StringOrList>) -> Vec<[u8; 32]> {
    list(errs, value, "sha256", |errs, text, span| {
        let digest = parse_sha256(text);
        if digest.is_none() {
            errs.at(
                span,
                format!(
                    "bad `sha256` `{text}`: expected 64 hexadecimal digits (what `sha256sum` \
                     prints)"
                ),
            );
        }
        digest
    })
}

/// A SHA-256 digest from its 64 hexadecimal digits (either case).
#[must_use]
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (out, pair) in digest.iter_mut().zip(bytes.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *out = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

fn target(errs: &mut FileErrors<'_>, raw: &Spanned<RawTarget>) -> Option<TargetCondition> {
    let t = raw.get_ref();
    let size = |errs: &mut FileErrors<'_>, v: &Option<Spanned<RawSize>>| {
        v.as_ref().and_then(|v| {
            let parsed = match v.get_ref() {
                RawSize::Bytes(n) => {
                    u64::try_from(*n).map_err(|_| format!("bad size `{n}`: not negative"))
                }
                RawSize::Text(text) => parse_size(text),
            };
            parsed.map_err(|e| errs.at(&v.span(), e)).ok()
        })
    };
    let min_size = size(errs, &t.min_size);
    let max_size = size(errs, &t.max_size);
    let exists = t.exists.as_ref().map(|e| *e.get_ref());
    if t.exists.is_none() && t.min_size.is_none() && t.max_size.is_none() {
        errs.at(
            &raw.span(),
            "`target` is empty: give `exists`, `min_size` or `max_size`",
        );
        return None;
    }
    if exists == Some(false) && (t.min_size.is_some() || t.max_size.is_some()) {
        errs.at(
            &raw.span(),
            "`target` with exists = false cannot also have a size",
        );
        return None;
    }
    if let (Some(min), Some(max)) = (min_size, max_size)
        && min > max
    {
        errs.at(
            &raw.span(),
            format!("`target` min_size ({min}) is larger than max_size ({max}): nothing matches"),
        );
        return None;
    }
    Some(TargetCondition {
        exists,
        min_size,
        max_size,
    })
}

/// The ops of a rule, groups expanded (each op once), and the groups it named.
fn ops(errs: &mut FileErrors<'_>, raw: &RawRule) -> (Vec<Op>, Vec<OpGroup>) {
    let mut groups = Vec::new();
    let mut ops: Vec<Op> = Vec::new();
    for items in list(errs, &raw.op, "op", |errs, op, span| {
        if let Some(group) = OpGroup::from_name(op) {
            if !groups.contains(&group) {
                groups.push(group);
            }
            return Some(group.ops());
        }
        let found = Op::from_name(op);
        if found.is_none() {
            errs.at(
                span,
                format!(
                    "unknown op `{op}`: expected one of {}, or a group: {}",
                    Op::ALL.map(Op::name).join(", "),
                    OpGroup::ALL.map(OpGroup::name).join(", ")
                ),
            );
        }
        found.map(|op| vec![op])
    }) {
        for op in items {
            if !ops.contains(&op) {
                ops.push(op);
            }
        }
    }
    (ops, groups)
}

/// A quorum a rule inherits (from the agent or its risk level) must be reachable by the rule's
/// own approvers too.
fn check_inherited_quorum(
    errs: &mut FileErrors<'_>,
    at: Range<usize>,
    deciders: &Approvers,
    quorum: u32,
) {
    if !deciders.is_empty() && deciders.groups.is_empty() && quorum as usize > deciders.users.len()
    {
        errs.at(
            &at,
            format!(
                "this rule needs {quorum} approvals (its `required_approvals` is inherited), \
                 but its approvers list only {} user(s) and no group: no hold could ever be \
                 approved; set `required_approvals` on the rule",
                deciders.users.len()
            ),
        );
    }
}

/// A rule's own `approvers` and `required_approvals`, validated against the approvers that
/// would decide its holds (its own, else its risk level's, else the agent's).
fn rule_approvers(
    errs: &mut FileErrors<'_>,
    raw: &RawRule,
    risk: Option<Risk>,
    escalation: Option<&Escalation>,
    options: LoadOptions,
    is_hold: bool,
) -> (Option<Approvers>, Option<u32>) {
    let approvers = raw.approvers.as_ref().map(|a| {
        let list = approvers(errs, a.get_ref(), options.resolve_accounts);
        if list.is_empty() {
            errs.at(
                &a.span(),
                "`approvers` lists nobody: leave it out to keep the agent's",
            );
        }
        list
    });
    // Who would approve this rule's holds: its own approvers, else those of its risk level,
    // else the agent's (unknown when `[escalation]` has errors of its own).
    let level = risk.zip(escalation).and_then(|(k, e)| e.level(k));
    let deciders = approvers
        .as_ref()
        .or_else(|| level.and_then(|l| l.approvers.as_ref()))
        .or_else(|| escalation.map(|e| &e.approvers));
    let required_approvals = raw
        .required_approvals
        .as_ref()
        .and_then(|n| required_approvals(errs, n, deciders));
    if is_hold
        && raw.required_approvals.is_none()
        && let (Some(deciders), Some(e), Some(own)) = (deciders, escalation, &raw.approvers)
    {
        let quorum = level
            .and_then(|l| l.required_approvals)
            .unwrap_or(e.required_approvals);
        check_inherited_quorum(errs, own.span(), deciders, quorum);
    }
    (approvers, required_approvals)
}

/// A rule's `hint`: one line, shown to the agent as is, so no control characters (a newline
/// or an escape sequence would let a policy author's typo rewrite the agent's terminal) and a
/// bounded length.
fn hint(errs: &mut FileErrors<'_>, value: &Spanned<String>) -> Option<String> {
    let text = value.get_ref();
    if text.trim().is_empty() {
        errs.at(
            &value.span(),
            "`hint` is empty: leave it out or say what to do instead",
        );
        return None;
    }
    if text.len() > super::MAX_HINT {
        errs.at(
            &value.span(),
            format!(
                "`hint` is {} bytes long; at most {} (one line for the agent)",
                text.len(),
                super::MAX_HINT
            ),
        );
        return None;
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        errs.at(
            &value.span(),
            format!(
                "`hint` contains the control character {c:?}; it must be one line of plain text"
            ),
        );
        return None;
    }
    Some(text.clone())
}

/// The items of a string-or-list field, each converted by `item`; reports an empty list.
fn list<T>(
    errs: &mut FileErrors<'_>,
    value: &Spanned<StringOrList>,
    key: &str,
    mut item: impl FnMut(&mut FileErrors<'_>, &str, &Range<usize>) -> Option<T>,
) -> Vec<T> {
    let items: Vec<(&str, Range<usize>)> = StringOrList::items(value).collect();
    if items.is_empty() {
        errs.at(
            &value.span(),
            format!("`{key}` is empty: the rule would match nothing"),
        );
    }
    items
        .into_iter()
        .filter_map(|(s, span)| item(errs, s, &span))
        .collect()
}

fn when(errs: &mut FileErrors<'_>, raw: &Spanned<RawWhen>) -> Option<When> {
    let w = raw.get_ref();
    let (activity, text) = match (&w.inside, &w.outside) {
        (Some(t), None) => (Activity::Inside, t),
        (None, Some(t)) => (Activity::Outside, t),
        (Some(_), Some(_)) | (None, None) => {
            errs.at(
                &raw.span(),
                "`when` needs exactly one of `inside` and `outside`, like \
                 { outside = \"Mon-Fri 08:00-18:00\", tz = \"UTC\" }",
            );
            return None;
        }
    };
    let window = TimeWindow::parse(text.get_ref())
        .map_err(|e| {
            errs.at(
                &text.span(),
                format!("bad time window `{}`: {e}", text.get_ref()),
            );
        })
        .ok();
    let tz_name =
        w.tz.as_ref()
            .map_or_else(|| "UTC".to_owned(), |t| t.get_ref().clone());
    let tz = jiff::tz::TimeZone::get(&tz_name)
        .map_err(|_| {
            let span = w.tz.as_ref().map_or_else(|| raw.span(), Spanned::span);
            errs.at(
                &span,
                format!("unknown time zone `{tz_name}`: use an IANA name like \"Europe/Berlin\" or \"UTC\""),
            );
        })
        .ok();
    Some(When {
        activity,
        window: window?,
        tz_name,
        tz: tz?,
    })
}
