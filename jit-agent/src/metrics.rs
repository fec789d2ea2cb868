//! The daemon's metrics, in the Prometheus text format (README, "Metrics"; names and labels in
//! docs/metrics.md).
//!
//! One [`Metrics`] is made at start and a clone handed to each component that counts something
//! (the event reader, the audit sink, the policy store, the hold manager); the metrics listener
//! (`daemon/metrics_http.rs`) encodes it. The metric values are atomics inside the registry:
//! recording never waits for another component and never blocks (docs/ARCHITECTURE.md, I10).
//! Values that are state rather than events (policy generation, programs attached, the kernel's
//! own counters, webhook deliveries) are read by the listener at scrape time from their owners.
use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use jit_common::{event::counter, policy::Decision};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::audit::record::KernelRecord;

/// The channels a hold is decided through, as the `channel` label says them.
pub mod channel {
    /// `jitctl` on the control socket.
    pub const SOCKET: &str = "socket";
    /// The HTTP approval API.
    pub const HTTP: &str = "http";
    /// The agent's `on_timeout` applied by the daemon.
    pub const TIMEOUT: &str = "timeout";
    /// The daemon, by the conditions of a rule (policies/README.md, "Conditions").
    pub const POLICY: &str = "policy";
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    agent: String,
    op: String,
    decision: String,
    enforcement: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KernelDecisionLabels {
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabels {
    program: String,
    hook: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds a reviewer may take: 1 s to about 9 hours.
fn review_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// Seconds an audit commit takes: 50 µs to about 1.6 s.
fn write_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

struct Inner {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    holds_pending: Gauge,
    held_seconds: HistogramFamily<OutcomeLabels>,
    decision_seconds: HistogramFamily<ChannelLabels>,
    kernel_decisions: Family<KernelDecisionLabels, Counter>,
    events_emitted: Counter,
    events_dropped: Counter,
    audit_refused: Counter,
    denials_summarized: Counter,
    marks_full: Counter,
    hook_errors: Counter,
    grants_used: Counter,
    cache_hits: Counter,
    audit_records: Counter,
    audit_write_errors: Counter,
    audit_fsync_errors: Counter,
    audit_commit_seconds: Histogram,
    webhook: Family<ResultLabels, Counter>,
    policy_generation: Gauge,
    policy_reload_ok: Gauge,
    policy_reloads: Family<ResultLabels, Counter>,
    policy_reload_time: Gauge<f64, AtomicU64>,
    programs_attached: Family<ProgramLabels, Gauge>,
    programs_expected: Gauge,
    export_sent: Family<TargetLabels, Counter>,
    export_errors: Family<TargetLabels, Counter>,
    export_dropped: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

/// The registry handle the components record into; clones share it.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Registers a metric and returns it (the registry keeps a clone sharing its value).
fn reg<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// Every metric, registered with value zero.
    #[must_use]
    #[expect(
        clippy::too_many_lines,
        reason = "one registration per metric with its help text, in the order of docs/metrics.md"
    )]
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("jit");
        let inner = Inner {
            decisions: reg(
                &mut r,
                "decisions",
                "Kernel decisions reported as events (deny, hold, audit; allows are not reported), \
                 by agent, operation, policy decision and what the kernel enforced",
                Family::default(),
            ),
            holds_pending: reg(
                &mut r,
                "holds_pending",
                "Held actions shown to reviewers and not yet decided",
                Gauge::default(),
            ),
            held_seconds: reg(
                &mut r,
                "hold_held_seconds",
                "How long held processes stayed stopped, from the kernel's hold to its answer, by \
                 outcome (approve, deny, kill, exited)",
                Family::new_with_constructor(review_buckets as fn() -> Histogram),
            ),
            decision_seconds: reg(
                &mut r,
                "hold_time_to_decision_seconds",
                "From a hold being shown to reviewers to its final decision, by channel (socket, \
                 http, timeout, policy) and outcome",
                Family::new_with_constructor(review_buckets as fn() -> Histogram),
            ),
            kernel_decisions: reg(
                &mut r,
                "kernel_decisions",
                "Decisions the kernel enforced (all of them, allows included), by decision; the \
                 kernel's own counters since the programs were loaded",
                Family::default(),
            ),
            events_emitted: reg(
                &mut r,
                "kernel_events_emitted",
                "Events the kernel wrote to its ring buffer",
                Counter::default(),
            ),
            events_dropped: reg(
                &mut r,
                "kernel_events_dropped",
                "Events the kernel's ring buffer had no room for (each drop is audited as \
                 events_dropped)",
                Counter::default(),
            ),
            audit_refused: reg(
                &mut r,
                "kernel_audit_refused",
                "Actions an audit rule allowed but refused with EPERM because their record had no \
                 room (audited as audit_refused)",
                Counter::default(),
            ),
            denials_summarized: reg(
                &mut r,
                "kernel_denials_summarized",
                "Denials enforced while the ring buffer had no room for their records: counted per \
                 agent, rule and op instead (audited as denials_summarized)",
                Counter::default(),
            ),
            marks_full: reg(
                &mut r,
                "kernel_marks_full",
                "Write opens by agents refused because the kernel's provenance map was full",
                Counter::default(),
            ),
            hook_errors: reg(
                &mut r,
                "kernel_hook_errors",
                "Hook errors in the kernel; each failed closed",
                Counter::default(),
            ),
            grants_used: reg(
                &mut r,
                "kernel_grants_used",
                "Actions that proceeded on an approval (an answer or a timed grant)",
                Counter::default(),
            ),
            cache_hits: reg(
                &mut r,
                "kernel_write_cache_hits",
                "Actions allowed by the write-decision cache (write opens; opens and unlinks of files just created)",
                Counter::default(),
            ),
            audit_records: reg(
                &mut r,
                "audit_records",
                "Records written to the audit log",
                Counter::default(),
            ),
            audit_write_errors: reg(
                &mut r,
                "audit_write_errors",
                "Records the audit log could not be written with",
                Counter::default(),
            ),
            audit_fsync_errors: reg(
                &mut r,
                "audit_fsync_errors",
                "Failed commits (fdatasync or checkpoint) of the audit log",
                Counter::default(),
            ),
            audit_commit_seconds: reg(
                &mut r,
                "audit_write_seconds",
                "Time to write and commit one batch of audit records (with fsync = \"always\", \
                 the fdatasync included): how long a hold waits before reviewers see it",
                write_buckets(),
            ),
            webhook: reg(
                &mut r,
                "webhook_deliveries",
                "Webhook notifications by result (delivered, failed after retries, dropped with \
                 the queue full)",
                Family::default(),
            ),
            policy_generation: reg(
                &mut r,
                "policy_generation",
                "Generation of the policy in force (0: none loaded from the directory)",
                Gauge::default(),
            ),
            policy_reload_ok: reg(
                &mut r,
                "policy_last_reload_success",
                "1 when the last policy load succeeded, 0 when it was rejected (the previous \
                 policy stays in force)",
                Gauge::default(),
            ),
            policy_reloads: reg(
                &mut r,
                "policy_reloads",
                "Policy loads by result (loaded, rejected)",
                Family::default(),
            ),
            policy_reload_time: reg(
                &mut r,
                "policy_last_reload_timestamp_seconds",
                "Unix time of the last policy load attempt",
                Gauge::default(),
            ),
            programs_attached: reg(
                &mut r,
                "program_attached",
                "1 for each BPF LSM program this kernel should have that is attached (its link \
                 pinned), 0 for one that is not",
                Family::default(),
            ),
            programs_expected: reg(
                &mut r,
                "programs_expected",
                "BPF LSM programs this kernel should have attached",
                Gauge::default(),
            ),
            export_sent: reg(
                &mut r,
                "export_sent",
                "Audit records sent to the system log, by target (journald, syslog)",
                Family::default(),
            ),
            export_errors: reg(
                &mut r,
                "export_errors",
                "Audit records that could not be sent to the system log, by target (the audit log \
                 has them)",
                Family::default(),
            ),
            export_dropped: reg(
                &mut r,
                "export_dropped",
                "Audit records the exporter fell behind on and skipped (the audit log has them)",
                Counter::default(),
            ),
            registry: r,
        };
        // Both results and all outcomes appear from the start, at zero.
        for result in ["delivered", "failed", "dropped"] {
            let _ = inner.webhook.get_or_create(&ResultLabels {
                result: result.to_owned(),
            });
        }
        for result in ["loaded", "rejected"] {
            let _ = inner.policy_reloads.get_or_create(&ResultLabels {
                result: result.to_owned(),
            });
        }
        for decision in [
            Decision::Allow,
            Decision::Audit,
            Decision::Hold,
            Decision::Deny,
        ] {
            let _ = inner.kernel_decisions.get_or_create(&KernelDecisionLabels {
                decision: decision.name().to_owned(),
            });
        }
        Self(Arc::new(inner))
    }

    /// The text exposition of every metric.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.0.registry);
        text
    }

    /// A kernel decision, from its audit record (decisions and holds; grants and other kinds
    /// are not decisions).
    pub fn kernel_record(&self, record: &KernelRecord) {
        if record.kind != "decision" && record.kind != "hold" {
            return;
        }
        self.0
            .decisions
            .get_or_create(&DecisionLabels {
                agent: record.agent.clone().unwrap_or_default(),
                op: record.op.clone(),
                decision: record.decision.clone(),
                enforcement: record.enforced.clone(),
            })
            .inc();
    }

    /// The number of holds shown to reviewers and undecided.
    pub fn holds_pending(&self, count: usize) {
        self.0
            .holds_pending
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// A hold ended: `held` since the kernel stopped the task; `decided` since it was shown to
    /// reviewers, with the channel that decided it (absent when the process exited).
    pub fn hold_ended(&self, outcome: &str, held: Duration, decided: Option<(&str, Duration)>) {
        let labels = OutcomeLabels {
            outcome: outcome.to_owned(),
        };
        self.0
            .held_seconds
            .get_or_create(&labels)
            .observe(held.as_secs_f64());
        if let Some((channel, shown)) = decided {
            self.0
                .decision_seconds
                .get_or_create(&ChannelLabels {
                    channel: channel.to_owned(),
                    outcome: outcome.to_owned(),
                })
                .observe(shown.as_secs_f64());
        }
    }

    /// The kernel's counters (`jit_common::event::counter`), read at scrape time: the metrics
    /// follow them (they only grow while the programs stay loaded).
    pub fn kernel_counters(&self, counters: &[u64; counter::COUNT as usize]) {
        let follow = |metric: &Counter, value: u64| {
            let have = metric.get();
            if value > have {
                metric.inc_by(value - have);
            }
        };
        for decision in [
            Decision::Allow,
            Decision::Audit,
            Decision::Hold,
            Decision::Deny,
        ] {
            let index = (counter::DECISION_BASE + decision as u32) as usize;
            follow(
                &self
                    .0
                    .kernel_decisions
                    .get_or_create(&KernelDecisionLabels {
                        decision: decision.name().to_owned(),
                    }),
                counters[index],
            );
        }
        let at = |index: u32| counters[index as usize];
        follow(&self.0.events_emitted, at(counter::EVENTS_EMITTED));
        follow(&self.0.events_dropped, at(counter::EVENTS_DROPPED));
        follow(&self.0.audit_refused, at(counter::AUDIT_REFUSED));
        follow(
            &self.0.denials_summarized,
            at(counter::DENIALS_SUMMARIZED) + at(counter::DENIALS_UNKEYED),
        );
        follow(&self.0.marks_full, at(counter::MARKS_FULL));
        follow(&self.0.hook_errors, at(counter::ERRORS));
        follow(&self.0.grants_used, at(counter::GRANTS_USED));
        follow(&self.0.cache_hits, at(counter::CACHE_HITS));
    }

    /// One batch of the audit sink: records written, write errors, whether the commit failed
    /// and how long writing and committing took.
    pub fn audit_batch(
        &self,
        written: u64,
        write_errors: u64,
        commit_failed: bool,
        took: Duration,
    ) {
        self.0.audit_records.inc_by(written);
        self.0.audit_write_errors.inc_by(write_errors);
        if commit_failed {
            self.0.audit_fsync_errors.inc();
        }
        self.0.audit_commit_seconds.observe(took.as_secs_f64());
    }

    /// A failed sync outside a batch (the interval timer, shutdown).
    pub fn audit_sync_failed(&self) {
        self.0.audit_fsync_errors.inc();
    }

    /// The webhook notifier's totals, read at scrape time.
    pub fn webhook(&self, stats: crate::approval::webhook::WebhookStats) {
        for (result, value) in [
            ("delivered", stats.delivered),
            ("failed", stats.failed),
            ("dropped", stats.dropped),
        ] {
            let metric = self.0.webhook.get_or_create(&ResultLabels {
                result: result.to_owned(),
            });
            let have = metric.get();
            if value > have {
                metric.inc_by(value - have);
            }
        }
    }

    /// A policy load attempt and its result.
    pub fn policy_reload(&self, loaded: bool) {
        let result = if loaded { "loaded" } else { "rejected" };
        self.0
            .policy_reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
        self.0.policy_reload_ok.set(i64::from(loaded));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.0.policy_reload_time.set(now.as_secs_f64());
    }

    /// The generation of the policy in force, read at scrape time.
    pub fn policy_generation(&self, generation: u64) {
        self.0
            .policy_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// A record sent to the system log `target`.
    pub fn export_sent(&self, target: &str) {
        self.0
            .export_sent
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .inc();
    }

    /// A record that could not be sent to `target`.
    pub fn export_failed(&self, target: &str) {
        self.0
            .export_errors
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .inc();
    }

    /// Records the exporter skipped.
    pub fn export_dropped(&self, count: u64) {
        self.0.export_dropped.inc_by(count);
    }

    /// Which of the programs this kernel should have are attached, read at scrape time.
    pub fn programs(&self, expected: &[(&str, &str, bool)]) {
        self.0
            .programs_expected
            .set(i64::try_from(expected.len()).unwrap_or(i64::MAX));
        for &(program, hook, attached) in expected {
            self.0
                .programs_attached
                .get_or_create(&ProgramLabels {
                    program: program.to_owned(),
                    hook: hook.to_owned(),
                })
                .set(i64::from(attached));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
