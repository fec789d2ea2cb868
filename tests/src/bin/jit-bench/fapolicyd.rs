//! Debian bookworm's fapolicyd (a fanotify permission daemon: every exec and open on a watched
//! file system waits for its answer) timing the same operations as jit, in the same VM.
//!
//! `cargo xtask bench` extracts its package into the image. The rules are the `known-libs` set
//! of its sample rules, the set upstream installs by default (Debian's own `rules.d` holds only
//! `deny_audit perm=execute all : all`, which lets nothing run); the trust database is a file
//! with one entry, the program the `exec` loop runs. It watches `tmpfs`, where the bench's
//! files are (`/tmp`).
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{BenchCgroup, Case, EXEC_PATH, Settings, ops::OPS, report, worker};

const FAPOLICYD: &str = "/usr/sbin/fapolicyd";
const LOG: &str = "/tmp/fapolicyd.log";
/// fapolicyd's sample rules and the ones of the `known-libs` set, in their order.
const SAMPLES: &str = "/usr/share/fapolicyd/sample-rules";
const KNOWN_LIBS: [&str; 11] = [
    "10-languages.rules",
    "20-dracut.rules",
    "21-updaters.rules",
    "30-patterns.rules",
    "40-bad-elf.rules",
    "41-shared-obj.rules",
    "42-trusted-elf.rules",
    "70-trusted-lang.rules",
    "72-shell.rules",
    "90-deny-execute.rules",
    "95-allow-open.rules",
];
/// What its log says once it decides.
const READY: &str = "Starting to listen for events";

/// Runs fapolicyd, times every op in `other` under it over `settings.reps` repetitions, prints
/// a `bench <op>/fapolicyd` line per op (ratio to `none`), and stops it.
pub fn run(settings: &Settings, other: &BenchCgroup, none: Option<&Case>) -> Result<()> {
    configure()?;
    let mut daemon = start()?;
    let result = measure(settings, other);
    let _ = daemon.kill();
    let _ = daemon.wait();
    let samples = result?;
    for (index, op) in OPS.iter().enumerate() {
        let mut values: Vec<u64> = samples.iter().map(|ns| ns[index]).collect();
        values.sort_unstable();
        let median = values[values.len() / 2];
        let base = none
            .and_then(|case| report::median_of(case, index))
            .unwrap_or(median);
        println!("{}", report::line(op.name(), "fapolicyd", median, base));
    }
    Ok(())
}

fn configure() -> Result<()> {
    let conf = fs::read_to_string("/etc/fapolicyd/fapolicyd.conf")?;
    let conf: String = conf
        .lines()
        .map(|line| match line.split('=').next().map(str::trim) {
            Some("trust") => "trust = file".to_owned(),
            Some("watch_fs") => "watch_fs = tmpfs".to_owned(),
            _ => line.to_owned(),
        })
        .map(|line| line + "\n")
        .collect();
    fs::write("/etc/fapolicyd/fapolicyd.conf", conf)?;
    let mut rules = String::new();
    for name in KNOWN_LIBS {
        rules += &fs::read_to_string(format!("{SAMPLES}/{name}"))
            .with_context(|| format!("reading {SAMPLES}/{name}"))?;
    }
    fs::write("/etc/fapolicyd/fapolicyd.rules", rules)?;
    let sum = Command::new("sha256sum").arg(EXEC_PATH).output()?;
    ensure!(sum.status.success(), "sha256sum {EXEC_PATH} failed");
    let sum = String::from_utf8(sum.stdout)?;
    let hash = sum
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?;
    let size = fs::metadata(EXEC_PATH)?.len();
    fs::write(
        "/etc/fapolicyd/fapolicyd.trust",
        format!("{EXEC_PATH} {size} {hash}\n"),
    )?;
    for dir in ["/var/lib/fapolicyd", "/run/fapolicyd", "/var/run"] {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777))?;
    }
    Ok(())
}

fn start() -> Result<Child> {
    let log = fs::File::create(LOG)?;
    let mut child = Command::new(FAPOLICYD)
        .arg("--debug-deny")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {FAPOLICYD}"))?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_mins(3) {
        if let Some(status) = child.try_wait()? {
            bail!(
                "fapolicyd exited with {status}:\n{}",
                fs::read_to_string(LOG).unwrap_or_default()
            );
        }
        if fs::read_to_string(LOG).is_ok_and(|log| log.contains(READY)) {
            println!(
                "fapolicyd: listening after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(child);
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    bail!(
        "fapolicyd did not say {READY:?} within 3 minutes:\n{}",
        fs::read_to_string(LOG).unwrap_or_default()
    )
}

fn measure(settings: &Settings, other: &BenchCgroup) -> Result<Vec<[u64; OPS.len()]>> {
    // Discarded, as the first repetition of every round: caches of a fresh daemon.
    worker::spawn(&other.0, settings).context("the first run under fapolicyd")?;
    let mut samples = Vec::new();
    for rep in 1..=settings.reps {
        let report = worker::spawn(&other.0, settings).with_context(|| {
            format!(
                "repetition {rep} under fapolicyd; its log:\n{}",
                fs::read_to_string(LOG).unwrap_or_default()
            )
        })?;
        samples.push(report.ns);
    }
    Ok(samples)
}
