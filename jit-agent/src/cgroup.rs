//! cgroup2 facts the kernel side needs: a cgroup's id and its level in the hierarchy.
use std::{
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};

/// Errors about a cgroup directory.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a directory on a cgroup2 filesystem (is cgroup2 mounted?)")]
    NotCgroup2 { path: PathBuf },
}

/// Identity of one cgroup2 directory as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The cgroup id: on cgroup2 it is the inode number of the cgroup's directory, the value
    /// `bpf_get_current_cgroup_id()` returns for tasks inside it.
    pub id: u64,
    /// Depth below the cgroup2 root (the root itself is level 0), the `ancestor_level` of
    /// `bpf_get_current_ancestor_cgroup_id()`.
    pub level: u32,
}

fn is_cgroup2(path: &Path) -> Result<bool, CgroupError> {
    match statfs(path) {
        Ok(fs) => Ok(fs.filesystem_type() == CGROUP2_SUPER_MAGIC),
        Err(errno) => Err(CgroupError::Io {
            path: path.to_owned(),
            source: io::Error::from(errno),
        }),
    }
}

/// Reads the id and level of the cgroup2 directory `dir`.
///
/// # Errors
/// When `dir` cannot be read or is not on a cgroup2 mount.
pub fn inspect(dir: &Path) -> Result<CgroupInfo, CgroupError> {
    let io_err = |source| CgroupError::Io {
        path: dir.to_owned(),
        source,
    };
    let dir = dir.canonicalize().map_err(io_err)?;
    if !is_cgroup2(&dir)? {
        return Err(CgroupError::NotCgroup2 { path: dir });
    }
    let id = std::fs::metadata(&dir).map_err(io_err)?.ino();
    let mut level = 0;
    let mut cur = dir.as_path();
    while let Some(parent) = cur.parent() {
        if !is_cgroup2(parent)? {
            break;
        }
        level += 1;
        cur = parent;
    }
    Ok(CgroupInfo { id, level })
}
