//! One line per record for humans (`jitctl audit` without `--json`).
//!
//! Paths, agent names, reasons and the like come from agents and reviewers: control characters,
//! escape sequences and invalid UTF-8 in them are shown escaped ([`crate::text`]), so a crafted
//! file name cannot forge or hide table lines.

use std::fmt::Write as _;

use super::record::{DenialsSummarized, HeldAction, KernelRecord, Record, RecordBody};

const TIME_W: usize = 20;
const TYPE_W: usize = 15;
const AGENT_W: usize = 16;
const OP_W: usize = 8;
const DECISION_W: usize = 13;
const PID_W: usize = 7;

/// Untrusted text as it may be shown: [`crate::text::escape`].
fn clean(s: &str) -> String {
    crate::text::escape(s).into_owned()
}

fn row(
    time: &str,
    kind: &str,
    agent: &str,
    op: &str,
    decision: &str,
    pid: &str,
    detail: &str,
) -> String {
    let mut s = String::with_capacity(128);
    let _ = write!(
        s,
        "{time:<TIME_W$} {kind:<TYPE_W$} {agent:<AGENT_W$} {op:<OP_W$} {decision:<DECISION_W$} \
         {pid:>PID_W$} {detail}"
    );
    s.truncate(s.trim_end().len());
    s
}

fn kernel_row(time: &str, k: &KernelRecord) -> String {
    let decision = if k.decision == k.enforced {
        k.decision.clone()
    } else {
        format!("{}->{}", k.decision, k.enforced)
    };
    let agent = k
        .agent
        .clone()
        .unwrap_or_else(|| format!("#{}", k.agent_id));
    // The exact bytes when the path is not UTF-8 (`path` then has replacement characters).
    let mut detail = match k.path_hex.as_deref().and_then(crate::text::from_hex) {
        Some(bytes) => crate::text::escape_bytes(&bytes).into_owned(),
        None => clean(&k.path),
    };
    if k.truncated {
        detail.push_str(" (path truncated)");
    }
    if k.unresolved {
        detail.push_str(" (path unresolved)");
    }
    match (&k.rule, k.rule_id) {
        (_, 0) => detail.push_str("  rule: default"),
        (Some(name), _) => {
            let _ = write!(detail, "  rule: {}", clean(name));
        }
        (None, id) => {
            let _ = write!(detail, "  rule: #{id}");
        }
    }
    if let Some(id) = k.request_id {
        let _ = write!(detail, "  request {id}");
    }
    row(
        time,
        &clean(&k.kind),
        &clean(&agent),
        &clean(&k.op),
        &clean(&decision),
        &k.pid.to_string(),
        &detail,
    )
}

/// The column titles matching [`format_row`].
#[must_use]
pub fn table_header() -> String {
    row(
        "TIME",
        "TYPE",
        "AGENT",
        "OP",
        "DECISION",
        "PID",
        "PATH / SUMMARY",
    )
}

/// Agent, op, pid and a path prefix for the detail column, of a record about a held action.
fn action_columns(action: Option<&HeldAction>) -> (String, String, String, String) {
    match action {
        Some(h) => (
            clean(&h.agent),
            clean(&h.op),
            h.pid.to_string(),
            format!("{}: ", clean(&h.path)),
        ),
        None => (
            "-".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            String::new(),
        ),
    }
}

/// The row of a `justification` record: the agent's text, escaped, marked as its own.
fn justification_row(time: &str, j: &super::record::JustificationRecord) -> String {
    let (agent, op, pid, what) = action_columns(j.action.as_ref());
    let detail = format!(
        "{what}request {}: agent-provided (pid {}): {}",
        j.request_id,
        j.pid,
        crate::text::escaped_once(&j.text)
    );
    row(time, "justification", &agent, &op, "-", &pid, &detail)
}

/// The row of a `denials_summarized` record: denials the kernel counted instead of reporting.
fn denials_row(time: &str, d: &DenialsSummarized) -> String {
    let dash = "-";
    let by = match (&d.rule, d.rule_id) {
        (Some(rule), _) => format!("rule {}", clean(rule)),
        (None, Some(0)) => "the default".to_owned(),
        (None, Some(id)) => format!("rule #{id}"),
        (None, None) => "any rule".to_owned(),
    };
    let detail = format!(
        "{} denial(s) by {by} without records of their own (the ring buffer was full), \
         {} in total",
        d.count, d.total
    );
    let agent = d.agent.as_deref().map(clean);
    let pid = d.last_tgid.map(|p| p.to_string());
    row(
        time,
        "denials_summarized",
        agent.as_deref().unwrap_or(dash),
        d.op.as_deref().unwrap_or(dash),
        "deny",
        pid.as_deref().unwrap_or(dash),
        &detail,
    )
}

/// One table line for `record`: time (UTC, seconds), type (for kernel events their kind),
/// agent, op, decision (`policy->enforced` when shadow mode made them differ), pid, and the
/// path or a summary.
#[must_use]
pub fn format_row(record: &Record) -> String {
    let time = format!("{:.0}", record.time);
    let dash = "-";
    match &record.body {
        RecordBody::Kernel(k) => kernel_row(&time, k),
        RecordBody::PolicyLoaded(p) => {
            let detail = format!("generation {}: {} file(s)", p.generation, p.files.len());
            row(&time, "policy_loaded", dash, dash, dash, dash, &detail)
        }
        RecordBody::PolicyRejected(p) => {
            let mut detail = format!("{} error(s)", p.errors.len());
            if let Some(first) = p.errors.first() {
                let _ = write!(detail, ": {}", clean(first));
            }
            row(&time, "policy_rejected", dash, dash, dash, dash, &detail)
        }
        RecordBody::DaemonStarted(d) => {
            let detail = format!("jit-agent {}", clean(&d.version));
            row(
                &time,
                "daemon_started",
                dash,
                dash,
                dash,
                &d.pid.to_string(),
                &detail,
            )
        }
        RecordBody::DaemonStopped(d) => row(
            &time,
            "daemon_stopped",
            dash,
            dash,
            dash,
            dash,
            &clean(&d.reason),
        ),
        RecordBody::EventsDropped(d) => {
            let detail = format!("{} event(s) dropped, {} in total", d.count, d.total);
            row(&time, "events_dropped", dash, dash, dash, dash, &detail)
        }
        RecordBody::AuditRefused(d) => {
            let detail = format!(
                "{} audited action(s) refused (no room for their records), {} in total",
                d.count, d.total
            );
            row(&time, "audit_refused", dash, dash, dash, dash, &detail)
        }
        RecordBody::DenialsSummarized(d) => denials_row(&time, d),
        RecordBody::Approval(a) => {
            let (agent, op, pid, what) = action_columns(a.action.as_ref());
            let mut detail = format!(
                "{what}request {} by {}, scope {}",
                a.request_id,
                clean(&a.reviewer),
                clean(&a.scope)
            );
            if a.approvals_missing > 0 {
                let _ = write!(
                    detail,
                    " (recorded; {} more approval(s) needed)",
                    a.approvals_missing
                );
            }
            if let Some(reason) = &a.reason {
                let _ = write!(detail, ": {}", clean(reason));
            }
            row(
                &time,
                "approval",
                &agent,
                &op,
                a.decision.name(),
                &pid,
                &detail,
            )
        }
        RecordBody::HoldEnded(h) => {
            let (agent, op, pid, what) = action_columns(h.action.as_ref());
            let detail = format!("{what}request {}: {}", h.request_id, clean(&h.reason));
            row(&time, "hold_ended", &agent, &op, dash, &pid, &detail)
        }
        RecordBody::Justification(j) => justification_row(&time, j),
        RecordBody::AuditCut(c) => {
            let detail = format!(
                "the log ended at seq {} but its checkpoint says seq {}: records cut off",
                c.log_seq, c.checkpoint_seq
            );
            row(&time, "audit_cut", dash, dash, dash, dash, &detail)
        }
        RecordBody::AuditRecovered(r) => {
            let detail = format!(
                "cut {} torn byte(s) at offset {} of {}",
                r.bytes,
                r.offset,
                clean(&r.file)
            );
            row(&time, "audit_recovered", dash, dash, dash, dash, &detail)
        }
    }
}

/// [`format_row`] for a raw log line; a line that is not a known record still gets a row
/// (an audit viewer must not hide what it cannot parse).
#[must_use]
pub fn format_line(line: &[u8]) -> String {
    match Record::from_line(line) {
        Ok(record) => format_row(&record),
        Err(e) => format!(
            "unreadable record ({e}): {}",
            crate::text::escape_bytes(line)
        ),
    }
}
