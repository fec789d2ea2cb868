//! The audit log on disk: chaining, resuming, torn tails, rotation, fsync policy, verification.

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use jiff::Timestamp;
use jit_agent::audit::{
    AuditError, AuditOptions, AuditWriter, DaemonStopped, FsyncPolicy, GENESIS_PREV, Record,
    RecordBody, VerifyError, chain_files, rotated_path, verify,
};
use sha2::{Digest as _, Sha256};

fn body(reason: &str) -> RecordBody {
    RecordBody::DaemonStopped(DaemonStopped {
        reason: reason.to_owned(),
    })
}

fn t(sec: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + sec).unwrap()
}

fn options(path: &Path) -> AuditOptions {
    AuditOptions {
        path: path.to_owned(),
        fsync: FsyncPolicy::Never,
        max_bytes: 0,
        keep: 8,
    }
}

/// Reference hash, computed independently of the crate.
fn sha(line: &str) -> String {
    let mut hex = String::new();
    for b in Sha256::digest(line.as_bytes()) {
        write!(hex, "{b:02x}").unwrap();
    }
    hex
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn records(path: &Path) -> Vec<Record> {
    lines(path)
        .iter()
        .map(|l| Record::from_line(l.as_bytes()).unwrap())
        .collect()
}

fn write_n(w: &mut AuditWriter, from: u64, n: u64) {
    for i in from..from + n {
        w.append_at(body(&format!("record {i}")), t(i.cast_signed()))
            .unwrap();
    }
}

#[test]
fn chain_golden() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log/audit.jsonl");
    let mut w = AuditWriter::open(options(&path)).unwrap();
    let a = w.append_at(body("one"), t(0)).unwrap();
    w.append_at(body("two"), t(1)).unwrap();
    let got = lines(&path);
    let first = r#"{"v":1,"seq":1,"time":"2026-01-01T00:00:00.000000Z","type":"daemon_stopped","reason":"one","prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
    assert_eq!(got[0], first);
    assert_eq!(a.seq, 1);
    assert_eq!(a.line, first);
    assert_eq!(
        got[1],
        format!(
            r#"{{"v":1,"seq":2,"time":"2026-01-01T00:00:01.000000Z","type":"daemon_stopped","reason":"two","prev":"{}"}}"#,
            sha(first)
        )
    );
    assert_eq!(w.head().seq, 2);
    assert_eq!(w.head().hash, sha(&got[1]));
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let summary = verify(&[path]).unwrap();
    assert_eq!(summary.records, 2);
    assert_eq!(summary.first_seq, Some(1));
    assert!(summary.anchored);
    assert_eq!(summary.head, *w.head());
}

#[test]
fn resume_after_reopen_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_n(&mut AuditWriter::open(options(&path)).unwrap(), 1, 2);
    let mut w = AuditWriter::open(options(&path)).unwrap();
    assert_eq!(w.head().seq, 2);
    assert!(w.recovered().is_none());
    write_n(&mut w, 3, 1);
    let recs = records(&path);
    assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(recs[2].prev, sha(&lines(&path)[1]));
    assert_eq!(verify(&[path]).unwrap().records, 3);
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let first = AuditWriter::open(options(&path)).unwrap();
    let err = AuditWriter::open(options(&path)).unwrap_err();
    assert!(matches!(err, AuditError::Locked { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "audit log {}: another process is writing it (is another jit-agent running?)",
            path.display()
        )
    );
    drop(first);
    AuditWriter::open(options(&path)).unwrap();
}

#[test]
fn existing_file_with_loose_mode_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    fs::write(&path, "").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    AuditWriter::open(options(&path)).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn rotation_keeps_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let line_len = 1 + AuditWriter::open(options(&dir.path().join("probe")))
        .unwrap()
        .append_at(body("record 10"), t(10))
        .unwrap()
        .line
        .len() as u64;
    // Three records per file.
    let opts = AuditOptions {
        max_bytes: 3 * line_len + 1,
        keep: 100,
        ..options(&path)
    };
    let mut w = AuditWriter::open(opts.clone()).unwrap();
    write_n(&mut w, 10, 10);
    assert_eq!(w.stats().rotations, 3);
    assert_eq!(w.stats().records, 10);
    let files = chain_files(&path, 100);
    assert_eq!(
        files,
        [3, 2, 1]
            .map(|n| rotated_path(&path, n))
            .into_iter()
            .chain([path.clone()])
            .collect::<Vec<_>>()
    );
    assert_eq!(lines(&rotated_path(&path, 3)).len(), 3);
    assert_eq!(lines(&path).len(), 1);
    // The new file's first record chains to the rotated file's last one.
    let newest_rotated = lines(&rotated_path(&path, 1));
    assert_eq!(records(&path)[0].prev, sha(newest_rotated.last().unwrap()));
    assert_eq!(records(&path)[0].seq, 10);
    let summary = verify(&files).unwrap();
    assert_eq!((summary.records, summary.anchored), (10, true));
    drop(w);

    // Reopening continues in the current file; with keep = 2 the oldest files go.
    let mut w = AuditWriter::open(AuditOptions { keep: 2, ..opts }).unwrap();
    write_n(&mut w, 20, 3);
    assert!(!rotated_path(&path, 3).exists());
    let files = chain_files(&path, 2);
    assert_eq!(files.len(), 3);
    let summary = verify(&files).unwrap();
    assert!(!summary.anchored);
    assert_eq!(summary.head.seq, 13);
    assert!(
        summary
            .to_string()
            .contains("earlier records were not given")
    );
    // Verifying out of order fails at the first file boundary.
    let err = verify(&[files[1].clone(), files[0].clone()]).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Broken { path, line: 1, seq: Some(7), .. } if *path == files[0]),
        "{err}"
    );
}

#[test]
fn keep_zero_deletes_on_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut w = AuditWriter::open(AuditOptions {
        max_bytes: 10,
        keep: 0,
        ..options(&path)
    })
    .unwrap();
    write_n(&mut w, 1, 3);
    assert!(!rotated_path(&path, 1).exists());
    assert_eq!(records(&path)[0].seq, 3);
}

#[test]
fn resumes_from_the_rotated_file_when_the_current_one_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_n(&mut AuditWriter::open(options(&path)).unwrap(), 1, 3);
    let last = lines(&path).pop().unwrap();
    // A crash between rotating and writing the first record of the new file.
    fs::rename(&path, rotated_path(&path, 1)).unwrap();
    let mut w = AuditWriter::open(options(&path)).unwrap();
    write_n(&mut w, 4, 1);
    assert_eq!(records(&path)[0].seq, 4);
    assert_eq!(records(&path)[0].prev, sha(&last));
    assert_eq!(verify(&chain_files(&path, 8)).unwrap().records, 4);
}

#[test]
fn torn_tail_is_cut_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_n(&mut AuditWriter::open(options(&path)).unwrap(), 1, 3);
    let intact = fs::read(&path).unwrap();
    let torn = br#"{"v":1,"seq":4,"time":"2026-01-01T0"#;
    let mut bytes = intact.clone();
    bytes.extend_from_slice(torn);
    fs::write(&path, &bytes).unwrap();
    // A torn file does not verify...
    let err = verify(std::slice::from_ref(&path)).unwrap_err();
    assert!(
        err.to_string()
            .ends_with(":4: not valid JSON: EOF while parsing a string at line 1 column 35"),
        "{err}"
    );

    let mut w = AuditWriter::open(options(&path)).unwrap();
    let rec = w.recovered().unwrap().clone();
    assert_eq!(rec.offset, intact.len() as u64);
    assert_eq!(rec.bytes, torn.len() as u64);
    assert_eq!(rec.sha256, sha(std::str::from_utf8(torn).unwrap()));
    assert_eq!(rec.preview.as_bytes(), torn);
    assert_eq!(w.head().seq, 4);
    write_n(&mut w, 5, 1);
    // ...the recovered one does: intact lines, the recovery record, then new records.
    let recs = records(&path);
    assert!(fs::read(&path).unwrap().starts_with(&intact));
    assert_eq!(recs.len(), 5);
    assert!(matches!(&recs[3].body, RecordBody::AuditRecovered(r) if *r == rec));
    assert_eq!(verify(&[path]).unwrap().records, 5);
}

#[test]
fn torn_tail_of_zeros_after_power_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_n(&mut AuditWriter::open(options(&path)).unwrap(), 1, 2);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&vec![0; 100_000]);
    fs::write(&path, &bytes).unwrap();
    let w = AuditWriter::open(options(&path)).unwrap();
    let rec = w.recovered().unwrap();
    assert_eq!(rec.bytes, 100_000);
    assert_eq!(rec.preview, "\0".repeat(256));
    assert_eq!(verify(&[path]).unwrap().records, 3);
}

#[test]
fn torn_first_record_starts_the_chain_with_the_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    fs::write(&path, r#"{"v":1,"se"#).unwrap();
    let w = AuditWriter::open(options(&path)).unwrap();
    assert_eq!(w.recovered().unwrap().offset, 0);
    let recs = records(&path);
    assert_eq!((recs.len(), recs[0].seq), (1, 1));
    assert_eq!(recs[0].prev, GENESIS_PREV);
}

#[test]
fn a_bad_last_complete_line_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_n(&mut AuditWriter::open(options(&path)).unwrap(), 1, 1);
    let len = fs::metadata(&path).unwrap().len();
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"garbage\n");
    fs::write(&path, &bytes).unwrap();
    let err = AuditWriter::open(options(&path)).unwrap_err();
    assert!(matches!(err, AuditError::Corrupt { offset, .. } if offset == len));
    assert_eq!(
        err.to_string(),
        format!(
            "audit log {p}: the last complete line (at byte {len}) is not an audit record: \
             expected value at line 1 column 1; check the log with `jitctl audit verify`, then \
             move the file aside (the chain then continues from {p}.1 if it exists)",
            p = path.display()
        )
    );
    // Nothing was changed.
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_file_that_is_not_a_log_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    fs::write(&path, "root:x:0:0:root:/root:/bin/bash").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = AuditWriter::open(options(&path)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "audit log {}: the bytes at offset 0, after the last complete line, are neither a \
             torn record nor zeros; is this really a jit audit log? Nothing was changed",
            path.display()
        )
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "root:x:0:0:root:/root:/bin/bash"
    );
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn fsync_policies() {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str, fsync| {
        AuditWriter::open(AuditOptions {
            fsync,
            ..options(&dir.path().join(name))
        })
        .unwrap()
    };

    let mut always = open("always", FsyncPolicy::Always);
    write_n(&mut always, 1, 3);
    assert_eq!(always.stats().fsyncs, 3);

    let mut never = open("never", FsyncPolicy::Never);
    write_n(&mut never, 1, 3);
    never.sync_if_due().unwrap();
    assert_eq!(never.stats().fsyncs, 0);
    never.sync().unwrap(); // an explicit request is honoured
    assert_eq!(never.stats().fsyncs, 1);

    let mut every = open("every", FsyncPolicy::Interval(Duration::ZERO));
    write_n(&mut every, 1, 3);
    assert_eq!(every.stats().fsyncs, 3);

    let mut hourly = open("hourly", FsyncPolicy::Interval(Duration::from_hours(1)));
    write_n(&mut hourly, 1, 3);
    hourly.sync_if_due().unwrap();
    assert_eq!(hourly.stats().fsyncs, 0);
    hourly.sync().unwrap();
    hourly.sync().unwrap(); // nothing new to sync
    assert_eq!(hourly.stats().fsyncs, 1);
}

/// Writes a small chain and returns its path and lines.
fn sample(dir: &Path) -> (PathBuf, Vec<String>) {
    let path = dir.join("audit.jsonl");
    write_n(&mut AuditWriter::open(options(&path)).unwrap(), 1, 4);
    let l = lines(&path);
    (path, l)
}

fn verify_err(path: &Path, content: &str) -> String {
    fs::write(path, content).unwrap();
    verify(&[path.to_owned()]).unwrap_err().to_string()
}

#[test]
fn verify_error_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (path, l) = sample(dir.path());
    let p = path.display().to_string();
    let join = |ls: &[String]| {
        ls.iter()
            .flat_map(|l| [l.as_str(), "\n"])
            .collect::<String>()
    };

    assert_eq!(verify(&[]).unwrap_err().to_string(), "no files to verify");
    let missing = dir.path().join("missing");
    assert_eq!(
        verify(std::slice::from_ref(&missing))
            .unwrap_err()
            .to_string(),
        format!(
            "{}: No such file or directory (os error 2)",
            missing.display()
        )
    );

    // A record removed.
    let err = verify_err(&path, &join(&[l[0].clone(), l[2].clone()]));
    assert_eq!(
        err,
        format!("{p}:2: seq 3: seq 3 breaks the sequence: expected 2")
    );

    // A record replaced by another with the right seq but different content.
    let forged = l[1].replace("record 2", "record X");
    let err = verify_err(&path, &join(&[l[0].clone(), forged, l[2].clone()]));
    assert_eq!(
        err,
        format!(
            "{p}:3: seq 3: prev {} does not match the previous record's hash {}",
            sha(&l[1]),
            sha(&l[1].replace("record 2", "record X"))
        )
    );

    let err = verify_err(&path, &format!("{}\n{{\"v\":1,\n", l[0]));
    assert_eq!(
        err,
        format!("{p}:2: not valid JSON: EOF while parsing a value at line 1 column 7")
    );
    let err = verify_err(&path, "{\"v\":1}\n");
    assert_eq!(
        err,
        format!("{p}:1: not an audit record: missing field `seq` at line 1 column 7")
    );
    let err = verify_err(&path, &format!("{}\n", l[0].replace("\"v\":1", "\"v\":2")));
    assert_eq!(
        err,
        format!("{p}:1: seq 1: unsupported schema version 2 (this build reads version 1)")
    );
    let err = verify_err(
        &path,
        &format!("{}\n", l[1].replace("\"seq\":2", "\"seq\":1")),
    );
    assert!(
        err.starts_with(&format!(
            "{p}:1: seq 1: seq 1 starts a chain, so its prev must be 64 zeros, not "
        )),
        "{err}"
    );
    let err = verify_err(
        &path,
        &format!("{}\n", l[0].replace("\"seq\":1", "\"seq\":7")),
    );
    assert_eq!(
        err,
        format!("{p}:1: seq 7: prev of 64 zeros starts a chain, but seq is 7, not 1")
    );
    let err = verify_err(
        &path,
        &format!("{}\n", l[1].replace("\"prev\":\"", "\"prev\":\"X")),
    );
    assert_eq!(
        err,
        format!("{p}:1: seq 2: prev is not 64 lowercase hex digits")
    );
    let err = verify_err(&path, &format!("{}\n{}", l[0], l[1]));
    assert_eq!(
        err,
        format!(
            "{p}:2: seq 2: the line has no newline: a torn write (the writer cuts such a tail \
             off when it next opens the log)"
        )
    );
    // A chain that starts mid-way is fine on its own.
    fs::write(&path, join(&l[2..])).unwrap();
    let summary = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!((summary.first_seq, summary.anchored), (Some(3), false));
    // So is an empty file.
    fs::write(&path, "").unwrap();
    let summary = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!((summary.records, summary.anchored), (0, true));
    assert_eq!(summary.to_string(), "OK: 1 file(s), no records");
}

/// Flipping any single byte is detected: on the changed line itself, or on the next line
/// (whose `prev` no longer matches); a change to the last line changes the chain head, which
/// is what an externally recorded head catches.
#[test]
fn tamper_any_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (path, l) = sample(dir.path());
    let original = fs::read(&path).unwrap();
    let good = verify(std::slice::from_ref(&path)).unwrap();
    let mut line_of = Vec::new();
    for (i, line) in l.iter().enumerate() {
        line_of.extend(std::iter::repeat_n(i as u64 + 1, line.len() + 1));
    }
    let last = l.len() as u64;
    for (at, &line) in line_of.iter().enumerate() {
        for flip in [0x01_u8, 0x20, 0x80] {
            let mut bytes = original.clone();
            bytes[at] ^= flip;
            fs::write(&path, &bytes).unwrap();
            match verify(std::slice::from_ref(&path)) {
                Err(VerifyError::Broken { line: found, .. }) => assert!(
                    found == line || found == line + 1,
                    "byte {at} (line {line}) ^ {flip:#x}: reported line {found}"
                ),
                Err(e) => panic!("byte {at}: unexpected error {e}"),
                Ok(summary) => {
                    assert_eq!(line, last, "byte {at} ^ {flip:#x} not detected");
                    assert_ne!(summary.head, good.head, "byte {at} ^ {flip:#x}");
                }
            }
        }
    }
}

/// The example in docs/audit-schema.md is a valid chain, and its table is what `format_line`
/// prints for it.
#[test]
fn schema_doc_example_verifies() {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/audit-schema.md"))
            .unwrap();
    let block = |fence: &str| {
        let start = doc.find(fence).unwrap() + fence.len() + 1;
        doc[start..start + doc[start..].find("```").unwrap()].to_owned()
    };
    let jsonl = block("```jsonl");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    fs::write(&path, &jsonl).unwrap();
    let summary = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!((summary.records, summary.anchored), (5, true));
    for line in jsonl.lines() {
        let rec = Record::from_line(line.as_bytes()).unwrap();
        assert_eq!(rec.to_line().unwrap(), line.as_bytes(), "round trip");
    }
    let table: String = std::iter::once(jit_agent::audit::table::table_header())
        .chain(
            jsonl
                .lines()
                .map(|l| jit_agent::audit::table::format_line(l.as_bytes())),
        )
        .map(|l| l + "\n")
        .collect();
    let doc_table = doc[doc.find("TIME ").unwrap()..]
        .split("```")
        .next()
        .unwrap();
    assert_eq!(table, doc_table);
}
