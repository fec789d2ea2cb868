//! Appending records to the log: resuming the chain, fsync policy, rotation.

use std::{
    ffi::OsString,
    fs::{self, DirBuilder, File, OpenOptions, Permissions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use sha2::{Digest as _, Sha256};

use super::{
    chain::{ChainFields, ChainHead, is_hash, line_hash, to_hex},
    checkpoint::{Checkpoint, CheckpointFile, checkpoint_path, read_checkpoint},
    record::{AuditCut, AuditRecovered, Record, RecordBody, SCHEMA_VERSION},
};

/// Mode of the log files: the trail is for root and the auditors root lets in, never for an
/// agent (docs/ARCHITECTURE.md, I9).
const LOG_MODE: u32 = 0o600;
/// Mode of a log directory the writer has to create.
const DIR_MODE: u32 = 0o700;
/// Read size when searching the log backwards for line ends.
const TAIL_CHUNK: u64 = 64 * 1024;
/// Bytes of a torn tail quoted in its `audit_recovered` record.
const PREVIEW_BYTES: usize = 256;

/// When written records are forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` after every record: a record reported written survives a power loss.
    Always,
    /// `fdatasync` after a record when at least this long has passed since the last one; the
    /// owner calls [`AuditWriter::sync_if_due`] on a timer so a quiet log is synced too. A power
    /// loss costs at most about one interval of records.
    Interval(Duration),
    /// Never: the kernel writes pages back when it likes (tests, or a log shipped elsewhere).
    Never,
}

/// Where and how the log is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditOptions {
    /// The current log file; rotated files are `PATH.1` (newest) to `PATH.keep`.
    pub path: PathBuf,
    pub fsync: FsyncPolicy,
    /// Rotate before a record would grow the current file beyond this; 0 = never rotate.
    pub max_bytes: u64,
    /// Rotated files kept; the oldest beyond this is deleted. 0 = delete on rotation.
    pub keep: u32,
}

impl AuditOptions {
    /// The daemon's defaults (fsync always, 64 MiB, 8 rotated files) for `path`.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            fsync: FsyncPolicy::Always,
            max_bytes: 64 * 1024 * 1024,
            keep: 8,
        }
    }
}

/// Why the log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {}: {op}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `write`, `fsync`, `rotate`, ...).
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The last complete line is not a record, so there is nothing trustworthy to chain to.
    /// The writer does not guess (and does not delete what might be evidence).
    #[error(
        "audit log {}: the last complete line (at byte {offset}) is not an audit record: \
         {reason}; check the log with `jitctl audit verify`, then move the file aside (the chain \
         then continues from {}.1 if it exists)",
        path.display(),
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// What follows the last complete line is neither the start of a record nor zeros.
    #[error(
        "audit log {}: the bytes at offset {offset}, after the last complete line, are neither \
         a torn record nor zeros; is this really a jit audit log? Nothing was changed",
        path.display()
    )]
    NotALog { path: PathBuf, offset: u64 },
    /// Another writer (another daemon) holds the log.
    #[error(
        "audit log {}: another process is writing it (is another jit-agent running?)",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("audit record seq {seq} could not be serialized: {source}")]
    Serialize {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
}

/// Counters of what a writer did, for status output and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records appended by this writer.
    pub records: u64,
    /// `fdatasync` calls on log files.
    pub fsyncs: u64,
    /// Rotations done.
    pub rotations: u64,
}

/// A record that is in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// The exact line written, without the newline (for live followers).
    pub line: String,
}

/// Appends records to the audit log, continuing its hash chain.
///
/// Synchronous by design: each append is one `write(2)`, and [`AuditWriter::commit`] applies the
/// fsync policy (one `fdatasync` per batch under [`FsyncPolicy::Always`]). The daemon's audit
/// sink owns the writer on its own thread, which also keeps the chain strictly ordered
/// (docs/ARCHITECTURE.md, I4).
#[derive(Debug)]
pub struct AuditWriter {
    options: AuditOptions,
    file: File,
    /// Length of the current file as far as this writer knows (all of it intact records).
    len: u64,
    head: ChainHead,
    dirty: bool,
    last_sync: Instant,
    /// A write failed and its partial line could not be cut off: cut it before the next write.
    poisoned: bool,
    stats: WriterStats,
    recovered: Option<AuditRecovered>,
    /// The chain head kept beside the log (`PATH.head`, see [`super::checkpoint`]).
    checkpoint: CheckpointFile,
    /// The last `seq` this writer (or an earlier one) deleted by rotation.
    rotated_through: u64,
    cut: Option<AuditCut>,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AuditError {
    let path = path.to_owned();
    move |source| AuditError::Io { op, path, source }
}

/// `PATH.n`.
#[must_use]
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The log files of `path` in chain order (oldest rotated first, `path` last), as far as they
/// exist: what [`verify`](super::verify) wants.
#[must_use]
pub fn chain_files(path: &Path, keep: u32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=keep)
        .rev()
        .map(|n| rotated_path(path, n))
        .filter(|p| p.exists())
        .collect();
    if path.exists() {
        files.push(path.to_owned());
    }
    files
}

fn open_log(path: &Path) -> Result<File, AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io_err("create directory", dir))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(LOG_MODE)
        .open(path)
        .map_err(io_err("open", path))?;
    // One writer per log: a second daemon (an overlapping restart) would fork the chain.
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(AuditError::Locked {
                path: path.to_owned(),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", path)(e)),
    }
    Ok(file)
}

/// `mode` only applies on creation: tightens a log someone created more openly.
fn tighten_mode(file: &File, path: &Path) -> Result<(), AuditError> {
    let meta = file.metadata().map_err(io_err("stat", path))?;
    if meta.permissions().mode() & 0o7777 != LOG_MODE {
        file.set_permissions(Permissions::from_mode(LOG_MODE))
            .map_err(io_err("chmod", path))?;
    }
    Ok(())
}

fn sync_dir(path: &Path) -> Result<(), AuditError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Offset of the last `\n` in `file[..end]`.
fn rfind_newline(file: &File, end: u64) -> io::Result<Option<u64>> {
    let mut hi = end;
    let mut buf = Vec::new();
    while hi > 0 {
        let lo = hi.saturating_sub(TAIL_CHUNK);
        buf.resize(usize::try_from(hi - lo).unwrap_or(usize::MAX), 0);
        file.read_exact_at(&mut buf, lo)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

fn read_range(file: &File, from: u64, to: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; usize::try_from(to - from).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut buf, from)?;
    Ok(buf)
}

/// `seq` of the first record in `files` (the first file with a readable first line).
fn first_seq_of(files: &[PathBuf]) -> Option<u64> {
    use std::io::BufRead as _;
    files.iter().find_map(|f| {
        let mut line = Vec::new();
        io::BufReader::new(File::open(f).ok()?)
            .read_until(b'\n', &mut line)
            .ok()?;
        serde_json::from_slice::<ChainFields>(line.strip_suffix(b"\n").unwrap_or(&line))
            .ok()
            .map(|c| c.seq)
    })
}

/// The end of a log file: its last complete line and what follows it.
struct Tail {
    /// Bytes up to and including the last `\n`.
    intact_len: u64,
    /// Offset and bytes (without `\n`) of the last complete line.
    last_line: Option<(u64, Vec<u8>)>,
}

fn read_tail(file: &File, len: u64) -> io::Result<Tail> {
    let Some(nl) = rfind_newline(file, len)? else {
        return Ok(Tail {
            intact_len: 0,
            last_line: None,
        });
    };
    let start = rfind_newline(file, nl)?.map_or(0, |p| p + 1);
    Ok(Tail {
        intact_len: nl + 1,
        last_line: Some((start, read_range(file, start, nl)?)),
    })
}

/// The chain head a complete line at `offset` of `path` ends with.
fn head_of(path: &Path, offset: u64, line: &[u8]) -> Result<ChainHead, AuditError> {
    let fields: ChainFields = serde_json::from_slice(line).map_err(|e| AuditError::Corrupt {
        path: path.to_owned(),
        offset,
        reason: e.to_string(),
    })?;
    if !is_hash(&fields.prev) {
        return Err(AuditError::Corrupt {
            path: path.to_owned(),
            offset,
            reason: "`prev` is not 64 lowercase hex digits".to_owned(),
        });
    }
    Ok(ChainHead {
        seq: fields.seq,
        hash: line_hash(line),
    })
}

/// Describes (hash, preview) and measures the torn bytes `file[from..to]`.
fn describe_torn(file: &File, path: &Path, from: u64, to: u64) -> io::Result<AuditRecovered> {
    let mut hasher = Sha256::new();
    let mut preview = Vec::new();
    let mut at = from;
    let mut buf = Vec::new();
    while at < to {
        let n = (to - at).min(TAIL_CHUNK);
        buf.resize(usize::try_from(n).unwrap_or(usize::MAX), 0);
        file.read_exact_at(&mut buf, at)?;
        hasher.update(&buf);
        if preview.len() < PREVIEW_BYTES {
            let want = (PREVIEW_BYTES - preview.len()).min(buf.len());
            preview.extend_from_slice(&buf[..want]);
        }
        at += n;
    }
    Ok(AuditRecovered {
        file: path.to_string_lossy().into_owned(),
        offset: from,
        bytes: to - from,
        sha256: to_hex(&hasher.finalize()),
        preview: String::from_utf8_lossy(&preview).into_owned(),
    })
}

impl AuditWriter {
    /// Opens (creating it, mode 0600) the log at `options.path`, takes an exclusive `flock` on
    /// it (released when the writer is dropped), and resumes its chain.
    ///
    /// The chain continues from the last complete line of the file; when the file is empty or
    /// missing, from the last line of `PATH.1` (a rotation the daemon did not get to write
    /// after); otherwise a new chain starts at seq 1.
    ///
    /// **Torn tail**: bytes after the last newline are what a crash (or a full disk) left of a
    /// write that never completed; no complete record can be among them, since every record
    /// is written with its newline in one `write(2)`. They are cut off, and the first record
    /// written is an `audit_recovered` record giving their offset, length, SHA-256 and a
    /// preview, so the cut is itself on the chain. See [`AuditWriter::recovered`].
    ///
    /// # Errors
    /// I/O errors, [`AuditError::Locked`] when another writer has the log,
    /// [`AuditError::Corrupt`] when the last complete line is not a record and
    /// [`AuditError::NotALog`] when the tail does not look like one of ours; in these cases
    /// the file is left as it was.
    pub fn open(options: AuditOptions) -> Result<Self, AuditError> {
        let path = options.path.clone();
        let options_keep = options.keep;
        let file = open_log(&path)?;
        let len = file.metadata().map_err(io_err("stat", &path))?.len();
        let tail = read_tail(&file, len).map_err(io_err("read", &path))?;
        // Validate before changing anything: a file that is not our log must stay untouched.
        let head = match &tail.last_line {
            Some((offset, line)) => head_of(&path, *offset, line)?,
            None => Self::head_of_rotated(&path)?,
        };
        let torn = if tail.intact_len < len {
            // Our torn writes start where a line starts (`{`), or are zeros (a power loss
            // extended the file but lost the data). Anything else means this is not a log we
            // wrote (a wrong `path`?): cutting it could destroy someone's file.
            let mut first = [0];
            file.read_exact_at(&mut first, tail.intact_len)
                .map_err(io_err("read", &path))?;
            if !matches!(first[0], b'{' | 0) {
                return Err(AuditError::NotALog {
                    path,
                    offset: tail.intact_len,
                });
            }
            let torn =
                describe_torn(&file, &path, tail.intact_len, len).map_err(io_err("read", &path))?;
            file.set_len(tail.intact_len)
                .map_err(io_err("truncate torn tail", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
            Some(torn)
        } else {
            None
        };
        tighten_mode(&file, &path)?;
        let checkpoint_file = checkpoint_path(&path);
        let prior = read_checkpoint(&checkpoint_file).map_err(io_err("read", &checkpoint_file))?;
        let checkpoint = CheckpointFile::open(checkpoint_file.clone())
            .map_err(io_err("open", &checkpoint_file))?;
        // A log that ends before its checkpoint, or with another record at the checkpoint's
        // seq, was cut (or its end rewritten) while no writer had it open. Said on the chain
        // before the checkpoint moves on, or the evidence would be overwritten.
        let cut = prior.as_ref().and_then(|p| {
            let shorter = p.seq > head.seq;
            let other_end = p.seq == head.seq && p.hash != head.hash;
            (shorter || other_end).then(|| AuditCut {
                checkpoint_seq: p.seq,
                checkpoint_hash: p.hash.clone(),
                log_seq: head.seq,
                log_hash: head.hash.clone(),
            })
        });
        let mut writer = Self {
            options,
            file,
            len: tail.intact_len,
            head,
            dirty: false,
            last_sync: Instant::now(),
            poisoned: false,
            stats: WriterStats::default(),
            recovered: None,
            checkpoint,
            // Without a checkpoint (a log written before there were checkpoints), the history
            // found is taken as it is: what is missing before its oldest file is not counted.
            rotated_through: match &prior {
                Some(p) => p.rotated_through,
                None => first_seq_of(&chain_files(&path, options_keep)).map_or(0, |s| s - 1),
            },
            cut: cut.clone(),
        };
        if let Some(cut) = cut {
            writer.append(RecordBody::AuditCut(cut))?;
        }
        writer.store_checkpoint(writer.options.fsync != FsyncPolicy::Never)?;
        if let Some(torn) = torn {
            writer.append(RecordBody::AuditRecovered(torn.clone()))?;
            writer.recovered = Some(torn);
        }
        Ok(writer)
    }

    fn head_of_rotated(path: &Path) -> Result<ChainHead, AuditError> {
        let rotated = rotated_path(path, 1);
        let file = match File::open(&rotated) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ChainHead::genesis()),
            Err(e) => return Err(io_err("open", &rotated)(e)),
        };
        let len = file.metadata().map_err(io_err("stat", &rotated))?.len();
        match read_tail(&file, len)
            .map_err(io_err("read", &rotated))?
            .last_line
        {
            Some((offset, line)) => head_of(&rotated, offset, &line),
            None => Ok(ChainHead::genesis()),
        }
    }

    /// Appends a record stamped with the current time. See [`AuditWriter::append_at`].
    ///
    /// # Errors
    /// As [`AuditWriter::append_at`].
    pub fn append(&mut self, body: RecordBody) -> Result<Appended, AuditError> {
        self.append_at(body, Timestamp::now())
    }

    /// Appends a record with the given `time`, rotating first when it would not fit.
    ///
    /// On a failed write the partial line is cut off again so the file stays a clean chain
    /// (if even that fails, the next append retries the cut before writing); the record is
    /// not in the log and the chain head is unchanged. An `fsync` failure is reported after
    /// the record was written: it is in the file, its durability is unknown.
    ///
    /// # Errors
    /// I/O errors of writing, syncing or rotating.
    pub fn append_at(&mut self, body: RecordBody, time: Timestamp) -> Result<Appended, AuditError> {
        let appended = self.append_unsynced(body, time)?;
        self.commit()?;
        Ok(appended)
    }

    /// Writes a record (stamped `time`) without applying the fsync policy: a batch of these is
    /// followed by one [`AuditWriter::commit`]. Until then the record is in the file but not
    /// necessarily on disk, and the checkpoint does not include it.
    ///
    /// # Errors
    /// I/O errors of writing or rotating.
    pub fn append_unsynced(
        &mut self,
        body: RecordBody,
        time: Timestamp,
    ) -> Result<Appended, AuditError> {
        let path = self.options.path.clone();
        if self.poisoned {
            self.file
                .set_len(self.len)
                .map_err(io_err("truncate failed write", &path))?;
            self.poisoned = false;
        }
        let seq = self.head.seq + 1;
        let record = Record {
            v: SCHEMA_VERSION,
            seq,
            time,
            body,
            prev: self.head.hash.clone(),
        };
        let mut line = record
            .to_line()
            .map_err(|source| AuditError::Serialize { seq, source })?;
        let hash = line_hash(&line);
        line.push(b'\n');
        let size = line.len() as u64;
        if self.options.max_bytes > 0 && self.len > 0 && self.len + size > self.options.max_bytes {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(&line) {
            self.poisoned = self.file.set_len(self.len).is_err();
            return Err(io_err("write", &path)(e));
        }
        self.len += size;
        self.head = ChainHead { seq, hash };
        self.dirty = true;
        self.stats.records += 1;
        line.pop();
        Ok(Appended {
            seq,
            // serde_json writes UTF-8 only.
            line: String::from_utf8(line).unwrap_or_default(),
        })
    }

    /// Makes the records appended with [`AuditWriter::append_unsynced`] as durable as the
    /// policy says: one `fdatasync` for all of them under [`FsyncPolicy::Always`] (group
    /// commit), one when due under [`FsyncPolicy::Interval`], none under
    /// [`FsyncPolicy::Never`] (the checkpoint is still updated).
    ///
    /// # Errors
    /// When `fdatasync` or the checkpoint write fails.
    pub fn commit(&mut self) -> Result<(), AuditError> {
        match self.options.fsync {
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::Interval(_) => self.sync_if_due(),
            FsyncPolicy::Never => self.store_checkpoint(false),
        }
    }

    /// Forces written records to disk now, whatever the policy (shutdown, before answering a
    /// reviewer).
    ///
    /// # Errors
    /// When `fdatasync` fails.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        if self.dirty {
            self.file
                .sync_data()
                .map_err(io_err("fsync", &self.options.path))?;
            self.stats.fsyncs += 1;
            self.dirty = false;
            // Only what is on disk goes into the checkpoint: it must never be ahead of the log
            // after a power loss.
            self.store_checkpoint(true)?;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs when the policy is [`FsyncPolicy::Interval`] and the interval has passed; call it
    /// from a timer. A no-op under the other policies.
    ///
    /// # Errors
    /// When `fdatasync` fails.
    pub fn sync_if_due(&mut self) -> Result<(), AuditError> {
        match self.options.fsync {
            FsyncPolicy::Interval(every) if self.last_sync.elapsed() >= every => self.sync(),
            _ => Ok(()),
        }
    }

    /// Moves `PATH` to `PATH.1` (shifting older files up, dropping those beyond `keep`) and
    /// starts a new `PATH`. The chain simply goes on: the new file's first record has the
    /// next seq and the hash of the old file's last line as `prev`.
    fn rotate(&mut self) -> Result<(), AuditError> {
        let path = self.options.path.clone();
        let durable = self.options.fsync != FsyncPolicy::Never;
        if durable {
            self.sync()?;
        }
        let keep = self.options.keep;
        if keep == 0 {
            self.rotated_through = self.head.seq;
            fs::remove_file(&path).map_err(io_err("rotate (remove)", &path))?;
        } else {
            // The history deleted now ends with `PATH.keep`'s last record.
            if let Ok(oldest) = File::open(rotated_path(&path, keep)) {
                let len = oldest.metadata().map_or(0, |m| m.len());
                if let Ok(Tail {
                    last_line: Some((offset, line)),
                    ..
                }) = read_tail(&oldest, len)
                    && let Ok(last) = head_of(&rotated_path(&path, keep), offset, &line)
                {
                    self.rotated_through = self.rotated_through.max(last.seq);
                }
            }
            // `PATH.keep` makes room; any older ones are left from a larger `keep`.
            for n in keep.. {
                let old = rotated_path(&path, n);
                match fs::remove_file(&old) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => return Err(io_err("rotate (remove oldest)", &old)(e)),
                }
            }
            for n in (1..keep).rev() {
                let from = rotated_path(&path, n);
                match fs::rename(&from, rotated_path(&path, n + 1)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("rotate (rename)", &from)(e)),
                }
            }
            fs::rename(&path, rotated_path(&path, 1)).map_err(io_err("rotate (rename)", &path))?;
        }
        self.file = open_log(&path)?;
        self.len = 0;
        self.dirty = false;
        if durable {
            sync_dir(&path)?;
        }
        self.store_checkpoint(durable)?;
        self.stats.rotations += 1;
        Ok(())
    }

    /// Rewrites the checkpoint with the current head.
    fn store_checkpoint(&mut self, durable: bool) -> Result<(), AuditError> {
        let checkpoint = Checkpoint::new(&self.head, self.rotated_through);
        let path = self.checkpoint.path().to_owned();
        self.checkpoint
            .store(&checkpoint, durable)
            .map_err(io_err("write checkpoint", &path))
    }

    /// The cut found when the log was opened (its end before its checkpoint), if any: it is
    /// also the first record written (`audit_cut`).
    #[must_use]
    pub fn cut(&self) -> Option<&AuditCut> {
        self.cut.as_ref()
    }

    /// The end of the chain: seq and hash of the last record written (or resumed from).
    #[must_use]
    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// What this writer did so far.
    #[must_use]
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// The torn tail cut off when the log was opened, if there was one (the daemon reports it).
    #[must_use]
    pub fn recovered(&self) -> Option<&AuditRecovered> {
        self.recovered.as_ref()
    }

    #[must_use]
    pub fn options(&self) -> &AuditOptions {
        &self.options
    }
}

impl Drop for AuditWriter {
    /// Best effort: a writer dropped without [`AuditWriter::sync`] still gets its records to
    /// disk unless the policy says never.
    fn drop(&mut self) {
        if self.options.fsync != FsyncPolicy::Never && self.dirty {
            let _ = self.file.sync_data();
        }
    }
}
