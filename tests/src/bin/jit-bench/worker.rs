//! The worker: the process that does the timed operations, in the cgroup of its case.
//!
//! The bench runs this binary again with [`ARG`] first, once per case and round. A fresh process
//! rather than a fork of the bench: it joins its cgroup itself once it runs (so its own exec is
//! never decided by jit), and the bench reads its [`Report`] from a pipe (its stdout).
use std::{
    ffi::{CString, c_char},
    fmt::Write as _,
    fs, io,
    path::Path,
    process::Command,
    ptr,
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{EXEC_PATH, OPS, Settings, WRITE_PATH};

/// First argument that makes this binary a worker.
pub const ARG: &str = "--worker";

/// Unmeasured iterations of each op before the timed ones: caches, page tables, first-use paths.
const WARM_UP: u32 = 20;

/// What a worker measured and did, per op (in [`OPS`] order).
pub struct Report {
    /// Mean ns per iteration.
    pub ns: [u64; OPS.len()],
    /// Every call the worker made once in its cgroup: the check and the warm-up included.
    pub calls: [u64; OPS.len()],
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
    let [cgroup, exec_iters, write_iters] = args else {
        bail!("usage: jit-bench {ARG} CGROUP EXEC_ITERS WRITE_ITERS");
    };
    let number = |arg: &String| -> Result<u32> {
        arg.parse()
            .with_context(|| format!("worker argument {arg:?}"))
    };
    let iters = [number(exec_iters)?, number(write_iters)?];
    join_cgroup(Path::new(cgroup))?;
    pin_to_one_cpu()?;

    let exec = Spawn::new(EXEC_PATH)?;
    let write = CString::new(WRITE_PATH)?;
    let ops: [(&dyn Fn() -> Result<()>, &str); OPS.len()] = [
        (&|| exec.run_once(), EXEC_PATH),
        (&|| open_for_write(&write), WRITE_PATH),
    ];
    // Once each before anything is timed: in an agent cgroup whose default is deny, an op that
    // no rule allows fails here, loudly, instead of timing a denial.
    for ((f, path), op) in ops.iter().zip(OPS) {
        f().with_context(|| format!("the check {} of {path} failed", op.name()))?;
    }
    for _ in 0..WARM_UP {
        for (f, _) in &ops {
            f()?;
        }
    }
    let mut report = Report {
        ns: [0; OPS.len()],
        calls: iters.map(|n| 1 + u64::from(WARM_UP) + u64::from(n)),
    };
    for (((f, _), n), ns) in ops.iter().zip(iters).zip(&mut report.ns) {
        *ns = mean_ns(n, f)?;
    }
    print!("{}", report.to_text());
    Ok(())
}

/// Moves this process into `cgroup`; every process it starts from now on is there too.
fn join_cgroup(cgroup: &Path) -> Result<()> {
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

/// One iteration of the write loop: an open with write access, what jit decides as op `write`.
fn open_for_write(path: &CString) -> Result<()> {
    // SAFETY: a valid NUL-terminated path; the descriptor is closed right away.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: `fd` is ours and open.
    unsafe { libc::close(fd) };
    Ok(())
}

/// `posix_spawn` of one program without arguments or environment. glibc implements it with
/// `clone(CLONE_VM | CLONE_VFORK)`: no page table copy, so an iteration is mostly the kernel's
/// exec and exit paths, and a failed exec comes back as its error number.
struct Spawn {
    path: CString,
}

impl Spawn {
    fn new(path: &str) -> Result<Self> {
        Ok(Self {
            path: CString::new(path)?,
        })
    }

    /// Runs the program and waits for it; fails unless it exec'd and exited 0.
    fn run_once(&self) -> Result<()> {
        let argv: [*mut c_char; 2] = [self.path.as_ptr().cast_mut(), ptr::null_mut()];
        let envp: [*mut c_char; 1] = [ptr::null_mut()];
        let mut pid = 0;
        // SAFETY: a valid path and NULL-terminated argv and envp that outlive the call;
        // posix_spawn does not write through them.
        let rc = unsafe {
            libc::posix_spawn(
                &raw mut pid,
                self.path.as_ptr(),
                ptr::null(),
                ptr::null(),
                argv.as_ptr(),
                envp.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc).into());
        }
        let mut status = 0;
        // SAFETY: waits for our own child, writing its status into a local.
        while unsafe { libc::waitpid(pid, &raw mut status, 0) } != pid {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err.into());
            }
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!("the program ended with wait status {status:#x}");
        }
        Ok(())
    }
}
