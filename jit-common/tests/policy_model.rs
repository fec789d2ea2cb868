//! The kernel-side algorithm ([`evaluate`] over an LPM trie) checked against a naive reference.
//!
//! `LpmTrie` emulates `BPF_MAP_TYPE_LPM_TRIE` lookups; `Reference` decides directly from the rule
//! texts with glob semantics, sharing no code with `jit_common::policy` beyond the public enums.
//! Scenario tests pin down the semantics by example; the property test compares the two on
//! random rule sets and paths.
use std::{cell::RefCell, cmp::Reverse, collections::HashMap};

use jit_common::policy::{
    AgentConfig, Decision, KEY_DATA_LEN, Mode, Op, PolicyKey, PolicyValue, Verdict, evaluate, merge,
};
use proptest::{prelude::*, sample::Index};

/// `BPF_MAP_TYPE_LPM_TRIE` with 256-byte data, as far as lookups go: the entry with the longest
/// prefix length among those whose first `prefixlen` bits equal the query's, considering only
/// entries whose prefix length does not exceed the query's.
#[derive(Default)]
struct LpmTrie {
    entries: Vec<(PolicyKey, PolicyValue)>,
}

/// Largest prefix length the kernel accepts for 256-byte keys.
const MAX_PREFIXLEN: u32 = 2048;
const _: () = assert!(MAX_PREFIXLEN as usize == 8 * KEY_DATA_LEN);

/// Whether the first `bits` bits of `a` and `b` agree (most significant bit of a byte first, as
/// the kernel's `extract_bit`).
fn prefix_equal(a: &[u8; KEY_DATA_LEN], b: &[u8; KEY_DATA_LEN], bits: u32) -> bool {
    let bits = bits as usize;
    let (full, rest) = (bits / 8, bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || (a[full] ^ b[full]) & (0xff_u8 << (8 - rest)) == 0
}

impl LpmTrie {
    /// Inserts, merging with a rule already stored under the same key as the compiler does.
    fn insert_merged(&mut self, key: &PolicyKey, value: PolicyValue) {
        assert!(key.prefixlen <= MAX_PREFIXLEN, "the kernel rejects {key:?}");
        let same = self.entries.iter_mut().find(|(k, _)| {
            k.prefixlen == key.prefixlen && prefix_equal(&k.data, &key.data, key.prefixlen)
        });
        match same {
            Some((_, stored)) => *stored = merge(*stored, value),
            None => self.entries.push((*key, value)),
        }
    }

    fn get(&self, key: &PolicyKey) -> Option<PolicyValue> {
        if key.prefixlen > MAX_PREFIXLEN {
            return None;
        }
        self.entries
            .iter()
            .filter(|(k, _)| {
                k.prefixlen <= key.prefixlen && prefix_equal(&k.data, &key.data, k.prefixlen)
            })
            .max_by_key(|(k, _)| k.prefixlen)
            .map(|(_, v)| *v)
    }
}

#[derive(Clone, Debug)]
struct Rule {
    agent: u32,
    op: Op,
    pattern: String,
    /// Raw map value: 4 and above are corrupt and must fail closed.
    decision: u8,
    id: u32,
}

/// Per-agent settings as raw map values (corrupt ones included).
#[derive(Clone, Copy, Debug)]
struct Settings {
    default: u8,
    mode: u8,
    /// Wildcard positions set on top of the ones the rules need (only costs lookups).
    extra_wildcards: u32,
}

/// What the kernel compiles from a rule set.
struct Compiled {
    trie: LpmTrie,
    configs: HashMap<u32, AgentConfig>,
    /// The eBPF side's per-CPU lookup key and wildcard scratch key.
    key: RefCell<PolicyKey>,
    scratch: RefCell<PolicyKey>,
}

fn compile(rules: &[Rule], settings: &HashMap<u32, Settings>) -> Compiled {
    let mut trie = LpmTrie::default();
    let mut masks: HashMap<u32, u32> = HashMap::new();
    for rule in rules {
        let (key, shape) = PolicyKey::for_rule(rule.agent, rule.op, rule.pattern.as_bytes())
            .expect("only valid rules are compiled");
        let value = PolicyValue {
            decision: rule.decision,
            ..shape.value(Decision::Allow, rule.id)
        };
        trie.insert_merged(&key, value);
        *masks.entry(rule.agent).or_default() |= shape.wildcard_mask();
    }
    let configs = settings
        .iter()
        .map(|(&agent, s)| {
            let cfg = AgentConfig {
                default_decision: s.default,
                mode: s.mode,
                identity: 0,
                extra_rulesets: 0,
                wildcard_components: masks.get(&agent).copied().unwrap_or(0) | s.extra_wildcards,
                ruleset: agent,
            };
            (agent, cfg)
        })
        .collect();
    let garbage = PolicyKey {
        prefixlen: 0x5a5a,
        data: [0xa5; KEY_DATA_LEN],
    };
    Compiled {
        trie,
        configs,
        key: RefCell::new(garbage),
        scratch: RefCell::new(garbage),
    }
}

impl Compiled {
    /// Decides as the eBPF side does: the path is written into a reused buffer that still holds
    /// the previous lookup's bytes, then the key is finished in place.
    fn decide(&self, agent: u32, op: Op, path: &str) -> Verdict {
        let (mut key, mut scratch) = (self.key.borrow_mut(), self.scratch.borrow_mut());
        for (slot, b) in key.path_mut().iter_mut().zip(path.as_bytes()) {
            *slot = *b;
        }
        key.finish_lookup(agent, op, path.len());
        assert_eq!(*key, PolicyKey::for_lookup(agent, op, path.as_bytes()));
        evaluate(
            |k| self.trie.get(k),
            &key,
            &self.configs[&agent],
            &mut scratch,
        )
    }
}

/// The naive matcher: every rule checked directly against the path.
struct Reference<'a> {
    rules: &'a [Rule],
    settings: &'a HashMap<u32, Settings>,
}

/// Longest path whose lookup key is terminated; longer paths are seen by their first
/// `KEY_PATH_BYTES` bytes only.
const MAX_TERMINATED: usize = 250;
const KEY_PATH_BYTES: usize = 251;

impl Reference<'_> {
    /// Whether the kernel can compile `pattern` (for patterns built from the test alphabet,
    /// which has no empty, dot or partial-wildcard components).
    fn valid(pattern: &str) -> bool {
        let directory = pattern.ends_with('/');
        let max = if directory { 251 } else { 250 };
        let components: Vec<&str> = pattern.trim_end_matches('/').split('/').skip(1).collect();
        let stars: Vec<usize> = (0..components.len())
            .filter(|&i| components[i] == "*")
            .collect();
        pattern.len() <= max && stars.len() <= 1 && stars.iter().all(|&i| i <= 31)
    }

    fn component_matches(pattern: &str, path: &str) -> bool {
        if pattern == "*" {
            !path.is_empty()
        } else {
            pattern == path
        }
    }

    /// Glob match of one rule, as far as the kernel can see the path.
    fn matches(pattern: &str, path: &str) -> bool {
        if let Some(dir) = pattern.strip_suffix('/') {
            // Everything strictly below `dir`: the path starts with `dir/`, component-wise.
            let visible = &path[..path.len().min(KEY_PATH_BYTES)];
            let want: Vec<&str> = dir.split('/').collect();
            let have: Vec<&str> = visible.split('/').collect();
            have.len() > want.len()
                && want
                    .iter()
                    .zip(&have)
                    .all(|(w, h)| Self::component_matches(w, h))
        } else {
            // Exact: the whole path, which the key holds only up to MAX_TERMINATED bytes.
            let want: Vec<&str> = pattern.split('/').collect();
            let have: Vec<&str> = path.split('/').collect();
            path.len() <= MAX_TERMINATED
                && want.len() == have.len()
                && want
                    .iter()
                    .zip(&have)
                    .all(|(w, h)| Self::component_matches(w, h))
        }
    }

    /// (literal prefix, pattern length), the terminator of exact rules counted.
    fn specificity(pattern: &str) -> (usize, usize) {
        let len = pattern.len() + usize::from(!pattern.ends_with('/'));
        (pattern.find('*').unwrap_or(len), len)
    }

    fn decision(raw: u8) -> Decision {
        match raw {
            0 => Decision::Allow,
            1 => Decision::Audit,
            2 => Decision::Hold,
            _ => Decision::Deny,
        }
    }

    fn severity(raw: u8) -> u8 {
        match Self::decision(raw) {
            Decision::Allow => 0,
            Decision::Audit => 1,
            Decision::Hold => 2,
            Decision::Deny => 3,
        }
    }

    fn decide(&self, agent: u32, op: Op, path: &str) -> Verdict {
        let best = self
            .rules
            .iter()
            .filter(|r| r.agent == agent && r.op == op && Self::matches(&r.pattern, path))
            .max_by_key(|r| {
                let (literal, len) = Self::specificity(&r.pattern);
                (literal, len, Self::severity(r.decision), Reverse(r.id))
            });
        let s = self.settings[&agent];
        let (decision, rule_id) = match best {
            Some(r) => (Self::decision(r.decision), r.id),
            None => (Self::decision(s.default), 0),
        };
        let enforced = if s.mode == 1 && decision != Decision::Allow {
            Decision::Audit
        } else {
            decision
        };
        Verdict {
            decision,
            enforced,
            rule_id,
        }
    }
}

/// A policy for scenario tests: agent 1, op exec, rules numbered from 1.
fn scenario(
    default: Decision,
    mode: Mode,
    rules: &[(&str, Decision)],
) -> (Vec<Rule>, HashMap<u32, Settings>) {
    let rules = rules
        .iter()
        .zip(1..)
        .map(|(&(pattern, decision), id)| Rule {
            agent: 1,
            op: Op::Exec,
            pattern: pattern.to_owned(),
            decision: decision as u8,
            id,
        })
        .collect();
    let settings = HashMap::from([(
        1,
        Settings {
            default: default as u8,
            mode: mode as u8,
            extra_wildcards: 0,
        },
    )]);
    (rules, settings)
}

/// Asserts that kernel algorithm and reference both give `(decision, rule_id)` for each path.
fn check(rules: &[(&str, Decision)], expected: &[(&str, Decision, u32)]) {
    let (rules, settings) = scenario(Decision::Allow, Mode::Enforce, rules);
    let compiled = compile(&rules, &settings);
    let reference = Reference {
        rules: &rules,
        settings: &settings,
    };
    for &(path, decision, rule_id) in expected {
        let want = Verdict {
            decision,
            enforced: decision,
            rule_id,
        };
        assert_eq!(compiled.decide(1, Op::Exec, path), want, "kernel, {path}");
        assert_eq!(
            reference.decide(1, Op::Exec, path),
            want,
            "reference, {path}"
        );
    }
}

/// A path of `len` bytes: `prefix` followed by `x`s.
fn long_path(prefix: &str, len: usize) -> String {
    let mut p = prefix.to_owned();
    p.extend(std::iter::repeat_n('x', len - prefix.len()));
    p
}

#[test]
fn trailing_slash_means_strictly_below() {
    use Decision::{Allow, Deny};
    check(
        &[("/srv/work/", Deny)],
        &[
            ("/srv/work/x", Deny, 1),
            ("/srv/work/x/y/z", Deny, 1),
            ("/srv/work", Allow, 0),
            ("/srv/workshop", Allow, 0),
            ("/srv/workshop/x", Allow, 0),
            ("/srv", Allow, 0),
        ],
    );
}

#[test]
fn exact_rules_match_only_their_path() {
    use Decision::{Allow, Deny};
    check(
        &[("/etc/passwd", Deny)],
        &[
            ("/etc/passwd", Deny, 1),
            ("/etc/passwd-", Allow, 0),
            ("/etc/passwd/x", Allow, 0),
            ("/etc/passw", Allow, 0),
        ],
    );
}

#[test]
fn root_matches_everything() {
    use Decision::{Audit, Deny};
    check(
        &[("/", Audit), ("/bin/", Deny)],
        &[
            ("/", Audit, 1),
            ("/x", Audit, 1),
            ("/bin/sh", Deny, 2),
            ("/bin", Audit, 1),
        ],
    );
}

#[test]
fn most_specific_rule_wins() {
    use Decision::{Allow, Audit, Deny, Hold};
    check(
        &[
            ("/home/", Deny),
            ("/home/*/.ssh/", Hold),
            ("/home/alice/", Allow),
            ("/home/alice/.ssh/", Audit),
            ("/home/alice/notes", Deny),
            ("/home/*/notes", Allow),
        ],
        &[
            ("/home/bob/x", Deny, 1),
            ("/home/bob/.ssh/id", Hold, 2),
            // `/home/alice/` has a longer literal prefix than `/home/*/.ssh/`.
            ("/home/alice/.ssh/id", Audit, 4),
            ("/home/alice/x", Allow, 3),
            // An exact rule beats the directory it lies in.
            ("/home/alice/notes", Deny, 5),
            ("/home/bob/notes", Allow, 6),
            ("/home/bob/.ssh", Deny, 1),
        ],
    );
}

#[test]
fn equally_specific_rules_tie_break_on_severity_then_rule_id() {
    use Decision::{Audit, Hold};
    check(
        &[("/a/", Audit), ("/a/", Hold), ("/a/", Hold)],
        &[("/a/b", Hold, 2)],
    );
}

#[test]
fn wildcards_match_exactly_one_non_empty_component() {
    use Decision::{Allow, Deny};
    check(
        &[("/tmp/*/log", Deny), ("/*/", Allow), ("/*", Deny)],
        &[
            ("/tmp/a/log", Deny, 1),
            ("/tmp/a/b/log", Allow, 2),
            ("/tmp/log", Allow, 2),
            ("/tmp/*/log", Deny, 1),
            ("/x", Deny, 3),
            ("/", Allow, 0),
        ],
    );
}

#[test]
fn long_paths_match_directory_rules_only() {
    use Decision::{Allow, Audit, Deny, Hold};
    let p250 = long_path("/d/", 250);
    let p251 = long_path("/d/", 251);
    let p400 = long_path("/d/", 400);
    assert_eq!(p250, p251[..250]);
    check(
        &[("/d/", Audit), (&p250, Deny), ("/d/*", Hold)],
        &[
            (&p250, Deny, 2),
            // Starts with the exact rule's 250 bytes, but the key has no room for a terminator:
            // neither exact rule can match, the directory rule does.
            (&p251, Audit, 1),
            (&p400, Audit, 1),
            ("/d/x", Hold, 3),
            ("/d", Allow, 0),
        ],
    );
    // A wildcard directory rule matches a long path only if the `*` component ends within the
    // 251 bytes the key holds.
    let short_star = format!("/d/abc/{}", "y".repeat(300));
    let long_star = format!("/d/{}/y", "z".repeat(300));
    check(
        &[("/d/*/", Deny)],
        &[(&short_star, Deny, 1), (&long_star, Allow, 0)],
    );
    // A directory rule of the full capacity matches longer paths below it.
    let dir251 = format!("{}/", &long_path("/d/", 250));
    let below = format!("{dir251}{}", "y".repeat(100));
    check(&[(&dir251, Deny)], &[(&below, Deny, 1), (&p250, Allow, 0)]);
}

#[test]
fn shadow_mode_and_corrupt_values_through_the_whole_algorithm() {
    let (mut rules, mut settings) =
        scenario(Decision::Deny, Mode::Shadow, &[("/a/", Decision::Hold)]);
    rules.push(Rule {
        agent: 1,
        op: Op::Exec,
        pattern: "/c/".to_owned(),
        decision: 9,
        id: 2,
    });
    let compiled = compile(&rules, &settings);
    let v = |path| compiled.decide(1, Op::Exec, path);
    assert_eq!(
        (v("/a/x").decision, v("/a/x").enforced),
        (Decision::Hold, Decision::Audit)
    );
    assert_eq!(
        (v("/b").decision, v("/b").enforced, v("/b").rule_id),
        (Decision::Deny, Decision::Audit, 0)
    );
    assert_eq!(
        (v("/c/x").decision, v("/c/x").enforced),
        (Decision::Deny, Decision::Audit)
    );

    settings.get_mut(&1).unwrap().mode = 7;
    let compiled = compile(&rules, &settings);
    let v = |path| compiled.decide(1, Op::Exec, path);
    assert_eq!(
        v("/c/x"),
        Verdict {
            decision: Decision::Deny,
            enforced: Decision::Deny,
            rule_id: 2
        }
    );
    assert_eq!(v("/a/x").enforced, Decision::Hold);
}

#[test]
fn agents_and_ops_do_not_see_each_others_rules() {
    // Agent ids 1 and 0x0100_0000 have the same bytes in different order.
    let rules = vec![
        Rule {
            agent: 1,
            op: Op::Exec,
            pattern: "/".to_owned(),
            decision: Decision::Deny as u8,
            id: 1,
        },
        Rule {
            agent: 0x0100_0000,
            op: Op::Write,
            pattern: "/x".to_owned(),
            decision: Decision::Hold as u8,
            id: 2,
        },
    ];
    let settings: HashMap<u32, Settings> = [1, 0x0100_0000]
        .into_iter()
        .map(|a| {
            (
                a,
                Settings {
                    default: Decision::Allow as u8,
                    mode: 0,
                    extra_wildcards: 0,
                },
            )
        })
        .collect();
    let compiled = compile(&rules, &settings);
    assert_eq!(compiled.decide(1, Op::Exec, "/x").rule_id, 1);
    assert_eq!(compiled.decide(1, Op::Write, "/x").rule_id, 0);
    assert_eq!(compiled.decide(0x0100_0000, Op::Exec, "/x").rule_id, 0);
    assert_eq!(compiled.decide(0x0100_0000, Op::Write, "/x").rule_id, 2);
}

// ---- property test ----

const AGENTS: [u32; 3] = [1, 2, 0x0100_0000];
const OPS: [Op; 3] = [Op::Exec, Op::Write, Op::Unlink];

/// Path components: short ones that collide often, long ones that push paths across the
/// 250/251-byte limits, and a literal `*` (a file may be called that).
fn path_component() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("a".to_owned()),
        4 => Just("b".to_owned()),
        3 => Just("ab".to_owned()),
        1 => Just("*".to_owned()),
        2 => Just("l".repeat(40)),
        1 => Just("m".repeat(97)),
        1 => (1..=120usize).prop_map(|n| "n".repeat(n)),
    ]
}

/// Random components; often with one more inserted so that the path up to it is 247 to 252 bytes
/// long, right at the capacity of a key (250 bytes plus terminator, 251 without).
fn path() -> impl Strategy<Value = Vec<String>> {
    (
        prop::collection::vec(path_component(), 0..10),
        prop::option::weighted(0.7, (any::<Index>(), 247usize..=252)),
    )
        .prop_map(|(mut components, pad)| {
            if let Some((at, target)) = pad {
                let at = at.index(components.len() + 1);
                let before = join(&components[..at], false).len();
                // `/` + the new component brings the prefix to `target` bytes.
                let before = if at == 0 { 0 } else { before };
                if before + 2 <= target {
                    components.insert(at, "p".repeat(target - before - 1));
                }
            }
            components
        })
}

fn join(components: &[String], directory: bool) -> String {
    let mut p = String::from("/");
    p.push_str(&components.join("/"));
    if directory && !components.is_empty() {
        p.push('/');
    }
    p
}

/// How a rule's pattern is made.
#[derive(Clone, Debug)]
enum Shape {
    /// Components drawn at random (`*` likely, sometimes twice).
    Random(Vec<String>),
    /// The first components of one of the query paths, one of them perhaps replaced by `*`, so
    /// that rules actually match.
    FromPath {
        path: Index,
        take: Index,
        star: Option<Index>,
    },
}

#[derive(Clone, Debug)]
struct RawRule {
    agent: usize,
    op: usize,
    shape: Shape,
    directory: bool,
    decision: u8,
}

fn raw_rule() -> impl Strategy<Value = RawRule> {
    let random = prop::collection::vec(
        prop_oneof![4 => path_component(), 2 => Just("*".to_owned())],
        0..6,
    )
    .prop_map(Shape::Random);
    let from_path = (
        any::<Index>(),
        any::<Index>(),
        prop::option::of(any::<Index>()),
    )
        .prop_map(|(path, take, star)| Shape::FromPath { path, take, star });
    (
        0..AGENTS.len(),
        0..OPS.len(),
        prop_oneof![1 => random, 3 => from_path],
        any::<bool>(),
        prop_oneof![10 => 0u8..4, 1 => 4u8..=255],
    )
        .prop_map(|(agent, op, shape, directory, decision)| RawRule {
            agent,
            op,
            shape,
            directory,
            decision,
        })
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![10 => 0u8..4, 1 => Just(200u8)],
        prop_oneof![5 => 0u8..2, 1 => Just(9u8)],
        prop_oneof![3 => Just(0u32), 1 => 0u32..1024],
    )
        .prop_map(|(default, mode, extra_wildcards)| Settings {
            default,
            mode,
            extra_wildcards,
        })
}

fn pattern_of(rule: &RawRule, paths: &[Vec<String>]) -> String {
    match &rule.shape {
        Shape::Random(components) => join(components, rule.directory),
        Shape::FromPath { path, take, star } => {
            let path = path.get(paths);
            let mut components = path[..take.index(path.len() + 1)].to_vec();
            if let Some(star) = star
                && !components.is_empty()
            {
                let i = star.index(components.len());
                "*".clone_into(&mut components[i]);
            }
            join(&components, rule.directory)
        }
    }
}

proptest! {
    // No regression files: a failure prints the minimal case, to be turned into a scenario test.
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn kernel_algorithm_equals_reference(
        paths in prop::collection::vec(path(), 1..6),
        raw_rules in prop::collection::vec(raw_rule(), 0..40),
        settings in prop::array::uniform3(settings()),
    ) {
        let settings: HashMap<u32, Settings> = AGENTS.into_iter().zip(settings).collect();
        let mut rules = Vec::new();
        for (raw, id) in raw_rules.iter().zip(1..) {
            let pattern = pattern_of(raw, &paths);
            let (agent, op) = (AGENTS[raw.agent], OPS[raw.op]);
            let compiled = PolicyKey::for_rule(agent, op, pattern.as_bytes());
            prop_assert_eq!(compiled.is_ok(), Reference::valid(&pattern), "{} {:?}", pattern, compiled);
            if compiled.is_ok() {
                rules.push(Rule { agent, op, pattern, decision: raw.decision, id });
            }
        }
        let compiled = compile(&rules, &settings);
        let reference = Reference { rules: &rules, settings: &settings };

        // Every path and each of its ancestors, so that exact rules get their chance.
        let mut queries: Vec<String> = paths
            .iter()
            .flat_map(|p| (0..=p.len()).map(|n| join(&p[..n], false)))
            .collect();
        queries.sort();
        queries.dedup();
        for path in &queries {
            for agent in AGENTS {
                for op in OPS {
                    prop_assert_eq!(
                        compiled.decide(agent, op, path),
                        reference.decide(agent, op, path),
                        "agent {} op {:?} path {} ({} bytes)", agent, op, path, path.len()
                    );
                }
            }
        }
    }
}
