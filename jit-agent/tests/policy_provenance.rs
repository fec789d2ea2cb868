//! Kernel-side `written_by` conditions (policies/README.md, "Provenance"): how they load, their
//! errors at `FILE:LINE:COL`, and what the kernel decides with the rule sets and identity map
//! entries the daemon installs — emulated on the host with the very lookup the eBPF programs
//! run (`identity_ruleset`, `evaluate`), for each writer class.
use std::collections::HashMap;

use jit_agent::{
    policy::{CompiledAgent, compile, load_str},
    tooling::model::Trie,
};
use jit_common::{
    policy::{
        AgentConfig, Decision, IDENTITY_BY_USER, IDENTITY_BY_WRITER, IdentityKey, Op, PolicyKey,
        evaluate, identity_ruleset,
    },
    provenance::{WRITER_NONE, WRITER_OTHER_AGENT, WRITER_THIS_AGENT},
};

const HEAD: &str = "[agent]\nname = \"a\"\ncgroups = [\"jit/a\"]\ndefault = \"allow\"\n\n\
                    [escalation]\napprovers = { users = [\"root\"] }\n\n";

/// A base rule set far from 0, so offsets that leave the block would show.
const BASE: u32 = 2000;

fn errors(text: &str) -> String {
    load_str("a.toml", text).unwrap_err().to_string()
}

fn compiled(text: &str) -> CompiledAgent {
    let set = load_str("a.toml", text).unwrap_or_else(|e| panic!("{e}"));
    compile(&set, jiff::Timestamp::now()).agents[0].clone()
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

    /// What the programs decide for a process acting as `uid`/`gid`, on a file of writer class
    /// `writer` (the exec hook's `EVENT_FLAG_WRITTEN_BY_*` bits).
    fn decide(&self, uid: u32, writer: u32, op: Op, path: &str) -> (Decision, u32) {
        let ruleset = if self.config.identity == 0 {
            self.config.ruleset
        } else {
            identity_ruleset(&self.config, uid, uid, writer, |k| {
                self.identity.get(k).copied()
            })
        };
        let key = PolicyKey::for_lookup(ruleset, op, path.as_bytes());
        let mut scratch = PolicyKey::EMPTY;
        let v = evaluate(|k| self.trie.lookup(k), &key, &self.config, &mut scratch);
        (v.decision, v.rule_id)
    }
}

const POLICY: &str = "[[rule]]\nname = \"hold what agents wrote\"\nop = \"exec\"\npath = \"/\"\n\
     written_by = \"any-agent\"\ndecision = \"hold\"\n\n\
     [[rule]]\nname = \"its own builds\"\nop = \"exec\"\npath = \"/srv/work/target/\"\n\
     written_by = \"this-agent\"\ndecision = \"allow\"\n\n\
     [[rule]]\nname = \"no tools\"\nop = \"exec\"\npath = \"/opt/denied/\"\ndecision = \"deny\"\n\n\
     [[rule]]\nname = \"never from others\"\nop = \"exec\"\npath = \"/tmp/\"\n\
     written_by = [\"other-agent\"]\ndecision = \"deny\"\n";

#[test]
fn exec_rules_apply_to_the_writers_they_name() {
    let agent = compiled(&format!("{HEAD}{POLICY}"));
    let classes = agent.classes.as_ref().expect("writer classes");
    assert!(classes.writers);
    assert_eq!(
        classes.sets.len(),
        2,
        "a rule set per writer class, the first in `entries`"
    );
    assert_eq!(agent.config.identity, IDENTITY_BY_WRITER);
    let k = Kernel::new(&agent);
    let exec = |writer, path| k.decide(1000, writer, Op::Exec, path);
    // Installed on the host: the default.
    assert_eq!(exec(WRITER_NONE, "/usr/bin/git"), (Decision::Allow, 0));
    // Anything an agent wrote is held, whichever agent.
    assert_eq!(exec(WRITER_THIS_AGENT, "/usr/bin/git"), (Decision::Hold, 1));
    assert_eq!(exec(WRITER_OTHER_AGENT, "/srv/x"), (Decision::Hold, 1));
    // Its own builds run (the more specific path), another agent's builds are still held.
    assert_eq!(
        exec(WRITER_THIS_AGENT, "/srv/work/target/app"),
        (Decision::Allow, 2)
    );
    assert_eq!(
        exec(WRITER_OTHER_AGENT, "/srv/work/target/app"),
        (Decision::Hold, 1)
    );
    assert_eq!(
        exec(WRITER_NONE, "/srv/work/target/app"),
        (Decision::Allow, 0)
    );
    // A rule without `written_by` applies to every writer class.
    for writer in [WRITER_NONE, WRITER_THIS_AGENT, WRITER_OTHER_AGENT] {
        assert_eq!(
            exec(writer, "/opt/denied/t"),
            (Decision::Deny, 3),
            "{writer}"
        );
    }
    assert_eq!(exec(WRITER_OTHER_AGENT, "/tmp/x"), (Decision::Deny, 4));
    assert_eq!(exec(WRITER_THIS_AGENT, "/tmp/x"), (Decision::Hold, 1));
    // Other ops never see a writer class (the kernel passes WRITER_NONE for them).
    assert_eq!(
        k.decide(1000, WRITER_NONE, Op::Write, "/tmp/x"),
        (Decision::Allow, 0)
    );
}

#[test]
fn writers_combine_with_users() {
    let agent = compiled(&format!(
        "{HEAD}{POLICY}\n[[rule]]\nname = \"root runs nothing agents wrote\"\nop = \"exec\"\n\
         path = \"/\"\nuser = \"root\"\nwritten_by = \"agent\"\ndecision = \"deny\"\n"
    ));
    assert_eq!(agent.config.identity, IDENTITY_BY_USER | IDENTITY_BY_WRITER);
    assert_eq!(agent.rulesets(), 2 * 3);
    let k = Kernel::new(&agent);
    assert_eq!(
        k.decide(0, WRITER_THIS_AGENT, Op::Exec, "/bin/x"),
        (Decision::Deny, 5)
    );
    assert_eq!(
        k.decide(0, WRITER_NONE, Op::Exec, "/bin/x"),
        (Decision::Allow, 0)
    );
    assert_eq!(
        k.decide(1000, WRITER_THIS_AGENT, Op::Exec, "/bin/x"),
        (Decision::Hold, 1)
    );
}

#[test]
fn mistakes_are_reported_where_they_are() {
    let rule = |op: &str, body: &str| {
        format!(
            "{HEAD}[[rule]]\nname = \"r\"\nop = \"{op}\"\npath = \"/srv/\"\n{body}decision = \"deny\"\n"
        )
    };
    let e = errors(&rule("write", "written_by = \"this-agent\"\n"));
    assert!(
        e.contains("a.toml:13:14: `written_by` is a condition on the file an exec runs"),
        "{e}"
    );
    let e = errors(&rule("any", "written_by = \"this-agent\"\n"));
    assert!(e.contains("a.toml:13:14:"), "{e}");
    let e = errors(&rule("exec", "written_by = [\"this-agent\", \"robot\"]\n"));
    assert!(e.contains("a.toml:13:29: unknown writer `robot`"), "{e}");
    let e = errors(&rule("exec", "written_by = []\n"));
    assert!(e.contains("a.toml:13:14: `written_by` is empty"), "{e}");
    let e = errors(&rule("exec", "written_by = 1\n"));
    assert!(e.contains("a.toml:13:14:"), "{e}");
}

#[test]
fn writer_classes_count_towards_the_rule_set_limit() {
    // 8 users of every Debian system: 9 rule sets, times 3 writer classes = 27, fine; with 7
    // groups too (9 × 8 = 72) it was already too many without writers.
    let users = ["root", "daemon", "bin", "sys", "sync", "games", "man", "lp"];
    let list = users
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let agent = compiled(&format!(
        "{HEAD}[[rule]]\nname = \"u\"\nop = \"write\"\npath = \"/srv/\"\nuser = [{list}]\n\
         decision = \"deny\"\n\n{POLICY}"
    ));
    assert_eq!(agent.rulesets(), 9 * 3);
    let groups = "\"root\", \"daemon\"";
    let e = errors(&format!(
        "{HEAD}[[rule]]\nname = \"u\"\nop = \"write\"\npath = \"/srv/\"\nuser = [{list}]\n\
         group = [{groups}]\ndecision = \"deny\"\n\n{POLICY}"
    ));
    assert!(e.contains("the kernel would need 81 copies"), "{e}");
}
