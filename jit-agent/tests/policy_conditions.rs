//! Daemon-side conditions (`args`, `cwd`, `caller`, `ancestor`, `env`, `target`): how they load,
//! their errors at `FILE:LINE:COL`, and how they compile (a rule with conditions is a hold in the
//! kernel, first among rules with the same key).
use jit_agent::policy::{compile_agent, conditions::Truth, load_str};
use jit_common::policy::{Decision, Op};

const HEAD: &str = "[agent]\nname = \"a\"\ncgroups = [\"jit/a\"]\ndefault = \"deny\"\n\n";

fn errors(text: &str) -> String {
    load_str("a.toml", text).unwrap_err().to_string()
}

fn rule(body: &str) -> String {
    format!("{HEAD}[[rule]]\nname = \"r\"\n{body}")
}

#[test]
fn conditions_load_and_make_the_kernel_hold() {
    let text = format!(
        "{HEAD}[[rule]]\nname = \"git status\"\nop = \"exec\"\npath = \"/usr/bin/git\"\n\
         args = [\"status\", \"**\"]\ncwd = \"/srv/work/\"\nenv = {{ CI = \"true\" }}\n\
         decision = \"allow\"\n\n\
         [[rule]]\nname = \"git\"\nop = \"exec\"\npath = \"/usr/bin/git\"\ndecision = \"deny\"\n\n\
         [[rule]]\nname = \"small writes\"\nop = \"write\"\npath = \"/srv/\"\n\
         caller = [\"/usr/bin/make\"]\nancestor = \"/usr/sbin/cron\"\n\
         target = {{ exists = true, max_size = \"1M\" }}\ndecision = \"allow\"\n"
    );
    let set = load_str("a.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let agent = set.agent("a").unwrap();
    assert!(agent.rules[0].is_conditional());
    assert!(!agent.rules[1].is_conditional());
    let t = agent.rules[2].conditions.target.unwrap();
    assert_eq!((t.exists, t.max_size), (Some(true), Some(1 << 20)));
    let compiled = compile_agent(agent, |_| true);
    let git = compiled
        .entries
        .iter()
        .find(|e| e.op == Op::Exec && e.pattern == "/usr/bin/git")
        .unwrap();
    assert_eq!(
        (git.value.decision, git.value.rule_id),
        (Decision::Hold as u8, 1),
        "the conditional allow outranks the unconditional deny of the same path in the kernel: \
         the daemon tries its conditions, then decides as the deny would"
    );
    let facts = jit_agent::policy::conditions::Facts {
        args: Some(vec!["status".into(), "-s".into()]),
        cwd: Some("/srv/work".into()),
        env: Some(vec!["CI=true".into()]),
        ..Default::default()
    };
    assert_eq!(agent.rules[0].conditions.evaluate(&facts), Truth::Yes);
}

#[test]
fn mistakes_are_reported_where_they_are() {
    let e = errors(&rule(
        "op = [\"exec\", \"write\"]\npath = \"/usr/bin/git\"\nargs = [\"push\"]\ndecision = \"deny\"\n",
    ));
    assert!(
        e.contains("a.toml:10:8") && e.contains("needs op = \"exec\""),
        "{e}"
    );
    let e = errors(&rule(
        "op = \"exec\"\npath = \"/usr/bin/git\"\nargs = [\"**\", \"**\"]\ndecision = \"deny\"\n",
    ));
    assert!(
        e.contains("a.toml:10:15") && e.contains("twice in a row"),
        "{e}"
    );
    let e = errors(&rule(
        "op = \"exec\"\npath = \"/usr/bin/git\"\nenv = { \"A=B\" = \"x\", CI = \"**\" }\ndecision = \"deny\"\n",
    ));
    assert!(e.contains("bad environment variable name `A=B`"), "{e}");
    assert!(e.contains("any value of a variable is `*`"), "{e}");
    let e = errors(&rule(
        "op = \"write\"\npath = \"/srv/\"\ncwd = \"srv\"\ndecision = \"deny\"\n",
    ));
    assert!(
        e.contains("a.toml:10:7") && e.contains("bad `cwd` pattern `srv`"),
        "{e}"
    );
    let e = errors(&rule(
        "op = \"write\"\npath = \"/srv/\"\ntarget = { exists = false, max_size = 10 }\ndecision = \"deny\"\n",
    ));
    assert!(e.contains("cannot also have a size"), "{e}");
    let e = errors(&rule(
        "op = \"write\"\npath = \"/srv/\"\ntarget = { max_size = \"10MB\" }\ndecision = \"deny\"\n",
    ));
    assert!(
        e.contains("a.toml:10:23") && e.contains("bad size `10MB`"),
        "{e}"
    );
    let e = errors(&rule(
        "op = \"write\"\npath = \"/srv/\"\ntarget = { min_size = 10, max_size = 1 }\ndecision = \"deny\"\n",
    ));
    assert!(e.contains("nothing matches"), "{e}");
    let e = errors(&rule(
        "op = \"write\"\npath = \"/srv/\"\ntarget = { size = 1 }\ndecision = \"deny\"\n",
    ));
    assert!(e.contains("unknown field `size`"), "{e}");
    let e = errors(&rule(
        "op = \"write\"\npath = \"/srv/\"\ncaller = []\ndecision = \"deny\"\n",
    ));
    assert!(e.contains("`caller` is empty"), "{e}");
}
