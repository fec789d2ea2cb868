//! Validated policy to map entries: pure and deterministic, so the same set at the same instant
//! always gives the same entries and the daemon can diff or rebuild generations freely.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
};

use jiff::Timestamp;
use jit_common::policy::{
    AgentConfig, Decision, Mode, Op, PolicyKey, PolicyValue, RuleShape, evaluate, merge,
};

use super::{AgentPolicy, PolicySet, Rule};

/// Where a rule id comes from, for audit records and `jitctl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub agent: String,
    pub rule: String,
    pub file: PathBuf,
    /// Line of the rule's `name`.
    pub line: usize,
    /// The rule's `hint` for the agent, if it has one.
    pub hint: Option<String>,
}

/// One policy map entry before the ruleset id is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub op: Op,
    pub pattern: String,
    pub value: PolicyValue,
}

/// The map contents of one agent at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledAgent {
    pub name: String,
    /// Normalized, relative to the cgroup2 mount.
    pub cgroups: Vec<String>,
    /// Value for the agent config map.
    pub config: AgentConfig,
    /// Sorted by op, then pattern; one entry per (op, pattern).
    pub entries: Vec<Entry>,
}

impl CompiledAgent {
    /// The policy map entries of this agent under ruleset id `ruleset`.
    ///
    /// The ruleset id is the first field of every key: the daemon writes a new generation under
    /// a fresh id and then points the agent's cgroups at it in one step, so a lookup never sees
    /// half of a policy.
    ///
    /// # Panics
    /// Never: every pattern passed `RuleShape::parse` at load time, which is the only check
    /// `PolicyKey::for_rule` makes.
    #[must_use]
    pub fn keys(&self, ruleset: u32) -> Vec<(PolicyKey, PolicyValue)> {
        self.entries
            .iter()
            .map(|e| {
                let (key, _) = PolicyKey::for_rule(ruleset, e.op, e.pattern.as_bytes())
                    .expect("patterns are validated when the policy is loaded");
                (key, e.value)
            })
            .collect()
    }
}

/// Everything the daemon writes for one policy generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// In the order of the set (file name order).
    pub agents: Vec<CompiledAgent>,
    /// Every rule of the set, active at `at` or not: ids stay meaningful in audit records
    /// written before a window closed.
    pub rules: BTreeMap<u32, RuleInfo>,
    /// The instant the `when` conditions were evaluated at.
    pub at: Timestamp,
    /// When to compile again: the next instant a `when` condition changes, if any.
    pub valid_until: Option<Timestamp>,
}

impl Compiled {
    #[must_use]
    pub fn agent(&self, name: &str) -> Option<&CompiledAgent> {
        self.agents.iter().find(|a| a.name == name)
    }
}

/// Compiles `set` with the `when` conditions evaluated at `at`.
///
/// Each active rule becomes one entry per op and path; entries with the same op and pattern
/// are merged with [`merge`] (the more severe decision, then the lower rule id), exactly what
/// the kernel would pick between them.
#[must_use]
pub fn compile(set: &PolicySet, at: Timestamp) -> Compiled {
    let mut rules = BTreeMap::new();
    let mut agents = Vec::new();
    for agent in set.agents() {
        for rule in &agent.rules {
            rules.insert(
                rule.id,
                RuleInfo {
                    agent: agent.name.clone(),
                    rule: rule.name.clone(),
                    file: agent.file.clone(),
                    line: rule.at.line,
                    hint: rule.hint.clone(),
                },
            );
        }
        agents.push(compile_agent(agent, |rule| {
            rule.when.as_ref().is_none_or(|w| w.is_active(at))
        }));
    }
    Compiled {
        agents,
        rules,
        at,
        valid_until: set.next_transition(at),
    }
}

/// The map contents of `agent` with the rules for which `active` is true: what [`compile`]
/// makes of each agent (with the rules whose `when` holds at its instant). `jitctl policy`
/// uses it to ask what-if questions of the very code that fills the kernel's maps.
#[must_use]
pub fn compile_agent(agent: &AgentPolicy, active: impl Fn(&Rule) -> bool) -> CompiledAgent {
    compile_with_guards(agent, active).0
}

/// The `rename` entries [`compile_agent`] adds for the directories above the paths of the
/// agent's group rules (see [`Rule::guards_ancestors`]), as `(rule id, exact pattern)`: what
/// `jitctl policy explain` lists besides the patterns written in the rules.
#[must_use]
pub fn ancestor_guards(agent: &AgentPolicy, active: impl Fn(&Rule) -> bool) -> Vec<(u32, String)> {
    compile_with_guards(agent, active)
        .1
        .into_iter()
        .map(|(pattern, value)| (value.rule_id, pattern))
        .collect()
}

fn compile_with_guards(
    agent: &AgentPolicy,
    active: impl Fn(&Rule) -> bool,
) -> (CompiledAgent, Vec<(String, PolicyValue)>) {
    let mut entries: BTreeMap<(u8, &str), (Op, PolicyValue)> = BTreeMap::new();
    let mut wildcards = 0;
    let active = &active;
    let conditional: HashSet<u32> = agent
        .rules
        .iter()
        .filter(|r| r.is_conditional())
        .map(|r| r.id)
        .collect();
    // Of two rules with the same key, a rule with conditions comes first: the kernel holds and
    // the daemon tries the conditions, then decides as the other rule would (policies/README.md,
    // "Conditions"). Between two such rules, the first.
    let pick = |a: PolicyValue, b: PolicyValue| match (
        conditional.contains(&a.rule_id),
        conditional.contains(&b.rule_id),
    ) {
        (true, false) => a,
        (false, true) => b,
        (true, true) => {
            if b.rule_id < a.rule_id {
                b
            } else {
                a
            }
        }
        (false, false) => merge(a, b),
    };
    for rule in agent.rules.iter().filter(|r| active(r)) {
        // A rule with conditions is a hold in the kernel: the daemon decides.
        let decision = if rule.is_conditional() {
            Decision::Hold
        } else {
            rule.decision
        };
        for path in &rule.paths {
            wildcards |= path.shape.wildcard_mask();
            let value = path.shape.value(decision, rule.id);
            for &op in &rule.ops {
                entries
                    .entry((op as u8, path.pattern.as_str()))
                    .and_modify(|(_, v)| *v = pick(*v, value))
                    .or_insert((op, value));
            }
        }
    }
    let config = AgentConfig::new(agent.default, agent.mode, wildcards);
    let ancestors = ancestor_entries(agent, &active, &entries, config);
    for (pattern, value) in &ancestors {
        entries
            .entry((Op::Rename as u8, pattern.as_str()))
            .and_modify(|(_, v)| *v = merge(*v, *value))
            .or_insert((Op::Rename, *value));
    }
    let compiled = CompiledAgent {
        name: agent.name.clone(),
        cgroups: agent.cgroups.clone(),
        config,
        entries: entries
            .into_iter()
            .map(|((_, pattern), (op, value))| Entry {
                op,
                pattern: pattern.to_owned(),
                value,
            })
            .collect(),
    };
    (compiled, ancestors)
}

/// The `rename` entries that guard the directories above the paths of rules written with an op
/// group (`op = "modify"`, [`Rule::guards_ancestors`]): renaming `/srv` moves `/srv/app/config`
/// away without touching it, and a refilled `/srv` moved back puts another file in its place.
///
/// Each directory gets an exact entry with the rule's decision and id, but only where it is
/// more severe than what the agent's other rules (or its default) decide for renaming that
/// directory: an exact entry outranks every directory rule above it, so adding a `hold` where
/// a broader `deny` decides would weaken the policy.
fn ancestor_entries(
    agent: &AgentPolicy,
    active: &impl Fn(&Rule) -> bool,
    entries: &BTreeMap<(u8, &str), (Op, PolicyValue)>,
    config: AgentConfig,
) -> Vec<(String, PolicyValue)> {
    let guarding: Vec<&Rule> = agent
        .rules
        .iter()
        .filter(|r| r.guards_ancestors() && active(r))
        .collect();
    if guarding.is_empty() {
        return Vec::new();
    }
    // The rename entries as the kernel's trie holds them: significant key bytes → value.
    let trie: HashMap<Vec<u8>, PolicyValue> = entries
        .iter()
        .filter(|((op, _), _)| *op == Op::Rename as u8)
        .filter_map(|((_, pattern), (op, value))| {
            let (key, _) = PolicyKey::for_rule(RULESET, *op, pattern.as_bytes()).ok()?;
            Some((key.significant().to_vec(), *value))
        })
        .collect();
    let lookup = |key: &PolicyKey| {
        let n = key.significant_len();
        (0..=n)
            .rev()
            .find_map(|len| trie.get(key.data.get(..len)?).copied())
    };
    let config = config.with_ruleset(RULESET);
    let mut out: Vec<(String, PolicyValue)> = Vec::new();
    for rule in guarding {
        for path in &rule.paths {
            for dir in ancestors(&path.pattern) {
                let key = PolicyKey::for_lookup(RULESET, Op::Rename, dir.as_bytes());
                let mut scratch = PolicyKey::EMPTY;
                let otherwise = evaluate(lookup, &key, &config, &mut scratch).decision;
                if otherwise.severity() >= rule.decision.severity() {
                    continue;
                }
                let Ok(shape) = RuleShape::parse(dir.as_bytes()) else {
                    continue;
                };
                out.push((dir, shape.value(rule.decision, rule.id)));
            }
        }
    }
    out
}

/// Ruleset id of the keys [`ancestor_entries`] and [`pattern_matches`] look up: any id works
/// for one agent's entries.
const RULESET: u32 = 1;

/// Whether rule pattern `pattern` of `op` matches `path`, by the kernel's own algorithm: a trie
/// holding that one entry, looked up as the kernel looks up a path. An invalid pattern matches
/// nothing.
#[must_use]
pub fn pattern_matches(op: Op, pattern: &str, path: &[u8]) -> bool {
    let Ok((stored, shape)) = PolicyKey::for_rule(RULESET, op, pattern.as_bytes()) else {
        return false;
    };
    // Any id but the default's marks a match.
    let value = shape.value(Decision::Allow, 1);
    let config = AgentConfig::new(Decision::Deny, Mode::Enforce, shape.wildcard_mask())
        .with_ruleset(RULESET);
    // An LPM trie with one entry: it matches a key it is a prefix of.
    let lookup = |key: &PolicyKey| {
        (stored.prefixlen <= key.prefixlen
            && key.data.get(..stored.significant_len()) == Some(stored.significant()))
        .then_some(value)
    };
    let key = PolicyKey::for_lookup(RULESET, op, path);
    let mut scratch = PolicyKey::EMPTY;
    evaluate(lookup, &key, &config, &mut scratch).rule_id == 1
}

/// The directories strictly above the object(s) `pattern` names, deepest first, without `/`:
/// `/srv/app/config` → `/srv/app`, `/srv`; `/srv/app/` → `/srv/app`, `/srv`; a `*` stays.
fn ancestors(pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = pattern.trim_end_matches('/');
    if !pattern.ends_with('/') {
        // An exact pattern names the object itself; its ancestors start at its parent.
        rest = rest.rsplit_once('/').map_or("", |(parent, _)| parent);
    }
    while !rest.is_empty() {
        out.push(rest.to_owned());
        rest = rest.rsplit_once('/').map_or("", |(parent, _)| parent);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ancestors;

    #[test]
    fn ancestors_of_patterns() {
        assert_eq!(ancestors("/srv/app/config"), ["/srv/app", "/srv"]);
        assert_eq!(ancestors("/srv/app/"), ["/srv/app", "/srv"]);
        assert_eq!(
            ancestors("/home/*/.ssh/"),
            ["/home/*/.ssh", "/home/*", "/home"]
        );
        assert_eq!(ancestors("/etc"), Vec::<String>::new());
        assert_eq!(ancestors("/"), Vec::<String>::new());
    }
}
