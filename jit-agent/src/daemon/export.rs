//! The log exporter (`[export]`): every committed audit record also goes to journald (native
//! protocol) and/or syslog (RFC 5424), formatted by [`crate::audit::export`].
//!
//! A follower of the audit sink like the HTTP stream: it gets the lines once they are
//! committed, in log order, on its own OS thread (sending a datagram can block: I10). It is
//! best effort by design: the hash-chained log stays the record of truth (I4). A slow or absent
//! receiver loses export datagrams, never audit records; losses are counted
//! (`jit_export_errors_total`, `jit_export_dropped_total`) and logged.
use std::{net::UdpSocket, os::unix::net::UnixDatagram, path::PathBuf, thread};

use tokio::sync::broadcast::{self, error::RecvError};
use tracing::{info, warn};

use crate::{
    audit::{
        Record,
        export::{SyslogTarget, journald_datagram, syslog_message},
    },
    metrics::Metrics,
};

/// Where the records go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportTargets {
    /// journald's native socket, normally `/run/systemd/journal/socket`.
    pub journald: Option<PathBuf>,
    pub syslog: Option<SyslogTarget>,
}

impl ExportTargets {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.journald.is_none() && self.syslog.is_none()
    }
}

/// One open destination.
enum Sender {
    Journald(UnixDatagram, PathBuf),
    SyslogUnix(UnixDatagram, PathBuf),
    SyslogUdp(UdpSocket),
}

impl Sender {
    const fn name(&self) -> &'static str {
        match self {
            Self::Journald(..) => "journald",
            Self::SyslogUnix(..) | Self::SyslogUdp(..) => "syslog",
        }
    }

    fn send(&self, record: &Record, line: &[u8], host: &str, pid: u32) -> std::io::Result<()> {
        match self {
            Self::Journald(socket, path) => socket
                .send_to(&journald_datagram(record, line), path)
                .map(drop),
            Self::SyslogUnix(socket, path) => socket
                .send_to(&syslog_message(record, line, host, pid), path)
                .map(drop),
            Self::SyslogUdp(socket) => socket
                .send(&syslog_message(record, line, host, pid))
                .map(drop),
        }
    }
}

fn open(targets: &ExportTargets) -> std::io::Result<Vec<Sender>> {
    let mut senders = Vec::new();
    if let Some(path) = &targets.journald {
        senders.push(Sender::Journald(UnixDatagram::unbound()?, path.clone()));
    }
    match &targets.syslog {
        Some(SyslogTarget::Unix(path)) => {
            senders.push(Sender::SyslogUnix(UnixDatagram::unbound()?, path.clone()));
        }
        Some(SyslogTarget::Udp(addr)) => {
            let any: std::net::SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(any)?;
            socket.connect(addr)?;
            senders.push(Sender::SyslogUdp(socket));
        }
        None => {}
    }
    Ok(senders)
}

/// Starts the exporter on its own thread, reading `lines` (the audit sink's followers).
///
/// # Errors
/// When a socket cannot be made or the thread cannot start.
pub fn spawn(
    targets: &ExportTargets,
    mut lines: broadcast::Receiver<String>,
    metrics: Metrics,
) -> std::io::Result<()> {
    let senders = open(targets)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    info!(?targets, "audit records are exported");
    thread::Builder::new()
        .name("jit-export".to_owned())
        .spawn(move || {
            // Whether each sender's last attempt failed: errors are logged when they start
            // and when they end, not per record.
            let mut failing = vec![false; senders.len()];
            loop {
                let line = match lines.blocking_recv() {
                    Ok(line) => line,
                    Err(RecvError::Lagged(n)) => {
                        warn!(records = n, "the exporter fell behind; records not exported");
                        metrics.export_dropped(n);
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                let Ok(record) = Record::from_line(line.as_bytes()) else {
                    continue;
                };
                for (sender, failing) in senders.iter().zip(failing.iter_mut()) {
                    match sender.send(&record, line.as_bytes(), &host, pid) {
                        Ok(()) => {
                            metrics.export_sent(sender.name());
                            if std::mem::take(failing) {
                                info!(target = sender.name(), "exporting records works again");
                            }
                        }
                        Err(err) => {
                            metrics.export_failed(sender.name());
                            if !std::mem::replace(failing, true) {
                                warn!(target = sender.name(), error = %err, "exporting a record failed (counted; the audit log has it)");
                            }
                        }
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        audit::{
            AuditOptions, AuditWriter, RecordBody,
            record::{DaemonStarted, PolicyRejected},
        },
        daemon::audit_sink::AuditSink,
        metrics::tests::sample,
    };

    /// The fields of one journald native datagram (`NAME=value` lines, or `NAME\n` + 64-bit
    /// little-endian length + bytes + `\n`), parsed as journald parses them.
    fn journald_fields(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut fields = Vec::new();
        while !data.is_empty() {
            let end = data.iter().position(|&b| b == b'\n').expect("a line");
            let line = &data[..end];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                fields.push((
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    line[eq + 1..].to_vec(),
                ));
                data = &data[end + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let len = u64::from_le_bytes(data[end + 1..end + 9].try_into().unwrap());
                let len = usize::try_from(len).unwrap();
                let value = data[end + 9..end + 9 + len].to_vec();
                assert_eq!(data[end + 9 + len], b'\n');
                fields.push((name, value));
                data = &data[end + 10 + len..];
            }
        }
        fields
    }

    fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    /// The real audit sink and writer, the exporter, and real Unix datagram sockets standing
    /// in for journald and syslog: every committed record arrives at both, in order, with the
    /// stable fields, and the record line itself.
    #[tokio::test(flavor = "current_thread")]
    async fn records_reach_journald_and_syslog_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let journal = UnixDatagram::bind(dir.path().join("journal.sock")).unwrap();
        let syslog = UnixDatagram::bind(dir.path().join("log.sock")).unwrap();
        for socket in [&journal, &syslog] {
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
        }
        let metrics = Metrics::new();
        let writer = AuditWriter::open(AuditOptions::new(dir.path().join("audit.jsonl"))).unwrap();
        let sink = AuditSink::spawn(writer, metrics.clone()).unwrap();
        let targets = ExportTargets {
            journald: Some(dir.path().join("journal.sock")),
            syslog: Some(SyslogTarget::Unix(dir.path().join("log.sock"))),
        };
        spawn(&targets, sink.subscribe(), metrics.clone()).unwrap();
        sink.record_durable(RecordBody::DaemonStarted(DaemonStarted {
            version: "1.0".to_owned(),
            pid: 7,
        }))
        .await;
        sink.record_durable(RecordBody::PolicyRejected(PolicyRejected {
            errors: vec!["a.toml:1:1: bad\nsecond line".to_owned()],
        }))
        .await;
        let lines: Vec<String> = std::fs::read_to_string(dir.path().join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(lines.len(), 2);

        let mut buf = vec![0u8; 65536];
        for (seq, line) in (1u64..).zip(&lines) {
            let n = journal.recv(&mut buf).expect("a journald datagram");
            let fields = journald_fields(&buf[..n]);
            assert_eq!(field(&fields, "SYSLOG_IDENTIFIER"), Some("jit-agent"));
            assert_eq!(field(&fields, "JIT_SEQ"), Some(seq.to_string().as_str()));
            assert_eq!(field(&fields, "JIT_RECORD"), Some(line.as_str()));
            let n = syslog.recv(&mut buf).expect("a syslog datagram");
            let message = std::str::from_utf8(&buf[..n]).unwrap();
            let (head, msg) = message
                .split_once("] \u{feff}")
                .expect("SD then BOM and MSG");
            assert_eq!(msg, line);
            assert!(
                head.contains(&format!("[jit@32473 seq=\"{seq}\"")),
                "{head}"
            );
            if seq == 1 {
                // authpriv (10) * 8 + informational (6)
                assert!(head.starts_with("<86>1 "), "{head}");
                assert!(head.contains(" jit-agent "), "{head}");
                assert!(head.contains(" daemon_started "), "{head}");
                assert_eq!(field(&fields, "PRIORITY"), Some("6"));
                assert_eq!(field(&fields, "JIT_TYPE"), Some("daemon_started"));
            } else {
                // A rejected policy is a warning: 10 * 8 + 4. Its record has a newline in a
                // string (escaped in JSON): the line itself has none.
                assert!(head.starts_with("<84>1 "), "{head}");
                assert_eq!(field(&fields, "PRIORITY"), Some("4"));
            }
        }
        // The count follows the send: give the exporter's thread a moment.
        let counted = |target: &str, metric: &str, want: f64| {
            (0..100).any(|_| {
                let have = sample(&metrics.encode(), metric, &[("target", target)]);
                have == Some(want) || {
                    std::thread::sleep(Duration::from_millis(20));
                    false
                }
            })
        };
        assert!(counted("syslog", "jit_export_sent_total", 2.0));
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "jit_export_sent_total", &[("target", "journald")]),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "jit_export_sent_total", &[("target", "syslog")]),
            Some(2.0)
        );

        // No receiver any more: counted, and the audit log still gets the record.
        drop(journal);
        sink.record_durable(RecordBody::DaemonStarted(DaemonStarted {
            version: "1.0".to_owned(),
            pid: 8,
        }))
        .await;
        assert!(syslog.recv(&mut buf).is_ok());
        assert_eq!(
            sample(
                &metrics.encode(),
                "jit_export_errors_total",
                &[("target", "journald")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn multiline_values_use_the_length_prefixed_form() {
        let line = br#"{"v":1,"seq":3,"time":"2026-12-01T05:00:00.000000Z","type":"daemon_stopped","reason":"x","prev":"00"}"#;
        let record = Record::from_line(line).unwrap();
        let data = crate::audit::export::journald_datagram(&record, b"a\nb");
        let fields = journald_fields(&data);
        assert_eq!(field(&fields, "JIT_RECORD"), Some("a\nb"));
        assert_eq!(field(&fields, "JIT_SEQ"), Some("3"));
    }
}
