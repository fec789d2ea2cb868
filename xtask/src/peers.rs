//! Peers measured side by side with jit by `cargo xtask bench`: Debian bookworm's fapolicyd,
//! fetched with apt and cached like the kernels, then extracted into the bench's initramfs.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{cmd, initramfs::Initramfs, kernels};

/// The packages fapolicyd runs from: itself and the one library of it a build machine usually
/// lacks (its other libraries — libmagic, libcap-ng, libseccomp, libssl, libudev — come from
/// the host, as `ldd` finds them; setup installs them).
const PACKAGES: [&str; 2] = ["fapolicyd", "liblmdb0"];
/// Host packages whose libraries fapolicyd links, and libmagic's database.
pub const HOST_LIBRARIES: [&str; 6] = [
    "libmagic1",
    "libmagic-mgc",
    "libcap-ng0",
    "libseccomp2",
    "libssl3",
    "libudev1",
];

/// Where fapolicyd's packages are extracted (`tree/`), below the kernels' cache.
fn cache_dir() -> PathBuf {
    kernels::cache_dir()
        .parent()
        .map_or_else(|| PathBuf::from("/var/cache/jit"), Path::to_owned)
        .join("peers")
        .join("fapolicyd")
}

/// Makes sure fapolicyd's packages are extracted in the cache; returns the tree.
pub fn ensure_fapolicyd(apt_update: impl Fn() -> Result<()>) -> Result<(PathBuf, String)> {
    let dir = cache_dir();
    let tree = dir.join("tree");
    if tree.join("usr/sbin/fapolicyd").is_file() {
        return Ok((tree, "ok, cached".into()));
    }
    let work = dir.with_extension("partial");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let download = |work: &Path| {
        cmd::output(
            Command::new("apt-get")
                .arg("download")
                .args(PACKAGES)
                .current_dir(work),
        )
    };
    if download(&work).is_err() {
        apt_update()?;
        download(&work).context("apt-get download fapolicyd liblmdb0")?;
    }
    let mut debs = Vec::new();
    for entry in fs::read_dir(&work)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "deb") {
            cmd::output(
                Command::new("dpkg")
                    .arg("-x")
                    .arg(&path)
                    .arg(work.join("tree")),
            )?;
            debs.push(path.file_name().map(|n| n.to_string_lossy().into_owned()));
            fs::remove_file(&path)?;
        }
    }
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::rename(&work, &dir)?;
    let names: Vec<String> = debs.into_iter().flatten().collect();
    Ok((tree, format!("downloaded {}", names.join(" "))))
}

/// Where fapolicyd's files go in the VM; jit-bench starts it from there.
pub const FAPOLICYD_IN_VM: &str = "/usr/sbin/fapolicyd";

/// Adds fapolicyd to the bench image: the daemon with its libraries, its magic database,
/// libmagic's, its sample rules (jit-bench picks the default set from them), and the account
/// it drops privileges to.
pub fn add_fapolicyd(image: &mut Initramfs, tree: &Path, scratch: &Path) -> Result<()> {
    image.add_executable_from_tree(tree, Path::new(FAPOLICYD_IN_VM), scratch)?;
    let share = tree.join("usr/share/fapolicyd");
    image.add_bytes(
        Path::new("/usr/share/fapolicyd/fapolicyd-magic.mgc"),
        fs::read(share.join("fapolicyd-magic.mgc"))?,
        0o644,
    );
    for entry in fs::read_dir(share.join("sample-rules"))? {
        let entry = entry?;
        let dest = Path::new("/usr/share/fapolicyd/sample-rules").join(entry.file_name());
        image.add_bytes(&dest, fs::read(entry.path())?, 0o644);
    }
    for file in ["fapolicyd.conf", "fapolicyd.trust"] {
        let dest = Path::new("/etc/fapolicyd").join(file);
        image.add_bytes(
            &dest,
            fs::read(tree.join("etc/fapolicyd").join(file))?,
            0o644,
        );
    }
    let magic = fs::read("/usr/lib/file/magic.mgc")
        .context("reading /usr/lib/file/magic.mgc (apt package libmagic-mgc)")?;
    image.add_bytes(Path::new("/usr/lib/file/magic.mgc"), magic.clone(), 0o644);
    image.add_bytes(Path::new("/usr/share/misc/magic.mgc"), magic, 0o644);
    image.add_account("fapolicyd", 999, 999);
    Ok(())
}
