//! Builds `jit-ebpf` for the BPF target (nightly + bpf-linker, via aya-build) and leaves the
//! object in `OUT_DIR/jit`, where `src/bpf.rs` embeds it.
//!
//! Plain `cargo build` must work on machines without the eBPF toolchain: when `bpf-linker` is
//! not installed the crate is built without the object (cfg `jit_ebpf_missing`) and refuses to
//! load at run time with an error that says how to fix it. `cargo xtask` sets
//! `JIT_REQUIRE_EBPF=1`, which turns a missing toolchain into a build failure instead.
use std::{env, path::Path};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(jit_ebpf_missing)");
    println!("cargo:rerun-if-env-changed=JIT_REQUIRE_EBPF");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=PATH");

    let required = env::var_os("JIT_REQUIRE_EBPF").is_some_and(|v| v == "1");
    let skipped = env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true");
    let linker = which::which("bpf-linker");

    if skipped || linker.is_err() {
        let why = if skipped {
            "AYA_BUILD_SKIP is set".to_owned()
        } else {
            "bpf-linker is not installed".to_owned()
        };
        if required {
            bail!(
                "JIT_REQUIRE_EBPF=1 but {why}; run `cargo xtask setup` to install the eBPF toolchain"
            );
        }
        println!(
            "cargo:warning=building jit-agent WITHOUT its eBPF programs ({why}); it cannot \
             enforce anything. Run `cargo xtask setup` to install the eBPF toolchain."
        );
        println!("cargo:rustc-cfg=jit_ebpf_missing");
        return Ok(());
    }

    let manifest_dir = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = Path::new(&manifest_dir)
        .parent()
        .context("jit-agent has no parent directory")?
        .join("jit-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("path of jit-ebpf is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "jit-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the eBPF programs (jit-ebpf) failed")
}
