//! `jitctl policy check --strict`: warnings about rules that load fine but do not do what they
//! seem to. Every question is answered by the compiled maps and the kernel's matcher
//! ([`AgentMaps`]), on probe paths built from each pattern:
//!
//! - **never decides**: a pattern for an op that loses on every path it matches, to a more
//!   specific rule or to a rule with the same pattern (rules with a `when` are left out of the
//!   competition, since they are not always in force);
//! - **sidestep**: a `deny` or `hold` rule guards some write-like ops of a path while others
//!   that change or replace the same file are allowed there (truncate, link, symlink, unlink,
//!   rename), or while a directory above it may be renamed (moved away, refilled, moved back);
//! - **cannot match on this host**: a pattern through a symlink (the kernel decides resolved
//!   paths: `/bin/sh` is `/usr/bin/dash` on Debian 12), a directory pattern naming a file, an
//!   exec pattern for a file that does not exist;
//! - **allow-only agent**: `default = "allow"` without any `deny` or `hold` rule;
//! - **restricts an identity**: a `deny` or `hold` rule with `user` or `group`, which binds only
//!   processes that cannot change their ids (policies/README.md, "Users and groups").
//!
//! Rules with a `when`, `user` or `group` are not always in force for every process of the
//! agent, so they are left out of the competition of the other rules.
//!
//! Probe paths put the name `jit-probe` for a `*` and for what lies below a directory
//! pattern. Such a name matches only rules that match any name there, so a rule that loses at
//! the probe loses at every path of its pattern; a probe longer than a key holds covers what
//! only directory rules can match.
use std::path::Path;

use jit_common::policy::{Decision, Op, Verdict};

use super::{
    diagnostics::Diagnostic,
    model::{AgentMaps, Protected},
};
use crate::policy::{AgentPolicy, PolicySet, Rule, compile_agent};

const PROBE: &str = "jit-probe";

/// Ops that change a file or what a name points to: a guard on some of them and not others
/// can be sidestepped.
const WRITE_LIKE: [Op; 10] = [
    Op::Write,
    Op::Create,
    Op::Unlink,
    Op::Rename,
    Op::Truncate,
    Op::Link,
    Op::Symlink,
    Op::Chmod,
    Op::Chown,
    Op::Metadata,
];

/// Ops whose hooks see the file a symlink points to, not the link.
const FOLLOWS_SYMLINKS: [Op; 5] = [Op::Exec, Op::Write, Op::Truncate, Op::Chmod, Op::Metadata];

/// Every warning for `set`, sorted by file and line.
///
/// `protected` are the daemon's own paths, which self-protection guards for every agent.
#[must_use]
pub fn lint(set: &PolicySet, protected: &Protected) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for agent in set.agents() {
        lint_agent(agent, protected, &mut out);
    }
    out.sort();
    out
}

fn warn(out: &mut Vec<Diagnostic>, agent: &AgentPolicy, rule: Option<&Rule>, message: String) {
    out.push(Diagnostic::warning(
        agent.file.clone(),
        Some(rule.map_or(agent.at, |r| r.at)),
        message,
    ));
}

/// The probe paths of `pattern`: one for an exact pattern; for a directory pattern a name
/// right below it, one deeper, and one past the key's capacity.
fn probes(pattern: &str) -> Vec<Vec<u8>> {
    let filled: Vec<&str> = pattern
        .split('/')
        .map(|c| if c == "*" { PROBE } else { c })
        .collect();
    let filled = filled.join("/");
    if pattern.ends_with('/') {
        vec![
            format!("{filled}{PROBE}").into_bytes(),
            format!("{filled}{PROBE}/{PROBE}").into_bytes(),
            format!("{filled}{PROBE}/{}", "x".repeat(300)).into_bytes(),
        ]
    } else {
        vec![filled.into_bytes()]
    }
}

/// How a verdict is named in warnings.
fn by(agent: &AgentPolicy, v: Verdict) -> String {
    agent.rules.iter().find(|r| r.id == v.rule_id).map_or_else(
        || "the default".to_owned(),
        |r| format!("rule \"{}\" (line {})", r.name, r.at.line),
    )
}

fn names(ops: &[Op]) -> String {
    ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
}

fn lint_agent(agent: &AgentPolicy, protected: &Protected, out: &mut Vec<Diagnostic>) {
    if agent.default == Decision::Allow
        && !agent
            .rules
            .iter()
            .any(|r| matches!(r.decision, Decision::Deny | Decision::Hold))
    {
        warn(
            out,
            agent,
            None,
            format!(
                "agent `{}` has default = \"allow\" and no deny or hold rule: it can do \
                 anything, jit only reports it",
                agent.name
            ),
        );
    }
    // The rules that are always in force, for every process of the agent.
    let everywhere = |r: &Rule| r.when.is_none() && r.who.is_anyone();
    let always = AgentMaps::new(&compile_agent(agent, everywhere));
    for rule in &agent.rules {
        let with_rule = AgentMaps::new(&compile_agent(agent, |r| everywhere(r) || r.id == rule.id));
        restricts_an_identity(agent, rule, out);
        never_decides(agent, rule, &with_rule, out);
        if matches!(rule.decision, Decision::Deny | Decision::Hold) {
            sidesteps(agent, rule, &with_rule, &always, protected, out);
        }
        host_paths(agent, rule, out);
    }
}

/// A `deny` or `hold` rule that names users or groups restricts only processes that cannot
/// leave them: root, set-user-ID helpers and user namespaces choose their ids, and with them
/// whose rules apply.
fn restricts_an_identity(agent: &AgentPolicy, rule: &Rule, out: &mut Vec<Diagnostic>) {
    let names_accounts = !(rule.who.users.is_empty() && rule.who.groups.is_empty());
    if !names_accounts || !matches!(rule.decision, Decision::Deny | Decision::Hold) {
        return;
    }
    let named: Vec<String> = rule
        .who
        .users
        .iter()
        .map(|a| format!("user {}", a.name))
        .chain(rule.who.groups.iter().map(|a| format!("group {}", a.name)))
        .collect();
    warn(
        out,
        agent,
        Some(rule),
        format!(
            "rule \"{}\" ({}) binds only processes acting as {}: a process that can change its ids \
             (root, a set-user-ID helper, a user namespace) chooses whose rules apply; write \
             restrictions meant for the whole agent without `user`/`group`, and use them to \
             grant (policies/README.md, \"Users and groups\")",
            rule.name,
            rule.decision.name(),
            named.join(" or ")
        ),
    );
}

fn never_decides(agent: &AgentPolicy, rule: &Rule, maps: &AgentMaps, out: &mut Vec<Diagnostic>) {
    let mut dead: Vec<(&str, Vec<Op>, String)> = Vec::new();
    let mut pairs = 0;
    for path in &rule.paths {
        let probes = probes(&path.pattern);
        let mut ops = Vec::new();
        let mut winner = String::new();
        for &op in &rule.ops {
            pairs += 1;
            let verdicts: Vec<Verdict> = probes.iter().map(|p| maps.decide(op, p)).collect();
            if verdicts.iter().all(|v| v.rule_id != rule.id) {
                ops.push(op);
                winner = by(agent, verdicts[0]);
            }
        }
        if !ops.is_empty() {
            dead.push((&path.pattern, ops, winner));
        }
    }
    let dead_pairs: usize = dead.iter().map(|d| d.1.len()).sum();
    if dead_pairs == 0 {
        return;
    }
    if dead_pairs == pairs {
        let (_, _, winner) = &dead[0];
        warn(
            out,
            agent,
            Some(rule),
            format!(
                "rule \"{}\" never decides: on every path it matches another rule wins (e.g. \
                 {winner}); rules with a `when`, `user`, `group` or `written_by` aside",
                rule.name
            ),
        );
        return;
    }
    for (pattern, ops, winner) in dead {
        warn(
            out,
            agent,
            Some(rule),
            format!(
                "rule \"{}\": `{pattern}` never decides {}: {winner} wins on every such path",
                rule.name,
                names(&ops)
            ),
        );
    }
}

fn sidesteps(
    agent: &AgentPolicy,
    rule: &Rule,
    with_rule: &AgentMaps,
    always: &AgentMaps,
    protected: &Protected,
    out: &mut Vec<Diagnostic>,
) {
    let weak = |d: Decision| matches!(d, Decision::Allow | Decision::Audit);
    for path in &rule.paths {
        let probe = probes(&path.pattern).swap_remove(0);
        let guarded: Vec<Op> = WRITE_LIKE
            .into_iter()
            .filter(|&op| rule.ops.contains(&op) && with_rule.decide(op, &probe).rule_id == rule.id)
            .collect();
        if guarded.is_empty() {
            continue;
        }
        let mut open = Vec::new();
        let mut deciders = Vec::new();
        for op in WRITE_LIKE {
            if guarded.contains(&op) {
                continue;
            }
            let v = with_rule.decide(op, &probe);
            if weak(v.decision) {
                open.push(op);
                let d = by(agent, v);
                if !deciders.contains(&d) {
                    deciders.push(d);
                }
            }
        }
        if !open.is_empty() {
            warn(
                out,
                agent,
                Some(rule),
                format!(
                    "rule \"{}\" {} {} on `{}`, but {} {} allowed there (by {}): {}; add \
                     them to the rule",
                    rule.name,
                    if rule.decision == Decision::Deny {
                        "denies"
                    } else {
                        "holds"
                    },
                    names(&guarded),
                    path.pattern,
                    names(&open),
                    if open.len() == 1 { "is" } else { "are" },
                    deciders.join(", "),
                    open.iter()
                        .map(|&op| sidestep(op))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        // A directory above the guarded path renamed away, refilled and renamed back. Rules
        // with a `when` are not counted on to guard the rename.
        let probe_text = String::from_utf8_lossy(&probe).into_owned();
        let nearest_open = Path::new(&probe_text)
            .ancestors()
            .skip(1)
            .map(|a| a.as_os_str().to_string_lossy().into_owned())
            .take_while(|a| a != "/")
            // Self-protection refuses renaming the daemon's directories and those above them.
            .filter(|a| !protected.covers(a.as_bytes()))
            .find_map(|a| {
                let v = always.decide(Op::Rename, a.as_bytes());
                weak(v.decision).then(|| (a.replace(PROBE, "*"), by(agent, v)))
            });
        if let Some((dir, decider)) = nearest_open {
            warn(
                out,
                agent,
                Some(rule),
                format!(
                    "rule \"{}\" guards `{}`, but renaming the directory `{dir}` above it is \
                     allowed (by {decider}): moved away, refilled and moved back, it sidesteps \
                     the rule; guard `rename` of `{dir}` too",
                    rule.name, path.pattern
                ),
            );
        }
    }
}

/// How `op` reaches a file a rule guards against other ops.
const fn sidestep(op: Op) -> &'static str {
    match op {
        Op::Write => "write changes the file",
        Op::Create => "create makes it anew",
        Op::Unlink => "unlink removes it to make room for another",
        Op::Rename => "rename moves another file over it",
        Op::Truncate => "truncate empties it",
        Op::Link => "link gives it a second name or puts another file under its name",
        Op::Symlink => "symlink puts another file under its name",
        Op::Chmod => "chmod changes who may run or change it",
        Op::Chown => "chown changes its owner",
        _ => "metadata changes its ACLs, attributes or times",
    }
}

/// Patterns this host's filesystem keeps from ever matching.
fn host_paths(agent: &AgentPolicy, rule: &Rule, out: &mut Vec<Diagnostic>) {
    for path in &rule.paths {
        let pattern = path.pattern.as_str();
        let directory = pattern.ends_with('/');
        let body = pattern.trim_end_matches('/');
        // The literal part: components before any `*`.
        let components: Vec<&str> = body.split('/').skip(1).take_while(|c| *c != "*").collect();
        let wildcard = body.split('/').any(|c| c == "*");
        let mut prefix = String::new();
        let last = components.len();
        let mut reported = false;
        for (i, component) in components.iter().enumerate() {
            prefix.push('/');
            prefix.push_str(component);
            let is_last = i + 1 == last && !wildcard;
            let Ok(meta) = std::fs::symlink_metadata(&prefix) else {
                break;
            };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&prefix)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                if !is_last || directory {
                    warn(
                        out,
                        agent,
                        Some(rule),
                        format!(
                            "rule \"{}\": `{pattern}` cannot match on this host: `{prefix}` is \
                             a symlink (to `{target}`) and the kernel decides resolved paths",
                            rule.name
                        ),
                    );
                    reported = true;
                } else {
                    let following: Vec<Op> = rule
                        .ops
                        .iter()
                        .copied()
                        .filter(|o| FOLLOWS_SYMLINKS.contains(o))
                        .collect();
                    if !following.is_empty() {
                        warn(
                            out,
                            agent,
                            Some(rule),
                            format!(
                                "rule \"{}\": `{pattern}` is a symlink (to `{target}`) on this \
                                 host: {} of it decide the file it points to, so this pattern \
                                 never matches them",
                                rule.name,
                                names(&following)
                            ),
                        );
                        reported = true;
                    }
                }
                break;
            }
            if is_last && directory && !meta.is_dir() {
                warn(
                    out,
                    agent,
                    Some(rule),
                    format!(
                        "rule \"{}\": `{pattern}` matches paths below a directory, but \
                         `{prefix}` is not a directory on this host",
                        rule.name
                    ),
                );
                reported = true;
            }
        }
        let exact_file = !directory && !wildcard;
        if !reported
            && exact_file
            && rule.ops.contains(&Op::Exec)
            && std::fs::symlink_metadata(pattern).is_err()
        {
            warn(
                out,
                agent,
                Some(rule),
                format!(
                    "rule \"{}\": `{pattern}` does not exist on this host, so `exec` of it \
                     cannot happen here",
                    rule.name
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_fill_wildcards_and_reach_below_directories() {
        assert_eq!(probes("/usr/bin/git"), vec![b"/usr/bin/git".to_vec()]);
        assert_eq!(
            probes("/home/*/.ssh/")[..2],
            [
                b"/home/jit-probe/.ssh/jit-probe".to_vec(),
                b"/home/jit-probe/.ssh/jit-probe/jit-probe".to_vec()
            ]
        );
        assert!(probes("/")[2].len() > 300);
    }
}
