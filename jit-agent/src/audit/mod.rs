//! The audit trail: every decision, hold, approval and daemon event as one line of JSON in a
//! hash-chained log (docs/ARCHITECTURE.md, I4).
//!
//! - [`record`]: the typed schema, and the conversion from kernel [`Event`](jit_common::event::Event)s.
//! - [`ProcessContext`]: argv, cwd, user and ancestry of the process behind an event (procfs).
//! - [`AuditWriter`]: appends, resumes the chain on open, cuts torn tails, fsyncs, rotates.
//! - [`verify()`]: checks files against the chain.
//! - [`table`]: the human one-line-per-record view.
//! - [`AuditReader`] and [`AuditFilter`]: reading the log and its rotated files in order, following
//!   it across rotations, and `jitctl audit`'s filters.
//! - [`export`]: records in journald's and syslog's formats (docs/log-export.md).
//!
//! The schema below is also `docs/audit-schema.md` in the repository (this text *is* that file).
//!
#![doc = include_str!("../../../docs/audit-schema.md")]

mod chain;
pub mod checkpoint;
pub mod export;
mod filter;
mod process;
mod reader;
pub mod record;
pub mod table;
mod verify;
mod writer;

pub use chain::{ChainHead, GENESIS_PREV, line_hash, to_hex};
pub use filter::AuditFilter;
pub use process::{
    ExecArgs, MAX_ARGV_BYTES, MAX_PARENTS, ParentProcess, ProcessContext, exec_args, shown_env,
};
pub use reader::AuditReader;
pub use record::{
    Approval, ApprovalDecision, AuditCut, AuditRecovered, AuditRefused, DaemonStarted,
    DaemonStopped, EventsDropped, JustificationRecord, KernelRecord, PolicyLoaded, PolicyRejected,
    Record, RecordBody, SCHEMA_VERSION,
};
pub use verify::{Problem, VerifyError, VerifySummary, verify, verify_with_checkpoint};
pub use writer::{
    Appended, AuditError, AuditOptions, AuditWriter, FsyncPolicy, WriterStats, chain_files,
    rotated_path,
};
