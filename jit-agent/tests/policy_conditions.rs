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

/// `sha256`: the executed file's digest, read by the daemon on the hold; one digest of a list
/// suffices, an unreadable digest is unknown (deny and hold rules count it as met), and a bad
/// digest or a non-exec op is an error where it is written.
#[test]
fn sha256_conditions_decide_by_the_files_digest() {
    // `printf '' | sha256sum` and `printf 'x' | sha256sum`.
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const X: &str = "2D711642B726B04401627CA9FBAC32F5C8530FB1903CC4DB02258717921A4881";
    let text = rule(&format!(
        "op = \"exec\"\npath = \"/\"\nsha256 = [\"{EMPTY}\", \"{X}\"]\ndecision = \"deny\"\n"
    ));
    let set = load_str("a.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let rule = &set.agent("a").unwrap().rules[0];
    assert!(rule.is_conditional(), "the kernel holds, the daemon hashes");
    let digest = |hex: &str| jit_agent::policy::parse_sha256(hex).unwrap();
    let with = |sha256| jit_agent::policy::conditions::Facts {
        sha256,
        ..Default::default()
    };
    assert_eq!(
        rule.conditions.evaluate(&with(Some(digest(EMPTY)))),
        Truth::Yes
    );
    assert_eq!(
        rule.conditions
            .evaluate(&with(Some(digest(&X.to_lowercase())))),
        Truth::Yes,
        "hex digits of either case"
    );
    assert_eq!(rule.conditions.evaluate(&with(Some([7; 32]))), Truth::No);
    assert_eq!(rule.conditions.evaluate(&with(None)), Truth::Unknown);

    let e = errors(&rule_text(
        "op = \"write\"\npath = \"/srv/\"\nsha256 = \"00\"\n",
    ));
    assert!(
        e.contains("a.toml:10:10: `sha256` is a condition on what an exec runs"),
        "{e}"
    );
    let e = errors(&rule_text(&format!(
        "op = \"exec\"\npath = \"/\"\nsha256 = [\"{EMPTY}\", \"{}\"]\n",
        &EMPTY[1..]
    )));
    assert!(e.contains("a.toml:10:79: bad `sha256`"), "{e}");
    let e = errors(&rule_text("op = \"exec\"\npath = \"/\"\nsha256 = []\n"));
    assert!(e.contains("a.toml:10:10: `sha256` is empty"), "{e}");
}

fn rule_text(body: &str) -> String {
    rule(&format!("{body}decision = \"deny\"\n"))
}
