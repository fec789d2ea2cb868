//! The chain head kept beside the log, so a cut-off end shows.
//!
//! A hash chain proves that nothing was changed, inserted or removed *before* its last record;
//! it cannot show that records were cut off its end (a truncated file is a shorter valid
//! chain), nor that rotated files were deleted. So the writer also keeps the head — the last
//! record's `seq` and hash — and how far history was rotated away by the writer itself, in a
//! checkpoint file `PATH.head` next to the log (mode 0600, in the log's directory, which the
//! daemon's self-protection keeps agents from changing). It is rewritten in place whenever
//! records are made durable: after every `fdatasync` (with `fsync = "always"` every record),
//! at rotation, and, with `fsync = "never"`, after every record.
//!
//! `jitctl audit verify` compares the log with it: a log that ends before the checkpoint's
//! `seq`, whose record at that `seq` has another hash, or whose oldest file starts after the
//! history the writer itself rotated away, fails. A writer that opens a log shorter than its
//! checkpoint records the cut on the chain (`audit_cut`) before it moves the checkpoint on.
use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::ChainHead;

/// Bytes of the file: the JSON padded with spaces and a newline, so an in-place rewrite always
/// covers the whole previous content.
pub const CHECKPOINT_BYTES: usize = 512;

/// What the checkpoint says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version, 1.
    pub v: u32,
    /// `seq` of the last record known written (0: none yet).
    pub seq: u64,
    /// Hash of that record's line (the next record's `prev`).
    pub hash: String,
    /// The last `seq` of history the writer deleted itself by rotation (beyond `keep`); 0 when
    /// it deleted none. Files starting later than the record after it were removed by someone
    /// else.
    pub rotated_through: u64,
}

impl Checkpoint {
    #[must_use]
    pub fn new(head: &ChainHead, rotated_through: u64) -> Self {
        Self {
            v: 1,
            seq: head.seq,
            hash: head.hash.clone(),
            rotated_through,
        }
    }
}

/// `PATH.head`: the checkpoint of the log at `path`.
#[must_use]
pub fn checkpoint_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".head");
    PathBuf::from(s)
}

/// Reads a checkpoint; `Ok(None)` when the file does not exist.
///
/// # Errors
/// When it cannot be read or is not a checkpoint.
pub fn read_checkpoint(path: &Path) -> io::Result<Option<Checkpoint>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.by_ref()
        .take(CHECKPOINT_BYTES as u64 * 2)
        .read_to_string(&mut text)?;
    serde_json::from_str(text.trim_end())
        .map(Some)
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
}

/// The open checkpoint file of a writer.
#[derive(Debug)]
pub struct CheckpointFile {
    file: File,
    path: PathBuf,
}

impl CheckpointFile {
    /// Opens (creating, mode 0600) the checkpoint at `path`.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub fn open(path: PathBuf) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        Ok(Self { file, path })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rewrites the checkpoint in place (one write of [`CHECKPOINT_BYTES`]); `durable` also
    /// `fdatasync`s it.
    ///
    /// # Errors
    /// When writing or syncing fails.
    pub fn store(&mut self, checkpoint: &Checkpoint, durable: bool) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(checkpoint).map_err(io::Error::other)?;
        if bytes.len() >= CHECKPOINT_BYTES {
            return Err(io::Error::other("checkpoint too long"));
        }
        bytes.resize(CHECKPOINT_BYTES - 1, b' ');
        bytes.push(b'\n');
        self.file.write_all_at(&bytes, 0)?;
        if self.file.metadata()?.len() > CHECKPOINT_BYTES as u64 {
            self.file.set_len(CHECKPOINT_BYTES as u64)?;
        }
        if durable {
            self.file.sync_data()?;
        }
        Ok(())
    }
}
