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
    thread,
    time::{Duration, Instant},
};

use jit_agent::bpf::Enforcer;
use jit_common::{
    event::Event,
    pending::PendingRequest,
    policy::{AgentConfig, Decision, Mode, Op, PolicyKey, PolicyValue},
};

pub mod daemon;

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

    /// This cgroup's `cgroup.procs`, ready for [`join_cgroup`] in a forked child.
    #[must_use]
    pub fn procs(&self) -> CString {
        procs_of(&self.path)
    }

    /// Runs `program args...` as a process placed in this cgroup before it calls `execve`.
    ///
    /// # Errors
    /// The error of `execve` (for example `EPERM` from jit), or of the cgroup move.
    pub fn run(&self, program: &str, args: &[&str]) -> io::Result<ExitStatus> {
        run_in(&self.path, program, args)
    }

    /// Forks a child that joins this cgroup and then calls `exec`, which should replace the
    /// process (`execveat`, `fexecve`, ...) and return the error when it cannot. Returns the
    /// new program's exit status, or the error `exec` returned. `exec` runs between `fork` and
    /// `exec`: it must only make syscalls on memory prepared before (no allocation).
    ///
    /// # Errors
    /// The error `exec` returned, or of the cgroup move.
    pub fn run_exec(
        &self,
        mut exec: impl FnMut() -> io::Result<()> + Send + Sync + 'static,
    ) -> io::Result<ExitStatus> {
        let procs = self.procs();
        // Only reached when `exec` returned Ok without replacing the process: then this
        // program's failure shows it.
        let mut cmd = Command::new("/bin/false");
        // SAFETY: the closure makes async-signal-safe calls only (see above).
        unsafe {
            cmd.pre_exec(move || {
                join_cgroup(&procs)?;
                exec()
            });
        }
        cmd.status()
    }

    /// Like [`TestCgroup::run`], on another thread: for execs that will be held.
    #[must_use]
    pub fn spawn(&self, program: &str) -> thread::JoinHandle<io::Result<ExitStatus>> {
        let (path, program) = (self.path.clone(), program.to_owned());
        thread::spawn(move || run_in(&path, &program, &[]))
    }
}

/// Runs `program args...` as a process placed in `cgroup` before it calls `execve`.
fn run_in(cgroup: &Path, program: &str, args: &[&str]) -> io::Result<ExitStatus> {
    let procs = procs_of(cgroup);
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: the closure only calls async-signal-safe functions (open, write, close) on
    // memory allocated before fork.
    unsafe {
        cmd.pre_exec(move || join_cgroup(&procs));
    }
    cmd.status()
}

/// The `cgroup.procs` file of the cgroup directory `cgroup`, as a C string.
#[must_use]
pub fn procs_of(cgroup: &Path) -> CString {
    CString::new(
        cgroup
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .expect("cgroup path without NUL")
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs` ("0" = self).
/// Async-signal-safe: usable between `fork` and `exec`/`_exit`.
///
/// # Errors
/// The error of opening or writing `cgroup.procs`.
pub fn join_cgroup(procs: &CString) -> io::Result<()> {
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

/// A forked child process that joined a cgroup and reports one result as its exit code: for
/// syscalls whose errno the test asserts, made by a real process inside an agent cgroup.
pub struct ForkedChild(pub libc::pid_t);

impl ForkedChild {
    /// Forks; the child joins the cgroup whose `cgroup.procs` is `procs`, runs `body` and exits
    /// with what it returns (200 when it could not join). `body` runs between `fork` and
    /// `_exit` of a multi-threaded process: async-signal-safe calls only, no allocation (build
    /// its strings first).
    #[must_use]
    pub fn start(procs: &CString, body: impl FnOnce() -> i32) -> Self {
        // SAFETY: the child only joins the cgroup, runs `body` (async-signal-safe, see above)
        // and leaves with _exit.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", io::Error::last_os_error()),
            0 => unsafe {
                let code = match join_cgroup(procs) {
                    Ok(()) => body(),
                    Err(_) => 200,
                };
                libc::_exit(code)
            },
            pid => Self(pid),
        }
    }

    /// Waits for the child's exit code, failing (and killing it) after 30 s: a child stopped
    /// for good, or one ended by a signal, fails the test.
    #[must_use]
    pub fn result(self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            let ret = unsafe { libc::waitpid(self.0, &raw mut status, libc::WNOHANG) };
            if ret == self.0 {
                assert!(
                    libc::WIFEXITED(status),
                    "child did not exit normally ({status:#x})"
                );
                return libc::WEXITSTATUS(status);
            }
            if Instant::now() > deadline {
                let state = process_state(self.0.cast_unsigned());
                // SAFETY: our own child.
                unsafe { libc::kill(self.0, libc::SIGKILL) };
                panic!(
                    "child {} did not finish within 30 s (state {state})",
                    self.0
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `path` as a C string, for raw syscalls in forked children.
#[must_use]
pub fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL")
}

/// Runs `action` in a forked child, inside the cgroup directory `cgroup` (or where the test
/// runs, outside every agent cgroup, for `None`); returns the errno it failed with, 0 when it
/// succeeded. The closure must be async-signal-safe: build its strings before.
pub fn errno_of(cgroup: Option<&Path>, action: impl FnOnce() -> bool) -> i32 {
    let procs = cgroup.map(procs_of);
    // SAFETY: the child only joins the cgroup, runs `action` (async-signal-safe, see above)
    // and leaves with _exit.
    let pid = match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", io::Error::last_os_error()),
        0 => unsafe {
            let joined = procs.as_ref().is_none_or(|p| join_cgroup(p).is_ok());
            let code = if !joined {
                200
            } else if action() {
                0
            } else {
                io::Error::last_os_error().raw_os_error().unwrap_or(255)
            };
            libc::_exit(code)
        },
        pid => pid,
    };
    let code = ForkedChild(pid).result();
    assert_ne!(code, 200, "the child could not join its cgroup");
    code
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // A failed test can leave a process behind, held (stopped) in here: kill whatever is
        // left, then remove the directory once the kernel has reaped it. Failures are reported
        // but must not turn cleanup into a panic while unwinding.
        let _ = fs::write(self.path.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(err) if Instant::now() > deadline => {
                    eprintln!("warning: rmdir {}: {err}", self.path.display());
                    return;
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// A cgroup2 directory that exists already (made by the daemon): not removed on drop.
pub struct ExistingCgroup(pub PathBuf);

impl ExistingCgroup {
    /// Runs `program args...` as a process placed in this cgroup before it calls `execve`.
    ///
    /// # Errors
    /// The error of `execve` (for example `EPERM` from jit), or of the cgroup move.
    pub fn run(&self, program: &str, args: &[&str]) -> io::Result<ExitStatus> {
        run_in(&self.0, program, args)
    }

    /// Like [`ExistingCgroup::run`], on another thread: for execs that will be held.
    #[must_use]
    pub fn spawn(&self, program: &str) -> thread::JoinHandle<io::Result<ExitStatus>> {
        self.spawn_with_args(program, &[])
    }

    /// [`ExistingCgroup::spawn`] with arguments.
    #[must_use]
    pub fn spawn_with_args(
        &self,
        program: &str,
        args: &[&str],
    ) -> thread::JoinHandle<io::Result<ExitStatus>> {
        let (path, program) = (self.0.clone(), program.to_owned());
        let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_in(&path, &program, &args)
        })
    }
}

/// Whether `result` is the failure of an `execve` refused with `EPERM` (for polling).
#[must_use]
pub fn assert_eperm_quiet(result: &io::Result<ExitStatus>) -> bool {
    matches!(result, Err(err) if err.raw_os_error() == Some(libc::EPERM))
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

/// jit loaded and attached once per test binary: loading runs the verifier over every
/// program, which takes seconds under software emulation. Tests run one at a time and each
/// holds the lock for its whole duration, with an agent id of its own.
pub struct Shared {
    pub enforcer: Enforcer,
    pub events: aya::maps::RingBuf<aya::maps::MapData>,
}

/// The shared jit, or why it could not be loaded: a failed load is not retried by every later
/// test (each attempt runs the verifier again, for minutes under software emulation, until the
/// VM's time is up and no test's failure is reported at all).
static SHARED: std::sync::OnceLock<Result<std::sync::Mutex<Shared>, String>> =
    std::sync::OnceLock::new();
static NEXT_AGENT: AtomicU32 = AtomicU32::new(100);
static LOAD_FAILURE_REPORTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

fn shared() -> std::sync::MutexGuard<'static, Shared> {
    let shared = SHARED.get_or_init(|| {
        let mut enforcer = Enforcer::load_and_attach()
            .map_err(|err| format!("load and attach jit programs: {err:?}"))?;
        let events = enforcer.take_events().expect("event ring buffer");
        Ok(std::sync::Mutex::new(Shared { enforcer, events }))
    });
    let shared = shared.as_ref().unwrap_or_else(|err| {
        assert!(
            !LOAD_FAILURE_REPORTED.swap(true, Ordering::Relaxed),
            "jit could not be loaded (the first test that tried says why)"
        );
        panic!("{err}")
    });
    // A test that failed while holding the lock poisons it; the state is still usable because
    // every test uses its own agent id and cgroup.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One agent of the shared jit: a fresh agent cgroup, its config and a rule builder. Dropping
/// it takes the agent out of the kernel's maps.
pub struct AgentSetup {
    shared: std::sync::MutexGuard<'static, Shared>,
    pub cgroup: TestCgroup,
    /// This agent's id (unique within the test binary).
    pub agent: u32,
    cgroup_id: u64,
    next_rule: u32,
    wildcards: u32,
    default: Decision,
    mode: Mode,
}

impl AgentSetup {
    /// Registers a fresh agent cgroup with the shared jit and configures the agent.
    #[must_use]
    pub fn new(name: &str, default: Decision, mode: Mode) -> Self {
        let mut shared = shared();
        let cgroup = TestCgroup::new(name);
        let agent = NEXT_AGENT.fetch_add(1, Ordering::Relaxed);
        let info = shared
            .enforcer
            .register_agent_cgroup(cgroup.path(), agent)
            .expect("register agent cgroup");
        // Events of earlier tests are not this test's business.
        while shared.events.next().is_some() {}
        let mut setup = Self {
            shared,
            cgroup,
            agent,
            cgroup_id: info.id,
            next_rule: 1,
            wildcards: 0,
            default,
            mode,
        };
        setup.push_config();
        setup
    }

    /// The shared enforcer.
    pub fn enforcer(&mut self) -> &mut Enforcer {
        &mut self.shared.enforcer
    }

    fn push_config(&mut self) {
        let config = AgentConfig {
            default_decision: self.default as u8,
            mode: self.mode as u8,
            identity: 0,
            extra_rulesets: 0,
            wildcard_components: self.wildcards,
            // The tests key each agent's rules by its agent id.
            ruleset: self.agent,
        };
        let agent = self.agent;
        self.enforcer()
            .set_agent_config(agent, config)
            .expect("set agent config");
    }

    /// Adds a rule and returns its id.
    pub fn rule(&mut self, op: Op, pattern: &str, decision: Decision) -> u32 {
        let id = self.next_rule;
        self.next_rule += 1;
        let (key, shape) =
            PolicyKey::for_rule(self.agent, op, pattern.as_bytes()).expect("valid pattern");
        let value = PolicyValue {
            decision: decision as u8,
            pad: [0; 3],
            rule_id: id,
            literal_len: shape.literal_len,
            pattern_len: shape.pattern_len,
        };
        self.enforcer()
            .insert_rule(&key, value)
            .expect("insert rule");
        if let Some(component) = shape.wildcard_component {
            self.wildcards |= 1 << component;
            self.push_config();
        }
        id
    }

    /// Runs `program` in the agent cgroup.
    ///
    /// # Errors
    /// The exec error.
    pub fn exec(&self, program: &str) -> std::io::Result<std::process::ExitStatus> {
        self.cgroup.run(program, &[])
    }

    /// Every event emitted since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(item) = self.shared.events.next() {
            events.push(Event::from_bytes(&item).expect("event of the right size"));
        }
        events
    }
}

impl AgentSetup {
    /// Waits until a hold of the agent appears in the kernel's pending map and returns it.
    ///
    /// # Panics
    /// After 20 s without one.
    #[must_use]
    pub fn wait_for_hold(&mut self) -> (u32, PendingRequest) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let agent = self.agent;
            let pending = self
                .enforcer()
                .pending_requests()
                .expect("read pending map");
            if let Some(found) = pending
                .into_iter()
                .find(|(_, r)| r.agent_id == agent && r.state == jit_common::pending::STATE_PENDING)
            {
                return found;
            }
            assert!(Instant::now() < deadline, "no hold appeared within 20 s");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Approves held `request` of thread `tid` as the daemon does: a held `execve` is bound to
    /// the arguments and environment read from the stopped task now (a held mapping has none).
    ///
    /// # Panics
    /// When the answer cannot be written.
    pub fn approve(&mut self, tid: u32, request: &PendingRequest) {
        let args = if request.op == jit_common::policy::Op::Exec as u8 {
            wait_stopped(request.tgid);
            jit_agent::audit::exec_args(request.tgid, tid)
                .and_then(|a| a.binding)
                .unwrap_or_default()
        } else {
            jit_common::pending::ArgsBinding::default()
        };
        self.enforcer()
            .answer_bound(tid, request.request_id, true, args)
            .expect("approve");
    }
}

impl AgentSetup {
    /// Waits for an exec started with [`TestCgroup::spawn`] to return. A held task that is never
    /// released would block forever: after 30 s this fails, describing what is still held and
    /// the state and wait channel of every process left in the agent cgroup.
    ///
    /// # Errors
    /// The exec's error (for example `EPERM` from a denial).
    ///
    /// # Panics
    /// On timeout, or when the spawning thread panicked.
    pub fn join(
        &mut self,
        child: thread::JoinHandle<io::Result<ExitStatus>>,
    ) -> io::Result<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !child.is_finished() {
            if Instant::now() > deadline {
                let pending = self.enforcer().pending_requests().map(|p| format!("{p:?}"));
                let procs =
                    fs::read_to_string(self.cgroup.path().join("cgroup.procs")).unwrap_or_default();
                let states: Vec<String> = procs
                    .lines()
                    .map(|pid| {
                        let stat =
                            fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                        let wchan =
                            fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
                        format!("{pid}: {} wchan={wchan}", stat.trim())
                    })
                    .collect();
                panic!(
                    "the exec did not return within 30 s; pending: {pending:?}; processes: {states:#?}"
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        child.join().expect("spawning thread panicked")
    }
}

impl Drop for AgentSetup {
    fn drop(&mut self) {
        let (agent, cgroup_id) = (self.agent, self.cgroup_id);
        let enforcer = self.enforcer();
        if let Err(err) = enforcer.unregister_agent_cgroup(cgroup_id) {
            eprintln!("warning: unregister agent cgroup: {err}");
        }
        if let Err(err) = enforcer.remove_agent_config(agent) {
            eprintln!("warning: remove agent config: {err}");
        }
    }
}

/// Waits until process `pid` is stopped (`T`): a hold is visible in the pending map a moment
/// before the task has actually stopped on its way out of the syscall.
///
/// # Panics
/// When it is not stopped within 10 s.
pub fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_state(pid) != 'T' {
        assert!(
            Instant::now() < deadline,
            "process {pid} is not stopped (state {})",
            process_state(pid)
        );
        thread::sleep(Duration::from_millis(5));
    }
}

impl AgentSetup {
    /// This agent's held requests, answered or not.
    ///
    /// # Panics
    /// When the pending map cannot be read.
    #[must_use]
    pub fn pending(&mut self) -> Vec<(u32, PendingRequest)> {
        let agent = self.agent;
        let mut pending = self
            .enforcer()
            .pending_requests()
            .expect("read pending map");
        pending.retain(|(_, r)| r.agent_id == agent);
        pending
    }
}

/// The state letter of process `pid` from `/proc/<pid>/stat` (`T` = stopped).
///
/// # Panics
/// When the process does not exist.
#[must_use]
pub fn process_state(pid: u32) -> char {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|err| panic!("/proc/{pid}/stat: {err}"));
    let after_comm = stat.rsplit_once(") ").expect("stat format").1;
    after_comm.chars().next().expect("state letter")
}
