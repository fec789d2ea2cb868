use super::*;

/// The value of the sample `name{labels}` in `text`, parsed as Prometheus reads it (every line
/// `NAME{LABELS} VALUE` or `NAME VALUE`; `# HELP`/`# TYPE` lines skipped). `labels` must list
/// every label of the sample, in the order written.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted = if labels.is_empty() {
        name.to_owned()
    } else {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        format!("{name}{{{}}}", labels.join(","))
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == wanted).then(|| value.parse().ok())?
        })
}

/// Every line is a comment or `NAME[{LABELS}] VALUE` with a float value, and every metric has
/// its TYPE: what a Prometheus server needs to ingest it.
fn assert_well_formed(text: &str) {
    assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
        let name = key.split('{').next().unwrap();
        assert!(
            typed.iter().any(|t| name == t
                || name
                    .strip_prefix(t.as_str())
                    .is_some_and(
                        |s| ["_total", "_bucket", "_sum", "_count", "_created"].contains(&s)
                    )),
            "{name} has no TYPE"
        );
    }
}

fn record(agent: &str, op: &str, decision: &str, enforced: &str, kind: &str) -> KernelRecord {
    let line = serde_json::json!({
        "kind": kind, "op": op, "path": "/x", "decision": decision, "enforced": enforced,
        "rule_id": 0, "rule": null, "agent_id": 1, "agent": agent, "pid": 1, "tgid": 1,
        "ppid": 0, "uid": 0, "gid": 0, "cgroup_id": 1, "request_id": null, "ktime_ns": 1,
        "dev": 0, "ino": 0, "truncated": false, "unresolved": false,
    });
    serde_json::from_value(line).unwrap()
}

#[test]
fn fresh_metrics_are_well_formed_and_zero() {
    let text = Metrics::new().encode();
    assert_well_formed(&text);
    assert_eq!(sample(&text, "jit_holds_pending", &[]), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "jit_webhook_deliveries_total",
            &[("result", "failed")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "jit_kernel_decisions_total", &[("decision", "deny")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "jit_audit_write_seconds_count", &[]),
        Some(0.0)
    );
}

#[test]
fn decisions_by_agent_op_decision_and_enforcement() {
    let m = Metrics::new();
    m.kernel_record(&record("build", "exec", "deny", "deny", "decision"));
    m.kernel_record(&record("build", "exec", "deny", "deny", "decision"));
    m.kernel_record(&record("build", "write", "deny", "allow", "decision"));
    m.kernel_record(&record("ci", "exec", "hold", "hold", "hold"));
    // Not decisions: not counted.
    m.kernel_record(&record("ci", "exec", "allow", "allow", "grant_used"));
    let text = m.encode();
    assert_well_formed(&text);
    let decisions = |agent, op, decision, enforcement| {
        sample(
            &text,
            "jit_decisions_total",
            &[
                ("agent", agent),
                ("op", op),
                ("decision", decision),
                ("enforcement", enforcement),
            ],
        )
    };
    assert_eq!(decisions("build", "exec", "deny", "deny"), Some(2.0));
    assert_eq!(decisions("build", "write", "deny", "allow"), Some(1.0));
    assert_eq!(decisions("ci", "exec", "hold", "hold"), Some(1.0));
    assert_eq!(decisions("ci", "exec", "allow", "allow"), None);
}

#[test]
fn hold_times_by_channel() {
    let m = Metrics::new();
    m.holds_pending(3);
    m.hold_ended(
        "approve",
        Duration::from_secs(70),
        Some((channel::SOCKET, Duration::from_secs(69))),
    );
    m.hold_ended(
        "deny",
        Duration::from_secs(5),
        Some((channel::TIMEOUT, Duration::from_secs(5))),
    );
    m.hold_ended("exited", Duration::from_secs(3), None);
    let text = m.encode();
    assert_well_formed(&text);
    assert_eq!(sample(&text, "jit_holds_pending", &[]), Some(3.0));
    let by = |channel, outcome| {
        sample(
            &text,
            "jit_hold_time_to_decision_seconds_sum",
            &[("channel", channel), ("outcome", outcome)],
        )
    };
    assert_eq!(by("socket", "approve"), Some(69.0));
    assert_eq!(by("timeout", "deny"), Some(5.0));
    assert_eq!(by("http", "approve"), None);
    assert_eq!(
        sample(
            &text,
            "jit_hold_held_seconds_count",
            &[("outcome", "exited")]
        ),
        Some(1.0)
    );
    // 70 s is in the 128 s bucket, not the 64 s one.
    let bucket = |le| {
        sample(
            &text,
            "jit_hold_held_seconds_bucket",
            &[("le", le), ("outcome", "approve")],
        )
        .or_else(|| {
            sample(
                &text,
                "jit_hold_held_seconds_bucket",
                &[("outcome", "approve"), ("le", le)],
            )
        })
    };
    assert_eq!(bucket("64.0"), Some(0.0));
    assert_eq!(bucket("128.0"), Some(1.0));
}

#[test]
fn kernel_counters_are_followed_not_added() {
    let m = Metrics::new();
    let mut counters = [0u64; counter::COUNT as usize];
    counters[counter::DECISION_BASE as usize + Decision::Deny as usize] = 7;
    counters[counter::EVENTS_DROPPED as usize] = 2;
    counters[counter::EVENTS_EMITTED as usize] = 40;
    m.kernel_counters(&counters);
    // A second scrape of the same values changes nothing.
    m.kernel_counters(&counters);
    counters[counter::EVENTS_EMITTED as usize] = 41;
    m.kernel_counters(&counters);
    let text = m.encode();
    assert_eq!(
        sample(&text, "jit_kernel_decisions_total", &[("decision", "deny")]),
        Some(7.0)
    );
    assert_eq!(
        sample(&text, "jit_kernel_events_dropped_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "jit_kernel_events_emitted_total", &[]),
        Some(41.0)
    );
}

#[test]
fn policy_webhook_and_programs() {
    let m = Metrics::new();
    m.policy_reload(true);
    m.policy_reload(false);
    m.policy_generation(4);
    m.webhook(crate::approval::webhook::WebhookStats {
        delivered: 3,
        failed: 1,
        dropped: 0,
    });
    m.programs(&[
        ("exec", "bprm_check_security", true),
        ("open", "file_open", false),
    ]);
    let text = m.encode();
    assert_well_formed(&text);
    assert_eq!(sample(&text, "jit_policy_generation", &[]), Some(4.0));
    assert_eq!(
        sample(&text, "jit_policy_last_reload_success", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "jit_policy_reloads_total", &[("result", "rejected")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "jit_webhook_deliveries_total",
            &[("result", "delivered")]
        ),
        Some(3.0)
    );
    assert_eq!(sample(&text, "jit_programs_expected", &[]), Some(2.0));
    assert_eq!(
        sample(
            &text,
            "jit_program_attached",
            &[("program", "open"), ("hook", "file_open")]
        ),
        Some(0.0)
    );
}
