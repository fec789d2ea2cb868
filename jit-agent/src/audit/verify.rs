//! Checking a log (or a rotated series of logs) against its hash chain.

use std::{
    fmt,
    fs::File,
    io::{self, BufRead as _, BufReader},
    path::{Path, PathBuf},
};

use serde_json::error::Category;

use super::{
    chain::{ChainFields, ChainHead, GENESIS_PREV, is_hash, line_hash},
    checkpoint::Checkpoint,
    record::SCHEMA_VERSION,
};

/// What a successful [`verify`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifySummary {
    /// Files read.
    pub files: usize,
    /// Records checked.
    pub records: u64,
    /// `seq` of the first record, if there was one.
    pub first_seq: Option<u64>,
    /// The end of the chain. A hash chain cannot show that its *last* record was altered
    /// (nothing follows it) or that records were cut off the end: compare this with a head
    /// recorded elsewhere earlier (for example logged by the daemon or shipped off the host).
    pub head: ChainHead,
    /// Whether the chain starts at its genesis (seq 1). `false` when older rotated files were
    /// not given (or already deleted): then the first record's `prev` could not be checked.
    pub anchored: bool,
}

impl fmt::Display for VerifySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(first) = self.first_seq else {
            return write!(f, "OK: {} file(s), no records", self.files);
        };
        write!(
            f,
            "OK: {} record(s) in {} file(s), seq {first}..{}, head {}",
            self.records, self.files, self.head.seq, self.head.hash
        )?;
        if !self.anchored {
            write!(
                f,
                " (the chain starts at seq {first}: earlier records were not given, so the \
                 first record's prev was not checked)"
            )?;
        }
        Ok(())
    }
}

/// What is wrong with a line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("not valid JSON: {0}")]
    InvalidJson(String),
    #[error("not an audit record: {0}")]
    NotARecord(String),
    #[error("unsupported schema version {found} (this build reads version {SCHEMA_VERSION})")]
    Version { found: u32 },
    #[error("prev is not 64 lowercase hex digits")]
    PrevFormat,
    #[error("seq {found} breaks the sequence: expected {expected}")]
    Seq { expected: u64, found: u64 },
    #[error("prev {found} does not match the previous record's hash {expected}")]
    PrevMismatch { expected: String, found: String },
    #[error("seq 1 starts a chain, so its prev must be 64 zeros, not {found}")]
    GenesisPrev { found: String },
    #[error("prev of 64 zeros starts a chain, but seq is {seq}, not 1")]
    GenesisSeq { seq: u64 },
    #[error(
        "the line has no newline: a torn write (the writer cuts such a tail off when it next \
         opens the log)"
    )]
    Unterminated,
}

/// Why a chain did not verify: the first broken record.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no files to verify")]
    NoFiles,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `path:line: seq N: problem` (the seq part when the line has a readable seq).
    #[error("{}:{line}: {}{problem}", path.display(), seq_prefix(*seq))]
    Broken {
        path: PathBuf,
        /// 1-based line number within `path`.
        line: u64,
        seq: Option<u64>,
        problem: Problem,
    },
    /// The chain ends before the checkpoint's head.
    #[error(
        "the log ends at seq {last_seq}, but its checkpoint says records up to seq \
         {checkpoint_seq} were written: {} record(s) were cut off the end",
        checkpoint_seq - last_seq
    )]
    Truncated { last_seq: u64, checkpoint_seq: u64 },
    /// The record at the checkpoint's seq is another one.
    #[error(
        "the record at seq {seq} is not the one the checkpoint recorded (hash {found}, \
         checkpoint {expected}): the end of the log was replaced"
    )]
    Rewritten {
        seq: u64,
        expected: String,
        found: String,
    },
    /// The oldest file starts later than the history the writer rotated away itself.
    #[error(
        "the oldest file given starts at seq {first_seq}, but the writer rotated away only the \
         records up to seq {rotated_through}: records {}..={} are missing (a rotated file was \
         deleted, or not given)",
        rotated_through + 1,
        first_seq - 1
    )]
    HistoryMissing {
        first_seq: u64,
        rotated_through: u64,
    },
    /// The checkpoint's head is older than the first record given.
    #[error(
        "the checkpoint's last record, seq {checkpoint_seq}, is not in the files given (they \
         start at seq {first_seq})"
    )]
    CheckpointNotCovered { checkpoint_seq: u64, first_seq: u64 },
    /// A writer found the log cut when it opened it (an `audit_cut` record).
    #[error(
        "{}:{line}: seq {seq}: the writer found the log cut when it opened it: it ended at seq \
         {log_seq}, though its checkpoint said seq {checkpoint_seq}",
        path.display()
    )]
    CutRecorded {
        path: PathBuf,
        line: u64,
        seq: u64,
        log_seq: u64,
        checkpoint_seq: u64,
    },
}

fn seq_prefix(seq: Option<u64>) -> String {
    seq.map_or_else(String::new, |s| format!("seq {s}: "))
}

/// Chain state carried from line to line and file to file.
struct Checker {
    /// Head so far; `None` before the first record.
    head: Option<ChainHead>,
    first_seq: Option<u64>,
    anchored: bool,
    records: u64,
    /// The checkpoint's seq, whose hash is recorded in `watched` when it passes.
    watch: Option<u64>,
    watched: Option<String>,
    /// The first `audit_cut` record: path, line, seq, log seq, checkpoint seq.
    cut: Option<(PathBuf, u64, u64, u64, u64)>,
}

impl Checker {
    /// Checks one line; `Err((seq, problem))`.
    fn check(&mut self, line: &[u8]) -> Result<(), (Option<u64>, Problem)> {
        let fields: ChainFields = serde_json::from_slice(line).map_err(|e| {
            let problem = match e.classify() {
                Category::Data => Problem::NotARecord(e.to_string()),
                Category::Io | Category::Syntax | Category::Eof => {
                    Problem::InvalidJson(e.to_string())
                }
            };
            (None, problem)
        })?;
        let seq = fields.seq;
        let fail = |p| Err((Some(seq), p));
        if fields.v != SCHEMA_VERSION {
            return fail(Problem::Version { found: fields.v });
        }
        if !is_hash(&fields.prev) {
            return fail(Problem::PrevFormat);
        }
        if let Some(head) = &self.head {
            if seq != head.seq + 1 {
                return fail(Problem::Seq {
                    expected: head.seq + 1,
                    found: seq,
                });
            }
            if fields.prev != head.hash {
                return fail(Problem::PrevMismatch {
                    expected: head.hash.clone(),
                    found: fields.prev,
                });
            }
        } else {
            let genesis_prev = fields.prev == GENESIS_PREV;
            if seq == 1 && !genesis_prev {
                return fail(Problem::GenesisPrev { found: fields.prev });
            }
            if seq != 1 && genesis_prev {
                return fail(Problem::GenesisSeq { seq });
            }
            self.anchored = seq == 1;
            self.first_seq = Some(seq);
        }
        let hash = line_hash(line);
        if self.watch == Some(seq) {
            self.watched = Some(hash.clone());
        }
        self.head = Some(ChainHead { seq, hash });
        self.records += 1;
        Ok(())
    }

    /// Notes an `audit_cut` record (a JSON escape keeps the pattern out of string values).
    fn note_cut(&mut self, path: &Path, number: u64, line: &[u8]) {
        const PATTERN: &[u8] = br#""type":"audit_cut""#;
        if self.cut.is_some() || !line.windows(PATTERN.len()).any(|w| w == PATTERN) {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            return;
        };
        if v["type"] == "audit_cut" {
            self.cut = Some((
                path.to_owned(),
                number,
                v["seq"].as_u64().unwrap_or(0),
                v["log_seq"].as_u64().unwrap_or(0),
                v["checkpoint_seq"].as_u64().unwrap_or(0),
            ));
        }
    }

    fn file(&mut self, path: &Path) -> Result<(), VerifyError> {
        let io_err = |source| VerifyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
        let mut line = Vec::new();
        let mut number = 0;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io_err)? == 0 {
                return Ok(());
            }
            number += 1;
            let terminated = line.last() == Some(&b'\n');
            if terminated {
                line.pop();
            }
            let broken = |seq, problem| VerifyError::Broken {
                path: path.to_owned(),
                line: number,
                seq,
                problem,
            };
            self.check(&line).map_err(|(seq, p)| broken(seq, p))?;
            self.note_cut(path, number, &line);
            if !terminated {
                return Err(broken(
                    self.head.as_ref().map(|h| h.seq),
                    Problem::Unterminated,
                ));
            }
        }
    }
}

/// Verifies the chain through `files`, given in chain order (oldest rotated file first, the
/// current file last; see [`chain_files`](super::chain_files)): each line must be JSON with
/// `v` = 1, `seq` one more than the line before (across files) and `prev` the SHA-256 of the
/// line before. The first record may start mid-chain (older files rotated away); then
/// [`VerifySummary::anchored`] is `false`. Empty files are allowed (a fresh file after a
/// rotation).
///
/// # Errors
/// The first broken line, with file, line number, seq (when readable) and what is wrong; or
/// an unreadable file.
pub fn verify(files: &[PathBuf]) -> Result<VerifySummary, VerifyError> {
    check_files(files, None).map(|(summary, _)| summary)
}

/// [`verify`], and then the end against `checkpoint` (see [`super::checkpoint`]): the chain
/// must reach the checkpoint's seq with the same hash there (records after it are fine: they
/// were written after the checkpoint was), must not start later than the record after the
/// history the writer rotated away itself, and must hold no `audit_cut` record. Returns the
/// summary and how many records follow the checkpoint.
///
/// # Errors
/// As [`verify`], and [`VerifyError::Truncated`], [`VerifyError::Rewritten`],
/// [`VerifyError::HistoryMissing`], [`VerifyError::CheckpointNotCovered`] or
/// [`VerifyError::CutRecorded`].
pub fn verify_with_checkpoint(
    files: &[PathBuf],
    checkpoint: &Checkpoint,
) -> Result<(VerifySummary, u64), VerifyError> {
    let (summary, checker) = check_files(files, Some(checkpoint.seq))?;
    if let Some((path, line, seq, log_seq, checkpoint_seq)) = checker.cut {
        return Err(VerifyError::CutRecorded {
            path,
            line,
            seq,
            log_seq,
            checkpoint_seq,
        });
    }
    let last = summary.head.seq;
    if checkpoint.seq > last {
        return Err(VerifyError::Truncated {
            last_seq: last,
            checkpoint_seq: checkpoint.seq,
        });
    }
    let first = summary.first_seq.unwrap_or(last + 1);
    if first > checkpoint.rotated_through + 1 {
        return Err(VerifyError::HistoryMissing {
            first_seq: first,
            rotated_through: checkpoint.rotated_through,
        });
    }
    if checkpoint.seq > 0 {
        match checker.watched {
            None => {
                return Err(VerifyError::CheckpointNotCovered {
                    checkpoint_seq: checkpoint.seq,
                    first_seq: first,
                });
            }
            Some(found) if found != checkpoint.hash => {
                return Err(VerifyError::Rewritten {
                    seq: checkpoint.seq,
                    expected: checkpoint.hash.clone(),
                    found,
                });
            }
            Some(_) => {}
        }
    }
    Ok((summary, last - checkpoint.seq))
}

fn check_files(
    files: &[PathBuf],
    watch: Option<u64>,
) -> Result<(VerifySummary, Checker), VerifyError> {
    if files.is_empty() {
        return Err(VerifyError::NoFiles);
    }
    let mut checker = Checker {
        head: None,
        first_seq: None,
        anchored: false,
        records: 0,
        watch,
        watched: None,
        cut: None,
    };
    for path in files {
        checker.file(path)?;
    }
    let summary = VerifySummary {
        files: files.len(),
        records: checker.records,
        first_seq: checker.first_seq,
        head: checker.head.clone().unwrap_or_else(ChainHead::genesis),
        anchored: checker.anchored || checker.records == 0,
    };
    Ok((summary, checker))
}
