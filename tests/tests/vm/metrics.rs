//! The metrics listener of the real daemon: after a real denied exec and a real held exec
//! (denied by a reviewer with `jitctl deny`), `/metrics` counts them by agent, op, decision and
//! enforcement, shows the hold pending and then its time to decision on the socket channel, the
//! kernel's own counters, the audit commits, the policy generation and a rejected reload, and
//! every program attached; `/healthz` answers `ok`.
use std::time::Duration;

use jit_agent::approval::PendingView;
use jit_tests::{
    TestDir,
    daemon::{DaemonFiles, describe, eventually, jitctl},
    require_vm,
};

const CGROUP: &str = "jit-test-metrics/agent";
const LISTEN: &str = "127.0.0.1:19464";

fn get(path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://{LISTEN}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// The value of sample `name{labels}`, labels in any order (a small reader of the text
/// format, independent of the crate that writes it).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let (metric, rest) = key.split_once('{').unwrap_or((key, "}"));
            if metric != name {
                return None;
            }
            let mut have: Vec<(String, String)> = rest
                .trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            let mut want: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            have.sort();
            want.sort();
            (have == want).then(|| value.parse().ok())?
        })
}

fn scrape() -> String {
    let (status, text) = get("/metrics");
    assert_eq!(status, 200, "{text}");
    text
}

fn held(files: &DaemonFiles, path: &str) -> Option<PendingView> {
    let out = jitctl(files, &["pending", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let views: Vec<PendingView> = serde_json::from_slice(&out.stdout).expect("pending JSON");
    views.into_iter().find(|v| v.path == path)
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: each scrape checks what the steps before it did"
)]
fn metrics_count_a_deny_and_a_hold_of_the_real_daemon() {
    require_vm();
    let work = TestDir::new("metrics");
    let denied = work.install_true("denied");
    let heldtool = work.install_true("held");
    let mut files = DaemonFiles::new("metrics");
    files
        .cgroups
        .extend([CGROUP.to_owned(), "jit-test-metrics".to_owned()]);
    files.enable_metrics(LISTEN);
    files.write_policy(
        "metrics-agent.toml",
        &format!(
            r#"[agent]
name = "metrics-agent"
cgroups = ["{CGROUP}"]
default = "allow"

[escalation]
approvers = {{ users = ["root"] }}

[[rule]]
name = "denied tool"
op = "exec"
path = "{denied}"
decision = "deny"

[[rule]]
name = "held tool"
op = "exec"
path = "{heldtool}"
decision = "hold"
"#
        ),
    );
    let daemon = files.start();
    let (status, body) = get("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"), "{}", daemon.log());
    let text = scrape();
    let expected = jit_agent::bpf::programs_for_this_kernel().expect("kernel BTF");
    assert_eq!(
        sample(&text, "jit_programs_expected", &[]),
        Some(f64::from(u32::try_from(expected.len()).unwrap()))
    );
    for (program, hook) in &expected {
        assert_eq!(
            sample(
                &text,
                "jit_program_attached",
                &[("program", program), ("hook", hook)]
            ),
            Some(1.0),
            "{program} attached"
        );
    }
    assert_eq!(sample(&text, "jit_policy_generation", &[]), Some(1.0));
    assert_eq!(
        sample(&text, "jit_policy_last_reload_success", &[]),
        Some(1.0)
    );
    assert_eq!(sample(&text, "jit_holds_pending", &[]), Some(0.0));
    let denies_before = sample(&text, "jit_kernel_decisions_total", &[("decision", "deny")])
        .expect("kernel deny counter");

    // A real denied exec.
    let out = jitctl(&files, &["run", "--agent", "metrics-agent", "--", &denied]);
    assert_eq!(out.status.code(), Some(126), "{}", describe(&out));
    let decisions = |text: &str, decision: &str| {
        sample(
            text,
            "jit_decisions_total",
            &[
                ("agent", "metrics-agent"),
                ("op", "exec"),
                ("decision", decision),
                ("enforcement", decision),
            ],
        )
    };
    assert!(
        eventually(Duration::from_secs(20), || decisions(&scrape(), "deny")
            == Some(1.0)),
        "the deny is counted:\n{}",
        scrape()
    );
    let text = scrape();
    assert!(
        sample(&text, "jit_kernel_decisions_total", &[("decision", "deny")]).unwrap()
            >= denies_before + 1.0,
        "the kernel's deny counter grew"
    );
    assert!(sample(&text, "jit_kernel_events_emitted_total", &[]).unwrap() >= 1.0);
    assert_eq!(
        sample(&text, "jit_kernel_events_dropped_total", &[]),
        Some(0.0)
    );
    assert!(sample(&text, "jit_audit_records_total", &[]).unwrap() >= 3.0);
    assert!(sample(&text, "jit_audit_write_seconds_count", &[]).unwrap() >= 1.0);
    assert_eq!(
        sample(&text, "jit_audit_fsync_errors_total", &[]),
        Some(0.0)
    );

    // A real held exec, pending, then denied by a reviewer on the control socket.
    std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            jitctl(
                &files,
                &["run", "--agent", "metrics-agent", "--", &heldtool],
            )
        });
        let mut view = None;
        assert!(
            eventually(Duration::from_mins(1), || {
                view = held(&files, &heldtool);
                view.is_some()
            }),
            "no hold of {heldtool}"
        );
        let view = view.expect("held");
        assert!(
            eventually(Duration::from_secs(5), || sample(
                &scrape(),
                "jit_holds_pending",
                &[]
            ) == Some(1.0)),
            "one hold pending:\n{}",
            scrape()
        );
        assert_eq!(decisions(&scrape(), "hold"), Some(1.0));
        std::thread::sleep(Duration::from_millis(1100));
        let out = jitctl(&files, &["deny", &view.id.to_string()]);
        assert!(out.status.success(), "{}", describe(&out));
        let out = run.join().expect("jitctl run");
        assert_eq!(out.status.code(), Some(126), "denied: {}", describe(&out));
    });
    let text = scrape();
    assert_eq!(sample(&text, "jit_holds_pending", &[]), Some(0.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "jit_hold_time_to_decision_seconds_count",
            &[("channel", "socket"), ("outcome", "deny")]
        ),
        Some(1.0),
        "{text}"
    );
    let waited = sample(
        &text,
        "jit_hold_time_to_decision_seconds_sum",
        &[("channel", "socket"), ("outcome", "deny")],
    )
    .unwrap();
    let held_for = sample(&text, "jit_hold_held_seconds_sum", &[("outcome", "deny")]).unwrap();
    assert!(waited >= 1.0, "the reviewer waited over a second: {waited}");
    assert!(held_for >= waited, "held {held_for} >= shown {waited}");

    // A broken policy edit: rejected, counted, the generation kept.
    files.write_policy("broken.toml", "[agent\nname = ");
    let out = jitctl(&files, &["policy", "reload"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let text = scrape();
    assert_eq!(
        sample(&text, "jit_policy_last_reload_success", &[]),
        Some(0.0)
    );
    assert!(sample(&text, "jit_policy_reloads_total", &[("result", "rejected")]).unwrap() >= 1.0);
    assert_eq!(sample(&text, "jit_policy_generation", &[]), Some(1.0));
    drop(daemon);
}
