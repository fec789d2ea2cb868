//! Deciding a held action by the daemon-side conditions of rules (policies/README.md,
//! "Conditions"; docs/ARCHITECTURE.md, I11).
//!
//! The kernel holds every action a rule with conditions matches. For such a hold the daemon
//! reads the facts the conditions need from the stopped task, then tries the conditional rules
//! that match the action, most specific first and then in file order, down to the specificity
//! of the rule that would decide without them; the first whose conditions all hold decides.
//! When none does, the action is decided as if the conditional rules did not exist. A condition
//! whose fact cannot be read counts as met for `deny` and `hold` rules and as not met for
//! `allow` and `audit` rules: an unreadable fact never makes an action less restricted.
//!
//! The outcome is an automatic answer (`allow`/`audit` approve once, `deny` denies), audited with
//! reviewer `policy`, or a hold for humans under the rule that decided.
use std::{collections::HashMap, sync::Arc};

use jit_common::policy::{Decision, Op, Verdict};

use super::Held;
use crate::{
    daemon::policy_store::PolicySnapshot,
    policy::{
        AgentPolicy, Rule, compile_agent,
        conditions::{Facts, Target},
    },
    tooling::model::{AgentMaps, decide_by_conditions, facts_of, is_active},
};

/// What the daemon does with a hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assessment {
    /// No condition is involved: reviewers decide, under the kernel's rule.
    Review,
    /// Reviewers decide, under `rule_id` (0: the agent's default).
    Escalate { rule_id: u32, why: String },
    /// The daemon answers at once: approve once (`allow`, `audit`) or deny.
    Auto {
        approve: bool,
        rule_id: u32,
        why: String,
    },
}

/// One agent's maps at the snapshot's instant: as the kernel has them, and without the rules
/// that have conditions (what decides when no condition holds).
#[derive(Debug)]
pub struct ConditionMaps {
    full: AgentMaps,
    plain: AgentMaps,
}

/// The per-snapshot cache of [`ConditionMaps`], by agent id and the uid and gid
/// the held thread acts as on files (the rule set of its identity class, policies/README.md "Users and groups").
#[derive(Debug, Default)]
pub struct ConditionCache(std::sync::Mutex<HashMap<ClassKey, Arc<ConditionMaps>>>);

/// An agent id, the ids a held thread acts as and the writer class of the file it executes
/// (`None`: unreadable).
type ClassKey = (u32, Option<(u32, u32)>, Option<u32>);

impl ConditionCache {
    fn get(
        &self,
        agent_id: u32,
        ids: Option<(u32, u32)>,
        writer: Option<u32>,
        agent: &AgentPolicy,
        at: jiff::Timestamp,
    ) -> Arc<ConditionMaps> {
        let mut cache = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // By class, not by id: a process that can take many ids (a user namespace with a
        // range of subordinate ids) must not make one entry per id.
        let class = |id: u32, named: &dyn Fn(&Rule) -> &Vec<crate::policy::Account>| {
            if agent
                .rules
                .iter()
                .any(|r| named(r).iter().any(|a| a.id == id))
            {
                id
            } else {
                u32::MAX
            }
        };
        let ids = ids.map(|(uid, gid)| {
            (
                class(uid, &|r: &Rule| &r.who.users),
                class(gid, &|r: &Rule| &r.who.groups),
            )
        });
        cache
            .entry((agent_id, ids, writer))
            .or_insert_with(|| {
                let applies = |r: &Rule| applies(r, at, ids, writer);
                Arc::new(ConditionMaps {
                    full: AgentMaps::new(&compile_agent(agent, applies)),
                    plain: AgentMaps::new(&compile_agent(agent, |r| {
                        applies(r) && !r.is_conditional()
                    })),
                })
            })
            .clone()
    }
}

/// Whether `rule` takes part in deciding a hold at `at` of a thread acting as `ids` on files,
/// executing a file of writer class `writer`: it is in force, and its `user`/`group` and
/// `written_by` conditions admit the thread and the file. Ids or a writer that could not be
/// read count as admitted by `deny` and `hold` rules only (as an unreadable fact, I11).
fn applies(rule: &Rule, at: jiff::Timestamp, ids: Option<(u32, u32)>, writer: Option<u32>) -> bool {
    let severe = matches!(rule.decision, Decision::Deny | Decision::Hold);
    is_active(rule, at)
        && match ids {
            Some((uid, gid)) => rule.who.admits(Some(uid), Some(gid)),
            None => (rule.who.users.is_empty() && rule.who.groups.is_empty()) || severe,
        }
        && match writer {
            Some(writer) => rule.who.admits_writer(writer),
            None => rule.who.writers == 0 || severe,
        }
}

/// The facts of `held`, as read when its event was handled; the target is read now.
fn facts(held: &Held, path: &[u8]) -> Facts {
    Facts {
        target: target(held, path),
        ..facts_of(&held.process)
    }
}

/// Whether the action's target exists, and its size. A file that is not the one the kernel
/// held (replaced meanwhile) is unknown.
fn target(held: &Held, path: &[u8]) -> Option<Target> {
    use std::os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _};
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            // For an action that creates a name, the held identity is the parent directory's.
            let creates = matches!(held.op, Op::Create | Op::Mkdir | Op::Symlink | Op::Device);
            (creates || m.ino() == held.file.ino).then_some(Target::Size(m.len()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Target::Missing),
        Err(_) => None,
    }
}

/// The kernel's encoding of a device number (`MKDEV`), as in `FileId::dev`.
fn kernel_dev(st_dev: u64) -> u64 {
    (u64::from(libc::major(st_dev)) << 20) | u64::from(libc::minor(st_dev))
}

/// Digests of executed files, by device, inode, the kernel's write stamp (the last write open
/// by an agent, `FileId::name` of a held exec) and the metadata a change of the content moves
/// (modification and change times, size): a program run again is hashed once, a file an agent
/// rewrote is hashed again even within one clock tick.
type HashCache = HashMap<(u64, u64, u64, i64, i64, i64, i64, u64), [u8; 32]>;

/// Most digests kept; the cache starts over when it is full.
const HASH_CACHE_ENTRIES: usize = 4096;

/// Largest file the daemon hashes for a `sha256` condition (256 MiB): a larger one is an
/// unreadable fact (I11), so an agent cannot keep the hold manager reading for long.
const HASH_MAX_BYTES: u64 = 256 << 20;

/// The SHA-256 of the file a held exec runs (`path`), read from that very file: `None` when it
/// cannot be read, is not a regular file, is larger than [`HASH_MAX_BYTES`], or is not the file
/// the kernel held (its device and inode differ), which counts as an unreadable fact (I11).
/// The path is first opened `O_PATH` (no side effects, whatever the agent put there: a FIFO, a
/// device) and checked, then reopened for reading through that descriptor. The kernel binds
/// its answer to the file as an agent last wrote it (`FileId::name`), so a rewrite by an agent
/// after this read is held again.
fn file_sha256(held: &Held, path: &[u8]) -> Option<[u8; 32]> {
    use std::{
        io::Read as _,
        os::unix::{
            ffi::OsStrExt as _,
            fs::{MetadataExt as _, OpenOptionsExt as _},
        },
        sync::{Mutex, OnceLock},
    };

    use sha2::Digest as _;
    static CACHE: OnceLock<Mutex<HashCache>> = OnceLock::new();
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let m = handle.metadata().ok()?;
    if kernel_dev(m.dev()) != held.file.dev
        || m.ino() != held.file.ino
        || !m.is_file()
        || m.size() > HASH_MAX_BYTES
    {
        return None;
    }
    let key = (
        held.file.dev,
        held.file.ino,
        held.file.name,
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.size(),
    );
    let cache = CACHE.get_or_init(Mutex::default);
    let cached = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
        .copied();
    if cached.is_some() {
        return cached;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&handle);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{fd}"))
        .ok()?;
    let again = file.metadata().ok()?;
    if again.ino() != m.ino() || again.dev() != m.dev() {
        return None;
    }
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut reader = file.take(HASH_MAX_BYTES + 1);
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    if total > HASH_MAX_BYTES {
        return None;
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.len() >= HASH_CACHE_ENTRIES {
        cache.clear();
    }
    cache.insert(key, digest);
    Some(digest)
}

/// The decision for one path of `held` (a rename or link has two).
fn decide_path(
    agent: &AgentPolicy,
    maps: &ConditionMaps,
    held: &Held,
    path: &[u8],
    at: jiff::Timestamp,
) -> (Verdict, Option<String>) {
    let needs_hash =
        held.op == Op::Exec && agent.rules.iter().any(|r| !r.conditions.sha256.is_empty());
    let facts = || Facts {
        sha256: if needs_hash {
            file_sha256(held, path)
        } else {
            None
        },
        ..facts(held, path)
    };
    let applies = |r: &Rule| applies(r, at, held.ids, held.writer);
    decide_by_conditions(
        agent,
        &maps.full,
        &maps.plain,
        held.op,
        path,
        &applies,
        facts,
    )
}

/// What to do with `held` under `snapshot`'s policy. Reads the target's metadata: call it on a
/// blocking thread.
#[must_use]
pub fn assess(snapshot: &PolicySnapshot, held: &Held) -> Assessment {
    let Some(agent) = snapshot.agent_policy(held.agent_id) else {
        return Assessment::Review;
    };
    let Some(at) = snapshot.compiled.as_ref().map(|c| c.at) else {
        return Assessment::Review;
    };
    if !snapshot.rule_is_conditional(held.agent_id, held.rule_id) {
        return Assessment::Review;
    }
    let maps = snapshot
        .conditions
        .get(held.agent_id, held.ids, held.writer, agent, at);
    let mut paths: Vec<Vec<u8>> = Vec::new();
    match (&held.ends, &held.path_hex) {
        (Some((from, to)), _) => {
            paths.push(from.as_bytes().to_vec());
            paths.push(to.as_bytes().to_vec());
        }
        (None, Some(hex)) => match crate::text::from_hex(hex) {
            Some(bytes) => paths.push(bytes),
            None => return Assessment::Review,
        },
        (None, None) => paths.push(held.path.as_bytes().to_vec()),
    }
    // Both ends of a rename or link: the more severe decides (as in the kernel).
    let mut decided: Option<(Verdict, String)> = None;
    for path in &paths {
        let (verdict, why) = decide_path(agent, &maps, held, path, at);
        let why = why.unwrap_or_default();
        decided = Some(match decided {
            Some(first) if jit_common::policy::first_of_pair_decides(&first.0, &verdict) => first,
            _ => (verdict, why),
        });
    }
    let Some((verdict, why)) = decided else {
        return Assessment::Review;
    };
    match verdict.decision {
        Decision::Allow | Decision::Audit => Assessment::Auto {
            approve: true,
            rule_id: verdict.rule_id,
            why,
        },
        Decision::Deny => Assessment::Auto {
            approve: false,
            rule_id: verdict.rule_id,
            why,
        },
        Decision::Hold => Assessment::Escalate {
            rule_id: verdict.rule_id,
            why,
        },
    }
}
