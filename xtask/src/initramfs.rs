//! A minimal initramfs for the test VM: busybox, the test binaries with the shared libraries
//! they link, and an init script. Written as an uncompressed `newc` cpio archive, which every
//! kernel unpacks without any decompressor built in.
use std::{
    collections::BTreeMap,
    fs,
    io::{BufWriter, Write as _},
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// The archive being assembled, keyed by absolute path inside the VM.
pub struct Initramfs {
    entries: BTreeMap<PathBuf, Entry>,
}

const BUSYBOX: &str = "/bin/busybox";

/// The guest's users: root, a reviewer and an unprivileged account, as Debian names them.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    reviewer:x:1000:1000:jit test reviewer:/tmp:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
/// The guest's groups; `sre` holds the test reviewer.
const GROUP: &str = "root:x:0:\nreviewer:x:1000:\nsre:x:1001:reviewer\nnogroup:x:65534:\n";

impl Initramfs {
    /// The base image: directories, `/dev/console`, busybox and `init`.
    pub fn new(init_script: &str) -> Result<Self> {
        let mut fs = Self {
            entries: BTreeMap::new(),
        };
        for dir in [
            "/proc",
            "/sys",
            "/dev",
            "/tmp",
            "/run",
            "/etc",
            "/bin",
            "/sbin",
            "/usr/bin",
            "/usr/sbin",
        ] {
            fs.dir(Path::new(dir));
        }
        fs.entries.insert(
            PathBuf::from("/dev/console"),
            Entry::CharDev { major: 5, minor: 1 },
        );
        let busybox = fs::read(BUSYBOX)
            .with_context(|| format!("reading {BUSYBOX} (apt package busybox-static)"))?;
        fs.add_bytes(Path::new(BUSYBOX), busybox, 0o755);
        fs.add_bytes(Path::new("/init"), init_script.as_bytes().to_vec(), 0o755);
        // Accounts the policies name (approvers) resolve against these, as on a real host.
        fs.add_bytes(Path::new("/etc/passwd"), PASSWD.as_bytes().to_vec(), 0o644);
        fs.add_bytes(Path::new("/etc/group"), GROUP.as_bytes().to_vec(), 0o644);
        fs.entries
            .insert(PathBuf::from("/bin/sh"), Entry::Symlink("busybox".into()));
        Ok(fs)
    }

    fn dir(&mut self, path: &Path) {
        let mut cur = PathBuf::from("/");
        for part in path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
        {
            cur.push(part);
            self.entries.entry(cur.clone()).or_insert(Entry::Dir);
        }
    }

    /// Adds a regular file with the given content and permission bits.
    pub fn add_bytes(&mut self, dest: &Path, data: Vec<u8>, mode: u32) {
        if let Some(parent) = dest.parent() {
            self.dir(parent);
        }
        self.entries
            .insert(dest.to_owned(), Entry::File { data, mode });
    }

    /// Adds a dynamically linked executable (debug info stripped) and every library it loads.
    pub fn add_executable(&mut self, src: &Path, dest: &Path, scratch: &Path) -> Result<()> {
        let stripped = scratch.join(dest.file_name().context("executable without a name")?);
        cmd::output(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&stripped)
                .arg(src),
        )?;
        let data = fs::read(&stripped)?;
        self.add_bytes(dest, data, 0o755);
        for lib in shared_libraries(src)? {
            if !self.entries.contains_key(&lib) {
                let data = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
                self.add_bytes(&lib, data, 0o755);
            }
        }
        Ok(())
    }

    /// Adds executable `dest` of an extracted package `tree` (at `tree` + `dest`) and every
    /// library it loads: from the tree where it has them (installed at their path inside the
    /// tree), else from the host.
    pub fn add_executable_from_tree(
        &mut self,
        tree: &Path,
        dest: &Path,
        scratch: &Path,
    ) -> Result<()> {
        let src = tree.join(dest.strip_prefix("/").unwrap_or(dest));
        let stripped = scratch.join(dest.file_name().context("executable without a name")?);
        cmd::output(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&stripped)
                .arg(&src),
        )?;
        self.add_bytes(dest, fs::read(&stripped)?, 0o755);
        let tree_libs = tree.join("usr/lib/x86_64-linux-gnu");
        for lib in shared_libraries_with(&src, Some(&tree_libs))? {
            let inside = lib
                .strip_prefix(tree)
                .map_or_else(|_| lib.clone(), |rel| Path::new("/").join(rel));
            if !self.entries.contains_key(&inside) {
                let data = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
                self.add_bytes(&inside, data, 0o755);
            }
        }
        Ok(())
    }

    /// Adds a system account (user and group of the same name) to `/etc/passwd` and
    /// `/etc/group`.
    pub fn add_account(&mut self, name: &str, uid: u32, gid: u32) {
        let passwd = format!("{PASSWD}{name}:x:{uid}:{gid}:{name}:/nonexistent:/bin/false\n");
        let group = format!("{GROUP}{name}:x:{gid}:\n");
        self.add_bytes(Path::new("/etc/passwd"), passwd.into_bytes(), 0o644);
        self.add_bytes(Path::new("/etc/group"), group.into_bytes(), 0o644);
    }

    /// Writes the archive to `path`.
    pub fn write(&self, path: &Path) -> Result<u64> {
        let file =
            fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::new(file);
        let mut written = 0u64;
        for (ino, (name, entry)) in (1u32..).zip(&self.entries) {
            let name = name.to_str().context("non-UTF-8 path in initramfs")?;
            let name = name.trim_start_matches('/');
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir => (0o040_755, &[], (0, 0)),
                Entry::File { data, mode } => (0o100_000 | mode, data, (0, 0)),
                Entry::Symlink(target) => (0o120_777, target.as_bytes(), (0, 0)),
                Entry::CharDev { major, minor } => (0o020_600, &[], (*major, *minor)),
            };
            written += write_record(&mut out, ino, mode, 1, name, data, rdev)?;
        }
        written += write_record(&mut out, 0, 0, 1, "TRAILER!!!", &[], (0, 0))?;
        out.flush()?;
        Ok(written)
    }
}

/// One `newc` record: header, NUL-terminated name and data, each padded to 4 bytes.
fn write_record(
    out: &mut impl std::io::Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
    (rdev_major, rdev_minor): (u32, u32),
) -> Result<u64> {
    let size = u32::try_from(data.len()).context("file too large for cpio")?;
    let namesize = u32::try_from(name.len() + 1).context("name too long for cpio")?;
    let header = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}{maj:08x}{min:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
        uid = 0,
        gid = 0,
        mtime = 0,
        maj = 0,
        min = 0,
        rmaj = rdev_major,
        rmin = rdev_minor,
        check = 0,
    );
    let mut len = header.len() + name.len() + 1;
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    let pad = (4 - len % 4) % 4;
    out.write_all(&[0; 3][..pad])?;
    len += pad;
    out.write_all(data)?;
    let pad = (4 - data.len() % 4) % 4;
    out.write_all(&[0; 3][..pad])?;
    len += data.len() + pad;
    Ok(len as u64)
}

/// The absolute paths of the shared libraries `exe` loads, as `ldd` resolves them.
fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    shared_libraries_with(exe, None)
}

/// [`shared_libraries`], also searching `extra` (an absolute directory) first.
fn shared_libraries_with(exe: &Path, extra: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut ldd = Command::new("ldd");
    if let Some(dir) = extra {
        ldd.env("LD_LIBRARY_PATH", dir);
    }
    let listing = cmd::stdout(ldd.arg(exe))?;
    let mut libs = Vec::new();
    for line in listing.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            Some("not") => bail!("{}: a shared library is missing: {line}", exe.display()),
            _ => {}
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_records_are_padded_to_four_bytes() {
        let mut buf = Vec::new();
        let n = write_record(&mut buf, 1, 0o100_644, 1, "a", b"hello", (0, 0)).unwrap();
        assert_eq!(usize::try_from(n).unwrap(), buf.len());
        assert_eq!(buf.len() % 4, 0);
        assert!(buf.starts_with(b"070701"));
        // 110-byte header + "a\0" = 112 (aligned), then 5 data bytes + 3 padding.
        assert_eq!(buf.len(), 112 + 8);
        assert_eq!(&buf[112..117], b"hello");
    }
}
