//! The kernel's decision, computed on the host from the code that fills and reads the kernel's
//! maps: [`compile_agent`] (the daemon's compiler), [`CompiledAgent::keys`] (the keys it
//! writes), [`evaluate`] (the matcher the eBPF programs run), [`first_of_pair_decides`] (how a
//! rename or link combines its two ends) and the self-protection keys of
//! [`protected_patterns`]. The only thing emulated is the map itself: [`Trie`] answers lookups
//! as `BPF_MAP_TYPE_LPM_TRIE` does.
use std::{cell::RefCell, collections::HashMap, path::Path};

use jiff::Timestamp;
use jit_common::{
    policy::{
        AgentConfig, Decision, Op, PolicyKey, PolicyValue, Verdict, evaluate, first_of_pair_decides,
    },
    protect::{
        PROTECTED_OP, PROTECTED_RULESET, SELF_PROTECTION_RULE_ID, SELF_PROTECTION_VERDICT,
        protected_key, protected_patterns,
    },
};

pub use crate::policy::pattern_matches;
use crate::policy::{
    AgentPolicy, CompiledAgent, PolicySet, Rule, Subject, compile_agent,
    conditions::{Facts, Truth},
};

/// Rule set id of the keys built here: each agent has a trie of its own, so any id works.
const RULESET: u32 = 1;

/// A `BPF_MAP_TYPE_LPM_TRIE` as far as lookups go: the stored key with the longest prefix that
/// begins the looked-up key. jit's prefix lengths are whole bytes, so comparing the significant
/// bytes is the kernel's bitwise comparison.
#[derive(Clone, Debug, Default)]
pub struct Trie {
    entries: Vec<(PolicyKey, PolicyValue)>,
}

impl Trie {
    #[must_use]
    pub fn new(entries: Vec<(PolicyKey, PolicyValue)>) -> Self {
        Self { entries }
    }

    /// Every stored entry whose key is a prefix of `key` (what the kernel chooses among).
    pub fn prefixes_of<'a>(
        &'a self,
        key: &'a PolicyKey,
    ) -> impl Iterator<Item = &'a (PolicyKey, PolicyValue)> + 'a {
        self.entries.iter().filter(|(k, _)| {
            let n = k.significant_len();
            k.prefixlen <= key.prefixlen && key.data.get(..n) == Some(k.significant())
        })
    }

    /// The kernel's answer: the longest matching prefix.
    #[must_use]
    pub fn lookup(&self, key: &PolicyKey) -> Option<PolicyValue> {
        self.prefixes_of(key)
            .max_by_key(|(k, _)| k.prefixlen)
            .map(|(_, v)| *v)
    }
}

/// One agent's maps at one instant: its config entry and its policy trie.
#[derive(Clone, Debug)]
pub struct AgentMaps {
    pub config: AgentConfig,
    trie: Trie,
}

impl AgentMaps {
    #[must_use]
    pub fn new(compiled: &CompiledAgent) -> Self {
        Self {
            config: compiled.config.with_ruleset(RULESET),
            trie: Trie::new(compiled.keys(RULESET)),
        }
    }

    /// What the eBPF programs decide for `op` on the resolved `path`.
    #[must_use]
    pub fn decide(&self, op: Op, path: &[u8]) -> Verdict {
        let key = PolicyKey::for_lookup(RULESET, op, path);
        let mut scratch = PolicyKey::EMPTY;
        evaluate(|k| self.trie.lookup(k), &key, &self.config, &mut scratch)
    }
}

/// The paths no agent may change whatever its policy (the daemon's own files, see
/// `Config::protected_paths`), as the kernel's `PROTECTED` trie holds them.
#[derive(Clone, Debug, Default)]
pub struct Protected {
    trie: Trie,
}

impl Protected {
    /// The trie for `paths`; paths that cannot be protected (`/`, relative) are left out, as
    /// the daemon refuses to start with them.
    #[must_use]
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Self {
        let mut entries = Vec::new();
        for path in paths {
            let _ = protected_patterns(path.as_os_str().as_encoded_bytes(), |pattern| {
                entries.push((protected_key(pattern)?, SELF_PROTECTION_VALUE));
                Ok(())
            });
        }
        Self {
            trie: Trie::new(entries),
        }
    }

    /// Whether an op other than `exec` on `path` is refused by self-protection.
    #[must_use]
    pub fn covers(&self, path: &[u8]) -> bool {
        let key = PolicyKey::for_lookup(PROTECTED_RULESET, PROTECTED_OP, path);
        self.trie.lookup(&key).is_some()
    }
}

const SELF_PROTECTION_VALUE: PolicyValue = PolicyValue {
    decision: Decision::Deny as u8,
    pad: [0; 3],
    rule_id: SELF_PROTECTION_RULE_ID,
    literal_len: 0,
    pattern_len: 0,
};

/// Which end of a rename or link decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    Source,
    Target,
}

/// The kernel's outcome for one action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// For a rename or link given both ends: the one whose verdict applies.
    pub end: Option<End>,
}

impl Outcome {
    #[must_use]
    pub const fn by_self_protection(&self) -> bool {
        self.verdict.rule_id == SELF_PROTECTION_RULE_ID
    }
}

/// One action to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    pub agent: String,
    pub op: Op,
    /// The resolved path (the source of a rename or link).
    pub path: Vec<u8>,
    /// The target of a rename or link, when known.
    pub target: Option<Vec<u8>>,
    /// When the action happens: selects the rules whose `when` holds.
    pub at: Timestamp,
    /// What the daemon would read about the held action, for the daemon-side conditions of
    /// rules (policies/README.md, "Conditions"). `None`: not given; an action that a rule with
    /// conditions holds is then reported as the kernel decides it (a hold the daemon decides).
    pub facts: Option<Facts>,
    /// The user and group the process acts as on files, for rules with `user`/`group` conditions
    /// (policies/README.md, "Users and groups"). Nothing known: only rules without them apply.
    pub subject: Subject,
}

/// Decides actions under a policy set, as the daemon would have compiled it at each instant.
pub struct Decider<'a> {
    set: &'a PolicySet,
    protected: Protected,
    /// Whether paths on a cgroup filesystem or bpffs of this host are refused, as the kernel
    /// refuses changes there (by the filesystem the object is on, whatever its path).
    this_host: bool,
    /// The maps of the instant last asked about, valid over `[from, until)`.
    cache: RefCell<Option<Generation>>,
}

struct Generation {
    from: Timestamp,
    until: Option<Timestamp>,
    /// Each agent's maps for each subject asked about (the rule set of its identity class), and
    /// for an agent with conditional rules its maps without them; filled as asked.
    agents: HashMap<(String, Subject), (AgentMaps, Option<AgentMaps>)>,
}

/// The process `jitctl policy` is told about, for rules with `user`/`group` conditions: each of
/// `user` and `group` is a name or a numeric id; a name is also looked up in the host's
/// databases (NSS) for its id, and an id for its name, so that a policy loaded `--offline`
/// (names only) and one loaded with ids both match.
#[must_use]
pub fn subject_of(user: Option<&str>, group: Option<&str>) -> Subject {
    use nix::unistd::{Gid, Group, Uid, User};
    let mut subject = Subject::default();
    if let Some(user) = user {
        if let Ok(uid) = user.parse::<u32>() {
            subject.uid = Some(uid);
            subject.user = User::from_uid(Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name);
        } else {
            subject.user = Some(user.to_owned());
            subject.uid = User::from_name(user).ok().flatten().map(|u| u.uid.as_raw());
        }
    }
    if let Some(group) = group {
        if let Ok(gid) = group.parse::<u32>() {
            subject.gid = Some(gid);
            subject.group = Group::from_gid(Gid::from_raw(gid))
                .ok()
                .flatten()
                .map(|g| g.name);
        } else {
            subject.group = Some(group.to_owned());
            subject.gid = Group::from_name(group)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw());
        }
    }
    subject
}

/// Why an action cannot be decided.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("no agent named `{0}` in the policy")]
    UnknownAgent(String),
}

impl<'a> Decider<'a> {
    #[must_use]
    pub fn new(set: &'a PolicySet, protected: Protected) -> Self {
        Self {
            set,
            protected,
            this_host: false,
            cache: RefCell::new(None),
        }
    }

    /// Also refuses, as self-protection does, changes to paths that lie on a cgroup filesystem
    /// or bpffs of this host (`jitctl policy explain`; case files and replays decide by the
    /// policy and the protected paths alone, the same on every machine).
    #[must_use]
    pub const fn on_this_host(mut self) -> Self {
        self.this_host = true;
        self
    }

    #[must_use]
    pub const fn set(&self) -> &'a PolicySet {
        self.set
    }

    #[must_use]
    pub const fn protected(&self) -> &Protected {
        &self.protected
    }

    /// The agent's maps as the daemon compiles them for instant `at`, in the rule set of
    /// `subject`'s identity class.
    fn with_maps<T>(
        &self,
        agent: &str,
        at: Timestamp,
        subject: &Subject,
        f: impl FnOnce(&AgentMaps, Option<&AgentMaps>) -> T,
    ) -> Result<T, DecideError> {
        let mut cache = self.cache.borrow_mut();
        let fresh = cache
            .as_ref()
            .is_some_and(|g| g.from <= at && g.until.is_none_or(|u| at < u));
        if !fresh {
            *cache = Some(Generation {
                from: at,
                until: self.set.next_transition(at),
                agents: HashMap::new(),
            });
        }
        let generation = cache.as_mut().expect("filled above");
        let policy = self
            .set
            .agent(agent)
            .ok_or_else(|| DecideError::UnknownAgent(agent.to_owned()))?;
        let (maps, plain) = generation
            .agents
            .entry((agent.to_owned(), subject.clone()))
            .or_insert_with(|| {
                let applies = |r: &Rule| is_active(r, at) && r.who.admits_subject(subject);
                let plain = policy.rules.iter().any(Rule::is_conditional).then(|| {
                    AgentMaps::new(&compile_agent(policy, |r| {
                        applies(r) && !r.is_conditional()
                    }))
                });
                (AgentMaps::new(&compile_agent(policy, applies)), plain)
            });
        Ok(f(maps, plain.as_ref()))
    }

    /// The verdict for one resolved path of `action`'s op.
    ///
    /// # Errors
    /// When the agent is not in the policy.
    pub fn decide_path(
        &self,
        agent: &str,
        op: Op,
        path: &[u8],
        at: Timestamp,
    ) -> Result<Verdict, DecideError> {
        self.decide_path_with(agent, op, path, at, &Subject::default(), None)
            .map(|(v, _)| v)
    }

    /// [`Decider::decide_path`], with the daemon-side conditions decided on `facts` when given;
    /// also why the conditions decided as they did.
    ///
    /// # Errors
    /// When the agent is not in the policy.
    pub fn decide_path_with(
        &self,
        agent: &str,
        op: Op,
        path: &[u8],
        at: Timestamp,
        subject: &Subject,
        facts: Option<&Facts>,
    ) -> Result<(Verdict, Option<String>), DecideError> {
        if op != Op::Exec
            && (self.protected.covers(path) || (self.this_host && on_protected_fs(path)))
        {
            // Checked before any rule, whatever the mode (jit-ebpf's engine.rs, `evaluate_single`, and
            // the two-path programs of `protect_pair`).
            self.with_maps(agent, at, subject, |_, _| ())?;
            return Ok((SELF_PROTECTION_VERDICT, None));
        }
        let policy = self.set.agent(agent);
        let applies = |r: &Rule| is_active(r, at) && r.who.admits_subject(subject);
        self.with_maps(agent, at, subject, |maps, plain| {
            match (policy, plain, facts) {
                (Some(policy), Some(plain), Some(facts)) => {
                    decide_by_conditions(policy, maps, plain, op, path, &applies, || facts.clone())
                }
                _ => (maps.decide(op, path), None),
            }
        })
    }

    /// What the kernel decides for `action`.
    ///
    /// # Errors
    /// When the agent is not in the policy.
    pub fn decide(&self, action: &Action) -> Result<Outcome, DecideError> {
        let facts = action.facts.as_ref();
        let who = &action.subject;
        let (first, _) = self.decide_path_with(
            &action.agent,
            action.op,
            &action.path,
            action.at,
            who,
            facts,
        )?;
        let Some(target) = &action.target else {
            return Ok(Outcome {
                verdict: first,
                end: None,
            });
        };
        let (second, _) =
            self.decide_path_with(&action.agent, action.op, target, action.at, who, facts)?;
        // Self-protection of either end refuses the pair before the engine decides.
        for (verdict, end) in [(first, End::Source), (second, End::Target)] {
            if verdict.rule_id == SELF_PROTECTION_RULE_ID {
                return Ok(Outcome {
                    verdict,
                    end: Some(end),
                });
            }
        }
        Ok(if first_of_pair_decides(&first, &second) {
            Outcome {
                verdict: first,
                end: Some(End::Source),
            }
        } else {
            Outcome {
                verdict: second,
                end: Some(End::Target),
            }
        })
    }
}

/// Whether the nearest existing directory of `path` lies on a cgroup filesystem or bpffs on
/// this host.
#[must_use]
pub fn on_protected_fs(path: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    Path::new(std::ffi::OsStr::from_bytes(path))
        .ancestors()
        .find_map(|p| nix::sys::statfs::statfs(p).ok())
        .is_some_and(|s| {
            jit_common::protect::is_protected_fs(
                u64::try_from(s.filesystem_type().0).unwrap_or_default(),
            )
        })
}

/// Specificity of `rule` for `path`: that of its most specific pattern matching it.
fn rank(rule: &Rule, op: Op, path: &[u8]) -> Option<(u16, u16)> {
    rule.paths
        .iter()
        .filter(|p| pattern_matches(op, &p.pattern, path))
        .map(|p| {
            let v = p.shape.value(Decision::Allow, rule.id);
            (v.literal_len, v.pattern_len)
        })
        .max()
}

/// The facts of the daemon-side conditions (all but the target) from what was read of a
/// process: the whole command line and environment of a held exec when the daemon has them,
/// else what an audit record keeps (arguments bounded for display — a cut list is unknown —
/// and secret-looking values hidden, which then match only `*`).
#[must_use]
pub fn facts_of(p: &crate::audit::ProcessContext) -> Facts {
    let (args, env) = match &p.exec_strings {
        Some((argv, env)) => (
            Some(argv.iter().skip(1).cloned().collect()),
            Some(env.clone()),
        ),
        None => (
            p.exec_argv
                .as_ref()
                .filter(|_| !p.argv_truncated)
                .map(|a| a.iter().skip(1).cloned().collect()),
            p.exec_env.clone(),
        ),
    };
    // The chain is complete when it ends at pid 1; an ancestor beyond what was read is unknown.
    let mut chain: Vec<Option<String>> = p.parents.iter().map(|a| a.exe.clone()).collect();
    if p.parents.last().is_none_or(|a| a.pid != 1) {
        chain.push(None);
    }
    Facts {
        args,
        cwd: p.cwd.clone(),
        caller: p.exe.clone(),
        ancestors: Some(chain),
        env,
        target: None,
        sha256: None,
    }
}

/// The decision for `op` on `path` by the daemon-side conditions of `agent`'s rules
/// (policies/README.md, "Conditions"), given the agent's maps as the kernel has them (`full`)
/// and without the rules that have conditions (`plain`): the kernel's verdict when its rule has
/// no conditions; else the first conditional rule, most specific first and then in file order,
/// down to the specificity of the rule that decides without them, whose conditions hold (a fact
/// that cannot be read counts as met for `deny` and `hold` rules, as not met for `allow` and
/// `audit`); else the verdict without the conditional rules. Only rules for which `applies`
/// holds are tried: those in force, for the process's identity class. With the verdict, why the
/// conditions decided as they did (`None` when no condition was involved). `facts` is called
/// only when conditions are tried.
#[must_use]
pub fn decide_by_conditions(
    agent: &AgentPolicy,
    full: &AgentMaps,
    plain: &AgentMaps,
    op: Op,
    path: &[u8],
    applies: &dyn Fn(&Rule) -> bool,
    facts: impl FnOnce() -> Facts,
) -> (Verdict, Option<String>) {
    let kernel = full.decide(op, path);
    let by_rule = |id: u32| agent.rules.iter().find(|r| r.id == id);
    let conditional =
        by_rule(kernel.rule_id).is_some_and(|r| r.is_conditional() && rank(r, op, path).is_some());
    if !conditional {
        return (kernel, None);
    }
    let fallback = plain.decide(op, path);
    let floor = by_rule(fallback.rule_id)
        .and_then(|r| rank(r, op, path))
        .unwrap_or((0, 0));
    let mut candidates: Vec<(&Rule, (u16, u16))> = agent
        .rules
        .iter()
        .filter(|r| r.is_conditional() && r.ops.contains(&op) && applies(r))
        .filter_map(|r| rank(r, op, path).map(|k| (r, k)))
        .filter(|(_, k)| *k >= floor)
        .collect();
    candidates.sort_by(|(a, ka), (b, kb)| kb.cmp(ka).then(a.id.cmp(&b.id)));
    let facts = facts();
    let mut tried = Vec::new();
    for (rule, _) in candidates {
        let truth = rule.conditions.evaluate(&facts);
        let strict = matches!(rule.decision, Decision::Deny | Decision::Hold);
        if truth == Truth::Yes || (truth == Truth::Unknown && strict) {
            let why = if truth == Truth::Yes {
                format!("the conditions of rule `{}` hold", rule.name)
            } else {
                format!(
                    "a fact the conditions of rule `{}` need could not be read (taken as met: \
                     the rule is a {})",
                    rule.name,
                    rule.decision.name()
                )
            };
            let enforced = if kernel.enforced == Decision::Hold {
                rule.decision
            } else {
                kernel.enforced
            };
            let verdict = Verdict {
                decision: rule.decision,
                enforced,
                rule_id: rule.id,
            };
            return (verdict, Some(why));
        }
        tried.push(format!("`{}`", rule.name));
    }
    let why = format!(
        "no conditions held (tried {}); decided as without them",
        tried.join(", ")
    );
    (fallback, Some(why))
}

/// What the daemon compiles for `agent` at `at`: the rules whose `when` holds then.
#[must_use]
pub fn compile_at(agent: &AgentPolicy, at: Timestamp) -> CompiledAgent {
    compile_agent(agent, |rule| is_active(rule, at))
}

/// Whether `rule` is in force at `at`.
#[must_use]
pub fn is_active(rule: &Rule, at: Timestamp) -> bool {
    rule.when.as_ref().is_none_or(|w| w.is_active(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_patterns_match_as_the_kernel_does() {
        assert!(pattern_matches(Op::Write, "/srv/work/", b"/srv/work/a"));
        assert!(!pattern_matches(Op::Write, "/srv/work/", b"/srv/work"));
        assert!(!pattern_matches(Op::Write, "/srv/work/", b"/srv/workshop"));
        assert!(pattern_matches(
            Op::Write,
            "/home/*/.ssh/",
            b"/home/al/.ssh/k"
        ));
        assert!(!pattern_matches(
            Op::Write,
            "/home/*/.ssh/",
            b"/home/.ssh/k"
        ));
        assert!(pattern_matches(Op::Exec, "/usr/bin/git", b"/usr/bin/git"));
        assert!(!pattern_matches(Op::Exec, "/usr/bin/git", b"/usr/bin/gitk"));
    }

    #[test]
    fn protected_paths_cover_themselves_below_and_their_ancestors() {
        let p = Protected::new([Path::new("/etc/jit/policies")]);
        assert!(p.covers(b"/etc/jit/policies"));
        assert!(p.covers(b"/etc/jit/policies/a.toml"));
        assert!(p.covers(b"/etc/jit"));
        assert!(p.covers(b"/etc"));
        assert!(!p.covers(b"/etc/hosts"));
        assert!(!p.covers(b"/etc/jit/other"));
    }
}
