//! `jit-bench`: what jit's kernel programs add to the cost of the operations they decide.
//!
//! Run as root inside the VM by `cargo xtask bench`. Four operations ([`ops::BenchOp`]), timed in
//! tight loops: `exec` (spawn a tiny static binary and wait for it), `write` (`open(O_WRONLY)` +
//! `close` of one file), `create` (create, close and unlink a new file) and `tree` (unpack and
//! delete a tree of 2,000 files). Seven cases, in this order, as each needs more kernel state
//! than the one before:
//!
//! - `none`: no program loaded;
//! - `floor`: one program that returns at once on every hook jit uses (`jit-ebpf/src/floor.rs`):
//!   what any BPF LSM design costs before it decides anything;
//! - `outside`: jit's programs loaded and attached, an agent cgroup registered, the process in
//!   another cgroup (what jit costs every process that is not an agent);
//! - `inside-10`: the process in the agent cgroup, each operation allowed by its rule among 10
//!   rules of that agent;
//! - `inside-10000`: the same among 10,000 rules. Every write open of the `write` loop after the
//!   first is allowed by the write-decision cache (see `jit_common::cache`): the same file,
//!   nothing changed;
//! - `inside-10000-uncached`: the same with the cache turned off, so every write open resolves
//!   its path and looks its rule up (what a first open, or an open after a change, costs);
//! - `inside-100000`: the cache back on, among 100,000 rules.
//!
//! One *round* runs the cases once each, loading the programs (with fresh, empty maps) after
//! `floor` and detaching them after the last; the bench runs several rounds and reports, per
//! case, the median over the rounds. Rounds rather than all repetitions of a case back to back:
//! a slow spell of the host (other VMs, builds) then spoils one repetition of every case instead
//! of every repetition of one case.
//!
//! The agent's default is deny, so a rule that does not match fails the bench instead of timing
//! a denial, and the decision counters prove that the rules were evaluated. Each case runs in a
//! [`worker`] process placed in the case's cgroup and pinned to one CPU; the output is described
//! in [`report`]. After the rounds, [`daemon`] measures the real daemon (100,000 rules, the hold
//! round trip, audit under load) and [`fapolicyd`] the same operations under Debian's fapolicyd.
//! Before those, [`profile`] shows where the time of the inside cases goes, program by program.
mod daemon;
mod elf;
mod fapolicyd;
mod ops;
mod profile;
mod report;
mod worker;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};
use jit_agent::bpf::{Enforcer, Floor};
use jit_common::{
    event::counter,
    policy::{AgentConfig, Decision, Mode, Op, PolicyKey},
};
use ops::{BenchOp, OPS};

/// Scratch directory of the bench (tmpfs in the VM).
const WORK_DIR: &str = "/tmp/jit-bench";
/// The binary the `exec` loop runs: [`elf::EXIT0`].
const EXEC_PATH: &str = "/tmp/jit-bench/exit0";
/// The file the `write` loop opens.
const WRITE_PATH: &str = "/tmp/jit-bench/target";
/// Where the `create` and `tree` loops make (and remove) their files.
const FILES_DIR: &str = "/tmp/jit-bench/files";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const AGENT: u32 = 1;
/// Rule counts of the inside cases.
const FEW_RULES: usize = 10;
const MANY_RULES: usize = 10_000;
const MOST_RULES: usize = 100_000;

/// Parts of the bench that `--skip` can leave out (while working on another).
const PHASES: [&str; 4] = ["rounds", "profile", "daemon", "fapolicyd"];

/// How much to measure; `cargo xtask bench -- --reps 21` changes it.
pub struct Settings {
    /// Rounds: repetitions of every case; the bench reports the median per case.
    reps: u32,
    /// Timed iterations per repetition, per op.
    iters: [u32; OPS.len()],
    /// Phases (of [`PHASES`]) not to run.
    skip: Vec<String>,
}

impl Settings {
    /// Tuned for software emulation (TCG) with the instruction-counting clock, where one exec
    /// takes about 300 us, one open about 7 us, one create about 20 us, one tree about 60 ms and
    /// loading the programs 1.6 s. Many short rounds rather than a few long ones: the median
    /// over the rounds skips a slow spell as long as it spoils fewer than half of a case's
    /// repetitions.
    fn default() -> Self {
        Self {
            reps: 15,
            iters: [100, 5_000, 1_000, 2],
            skip: Vec::new(),
        }
    }

    fn parse(args: &[String]) -> Result<Self> {
        let mut settings = Self::default();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let slot = match flag.as_str() {
                "--skip" => {
                    ensure!(
                        PHASES.contains(&value.as_str()),
                        "--skip {value}: expected one of {PHASES:?}"
                    );
                    settings.skip.push(value.clone());
                    continue;
                }
                "--reps" => &mut settings.reps,
                "--exec-iters" => &mut settings.iters[0],
                "--write-iters" => &mut settings.iters[1],
                "--create-iters" => &mut settings.iters[2],
                "--tree-iters" => &mut settings.iters[3],
                _ => bail!(
                    "unknown argument {flag:?}; jit-bench takes --reps N, --exec-iters N, \
                     --write-iters N, --create-iters N, --tree-iters N and --skip PHASE"
                ),
            };
            *slot = value
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .with_context(|| format!("{flag} {value}: expected a positive number"))?;
        }
        Ok(settings)
    }

    fn runs(&self, phase: &str) -> bool {
        !self.skip.iter().any(|p| p == phase)
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some((first, rest)) = args.split_first() {
        if first == worker::ARG {
            return worker::run(rest);
        }
        if first == daemon::ARG {
            return daemon::worker(rest);
        }
    }
    let settings = Settings::parse(&args)?;
    // It loads BPF LSM programs into the running kernel: nothing to do to a host by accident.
    ensure!(
        std::env::var_os("JIT_IN_VM").is_some(),
        "jit-bench loads BPF LSM programs and must run inside the VM: use `cargo xtask bench`"
    );
    let _scratch = Scratch::create()?;
    let other = BenchCgroup::create("jit-bench-other")?;
    let mut cases = Vec::new();
    if settings.runs("rounds") {
        cases = run(&settings, &other)?;
        report::print(&cases, &settings);
    }
    if settings.runs("profile") {
        profile::run(&settings).context("the per-program profile")?;
    }
    if settings.runs("daemon") {
        daemon::run().context("the daemon measurements")?;
    }
    if settings.runs("fapolicyd") {
        let none = cases.first();
        fapolicyd::run(&settings, &other, none).context("the fapolicyd measurements")?;
    }
    Ok(())
}

/// jit's state during a case, and where the worker runs relative to it.
enum Jit<'a> {
    /// None of jit's programs loaded (none, or the floor's).
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
const CASES: [&str; 7] = [
    "none",
    "floor",
    "outside",
    "inside-10",
    "inside-10000",
    "inside-10000-uncached",
    "inside-100000",
];

/// What one case measured over all rounds.
pub struct Case {
    name: &'static str,
    /// Per op: mean ns per iteration of each repetition.
    ns: [Vec<u64>; OPS.len()],
    /// What jit counted while the case ran; `None` when none of jit's programs was loaded.
    decisions: Option<Decisions>,
}

impl Case {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            ns: Default::default(),
            decisions: None,
        }
    }

    fn add(&mut self, sample: Sample) {
        for (all, ns) in self.ns.iter_mut().zip(sample.ns) {
            all.push(ns);
        }
        if let Some(new) = sample.decisions {
            let total = self.decisions.get_or_insert(Decisions {
                delta: [0; counter::COUNT as usize],
                calls: [0; OPS.len()],
                expected: [0; OPS.len()],
            });
            for (sum, n) in total.delta.iter_mut().zip(new.delta) {
                *sum += n;
            }
            for (sum, n) in total.calls.iter_mut().zip(new.calls) {
                *sum += n;
            }
            for (sum, n) in total.expected.iter_mut().zip(new.expected) {
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

/// Counter increments over a case, the iterations of each op the worker ran meanwhile and the
/// decisions jit makes for them inside an agent cgroup.
struct Decisions {
    delta: [u64; counter::COUNT as usize],
    calls: [u64; OPS.len()],
    expected: [u64; OPS.len()],
}

impl Decisions {
    fn get(&self, index: u32) -> u64 {
        self.delta[index as usize]
    }

    fn allowed(&self) -> u64 {
        self.get(counter::DECISION_BASE + Decision::Allow as u32)
    }

    /// Whether jit allowed every operation of every op, as it should inside.
    fn all_decided(&self) -> bool {
        self.allowed() == self.expected.iter().sum::<u64>()
    }

    fn calls_of(&self, op: BenchOp) -> u64 {
        OPS.iter()
            .position(|&o| o == op)
            .map_or(0, |i| self.calls[i])
    }
}

fn run(settings: &Settings, other: &BenchCgroup) -> Result<Vec<Case>> {
    let iters: Vec<String> = OPS
        .iter()
        .zip(settings.iters)
        .map(|(op, n)| format!("{n} {}", op.name()))
        .collect();
    println!(
        "jit-bench: {} rounds of every case, each timing {} iterations",
        settings.reps,
        iters.join(", ")
    );
    let agent = BenchCgroup::create("jit-bench-agent")?;
    let mut cases = CASES.map(Case::new);
    for round in 1..=settings.reps {
        let start = Instant::now();
        let [
            none,
            floor,
            outside,
            inside_few,
            inside_many,
            uncached,
            inside_most,
        ] = &mut cases;
        let context = |case: &Case| format!("round {round}, case {}", case.name);
        // Discarded: the kernel tears the previous round's programs down (trampolines, RCU)
        // in the background just after the detach, and that work lands in the first timing.
        measure(other, settings, Jit::Off).with_context(|| context(none))?;
        let sample = measure(other, settings, Jit::Off).with_context(|| context(none))?;
        none.add(sample);

        let floor_programs = Floor::load_and_attach().context("loading the floor programs")?;
        measure(other, settings, Jit::Off).with_context(|| context(floor))?;
        let sample = measure(other, settings, Jit::Off).with_context(|| context(floor))?;
        floor.add(sample);
        let floor_attached = floor_programs.attached();
        drop(floor_programs);

        let loading = Instant::now();
        let mut enforcer = load(&agent)?;
        let loading = loading.elapsed();
        let sample = measure(other, settings, Jit::Outside(&mut enforcer))
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
        enforcer
            .set_decision_cache(true)
            .context("turning the write-decision cache back on")?;
        let inserting_most = Instant::now();
        insert_rules(&mut enforcer, MANY_RULES..MOST_RULES)?;
        let inserting_most = inserting_most.elapsed();
        let sample = measure(&agent, settings, Jit::Inside(&mut enforcer, Cache::On))
            .with_context(|| context(inside_most))?;
        inside_most.add(sample);
        enforcer.detach().context("detaching jit's programs")?;
        println!(
            "  round {round}/{}: {:.1}s (floor: {floor_attached} programs; loading jit {:.1}s, \
             inserting {} rules {:.1}s, {} more {:.1}s)",
            settings.reps,
            start.elapsed().as_secs_f64(),
            loading.as_secs_f64(),
            MANY_RULES - FEW_RULES,
            inserting.as_secs_f64(),
            MOST_RULES - MANY_RULES,
            inserting_most.as_secs_f64(),
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
        identity: 0,
        extra_rulesets: 0,
        wildcard_components: 0,
        ruleset: AGENT,
    };
    enforcer
        .set_agent_config(AGENT, config)
        .context("setting the agent's config")?;
    insert_rules(&mut enforcer, 0..FEW_RULES)?;
    Ok(enforcer)
}

/// The rules that allow what the loops do: the `exec` and `write` files exactly, and below
/// [`FILES_DIR`] what `create` and `tree` do.
fn allowing_rules() -> [(Op, String); 7] {
    let files = format!("{FILES_DIR}/");
    [
        (Op::Exec, EXEC_PATH.to_owned()),
        (Op::Write, WRITE_PATH.to_owned()),
        (Op::Create, files.clone()),
        (Op::Write, files.clone()),
        (Op::Unlink, files.clone()),
        (Op::Mkdir, files.clone()),
        (Op::Rmdir, files),
    ]
}

/// Rule `i` of the bench agent, with id `i + 1`. The first ones are [`allowing_rules`]; the
/// others are distinct fillers, exact and directory rules for `exec` and `write`, that match
/// nothing the loops do.
fn rule(i: usize) -> (Op, String) {
    let allowing = allowing_rules();
    if let Some(rule) = allowing.get(i) {
        return rule.clone();
    }
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

fn insert_rules(enforcer: &mut Enforcer, rules: std::ops::Range<usize>) -> Result<()> {
    let mut compiled = Vec::with_capacity(rules.len());
    for i in rules {
        let (op, pattern) = rule(i);
        let (key, shape) = PolicyKey::for_rule(AGENT, op, pattern.as_bytes())
            .map_err(|err| anyhow::anyhow!("rule {pattern}: {err}"))?;
        let id = u32::try_from(i + 1)?;
        compiled.push((key, shape.value(Decision::Allow, id)));
    }
    let n = compiled.len();
    enforcer
        .insert_rules(compiled)
        .with_context(|| format!("inserting {n} rules"))
}

/// Runs one repetition of a case in a worker placed in `cgroup`; with jit's programs loaded,
/// checks what they counted.
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
                expected: report.decisions(),
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
/// allow for every decided operation ([`BenchOp::decisions`]), nothing else; with the cache on,
/// all but the first write open of the `write` loop's file allowed by the cache (the new files
/// of `create` and `tree` miss it), with it off none.
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
    let allowed = decisions.allowed();
    ensure!(
        decisions.all_decided(),
        "{allowed} allow decisions where the worker's calls {:?} make {:?}",
        decisions.calls,
        decisions.expected
    );
    let writes = decisions.calls_of(BenchOp::Write);
    let hits = decisions.get(counter::CACHE_HITS);
    match cache {
        // The first open of the file misses (a fresh table, another CPU's entry), and so does
        // the first after each pass of the create and tree loops (check, warm-up), which made
        // new dentries: `d_instantiate` invalidates cached decisions (see `jit_common::cache`).
        Cache::On => ensure!(
            hits + 4 >= writes,
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
        fs::create_dir_all(FILES_DIR).with_context(|| format!("creating {FILES_DIR}"))?;
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
pub struct BenchCgroup(PathBuf);

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
