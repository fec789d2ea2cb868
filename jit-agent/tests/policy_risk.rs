//! Risk and per-rule escalation: `risk`, a rule's own `approvers`/`required_approvals`/
//! `timeout`/`on_timeout`, `[escalation.<risk>]` defaults, how they resolve, and their errors
//! at `FILE:LINE:COL`.
use std::time::Duration;

use jit_agent::policy::{OnTimeout, Risk, load_str};

const HEAD: &str = "[agent]\nname = \"a\"\ncgroups = [\"jit/a\"]\ndefault = \"hold\"\n\n";

fn errors(text: &str) -> String {
    load_str("a.toml", text).unwrap_err().to_string()
}

#[test]
fn each_setting_comes_from_the_rule_then_its_risk_level_then_the_agent() {
    let text = format!(
        "{HEAD}[escalation]\napprovers = {{ users = [\"root\"] }}\ntimeout = \"5m\"\n\n\
         [escalation.high]\napprovers = {{ users = [\"root\", \"nobody\"] }}\n\
         required_approvals = 2\ntimeout = \"30m\"\n\n\
         [[rule]]\nname = \"own\"\nop = \"exec\"\npath = \"/usr/bin/git\"\ndecision = \"hold\"\n\
         risk = \"high\"\napprovers = {{ users = [\"nobody\"] }}\nrequired_approvals = 1\n\
         on_timeout = \"kill\"\n\n\
         [[rule]]\nname = \"level\"\nop = \"exec\"\npath = \"/usr/bin/curl\"\n\
         decision = \"hold\"\nrisk = \"high\"\n\n\
         [[rule]]\nname = \"plain\"\nop = \"exec\"\npath = \"/usr/bin/ls\"\ndecision = \"deny\"\n\
         risk = \"low\"\n"
    );
    let set = load_str("a.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let agent = set.agent("a").unwrap();
    let own = agent.review(1);
    assert_eq!(own.risk, Some(Risk::High));
    assert_eq!(own.approver_names(), ["nobody"]);
    assert_eq!(own.required_approvals, 1);
    assert_eq!(
        own.timeout,
        Duration::from_mins(30),
        "from [escalation.high]"
    );
    assert_eq!(own.on_timeout, OnTimeout::Kill);
    let level = agent.review(2);
    assert_eq!(level.approver_names(), ["root", "nobody"]);
    assert_eq!(level.required_approvals, 2);
    let default = agent.review(0);
    assert_eq!(default.risk, None);
    assert_eq!(default.approver_names(), ["root"]);
    assert_eq!(
        (default.required_approvals, default.timeout),
        (1, Duration::from_mins(5))
    );
    assert_eq!(
        agent.review(3).risk,
        Some(Risk::Low),
        "any rule may carry a risk"
    );
}

#[test]
fn a_rule_with_its_own_approvers_needs_none_from_the_agent() {
    let text = "[agent]\nname = \"a\"\ncgroups = [\"jit/a\"]\n\n[[rule]]\nname = \"r\"\n\
                op = \"exec\"\npath = \"/usr/bin/git\"\ndecision = \"hold\"\n\
                approvers = { groups = [\"root\"] }\n";
    load_str("a.toml", text).unwrap_or_else(|e| panic!("{e}"));
    // Without them it is refused, as before.
    let text = text.replace("approvers = { groups = [\"root\"] }\n", "");
    assert!(errors(&text).contains("lists nobody who could release them"));
}

#[test]
fn bad_risk_and_review_fields_are_reported_at_their_position() {
    let text = format!(
        "{HEAD}[escalation]\napprovers = {{ users = [\"root\"] }}\n\n\
         [escalation.hihg]\ntimeout = \"1m\"\n\n\
         [escalation.critical]\nrequired_approvals = 3\n\n\
         [[rule]]\nname = \"r1\"\nop = \"exec\"\npath = \"/usr/bin/a\"\ndecision = \"hold\"\n\
         risk = \"severe\"\n\n\
         [[rule]]\nname = \"r2\"\nop = \"exec\"\npath = \"/usr/bin/b\"\ndecision = \"deny\"\n\
         approvers = {{ users = [\"root\"] }}\nrequired_approvals = 1\n\n\
         [[rule]]\nname = \"r3\"\nop = \"exec\"\npath = \"/usr/bin/c\"\ndecision = \"hold\"\n\
         approvers = {{ users = [\"root\", \"nosuchuser\"] }}\nrequired_approvals = 3\n\n\
         [[rule]]\nname = \"r4\"\nop = \"exec\"\npath = \"/usr/bin/d\"\ndecision = \"hold\"\n\
         approvers = {{}}\n"
    );
    let got = errors(&text);
    let expected = [
        "a.toml:9:13: unknown field `hihg`, expected one of `approvers`, `timeout`, \
         `on_timeout`, `grant`, `required_approvals`, `self_approval`, `max_grant`, `low`, \
         `medium`, `high`, `critical`",
    ];
    for e in expected {
        assert!(got.contains(e), "missing {e}\n{got}");
    }
    for fragment in [
        "`required_approvals` is 3, but only 1 approver user(s) and no group are listed",
        "unknown risk `severe`: expected one of low, medium, high, critical",
        "`approvers` only applies to rules with decision = \"hold\"",
        "`required_approvals` only applies to rules with decision = \"hold\"",
        "unknown user `nosuchuser`",
        "`approvers` lists nobody",
    ] {
        assert!(got.contains(fragment), "missing {fragment}\n{got}");
    }
    // Every error has a position.
    for line in got.lines() {
        let mut parts = line.splitn(4, ':');
        let (_, l, c) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        assert!(
            l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok(),
            "{line}"
        );
    }
}

#[test]
fn an_inherited_quorum_the_rules_own_approvers_cannot_reach_is_an_error() {
    let text = format!(
        "{HEAD}[escalation]\napprovers = {{ users = [\"root\", \"nobody\"] }}\n\
         required_approvals = 2\n\n\
         [[rule]]\nname = \"r\"\nop = \"exec\"\npath = \"/usr/bin/a\"\ndecision = \"hold\"\n\
         approvers = {{ users = [\"root\"] }}\n"
    );
    let got = errors(&text);
    assert!(
        got.starts_with("a.toml:15:13: this rule needs 2 approvals"),
        "{got}"
    );
}
