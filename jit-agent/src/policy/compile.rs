//! Validated policy to map entries: pure and deterministic, so the same set at the same instant
//! always gives the same entries and the daemon can diff or rebuild generations freely.
use std::{collections::BTreeMap, path::PathBuf};

use jiff::Timestamp;
use jit_common::policy::{AgentConfig, Op, PolicyKey, PolicyValue, merge};

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
    let mut entries: BTreeMap<(u8, &str), (Op, PolicyValue)> = BTreeMap::new();
    let mut wildcards = 0;
    for rule in agent.rules.iter().filter(|r| active(r)) {
        for path in &rule.paths {
            wildcards |= path.shape.wildcard_mask();
            let value = path.shape.value(rule.decision, rule.id);
            for &op in &rule.ops {
                entries
                    .entry((op as u8, path.pattern.as_str()))
                    .and_modify(|(_, v)| *v = merge(*v, value))
                    .or_insert((op, value));
            }
        }
    }
    CompiledAgent {
        name: agent.name.clone(),
        cgroups: agent.cgroups.clone(),
        config: AgentConfig::new(agent.default, agent.mode, wildcards),
        entries: entries
            .into_iter()
            .map(|((_, pattern), (op, value))| Entry {
                op,
                pattern: pattern.to_owned(),
                value,
            })
            .collect(),
    }
}
