//! `jitctl policy replay`: every kernel decision an audit trail recorded, decided again under
//! another policy, to review a change before `jitctl policy reload`.
//!
//! What the trail holds bounds what replay can show: the kernel records holds, denials, audits
//! and shadow decisions, never a silent allow. So replay shows which recorded decisions a new
//! policy would change (a hold that would now pass, a denial that would now hold), but not
//! actions the old policy allowed silently that the new one would refuse: for those, run the
//! new policy in `mode = "shadow"` first, or ask `jitctl policy explain`.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, BufRead as _, BufReader},
    path::{Path, PathBuf},
};

use jit_common::{policy::Op, protect::SELF_PROTECTION_RULE_ID};
use serde::Serialize;

use super::{
    model::{Action, DecideError, Decider},
    rfc3339,
};
use crate::{
    audit::{KernelRecord, Record, RecordBody},
    policy::Subject,
    text::{escape, escape_bytes, from_hex, unescape},
};

/// A recorded kernel decision, with where it came from.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub file: PathBuf,
    pub seq: u64,
    pub time: jiff::Timestamp,
    pub record: KernelRecord,
}

/// Every record of `files` (in order), split into kernel records and the others; lines that are
/// not records of this schema are counted.
///
/// # Errors
/// When a file cannot be read.
pub fn read_trail(files: &[PathBuf]) -> io::Result<Trail> {
    let mut trail = Trail::default();
    for file in files {
        let reader = BufReader::new(
            std::fs::File::open(file)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?,
        );
        for line in reader.split(b'\n') {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            match Record::from_line(&line) {
                Ok(record) => trail.records.push((file.clone(), record)),
                Err(_) => trail.unreadable += 1,
            }
        }
    }
    Ok(trail)
}

/// The records of one or more audit files.
#[derive(Debug, Default)]
pub struct Trail {
    pub records: Vec<(PathBuf, Record)>,
    /// Lines that are not records of the schema this build knows.
    pub unreadable: usize,
}

impl Trail {
    /// The kernel records.
    pub fn kernel(&self) -> impl Iterator<Item = Recorded> + '_ {
        self.records.iter().filter_map(|(file, r)| match &r.body {
            RecordBody::Kernel(k) => Some(Recorded {
                file: file.clone(),
                seq: r.seq,
                time: r.time,
                record: k.clone(),
            }),
            _ => None,
        })
    }
}

/// The path bytes of a kernel record (exact, from `path_hex` when the path is not UTF-8).
#[must_use]
pub fn path_bytes(record: &KernelRecord) -> Vec<u8> {
    record
        .path_hex
        .as_deref()
        .and_then(from_hex)
        .unwrap_or_else(|| record.path.clone().into_bytes())
}

/// A decision and what made it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Decided {
    pub decision: String,
    /// The rule's name; `None` for the agent's default.
    pub rule: Option<String>,
}

/// One replayed record whose decision would change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub file: String,
    pub seq: u64,
    pub time: String,
    pub agent: String,
    pub op: String,
    pub path: String,
    pub from: Decided,
    pub to: Decided,
}

/// Changes of one kind: the same agent, op, and old and new decision and rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    pub agent: String,
    pub op: String,
    pub from: Decided,
    pub to: Decided,
    pub count: usize,
}

/// The answer of `jitctl policy replay`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Replay {
    /// Kernel decisions decided again.
    pub replayed: usize,
    /// Of those, decided the same (same decision and rule).
    pub unchanged: usize,
    /// Same decision, another rule.
    pub rule_changed: usize,
    /// Another decision.
    pub changed: usize,
    /// Records not decided again, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// Rename and link records without both ends (only holds carry both): only the end the
    /// record names could be decided again.
    pub one_end_only: usize,
    /// Lines that were not audit records of this schema.
    pub unreadable: usize,
    pub groups: Vec<Group>,
    /// Every record whose decision or rule would change, in trail order.
    pub changes: Vec<Change>,
}

/// Why a kernel record is not decided again, or `None` when it is.
fn skip_reason(r: &KernelRecord, decider: &Decider<'_>) -> Option<&'static str> {
    if r.rule_id == SELF_PROTECTION_RULE_ID {
        return Some("self-protection (decided whatever the policy)");
    }
    if r.kind == "grant_used" || r.kind == "grant_denied" {
        return Some("approvals applied (a reviewer's grant, not the policy)");
    }
    if r.kind != "hold" && r.kind != "decision" {
        return Some("unknown kind");
    }
    if r.unresolved {
        return Some("unresolved paths (failed closed whatever the policy)");
    }
    if r.truncated {
        return Some("paths cut in the record");
    }
    if Op::from_name(&r.op).is_none() {
        return Some("ops this build does not know");
    }
    match &r.agent {
        None => Some("agent unknown to the daemon that wrote the record"),
        Some(a) if decider.set().agent(a).is_none() => Some("agent not in the replayed policy"),
        Some(_) => None,
    }
}

/// Decides every kernel decision of `trail` again under `decider`'s policy, at the instant
/// each was recorded.
#[must_use]
pub fn replay(decider: &Decider<'_>, trail: &Trail) -> Replay {
    let mut out = Replay {
        unreadable: trail.unreadable,
        ..Replay::default()
    };
    let mut groups: BTreeMap<(String, String, Decided, Decided), usize> = BTreeMap::new();
    for rec in trail.kernel() {
        let r = &rec.record;
        if let Some(reason) = skip_reason(r, decider) {
            *out.skipped.entry(reason.to_owned()).or_default() += 1;
            continue;
        }
        let (Some(agent), Some(op)) = (r.agent.clone(), Op::from_name(&r.op)) else {
            continue;
        };
        // Held renames and links carry both ends: decide the pair as the kernel did.
        let ends = match (&r.source, &r.destination) {
            (Some(source), Some(destination)) => unescape(source).zip(unescape(destination)),
            _ => None,
        };
        let (path, target) = match ends {
            Some((source, destination)) => (source, Some(destination)),
            None => (path_bytes(r), None),
        };
        let action = Action {
            agent,
            op,
            path,
            target,
            at: rec.time,
            facts: r.process.as_ref().map(super::model::facts_of),
            // The kernel's records carry the ids `user`/`group` rules decided by.
            subject: Subject {
                uid: Some(r.uid),
                gid: Some(r.gid),
                ..Subject::default()
            },
        };
        let outcome = match decider.decide(&action) {
            Ok(o) => o,
            Err(DecideError::UnknownAgent(_)) => continue,
        };
        if matches!(op, Op::Rename | Op::Link) && action.target.is_none() {
            out.one_end_only += 1;
        }
        out.replayed += 1;
        let v = outcome.verdict;
        let from = Decided {
            decision: r.decision.clone(),
            rule: (r.rule_id != 0)
                .then(|| r.rule.clone().unwrap_or_else(|| format!("#{}", r.rule_id))),
        };
        let to = Decided {
            decision: v.decision.name().to_owned(),
            rule: if outcome.by_self_protection() {
                Some("self-protection".to_owned())
            } else {
                decider
                    .set()
                    .rule(v.rule_id)
                    .map(|(_, rule)| rule.name.clone())
            },
        };
        if from == to {
            out.unchanged += 1;
            continue;
        }
        if from.decision == to.decision {
            out.rule_changed += 1;
        } else {
            out.changed += 1;
        }
        *groups
            .entry((action.agent.clone(), r.op.clone(), from.clone(), to.clone()))
            .or_default() += 1;
        out.changes.push(Change {
            file: rec.file.display().to_string(),
            seq: rec.seq,
            time: rfc3339(rec.time),
            agent: action.agent,
            op: r.op.clone(),
            path: r.path.clone(),
            from,
            to,
        });
    }
    out.groups = groups
        .into_iter()
        .map(|((agent, op, from, to), count)| Group {
            agent,
            op,
            from,
            to,
            count,
        })
        .collect();
    // Most frequent first; ties in a stable order.
    out.groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    out
}

fn decided(d: &Decided) -> String {
    match &d.rule {
        Some(rule) => format!("{} (rule \"{}\")", d.decision, escape(rule)),
        None => format!("{} (default)", d.decision),
    }
}

/// The summary and the changed records as text.
#[must_use]
pub fn render(r: &Replay, policy: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "replayed {} recorded decision(s) under {}: {} would change decision, {} would keep \
         it under another rule, {} unchanged",
        r.replayed,
        policy.display(),
        r.changed,
        r.rule_changed,
        r.unchanged
    );
    for (reason, n) in &r.skipped {
        let _ = writeln!(out, "  not replayed: {n} {reason}");
    }
    if r.unreadable > 0 {
        let _ = writeln!(
            out,
            "  not replayed: {} line(s) that are not audit records",
            r.unreadable
        );
    }
    if r.one_end_only > 0 {
        let _ = writeln!(
            out,
            "  note: {} rename/link record(s) name one end (the one that decided; only holds \
             carry both); only that end was decided again",
            r.one_end_only
        );
    }
    if !r.groups.is_empty() {
        let _ = writeln!(out, "changes by agent, op and rule:");
        for g in &r.groups {
            let _ = writeln!(
                out,
                "  {:>5}  {} {}: {} -> {}",
                g.count,
                g.agent,
                g.op,
                decided(&g.from),
                decided(&g.to)
            );
        }
        let _ = writeln!(out, "changed records:");
        for c in &r.changes {
            let _ = writeln!(
                out,
                "  {}:seq {} {} {} {} {}: {} -> {}",
                c.file,
                c.seq,
                c.time,
                c.agent,
                c.op,
                escape_bytes(c.path.as_bytes()),
                decided(&c.from),
                decided(&c.to)
            );
        }
    }
    let _ = writeln!(
        out,
        "note: the audit trail holds holds, denials, audits and shadow decisions, never silent \
         allows: actions the recorded policy allowed silently and the replayed one would \
         refuse cannot show here (run the new policy in shadow mode first)"
    );
    out
}
