//! `cargo xtask test`: the one command that checks everything.
//!
//! setup → `cargo fmt --check` → clippy (host crates, then jit-ebpf for the BPF target) → host
//! unit tests → the shipped policy cases (`jitctl policy test`) → privileged tests in a VM per
//! kernel. Every stage runs even when an earlier one failed, so one run shows every problem;
//! the exit status is non-zero when anything failed.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{
    cmd,
    initramfs::Initramfs,
    kernels::Kernel,
    libtest::{self, Tally},
    setup, vm,
};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Only run the VM tests on these kernel series (`6.1`, `6.12`); default: all.
    #[arg(long = "kernel", value_name = "SERIES")]
    pub kernels: Vec<String>,
    /// Skip fmt, clippy and host tests; run only the VM tests.
    #[arg(long)]
    pub vm_only: bool,
    /// Run only the system test: build the Debian package and a Debian bookworm image, boot it
    /// with systemd and check the installed service (see README, "The system test").
    #[arg(long)]
    pub system: bool,
    /// Extra arguments for every test binary in the VM (for example a test name filter).
    #[arg(last = true)]
    pub passthrough: Vec<String>,
}

/// Repository root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_owned()
}

/// `cargo` for the workspace, with the eBPF object required rather than optional.
pub fn cargo(toolchain: Option<&str>) -> Command {
    let mut cmd = match toolchain {
        Some(toolchain) => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", toolchain, "cargo"]);
            cmd
        }
        None => Command::new("cargo"),
    };
    cmd.current_dir(root())
        .env("JIT_REQUIRE_EBPF", "1")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO");
    cmd
}

fn check(tally: &mut Tally, name: &str, mut command: Command) {
    let result = cmd::step("check", name, || {
        cmd::output(&mut command).map(|_| ((), "ok".into()))
    });
    if result.is_err() {
        tally.fail(format!("check: {name}"));
    }
}

fn host_tests(tally: &mut Tally) {
    let mut command = cargo(None);
    command.args([
        "test",
        "--workspace",
        "--exclude",
        "jit-ebpf",
        "--exclude",
        "jit-tests",
    ]);
    let run = cmd::step("host", "unit tests (cargo test)", || {
        let out = command.output().context("starting cargo test")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let result = libtest::parse(&stdout, "host");
        let summary = format!("{} passed, {} failed", result.passed, result.failed);
        Ok(((out.status.success(), stdout, stderr, result), summary))
    });
    match run {
        Ok((success, stdout, stderr, result)) => {
            if !success {
                println!("{stdout}\n{stderr}");
                if result.failed == 0 {
                    tally.fail("host: cargo test failed without a failing test (build error?)");
                }
            }
            tally.add(result);
        }
        Err(_) => tally.fail("host: cargo test could not run"),
    }
}

/// `jitctl policy test` on the shipped case files (`policies/tests/*.toml`) against the shipped
/// policies: every case counts as a test. `--offline`: the approvers are checked by the host
/// tests; these cases are about decisions.
fn policy_cases(tally: &mut Tally) {
    let run = cmd::step("host", "policy cases (jitctl policy test)", || {
        let dir = root().join("policies").join("tests");
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        anyhow::ensure!(!files.is_empty(), "no case files in {}", dir.display());
        let mut command = cargo(None);
        command
            .args([
                "run",
                "--quiet",
                "--package",
                "jit-agent",
                "--bin",
                "jitctl",
                "--",
            ])
            .args([
                "policy",
                "test",
                "--offline",
                "--json",
                "--policies",
                "policies",
            ])
            .args(&files);
        let out = command.output().context("starting jitctl policy test")?;
        let results: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).with_context(|| {
                format!(
                    "jitctl policy test gave no results ({}):\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        let mut result = Tally::default();
        for r in &results {
            if r["pass"] == true {
                result.passed += 1;
            } else {
                result.fail(format!(
                    "policy case {}:{} ({} {} {}): got {}, expected {}",
                    r["file"].as_str().unwrap_or("?"),
                    r["line"],
                    r["agent"].as_str().unwrap_or("?"),
                    r["op"].as_str().unwrap_or("?"),
                    r["path"].as_str().unwrap_or("?"),
                    r["decision"].as_str().unwrap_or("?"),
                    r["expect"].as_str().unwrap_or("?"),
                ));
            }
        }
        if !out.status.success() && result.failed == 0 {
            result.fail(format!(
                "jitctl policy test failed without a failing case:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let summary = format!("{} passed, {} failed", result.passed, result.failed);
        Ok((result, summary))
    });
    match run {
        Ok(result) => tally.add(result),
        Err(_) => tally.fail("host: jitctl policy test could not run"),
    }
}

/// The executables cargo reports building in `--message-format=json` output:
/// `(target name, path, built as a test)`.
fn executables(cargo_json: &str) -> Vec<(String, PathBuf, bool)> {
    cargo_json
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter_map(|msg| {
            let exe = msg["executable"].as_str()?;
            let name = msg["target"]["name"].as_str()?;
            Some((
                name.to_owned(),
                PathBuf::from(exe),
                msg["profile"]["test"] == true,
            ))
        })
        .collect()
}

/// Builds the privileged test binaries and returns `(name, path)` for each.
fn build_vm_tests() -> Result<Vec<(String, PathBuf)>> {
    let out = cmd::stdout(cargo(None).args([
        "test",
        "--package",
        "jit-tests",
        "--no-run",
        // Optimised: aya parses the kernel's whole BTF at every load, which takes seconds per
        // test in a debug build under software emulation.
        "--release",
        "--message-format=json-render-diagnostics",
    ]))?;
    let bins: Vec<(String, PathBuf)> = executables(&out)
        .into_iter()
        .filter(|(_, _, test)| *test)
        .map(|(name, path, _)| (name, path))
        .collect();
    anyhow::ensure!(!bins.is_empty(), "cargo built no test binary for jit-tests");
    Ok(bins)
}

/// Builds binary `bin` of `package` (release) and returns the executable.
pub fn build_release_bin(package: &str, bin: &str) -> Result<PathBuf> {
    let out = cmd::stdout(cargo(None).args([
        "build",
        "--package",
        package,
        "--bin",
        bin,
        "--release",
        "--message-format=json-render-diagnostics",
    ]))?;
    if let Some((_, path, _)) = executables(&out).into_iter().find(|(name, ..)| name == bin) {
        return Ok(path);
    }
    anyhow::bail!("cargo built no {bin} executable")
}

/// Builds the daemon and `jitctl` (release) for the VM tests that run them, and returns their
/// paths.
pub fn build_daemon() -> Result<Vec<(String, PathBuf)>> {
    let out = cmd::stdout(cargo(None).args([
        "build",
        "--package",
        "jit-agent",
        "--bins",
        "--release",
        "--message-format=json-render-diagnostics",
    ]))?;
    let bins: Vec<(String, PathBuf)> = executables(&out)
        .into_iter()
        .map(|(name, path, _)| (name, path))
        .collect();
    anyhow::ensure!(
        bins.iter().any(|(n, _)| n == "jit-agent") && bins.iter().any(|(n, _)| n == "jitctl"),
        "cargo did not build jit-agent and jitctl"
    );
    Ok(bins)
}

fn build_initramfs(
    bins: &[(String, PathBuf)],
    tools: &[(String, PathBuf)],
    out_dir: &Path,
) -> Result<PathBuf> {
    let scratch = out_dir.join("stripped");
    fs::create_dir_all(&scratch)?;
    let mut image = Initramfs::new(&vm::init_script(vm::RUN_TESTS))?;
    for (name, path) in bins {
        image.add_executable(path, &Path::new("/jit/tests").join(name), &scratch)?;
    }
    // The daemon and jitctl, where the tests (and PATH) find them.
    for (name, path) in tools {
        image.add_executable(path, &Path::new("/jit/bin").join(name), &scratch)?;
    }
    let initrd = out_dir.join("initramfs.cpio");
    image.write(&initrd)?;
    Ok(initrd)
}

fn vm_tests(tally: &mut Tally, kernels: &[Kernel], test_args: &[String]) {
    let out_dir = root().join("target").join("xtask");
    let prepared = cmd::step("vm", "build privileged tests and initramfs", || {
        fs::create_dir_all(&out_dir)?;
        let bins = build_vm_tests()?;
        let tools = build_daemon()?;
        let initrd = build_initramfs(&bins, &tools, &out_dir)?;
        let outcome = format!("{} test binaries", bins.len());
        Ok((initrd, outcome))
    });
    let Ok(initrd) = prepared else {
        tally.fail("vm: the privileged tests could not be built");
        return;
    };
    let mut accel = None;
    // Arguments reach the test binaries through the kernel command line (init's environment).
    let append = if test_args.is_empty() {
        String::new()
    } else {
        format!("JIT_TEST_ARGS={}", test_args.join(","))
    };
    for kernel in kernels {
        let dir = out_dir.join(format!("vm-{}", kernel.series));
        let run = vm::run(
            kernel,
            &initrd,
            &dir,
            &mut accel,
            vm::Accel::Tcg,
            // A whole suite under software emulation on 2 cores takes about 18 minutes per
            // kernel (6.1: 1,053 s for 84 tests); the limit only catches a hung VM.
            Duration::from_mins(40),
            &append,
        );
        let result = match run {
            Ok(run) => {
                let mut result =
                    libtest::parse_vm(&run.results, &format!("kernel {}", kernel.release));
                if let Some(problem) = &run.problem {
                    result.fail(format!("kernel {}: {problem}", kernel.release));
                }
                println!(
                    "[vm] kernel {} ({}): {} passed, {} failed ({}, {:.1}s)",
                    kernel.release,
                    kernel.series,
                    result.passed,
                    result.failed,
                    run.accel.name(),
                    run.elapsed.as_secs_f64()
                );
                if result.failed > 0 {
                    println!(
                        "----- {} -----\n{}",
                        run.results_log.display(),
                        run.results.trim_end()
                    );
                    println!("----- kernel console: {} -----", run.console_log.display());
                }
                result
            }
            Err(err) => {
                println!(
                    "[vm] kernel {} ({}): could not run: {err:#}",
                    kernel.release, kernel.series
                );
                let mut result = Tally::default();
                result.fail(format!("kernel {}: VM could not run", kernel.release));
                result
            }
        };
        tally.add(result);
    }
}

/// Runs the whole suite; prints one result line per kernel and a final `N passed, N failed`.
pub fn run(args: &TestArgs) -> Result<ExitCode> {
    let installed = setup::run()?;
    let kernels: Vec<Kernel> = installed
        .kernels
        .into_iter()
        .filter(|k| args.kernels.is_empty() || args.kernels.iter().any(|s| s == k.series))
        .collect();
    anyhow::ensure!(
        !kernels.is_empty(),
        "--kernel {:?} matches no kernel series (known: 6.1, 6.12)",
        args.kernels
    );
    let mut tally = Tally::default();
    if args.system {
        crate::system::run(&mut tally, &kernels);
        return Ok(finish(&tally));
    }
    if !args.vm_only {
        check(&mut tally, "cargo fmt --check", {
            let mut c = cargo(Some(setup::EBPF_TOOLCHAIN));
            c.args(["fmt", "--all", "--check"]);
            c
        });
        check(&mut tally, "clippy -D warnings (host crates)", {
            let mut c = cargo(None);
            c.args([
                "clippy",
                "--workspace",
                "--exclude",
                "jit-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]);
            c
        });
        check(
            &mut tally,
            "clippy -D warnings (jit-ebpf, bpfel-unknown-none)",
            {
                let mut c = cargo(Some(setup::EBPF_TOOLCHAIN));
                c.args([
                    "clippy",
                    "--package",
                    "jit-ebpf",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                ])
                .args(["--", "-D", "warnings"]);
                c
            },
        );
        host_tests(&mut tally);
        policy_cases(&mut tally);
    }
    vm_tests(&mut tally, &kernels, &args.passthrough);
    Ok(finish(&tally))
}

/// Prints the failures and the final `N passed, N failed`; the exit status.
fn finish(tally: &Tally) -> ExitCode {
    if !tally.failures.is_empty() {
        println!("failures:");
        for failure in &tally.failures {
            println!("  {failure}");
        }
    }
    if tally.ignored > 0 {
        println!("{} tests ignored (each says why above)", tally.ignored);
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
