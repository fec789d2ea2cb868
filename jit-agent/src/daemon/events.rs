//! The event reader: kernel events into the audit trail and holds to the hold manager, and the
//! drop counter watch (docs/ARCHITECTURE.md, I4 and I5).
//!
//! Events are read from the ring buffer on the runtime (memory reads); the process context of
//! each (procfs) is read on a blocking thread, a batch at a time, in order. A hold is announced
//! to the hold manager at once (so reconciliation never adopts it as unknown) and shown to
//! reviewers only once the audit sink says its record is durable.
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use jit_common::{
    event::{DenialKey, Event, EventKind, counter},
    policy::Op,
};
use tokio::io::{Interest, unix::AsyncFd};
use tracing::{error, info, warn};

use super::{
    audit_sink::AuditSink,
    holds::{Held, Holds},
    kernel::KernelHandle,
    policy_store::{PolicySnapshot, PolicyStore},
};
use crate::audit::{
    ProcessContext,
    record::{AuditRefused, DenialsSummarized, EventsDropped, KernelRecord, RecordBody},
};

/// How often the kernel counters are polled for dropped events.
const COUNTER_POLL: Duration = Duration::from_secs(2);

/// The future that reads the ring buffer for as long as the daemon runs.
///
/// # Errors
/// When the ring buffer cannot be registered with the runtime.
pub fn read_events(
    ring: RingBuf<MapData>,
    policy: PolicyStore,
    audit: AuditSink,
    holds: Holds,
    history: super::history::History,
    metrics: crate::metrics::Metrics,
) -> std::io::Result<impl Future<Output = ()>> {
    // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long as the
    // RingBuf lives, and the AsyncFd owns the RingBuf.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    Ok(async move {
        // A hold's peer event (the other end of a rename or link) may end a batch.
        let mut peer: Option<Event> = None;
        loop {
            let mut guard = match ring.readable_mut().await {
                Ok(guard) => guard,
                Err(err) => {
                    error!(error = %err, "waiting for kernel events failed");
                    return;
                }
            };
            let mut batch = Vec::new();
            let mut malformed = 0u64;
            {
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    match Event::from_bytes(&item) {
                        Some(event) => batch.push(event),
                        None => malformed += 1,
                    }
                }
            }
            guard.clear_ready();
            if malformed > 0 {
                error!(
                    malformed,
                    "kernel events of the wrong size (mismatched jit versions?)"
                );
            }
            if batch.is_empty() {
                continue;
            }
            let paired = pair(batch, &mut peer);
            let snapshot = policy.current();
            let records = tokio::task::spawn_blocking(move || records_of(paired, &snapshot)).await;
            let records = match records {
                Ok(records) => records,
                Err(err) => {
                    error!(error = %err, "reading the context of kernel events failed");
                    continue;
                }
            };
            let hints = policy.current();
            for (pid, record, announced) in records {
                history.observe(&record, hints.rule_hint(record.rule_id));
                metrics.kernel_record(&record);
                info!(
                    kind = %record.kind,
                    op = %record.op,
                    path = %record.path,
                    decision = %record.decision,
                    pid,
                    agent = record.agent.as_deref().unwrap_or("?"),
                    "kernel decision"
                );
                match announced {
                    None => audit.record(RecordBody::Kernel(record)),
                    Some(held) => {
                        let id = held.request_id;
                        holds.announce(held);
                        let durable = audit.durable(RecordBody::Kernel(record));
                        let holds = holds.clone();
                        tokio::spawn(async move {
                            let _ = durable.await;
                            holds.durable(id);
                        });
                    }
                }
            }
        }
    })
}

/// Each event with the peer event that came just before it, when it is a hold's: the other end
/// of a held rename or link. A peer at the end of a batch waits in `peer` for the next one.
fn pair(batch: Vec<Event>, peer: &mut Option<Event>) -> Vec<(Event, Option<Event>)> {
    let mut paired = Vec::with_capacity(batch.len());
    for event in batch {
        if event.kind == EventKind::HoldPeer as u8 {
            *peer = Some(event);
            continue;
        }
        let with = peer
            .take()
            .filter(|p| event.kind == EventKind::Hold as u8 && p.request_id == event.request_id);
        paired.push((event, with));
    }
    paired
}

/// The audit record of each event, and for a hold what the hold manager queues. The processes
/// are read (procfs) while they are stopped (holds) or right after their syscall failed; they
/// may be gone already, then the fields stay empty. Call it on a blocking thread.
fn records_of(
    paired: Vec<(Event, Option<Event>)>,
    snapshot: &PolicySnapshot,
) -> Vec<(u32, KernelRecord, Option<Held>)> {
    paired
        .into_iter()
        .map(|(event, peer)| {
            let hold = EventKind::from_u8(event.kind) == Some(EventKind::Hold);
            let process = if hold {
                ProcessContext::read_held(event.tgid, event.pid, event.op == Op::Exec as u8)
            } else {
                ProcessContext::read(event.tgid)
            };
            let record = KernelRecord::from_event(&event, Some(process.clone()))
                .with_names(
                    snapshot.agent_name(event.agent_id),
                    snapshot.rule_name(event.rule_id),
                )
                .with_peer(&event, peer.as_ref())
                .with_review(
                    hold.then(|| snapshot.agent_policy(event.agent_id))
                        .flatten()
                        .map(|a| a.review(event.rule_id)),
                );
            let ends = record.source.clone().zip(record.destination.clone());
            let announced =
                hold.then(|| Held::from_event(&event, process, record.path.clone(), ends));
            (event.tgid, record, announced)
        })
        .collect()
}

/// Polls the kernel counters; every increase of the dropped-events counter, of the
/// refused-audit counter and of the denials counted without records (the `DENIALS` map and
/// `DENIALS_UNKEYED`) becomes an audit record and a warning (docs/ARCHITECTURE.md, I4).
///
/// The kernel's counts run from the moment the programs were loaded; at start, counts from
/// before this daemon are reported once (a record's `total` says which part is new).
pub async fn poll_counters(kernel: KernelHandle, audit: AuditSink, policy: PolicyStore) {
    let mut reported: Option<Reported> = None;
    let mut tick = tokio::time::interval(COUNTER_POLL);
    loop {
        tick.tick().await;
        let read = kernel
            .call(|enforcer| {
                Ok::<_, crate::bpf::BpfError>((enforcer.counters()?, enforcer.denials()?))
            })
            .await;
        let (counters, denials) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(err)) => {
                warn!(error = %err, "reading the kernel counters failed");
                continue;
            }
            Err(_) => return,
        };
        let first = reported.is_none();
        let before = reported.get_or_insert_with(Reported::default);
        let dropped = counters[counter::EVENTS_DROPPED as usize];
        let refused = counters[counter::AUDIT_REFUSED as usize];
        let unkeyed = counters[counter::DENIALS_UNKEYED as usize];
        if dropped > before.dropped {
            warn!(
                dropped = dropped - before.dropped,
                total = dropped,
                "the kernel dropped events: its ring buffer was full"
            );
            audit.record(RecordBody::EventsDropped(EventsDropped {
                count: dropped - before.dropped,
                total: dropped,
            }));
        } else if first {
            info!("no kernel events dropped");
        }
        if refused > before.refused {
            warn!(
                refused = refused - before.refused,
                total = refused,
                "the kernel refused audited actions: its ring buffer had no room for their records"
            );
            audit.record(RecordBody::AuditRefused(AuditRefused {
                count: refused - before.refused,
                total: refused,
            }));
        }
        if !denials.is_empty() || unkeyed > before.unkeyed {
            let snapshot = policy.current();
            for (key, value) in &denials {
                let seen = before.denials.get(key).copied().unwrap_or(0);
                if value.count <= seen {
                    continue;
                }
                let record = DenialsSummarized::keyed(
                    key,
                    value,
                    value.count - seen,
                    snapshot.agent_name(key.agent_id),
                    snapshot.rule_name(key.rule_id),
                );
                warn!(
                    agent = record.agent.as_deref().unwrap_or("?"),
                    op = record.op.as_deref().unwrap_or("?"),
                    rule_id = key.rule_id,
                    count = record.count,
                    "denials without records of their own: the kernel's ring buffer was full"
                );
                audit.record(RecordBody::DenialsSummarized(record));
                before.denials.insert(*key, value.count);
            }
            if unkeyed > before.unkeyed {
                warn!(
                    count = unkeyed - before.unkeyed,
                    total = unkeyed,
                    "denials counted only in total: the kernel's denial map was full"
                );
                audit.record(RecordBody::DenialsSummarized(DenialsSummarized::unkeyed(
                    unkeyed - before.unkeyed,
                    unkeyed,
                )));
            }
        }
        before.dropped = dropped;
        before.refused = refused;
        before.unkeyed = unkeyed;
    }
}

/// What [`poll_counters`] has reported so far: the kernel's totals at the last poll.
#[derive(Default)]
struct Reported {
    dropped: u64,
    refused: u64,
    unkeyed: u64,
    denials: std::collections::HashMap<DenialKey, u64>,
}
