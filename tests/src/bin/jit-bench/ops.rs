//! The timed operations: what one iteration of each loop does, and how many decisions jit makes
//! for it in an agent cgroup.
use std::{
    ffi::{CString, c_char},
    io, ptr,
};

use anyhow::{Result, bail};

/// The timed operations, in output order. Every per-op array in the bench is in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchOp {
    /// `posix_spawn` + `waitpid` of [`crate::elf::EXIT0`]: one `exec` decision.
    Exec,
    /// `open(O_WRONLY)` + `close` of one existing file: one `write` decision.
    Write,
    /// `open(O_CREAT | O_EXCL | O_WRONLY)` + `close` + `unlink` of a new file: `create`, `write`
    /// (the open of the new file) and `unlink` decisions.
    Create,
    /// Unpacking and deleting a tree of [`TREE_DIRS`] directories of [`TREE_FILES`] files of
    /// [`TREE_FILE_BYTES`] bytes each, as `tar x` and `rm -r` do: per file `create`, `write` and
    /// `unlink`, per directory (and the tree's root) `mkdir` and `rmdir`.
    Tree,
}

pub const OPS: [BenchOp; 4] = [
    BenchOp::Exec,
    BenchOp::Write,
    BenchOp::Create,
    BenchOp::Tree,
];

/// Directories in the tree (below its root) and files per directory: 2,000 files.
pub const TREE_DIRS: usize = 20;
pub const TREE_FILES: usize = 100;
/// Content of each file of the tree.
pub const TREE_FILE_BYTES: usize = 512;

impl BenchOp {
    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Write => "write",
            Self::Create => "create",
            Self::Tree => "tree",
        }
    }

    /// The decisions jit makes for one iteration, in an agent cgroup.
    pub fn decisions(self) -> u64 {
        match self {
            Self::Exec | Self::Write => 1,
            Self::Create => 3,
            Self::Tree => (3 * TREE_DIRS * TREE_FILES + 2 * (TREE_DIRS + 1)) as u64,
        }
    }

    /// Unmeasured iterations before the timed ones (caches, page tables, first-use paths).
    pub fn warm_up(self) -> u32 {
        match self {
            Self::Tree => 1,
            _ => 20,
        }
    }
}

fn cstring(path: &str) -> Result<CString> {
    Ok(CString::new(path)?)
}

fn check(rc: libc::c_int, what: &str) -> Result<()> {
    if rc < 0 {
        let err = io::Error::last_os_error();
        bail!("{what}: {err}");
    }
    Ok(())
}

/// One iteration of the write loop: an open with write access, what jit decides as op `write`.
pub fn open_for_write(path: &CString) -> Result<()> {
    // SAFETY: a valid NUL-terminated path; the descriptor is closed right away.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    check(fd, "open(O_WRONLY)")?;
    // SAFETY: `fd` is ours and open.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Creates `path` (which must not exist), writes `data` into it and closes it.
fn create_file(path: &CString, data: &[u8]) -> Result<()> {
    // SAFETY: a valid NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    check(fd, "open(O_CREAT | O_EXCL)")?;
    let mut result = Ok(());
    if !data.is_empty() {
        // SAFETY: `fd` is open; `data` is valid for its length.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if usize::try_from(n).ok() != Some(data.len()) {
            result = Err(anyhow::anyhow!("write: {}", io::Error::last_os_error()));
        }
    }
    // SAFETY: `fd` is ours and open.
    unsafe { libc::close(fd) };
    result
}

fn unlink(path: &CString) -> Result<()> {
    // SAFETY: a valid NUL-terminated path.
    check(unsafe { libc::unlink(path.as_ptr()) }, "unlink")
}

/// The create loop's file: created, closed and removed again by each iteration.
pub struct CreateOnce {
    path: CString,
}

impl CreateOnce {
    pub fn new(dir: &str) -> Result<Self> {
        Ok(Self {
            path: cstring(&format!("{dir}/new-{}", std::process::id()))?,
        })
    }

    pub fn run_once(&self) -> Result<()> {
        create_file(&self.path, &[])?;
        unlink(&self.path)
    }
}

/// The tree: every path, made once, so that the loop times the file system and jit, not string
/// formatting.
pub struct Tree {
    root: CString,
    dirs: Vec<CString>,
    /// Per directory, its files.
    files: Vec<Vec<CString>>,
    data: Vec<u8>,
}

impl Tree {
    pub fn new(parent: &str) -> Result<Self> {
        let root = format!("{parent}/tree-{}", std::process::id());
        let mut dirs = Vec::with_capacity(TREE_DIRS);
        let mut files = Vec::with_capacity(TREE_DIRS);
        for d in 0..TREE_DIRS {
            let dir = format!("{root}/dir{d:02}");
            files.push(
                (0..TREE_FILES)
                    .map(|f| cstring(&format!("{dir}/file{f:03}.rs")))
                    .collect::<Result<Vec<_>>>()?,
            );
            dirs.push(cstring(&dir)?);
        }
        Ok(Self {
            root: cstring(&root)?,
            dirs,
            files,
            data: vec![b'x'; TREE_FILE_BYTES],
        })
    }

    /// Unpacks the tree, then deletes it (children first, as `rm -r` does).
    pub fn run_once(&self) -> Result<()> {
        mkdir(&self.root)?;
        for (dir, files) in self.dirs.iter().zip(&self.files) {
            mkdir(dir)?;
            for file in files {
                create_file(file, &self.data)?;
            }
        }
        for (dir, files) in self.dirs.iter().zip(&self.files) {
            for file in files {
                unlink(file)?;
            }
            rmdir(dir)?;
        }
        rmdir(&self.root)
    }
}

fn mkdir(path: &CString) -> Result<()> {
    // SAFETY: a valid NUL-terminated path.
    check(unsafe { libc::mkdir(path.as_ptr(), 0o755) }, "mkdir")
}

fn rmdir(path: &CString) -> Result<()> {
    // SAFETY: a valid NUL-terminated path.
    check(unsafe { libc::rmdir(path.as_ptr()) }, "rmdir")
}

/// `posix_spawn` of one program without arguments or environment. glibc implements it with
/// `clone(CLONE_VM | CLONE_VFORK)`: no page table copy, so an iteration is mostly the kernel's
/// exec and exit paths, and a failed exec comes back as its error number.
pub struct Spawn {
    path: CString,
}

impl Spawn {
    pub fn new(path: &str) -> Result<Self> {
        Ok(Self {
            path: cstring(path)?,
        })
    }

    /// Runs the program and waits for it; fails unless it exec'd and exited 0.
    pub fn run_once(&self) -> Result<()> {
        let argv: [*mut c_char; 2] = [self.path.as_ptr().cast_mut(), ptr::null_mut()];
        let envp: [*mut c_char; 1] = [ptr::null_mut()];
        let mut pid = 0;
        // SAFETY: a valid path and NULL-terminated argv and envp that outlive the call;
        // posix_spawn does not write through them.
        let rc = unsafe {
            libc::posix_spawn(
                &raw mut pid,
                self.path.as_ptr(),
                ptr::null(),
                ptr::null(),
                argv.as_ptr(),
                envp.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc).into());
        }
        let mut status = 0;
        // SAFETY: waits for our own child, writing its status into a local.
        while unsafe { libc::waitpid(pid, &raw mut status, 0) } != pid {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err.into());
            }
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!("the program ended with wait status {status:#x}");
        }
        Ok(())
    }
}
