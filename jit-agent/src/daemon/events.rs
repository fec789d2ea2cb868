//! Kernel events into the audit trail, and the drop counter watch (invariant 4).
use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use jit_common::{
    event::{Event, EventKind, counter},
    policy::Op,
};
use tokio::io::{Interest, unix::AsyncFd};
use tracing::{error, info, warn};

use super::{COUNTER_POLL, Daemon};
use crate::audit::{
    ProcessContext,
    record::{EventsDropped, KernelRecord, RecordBody},
};

/// The future that reads the ring buffer for as long as the daemon runs.
///
/// # Errors
/// When the ring buffer cannot be registered with the runtime.
pub fn read_events(
    daemon: Arc<Daemon>,
    ring: RingBuf<MapData>,
) -> std::io::Result<impl Future<Output = ()>> {
    // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long as the
    // RingBuf lives, and the AsyncFd owns the RingBuf.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    Ok(async move {
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
            for event in batch {
                // The other end of a held rename or link comes just before its hold event.
                if event.kind == EventKind::HoldPeer as u8 {
                    peer = Some(event);
                    continue;
                }
                let with = peer.take().filter(|p| {
                    event.kind == EventKind::Hold as u8 && p.request_id == event.request_id
                });
                record(&daemon, &event, with.as_ref());
            }
        }
    })
}

fn record(daemon: &Daemon, event: &Event, peer: Option<&Event>) {
    let (agent, rule) = {
        let state = daemon.policy();
        (
            state.agent_name(event.agent_id),
            state.rule_name(event.rule_id),
        )
    };
    let kind = EventKind::from_u8(event.kind);
    // The process is read while it is stopped (holds) or right after its syscall failed; it
    // may be gone already, then the fields stay empty.
    let process = if kind == Some(EventKind::Hold) {
        ProcessContext::read_held(event.tgid, event.pid, event.op == Op::Exec as u8)
    } else {
        ProcessContext::read(event.tgid)
    };
    let record = KernelRecord::from_event(event, Some(process.clone()))
        .with_names(agent, rule)
        .with_peer(event, peer);
    let ends = record.source.clone().zip(record.destination.clone());
    let path = record.path.clone();
    info!(
        kind = %record.kind,
        op = %record.op,
        path = %record.path,
        decision = %record.decision,
        pid = event.tgid,
        agent = record.agent.as_deref().unwrap_or("?"),
        "kernel decision"
    );
    daemon.audit(RecordBody::Kernel(record));
    // Queued after the audit record, so the hold is in the log before any decision on it.
    if kind == Some(EventKind::Hold) {
        daemon.on_hold(event, process, path, ends);
    }
}

/// Polls the kernel counters; every increase of the dropped-events counter becomes an audit
/// record and a warning. Also the audit log's timer for `fsync = "interval"`.
pub async fn poll_counters(daemon: Arc<Daemon>) {
    let mut reported = None;
    let mut tick = tokio::time::interval(COUNTER_POLL);
    loop {
        tick.tick().await;
        daemon.sync_audit_if_due();
        let counters = daemon.enforcer().counters();
        let total = match counters {
            Ok(counters) => counters[counter::EVENTS_DROPPED as usize],
            Err(err) => {
                warn!(error = %err, "reading the kernel counters failed");
                continue;
            }
        };
        // At start, drops from before this daemon (the count since the programs were loaded)
        // are reported once.
        let before = reported.unwrap_or(0);
        if total > before {
            warn!(
                dropped = total - before,
                total, "the kernel dropped events: its ring buffer was full"
            );
            daemon.audit(RecordBody::EventsDropped(EventsDropped {
                count: total - before,
                total,
            }));
        } else if reported.is_none() {
            info!("no kernel events dropped");
        }
        reported = Some(total);
    }
}
