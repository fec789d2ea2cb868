//! `jit-demo`: what `cargo xtask demo` runs inside the VM.
//!
//! It starts the real daemon with `policies/demo.toml`, runs a scripted agent through
//! `jitctl run` — a shell script that writes in its workspace (allowed), edits `/etc/hosts`
//! (denied), runs a deploy (held) and deletes the customer database (held) — while a scripted
//! reviewer approves the deploy and denies the deletion with `jitctl`, then prints the audit
//! trail and measures the hold → approve → resume round trip.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use jit_agent::{
    approval::{PendingView, ReviewAction},
    control::{self, Request, Response},
};

const JIT_AGENT: &str = "/jit/bin/jit-agent";
const JITCTL: &str = "/jit/bin/jitctl";
const POLICY: &str = include_str!("../../../../policies/demo.toml");
const SOCKET: &str = "/run/jit/jit.sock";
const AUDIT: &str = "/var/log/jit/audit.jsonl";

/// The agent: a shell script that narrates what it tries.
const AGENT_SCRIPT: &str = r#"#!/bin/sh
say() { echo "  agent | $*"; }
say "write my notes to /srv/demo/work/notes.txt"
if echo "release notes" > /srv/demo/work/notes.txt; then say "-> written (allowed)"; else say "-> failed"; fi
say "append a line to /etc/hosts"
if echo "10.0.0.1 evil" 2>/dev/null >> /etc/hosts; then say "-> written"; else say "-> refused: Operation not permitted (denied by policy)"; fi
say "run /srv/demo/bin/deploy"
if /srv/demo/bin/deploy; then say "-> deploy finished"; else say "-> deploy refused"; fi
say "delete /srv/demo/work/customers.db"
if rm /srv/demo/work/customers.db 2>/dev/null; then say "-> deleted"; else say "-> refused: Operation not permitted (the reviewer denied it)"; fi
say "done"
"#;

const DEPLOY_SCRIPT: &str =
    "#!/bin/sh\necho \"  agent |    deploy: shipping version 1.4.2 ... done\"\n";

fn main() -> Result<()> {
    ensure!(
        std::env::var_os("JIT_IN_VM").is_some(),
        "jit-demo loads BPF LSM programs and must run inside the VM: use `cargo xtask demo`"
    );
    prepare()?;
    println!("== jit demo: an agent acts, a reviewer decides ==");
    println!("policy: policies/demo.toml (agent demo-agent in cgroup jit/demo-agent)");
    let mut daemon = start_daemon()?;
    let result = story().and_then(|()| {
        println!();
        println!("== the audit trail: jitctl audit ==");
        let _ = Command::new(JITCTL).args(["audit"]).status();
        println!("$ jitctl audit verify {AUDIT}");
        let verify = Command::new(JITCTL)
            .args(["audit", "verify", AUDIT])
            .output()
            .context("jitctl audit verify")?;
        print!("{}", String::from_utf8_lossy(&verify.stdout));
        ensure!(verify.status.success(), "the audit chain does not verify");
        round_trip()
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    result
}

fn prepare() -> Result<()> {
    for dir in [
        "/srv/demo/work",
        "/srv/demo/bin",
        "/etc/jit/policies",
        "/var/log/jit",
    ] {
        fs::create_dir_all(dir).with_context(|| format!("mkdir {dir}"))?;
    }
    fs::write("/etc/jit/policies/demo.toml", POLICY)?;
    fs::write("/srv/demo/work/customers.db", "alice,bob,carol\n")?;
    fs::write("/etc/hosts", "127.0.0.1 localhost\n")?;
    for (path, text) in [
        ("/srv/demo/agent.sh", AGENT_SCRIPT),
        ("/srv/demo/bin/deploy", DEPLOY_SCRIPT),
    ] {
        fs::write(path, text)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn start_daemon() -> Result<Child> {
    let log = fs::File::create("/tmp/jit-agent.log")?;
    let mut child = Command::new(JIT_AGENT)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting jit-agent")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_mins(4) {
        if let Some(status) = child.try_wait()? {
            bail!(
                "jit-agent exited with {status}:\n{}",
                fs::read_to_string("/tmp/jit-agent.log").unwrap_or_default()
            );
        }
        if matches!(call(&Request::Status), Ok(Response::Status(_))) {
            println!(
                "daemon: jit-agent started; BPF LSM programs loaded and attached ({:.1}s)",
                started.elapsed().as_secs_f64()
            );
            return Ok(child);
        }
        thread::sleep(Duration::from_millis(200));
    }
    bail!("jit-agent did not answer within 4 minutes")
}

fn call(request: &Request) -> Result<Response> {
    Ok(control::call(
        Path::new(SOCKET),
        request,
        Duration::from_secs(30),
    )?)
}

fn pending() -> Result<Vec<PendingView>> {
    match call(&Request::Pending)? {
        Response::Pending { requests } => Ok(requests),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// Waits for a held action on `path`.
fn wait_held(path: &str) -> Result<PendingView> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_mins(1) {
        if let Some(view) = pending()?.into_iter().find(|v| v.path == path) {
            return Ok(view);
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing held on {path} within 60 s")
}

/// The reviewer, using the jitctl command line as a person would.
fn jitctl(args: &[&str]) -> Result<()> {
    println!("  reviewer $ jitctl {}", args.join(" "));
    let out = Command::new(JITCTL).args(args).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("  reviewer | {line}");
    }
    ensure!(
        out.status.success(),
        "jitctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn story() -> Result<()> {
    println!();
    println!("== the agent runs: jitctl run --agent demo-agent -- /srv/demo/agent.sh ==");
    let mut agent = Command::new(JITCTL)
        .args(["run", "--agent", "demo-agent", "--", "/srv/demo/agent.sh"])
        .stdin(Stdio::null())
        .spawn()
        .context("jitctl run")?;

    let deploy = wait_held("/srv/demo/bin/deploy")?;
    println!(
        "  jit   | HELD exec /srv/demo/bin/deploy (request {}, pid {}, rule \"{}\"): the agent is stopped",
        deploy.id,
        deploy.pid,
        deploy.rule.as_deref().unwrap_or("default")
    );
    jitctl(&["pending"])?;
    thread::sleep(Duration::from_millis(500));
    jitctl(&[
        "approve",
        &deploy.id.to_string(),
        "--once",
        "--reason",
        "release 1.4.2 signed off",
    ])?;
    println!("  jit   | APPROVED: the agent resumes inside its execve");

    let delete = wait_held("/srv/demo/work/customers.db")?;
    println!(
        "  jit   | HELD unlink /srv/demo/work/customers.db (request {}, pid {}): the agent is stopped",
        delete.id, delete.pid
    );
    jitctl(&[
        "deny",
        &delete.id.to_string(),
        "--reason",
        "never delete customer data",
    ])?;
    println!("  jit   | DENIED: the agent's rm fails with EPERM");

    let status = agent.wait()?;
    ensure!(status.success(), "the agent script failed: {status}");
    ensure!(
        Path::new("/srv/demo/work/customers.db").exists(),
        "customers.db must still exist"
    );
    ensure!(
        fs::read_to_string("/etc/hosts")?.lines().count() == 1,
        "/etc/hosts must be unchanged"
    );
    println!();
    println!(
        "result: notes.txt written (allowed), /etc/hosts unchanged (denied), deploy ran after it was \
         held and approved, customers.db kept after it was held and denied"
    );
    Ok(())
}

/// Hold → approve → resume, measured: an exec of the held deploy script, approved by a reviewer
/// that polls for it, from the exec's start to the process's exit; the same exec without jit
/// in its way (allowed directly) is the baseline.
fn round_trip() -> Result<()> {
    const ROUNDS: usize = 30;
    println!();
    println!("== hold -> approve -> resume round trip ({ROUNDS} rounds, socket API reviewer) ==");
    let mut held = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut child = Command::new(JITCTL)
            .args(["run", "--agent", "demo-agent", "--", "/srv/demo/bin/deploy"])
            .stdout(Stdio::null())
            .spawn()?;
        let view = loop {
            if let Some(v) = pending()?.into_iter().next() {
                break v;
            }
            thread::sleep(Duration::from_millis(2));
        };
        let detected = started.elapsed();
        match call(&Request::Decide {
            id: view.id,
            action: ReviewAction::Approve {
                once: true,
                for_secs: None,
            },
            reason: Some("round-trip measurement".to_owned()),
        })? {
            Response::Decided(_) => {}
            other => bail!("approve failed: {other:?}"),
        }
        let approved = started.elapsed();
        ensure!(child.wait()?.success(), "approved deploy failed");
        held.push((detected, approved, started.elapsed()));
    }
    let mut baseline = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let status = Command::new(JITCTL)
            .args([
                "run",
                "--agent",
                "demo-agent",
                "--",
                "/bin/sh",
                "/srv/demo/bin/deploy",
            ])
            .stdout(Stdio::null())
            .status()?;
        ensure!(status.success());
        baseline.push(started.elapsed());
    }
    let pct = |v: &mut Vec<Duration>, p: usize| {
        v.sort();
        v[(v.len() * p / 100).min(v.len() - 1)]
    };
    let mut total: Vec<Duration> = held.iter().map(|h| h.2).collect();
    let mut resume: Vec<Duration> = held.iter().map(|h| h.2.saturating_sub(h.1)).collect();
    let mut seen: Vec<Duration> = held.iter().map(|h| h.0).collect();
    println!(
        "held exec, start to exit:        p50 {:>8.1?}  p99 {:>8.1?}",
        pct(&mut total, 50),
        pct(&mut total, 99)
    );
    println!(
        "  of which hold seen by reviewer: p50 {:>8.1?}  p99 {:>8.1?}",
        pct(&mut seen, 50),
        pct(&mut seen, 99)
    );
    println!(
        "  approve answered to exit:       p50 {:>8.1?}  p99 {:>8.1?}",
        pct(&mut resume, 50),
        pct(&mut resume, 99)
    );
    println!(
        "same exec allowed (no hold):      p50 {:>8.1?}  p99 {:>8.1?}",
        pct(&mut baseline, 50),
        pct(&mut baseline, 99)
    );
    println!("(software-emulated VM: compare the rows, not the absolute times)");
    Ok(())
}
