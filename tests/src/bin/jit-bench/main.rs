//! `jit-bench`: what jit's kernel programs add to the cost of the operations they decide.
//!
//! Run as root inside the VM by `cargo xtask bench`. Two operations, timed in tight loops: `exec`
//! (spawn a tiny static binary and wait for it) and `write` (`open(O_WRONLY)` + `close` of one
//! file). Five cases, in this order, as each needs more kernel state than the one before:
//!
//! - `none`: no jit program loaded;
//! - `outside`: programs loaded and attached, an agent cgroup registered, the process in another
//!   cgroup (what jit costs every process that is not an agent);
//! - `inside-10`: the process in the agent cgroup, each operation allowed by its exact rule among
//!   10 rules of that agent;
//! - `inside-10000`: the same among 10,000 rules. Every write open after the first is allowed
//!   by the write-decision cache (see `jit_common::cache`): the same file, nothing changed;
//! - `inside-10000-uncached`: the same with the cache turned off, so every write open resolves
//!   its path and looks its rule up (what a first open, or an open after a change, costs).
//!
//! One *round* runs the five cases once each, loading the programs (with fresh, empty maps)
//! after `none` and detaching them after the last; the bench runs several rounds and
//! reports, per case, the median over the rounds. Rounds rather than all repetitions of a case
//! back to back: a slow spell of the host (other VMs, builds) then spoils one repetition of
//! every case instead of every repetition of one case.
//!
//! The agent's default is deny, so a rule that does not match fails the bench instead of timing
//! a denial, and the decision counters prove that the rules were evaluated. Each case runs in a
//! [`worker`] process placed in the case's cgroup and pinned to one CPU; the output is described
//! in [`report`].
mod elf;
mod report;
mod worker;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};
use jit_agent::bpf::Enforcer;
use jit_common::{
    event::counter,
    policy::{AgentConfig, Decision, Mode, Op, PolicyKey},
};

/// The timed operations, in output order. Every per-op array in the bench is in this order.
const OPS: [Op; 2] = [Op::Exec, Op::Write];
/// Scratch directory of the bench (tmpfs in the VM).
const WORK_DIR: &str = "/tmp/jit-bench";
/// The binary the `exec` loop runs: [`elf::EXIT0`].
const EXEC_PATH: &str = "/tmp/jit-bench/exit0";
/// The file the `write` loop opens.
const WRITE_PATH: &str = "/tmp/jit-bench/target";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const AGENT: u32 = 1;
/// Rule counts of the two inside cases.
const FEW_RULES: usize = 10;
const MANY_RULES: usize = 10_000;

/// How much to measure; `cargo xtask bench -- --reps 21` changes it.
struct Settings {
    /// Rounds: repetitions of every case; the bench reports the median per case.
    reps: u32,
    /// Timed iterations per repetition, per op.
    iters: [u32; OPS.len()],
}

impl Settings {
    /// Tuned for software emulation (TCG), where one exec takes about 2 ms, one open about
    /// 13 us and loading the programs 1.6 s: a round takes about 3.5 s, the bench about a minute
    /// (seconds under KVM). Many short rounds rather than a few long ones: the host's slow
    /// spells last about a second, and the median over the rounds skips them as long as they
    /// spoil fewer than half of a case's repetitions.
    const DEFAULT: Self = Self {
        reps: 15,
        iters: [100, 5_000],
    };

    fn parse(args: &[String]) -> Result<Self> {
        let mut settings = Self::DEFAULT;
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let slot = match flag.as_str() {
                "--reps" => &mut settings.reps,
                "--exec-iters" => &mut settings.iters[0],
                "--write-iters" => &mut settings.iters[1],
                _ => bail!(
                    "unknown argument {flag:?}; jit-bench takes --reps N, --exec-iters N and \
                     --write-iters N"
                ),
            };
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            *slot = value
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .with_context(|| format!("{flag} {value}: expected a positive number"))?;
        }
        Ok(settings)
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some((first, rest)) = args.split_first()
        && first == worker::ARG
    {
        return worker::run(rest);
    }
    let settings = Settings::parse(&args)?;
    // It loads BPF LSM programs into the running kernel: nothing to do to a host by accident.
    ensure!(
        std::env::var_os("JIT_IN_VM").is_some(),
        "jit-bench loads BPF LSM programs and must run inside the VM: use `cargo xtask bench`"
    );
    let cases = run(&settings)?;
    report::print(&cases, &settings);
    Ok(())
}

/// jit's state during a case, and where the worker runs relative to it.
enum Jit<'a> {
    /// No program loaded.
    Off,
    /// Programs attached; the worker is in a cgroup that is not an agent's.
    Outside(&'a mut Enforcer),
    /// Programs attached; the worker is in the agent cgroup; whether the write-decision cache
    /// is on.
    Inside(&'a mut Enforcer, Cache),
}

/// Whether the write-decision cache is on during an inside case.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cache {
    On,
    Off,
}

/// The cases, in the order of a round.
const CASES: [&str; 5] = [
    "none",
    "outside",
    "inside-10",
    "inside-10000",
    "inside-10000-uncached",
];

/// What one case measured over all rounds.
struct Case {
    name: &'static str,
    /// Per op: mean ns per iteration of each repetition.
    ns: [Vec<u64>; OPS.len()],
    /// What jit counted while the case ran; `None` when no program was loaded.
    decisions: Option<Decisions>,
}

impl Case {
    fn add(&mut self, sample: Sample) {
        for (all, ns) in self.ns.iter_mut().zip(sample.ns) {
            all.push(ns);
        }
        if let Some(new) = sample.decisions {
            let total = self.decisions.get_or_insert(Decisions {
                delta: [0; counter::COUNT as usize],
                calls: [0; OPS.len()],
            });
            for (sum, n) in total.delta.iter_mut().zip(new.delta) {
                *sum += n;
            }
            for (sum, n) in total.calls.iter_mut().zip(new.calls) {
                *sum += n;
            }
        }
    }
}

/// One repetition of one case.
struct Sample {
    ns: [u64; OPS.len()],
    decisions: Option<Decisions>,
}

/// Counter increments over a case, and the calls of each op the worker made meanwhile.
struct Decisions {
    delta: [u64; counter::COUNT as usize],
    calls: [u64; OPS.len()],
}

impl Decisions {
    fn get(&self, index: u32) -> u64 {
        self.delta[index as usize]
    }

    fn allowed(&self) -> u64 {
        self.get(counter::DECISION_BASE + Decision::Allow as u32)
    }

    /// Whether every write open was decided too, not only every exec: only once the kernel side
    /// hooks the write op.
    fn writes_decided(&self) -> bool {
        self.allowed() == self.calls.iter().sum::<u64>()
    }
}

fn run(settings: &Settings) -> Result<Vec<Case>> {
    let [exec_iters, write_iters] = settings.iters;
    println!(
        "jit-bench: {} rounds of every case, each timing {exec_iters} execs and {write_iters} \
         write opens",
        settings.reps
    );
    let _scratch = Scratch::create()?;
    let agent = BenchCgroup::create("jit-bench-agent")?;
    let other = BenchCgroup::create("jit-bench-other")?;
    let mut cases = CASES.map(|name| Case {
        name,
        ns: Default::default(),
        decisions: None,
    });
    for round in 1..=settings.reps {
        let start = Instant::now();
        let [none, outside, inside_few, inside_many, uncached] = &mut cases;
        let context = |case: &Case| format!("round {round}, case {}", case.name);
        // Discarded: the kernel tears the previous round's programs down (trampolines, RCU)
        // in the background just after the detach, and that work lands in the first timing.
        measure(&other, settings, Jit::Off).with_context(|| context(none))?;
        let sample = measure(&other, settings, Jit::Off).with_context(|| context(none))?;
        none.add(sample);

        let loading = Instant::now();
        let mut enforcer = load(&agent)?;
        let loading = loading.elapsed();
        let sample = measure(&other, settings, Jit::Outside(&mut enforcer))
            .with_context(|| context(outside))?;
        outside.add(sample);
        let sample = measure(&agent, settings, Jit::Inside(&mut enforcer, Cache::On))
            .with_context(|| context(inside_few))?;
        inside_few.add(sample);
        let inserting = Instant::now();
        insert_rules(&mut enforcer, FEW_RULES..MANY_RULES)?;
        let inserting = inserting.elapsed();
        let sample = measure(&agent, settings, Jit::Inside(&mut enforcer, Cache::On))
            .with_context(|| context(inside_many))?;
        inside_many.add(sample);
        enforcer
            .set_decision_cache(false)
            .context("turning the write-decision cache off")?;
        let sample = measure(&agent, settings, Jit::Inside(&mut enforcer, Cache::Off))
            .with_context(|| context(uncached))?;
        uncached.add(sample);
        enforcer.detach().context("detaching jit's programs")?;
        println!(
            "  round {round}/{}: {:.1}s (loading {:.1}s, inserting {} rules {:.1}s)",
            settings.reps,
            start.elapsed().as_secs_f64(),
            loading.as_secs_f64(),
            MANY_RULES - FEW_RULES,
            inserting.as_secs_f64()
        );
    }
    Ok(Vec::from(cases))
}

/// Loads and attaches jit's programs, with `agent` as the one agent cgroup: default deny, the
/// first [`FEW_RULES`] rules.
fn load(agent: &BenchCgroup) -> Result<Enforcer> {
    let mut enforcer = Enforcer::load_and_attach().context("loading jit's programs")?;
    enforcer
        .register_agent_cgroup(&agent.0, AGENT)
        .context("registering the agent cgroup")?;
    let config = AgentConfig {
        default_decision: Decision::Deny as u8,
        mode: Mode::Enforce as u8,
        pad: [0; 2],
        wildcard_components: 0,
        ruleset: AGENT,
    };
    enforcer
        .set_agent_config(AGENT, config)
        .context("setting the agent's config")?;
    insert_rules(&mut enforcer, 0..FEW_RULES)?;
    Ok(enforcer)
}

/// Rule `i` of the bench agent, with id `i + 1`. Rules 0 and 1 allow what the loops do; the
/// others are distinct fillers, exact and directory rules for both ops, that match neither.
fn rule(i: usize) -> (Op, String) {
    match i {
        0 => (Op::Exec, EXEC_PATH.to_owned()),
        1 => (Op::Write, WRITE_PATH.to_owned()),
        _ => {
            let op = if i.is_multiple_of(2) {
                Op::Exec
            } else {
                Op::Write
            };
            let pattern = if i % 4 < 2 {
                format!("/bench/rules/r{i}")
            } else {
                format!("/bench/dirs/d{i}/")
            };
            (op, pattern)
        }
    }
}

fn insert_rules(enforcer: &mut Enforcer, rules: std::ops::Range<usize>) -> Result<()> {
    for i in rules {
        let (op, pattern) = rule(i);
        let (key, shape) = PolicyKey::for_rule(AGENT, op, pattern.as_bytes())
            .map_err(|err| anyhow::anyhow!("rule {pattern}: {err}"))?;
        let id = u32::try_from(i + 1)?;
        enforcer
            .insert_rule(&key, shape.value(Decision::Allow, id))
            .with_context(|| format!("inserting rule {id} ({} {pattern})", op.name()))?;
    }
    Ok(())
}

/// Runs one repetition of a case in a worker placed in `cgroup`; with programs loaded, checks
/// what they counted.
fn measure(cgroup: &BenchCgroup, settings: &Settings, jit: Jit<'_>) -> Result<Sample> {
    let (mut enforcer, inside) = match jit {
        Jit::Off => (None, None),
        Jit::Outside(enforcer) => (Some(enforcer), None),
        Jit::Inside(enforcer, cache) => (Some(enforcer), Some(cache)),
    };
    let before = enforcer
        .as_deref_mut()
        .map(Enforcer::counters)
        .transpose()?;
    let report = worker::spawn(&cgroup.0, settings)?;
    let decisions = match (enforcer, before) {
        (Some(enforcer), Some(before)) => {
            let after = enforcer.counters()?;
            let decisions = Decisions {
                delta: std::array::from_fn(|i| after[i] - before[i]),
                calls: report.calls,
            };
            check_decisions(inside, &decisions)?;
            Some(decisions)
        }
        _ => None,
    };
    Ok(Sample {
        ns: report.ns,
        decisions,
    })
}

/// Fails unless jit decided what it should have: nothing for a process outside, and inside an
/// allow for every exec and every write open, nothing else; with the cache on, all but the
/// first write open of the file allowed by the cache, with it off none.
fn check_decisions(inside: Option<Cache>, decisions: &Decisions) -> Result<()> {
    let Some(cache) = inside else {
        ensure!(
            decisions.delta.iter().all(|&n| n == 0),
            "jit counted {:?} for a process outside every agent cgroup",
            decisions.delta
        );
        return Ok(());
    };
    for decision in [Decision::Audit, Decision::Hold, Decision::Deny] {
        let n = decisions.get(counter::DECISION_BASE + decision as u32);
        ensure!(n == 0, "{n} {} decisions, expected none", decision.name());
    }
    let errors = decisions.get(counter::ERRORS);
    ensure!(errors == 0, "the hooks counted {errors} errors");
    let [execs, writes] = decisions.calls;
    let allowed = decisions.allowed();
    ensure!(
        decisions.writes_decided(),
        "{allowed} allow decisions for {execs} execs and {writes} write opens"
    );
    let hits = decisions.get(counter::CACHE_HITS);
    match cache {
        // The worker's first open of the file may miss (a fresh table, another CPU's entry).
        Cache::On => ensure!(
            hits + 2 >= writes,
            "the write-decision cache allowed {hits} of {writes} write opens of one file"
        ),
        Cache::Off => ensure!(
            hits == 0,
            "the cache is off, yet allowed {hits} write opens"
        ),
    }
    Ok(())
}

/// The bench's scratch directory with the program to exec and the file to open, removed on drop.
struct Scratch;

impl Scratch {
    fn create() -> Result<Self> {
        fs::create_dir_all(WORK_DIR).with_context(|| format!("creating {WORK_DIR}"))?;
        fs::write(EXEC_PATH, elf::EXIT0).with_context(|| format!("writing {EXEC_PATH}"))?;
        fs::set_permissions(EXEC_PATH, fs::Permissions::from_mode(0o755))?;
        fs::write(WRITE_PATH, b"").with_context(|| format!("creating {WRITE_PATH}"))?;
        Ok(Self)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(WORK_DIR) {
            eprintln!("warning: rm -r {WORK_DIR}: {err}");
        }
    }
}

/// A cgroup directly below the cgroup2 root, removed on drop (its workers have exited by then).
struct BenchCgroup(PathBuf);

impl BenchCgroup {
    fn create(name: &str) -> Result<Self> {
        let path = Path::new(CGROUP_ROOT).join(name);
        fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir(&self.0) {
            eprintln!("warning: rmdir {}: {err}", self.0.display());
        }
    }
}
