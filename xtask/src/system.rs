//! The system test (`cargo xtask test --system`): the Debian package on a real Debian system.
//!
//! A Debian bookworm root filesystem with systemd as init is built by mmdebstrap from Debian's
//! packages (cached beside the kernels, keyed by a hash of its recipe), booted with a stock
//! Debian kernel under qemu, and `system/systest.sh` inside it installs `jit_*.deb` with apt
//! (offline, from a second disk), enables the service, reboots, and checks the service as an
//! operator uses it, up to `apt remove`. See README, "Install" and "The system test".
//!
//! Boot: the cloud kernel has ext4 built in but virtio-blk as a module, so a busybox initramfs
//! loads `virtio_blk.ko` (from the same kernel package), mounts the image and `switch_root`s
//! to systemd. A guest reboot reuses the same kernel and initramfs, and the disk keeps its state.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, initramfs::Initramfs, kernels::Kernel, libtest::Tally, test, vm::Accel};

const SYSTEST_SH: &str = include_str!("system/systest.sh");
const SYSTEST_POLICY: &str = include_str!("system/systest.toml");
const CUSTOMIZE_SH: &str = include_str!("system/customize.sh");
/// Debian packages of the image beyond mmdebstrap's `apt` variant (essential + apt).
const INCLUDE: &str = "systemd,systemd-sysv,bpftool,procps,passwd";
/// The image's size (sparse): the system uses about a third of it.
const IMAGE_SIZE: &str = "2G";
const PASS: &str = "JIT-SYSTEST ok ";
const FAIL: &str = "JIT-SYSTEST FAIL ";
const DONE: &str = "JIT-SYSTEST-DONE";

/// Everything that decides the image's content; its hash names the cached image.
fn recipe() -> String {
    format!(
        "mmdebstrap --variant=apt --include={INCLUDE} bookworm size={IMAGE_SIZE}\n{CUSTOMIZE_SH}"
    )
}

fn images_dir() -> PathBuf {
    crate::kernels::cache_dir()
        .parent()
        .map_or_else(|| PathBuf::from("/var/cache/jit"), Path::to_owned)
        .join("images")
}

fn sha256(text: &str) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting sha256sum")?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, text.as_bytes())?;
    let out = child.wait_with_output()?;
    let hex = String::from_utf8_lossy(&out.stdout);
    Ok(hex.split_whitespace().next().unwrap_or_default()[..16].to_owned())
}

/// The cached bookworm image (ext4), built when its recipe changed or it is missing.
pub fn ensure_image() -> Result<(PathBuf, String)> {
    let key = sha256(&recipe())?;
    let image = images_dir().join(format!("bookworm-systemd-{key}.ext4"));
    if image.is_file() {
        let outcome = format!("ok, cached {}", image.display());
        return Ok((image, outcome));
    }
    fs::create_dir_all(images_dir())?;
    let work = images_dir().join(format!("bookworm-systemd-{key}.partial"));
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let hook = work.join("customize.sh");
    fs::write(&hook, CUSTOMIZE_SH)?;
    let tree = work.join("root");
    let start = Instant::now();
    cmd::output(
        Command::new("mmdebstrap")
            .args(["--variant=apt", "--mode=root", "--quiet"])
            .arg(format!("--include={INCLUDE}"))
            .arg(format!("--customize-hook=sh {} \"$1\"", hook.display()))
            .arg("bookworm")
            .arg(&tree),
    )?;
    let raw = work.join("image.ext4");
    cmd::output(
        Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "jit-systest", "-d"])
            .arg(&tree)
            .arg(&raw)
            .arg(IMAGE_SIZE),
    )?;
    fs::rename(&raw, &image)?;
    fs::remove_dir_all(&work)?;
    Ok((
        image.clone(),
        format!(
            "built {} in {:.0}s",
            image.display(),
            start.elapsed().as_secs_f64()
        ),
    ))
}

/// `virtio_blk.ko` of `kernel`, from its package (cached beside its image).
fn virtio_blk(kernel: &Kernel) -> Result<PathBuf> {
    let dir = kernel
        .vmlinuz
        .parent()
        .context("kernel image without a directory")?;
    let module = dir.join("virtio_blk.ko");
    if module.is_file() {
        return Ok(module);
    }
    let package = dir
        .file_name()
        .context("kernel directory without a name")?
        .to_string_lossy()
        .into_owned();
    let work = dir.join("modules.partial");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    cmd::output(
        Command::new("apt-get")
            .args(["download", &package])
            .current_dir(&work),
    )?;
    let deb = fs::read_dir(&work)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download produced no .deb")?;
    let tree = work.join("tree");
    cmd::output(Command::new("dpkg").arg("-x").arg(&deb).arg(&tree))?;
    let found = cmd::stdout(
        Command::new("find")
            .arg(&tree)
            .args(["-name", "virtio_blk.ko*"]),
    )?;
    let found = found
        .lines()
        .next()
        .context("the kernel package has no virtio_blk module")?;
    let data = if Path::new(found).extension().is_some_and(|x| x == "xz") {
        cmd::output(Command::new("xz").args(["-dc", found]))?.stdout
    } else if Path::new(found).extension().is_some_and(|x| x == "zst") {
        cmd::output(Command::new("zstd").args(["-dc", found]))?.stdout
    } else {
        fs::read(found)?
    };
    fs::write(&module, data)?;
    fs::remove_dir_all(&work)?;
    Ok(module)
}

const INIT: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /virtio_blk.ko
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /newroot
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "JIT-SYSTEST FAIL boot: cannot mount the root image" > /dev/ttyS1
    poweroff -f
fi
umount /proc /sys /dev
exec switch_root /newroot /sbin/init
"#;

fn initramfs(kernel: &Kernel, dir: &Path) -> Result<PathBuf> {
    let mut image = Initramfs::new(INIT)?;
    image.add_bytes(
        Path::new("/virtio_blk.ko"),
        fs::read(virtio_blk(kernel)?)?,
        0o644,
    );
    let path = dir.join("initramfs.cpio");
    image.write(&path)?;
    Ok(path)
}

/// The second disk: a tar archive of the package, the test script and its policy.
fn payload(deb: &Path, dir: &Path) -> Result<PathBuf> {
    let stage = dir.join("payload");
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(&stage)?;
    fs::copy(
        deb,
        stage.join(deb.file_name().context("deb without a name")?),
    )?;
    fs::write(stage.join("systest.sh"), SYSTEST_SH)?;
    fs::write(stage.join("systest.toml"), SYSTEST_POLICY)?;
    let tar = dir.join("payload.tar");
    cmd::output(
        Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&stage)
            .arg("."),
    )?;
    Ok(tar)
}

/// One boot of the image under `accel`: returns the results log and why it ended early.
fn boot(
    kernel: &Kernel,
    initrd: &Path,
    root: &Path,
    payload: &Path,
    dir: &Path,
    accel: Accel,
    timeout: Duration,
) -> Result<(String, Option<String>)> {
    let console = dir.join("console.log");
    let results = dir.join("results.log");
    let _ = fs::remove_file(&console);
    let _ = fs::remove_file(&results);
    let mut child = Command::new("qemu-system-x86_64")
        .args(accel.args())
        .args([
            "-m",
            "2048",
            "-smp",
            accel.cpus(),
            "-nodefaults",
            "-display",
            "none",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg("console=ttyS0 panic=-1 loglevel=4 systemd.show_status=0")
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", root.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,readonly=on",
            payload.display()
        ))
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let start = Instant::now();
    let boot_timeout = if accel == Accel::Kvm {
        Duration::from_mins(1)
    } else {
        Duration::from_mins(5)
    };
    let mut problem = None;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                problem = Some(format!(
                    "qemu exited with {status}: {}",
                    stderr.lines().next().unwrap_or_default()
                ));
            }
            break;
        }
        let text = fs::read_to_string(&results).unwrap_or_default();
        if !text.contains("JIT-VM-BOOTED") && start.elapsed() > boot_timeout {
            problem = Some(format!("no boot within {}s", boot_timeout.as_secs()));
        } else if start.elapsed() > timeout {
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
        thread::sleep(Duration::from_millis(200));
    }
    let text = fs::read_to_string(&results)
        .unwrap_or_default()
        .replace('\r', "");
    if problem.is_none() && !text.contains(DONE) {
        problem = Some("the guest powered off before the test finished".into());
    }
    Ok((text, problem))
}

/// Counts the `JIT-SYSTEST ok|FAIL` lines.
pub fn parse(results: &str, context: &str) -> Tally {
    let mut tally = Tally::default();
    for line in results.lines() {
        if line.starts_with(PASS) {
            tally.passed += 1;
        } else if let Some(what) = line.strip_prefix(FAIL) {
            tally.fail(format!("{context}: {what}"));
        }
    }
    tally
}

/// The system test on one kernel: boots under KVM when it works, else TCG (remembered in
/// `known_accel` for the next kernel).
fn run_kernel(
    kernel: &Kernel,
    image: &Path,
    deb: &Path,
    dir: &Path,
    known_accel: &mut Option<Accel>,
) -> Result<Tally> {
    fs::create_dir_all(dir)?;
    let initrd = initramfs(kernel, dir)?;
    let payload = payload(deb, dir)?;
    let candidates = match *known_accel {
        Some(a) => vec![a],
        None if crate::vm::kvm_available() => vec![Accel::Kvm, Accel::Tcg],
        None => vec![Accel::Tcg],
    };
    for accel in candidates {
        let root = dir.join("root.ext4");
        let _ = fs::remove_file(&root);
        cmd::output(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(image)
                .arg(&root),
        )?;
        let start = Instant::now();
        let (results, problem) = boot(
            kernel,
            &initrd,
            &root,
            &payload,
            dir,
            accel,
            Duration::from_mins(30),
        )?;
        if !results.contains("JIT-VM-BOOTED") && accel == Accel::Kvm {
            eprintln!(
                "[system] {}: no boot under KVM ({}); falling back to software emulation",
                kernel.release,
                problem.as_deref().unwrap_or("?")
            );
            continue;
        }
        *known_accel = Some(accel);
        let mut result = parse(&results, &format!("system {}", kernel.release));
        if let Some(problem) = problem {
            result.fail(format!("system {}: {problem}", kernel.release));
        }
        println!(
            "[system] kernel {} ({}): {} passed, {} failed ({}, {:.1}s)",
            kernel.release,
            kernel.series,
            result.passed,
            result.failed,
            accel.name(),
            start.elapsed().as_secs_f64()
        );
        for line in results
            .lines()
            .filter(|l| l.starts_with("JIT-SYSTEST-TIME"))
        {
            println!(
                "[system]   {}",
                line.trim_start_matches("JIT-SYSTEST-TIME ")
            );
        }
        if result.failed > 0 {
            println!(
                "----- {} -----\n{}",
                dir.join("results.log").display(),
                results.trim_end()
            );
            println!(
                "----- kernel console: {} -----",
                dir.join("console.log").display()
            );
        }
        let _ = fs::remove_file(&root);
        return Ok(result);
    }
    bail!("no accelerator booted the image")
}

/// Runs the system test on each kernel; adds its results to `tally`.
pub fn run(tally: &mut Tally, kernels: &[Kernel]) {
    let out_dir = test::root().join("target").join("xtask");
    let prepared = (|| -> Result<(PathBuf, PathBuf)> {
        let (image, _) = cmd::step("system", "Debian bookworm image (mmdebstrap)", || {
            let (image, outcome) = ensure_image()?;
            Ok(((image.clone(), outcome.clone()), outcome))
        })?;
        // JIT_SYSTEST_DEB=PATH tests a package built before (iterating on the test itself).
        let deb = match std::env::var_os("JIT_SYSTEST_DEB") {
            Some(path) => PathBuf::from(path),
            None => crate::dist::build()?,
        };
        Ok((image, deb))
    })();
    let Ok((image, deb)) = prepared else {
        tally.fail("system: the image or the package could not be built");
        return;
    };
    let mut known_accel = None;
    for kernel in kernels {
        let dir = out_dir.join(format!("system-{}", kernel.series));
        let result = run_kernel(kernel, &image, &deb, &dir, &mut known_accel);
        match result {
            Ok(result) => tally.add(result),
            Err(err) => {
                println!("[system] kernel {}: could not run: {err:#}", kernel.release);
                tally.fail(format!("system {}: could not run", kernel.release));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_checks_and_names_failures() {
        let t = parse(
            "JIT-VM-BOOTED 6.12\nJIT-SYSTEST ok a\nJIT-SYSTEST FAIL b: why\nJIT-SYSTEST ok c\n",
            "k",
        );
        assert_eq!((t.passed, t.failed), (2, 1));
        assert_eq!(t.failures, ["k: b: why"]);
    }

    #[test]
    fn the_guest_script_reports_every_check_it_makes() {
        // Every check goes through check/check_not (or ok/fail): nothing is asserted silently.
        assert!(SYSTEST_SH.contains("JIT-SYSTEST-DONE"));
        assert!(SYSTEST_SH.contains("apt-get remove -y jit"));
        assert!(CUSTOMIZE_SH.contains("jit-systest.service"));
    }
}
