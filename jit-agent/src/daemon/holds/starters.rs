//! Who started each agent (`jitctl run`), kept on disk so that separation of duties
//! (`[escalation] self_approval = false`, README "Reviewing held actions") survives a daemon
//! restart: a user who started an agent's process before the restart still may not approve its
//! holds after it.
//!
//! The file is `AUDIT_LOG.starters` beside the audit log (a directory agents cannot change:
//! self-protection covers it), root only, one `UID<TAB>AGENT` line per starter, appended and
//! synced before the process is placed in the agent's cgroup. Blocking I/O: called on blocking
//! threads.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// Where the starters are kept for the audit log at `audit_path`.
#[must_use]
pub fn starters_path(audit_path: &Path) -> PathBuf {
    let mut name = audit_path.as_os_str().to_owned();
    name.push(".starters");
    PathBuf::from(name)
}

/// The starters, by agent name.
#[derive(Debug, Default)]
pub struct Starters {
    by_agent: BTreeMap<String, BTreeSet<u32>>,
    /// The file could not be read: anyone may be a starter (fail closed).
    unreadable: Option<String>,
}

impl Starters {
    /// Reads the file at `path`; a missing file is an empty list. A file that cannot be read
    /// makes everyone a possible starter of every agent, so that no self-approval slips
    /// through; lines this build does not understand are skipped (they name nobody it could
    /// check against).
    #[must_use]
    pub fn load(path: &Path) -> Self {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Self::default(),
            Err(e) => {
                return Self {
                    by_agent: BTreeMap::new(),
                    unreadable: Some(format!("{}: {e}", path.display())),
                };
            }
        };
        let mut by_agent: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for line in text.lines() {
            if let Some((uid, agent)) = line.split_once('\t')
                && let Ok(uid) = uid.parse()
            {
                by_agent.entry(agent.to_owned()).or_default().insert(uid);
            }
        }
        Self {
            by_agent,
            unreadable: None,
        }
    }

    /// Why the file could not be read, if it could not.
    #[must_use]
    pub fn unreadable(&self) -> Option<&str> {
        self.unreadable.as_deref()
    }

    /// The uids that started `agent`; `None` when the file could not be read (anyone may have).
    #[must_use]
    pub fn of(&self, agent: &str) -> Option<BTreeSet<u32>> {
        if self.unreadable.is_some() {
            return None;
        }
        Some(self.by_agent.get(agent).cloned().unwrap_or_default())
    }

    /// Whether `uid` is already known as a starter of `agent`.
    #[must_use]
    pub fn contains(&self, agent: &str, uid: u32) -> bool {
        self.by_agent.get(agent).is_some_and(|s| s.contains(&uid))
    }

    /// Notes `uid` as a starter of `agent` (after [`append`] wrote it).
    pub fn insert(&mut self, agent: String, uid: u32) {
        self.by_agent.entry(agent).or_default().insert(uid);
    }
}

/// Appends `uid` as a starter of `agent` to the file at `path` and syncs it.
///
/// # Errors
/// When the file cannot be opened, written or synced, or `agent` cannot be written on one line.
pub fn append(path: &Path, agent: &str, uid: u32) -> io::Result<()> {
    if agent.contains(['\t', '\n']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an agent name with a tab or newline",
        ));
    }
    let mut file = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{uid}\t{agent}\n").as_bytes())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starters_survive_a_reload_and_unreadable_files_fail_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = starters_path(&dir.path().join("audit.jsonl"));
        assert_eq!(Starters::load(&path).of("bot"), Some(BTreeSet::new()));
        append(&path, "bot", 1000).unwrap();
        append(&path, "bot", 1001).unwrap();
        append(&path, "other", 1000).unwrap();
        let starters = Starters::load(&path);
        assert_eq!(starters.of("bot"), Some(BTreeSet::from([1000, 1001])));
        assert_eq!(starters.of("other"), Some(BTreeSet::from([1000])));
        assert!(append(&path, "a\tb", 1).is_err());
        // A directory where the file should be: cannot be read.
        let dir_path = dir.path().join("d.starters");
        fs::create_dir(&dir_path).unwrap();
        let unreadable = Starters::load(&dir_path);
        assert_eq!(unreadable.of("bot"), None);
        assert!(unreadable.unreadable().is_some());
    }
}
