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
        self.head = Some(ChainHead {
            seq,
            hash: line_hash(line),
        });
        self.records += 1;
        Ok(())
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
    if files.is_empty() {
        return Err(VerifyError::NoFiles);
    }
    let mut checker = Checker {
        head: None,
        first_seq: None,
        anchored: false,
        records: 0,
    };
    for path in files {
        checker.file(path)?;
    }
    Ok(VerifySummary {
        files: files.len(),
        records: checker.records,
        first_seq: checker.first_seq,
        head: checker.head.unwrap_or_else(ChainHead::genesis),
        anchored: checker.anchored || checker.records == 0,
    })
}
