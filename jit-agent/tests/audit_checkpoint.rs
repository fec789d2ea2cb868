//! The checkpoint beside the log (`PATH.head`): a log cut short, its end replaced, a rotated
//! file deleted, or a cut found by the writer at its next start all fail verification (and
//! `jitctl audit verify` exits non-zero); an untouched log, also one whose history the writer
//! rotated away itself, passes.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use jit_agent::audit::{
    AuditOptions, AuditWriter, DaemonStopped, FsyncPolicy, RecordBody, VerifyError, chain_files,
    checkpoint::{checkpoint_path, read_checkpoint},
    verify, verify_with_checkpoint,
};

fn body(n: usize) -> RecordBody {
    RecordBody::DaemonStopped(DaemonStopped {
        reason: format!("record {n} {}", "x".repeat(100)),
    })
}

fn options(path: &Path, fsync: FsyncPolicy, max_bytes: u64, keep: u32) -> AuditOptions {
    AuditOptions {
        path: path.to_owned(),
        fsync,
        max_bytes,
        keep,
    }
}

/// Writes `n` records with the daemon's default fsync policy; returns the log's files.
fn write_log(dir: &Path, n: usize, max_bytes: u64, keep: u32) -> (PathBuf, Vec<PathBuf>) {
    let path = dir.join("audit.jsonl");
    let mut writer =
        AuditWriter::open(options(&path, FsyncPolicy::Always, max_bytes, keep)).unwrap();
    for i in 0..n {
        writer.append(body(i)).unwrap();
    }
    drop(writer);
    let files = chain_files(&path, keep);
    (path, files)
}

fn check(path: &Path, keep: u32) -> Result<u64, VerifyError> {
    let checkpoint = read_checkpoint(&checkpoint_path(path)).unwrap().unwrap();
    verify_with_checkpoint(&chain_files(path, keep), &checkpoint).map(|(_, ahead)| ahead)
}

/// Keeps the first `n` lines of `path`.
fn cut_to(path: &Path, n: usize) {
    let text = fs::read_to_string(path).unwrap();
    let kept: String = text.split_inclusive('\n').take(n).collect();
    fs::write(path, kept).unwrap();
}

#[test]
fn an_untouched_log_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), 20, 0, 8);
    assert_eq!(check(&path, 8).unwrap(), 0);
    let checkpoint = read_checkpoint(&checkpoint_path(&path)).unwrap().unwrap();
    assert_eq!(checkpoint.seq, 20);
    assert_eq!(
        fs::metadata(checkpoint_path(&path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn records_cut_off_the_end_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (path, files) = write_log(dir.path(), 20, 0, 8);
    cut_to(&path, 17);
    // The chain alone cannot tell.
    assert!(verify(&files).is_ok());
    let err = check(&path, 8).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Truncated {
                last_seq: 17,
                checkpoint_seq: 20
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the log ends at seq 17, but its checkpoint says records up to seq 20 were written: 3 \
         record(s) were cut off the end"
    );
    // Truncated to nothing.
    fs::write(&path, "").unwrap();
    assert!(matches!(
        check(&path, 8),
        Err(VerifyError::Truncated { last_seq: 0, .. })
    ));
}

#[test]
fn a_replaced_last_record_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), 5, 0, 8);
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("record 4 ", "record X ");
    fs::write(&path, text).unwrap();
    let err = check(&path, 8).unwrap_err();
    assert!(
        matches!(err, VerifyError::Rewritten { seq: 5, .. }),
        "{err}"
    );
}

#[test]
fn a_deleted_rotated_file_fails_but_the_writers_own_rotation_passes() {
    let dir = tempfile::tempdir().unwrap();
    // ~190-byte records, 1 KiB files, 3 kept: a flood rotates most history away.
    let (path, files) = write_log(dir.path(), 60, 1024, 3);
    assert_eq!(files.len(), 4, "{files:?}");
    let checkpoint = read_checkpoint(&checkpoint_path(&path)).unwrap().unwrap();
    assert!(checkpoint.rotated_through > 0, "{checkpoint:?}");
    assert_eq!(
        check(&path, 3).unwrap(),
        0,
        "rotated away by the writer: accounted"
    );
    // Someone deletes the oldest file the writer kept.
    fs::remove_file(&files[0]).unwrap();
    let err = check(&path, 3).unwrap_err();
    assert!(matches!(err, VerifyError::HistoryMissing { .. }), "{err}");
    assert!(
        err.to_string().contains("a rotated file was deleted"),
        "{err}"
    );
}

#[test]
fn a_writer_opening_a_cut_log_records_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), 10, 0, 8);
    cut_to(&path, 6);
    let mut writer = AuditWriter::open(options(&path, FsyncPolicy::Always, 0, 8)).unwrap();
    let cut = writer.cut().cloned().expect("the writer saw the cut");
    assert_eq!((cut.log_seq, cut.checkpoint_seq), (6, 10));
    writer.append(body(99)).unwrap();
    drop(writer);
    // The checkpoint moved on, but the cut stays on the chain.
    let err = check(&path, 8).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::CutRecorded {
                seq: 7,
                log_seq: 6,
                checkpoint_seq: 10,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn jitctl_audit_verify_exits_non_zero_on_a_cut_log() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), 8, 0, 8);
    let config = dir.path().join("jit-agent.toml");
    fs::write(&config, format!("[audit]\npath = \"{}\"\n", path.display())).unwrap();
    let verify = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_jitctl"))
            .arg("--config")
            .arg(&config)
            .args(["audit", "verify"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = verify(&[]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("the log reaches it"),
        "{out:?}"
    );
    cut_to(&path, 5);
    for args in [&[][..], &[path.to_str().unwrap()][..]] {
        let out = verify(args);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("BROKEN: the log ends at seq 5"), "{stdout}");
    }
    // The checkpoint deleted too: the daemon's own log must have one.
    fs::remove_file(checkpoint_path(&path)).unwrap();
    let out = verify(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("does not exist"),
        "{out:?}"
    );
    // Asked to check the chain alone, it does (and says what it cannot see).
    let out = verify(&["--no-checkpoint"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no checkpoint compared"),
        "{out:?}"
    );
}
