//! `cargo xtask dist`: the Debian package `target/dist/jit_VERSION_ARCH.deb`.
//!
//! Built by hand with `dpkg-deb` rather than with cargo-deb: `dpkg-deb` and `dpkg-shlibdeps` are
//! Debian's own tools (dpkg is on every Debian machine, dpkg-dev is one apt package), so there is
//! no extra Rust tool to compile, pin and keep building on our toolchain, and the package layout
//! is all here, in one file, instead of in a `[package.metadata.deb]` table plus generated
//! maintainer-script snippets. The packaging files themselves are in `packaging/`.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{cmd, test};

/// The package's name (and the `jit_*.deb` in the README).
pub const PACKAGE: &str = "jit";

/// `cargo xtask dist`: builds the package and prints its path and size.
pub fn run() -> Result<ExitCode> {
    crate::setup::run()?;
    let deb = build()?;
    let size = fs::metadata(&deb)?.len();
    println!("{} ({} KiB)", deb.display(), size.div_ceil(1024));
    Ok(ExitCode::SUCCESS)
}

/// Builds the release binaries and the package; returns the `.deb`.
pub fn build() -> Result<PathBuf> {
    let bins = cmd::step("dist", "build jit-agent and jitctl (release)", || {
        Ok((test::build_daemon()?, "ok".into()))
    })?;
    let bin = |name: &str| -> Result<PathBuf> {
        bins.iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .with_context(|| format!("no {name} was built"))
    };
    let (agent, jitctl) = (bin("jit-agent")?, bin("jitctl")?);
    cmd::step("dist", "jit_*.deb (dpkg-deb)", || {
        let deb = package(&agent, &jitctl)?;
        let size = fs::metadata(&deb)?.len();
        Ok((deb, format!("{} KiB", size.div_ceil(1024))))
    })
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn architecture() -> Result<String> {
    Ok(
        cmd::stdout(Command::new("dpkg").arg("--print-architecture"))?
            .trim()
            .to_owned(),
    )
}

/// Copies `src` to `root` + `dest` with `mode`, creating the directories.
fn install(root: &Path, dest: &str, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = root.join(dest.trim_start_matches('/'));
    fs::create_dir_all(path.parent().context("no parent")?)?;
    fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The package's `/etc/jit/jit-agent.toml`: the documented example with the control socket
/// opened to the `jit-reviewers` group (mode 0660), so it cannot drift from the example.
pub fn default_config(example: &str) -> Result<String> {
    let mut out = String::with_capacity(example.len());
    let (mut section, mut mode, mut group) = (String::new(), false, false);
    for line in example.lines() {
        if line.starts_with('[') {
            line.trim().clone_into(&mut section);
        }
        if section == "[socket]" && line.trim() == "mode = \"0600\"" {
            out.push_str("mode = \"0660\"\n");
            mode = true;
        } else if section == "[socket]" && line.trim() == "# group = \"jit-reviewers\"" {
            out.push_str("group = \"jit-reviewers\"\n");
            group = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    ensure!(
        mode && group,
        "jit-agent.example.toml no longer has the [socket] mode and group lines the package edits"
    );
    Ok(format!(
        "# Installed by the jit Debian package: the example configuration, with the control\n\
         # socket open to the jit-reviewers group. Both jit-agent and jitctl read this file by\n\
         # default.\n{out}"
    ))
}

fn gzip(path: &Path) -> Result<Vec<u8>> {
    Ok(cmd::output(Command::new("gzip").args(["-9", "-n", "-c"]).arg(path))?.stdout)
}

/// `Depends:` from the libraries the binaries link (`dpkg-shlibdeps`).
fn depends(bins: &[&Path], scratch: &Path) -> Result<String> {
    let dir = scratch.join("shlibdeps");
    fs::create_dir_all(dir.join("debian"))?;
    fs::write(
        dir.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let mut command = Command::new("dpkg-shlibdeps");
    command.arg("-O").current_dir(&dir);
    for bin in bins {
        command.arg(format!("-e{}", bin.display()));
    }
    let out = cmd::stdout(&mut command)?;
    let deps = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps printed no shlibs:Depends")?;
    Ok(deps.trim().to_owned())
}

fn du_kib(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            if entry.file_name() != "DEBIAN" {
                total += du_kib(&entry.path())?;
            }
        } else {
            total += meta.len().div_ceil(1024);
        }
    }
    Ok(total)
}

/// Man pages and completions, generated by the binaries from their clap definitions.
fn docs(stage: &Path, scratch: &Path, agent: &Path, jitctl: &Path) -> Result<()> {
    for (bin, name) in [(agent, "jit-agent"), (jitctl, "jitctl")] {
        let gen_dir = scratch.join("gen").join(name);
        cmd::output(Command::new(bin).env("JIT_GENERATE_DOCS", &gen_dir))?;
        for entry in fs::read_dir(gen_dir.join("man"))? {
            let path = entry?.path();
            let file = path.file_name().context("no name")?.to_string_lossy();
            let section = file
                .rsplit('.')
                .next()
                .context("man page without a section")?;
            install(
                stage,
                &format!("/usr/share/man/man{section}/{file}.gz"),
                &gzip(&path)?,
                0o644,
            )?;
        }
        let comp = gen_dir.join("completions");
        for (shell, dest) in [
            (
                "bash",
                format!("/usr/share/bash-completion/completions/{name}"),
            ),
            ("zsh", format!("/usr/share/zsh/vendor-completions/_{name}")),
            (
                "fish",
                format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
            ),
        ] {
            let src = fs::read_dir(comp.join(shell))?
                .next()
                .context("no completion generated")??
                .path();
            install(stage, &dest, &read(&src)?, 0o644)?;
        }
    }

    Ok(())
}

/// The example policies, disabled: enabling one is copying it into /etc/jit/policies.
fn examples(stage: &Path, policies: &Path) -> Result<()> {
    let mut examples = 0;
    for entry in fs::read_dir(policies)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let file = path.file_name().context("no name")?.to_string_lossy();
            install(
                stage,
                &format!("/usr/share/jit/policies/{file}"),
                &read(&path)?,
                0o644,
            )?;
            examples += 1;
        }
    }
    ensure!(
        examples > 0,
        "no example policies in {}",
        policies.display()
    );
    install(
        stage,
        "/usr/share/jit/policies/README.md",
        &read(&policies.join("README.md"))?,
        0o644,
    )?;

    Ok(())
}

/// `DEBIAN/`: control (with `Depends:` from the binaries), conffiles, maintainer scripts.
fn control_files(stage: &Path, scratch: &Path, packaging: &Path, arch: &str) -> Result<()> {
    let depends = depends(
        &[
            &stage.join("usr/sbin/jit-agent"),
            &stage.join("usr/bin/jitctl"),
        ],
        scratch,
    )?;
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: jit developers <jit@example.invalid>\n\
         Installed-Size: {size}\n\
         Depends: {depends}, passwd, systemd\n\
         Section: admin\n\
         Priority: optional\n\
         Description: just-in-time approval of agent actions, enforced by BPF LSM\n \
         jit-agent loads BPF LSM programs that decide the operations of processes in agent\n \
         cgroups from per-agent policies, holds actions for reviewers (jitctl, HTTP, webhook)\n \
         and writes a hash-chained audit trail. Needs a kernel with BPF LSM active (6.1+).\n",
        version = version(),
        size = du_kib(stage)?,
    );
    install(stage, "/DEBIAN/control", control.as_bytes(), 0o644)?;
    install(
        stage,
        "/DEBIAN/conffiles",
        b"/etc/jit/jit-agent.toml\n",
        0o644,
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        install(
            stage,
            &format!("/DEBIAN/{script}"),
            &read(&packaging.join("debian").join(script))?,
            0o755,
        )?;
    }

    Ok(())
}

fn package(agent: &Path, jitctl: &Path) -> Result<PathBuf> {
    let root = test::root();
    let arch = architecture()?;
    let out_dir = root.join("target").join("dist");
    let stage = out_dir.join(format!("{PACKAGE}_{}_{arch}", version()));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(&stage)?;
    let scratch = out_dir.join("scratch");
    if scratch.exists() {
        fs::remove_dir_all(&scratch)?;
    }
    fs::create_dir_all(&scratch)?;

    // Binaries, stripped.
    for (src, dest) in [(agent, "/usr/sbin/jit-agent"), (jitctl, "/usr/bin/jitctl")] {
        let stripped = scratch.join(src.file_name().context("binary without a name")?);
        cmd::output(
            Command::new("strip")
                .arg("--strip-unneeded")
                .arg("-o")
                .arg(&stripped)
                .arg(src),
        )?;
        install(&stage, dest, &read(&stripped)?, 0o755)?;
    }

    docs(&stage, &scratch, agent, jitctl)?;

    examples(&stage, &root.join("policies"))?;

    // Configuration, unit, tmpfiles, docs.
    let example = fs::read_to_string(root.join("jit-agent/jit-agent.example.toml"))?;
    install(
        &stage,
        "/etc/jit/jit-agent.toml",
        default_config(&example)?.as_bytes(),
        0o644,
    )?;
    let packaging = root.join("packaging");
    install(
        &stage,
        "/lib/systemd/system/jit-agent.service",
        &read(&packaging.join("jit-agent.service"))?,
        0o644,
    )?;
    install(
        &stage,
        "/usr/lib/tmpfiles.d/jit.conf",
        &read(&packaging.join("jit.tmpfiles"))?,
        0o644,
    )?;
    install(
        &stage,
        "/usr/share/doc/jit/jit-agent.example.toml",
        example.as_bytes(),
        0o644,
    )?;
    install(
        &stage,
        "/usr/share/doc/jit/copyright",
        format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
             Upstream-Name: jit\n\nFiles: *\nLicense: {}\n \
             On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n",
            env!("CARGO_PKG_LICENSE")
        )
        .as_bytes(),
        0o644,
    )?;

    control_files(&stage, &scratch, &packaging, &arch)?;

    let deb = out_dir.join(format!("{PACKAGE}_{}_{arch}.deb", version()));
    let _ = fs::remove_file(&deb);
    cmd::output(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    if !deb.is_file() {
        bail!("dpkg-deb wrote no {}", deb.display());
    }
    Ok(deb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_opens_the_socket_to_reviewers_only() {
        let example = fs::read_to_string(test::root().join("jit-agent/jit-agent.example.toml"))
            .expect("example config");
        let config = default_config(&example).expect("the example has the socket lines");
        assert!(config.contains("\n[socket]\n"));
        let socket = config.split("\n[socket]\n").nth(1).unwrap();
        let socket = socket.split("\n[").next().unwrap();
        assert!(socket.contains("\nmode = \"0660\"\n"), "{socket}");
        assert!(socket.contains("\ngroup = \"jit-reviewers\"\n"), "{socket}");
        assert!(!config.contains("mode = \"0600\""));
        assert!(default_config("[socket]\nmode = \"0600\"\n").is_err());
    }
}
