//! The real daemon, measured: 100,000 rules compiled and installed (time, and the daemon's
//! memory after), the hold round trip, and audited write opens under load.
//!
//! Each measurement uses `jit-agent` as installed in the VM (`/jit/bin/jit-agent`) with a policy
//! directory of its own, through its control socket as `jitctl` would. Times are guest times
//! (see README, "Benchmarks": under the instruction-counting clock, instruction counts).
use std::{
    ffi::CString,
    fmt::Write as _,
    fs,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use jit_agent::{
    approval::ReviewAction,
    control::{self, Request, Response, Status},
};
use jit_tests::daemon::{Daemon, DaemonFiles};

use crate::{WORK_DIR, ops::open_for_write, worker::join_cgroup};

/// First argument that makes this binary one of this module's workers.
pub const ARG: &str = "--daemon-worker";

/// The bench agent's cgroup (the daemon creates it from the policy).
const CGROUP: &str = "jit-bench-daemon";
/// The file whose write opens the policy holds.
const HELD: &str = "/tmp/jit-bench/held";
/// The directory whose write opens the policy audits.
const AUDITED: &str = "/tmp/jit-bench/audited";
/// Rules in the big policy.
const RULES: usize = 100_000;
/// Hold round trips.
const HOLD_ROUNDS: usize = 30;
/// How long each audit worker opens files.
const AUDIT_FOR: Duration = Duration::from_secs(2);
/// A program whose execs a rule with an `args` condition holds and the daemon allows.
const AUTO: &str = "/tmp/jit-bench/auto/true";
/// The same program under another path, allowed by the kernel alone: the baseline.
const PLAIN: &str = "/tmp/jit-bench/plain/true";
/// Execs measured of each.
const EXEC_ROUNDS: usize = 30;

/// The bench agent's policy: a held file, an audited directory, and `fillers` more rules (exact
/// `write` rules on paths nobody opens).
fn policy(fillers: usize) -> String {
    let mut text = format!(
        "[agent]\nname = \"bench-agent\"\ncgroups = [\"{CGROUP}\"]\ndefault = \"deny\"\n\n\
         [escalation]\napprovers = {{ users = [\"root\"] }}\ntimeout = \"2m\"\n\
         # The bench's reviewer is root, who also places the workers in the agent's cgroup.\n\
         self_approval = true\n\n\
         [[rule]]\nname = \"held\"\nop = \"write\"\npath = \"{HELD}\"\ndecision = \"hold\"\n\n\
         [[rule]]\nname = \"audited\"\nop = \"write\"\npath = \"{AUDITED}/\"\ndecision = \"audit\"\n\n\
         [[rule]]\nname = \"auto\"\nop = \"exec\"\npath = \"{AUTO}\"\nargs = [\"auto\"]\n\
         decision = \"allow\"\n\n\
         [[rule]]\nname = \"plain\"\nop = \"exec\"\npath = \"{PLAIN}\"\ndecision = \"allow\"\n"
    );
    for i in 0..fillers {
        let _ = write!(
            text,
            "\n[[rule]]\nname = \"r{i}\"\nop = \"write\"\npath = \"/bench/rules/r{i}\"\n\
             decision = \"allow\"\n"
        );
    }
    text
}

pub fn run() -> Result<()> {
    fs::write(HELD, b"").with_context(|| format!("creating {HELD}"))?;
    fs::create_dir_all(AUDITED).with_context(|| format!("creating {AUDITED}"))?;
    let mut files = DaemonFiles::new("bench");
    files.cgroups.push(CGROUP.to_owned());
    // Info, not debug: the audit load would otherwise also time the daemon's own log.
    let config = fs::read_to_string(&files.config)?.replace("\"debug\"", "\"info\"");
    fs::write(&files.config, config)?;
    files.write_policy("bench.toml", &policy(0));
    for program in [AUTO, PLAIN] {
        let dir = Path::new(program).parent().context("a directory")?;
        fs::create_dir_all(dir)?;
        // A copy of the static busybox: the exec needs no loader or library rules.
        fs::copy(fs::canonicalize("/bin/true")?, program)
            .with_context(|| format!("installing {program}"))?;
    }
    let daemon = files.start();

    // The hold and audit measurements first, with the small policy: with 100,000 rules loaded
    // they would also time what scales with the rules on the daemon's side.
    hold_round_trip(&files)?;
    exec_hold_auto(&files)?;
    audit_under_load(&files, &daemon)?;
    rules(&files)?;
    Ok(())
}

fn call(files: &DaemonFiles, request: &Request) -> Result<Response> {
    Ok(control::call(
        &files.socket,
        request,
        Duration::from_mins(5),
    )?)
}

fn status(files: &DaemonFiles) -> Result<Status> {
    match call(files, &Request::Status)? {
        Response::Status(status) => Ok(*status),
        other => bail!("status: unexpected answer {other:?}"),
    }
}

/// `VmRSS` and `VmHWM` (peak) of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// 100,000 rules: written to the policy directory, reloaded (read, validated, compiled,
/// installed into the kernel's maps, switched to), timed; then the daemon's resident memory.
fn rules(files: &DaemonFiles) -> Result<()> {
    let before = status(files)?;
    let (rss_before, _) = rss_kib(before.pid)?;
    let text = policy(RULES - 2);
    let bytes = text.len();
    files.write_policy("bench.toml", &text);
    let started = Instant::now();
    let answer = call(files, &Request::Reload)?;
    let reload = started.elapsed();
    let Response::Reloaded { generation, .. } = answer else {
        bail!("reloading {RULES} rules: {answer:?}");
    };
    // The daemon also reloads on its own when it sees the file change (every second): then
    // this reload waited for that one, and its time is not one reload's.
    ensure!(
        generation == before.policy_generation + 1,
        "the daemon reloaded on its own while the bench asked (generation {} -> {generation}); \
         run the bench again",
        before.policy_generation
    );
    let after = status(files)?;
    let rules: usize = after.agents.iter().map(|a| a.rules).sum();
    ensure!(
        rules >= RULES,
        "the daemon reports {rules} rules, not {RULES}"
    );
    let (rss, peak) = rss_kib(after.pid)?;

    // Where the time goes: the same reading and compiling, in this process.
    let parsing = Instant::now();
    let set =
        jit_agent::policy::load_dir(&files.policies).map_err(|err| anyhow::anyhow!("{err:?}"))?;
    let parsing = parsing.elapsed();
    let compiling = Instant::now();
    let compiled = jit_agent::policy::compile(&set, jiff::Timestamp::now());
    let compiling = compiling.elapsed();
    drop(compiled);

    println!(
        "bench rules/{RULES} reload_ms={} rss_kib={rss} peak_rss_kib={peak} \
         rss_before_kib={rss_before}",
        reload.as_millis()
    );
    println!(
        "  ({bytes} bytes of TOML; of the reload, reading and validating took {} ms and \
         compiling {} ms when done again in the bench process; the rest is installing)",
        parsing.as_millis(),
        compiling.as_millis()
    );
    Ok(())
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the clock into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn percentile(values: &mut [u64], p: usize) -> u64 {
    values.sort_unstable();
    values[(values.len() * p / 100).min(values.len() - 1)]
}

/// Execs of `program auto` by a worker in the agent's cgroup: the time of each, fork to reaped.
fn exec_times(program: &str) -> Result<Vec<u64>> {
    let exe = std::env::current_exe()?;
    let cgroup = Path::new(crate::CGROUP_ROOT).join(CGROUP);
    let out = Command::new(&exe)
        .arg(ARG)
        .arg("exec")
        .arg(&cgroup)
        .arg(program)
        .arg(EXEC_ROUNDS.to_string())
        .stdout(Stdio::piped())
        .output()
        .context("running the exec worker")?;
    ensure!(
        out.status.success(),
        "the exec worker failed: {}",
        out.status
    );
    let text = String::from_utf8(out.stdout)?;
    text.split_whitespace()
        .map(|t| t.parse().context("exec worker output"))
        .collect()
}

/// `exec/hold-auto`: an exec the kernel holds for a rule with an `args` condition and the
/// daemon allows by it (read the command line, decide, audit, answer), against the same program
/// allowed by the kernel alone, in the same daemon run.
fn exec_hold_auto(files: &DaemonFiles) -> Result<()> {
    let mut plain = exec_times(PLAIN)?;
    let mut auto = exec_times(AUTO)?;
    let (plain50, plain99) = (percentile(&mut plain, 50), percentile(&mut plain, 99));
    let (auto50, auto99) = (percentile(&mut auto, 50), percentile(&mut auto, 99));
    // Every one of them was decided by the daemon, not by a reviewer or a timeout. The daemon
    // answers the kernel first and then audits its answer: the last record may still be on
    // its way when the last exec returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    let decided = loop {
        let log = fs::read_to_string(&files.audit)?;
        let decided = log
            .lines()
            .filter(|l| {
                l.contains("\"type\":\"approval\"") && l.contains("\"reviewer\":\"policy\"")
            })
            .count();
        if decided >= EXEC_ROUNDS || Instant::now() >= deadline {
            break decided;
        }
        thread::sleep(Duration::from_millis(20));
    };
    ensure!(
        decided >= EXEC_ROUNDS,
        "{decided} execs decided by the policy's conditions, not {EXEC_ROUNDS}"
    );
    #[expect(clippy::cast_precision_loss, reason = "a ratio of nanosecond counts")]
    let ratio = auto50 as f64 / plain50.max(1) as f64;
    println!("bench exec/hold-auto median_ns={auto50} ratio={ratio:.2}");
    println!(
        "  (ratio to an exec the kernel allows alone in the same run, median {plain50} ns; \
         p99 {auto99} ns against {plain99} ns: the daemon's part adds {} us at the median, \
         {} us at p99; {EXEC_ROUNDS} execs each)",
        auto50.saturating_sub(plain50) / 1_000,
        auto99.saturating_sub(plain99) / 1_000
    );
    Ok(())
}

/// 30 write opens of the held file, each approved (once) by a reviewer on the control socket as
/// soon as it sees it; from the moment the worker starts the open to the moment it returns.
fn hold_round_trip(files: &DaemonFiles) -> Result<()> {
    let exe = std::env::current_exe()?;
    let cgroup = Path::new(crate::CGROUP_ROOT).join(CGROUP);
    let (mut total, mut seen, mut resumed, mut answered) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..HOLD_ROUNDS {
        let child = Command::new(&exe)
            .arg(ARG)
            .arg("hold")
            .arg(&cgroup)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the hold worker")?;
        let deadline = Instant::now() + Duration::from_mins(1);
        let view = loop {
            let Response::Pending { requests } = call(files, &Request::Pending)? else {
                bail!("pending: unexpected answer");
            };
            if let Some(view) = requests.into_iter().find(|v| v.path == HELD) {
                break view;
            }
            ensure!(
                Instant::now() < deadline,
                "round {round}: nothing held within a minute"
            );
            thread::sleep(Duration::from_millis(1));
        };
        let seen_at = now_ns();
        let answer = call(
            files,
            &Request::Decide {
                id: view.id,
                action: ReviewAction::Approve {
                    once: true,
                    for_secs: None,
                },
                reason: Some("bench".to_owned()),
            },
        )?;
        ensure!(
            matches!(answer, Response::Decided(_)),
            "approving: {answer:?}"
        );
        let decided_at = now_ns();
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "the hold worker failed: {}",
            out.status
        );
        let text = String::from_utf8(out.stdout)?;
        let times: Vec<u64> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("hold worker output {text:?}"))?;
        let [start, end] = times[..] else {
            bail!("hold worker output {text:?}");
        };
        total.push(end - start);
        seen.push(seen_at.saturating_sub(start));
        resumed.push(end.saturating_sub(seen_at));
        answered.push(decided_at.saturating_sub(seen_at));
    }
    let us = |ns: u64| ns / 1_000;
    println!(
        "bench hold/approve p50_us={} p99_us={} rounds={HOLD_ROUNDS}",
        us(percentile(&mut total, 50)),
        us(percentile(&mut total, 99))
    );
    println!(
        "  (hold to seen by the reviewer, polling every 1 ms: p50 {} us, p99 {} us; seen to \
         resumed: p50 {} us, p99 {} us; seen to the approval's answer: p50 {} us, p99 {} us)",
        us(percentile(&mut seen, 50)),
        us(percentile(&mut seen, 99)),
        us(percentile(&mut resumed, 50)),
        us(percentile(&mut resumed, 99)),
        us(percentile(&mut answered, 50)),
        us(percentile(&mut answered, 99)),
    );
    Ok(())
}

fn counter(status: &Status, name: &str) -> u64 {
    status
        .counters
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| *v)
}

/// N processes (N = CPUs) opening files of the audited directory for writing as fast as they
/// can for [`AUDIT_FOR`]; then what the kernel emitted, what reached the audit log and what
/// was dropped.
fn audit_under_load(files: &DaemonFiles, daemon: &Daemon) -> Result<()> {
    let n = thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for i in 0..n {
        fs::write(format!("{AUDITED}/f{i}"), b"")?;
    }
    let exe = std::env::current_exe()?;
    let cgroup = Path::new(crate::CGROUP_ROOT).join(CGROUP);
    let before = status(files)?;
    let audited_before = audited_records(files);
    let started = Instant::now();
    let children = (0..n)
        .map(|i| {
            Command::new(&exe)
                .arg(ARG)
                .arg("audit")
                .arg(&cgroup)
                .arg(format!("{AUDITED}/f{i}"))
                .arg(AUDIT_FOR.as_millis().to_string())
                .stdout(Stdio::piped())
                .spawn()
                .context("starting an audit worker")
        })
        .collect::<Result<Vec<_>>>()?;
    let (mut opens, mut refused) = (0u64, 0u64);
    for child in children {
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "an audit worker failed: {}",
            out.status
        );
        let out = String::from_utf8(out.stdout)?;
        let (done, failed) = out.trim().split_once(' ').context("audit worker output")?;
        opens += done.parse::<u64>()?;
        refused += failed.parse::<u64>()?;
    }
    let elapsed = started.elapsed();
    let after = status(files)?;
    // `events_emitted` counts the records the ring buffer took, `events_dropped` those it had
    // no room for: together, every event the kernel produced.
    let written = counter(&after, "events_emitted") - counter(&before, "events_emitted");
    let dropped = counter(&after, "events_dropped") - counter(&before, "events_dropped");
    let emitted = written + dropped;
    // The daemon writes what it read; wait until it has caught up (or stops making progress).
    let mut audited = audited_records(files) - audited_before;
    let mut last_progress = Instant::now();
    while audited < written && last_progress.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(100));
        let now = audited_records(files) - audited_before;
        if now > audited {
            last_progress = Instant::now();
        }
        audited = now;
    }
    let caught_up = started.elapsed();
    let rate = u128::from(emitted) * 1_000 / elapsed.as_millis().max(1);
    let kernel_refused = counter(&after, "audit_refused") - counter(&before, "audit_refused");
    println!(
        "bench audit/inside events={emitted} audited={audited} dropped={dropped} \
         refused={refused} rate={rate}"
    );
    if kernel_refused != refused {
        println!("  warning: the kernel counted {kernel_refused} refusals, the workers {refused}");
    }
    println!(
        "  ({n} processes, {opens} write opens in {:.2} s; {written} records in the ring \
         buffer, all in the audit log {:.2} s after the start; kernel audit decisions {}; \
         refused: audited opens the ring buffer had no room for)",
        elapsed.as_secs_f64(),
        caught_up.as_secs_f64(),
        counter(&after, "audit") - counter(&before, "audit"),
    );
    if audited != written {
        println!(
            "  warning: the ring buffer took {written} records, the audit log has {audited}; \
             daemon log {}",
            daemon.log.display()
        );
    }
    Ok(())
}

/// Audit records of write opens below [`AUDITED`] so far.
fn audited_records(files: &DaemonFiles) -> u64 {
    let text = fs::read_to_string(&files.audit).unwrap_or_default();
    let needle = format!("\"{AUDITED}/");
    text.lines().filter(|line| line.contains(&needle)).count() as u64
}

/// The workers: `hold CGROUP` opens [`HELD`] once for writing and prints when it started and
/// when the open returned (`CLOCK_MONOTONIC` ns); `audit CGROUP FILE MS` opens `FILE` for
/// writing until `MS` milliseconds have passed and prints how many times it did.
pub fn worker(args: &[String]) -> Result<()> {
    match args {
        [mode, cgroup] if mode == "hold" => {
            let path = CString::new(HELD)?;
            join_cgroup(Path::new(cgroup))?;
            let start = now_ns();
            open_for_write(&path).context("the held open")?;
            let end = now_ns();
            println!("{start} {end}");
            Ok(())
        }
        [mode, cgroup, program, rounds] if mode == "exec" => {
            let path = CString::new(program.as_str())?;
            let arg = CString::new("auto")?;
            let arg_vector = [path.as_ptr(), arg.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null::<libc::c_char>()];
            join_cgroup(Path::new(cgroup))?;
            let mut times = Vec::new();
            for _ in 0..rounds.parse::<usize>()? {
                let start = now_ns();
                // SAFETY: a single-threaded worker; the child only calls execve and _exit.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: NUL-terminated strings and vectors prepared before the fork.
                    unsafe {
                        libc::execve(path.as_ptr(), arg_vector.as_ptr(), envp.as_ptr());
                        libc::_exit(127);
                    }
                }
                ensure!(pid > 0, "fork: {}", std::io::Error::last_os_error());
                let mut status = 0;
                // SAFETY: our own child.
                unsafe { libc::waitpid(pid, &raw mut status, 0) };
                let end = now_ns();
                ensure!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "{program} auto did not run ({status:#x})"
                );
                times.push(end - start);
            }
            let text: Vec<String> = times.iter().map(u64::to_string).collect();
            println!("{}", text.join(" "));
            Ok(())
        }
        [mode, cgroup, file, ms] if mode == "audit" => {
            let path = CString::new(file.as_str())?;
            let for_ns = ms.parse::<u64>()? * 1_000_000;
            join_cgroup(Path::new(cgroup))?;
            let start = now_ns();
            let (mut opens, mut refused) = (0u64, 0u64);
            while now_ns() - start < for_ns {
                // SAFETY: a valid NUL-terminated path; the descriptor is closed right away.
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
                if fd >= 0 {
                    // SAFETY: `fd` is ours and open.
                    unsafe { libc::close(fd) };
                    opens += 1;
                } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                    // The ring buffer had no room for the record above its reserve: jit
                    // refuses the audited open rather than doing it unrecorded.
                    refused += 1;
                } else {
                    bail!("open(O_WRONLY): {}", std::io::Error::last_os_error());
                }
            }
            println!("{opens} {refused}");
            Ok(())
        }
        _ => bail!(
            "usage: jit-bench {ARG} hold CGROUP | exec CGROUP PROGRAM ROUNDS | audit CGROUP FILE \
             MS ({WORK_DIR})"
        ),
    }
}
