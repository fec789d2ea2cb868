//! The audit sink: the one writer of the audit log, on its own OS thread
//! (docs/ARCHITECTURE.md, I4 and I5).
//!
//! Components send records and go on; the sink writes every record waiting in its queue, then
//! commits the batch with one `fdatasync` (under `fsync = "always"`: group commit), and only
//! then answers those who asked to know when their record is durable and passes the lines to
//! live followers (the HTTP stream). A hold is shown to reviewers only after that answer (I5),
//! and no `fsync` ever runs on the async runtime.
use std::{
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::Duration,
};

use jiff::Timestamp;
use tokio::sync::{broadcast, oneshot};
use tracing::error;

use crate::{
    audit::{AuditWriter, FsyncPolicy, RecordBody},
    metrics::Metrics,
};

/// Most records written before one commit: bounds how long the first record of a flood waits.
const MAX_BATCH: usize = 4096;

#[expect(
    clippy::large_enum_variant,
    reason = "appends are nearly every message; boxing each would cost an allocation per record"
)]
enum Message {
    Append {
        body: RecordBody,
        time: Timestamp,
        durable: Option<oneshot::Sender<()>>,
    },
    /// Sync now, whatever the policy (shutdown), then answer.
    Flush(oneshot::Sender<()>),
}

/// A handle on the audit sink; clones share it.
#[derive(Clone)]
pub struct AuditSink {
    queue: mpsc::Sender<Message>,
    lines: broadcast::Sender<String>,
}

impl AuditSink {
    /// Moves `writer` onto a thread of its own. The thread ends when the last handle is dropped,
    /// after committing what it has.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(writer: AuditWriter, metrics: Metrics) -> std::io::Result<Self> {
        let (queue, receiver) = mpsc::channel();
        let lines = broadcast::channel(1024).0;
        let followers = lines.clone();
        thread::Builder::new()
            .name("jit-audit".to_owned())
            .spawn(move || run(writer, &receiver, &followers, &metrics))?;
        Ok(Self { queue, lines })
    }

    fn send(&self, body: RecordBody, durable: Option<oneshot::Sender<()>>) {
        let message = Message::Append {
            body,
            time: Timestamp::now(),
            durable,
        };
        if self.queue.send(message).is_err() {
            error!("the audit sink has stopped; a record was not written");
        }
    }

    /// Appends a record; returns at once.
    pub fn record(&self, body: RecordBody) {
        self.send(body, None);
    }

    /// Appends a record and returns once it is durable as the fsync policy says (on disk under
    /// `always`), or could not be written (the failure is logged by the sink).
    pub async fn record_durable(&self, body: RecordBody) {
        let _ = self.durable(body).await;
    }

    /// Appends a record; the receiver resolves when it is durable (see
    /// [`AuditSink::record_durable`]).
    pub fn durable(&self, body: RecordBody) -> oneshot::Receiver<()> {
        let (done, receiver) = oneshot::channel();
        self.send(body, Some(done));
        receiver
    }

    /// Syncs everything written so far, whatever the policy.
    pub async fn flush(&self) {
        let (done, receiver) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = receiver.await;
        }
    }

    /// Every audit line from now on, as written, once it is committed.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.lines.subscribe()
    }
}

fn run(
    mut writer: AuditWriter,
    receiver: &mpsc::Receiver<Message>,
    followers: &broadcast::Sender<String>,
    metrics: &Metrics,
) {
    let interval = match writer.options().fsync {
        FsyncPolicy::Interval(every) => Some(every),
        FsyncPolicy::Always | FsyncPolicy::Never => None,
    };
    let mut batch = Vec::new();
    loop {
        let first = match interval {
            Some(every) => match receiver.recv_timeout(every.max(Duration::from_millis(10))) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(err) = writer.sync_if_due() {
                        metrics.audit_sync_failed();
                        error!(error = %err, "syncing the audit log failed");
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match receiver.recv() {
                Ok(message) => message,
                Err(_) => break,
            },
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let mut written = Vec::new();
        let mut write_errors = 0u64;
        let mut commit_failed = false;
        let mut waiting = Vec::new();
        for message in batch.drain(..) {
            match message {
                Message::Append {
                    body,
                    time,
                    durable,
                } => {
                    match writer.append_unsynced(body, time) {
                        Ok(appended) => written.push(appended.line),
                        Err(err) => {
                            write_errors += 1;
                            error!(error = %err, "writing the audit log failed");
                        }
                    }
                    waiting.extend(durable);
                }
                Message::Flush(done) => {
                    if let Err(err) = writer.sync() {
                        commit_failed = true;
                        error!(error = %err, "syncing the audit log failed");
                    }
                    waiting.push(done);
                }
            }
        }
        if let Err(err) = writer.commit() {
            commit_failed = true;
            error!(error = %err, "syncing the audit log failed");
        }
        metrics.audit_batch(
            written.len() as u64,
            write_errors,
            commit_failed,
            started.elapsed(),
        );
        for done in waiting {
            let _ = done.send(());
        }
        for line in written {
            // Nobody listening is fine.
            let _ = followers.send(line);
        }
    }
    if let Err(err) = writer.sync() {
        metrics.audit_sync_failed();
        error!(error = %err, "syncing the audit log at exit failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        audit::{AuditOptions, record::DaemonStopped},
        metrics::{Metrics, tests::sample},
    };

    /// The real sink, the real writer, a real file: the metrics count what was committed.
    #[tokio::test(flavor = "current_thread")]
    async fn metrics_count_committed_records_and_time_the_commits() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AuditWriter::open(AuditOptions::new(dir.path().join("audit.jsonl"))).unwrap();
        let metrics = Metrics::new();
        let sink = AuditSink::spawn(writer, metrics.clone()).unwrap();
        for _ in 0..5 {
            sink.record_durable(RecordBody::DaemonStopped(DaemonStopped {
                reason: "test".to_owned(),
            }))
            .await;
        }
        let text = metrics.encode();
        assert_eq!(sample(&text, "jit_audit_records_total", &[]), Some(5.0));
        assert_eq!(
            sample(&text, "jit_audit_fsync_errors_total", &[]),
            Some(0.0)
        );
        let commits = sample(&text, "jit_audit_write_seconds_count", &[]).unwrap();
        assert!((1.0..=5.0).contains(&commits), "{commits} commits");
        assert!(sample(&text, "jit_audit_write_seconds_sum", &[]).unwrap() > 0.0);
        let lines = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 5);
    }
}
