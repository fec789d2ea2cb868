//! Reading the audit log as `jitctl audit` does: the rotated files oldest first, then the
//! current one, and with `follow` the records written after, across rotations.
//!
//! The writer rotates by renaming `PATH` to `PATH.1` (older files shift up) and starting a new
//! `PATH` ([`super::AuditWriter`]). A follower keeps its descriptor on the file it reads, so it
//! finishes that file even after the rename; it then goes on with the files the chain has after
//! it (found by the file's identity, in case several rotations happened between two looks),
//! and never prints a record twice (`seq` only grows along the chain).
use std::{
    collections::VecDeque,
    fs::File,
    io::{self, BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use super::chain_files;

/// Rotated files looked for: the most the writer keeps (`audit.keep`).
const MAX_ROTATED: u32 = 1000;

/// A file's identity: device and inode.
type FileId = (u64, u64);

fn identity(meta: &std::fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

#[derive(Deserialize)]
struct Seq {
    seq: u64,
}

/// The `seq` of a record line, when it has one.
fn seq_of(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Seq>(line).ok().map(|s| s.seq)
}

/// Yields the lines (without newline) of an audit log and its rotated files in chain order.
pub struct AuditReader {
    path: PathBuf,
    follow: bool,
    poll: Duration,
    /// Files still to read, oldest first.
    queue: VecDeque<PathBuf>,
    current: Option<(BufReader<File>, FileId)>,
    /// The bytes of a line not yet complete.
    partial: Vec<u8>,
    /// The highest `seq` yielded: lines at or below it are not yielded again.
    last_seq: u64,
}

impl AuditReader {
    /// A reader of `path` and its rotated files (`PATH.N` ... `PATH.1`, then `PATH`). With
    /// `follow`, [`AuditReader::next_line`] waits for new records instead of ending, polling
    /// every `poll`.
    ///
    /// # Errors
    /// When neither `path` nor any rotated file exists.
    pub fn open(path: &Path, follow: bool, poll: Duration) -> io::Result<Self> {
        let queue: VecDeque<PathBuf> = chain_files(path, MAX_ROTATED).into();
        if queue.is_empty() && !follow {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no audit log at {} (nor rotated files)", path.display()),
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            follow,
            poll,
            queue,
            current: None,
            partial: Vec::new(),
            last_seq: 0,
        })
    }

    /// The next line; `None` at the end (never, when following).
    ///
    /// # Errors
    /// When a file cannot be read.
    pub fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if self.current.is_none() && !self.open_next()? {
                if !self.follow {
                    return Ok(None);
                }
                std::thread::sleep(self.poll);
                continue;
            }
            if let Some(line) = self.read_line()? {
                match seq_of(&line) {
                    Some(seq) if seq <= self.last_seq => continue,
                    Some(seq) => self.last_seq = seq,
                    // A line that is not a record is shown as it is (the viewer hides nothing).
                    None => {}
                }
                return Ok(Some(line));
            }
            // At the end of the file read so far.
            if !self.queue.is_empty() {
                // A rotated file is complete: a torn last line was never a record.
                self.partial.clear();
                self.current = None;
                continue;
            }
            if !self.follow {
                return Ok(None);
            }
            if self.rotated()? {
                // The rest of the old file (written until the rename) is read first, then the
                // files after it; none yet: the new file is about to be created.
                self.queue_after_current();
                if self.queue.is_empty() {
                    std::thread::sleep(self.poll);
                }
                continue;
            }
            std::thread::sleep(self.poll);
        }
    }

    /// Opens the next queued file; false when there is none (or it vanished).
    fn open_next(&mut self) -> io::Result<bool> {
        while let Some(path) = self.queue.pop_front() {
            match File::open(&path) {
                Ok(file) => {
                    let id = identity(&file.metadata()?);
                    self.current = Some((BufReader::new(file), id));
                    return Ok(true);
                }
                // Rotated away between the listing and now: its records are gone or moved on.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if self.follow && self.current.is_none() {
            // Waiting for the log to appear (or to be recreated by a rotation).
            let files = chain_files(&self.path, MAX_ROTATED);
            if !files.is_empty() {
                self.queue = files.into();
                return self.open_next();
            }
        }
        Ok(false)
    }

    /// A complete line from the current file, or `None` at its end so far.
    fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some((reader, _)) = self.current.as_mut() else {
            return Ok(None);
        };
        let n = reader.read_until(b'\n', &mut self.partial)?;
        if n == 0 || self.partial.last() != Some(&b'\n') {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.partial);
        line.pop();
        Ok(Some(line))
    }

    /// Whether `PATH` is no longer the file being read (the writer rotated it).
    fn rotated(&self) -> io::Result<bool> {
        let Some((_, id)) = &self.current else {
            return Ok(false);
        };
        match std::fs::metadata(&self.path) {
            Ok(meta) => Ok(identity(&meta) != *id),
            // Between the rename and the new file, or removed (`keep = 0`).
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Queues the chain's files after the one being read (by identity); all of them when it
    /// is no longer in the chain (the seq check skips what was read).
    fn queue_after_current(&mut self) {
        let Some((_, id)) = &self.current else {
            return;
        };
        let files = chain_files(&self.path, MAX_ROTATED);
        let position = files
            .iter()
            .position(|p| std::fs::metadata(p).is_ok_and(|meta| identity(&meta) == *id));
        let after = position.map_or(0, |i| i + 1);
        self.queue = files.into_iter().skip(after).collect();
    }
}
