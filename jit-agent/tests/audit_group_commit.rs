//! Group commit: records written with `append_unsynced` and committed together cost one
//! `fdatasync` under `fsync = "always"`, and the committed log and its checkpoint are exactly
//! what per-record appends would have made (the daemon's audit sink relies on both;
//! docs/ARCHITECTURE.md, I4). Prints the time per record both ways, on this machine's disk.
use std::{path::Path, time::Instant};

use jiff::Timestamp;
use jit_agent::audit::{
    AuditOptions, AuditWriter, DaemonStopped, FsyncPolicy, RecordBody, chain_files,
    checkpoint::{checkpoint_path, read_checkpoint},
    verify_with_checkpoint,
};

const RECORDS: u64 = 200;
const BATCH: u64 = 50;

fn body(n: u64) -> RecordBody {
    RecordBody::DaemonStopped(DaemonStopped {
        reason: format!("record {n}"),
    })
}

fn open(path: &Path) -> AuditWriter {
    AuditWriter::open(AuditOptions {
        path: path.to_owned(),
        fsync: FsyncPolicy::Always,
        max_bytes: 0,
        keep: 0,
    })
    .unwrap()
}

/// The checkpoint's sequence number and the chain checked against it.
fn verified(path: &Path) -> u64 {
    let checkpoint = read_checkpoint(&checkpoint_path(path)).unwrap().unwrap();
    let (summary, ahead) = verify_with_checkpoint(&chain_files(path, 0), &checkpoint).unwrap();
    assert_eq!(ahead, 0, "the checkpoint covers every committed record");
    summary.head.seq
}

#[test]
fn a_batch_costs_one_fdatasync_and_makes_the_same_log() {
    let dir = tempfile::tempdir().unwrap();

    let single = dir.path().join("single.jsonl");
    let mut writer = open(&single);
    let before = writer.stats().fsyncs;
    let started = Instant::now();
    for n in 0..RECORDS {
        writer.append(body(n)).unwrap();
    }
    let per_record = started.elapsed();
    assert_eq!(writer.stats().fsyncs - before, RECORDS, "one per record");
    let single_seq = writer.head().seq;
    drop(writer);

    let batched = dir.path().join("batched.jsonl");
    let mut writer = open(&batched);
    let before = writer.stats().fsyncs;
    let started = Instant::now();
    for batch in 0..RECORDS / BATCH {
        for n in 0..BATCH {
            writer
                .append_unsynced(body(batch * BATCH + n), Timestamp::now())
                .unwrap();
        }
        writer.commit().unwrap();
        assert_eq!(
            writer.stats().fsyncs - before,
            batch + 1,
            "one fdatasync per committed batch"
        );
    }
    let grouped = started.elapsed();
    let batched_seq = writer.head().seq;
    drop(writer);

    assert_eq!(single_seq, batched_seq);
    assert_eq!(verified(&single), single_seq);
    assert_eq!(verified(&batched), batched_seq);
    eprintln!(
        "audit append, fsync always: {:?} per record one by one, {:?} per record in batches of \
         {BATCH}",
        per_record / u32::try_from(RECORDS).unwrap(),
        grouped / u32::try_from(RECORDS).unwrap()
    );
}
