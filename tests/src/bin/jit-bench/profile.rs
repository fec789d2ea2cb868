//! Where the time goes: the kernel's own run-time statistics of each of jit's programs
//! (`BPF_ENABLE_STATS`, `bpf_prog_info.run_time_ns` and `run_cnt`) while a worker runs one op in
//! the agent cgroup among [`MANY_RULES`] rules, with the write-decision cache on and off.
//!
//! Not part of the timed cases: with statistics on, the kernel reads the clock twice around
//! every program run, which would be timed too. One line per op, case and program that ran:
//!
//! `bench profile/<op>/<case> prog=<name> runs_per_op=<r> ns_per_run=<n> ns_per_op=<x>`
//!
//! `runs_per_op` is how often the program ran per iteration of the op, `ns_per_op` the time it
//! took per iteration (the sum over the programs is what jit's programs themselves cost an
//! iteration; the rest of a case's difference to `floor` is the trampolines' and helpers'
//! callers').
use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use aya::{
    programs::loaded_programs,
    sys::{Stats, enable_stats},
};

use crate::{BenchCgroup, FEW_RULES, MANY_RULES, Settings, insert_rules, load, ops::OPS, worker};

/// Program name (as the kernel keeps it: 15 bytes at most) → (total run time in ns, runs).
type Snapshot = BTreeMap<u32, (String, u64, u64)>;

/// The run-time statistics of every loaded program whose name starts with `jit_`, by id.
fn snapshot() -> Result<Snapshot> {
    let mut programs = BTreeMap::new();
    for info in loaded_programs() {
        let info = info.context("reading a loaded program's info")?;
        let Some(name) = info.name_as_str() else {
            continue;
        };
        if !name.starts_with("jit_") {
            continue;
        }
        let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
        programs.insert(info.id(), (name.to_owned(), ns, info.run_count()));
    }
    Ok(programs)
}

/// Loads jit with [`MANY_RULES`] rules and prints the per-program lines for every op, with the
/// cache on and off.
pub fn run(settings: &Settings) -> Result<()> {
    let agent = BenchCgroup::create("jit-bench-profile")?;
    let mut enforcer = load(&agent)?;
    insert_rules(&mut enforcer, FEW_RULES..MANY_RULES)?;
    // Kept open for as long as statistics are wanted: closing it turns them off again.
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    for (case, cache) in [("inside-10000", true), ("inside-10000-uncached", false)] {
        enforcer
            .set_decision_cache(cache)
            .context("switching the write-decision cache")?;
        for (index, op) in OPS.iter().enumerate() {
            let mut one = Settings {
                reps: 1,
                iters: [0; OPS.len()],
                skip: Vec::new(),
            };
            one.iters[index] = settings.iters[index];
            let before = snapshot()?;
            worker::spawn(&agent.0, &one)
                .with_context(|| format!("profiling {} ({case})", op.name()))?;
            let after = snapshot()?;
            let iters = u64::from(one.iters[index]).max(1);
            let mut total = 0;
            for (id, (name, ns, runs)) in &after {
                let (ns0, runs0) = before.get(id).map_or((0, 0), |(_, ns, runs)| (*ns, *runs));
                let (ns, runs) = (ns - ns0, runs - runs0);
                if runs == 0 {
                    continue;
                }
                total += ns;
                // Hundredths, in integers.
                let hundredths = runs * 100 / iters;
                println!(
                    "bench profile/{}/{case} prog={name} runs_per_op={}.{:02} ns_per_run={} \
                     ns_per_op={}",
                    op.name(),
                    hundredths / 100,
                    hundredths % 100,
                    ns / runs,
                    ns / iters,
                );
            }
            println!(
                "bench profile/{}/{case} prog=all ns_per_op={}",
                op.name(),
                total / iters
            );
        }
    }
    enforcer.detach().context("detaching jit's programs")?;
    Ok(())
}
