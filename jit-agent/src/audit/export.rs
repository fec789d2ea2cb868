//! The audit stream in the formats of the system log: journald's native protocol and syslog
//! (RFC 5424). Field names are stable (docs/log-export.md, which also maps them to OCSF); the
//! full record is always included, so nothing a SIEM needs is lost to the mapping.
//!
//! Pure formatting: the daemon's exporter (`daemon/export.rs`) sends what these return.
use std::fmt::Write as _;

use super::record::{HeldAction, Record, RecordBody};

/// The structured-data id of the RFC 5424 element. 32473 is the private enterprise number
/// reserved for documentation (RFC 5612): jit has none of its own.
pub const SD_ID: &str = "jit@32473";

/// The syslog facility: `authpriv` (10), security messages that may be sensitive.
pub const FACILITY_AUTHPRIV: u8 = 10;

/// Syslog severities used.
mod severity {
    pub const WARNING: u8 = 4;
    pub const NOTICE: u8 = 5;
    pub const INFO: u8 = 6;
}

/// The stable fields of a record, in the order written: `(NAME, value)`, names in upper case
/// as journald wants them (syslog uses them in lower case).
#[must_use]
pub fn fields(record: &Record) -> Vec<(&'static str, String)> {
    let mut f: Vec<(&'static str, String)> = vec![
        ("JIT_SEQ", record.seq.to_string()),
        ("JIT_TYPE", type_name(&record.body).to_owned()),
    ];
    let action = |a: Option<&HeldAction>, f: &mut Vec<(&'static str, String)>| {
        if let Some(a) = a {
            f.push(("JIT_AGENT", a.agent.clone()));
            f.push(("JIT_OP", a.op.clone()));
            f.push(("JIT_PATH", a.path.clone()));
            f.push(("JIT_PID", a.pid.to_string()));
        }
    };
    match &record.body {
        RecordBody::Kernel(k) => {
            f.push(("JIT_KIND", k.kind.clone()));
            if let Some(agent) = &k.agent {
                f.push(("JIT_AGENT", agent.clone()));
            }
            f.push(("JIT_OP", k.op.clone()));
            f.push(("JIT_PATH", k.path.clone()));
            f.push(("JIT_DECISION", k.decision.clone()));
            f.push(("JIT_ENFORCED", k.enforced.clone()));
            if let Some(rule) = &k.rule {
                f.push(("JIT_RULE", rule.clone()));
            }
            f.push(("JIT_PID", k.tgid.to_string()));
            f.push(("JIT_UID", k.uid.to_string()));
            if let Some(id) = k.request_id {
                f.push(("JIT_REQUEST_ID", id.to_string()));
            }
        }
        RecordBody::Approval(a) => {
            action(a.action.as_ref(), &mut f);
            f.push(("JIT_DECISION", a.decision.name().to_owned()));
            f.push(("JIT_REVIEWER", a.reviewer.clone()));
            f.push(("JIT_SCOPE", a.scope.clone()));
            f.push(("JIT_REQUEST_ID", a.request_id.to_string()));
        }
        RecordBody::HoldEnded(h) => {
            action(h.action.as_ref(), &mut f);
            f.push(("JIT_REQUEST_ID", h.request_id.to_string()));
        }
        RecordBody::Justification(j) => {
            action(j.action.as_ref(), &mut f);
            f.push(("JIT_REQUEST_ID", j.request_id.to_string()));
        }
        RecordBody::PolicyLoaded(p) => f.push(("JIT_POLICY_GENERATION", p.generation.to_string())),
        _ => {}
    }
    f
}

/// The record's `type`, as in the log.
fn type_name(body: &RecordBody) -> &'static str {
    match body {
        RecordBody::Kernel(_) => "kernel",
        RecordBody::PolicyLoaded(_) => "policy_loaded",
        RecordBody::PolicyRejected(_) => "policy_rejected",
        RecordBody::DaemonStarted(_) => "daemon_started",
        RecordBody::DaemonStopped(_) => "daemon_stopped",
        RecordBody::EventsDropped(_) => "events_dropped",
        RecordBody::AuditRefused(_) => "audit_refused",
        RecordBody::DenialsSummarized(_) => "denials_summarized",
        RecordBody::Approval(_) => "approval",
        RecordBody::HoldEnded(_) => "hold_ended",
        RecordBody::Justification(_) => "justification",
        RecordBody::AuditCut(_) => "audit_cut",
        RecordBody::AuditRecovered(_) => "audit_recovered",
    }
}

/// The syslog severity of a record: denials, kills, rejected policies and lost records are
/// warnings; holds and reviewers' answers notices; the rest informational.
#[must_use]
pub fn severity(record: &Record) -> u8 {
    match &record.body {
        RecordBody::Kernel(k) if k.enforced == "deny" || k.decision == "deny" => severity::WARNING,
        RecordBody::Kernel(k) if k.kind == "hold" => severity::NOTICE,
        RecordBody::Approval(a) if a.decision.name() == "kill" => severity::WARNING,
        RecordBody::Approval(_) | RecordBody::HoldEnded(_) | RecordBody::Justification(_) => {
            severity::NOTICE
        }
        RecordBody::PolicyRejected(_)
        | RecordBody::EventsDropped(_)
        | RecordBody::AuditRefused(_)
        | RecordBody::DenialsSummarized(_)
        | RecordBody::AuditCut(_)
        | RecordBody::AuditRecovered(_) => severity::WARNING,
        _ => severity::INFO,
    }
}

/// One journald native-protocol datagram (systemd's `JOURNAL_NATIVE_PROTOCOL`): the stable
/// fields, `MESSAGE` (the audit table's row), `PRIORITY`, `SYSLOG_IDENTIFIER`, and the record
/// line as `JIT_RECORD`. Values with a newline use the protocol's length-prefixed form.
#[must_use]
pub fn journald_datagram(record: &Record, line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() * 2 + 256);
    let mut field = |name: &str, value: &[u8]| {
        out.extend_from_slice(name.as_bytes());
        if value.contains(&b'\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value);
        } else {
            out.push(b'=');
            out.extend_from_slice(value);
        }
        out.push(b'\n');
    };
    field(
        "MESSAGE",
        super::table::format_row(record).trim_end().as_bytes(),
    );
    field("PRIORITY", severity(record).to_string().as_bytes());
    field("SYSLOG_IDENTIFIER", b"jit-agent");
    field("SYSLOG_FACILITY", FACILITY_AUTHPRIV.to_string().as_bytes());
    for (name, value) in fields(record) {
        field(name, value.as_bytes());
    }
    field("JIT_RECORD", line);
    out
}

/// RFC 5424 PARAM-VALUE escaping: `"`, `\` and `]` get a backslash.
fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One RFC 5424 message: `<PRI>1 TIME HOST jit-agent PID TYPE [jit@32473 seq="..." ...]` and
/// the record line as MSG (UTF-8 with a BOM, as RFC 5424 says for UTF-8 text).
#[must_use]
pub fn syslog_message(record: &Record, line: &[u8], hostname: &str, pid: u32) -> Vec<u8> {
    let pri = u16::from(FACILITY_AUTHPRIV) * 8 + u16::from(severity(record));
    let host = if hostname.is_empty() { "-" } else { hostname };
    let mut head = format!(
        "<{pri}>1 {:.6} {host} jit-agent {pid} {} [{SD_ID}",
        record.time,
        type_name(&record.body)
    );
    for (name, value) in fields(record) {
        let name = name.trim_start_matches("JIT_").to_ascii_lowercase();
        let _ = write!(head, " {name}=\"{}\"", sd_escape(&value));
    }
    head.push_str("] \u{feff}");
    let mut out = head.into_bytes();
    out.extend_from_slice(line);
    out
}

/// Where syslog messages go: `unix:PATH` (a datagram socket such as `/dev/log`) or
/// `udp:HOST:PORT` (an address, e.g. `udp:127.0.0.1:514` or `udp:[::1]:514`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyslogTarget {
    Unix(std::path::PathBuf),
    Udp(std::net::SocketAddr),
}

impl std::str::FromStr for SyslogTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "syslog target {s:?}: the socket path must be absolute"
                ));
            }
            Ok(Self::Unix(path.into()))
        } else if let Some(addr) = s.strip_prefix("udp:") {
            addr.parse()
                .map(Self::Udp)
                .map_err(|e| format!("syslog target {s:?}: {e} (expected udp:IP:PORT)"))
        } else {
            Err(format!(
                "syslog target {s:?}: expected unix:/dev/log or udp:IP:PORT"
            ))
        }
    }
}

impl std::fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Udp(addr) => write!(f, "udp:{addr}"),
        }
    }
}
