//! A real `jit-agent` daemon for a test, in its own directory, with its own pins, socket and
//! audit log; killed and unpinned on drop.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use jit_agent::control::{Response, Status};

/// Where `cargo xtask test` installs the binaries in the VM.
pub const JIT_AGENT: &str = "/jit/bin/jit-agent";
pub const JITCTL: &str = "/jit/bin/jitctl";

/// A daemon's files: config, policy directory, audit log, socket, pin directory.
pub struct DaemonFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub policies: PathBuf,
    pub audit: PathBuf,
    pub socket: PathBuf,
    /// The agent-facing socket (`[agent_socket]`).
    pub agent_socket: PathBuf,
    pub pins: PathBuf,
    /// Cgroup directories (relative to the cgroup2 root) the policies create: removed on drop.
    pub cgroups: Vec<String>,
}

impl DaemonFiles {
    /// A fresh layout under `/tmp/jitd-<name>`, pinning under `/sys/fs/bpf/jit-<name>`.
    #[must_use]
    pub fn new(name: &str) -> Self {
        let dir = PathBuf::from(format!("/tmp/jitd-{name}"));
        let _ = fs::remove_dir_all(&dir);
        let policies = dir.join("policies");
        fs::create_dir_all(&policies).expect("create the policy directory");
        let files = Self {
            config: dir.join("jit-agent.toml"),
            policies,
            audit: dir.join("audit.jsonl"),
            socket: dir.join("jit.sock"),
            agent_socket: dir.join("agent.sock"),
            pins: PathBuf::from(format!("/sys/fs/bpf/jit-{name}")),
            cgroups: Vec::new(),
            dir,
        };
        let config = format!(
            "policy_dir = \"{}\"\nbpffs = \"{}\"\n\n[log]\nlevel = \"debug\"\n\n[audit]\npath = \"{}\"\n\n[agent_socket]\npath = \"{}\"\n\n[socket]\npath = \"{}\"\n",
            files.policies.display(),
            files.pins.display(),
            files.audit.display(),
            files.agent_socket.display(),
            files.socket.display()
        );
        fs::write(&files.config, config).expect("write the daemon config");
        files
    }

    /// Lets members of `group` connect to the control socket (reviewers who are not root).
    pub fn set_socket_access(&self, group: &str, mode: &str) {
        let mut config = fs::read_to_string(&self.config).expect("read config");
        // [socket] is the config's last table.
        let _ = writeln!(config, "group = \"{group}\"\nmode = \"{mode}\"");
        fs::write(&self.config, config).expect("write config");
    }

    /// Turns the HTTP API (and the review page) on at `listen` with one reviewer token (written
    /// to a root-only file) and the webhook at `webhook_url`. Call after [`DaemonFiles::set_socket_access`]: it
    /// appends tables after `[socket]`.
    pub fn enable_http_and_webhook(
        &self,
        listen: &str,
        reviewer: &str,
        token: &str,
        webhook_url: &str,
    ) {
        use std::os::unix::fs::PermissionsExt as _;
        let token_file = self.dir.join(format!("{reviewer}.token"));
        fs::write(&token_file, token).expect("write token");
        fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).expect("chmod token");
        let mut config = fs::read_to_string(&self.config).expect("read config");
        let _ = write!(
            config,
            "\n[http]\nenabled = true\nlisten = \"{listen}\"\nweb = true\n\n[[http.token]]\nname = \"{reviewer}\"\ntoken_file = \"{}\"\n\n[webhook]\nurl = \"{webhook_url}\"\n",
            token_file.display()
        );
        fs::write(&self.config, config).expect("write config");
    }

    /// Turns the metrics listener on at `listen`. Appends a table: call after the helpers that
    /// append to `[socket]`.
    pub fn enable_metrics(&self, listen: &str) {
        let mut config = fs::read_to_string(&self.config).expect("read config");
        let _ = write!(config, "\n[metrics]\nlisten = \"{listen}\"\n");
        fs::write(&self.config, config).expect("write config");
    }

    /// Writes (or replaces) policy file `name` atomically, as an editor saving it would.
    pub fn write_policy(&self, name: &str, text: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, text).expect("write policy");
        fs::rename(&tmp, self.policies.join(name)).expect("move policy into place");
    }

    /// Starts the daemon and waits until it answers on its socket.
    #[must_use]
    pub fn start(&self) -> Daemon {
        let n = crate::COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.dir.join(format!("daemon-{n}.log"));
        let log_file = fs::File::create(&log).expect("create the daemon log");
        let child = Command::new(JIT_AGENT)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("start jit-agent");
        let mut daemon = Daemon {
            child: Some(child),
            log,
            socket: self.socket.clone(),
        };
        // Loading verifies every program: tens of seconds under software emulation.
        let deadline = Instant::now() + Duration::from_mins(4);
        loop {
            if let Some(status) = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("jit-agent exited at start with {status}:\n{}", daemon.log());
            }
            if self.socket.exists() && daemon.status_opt().is_some() {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "jit-agent did not answer on {} within 240 s:\n{}",
                self.socket.display(),
                daemon.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for DaemonFiles {
    fn drop(&mut self) {
        // Unpinning detaches the programs (no daemon holds them any more by now).
        let _ = fs::remove_dir_all(&self.pins);
        for cgroup in &self.cgroups {
            let path = Path::new(crate::CGROUP2_ROOT).join(cgroup);
            let _ = fs::write(path.join("cgroup.kill"), "1");
            thread::sleep(Duration::from_millis(100));
            let _ = fs::remove_dir(&path);
        }
    }
}

/// A running daemon, killed (`SIGKILL`) on drop.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    /// The daemon's own log so far.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status_opt(&self) -> Option<Status> {
        match jit_agent::control::call(
            &self.socket,
            &jit_agent::control::Request::Status,
            Duration::from_secs(10),
        ) {
            Ok(Response::Status(status)) => Some(*status),
            _ => None,
        }
    }

    /// `jitctl status`, as data.
    #[must_use]
    pub fn status(&self) -> Status {
        self.status_opt().unwrap_or_else(|| {
            panic!(
                "the daemon did not answer a status request:\n{}",
                self.log()
            )
        })
    }

    /// The daemon's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Kills the daemon with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon with SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        child.wait().expect("wait for jit-agent")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `jitctl args...` with the daemon's config and returns its output.
#[must_use]
pub fn jitctl(files: &DaemonFiles, args: &[&str]) -> Output {
    let mut cmd = Command::new(JITCTL);
    cmd.arg("--config").arg(&files.config).args(args);
    output_via_files(cmd, &files.dir)
}

/// `cmd.output()`, but with stdout and stderr going through files rather than pipes.
///
/// A test that holds execs forks children concurrently; a child forked while a pipe to jitctl is
/// open inherits its write end and, held inside `execve` (before close-on-exec applies), keeps
/// it open: reading the pipe to its end would then wait for the hold to end. Files have no such
/// end to wait for.
fn output_via_files(mut cmd: Command, dir: &Path) -> Output {
    let n = crate::COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (out_path, err_path) = (dir.join(format!(".out-{n}")), dir.join(format!(".err-{n}")));
    let status = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("create stdout file"))
        .stderr(fs::File::create(&err_path).expect("create stderr file"))
        .status()
        .expect("run jitctl");
    let output = Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    };
    let _ = fs::remove_file(out_path);
    let _ = fs::remove_file(err_path);
    output
}

/// Runs `jitctl args...` as user `uid` with primary group `gid` (a reviewer who is not root).
#[must_use]
pub fn jitctl_as(files: &DaemonFiles, uid: u32, gid: u32, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(JITCTL);
    cmd.arg("--config")
        .arg(&files.config)
        .args(args)
        .uid(uid)
        .gid(gid);
    output_via_files(cmd, &files.dir)
}

/// A command's exit status, stdout and stderr, for assertion messages.
#[must_use]
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
#[must_use]
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}
