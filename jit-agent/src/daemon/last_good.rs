//! The last good policy on disk (docs/ARCHITECTURE.md, I6): the source texts of the policy
//! last installed from the directory, kept root-only beside the audit log, and read back by a
//! daemon whose directory does not load. Blocking I/O: called on blocking threads.
use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use jiff::Timestamp;

use crate::{
    config::Config,
    policy::{self, Compiled, PolicySet},
};

/// The file in the last good policy's directory that says when and from where it was saved.
const SAVED_FILE: &str = "SAVED";

/// Where the last good policy is kept: `AUDIT_LOG.last-good-policy/`, beside the audit log (a
/// directory agents cannot change: self-protection covers the audit log's directory), root
/// only.
#[must_use]
pub fn last_good_dir(config: &Config) -> PathBuf {
    let mut name = config.audit.path.clone().into_os_string();
    name.push(".last-good-policy");
    PathBuf::from(name)
}

/// Writes `texts` (`(file name, text)`) into a fresh directory, then puts it in place of `dir`.
pub(super) fn save_last_good(
    dir: &Path,
    from: &Path,
    texts: &[(String, String)],
) -> io::Result<()> {
    use std::io::Write as _;
    let mut staging = dir.as_os_str().to_owned();
    staging.push(".new");
    let staging = PathBuf::from(staging);
    match fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let write = |name: &str, text: &str| -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(staging.join(name))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    };
    for (name, text) in texts {
        write(name, text)?;
    }
    write(
        SAVED_FILE,
        &format!("{:.0} from {}\n", Timestamp::now(), from.display()),
    )?;
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::rename(&staging, dir)?;
    if let Some(parent) = dir.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// The last good policy kept in `dir`: the set, compiled now, when and from where it was
/// saved, and the ids of its agents' cgroups (by path below `cgroup_root`).
pub(super) fn load_last_good(
    dir: &Path,
    cgroup_root: &Path,
) -> Result<(PolicySet, Compiled, String, BTreeMap<String, u64>), String> {
    let saved = fs::read_to_string(dir.join(SAVED_FILE))
        .map_err(|e| format!("{}: {e}", dir.join(SAVED_FILE).display()))?;
    let set = policy::load_dir(dir).map_err(|errors| {
        errors
            .errors()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let compiled = policy::compile(&set, Timestamp::now());
    let cgroup_ids = compiled
        .agents
        .iter()
        .flat_map(|a| &a.cgroups)
        .filter_map(|rel| {
            let ino = fs::metadata(cgroup_root.join(rel)).ok()?.ino();
            Some((rel.clone(), ino))
        })
        .collect();
    Ok((set, compiled, saved.trim().to_owned(), cgroup_ids))
}
