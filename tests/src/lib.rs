//! Helpers for jit's privileged integration tests.
//!
//! These tests load real BPF LSM programs and run real processes, so they need root, a kernel
//! with BPF LSM active, and a cgroup2 mount: `cargo xtask test` runs them inside a VM booting
//! stock Debian kernels. Helpers panic on failure (with context) rather than return errors, and
//! clean up after themselves on drop.
#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers panic with context on failure, by design"
)]
use std::{
    ffi::CString,
    fs, io,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    sync::atomic::{AtomicU32, Ordering},
};

/// Where cgroup2 is mounted inside the test VM.
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// Fails the test, loudly, when it is not running in the environment `cargo xtask test` builds.
pub fn require_vm() {
    assert!(
        std::env::var_os("JIT_IN_VM").is_some(),
        "privileged test: it loads BPF LSM programs and must run inside the test VM; use `cargo xtask test`"
    );
}

/// A cgroup2 directory created for one test and removed on drop.
pub struct TestCgroup {
    path: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestCgroup {
    /// Creates a fresh cgroup directly under the cgroup2 root.
    #[must_use]
    pub fn new(name: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self::create(
            Path::new(CGROUP2_ROOT).join(format!("jit-test-{name}-{}-{n}", std::process::id())),
        )
    }

    /// Creates a child cgroup of this one.
    #[must_use]
    pub fn child(&self, name: &str) -> Self {
        Self::create(self.path.join(name))
    }

    fn create(path: PathBuf) -> Self {
        fs::create_dir(&path).unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        Self { path }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `program args...` as a process placed in this cgroup before it calls `execve`.
    ///
    /// # Errors
    /// The error of `execve` (for example `EPERM` from jit), or of the cgroup move.
    pub fn run(&self, program: &str, args: &[&str]) -> io::Result<ExitStatus> {
        let procs = CString::new(
            self.path
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("cgroup path without NUL");
        let mut cmd = Command::new(program);
        cmd.args(args);
        // SAFETY: the closure only calls async-signal-safe functions (open, write, close) on
        // memory allocated before fork.
        unsafe {
            cmd.pre_exec(move || join_cgroup(&procs));
        }
        cmd.status()
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs` ("0" = self).
fn join_cgroup(procs: &CString) -> io::Result<()> {
    // SAFETY: plain syscalls on a valid NUL-terminated path and a static buffer.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if written != 1 {
            return Err(err);
        }
    }
    Ok(())
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Processes run by `run` have exited by now; an rmdir failure is reported but must not
        // turn a passing test's cleanup into a panic while unwinding.
        if let Err(err) = fs::remove_dir(&self.path) {
            eprintln!("warning: rmdir {}: {err}", self.path.display());
        }
    }
}

/// Asserts that `result` is the failure of an `execve` refused with `EPERM`.
///
/// # Panics
/// When the exec succeeded or failed with another error.
pub fn assert_eperm(result: &io::Result<ExitStatus>, what: &str) {
    match result {
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => {}
        Err(err) => panic!("{what}: expected EPERM, got error {err}"),
        Ok(status) => panic!("{what}: expected EPERM, but the program ran ({status})"),
    }
}

/// Asserts that the program ran and exited 0.
///
/// # Panics
/// When the exec failed or the program exited non-zero.
pub fn assert_ran(result: &io::Result<ExitStatus>, what: &str) {
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{what}: the program ran but exited with {status}"),
        Err(err) => panic!("{what}: expected the program to run, got error {err}"),
    }
}

/// A scratch directory for one test, removed on drop.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `/tmp/jit-<name>-<pid>-<n>`.
    #[must_use]
    pub fn new(name: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!("/tmp/jit-{name}-{}-{n}", std::process::id()));
        fs::create_dir_all(&path).unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        Self { path }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Installs a distinct copy of the `true` program at `<dir>/<sub>/true` and returns its
    /// path. A copy, not a symlink: the kernel matches the file really executed, and every
    /// busybox applet link resolves to `/bin/busybox`.
    #[must_use]
    pub fn install_true(&self, sub: &str) -> String {
        let dir = self.path.join(sub);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
        let dest = dir.join("true");
        let source = std::fs::canonicalize("/bin/true").expect("resolve /bin/true");
        fs::copy(&source, &dest)
            .unwrap_or_else(|err| panic!("copy {} to {}: {err}", source.display(), dest.display()));
        dest.to_str().expect("UTF-8 path").to_owned()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: rm -r {}: {err}", self.path.display());
        }
    }
}
