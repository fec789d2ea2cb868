//! Validated policy to map entries: pure and deterministic, so the same set at the same instant
//! always gives the same entries and the daemon can diff or rebuild generations freely.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
};

use jiff::Timestamp;
use jit_common::{
    policy::{
        AgentConfig, Decision, IDENTITY_BY_GROUP, IDENTITY_BY_USER, IDENTITY_BY_WRITER,
        IDENTITY_GID, IDENTITY_UID, IDENTITY_WRITER, IdentityKey, Mode, Op, PolicyKey, PolicyValue,
        RuleShape, evaluate, merge,
    },
    provenance::{WRITER_CLASSES, WRITER_NONE},
};

use super::{Account, AgentPolicy, PolicySet, Rule};

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
    /// Sorted by op, then pattern; one entry per (op, pattern). With `user`/`group`
    /// conditions, the entries of the class "anyone else" (rule set offset 0).
    pub entries: Vec<Entry>,
    /// With `user`/`group` conditions: the uids and gids the agent's rules name and the entries
    /// of every other identity class (see [`jit_common::policy::IdentityKey`]).
    pub classes: Option<IdentityClasses>,
}

/// The identity classes of an agent whose rules name users, groups or writers
/// (policies/README.md, "Users and groups", "Provenance"): rule set offset
/// `w * (uids.len() + 1) * (gids.len() + 1) + u * (gids.len() + 1) + g` holds the rules that
/// apply to writer class `w`, uid class `u` and gid class `g`, where uid (gid) class 0 is
/// "anyone else" and class `i + 1` is `uids[i]` (`gids[i]`), and writer classes are
/// `jit_common::provenance::WRITER_*` (only class 0 without `written_by` rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityClasses {
    /// Sorted, each once.
    pub uids: Vec<u32>,
    /// Sorted, each once.
    pub gids: Vec<u32>,
    /// Some rule has `written_by`: the writer classes have rule sets of their own.
    pub writers: bool,
    /// Entries of rule set offset `i + 1` (offset 0 is [`CompiledAgent::entries`]).
    pub sets: Vec<Vec<Entry>>,
}

impl IdentityClasses {
    /// The identity map entries of an agent whose first rule set is `ruleset`.
    #[must_use]
    pub fn keys(&self, ruleset: u32) -> Vec<(IdentityKey, u32)> {
        let stride = u32::try_from(self.gids.len() + 1).unwrap_or(u32::MAX);
        let users = (1..).zip(&self.uids).map(|(class, &id)| {
            let key = IdentityKey {
                ruleset,
                kind: IDENTITY_UID,
                id,
            };
            (key, class * stride)
        });
        let groups = (1..).zip(&self.gids).map(|(class, &id)| {
            let key = IdentityKey {
                ruleset,
                kind: IDENTITY_GID,
                id,
            };
            (key, class)
        });
        let identities = stride * u32::try_from(self.uids.len() + 1).unwrap_or(u32::MAX);
        let writers = (1..WRITER_CLASSES).filter(|_| self.writers).map(|class| {
            let key = IdentityKey {
                ruleset,
                kind: IDENTITY_WRITER,
                id: class,
            };
            (key, class * identities)
        });
        users.chain(groups).chain(writers).collect()
    }
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
        let sets = self.classes.iter().flat_map(|c| &c.sets);
        (0u32..)
            .zip(std::iter::once(&self.entries).chain(sets))
            .flat_map(|(offset, entries)| {
                entries.iter().map(move |e| {
                    let (key, _) = PolicyKey::for_rule(
                        ruleset.wrapping_add(offset),
                        e.op,
                        e.pattern.as_bytes(),
                    )
                    .expect("patterns are validated when the policy is loaded");
                    (key, e.value)
                })
            })
            .collect()
    }

    /// How many rule sets the agent uses: 1, or one per identity class.
    #[must_use]
    pub fn rulesets(&self) -> u32 {
        1 + self
            .classes
            .as_ref()
            .map_or(0, |c| u32::try_from(c.sets.len()).unwrap_or(u32::MAX))
    }

    /// Map entries over every rule set (what `jitctl status` counts as the agent's rules).
    #[must_use]
    pub fn entry_count(&self) -> usize {
        self.entries.len()
            + self
                .classes
                .as_ref()
                .map_or(0, |c| c.sets.iter().map(Vec::len).sum())
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
        agents.push(compile_classes(agent, |rule| {
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

/// [`compile_agent`] with one rule set per identity class when the agent's rules name users or
/// groups (what the daemon installs): the class "anyone else" in [`CompiledAgent::entries`],
/// the others in [`CompiledAgent::classes`], and the agent config flagged to select among them.
#[must_use]
pub fn compile_classes(agent: &AgentPolicy, active: impl Fn(&Rule) -> bool) -> CompiledAgent {
    let ids = |pick: fn(&Rule) -> &Vec<Account>| {
        let mut ids: Vec<u32> = agent
            .rules
            .iter()
            .flat_map(|r| pick(r).iter().map(|a| a.id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let uids = ids(|r| &r.who.users);
    let gids = ids(|r| &r.who.groups);
    let writers = agent.rules.iter().any(|r| r.who.writers != 0);
    let class = |w: u32, u: usize, g: usize| {
        let (uid, gid) = (u.checked_sub(1), g.checked_sub(1));
        let uid = uid.map(|i| uids[i]);
        let gid = gid.map(|i| gids[i]);
        compile_agent(agent, |r| {
            active(r) && r.who.admits(uid, gid) && r.who.admits_writer(w)
        })
    };
    let mut compiled = class(WRITER_NONE, 0, 0);
    if uids.is_empty() && gids.is_empty() && !writers {
        return compiled;
    }
    let mut sets = Vec::new();
    let writer_classes = if writers { WRITER_CLASSES } else { 1 };
    for w in 0..writer_classes {
        for u in 0..=uids.len() {
            for g in 0..=gids.len() {
                if (w, u, g) != (0, 0, 0) {
                    sets.push(class(w, u, g).entries);
                }
            }
        }
    }
    // Every class's own rules decide its wildcard lookups: the config takes them all.
    let all = compile_agent(agent, &active);
    compiled.config.wildcard_components |= all.config.wildcard_components;
    compiled.config.identity = (if uids.is_empty() { 0 } else { IDENTITY_BY_USER })
        | (if gids.is_empty() {
            0
        } else {
            IDENTITY_BY_GROUP
        })
        | (if writers { IDENTITY_BY_WRITER } else { 0 });
    // Parsing bounds the classes by MAX_IDENTITY_RULESETS (64).
    compiled.config.extra_rulesets = u8::try_from(sets.len()).unwrap_or(u8::MAX);
    compiled.classes = Some(IdentityClasses {
        uids,
        gids,
        writers,
        sets,
    });
    compiled
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
        classes: None,
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
