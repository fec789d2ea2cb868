//! The record filters of `jitctl audit` (`--agent --op --decision --since --until --request`).
//! A filter given matches only records that have the field: a `policy_loaded` record has no
//! agent, so `--agent` leaves it out.
use jiff::Timestamp;

use super::record::{HeldAction, Record, RecordBody};

/// What to keep; every field given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub agent: Option<String>,
    pub op: Option<String>,
    /// A kernel record's policy decision or what the kernel enforced, or a reviewer's decision
    /// (`approve`, `deny`, `kill`).
    pub decision: Option<String>,
    /// Records written at or after this time.
    pub since: Option<Timestamp>,
    /// Records written before this time.
    pub until: Option<Timestamp>,
    /// The hold's request id (its kernel records, answers, justifications and end).
    pub request: Option<u64>,
}

/// The fields a filter looks at, as far as a record has them.
#[derive(Default)]
struct Facets<'a> {
    agent: Option<&'a str>,
    op: Option<&'a str>,
    decisions: Vec<&'a str>,
    request: Option<u64>,
}

fn action(action: Option<&HeldAction>) -> (Option<&str>, Option<&str>) {
    action.map_or((None, None), |a| {
        (Some(a.agent.as_str()), Some(a.op.as_str()))
    })
}

fn facets(body: &RecordBody) -> Facets<'_> {
    match body {
        RecordBody::Kernel(k) => Facets {
            agent: k.agent.as_deref(),
            op: Some(&k.op),
            decisions: vec![&k.decision, &k.enforced],
            request: k.request_id,
        },
        RecordBody::Approval(a) => {
            let (agent, op) = action(a.action.as_ref());
            Facets {
                agent,
                op,
                decisions: vec![a.decision.name()],
                request: Some(a.request_id),
            }
        }
        RecordBody::HoldEnded(h) => {
            let (agent, op) = action(h.action.as_ref());
            Facets {
                agent,
                op,
                decisions: Vec::new(),
                request: Some(h.request_id),
            }
        }
        RecordBody::Justification(j) => {
            let (agent, op) = action(j.action.as_ref());
            Facets {
                agent,
                op,
                decisions: Vec::new(),
                request: Some(j.request_id),
            }
        }
        _ => Facets::default(),
    }
}

impl AuditFilter {
    /// No filter given: every line is shown, unreadable ones too.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `record` passes every filter given.
    #[must_use]
    pub fn matches(&self, record: &Record) -> bool {
        if self.since.is_some_and(|t| record.time < t)
            || self.until.is_some_and(|t| record.time >= t)
        {
            return false;
        }
        let f = facets(&record.body);
        self.agent.as_deref().is_none_or(|a| f.agent == Some(a))
            && self.op.as_deref().is_none_or(|o| f.op == Some(o))
            && self
                .decision
                .as_deref()
                .is_none_or(|d| f.decisions.contains(&d))
            && self.request.is_none_or(|r| f.request == Some(r))
    }
}
