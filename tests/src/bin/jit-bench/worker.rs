//! The worker: the process that does the timed operations, in the cgroup of its case.
//!
//! The bench runs this binary again with [`ARG`] first, once per case and round. A fresh process
//! rather than a fork of the bench: it joins its cgroup itself once it runs (so its own exec is
//! never decided by jit), and the bench reads its [`Report`] from a pipe (its stdout).
use std::{ffi::CString, fmt::Write as _, fs, io, path::Path, process::Command, time::Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    EXEC_PATH, FILES_DIR, Settings, WRITE_PATH,
    ops::{CreateOnce, OPS, Spawn, Tree, open_for_write},
};

/// First argument that makes this binary a worker.
pub const ARG: &str = "--worker";

/// What a worker measured and did, per op (in [`OPS`] order).
pub struct Report {
    /// Mean ns per iteration.
    pub ns: [u64; OPS.len()],
    /// Every iteration the worker ran once in its cgroup: the check and the warm-up included.
    pub calls: [u64; OPS.len()],
}

impl Report {
    /// The decisions jit makes for these calls in an agent cgroup.
    pub fn decisions(&self) -> [u64; OPS.len()] {
        std::array::from_fn(|i| self.calls[i] * OPS[i].decisions())
    }
}

/// Runs a worker in `cgroup` and returns what it measured.
pub fn spawn(cgroup: &Path, settings: &Settings) -> Result<Report> {
    let exe = std::env::current_exe().context("finding jit-bench's own executable")?;
    let out = Command::new(exe)
        .arg(ARG)
        .arg(cgroup)
        .args(settings.iters.map(|n| n.to_string()))
        .output()
        .context("starting the worker")?;
    ensure!(
        out.status.success(),
        "the worker failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8(out.stdout).context("worker output is not UTF-8")?;
    Report::parse(&text).with_context(|| format!("worker output {text:?}"))
}

impl Report {
    /// One line per op: its name, the calls, the mean ns.
    fn to_text(&self) -> String {
        let mut text = String::new();
        for ((op, ns), calls) in OPS.iter().zip(self.ns).zip(self.calls) {
            let _ = writeln!(text, "{} {calls} {ns}", op.name());
        }
        text
    }

    fn parse(text: &str) -> Result<Self> {
        let lines: Vec<&str> = text.lines().collect();
        ensure!(lines.len() == OPS.len(), "expected {} lines", OPS.len());
        let mut report = Self {
            ns: [0; OPS.len()],
            calls: [0; OPS.len()],
        };
        for (index, (op, line)) in OPS.iter().zip(lines).enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let [name, calls, ns] = words.as_slice() else {
                bail!("unexpected line {line:?}");
            };
            ensure!(
                *name == op.name(),
                "{name} where {} was expected",
                op.name()
            );
            report.calls[index] = calls.parse()?;
            report.ns[index] = ns.parse()?;
        }
        Ok(report)
    }
}

/// The worker's `main`: joins the cgroup, pins itself to one CPU, checks each op once, warms up,
/// times each op's loop once and prints its [`Report`].
pub fn run(args: &[String]) -> Result<()> {
    let Some((cgroup, iters)) = args.split_first() else {
        bail!("usage: jit-bench {ARG} CGROUP ITERS...");
    };
    ensure!(
        iters.len() == OPS.len(),
        "jit-bench {ARG}: {} iteration counts expected",
        OPS.len()
    );
    let mut counts = [0u32; OPS.len()];
    for (count, arg) in counts.iter_mut().zip(iters) {
        *count = arg
            .parse()
            .with_context(|| format!("worker argument {arg:?}"))?;
    }
    join_cgroup(Path::new(cgroup))?;
    pin_to_one_cpu()?;

    let exec = Spawn::new(EXEC_PATH)?;
    let write = CString::new(WRITE_PATH)?;
    let create = CreateOnce::new(FILES_DIR)?;
    let tree = Tree::new(FILES_DIR)?;
    let ops: [(&dyn Fn() -> Result<()>, &str); OPS.len()] = [
        (&|| exec.run_once(), EXEC_PATH),
        (&|| open_for_write(&write), WRITE_PATH),
        (&|| create.run_once(), FILES_DIR),
        (&|| tree.run_once(), FILES_DIR),
    ];
    // Once each before anything is timed: in an agent cgroup whose default is deny, an op that
    // no rule allows fails here, loudly, instead of timing a denial. An op with no iterations
    // (the profile runs one op at a time) is not run at all.
    for (((f, path), op), n) in ops.iter().zip(OPS).zip(counts) {
        if n > 0 {
            f().with_context(|| format!("the check {} of {path} failed", op.name()))?;
        }
    }
    for (((f, _), op), n) in ops.iter().zip(OPS).zip(counts) {
        for _ in 0..if n > 0 { op.warm_up() } else { 0 } {
            f()?;
        }
    }
    let mut report = Report {
        ns: [0; OPS.len()],
        calls: std::array::from_fn(|i| {
            if counts[i] == 0 {
                0
            } else {
                1 + u64::from(OPS[i].warm_up()) + u64::from(counts[i])
            }
        }),
    };
    for (((f, _), n), ns) in ops.iter().zip(counts).zip(&mut report.ns) {
        *ns = mean_ns(n, f)?;
    }
    print!("{}", report.to_text());
    Ok(())
}

/// Moves this process into `cgroup`; every process it starts from now on is there too.
pub fn join_cgroup(cgroup: &Path) -> Result<()> {
    let procs = cgroup.join("cgroup.procs");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .with_context(|| format!("opening {}", procs.display()))?;
    io::Write::write_all(&mut file, b"0").with_context(|| format!("joining {}", cgroup.display()))
}

/// Keeps this process and the programs it spawns on one CPU (the last one it may use). Spread
/// over two, every exec would also time waking the parent on the other CPU, an emulated
/// interrupt under TCG, and the numbers would depend on where the scheduler put whom.
fn pin_to_one_cpu() -> Result<()> {
    // SAFETY: `cpu_set_t` is plain data; the calls get its size and a valid pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &raw mut set) != 0 {
            return Err(io::Error::last_os_error()).context("sched_getaffinity");
        }
        let last = (0..libc::CPU_SETSIZE as usize)
            .rev()
            .find(|&cpu| libc::CPU_ISSET(cpu, &set))
            .context("no CPU in this process's affinity mask")?;
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(last, &mut set);
        if libc::sched_setaffinity(0, size, &raw const set) != 0 {
            return Err(io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}

/// Mean wall-clock ns per call of `f` over `iters` calls.
fn mean_ns(iters: u32, f: &dyn Fn() -> Result<()>) -> Result<u64> {
    let start = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    Ok(u64::try_from(
        start.elapsed().as_nanos() / u128::from(iters.max(1)),
    )?)
}
