//! `cargo xtask bench`: what jit's kernel programs cost the processes they watch, measured in a VM.
//!
//! Builds `jit-bench` (`tests/src/bin/jit-bench.rs`), boots one kernel with an initramfs that runs
//! it in place of the test binaries, and prints what it printed: one `bench <op>/<case> ...` line
//! per measurement, then a table. The cases and the measuring live in jit-bench; this module
//! builds, boots, and turns a bench that did not run to the end into a failing exit status.
use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{cmd, initramfs::Initramfs, peers, setup, test::root, vm};

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The kernel series to boot (`6.1` or `6.12`).
    #[arg(long, value_name = "SERIES", default_value = "6.12")]
    pub kernel: String,
    /// Without KVM, time with the host's wall clock under multi-threaded emulation instead of the
    /// default instruction-counting clock (see README, "Benchmarks"): noisier, but it sees cache
    /// and memory effects that instruction counts do not.
    #[arg(long)]
    pub wall_clock: bool,
    /// Extra arguments for jit-bench in the VM: `--reps N`, `--exec-iters N`, `--write-iters N`,
    /// `--create-iters N`, `--tree-iters N`, `--skip rounds|profile|daemon|fapolicyd`.
    #[arg(last = true)]
    pub passthrough: Vec<String>,
}

/// Where jit-bench is installed in the VM; [`RUN_BENCH`] runs it from there.
const BENCH_IN_VM: &str = "/jit/bench/jit-bench";

/// `/init`'s payload: the bench, framed like a test binary so that its exit status comes back.
/// Arguments arrive, comma-separated, through the kernel command line (init's environment). An
/// error is one readable chain of causes: no backtrace for it (panics keep theirs).
const RUN_BENCH: &str = r#"echo "JIT-BIN-START jit-bench"
RUST_LIB_BACKTRACE=0 /jit/bench/jit-bench ${JIT_BENCH_ARGS//,/ }
echo "JIT-BIN-EXIT jit-bench $?"
"#;

/// Builds jit-bench (release, like the VM tests: aya parses the kernel's whole BTF at load, and
/// the timed loops should not measure debug code) and returns the executable.
fn build_bench() -> Result<PathBuf> {
    crate::test::build_release_bin("jit-tests", "jit-bench")
}

/// The bench's image: jit-bench, the daemon and `jitctl` (where the tests find them), and
/// Debian's fapolicyd from `fapolicyd_tree`.
fn build_initramfs(
    exe: &Path,
    tools: &[(String, PathBuf)],
    fapolicyd_tree: &Path,
    out_dir: &Path,
) -> Result<PathBuf> {
    let scratch = out_dir.join("stripped");
    fs::create_dir_all(&scratch)?;
    let mut image = Initramfs::new(&vm::init_script(RUN_BENCH))?;
    image.add_executable(exe, Path::new(BENCH_IN_VM), &scratch)?;
    for (name, path) in tools {
        image.add_executable(path, &Path::new("/jit/bin").join(name), &scratch)?;
    }
    peers::add_fapolicyd(&mut image, fapolicyd_tree, &scratch)?;
    let initrd = out_dir.join("initramfs.cpio");
    image.write(&initrd)?;
    Ok(initrd)
}

/// What jit-bench printed in the VM, and how it ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BenchRun {
    pub started: bool,
    /// Everything between the start and exit markers.
    pub output: String,
    /// The exit status the init script reported; `None` when the bench did not finish.
    pub status: Option<String>,
}

impl BenchRun {
    pub fn parse(results: &str) -> Self {
        let mut run = Self::default();
        for line in results.lines() {
            if line.starts_with(vm::BIN_START) {
                run.started = true;
            } else if let Some(rest) = line.strip_prefix(vm::BIN_EXIT) {
                run.status = rest.split_whitespace().nth(1).map(str::to_owned);
                break;
            } else if run.started {
                run.output.push_str(line);
                run.output.push('\n');
            }
        }
        run
    }

    /// The result lines: `bench <op>/<case> median_ns=<n> ratio=<r>`.
    fn bench_lines(&self) -> usize {
        self.output
            .lines()
            .filter(|line| line.starts_with("bench "))
            .count()
    }

    /// Why this run does not count as a finished bench, if it does not.
    fn problems(&self, results: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match self.status.as_deref() {
            _ if !self.started => problems.push("jit-bench did not start".to_owned()),
            None => problems.push("jit-bench did not finish".to_owned()),
            Some("0") => {}
            Some(status) => problems.push(format!("jit-bench exited with status {status}")),
        }
        if self.started && self.bench_lines() == 0 {
            problems.push("jit-bench printed no `bench` line".to_owned());
        }
        if !results.contains(vm::DONE) {
            problems.push("the VM did not run to the end".to_owned());
        }
        problems
    }
}

/// Runs the bench on one kernel; prints its result lines and table.
pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let installed = setup::run()?;
    let fapolicyd_tree = setup::fapolicyd()?;
    let kernel = installed
        .kernels
        .into_iter()
        .find(|k| k.series == args.kernel)
        .with_context(|| {
            format!(
                "--kernel {} is no kernel series (known: 6.1, 6.12)",
                args.kernel
            )
        })?;
    // Its own directory: a concurrent `cargo xtask test` keeps its initramfs and logs.
    let out_dir = root().join("target").join("xtask").join("bench");
    let initrd = cmd::step(
        "bench",
        "build jit-bench, jit-agent, jitctl and initramfs",
        || {
            fs::create_dir_all(&out_dir)?;
            let exe = build_bench()?;
            let tools = crate::test::build_daemon()?;
            Ok((
                build_initramfs(&exe, &tools, &fapolicyd_tree, &out_dir)?,
                "ok".to_owned(),
            ))
        },
    )?;
    let append = if args.passthrough.is_empty() {
        String::new()
    } else {
        format!("JIT_BENCH_ARGS={}", args.passthrough.join(","))
    };
    let dir = out_dir.join(format!("vm-{}", kernel.series));
    let step = format!(
        "run jit-bench on kernel {} ({})",
        kernel.release, kernel.series
    );
    let vm_run = cmd::step("bench", &step, || {
        let run = vm::run(
            &kernel,
            &initrd,
            &dir,
            &mut None,
            if args.wall_clock {
                vm::Accel::Tcg
            } else {
                vm::Accel::TcgIcount
            },
            Duration::from_mins(30),
            &append,
        )?;
        let outcome = match &run.problem {
            None => format!("ok, {}", run.accel.name()),
            Some(problem) => format!("{problem} ({})", run.accel.name()),
        };
        Ok((run, outcome))
    })?;

    let bench = BenchRun::parse(&vm_run.results);
    print!("{}", bench.output);
    let problems = bench.problems(&vm_run.results);
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!("bench failed:");
    for problem in problems.iter().chain(&vm_run.problem) {
        println!("  {problem}");
    }
    println!(
        "VM output: {} (kernel console: {})",
        vm_run.results_log.display(),
        vm_run.console_log.display()
    );
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINISHED: &str = "JIT-VM-BOOTED 6.12\n\
        JIT-BIN-START jit-bench\n\
        case none: ok\n\
        bench exec/none median_ns=100 ratio=1.00\n\
        JIT-BIN-EXIT jit-bench 0\n\
        JIT-VM-DONE\n";

    #[test]
    fn a_finished_bench_has_its_output_and_no_problem() {
        let run = BenchRun::parse(FINISHED);
        assert_eq!(
            run.output,
            "case none: ok\nbench exec/none median_ns=100 ratio=1.00\n"
        );
        assert_eq!(run.bench_lines(), 1);
        assert!(run.problems(FINISHED).is_empty());
    }

    #[test]
    fn every_way_of_not_finishing_is_a_problem() {
        let failed = FINISHED.replace("jit-bench 0", "jit-bench 1");
        let problems = BenchRun::parse(&failed).problems(&failed);
        assert_eq!(problems, ["jit-bench exited with status 1"]);

        let cut_short = "JIT-VM-BOOTED 6.12\nJIT-BIN-START jit-bench\ncase none: ok\n";
        let problems = BenchRun::parse(cut_short).problems(cut_short);
        assert_eq!(problems.len(), 3, "{problems:?}");

        let silent = "JIT-BIN-START jit-bench\nJIT-BIN-EXIT jit-bench 0\nJIT-VM-DONE\n";
        let problems = BenchRun::parse(silent).problems(silent);
        assert_eq!(problems, ["jit-bench printed no `bench` line"]);

        let problems = BenchRun::parse("").problems("");
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
