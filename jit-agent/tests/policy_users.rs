//! Kernel-side `user` and `group` conditions: how they load, their errors at `FILE:LINE:COL`,
//! and what the kernel decides with the rule sets and identity map entries the daemon installs —
//! the maps emulated on the host with the very lookup the eBPF programs run
//! (`identity_ruleset`, `evaluate`).
use std::collections::HashMap;

use jit_agent::{
    policy::{CompiledAgent, compile, load_str},
    tooling::model::Trie,
};
use jit_common::policy::{
    AgentConfig, Decision, IDENTITY_BY_GROUP, IDENTITY_BY_USER, IdentityKey, Op, PolicyKey,
    evaluate, identity_ruleset,
};

const HEAD: &str = "[agent]\nname = \"a\"\ncgroups = [\"jit/a\"]\ndefault = \"deny\"\n\n";

/// A base rule set far from 0, so offsets that leave the block would show.
const BASE: u32 = 1000;

fn errors(text: &str) -> String {
    load_str("a.toml", text).unwrap_err().to_string()
}

/// The kernel's maps for one agent installed at rule set [`BASE`].
struct Kernel {
    config: AgentConfig,
    trie: Trie,
    identity: HashMap<IdentityKey, u32>,
}

impl Kernel {
    fn new(agent: &CompiledAgent) -> Self {
        Self {
            config: agent.config.with_ruleset(BASE),
            trie: Trie::new(agent.keys(BASE)),
            identity: agent
                .classes
                .as_ref()
                .map(|c| c.keys(BASE).into_iter().collect())
                .unwrap_or_default(),
        }
    }

    /// What the programs decide for a process with effective ids `uid`, `gid`.
    fn decide(&self, uid: u32, gid: u32, op: Op, path: &str) -> (Decision, u32) {
        let ruleset = if self.config.identity == 0 {
            self.config.ruleset
        } else {
            identity_ruleset(&self.config, uid, gid, 0, |k| self.identity.get(k).copied())
        };
        let key = PolicyKey::for_lookup(ruleset, op, path.as_bytes());
        let mut scratch = PolicyKey::EMPTY;
        let v = evaluate(|k| self.trie.lookup(k), &key, &self.config, &mut scratch);
        (v.decision, v.rule_id)
    }
}

fn compiled(text: &str) -> CompiledAgent {
    let set = load_str("a.toml", text).unwrap_or_else(|e| panic!("{e}"));
    compile(&set, jiff::Timestamp::now()).agents[0].clone()
}

#[test]
fn rules_apply_to_the_users_and_groups_they_name() {
    // root (uid 0), daemon (uid 1, gid 1) exist on every Debian system.
    let agent = compiled(&format!(
        "{HEAD}[[rule]]\nname = \"root writes /srv\"\nop = \"write\"\npath = \"/srv/\"\n\
         user = \"root\"\ndecision = \"allow\"\n\n\
         [[rule]]\nname = \"group daemon never touches secrets\"\nop = \"modify\"\n\
         path = \"/srv/secret/\"\ngroup = [\"daemon\"]\ndecision = \"deny\"\n\n\
         [[rule]]\nname = \"everyone reads configs\"\nop = \"write\"\npath = \"/srv/cfg\"\n\
         decision = \"audit\"\n"
    ));
    let classes = agent
        .classes
        .as_ref()
        .expect("the rules name users and groups");
    assert_eq!(
        (classes.uids.as_slice(), classes.gids.as_slice()),
        (&[0][..], &[1][..])
    );
    assert_eq!(
        classes.sets.len(),
        3,
        "(1 user + anyone else) × (1 group + anyone else) rule sets, the first in `entries`"
    );
    assert_eq!(agent.rulesets(), 4);
    assert_eq!(agent.config.identity, IDENTITY_BY_USER | IDENTITY_BY_GROUP);
    assert_eq!(agent.config.extra_rulesets, 3);

    let k = Kernel::new(&agent);
    // root, group root: its own rule.
    assert_eq!(
        k.decide(0, 0, Op::Write, "/srv/app/x"),
        (Decision::Allow, 1)
    );
    // Someone else: the default.
    assert_eq!(
        k.decide(1000, 1000, Op::Write, "/srv/app/x").0,
        Decision::Deny
    );
    assert_eq!(k.decide(1000, 1000, Op::Write, "/srv/app/x").1, 0);
    // root in group daemon: the group's deny is more specific.
    assert_eq!(
        k.decide(0, 1, Op::Write, "/srv/secret/k"),
        (Decision::Deny, 2)
    );
    // root in group root: the allow of /srv/ decides there.
    assert_eq!(
        k.decide(0, 0, Op::Write, "/srv/secret/k"),
        (Decision::Allow, 1)
    );
    // A rule without user/group applies to everyone, in every class.
    for (uid, gid) in [(0, 0), (0, 1), (1000, 1), (1000, 1000)] {
        assert_eq!(
            k.decide(uid, gid, Op::Write, "/srv/cfg"),
            (Decision::Audit, 3),
            "uid {uid} gid {gid}"
        );
    }
    // The group rule's op group guards the directories above it, for that group only.
    assert_eq!(k.decide(1000, 1, Op::Rename, "/srv").0, Decision::Deny);
    assert_eq!(k.decide(1000, 1000, Op::Rename, "/srv").1, 0);
}

#[test]
fn agents_without_users_or_groups_read_nothing_about_the_process() {
    let agent = compiled(&format!(
        "{HEAD}[[rule]]\nname = \"w\"\nop = \"write\"\npath = \"/srv/\"\ndecision = \"allow\"\n"
    ));
    assert!(agent.classes.is_none());
    assert_eq!((agent.config.identity, agent.config.extra_rulesets), (0, 0));
    assert_eq!(agent.rulesets(), 1);
}

#[test]
fn identity_map_entries_carry_the_base_rule_set() {
    let agent = compiled(&format!(
        "{HEAD}[[rule]]\nname = \"w\"\nop = \"write\"\npath = \"/srv/\"\n\
         user = [\"root\", \"daemon\"]\ngroup = \"root\"\ndecision = \"allow\"\n"
    ));
    let classes = agent.classes.unwrap();
    let mut keys = classes.keys(7);
    keys.sort_by_key(|(k, _)| (k.kind, k.id));
    let got: Vec<(u32, u32, u32, u32)> = keys
        .iter()
        .map(|(k, v)| (k.ruleset, k.kind, k.id, *v))
        .collect();
    // Users 0 and 1 are uid classes 1 and 2 (stride: 1 group + anyone else = 2); gid 0 is class 1.
    assert_eq!(got, [(7, 0, 0, 2), (7, 0, 1, 4), (7, 1, 0, 1)]);
}

#[test]
fn a_corrupt_offset_stays_inside_the_agents_rule_sets() {
    let config = AgentConfig {
        identity: IDENTITY_BY_USER,
        extra_rulesets: 2,
        ..AgentConfig::new(Decision::Deny, jit_common::policy::Mode::Enforce, 0).with_ruleset(50)
    };
    assert_eq!(identity_ruleset(&config, 5, 5, 0, |_| Some(99)), 52);
    assert_eq!(identity_ruleset(&config, 5, 5, 0, |_| None), 50);
}

#[test]
fn mistakes_are_reported_where_they_are() {
    let rule = |body: &str| {
        format!(
            "{HEAD}[[rule]]\nname = \"r\"\nop = \"write\"\npath = \"/srv/\"\n{body}decision = \"allow\"\n"
        )
    };
    let e = errors(&rule("user = \"no-such-user-jit\"\n"));
    assert!(
        e.contains("a.toml:10:8: unknown user `no-such-user-jit`"),
        "{e}"
    );
    let e = errors(&rule("group = [\"root\", \"no-such-group-jit\"]\n"));
    assert!(
        e.contains("a.toml:10:18: unknown group `no-such-group-jit`"),
        "{e}"
    );
    let e = errors(&rule("user = [\"root\", \"root\"]\n"));
    assert!(
        e.contains("a.toml:10:17: user `root` is listed twice"),
        "{e}"
    );
    let e = errors(&rule("group = []\n"));
    assert!(e.contains("a.toml:10:9: `group` is empty"), "{e}");
    let e = errors(&rule("user = 0\n"));
    assert!(e.contains("a.toml:10:8:"), "{e}");
}

#[test]
fn too_many_combinations_of_users_and_groups_are_refused() {
    // 8 users and 7 groups of every Debian system: 9 × 8 = 72 rule sets, more than 64.
    let users = ["root", "daemon", "bin", "sys", "sync", "games", "man", "lp"];
    let groups = ["root", "daemon", "bin", "sys", "adm", "tty", "disk"];
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "{HEAD}[[rule]]\nname = \"users\"\nop = \"write\"\npath = \"/srv/\"\nuser = [{}]\n\
         decision = \"allow\"\n\n[[rule]]\nname = \"groups\"\nop = \"write\"\npath = \"/srv/\"\n\
         group = [{}]\ndecision = \"deny\"\n",
        list(&users),
        list(&groups)
    );
    let e = errors(&text);
    assert!(
        e.contains("a.toml:14:8: this rule brings the users and groups named in `user` and `group` to 8 and 7"),
        "{e}"
    );
    // One group fewer fits: 9 × 7 = 63.
    let fits = text.replace(", \"disk\"", "");
    let agent = compiled(&fits);
    assert_eq!(agent.rulesets(), 63);
}

#[test]
fn offline_loading_keeps_names_and_matches_by_name() {
    use jit_agent::policy::{LoadOptions, Subject, load_str_with};
    let set = load_str_with(
        "a.toml",
        &format!(
            "{HEAD}[[rule]]\nname = \"w\"\nop = \"write\"\npath = \"/srv/\"\n\
             user = \"someone-elsewhere\"\ndecision = \"allow\"\n"
        ),
        LoadOptions {
            resolve_accounts: false,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let who = &set.agent("a").unwrap().rules[0].who;
    let named = Subject {
        user: Some("someone-elsewhere".into()),
        ..Subject::default()
    };
    assert!(who.admits_subject(&named));
    assert!(!who.admits_subject(&Subject::default()));
}
