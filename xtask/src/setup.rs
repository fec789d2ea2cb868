//! Installs, idempotently, everything `cargo xtask test` needs on a fresh Debian machine.
//!
//! Every step first checks whether its piece is already there and only then installs it, so a
//! warm run costs a few cheap probes. Installing needs root (apt) and the package registries.
use std::{
    cell::Cell,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, kernels, peers};

/// Pinned linker for the BPF target. Must match the LLVM major below.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM that bpf-linker is built against (Debian package suffix).
pub const LLVM_MAJOR: u32 = 22;
/// The toolchain `jit-ebpf` is built with (aya-build runs `rustup run nightly cargo build`).
pub const EBPF_TOOLCHAIN: &str = "nightly";

/// What the rest of xtask needs from setup.
pub struct Installed {
    pub kernels: Vec<kernels::Kernel>,
}

/// apt needs one `apt-get update` per run before the first install or look-up miss.
struct Apt {
    updated: Cell<bool>,
}

impl Apt {
    fn update_once(&self) -> Result<()> {
        if !self.updated.get() {
            require_root("apt-get update")?;
            cmd::output(Command::new("apt-get").arg("update"))?;
            self.updated.set(true);
        }
        Ok(())
    }

    fn missing(packages: &[&str]) -> Vec<String> {
        packages
            .iter()
            .filter(|pkg| {
                let status = Command::new("dpkg-query")
                    .args(["-W", "-f=${Status}", pkg])
                    .output();
                !status.is_ok_and(|out| {
                    String::from_utf8_lossy(&out.stdout).trim() == "install ok installed"
                })
            })
            .map(|pkg| (*pkg).to_owned())
            .collect()
    }

    /// Installs whichever of `packages` is missing; returns the step outcome.
    fn ensure(&self, packages: &[&str]) -> Result<((), String)> {
        let missing = Self::missing(packages);
        if missing.is_empty() {
            return Ok(((), "ok, already installed".into()));
        }
        require_root(&format!("apt-get install {}", missing.join(" ")))?;
        self.update_once()?;
        cmd::output(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing),
        )?;
        Ok(((), format!("installed {}", missing.join(" "))))
    }
}

fn require_root(what: &str) -> Result<()> {
    if nix_geteuid() != 0 {
        bail!("`{what}` needs root: run `cargo xtask` as root, or install it yourself");
    }
    Ok(())
}

fn nix_geteuid() -> u32 {
    // `id -u` keeps xtask free of libc bindings for a single call.
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(u32::MAX)
}

fn rust_src() -> Result<((), String)> {
    let installed = cmd::stdout(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
    .with_context(|| format!("the `{EBPF_TOOLCHAIN}` toolchain is needed to build jit-ebpf"))?;
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        return Ok(((), "ok, already installed".into()));
    }
    cmd::output(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))?;
    Ok(((), "installed".into()))
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn bpf_linker() -> Result<((), String)> {
    let linker = cargo_bin_dir().join("bpf-linker");
    if let Ok(out) = Command::new(&linker).arg("--version").output() {
        let version = String::from_utf8_lossy(&out.stdout);
        if version.contains(BPF_LINKER_VERSION) {
            return Ok(((), "ok, already installed".into()));
        }
    }
    cmd::output(
        Command::new("cargo")
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}"))
            .args([
                "install",
                "bpf-linker",
                "--force",
                "--locked",
                "--no-default-features",
            ])
            .args([
                "--version",
                BPF_LINKER_VERSION,
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ]),
    )?;
    Ok(((), format!("installed {BPF_LINKER_VERSION}")))
}

/// Installs the whole toolchain and fetches the test kernels.
pub fn run() -> Result<Installed> {
    let apt = Apt {
        updated: Cell::new(false),
    };
    let llvm_dev = format!("llvm-{LLVM_MAJOR}-dev");
    let polly_dev = format!("libpolly-{LLVM_MAJOR}-dev");
    cmd::step("setup", &format!("LLVM {LLVM_MAJOR} (apt)"), || {
        apt.ensure(&[&llvm_dev, &polly_dev, "libzstd-dev", "zlib1g-dev"])
    })?;
    cmd::step("setup", "qemu and busybox for the test VM (apt)", || {
        apt.ensure(&["qemu-system-x86", "busybox-static"])
    })?;
    // The review page's browser tests (jit-agent/tests/review_page_browser.rs) drive headless
    // Chromium through chromedriver; a font so its screenshots show text.
    cmd::step(
        "setup",
        "Chromium and chromedriver for the browser tests (apt)",
        || apt.ensure(&["chromium", "chromium-driver", "fonts-dejavu-core"]),
    )?;
    cmd::step(
        "setup",
        "dpkg-dev and mmdebstrap for the package and its system test (apt)",
        || apt.ensure(&["dpkg-dev", "mmdebstrap"]),
    )?;
    cmd::step(
        "setup",
        &format!("rust-src for the {EBPF_TOOLCHAIN} toolchain"),
        rust_src,
    )?;
    cmd::step(
        "setup",
        &format!("bpf-linker {BPF_LINKER_VERSION}"),
        bpf_linker,
    )?;
    let mut found = Vec::new();
    for series in kernels::SERIES {
        let kernel = cmd::step("setup", &format!("Debian kernel {}", series.name), || {
            kernels::ensure(series, || apt.update_once())
        })?;
        found.push(kernel);
    }
    Ok(Installed { kernels: found })
}

/// What `cargo xtask bench` needs on top of [`run`]: Debian's fapolicyd (cached, extracted) and
/// the host libraries it links. Returns the extracted package tree.
pub fn fapolicyd() -> Result<PathBuf> {
    let apt = Apt {
        updated: Cell::new(false),
    };
    cmd::step("setup", "fapolicyd's libraries (apt)", || {
        apt.ensure(&peers::HOST_LIBRARIES)
    })?;
    cmd::step("setup", "Debian's fapolicyd (apt-get download)", || {
        peers::ensure_fapolicyd(|| apt.update_once())
    })
}
