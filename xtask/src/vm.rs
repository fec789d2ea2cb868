//! Boots a stock kernel in qemu with our initramfs and collects what the tests printed.
//!
//! Two serial ports keep the streams apart: ttyS0 carries the kernel console (saved to
//! `console.log`), ttyS1 carries only what `/init` and the tests print (`results.log`), so the
//! result parser never sees kernel messages. KVM is tried first; when it is unusable (missing,
//! or qemu+KVM cannot run this guest, as on some nested hosts) we fall back to TCG.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::kernels::Kernel;

/// Printed by `/init` on ttyS1 once the VM is up (followed by `uname -r`).
pub const BOOTED: &str = "JIT-VM-BOOTED";
/// Printed by `/init` after its payload (the test binaries, or the bench).
pub const DONE: &str = "JIT-VM-DONE";
/// `JIT-BIN-START <name>` / `JIT-BIN-EXIT <name> <status>` around each test binary.
pub const BIN_START: &str = "JIT-BIN-START";
pub const BIN_EXIT: &str = "JIT-BIN-EXIT";

/// The VM's `/init` around `payload`: mount what BPF LSM programs need, send everything printed
/// from then on to ttyS1, run `payload`, say [`DONE`], power off.
pub fn init_script(payload: &str) -> String {
    format!("{INIT_PROLOGUE}{payload}{INIT_EPILOGUE}")
}

/// The payload of `cargo xtask test`: every test binary, with the arguments from the kernel
/// command line, each between [`BIN_START`] and [`BIN_EXIT`].
pub const RUN_TESTS: &str = r#"for t in /jit/tests/*; do
    name=${t##*/}
    echo "JIT-BIN-START $name"
    "$t" --test-threads=1 ${JIT_TEST_ARGS//,/ }
    echo "JIT-BIN-EXIT $name $?"
done
"#;

const INIT_PROLOGUE: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
exec >/dev/ttyS1 2>&1
echo "JIT-VM-BOOTED $(uname -r)"
echo "JIT-VM-LSM $(cat /sys/kernel/security/lsm)"
export JIT_IN_VM=1 RUST_BACKTRACE=1 PATH=/jit/bin:/bin:/sbin:/usr/bin:/usr/sbin HOME=/tmp
cd /tmp
"#;

const INIT_EPILOGUE: &str = r#"echo "JIT-VM-DONE"
sync
poweroff -f
"#;

/// How qemu executes the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
    /// TCG with an instruction-counting clock (`-icount`): guest time advances by a fixed amount
    /// per guest instruction, so timings inside the guest are instruction counts, the same in
    /// every run and unaffected by the host's load. Single-threaded, so slower than [`Accel::Tcg`]:
    /// for benchmarks only, where software emulation makes wall-clock time mostly noise.
    TcgIcount,
}

impl Accel {
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Self::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Self::Tcg => &["-accel", "tcg,thread=multi", "-cpu", "max"],
            // shift=0: one nanosecond of guest time per instruction. sleep=off: an idle guest's
            // clock jumps to the next timer instead of waiting in real time.
            Self::TcgIcount => &[
                "-accel",
                "tcg,thread=single",
                "-cpu",
                "max",
                "-icount",
                "shift=0,sleep=off",
            ],
        }
    }

    /// Virtual CPUs. One under the instruction-counting clock: single-threaded emulation runs
    /// vCPUs in turn anyway, and Debian's 6.1 kernel hangs there bringing up a second CPU
    /// (`smp: Bringing up secondary CPUs ...`, nothing after).
    pub fn cpus(self) -> &'static str {
        match self {
            Self::Kvm | Self::Tcg => "2",
            Self::TcgIcount => "1",
        }
    }

    /// Whether this is software emulation (the fallback when KVM does not work).
    fn is_software(self) -> bool {
        matches!(self, Self::Tcg | Self::TcgIcount)
    }

    /// How long the guest may take to print [`BOOTED`].
    fn boot_timeout(self) -> Duration {
        match self {
            Self::Kvm => Duration::from_secs(30),
            Self::Tcg | Self::TcgIcount => Duration::from_mins(3),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
            Self::TcgIcount => "tcg, instruction-counting clock",
        }
    }
}

pub fn kvm_available() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// What one VM run left behind.
pub struct VmRun {
    pub accel: Accel,
    pub results: String,
    pub console_log: PathBuf,
    pub results_log: PathBuf,
    pub elapsed: Duration,
    /// Why the run ended early, if it did.
    pub problem: Option<String>,
}

fn spawn(
    kernel: &Kernel,
    initrd: &Path,
    dir: &Path,
    accel: Accel,
    append_extra: &str,
) -> Result<Child> {
    let console = dir.join("console.log");
    let results = dir.join("results.log");
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(accel.args())
        .args([
            "-m",
            "2048",
            "-smp",
            accel.cpus(),
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 loglevel=4 {append_extra}"))
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    qemu.spawn().context("starting qemu-system-x86_64")
}

/// Boots `kernel` with `initrd` and waits until the guest powers off or `timeout` passes.
///
/// `accel` carries the accelerator that worked last time within this xtask run; KVM is tried
/// first, then `software` ([`Accel::Tcg`] or [`Accel::TcgIcount`]).
pub fn run(
    kernel: &Kernel,
    initrd: &Path,
    dir: &Path,
    accel: &mut Option<Accel>,
    software: Accel,
    timeout: Duration,
    append_extra: &str,
) -> Result<VmRun> {
    fs::create_dir_all(dir)?;
    let candidates = match *accel {
        Some(known) => vec![known],
        None if kvm_available() => vec![Accel::Kvm, software],
        None => vec![software],
    };
    let mut last = None;
    for candidate in candidates {
        let outcome = run_once(kernel, initrd, dir, candidate, timeout, append_extra)?;
        let booted = outcome.results.contains(BOOTED);
        if booted || candidate.is_software() {
            if booted {
                *accel = Some(candidate);
            }
            return Ok(outcome);
        }
        eprintln!(
            "[vm] {}: guest did not boot under KVM ({}); falling back to software emulation",
            kernel.release,
            outcome.problem.as_deref().unwrap_or("no reason given")
        );
        last = Some(outcome);
    }
    last.context("no accelerator to try")
}

fn run_once(
    kernel: &Kernel,
    initrd: &Path,
    dir: &Path,
    accel: Accel,
    timeout: Duration,
    append_extra: &str,
) -> Result<VmRun> {
    let results_log = dir.join("results.log");
    let console_log = dir.join("console.log");
    let _ = fs::remove_file(&results_log);
    let _ = fs::remove_file(&console_log);
    let start = Instant::now();
    let mut child = spawn(kernel, initrd, dir, accel, append_extra)?;
    let mut problem = None;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                let first = stderr.lines().next().unwrap_or_default().trim();
                problem = Some(format!("qemu exited with {status}: {first}"));
            }
            break;
        }
        let results = fs::read_to_string(&results_log).unwrap_or_default();
        let elapsed = start.elapsed();
        if !results.contains(BOOTED) && elapsed > accel.boot_timeout() {
            problem = Some(format!(
                "no boot message within {}s",
                accel.boot_timeout().as_secs()
            ));
        } else if elapsed > timeout {
            problem = Some(format!(
                "still running after {}s; killed",
                timeout.as_secs()
            ));
        }
        if problem.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(VmRun {
        accel,
        results: fs::read_to_string(&results_log).unwrap_or_default(),
        console_log,
        results_log,
        elapsed: start.elapsed(),
        problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_runs_the_payload_between_the_markers() {
        let script = init_script("echo payload\n");
        let at = |needle: &str| {
            script
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from\n{script}"))
        };
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(at(&format!("echo \"{BOOTED} ")) < at("\necho payload\n"));
        assert!(at("\necho payload\n") < at(&format!("\necho \"{DONE}\"\n")));
        assert!(script.ends_with("poweroff -f\n"));
    }
}
