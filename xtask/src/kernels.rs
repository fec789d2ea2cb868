//! The stock Debian kernels the VM tests boot: resolved with apt, cached between runs.
//!
//! We use the `cloud` flavour: everything the tests need (BPF LSM, BTF, cgroup2, bpffs, serial
//! console) is built in, so the VM boots from a kernel image and an initramfs, no modules.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// A kernel line we support and test on.
pub struct Series {
    /// Short name used on the command line and in result lines (`6.1`).
    pub name: &'static str,
    /// Package names look like `{prefix}{number}{suffix}`.
    prefix: &'static str,
    suffix: &'static str,
}

/// 6.1 is the oldest kernel jit supports, 6.12 the newest Debian bookworm ships.
pub const SERIES: &[Series] = &[
    Series {
        name: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64",
    },
    Series {
        name: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-amd64",
    },
];

/// A kernel image ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub series: &'static str,
    /// `uname -r` inside the VM.
    pub release: String,
    pub vmlinuz: PathBuf,
}

impl Series {
    /// The package's build number, if `package` belongs to this series.
    fn build_number(&self, package: &str) -> Option<u64> {
        package
            .strip_prefix(self.prefix)?
            .strip_suffix(self.suffix)?
            .parse()
            .ok()
    }

    /// The newest package of this series apt knows about.
    fn newest_package(&self) -> Result<Option<String>> {
        let pattern = format!(
            "^{}[0-9]+{}$",
            self.prefix.replace('.', "\\."),
            self.suffix.replace(['.', '+'], ".")
        );
        let found =
            cmd::stdout(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
        Ok(found
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter_map(|pkg| self.build_number(pkg).map(|n| (n, pkg.to_owned())))
            .max()
            .map(|(_, pkg)| pkg))
    }
}

/// Where downloaded kernels are kept between runs.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("jit").join("kernels")
}

fn cached(dir: &Path, series: &'static str) -> Result<Kernel> {
    let release =
        fs::read_to_string(dir.join("release")).context("reading cached kernel release")?;
    Ok(Kernel {
        series,
        release: release.trim().to_owned(),
        vmlinuz: dir.join("vmlinuz"),
    })
}

fn download(package: &str, dest: &Path) -> Result<()> {
    let work = dest.with_extension("partial");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    cmd::output(
        Command::new("apt-get")
            .arg("download")
            .arg(package)
            .current_dir(&work),
    )?;
    let deb = fs::read_dir(&work)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .context("apt-get download produced no .deb")?;
    let tree = work.join("tree");
    cmd::output(Command::new("dpkg").arg("-x").arg(&deb).arg(&tree))?;
    let (release, image) = fs::read_dir(tree.join("boot"))?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            Some((release, entry.path()))
        })
        .context("the kernel package has no boot/vmlinuz-*")?;
    fs::copy(&image, work.join("vmlinuz"))?;
    fs::write(work.join("release"), format!("{release}\n"))?;
    fs::remove_dir_all(&tree)?;
    fs::remove_file(&deb)?;
    fs::rename(&work, dest)?;
    Ok(())
}

/// Resolves the newest kernel of `series` and makes sure its image is in the cache.
pub fn ensure(
    series: &'static Series,
    apt_update: impl Fn() -> Result<()>,
) -> Result<(Kernel, String)> {
    let mut package = series.newest_package()?;
    if package.is_none() {
        apt_update()?;
        package = series.newest_package()?;
    }
    let Some(package) = package else {
        bail!(
            "apt knows no package {}<N>{} (is the bookworm archive in the apt sources?)",
            series.prefix,
            series.suffix
        );
    };
    let dir = cache_dir().join(&package);
    if dir.join("vmlinuz").is_file() {
        let kernel = cached(&dir, series.name)?;
        return Ok((kernel, format!("ok, cached {package}")));
    }
    fs::create_dir_all(cache_dir())
        .with_context(|| format!("creating {}", cache_dir().display()))?;
    download(&package, &dir).with_context(|| format!("fetching {package}"))?;
    Ok((cached(&dir, series.name)?, format!("downloaded {package}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_numbers_only_match_their_series() {
        let [v61, v612] = [&SERIES[0], &SERIES[1]];
        assert_eq!(
            v61.build_number("linux-image-6.1.0-56-cloud-amd64"),
            Some(56)
        );
        assert_eq!(
            v61.build_number("linux-image-6.1.0-56-cloud-amd64-unsigned"),
            None
        );
        assert_eq!(v61.build_number("linux-image-6.1.0-56-amd64"), None);
        assert_eq!(
            v612.build_number("linux-image-6.12.117+deb12-cloud-amd64"),
            Some(117)
        );
        assert_eq!(
            v612.build_number("linux-image-6.12.117+deb12-cloud-amd64-dbg"),
            None
        );
        assert_eq!(v612.build_number("linux-image-6.1.0-56-cloud-amd64"), None);
    }
}
