//! Human outputs show agent-made strings escaped: a review card (`jitctl pending`), the
//! webhook's text and the audit table cannot be forged with carriage returns, terminal escape
//! sequences, invisible characters or invalid UTF-8. JSON outputs stay exact.
use jit_agent::{
    approval::{PendingView, TargetFacts, review_card, webhook::summary},
    audit::to_hex,
};

/// A hold whose every agent-made string tries to rewrite the card.
fn forged() -> PendingView {
    PendingView {
        id: 7,
        agent: "coding-agent".into(),
        op: "exec".into(),
        path: "/tmp/\u{fffd}evil".into(),
        path_hex: Some(to_hex(b"/tmp/\xffevil")),
        rule: Some("deploys need a reviewer".into()),
        pid: 4242,
        tid: 4242,
        uid: 1000,
        user: Some("dev".into()),
        exe: Some("/usr/bin/bash\r    exe: /usr/bin/true".into()),
        argv: Some(vec!["bash".into(), "-c".into(), "x\x1b[2K\r".into()]),
        // What would run: rm; what a terminal would show without escaping: `runs: make test`.
        exec_argv: Some(vec![
            "/bin/rm".into(),
            "-rf".into(),
            "/srv\r    runs: make test\x1b[K".into(),
        ]),
        ends: None,
        exec_env: Some(vec!["LD_PRELOAD=/tmp/x.so\r    env: HOME=/root".into()]),
        cwd: Some("/srv/\u{202e}txt.sh".into()),
        parents: vec!["4200 bash\x1b]0;title\x07 /usr/bin/bash".into()],
        held_at: "2026-01-01T00:00:00Z".into(),
        age_secs: 3,
        timeout_in_secs: 297,
        on_timeout: "deny".into(),
        target: Some(TargetFacts {
            size: 1,
            uid: 0,
            owner: Some("root\u{9b}2J".into()),
            mode: "644".into(),
        }),
        approvals: vec!["alice\n".into()],
        required_approvals: 2,
        hint: Some("ask the release pipeline".into()),
        // Escaped by the daemon; the card escapes again whatever a view carries.
        justification: Some(jit_agent::approval::Justification {
            text: "trust me\r    approvals: 2/2 (root)\x1b[2K".into(),
            source: "agent".into(),
            pid: 4242,
            at: "2026-01-01T00:00:01Z".into(),
        }),
        risk: None,
        approvers: Vec::new(),
        acting: None,
        written_by: None,
    }
}

/// No byte that a terminal acts on, and no C1 or invisible character.
fn assert_inert(text: &str) {
    for (i, c) in text.char_indices() {
        assert!(
            !(c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}')),
            "{c:?} at {i} in {text:?}"
        );
    }
}

#[test]
fn review_card_shows_agent_strings_escaped() {
    let card = review_card(&forged());
    let lines: Vec<&str> = card.lines().collect();
    for line in &lines {
        assert_inert(line);
    }
    // One line per field, none forged.
    assert_eq!(lines.len(), 9, "{card}");
    assert_eq!(
        lines[0],
        "7  exec /tmp/\\xffevil [rule: deploys need a reviewer]  (agent coding-agent, pid 4242, \
         user dev, held 3s, deny in 4m57s)"
    );
    assert_eq!(
        lines[1],
        "    runs: /bin/rm -rf \"/srv\\r    runs: make test\\x1b[K\""
    );
    assert_eq!(
        lines[2],
        "    env: \"LD_PRELOAD=/tmp/x.so\\r    env: HOME=/root\""
    );
    assert_eq!(lines[3], "    called by: bash -c x\\x1b[2K\\r");
    assert_eq!(
        lines[4],
        "    exe: /usr/bin/bash\\r    exe: /usr/bin/true  cwd: /srv/\\u{202e}txt.sh"
    );
    assert_eq!(
        lines[5],
        "    target: 1 bytes, owner root\\u{9b}2J, mode 644"
    );
    assert_eq!(
        lines[6],
        "    parents: 4200 bash\\x1b]0;title\\x07 /usr/bin/bash"
    );
    assert_eq!(
        lines[7],
        "    agent-provided justification (unverified, pid 4242): \"trust me\\r    approvals: \
         2/2 (root)\\x1b[2K\""
    );
    assert_eq!(lines[8], "    approvals: 1/2 (alice\\n)");
}

#[test]
fn plain_cards_are_unchanged() {
    let mut view = forged();
    view.path = "/srv/demo/bin/deploy".into();
    view.path_hex = None;
    view.exe = Some("/bin/sh".into());
    view.argv = Some(vec!["/bin/sh".into(), "/srv/demo/agent.sh".into()]);
    view.exec_argv = Some(vec!["/srv/demo/bin/deploy".into(), "--version".into()]);
    view.exec_env = Some(vec!["HOME=/root".into(), "LANG=C.UTF-8".into()]);
    view.cwd = Some("/srv/demo".into());
    view.parents = vec![];
    view.target = None;
    view.required_approvals = 1;
    view.justification = None;
    assert_eq!(
        review_card(&view),
        "7  exec /srv/demo/bin/deploy [rule: deploys need a reviewer]  (agent coding-agent, pid \
         4242, user dev, held 3s, deny in 4m57s)\n    runs: /srv/demo/bin/deploy --version\n    \
         env: HOME=/root LANG=C.UTF-8\n    called by: /bin/sh /srv/demo/agent.sh\n    exe: /bin/sh  cwd: /srv/demo"
    );
}

#[test]
fn webhook_text_shows_agent_strings_escaped() {
    let text = summary(&forged());
    assert_inert(&text);
    assert!(
        text.contains("exec /tmp/\\xffevil as `/bin/rm -rf \"/srv\\r    runs: make test\\x1b[K\"`"),
        "{text}"
    );
    assert!(
        text.contains("exe /usr/bin/bash\\r    exe: /usr/bin/true,"),
        "{text}"
    );
    assert!(
        text.contains(
            "Agent-provided justification (unverified): \"trust me\\r    approvals: 2/2 \
             (root)\\x1b[2K\"."
        ),
        "{text}"
    );
}

#[test]
fn json_stays_exact() {
    let view = forged();
    let json = serde_json::to_string(&view).unwrap();
    assert!(
        json.contains(r#""/srv\r    runs: make test\u001b[K""#),
        "{json}"
    );
    let back: PendingView = serde_json::from_str(&json).unwrap();
    assert_eq!(back, view);
}

#[test]
fn risk_and_deciders_show_on_the_card_and_in_the_webhook_text() {
    let mut view = forged();
    view.path = "/usr/local/bin/deploy".into();
    view.path_hex = None;
    view.rule = Some("production deploy".into());
    view.risk = Some("critical".into());
    view.approvers = vec!["alice".into(), "group:sre".into()];
    view.required_approvals = 2;
    let card = review_card(&view);
    assert!(
        card.starts_with(
            "7  exec /usr/local/bin/deploy [rule: production deploy] [risk: critical]  (agent"
        ),
        "{card}"
    );
    assert!(
        card.contains("\n    decided by: alice, group:sre (2 approvals needed)"),
        "{card}"
    );
    let text = summary(&view);
    assert!(
        text.contains("rule \"production deploy\", risk critical, request 7)"),
        "{text}"
    );
    assert!(
        text.contains("Approvers: alice, group:sre (2 needed)."),
        "{text}"
    );
    // A risk or an approver name cannot carry markup or control characters into either.
    view.approvers = vec!["<!channel>\n".into()];
    assert!(review_card(&view).contains("decided by: <!channel>\\n"));
    assert!(summary(&view).contains("Approvers: &lt;!channel&gt;\\n"));
}

/// The card names the identity a held action is done as (what `user`/`group` rules decided
/// by and the approval is bound to) when it is not the process's real user.
#[test]
fn the_card_names_the_identity_the_action_is_done_as() {
    use jit_agent::approval::Acting;
    let mut view = forged();
    view.acting = Some(Acting {
        uid: 0,
        gid: 4,
        user: Some("root".into()),
        group: Some("adm".into()),
    });
    let card = review_card(&view);
    assert!(card.contains("user dev as root, group adm, held"), "{card}");
    view.acting = Some(Acting {
        uid: 1000,
        gid: 1000,
        user: Some("dev".into()),
        group: Some("dev".into()),
    });
    let card = review_card(&view);
    assert!(
        card.contains("user dev, held"),
        "the real user acts: {card}"
    );
}
