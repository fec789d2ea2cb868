//! Reviewers and held actions through the real daemon: approve once, approve for a duration
//! (then the grant expires), deny, kill, timeouts with the daemon up and down, approvers, a
//! request from inside an agent cgroup, two required approvals, a held process killed from
//! outside (with the daemon up and down), 50 simultaneous holds, and a daemon killed (`SIGKILL`)
//! with 10 tasks held.
//!
//! One scenario on one daemon: each daemon start loads and verifies every program (tens of
//! seconds under software emulation).
use std::{
    fs,
    path::Path,
    process::Output,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use jit_agent::approval::PendingView;
use jit_tests::{
    CGROUP2_ROOT, ExistingCgroup, TestDir,
    daemon::{DaemonFiles, describe, eventually, jitctl, jitctl_as},
    process_state, require_vm,
};

const CGROUP: &str = "jit-test-esc/agent";
const STRICT_CGROUP: &str = "jit-test-esc/strict";
const QUORUM_CGROUP: &str = "jit-test-esc/quorum";
/// The guest's reviewer account (see xtask's initramfs): uid 1000, in group `sre` (1001).
const REVIEWER: (u32, u32) = (1000, 1001);

type Exec = JoinHandle<std::io::Result<std::process::ExitStatus>>;

/// Raw syscalls for processes forked from the (multi-threaded) test: no allocation between
/// `fork` and `_exit`. Shared with the agent socket tests.
pub(crate) mod raw {
    use std::mem::{size_of, zeroed};

    use libc::c_int;

    /// `size_of` of a C type as the `u32` the CMSG macros take.
    fn len_u32<T>() -> u32 {
        u32::try_from(size_of::<T>()).unwrap_or(u32::MAX)
    }

    /// A Unix socket address for `path` (built before forking).
    pub fn address(path: &std::path::Path) -> libc::sockaddr_un {
        use std::os::unix::ffi::OsStrExt as _;
        // SAFETY: plain data.
        let mut addr: libc::sockaddr_un = unsafe { zeroed() };
        addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap();
        for (dst, src) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
            *dst = src.cast_signed();
        }
        addr
    }

    /// A new socket connected to `addr`, or -1.
    pub fn connect(addr: &libc::sockaddr_un) -> c_int {
        // SAFETY: plain syscalls on a valid address.
        unsafe {
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_un>()).unwrap_or(0);
            if s < 0 || libc::connect(s, std::ptr::from_ref(addr).cast(), len) != 0 {
                return -1;
            }
            s
        }
    }

    /// Sends descriptor `fd` over the Unix socket `via` (`SCM_RIGHTS`).
    pub fn send_fd(via: c_int, fd: c_int) -> bool {
        let mut byte = [0u8; 1];
        let mut control = [0u64; 4];
        // SAFETY: the message points at live stack buffers of the sizes given.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: 1,
            };
            let mut msg: libc::msghdr = zeroed();
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(len_u32::<c_int>()) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(len_u32::<c_int>()) as usize;
            libc::CMSG_DATA(cmsg).cast::<c_int>().write_unaligned(fd);
            libc::sendmsg(via, &raw const msg, 0) == 1
        }
    }

    /// Receives a descriptor sent with [`send_fd`], or -1.
    pub fn recv_fd(via: c_int) -> c_int {
        let mut byte = [0u8; 1];
        let mut control = [0u64; 4];
        // SAFETY: as in send_fd.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: 1,
            };
            let mut msg: libc::msghdr = zeroed();
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of::<[u64; 4]>();
            if libc::recvmsg(via, &raw mut msg, 0) != 1 {
                return -1;
            }
            let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
                return -1;
            }
            libc::CMSG_DATA(cmsg).cast::<c_int>().read_unaligned()
        }
    }

    /// Writes `request` on the control connection `fd` and reads the answer: 0 when the
    /// daemon refused it (an error answer), 1 when it did not, 3 when talking failed.
    pub fn ask(fd: c_int, request: &[u8]) -> i32 {
        let mut answer = [0u8; 1024];
        // SAFETY: plain syscalls on live buffers.
        let n = unsafe {
            if libc::write(fd, request.as_ptr().cast(), request.len())
                != isize::try_from(request.len()).unwrap_or(-1)
            {
                return 3;
            }
            libc::read(fd, answer.as_mut_ptr().cast(), answer.len())
        };
        let Ok(n) = usize::try_from(n) else { return 3 };
        let error = b"\"result\":\"error\"";
        if n >= error.len() && answer[..n].windows(error.len()).any(|w| w == error) {
            0
        } else if n == 0 {
            3
        } else {
            1
        }
    }
}

/// Whether `raw::ask` saw the daemon refuse: an error answer (0), or the connection closed
/// without one (3: the daemon may find the connecting process gone before it reads the
/// request). 1, an answer without an error, is what must never happen.
fn refused(result: i32) -> bool {
    matches!(result, 0 | 3)
}

/// The inherited-connection tricks on the control socket, from a process in an agent cgroup,
/// against held request `id` of process `held_pid`: both must be refused and the task stay
/// held. (Before the identity fix both approved: the daemon trusted `SO_PEERCRED`, which names
/// the process that connected.)
fn handed_on_connections_are_refused(files: &DaemonFiles, id: u64, held_pid: u32) {
    use jit_agent::{approval::ReviewAction, control::Request};
    use jit_tests::ForkedChild;
    let procs = std::ffi::CString::new(
        Path::new(CGROUP2_ROOT)
            .join(CGROUP)
            .join("cgroup.procs")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let mut request = serde_json::to_vec(&Request::Decide {
        id,
        action: ReviewAction::Approve {
            once: true,
            for_secs: None,
        },
        reason: Some("handed-on connection".to_owned()),
    })
    .unwrap();
    request.push(b'\n');
    let addr = raw::address(&files.socket);

    // 1. A child connects, passes the connection to its parent and exits; the parent reaps it
    //    and sends `decide`. SO_PEERCRED names the reaped child.
    let (parent_end, child_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let (pass_parent, pass_child) = {
        use std::os::fd::AsRawFd as _;
        (parent_end.as_raw_fd(), child_end.as_raw_fd())
    };
    let agent = ForkedChild::start(&procs, || {
        // SAFETY: fork, then only syscalls in both processes.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let s = raw::connect(&addr);
            let passed = s >= 0 && raw::send_fd(pass_child, s);
            // SAFETY: leaving the grandchild.
            unsafe { libc::_exit(i32::from(!passed)) }
        }
        let fd = raw::recv_fd(pass_parent);
        let mut status = 0;
        // SAFETY: our own child.
        if fd < 0 || unsafe { libc::waitpid(child, &raw mut status, 0) } != child {
            return 4;
        }
        raw::ask(fd, &request)
    });
    let result = agent.result();
    assert!(
        refused(result),
        "a decide sent on the connection of a reaped child was not refused ({result})"
    );
    assert_eq!(process_state(held_pid), 'T', "still held");

    // 2. A process outside the agent cgroups (this test, root) connects and passes the
    //    connected socket to a process inside one (SCM_RIGHTS), which sends `decide`.
    let (outside, inside) = std::os::unix::net::UnixStream::pair().unwrap();
    let (pass_out, pass_in) = {
        use std::os::fd::AsRawFd as _;
        (outside.as_raw_fd(), inside.as_raw_fd())
    };
    let agent = ForkedChild::start(&procs, || {
        let fd = raw::recv_fd(pass_in);
        if fd < 0 {
            return 4;
        }
        raw::ask(fd, &request)
    });
    let connected = raw::connect(&addr);
    assert!(connected >= 0, "connect to the control socket");
    assert!(raw::send_fd(pass_out, connected), "pass the connection");
    // SAFETY: our descriptor; the agent has its own copy now.
    unsafe { libc::close(connected) };
    let result = agent.result();
    assert!(
        refused(result),
        "a decide sent by an agent on a connection passed to it was not refused ({result})"
    );
    assert_eq!(process_state(held_pid), 'T', "still held");
    drop((parent_end, child_end, outside, inside));
}

fn policies(files: &DaemonFiles, held: &str, timed: &str) {
    files.write_policy(
        "esc-agent.toml",
        &format!(
            r#"[agent]
name = "esc-agent"
cgroups = ["{CGROUP}"]
default = "allow"

[escalation]
approvers = {{ users = ["root"], groups = ["sre"] }}
timeout = "1h"
on_timeout = "deny"
grant = "once"
# Root starts this agent with `jitctl run` below and approves its holds too.
self_approval = true

[[rule]]
name = "held tool"
op = "exec"
path = "{held}"
decision = "hold"

[[rule]]
name = "quick timeout"
op = "exec"
path = "{timed}"
decision = "hold"
timeout = "2s"
on_timeout = "deny"
"#
        ),
    );
    files.write_policy(
        "strict-agent.toml",
        &format!(
            r#"[agent]
name = "strict-agent"
cgroups = ["{STRICT_CGROUP}"]
default = "allow"

[escalation]
approvers = {{ users = ["reviewer"] }}

[[rule]]
name = "held tool"
op = "exec"
path = "{held}"
decision = "hold"
"#
        ),
    );
    files.write_policy(
        "quorum-agent.toml",
        &format!(
            r#"[agent]
name = "quorum-agent"
cgroups = ["{QUORUM_CGROUP}"]
default = "allow"

[escalation]
approvers = {{ users = ["root", "reviewer"] }}
required_approvals = 2

[[rule]]
name = "two-person tool"
op = "exec"
path = "{held}"
decision = "hold"
"#
        ),
    );
}

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", describe(out));
}

fn pending(files: &DaemonFiles) -> Vec<PendingView> {
    let out = jitctl(files, &["pending", "--json"]);
    ok(&out, "jitctl pending --json");
    serde_json::from_slice(&out.stdout).expect("pending JSON")
}

/// Waits until `n` actions on `path` are held and returns them.
fn wait_held(files: &DaemonFiles, path: &str, n: usize) -> Vec<PendingView> {
    let mut held = Vec::new();
    let found = eventually(Duration::from_mins(1), || {
        held = pending(files)
            .into_iter()
            .filter(|v| v.path == path)
            .collect();
        held.len() >= n
    });
    assert!(
        found,
        "{n} holds of {path} expected, have {}: {held:?}",
        held.len()
    );
    held
}

fn join(exec: Exec, what: &str) -> std::io::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_mins(1);
    while !exec.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{what}: the exec did not finish within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    exec.join().expect("exec thread")
}

const TOKEN: &str = "test-token-0123456789abcdef";
const HTTP_LISTEN: &str = "127.0.0.1:7071";

/// A local webhook receiver: accepts HTTP POSTs, answers 200 and keeps each body.
struct WebhookReceiver {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl WebhookReceiver {
    fn start() -> Self {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = std::sync::Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut length = 0;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    store
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                }
                let _ = (&stream).write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Self { url, bodies }
    }

    fn received(&self, needle: &str) -> bool {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.contains(needle))
    }
}

/// An HTTP request to the daemon's API: `(status, body)`.
fn http(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{HTTP_LISTEN}{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = if method == "GET" {
        let mut req = agent.get(&url);
        if let Some(auth) = &auth {
            req = req.header("Authorization", auth);
        }
        req.call()
    } else {
        let mut req = agent.post(&url).header("Content-Type", "application/json");
        if let Some(auth) = &auth {
            req = req.header("Authorization", auth);
        }
        req.send(body.unwrap_or(""))
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, text)
}

static LAST_STEP: std::sync::Mutex<Option<(String, Instant)>> = std::sync::Mutex::new(None);

/// Progress on the VM console (run with `--nocapture` to see it live), and a watchdog: a step
/// that hangs for more than 2 minutes (an exec nobody releases) prints the daemon's log and
/// the held processes' states, then fails the test binary instead of hanging the VM.
fn step(name: &str) {
    eprintln!("escalation: {name}");
    let mut last = LAST_STEP.lock().unwrap();
    if last.is_none() {
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                let stale = LAST_STEP
                    .lock()
                    .unwrap()
                    .as_ref()
                    .filter(|(_, at)| at.elapsed() > Duration::from_mins(2))
                    .map(|(name, _)| name.clone());
                if let Some(name) = stale {
                    eprintln!("escalation: step {name:?} hangs; daemon logs:");
                    for entry in fs::read_dir("/tmp/jitd-esc")
                        .into_iter()
                        .flatten()
                        .flatten()
                    {
                        if entry.file_name().to_string_lossy().ends_with(".log") {
                            eprintln!("--- {}", entry.path().display());
                            eprintln!("{}", fs::read_to_string(entry.path()).unwrap_or_default());
                        }
                    }
                    dump_processes();
                    std::process::exit(101);
                }
            }
        });
    }
    *last = Some((name.to_owned(), Instant::now()));
}

/// Ends the watchdog when the scenario ends, passed or failed: the other tests of the binary
/// run after it.
struct WatchdogOff;

impl Drop for WatchdogOff {
    fn drop(&mut self) {
        *LAST_STEP
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// Every process's state, wait channel and kernel stack (for the watchdog).
fn dump_processes() {
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat.contains("(kworker") || stat.contains("(ksoftirq") || stat.contains("(rcu_") {
            continue;
        }
        eprintln!("--- {}", stat.split(") ").next().unwrap_or_default());
        for task in fs::read_dir(entry.path().join("task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let tstat = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let state = tstat.rsplit_once(") ").map_or("?", |(_, r)| &r[..1]);
            let wchan = fs::read_to_string(task.path().join("wchan")).unwrap_or_default();
            let stack = fs::read_to_string(task.path().join("stack")).unwrap_or_default();
            eprintln!(
                "  task {} state {state} wchan {wchan}\n{}",
                task.file_name().to_string_lossy(),
                stack.lines().take(12).collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// SIGKILLs a held process the way someone other than jit would.
fn kill_held(pid: u32) {
    let pid = i32::try_from(pid).expect("pid");
    // SAFETY: plain syscall.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill {pid}: {}", std::io::Error::last_os_error());
}

fn audit_has(path: &Path, pred: impl Fn(&serde_json::Value) -> bool) -> bool {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|r| pred(&r))
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: the restart steps need the daemon and holds the earlier steps made"
)]
fn escalation_reviewers_timeouts_and_restart() {
    require_vm();
    let _watchdog = WatchdogOff;
    let work = TestDir::new("esc");
    let held = work.install_true("held");
    let timed = work.install_true("timed");
    let mut files = DaemonFiles::new("esc");
    files.cgroups.extend([
        CGROUP.to_owned(),
        STRICT_CGROUP.to_owned(),
        QUORUM_CGROUP.to_owned(),
        "jit-test-esc".to_owned(),
    ]);
    files.set_socket_access("sre", "0660");
    let receiver = WebhookReceiver::start();
    files.enable_http_and_webhook(HTTP_LISTEN, "reviewer", TOKEN, &receiver.url);
    policies(&files, &held, &timed);
    let mut daemon = files.start();
    let agent = ExistingCgroup(Path::new(CGROUP2_ROOT).join(CGROUP));
    let strict = ExistingCgroup(Path::new(CGROUP2_ROOT).join(STRICT_CGROUP));
    let quorum = ExistingCgroup(Path::new(CGROUP2_ROOT).join(QUORUM_CGROUP));

    step("approve once");
    // Approve once: the held exec proceeds; the next one is held again. The reviewer sees the
    // command that would run (`exec_argv`), not only the program that called exec (`argv`).
    let exec = agent.spawn_with_args(&held, &["--delete", "all of it"]);
    let view = wait_held(&files, &held, 1).remove(0);
    assert_eq!(view.agent, "esc-agent");
    assert_eq!(view.op, "exec");
    assert_eq!(view.rule.as_deref(), Some("held tool"));
    assert_eq!(process_state(view.pid), 'T', "a held process is stopped");
    assert!(view.argv.is_some(), "context read while held: {view:?}");
    assert_eq!(
        view.exec_argv.as_deref(),
        Some(&[held.clone(), "--delete".to_owned(), "all of it".to_owned()][..]),
        "the held exec's own arguments: {view:?}"
    );
    // The card shows where each argument ends: "all of it" is one argument.
    let human = jitctl(&files, &["pending"]);
    assert!(
        String::from_utf8_lossy(&human.stdout)
            .contains(&format!("runs: {held} --delete \"all of it\"")),
        "{}",
        describe(&human)
    );
    let out = jitctl(
        &files,
        &[
            "approve",
            &view.id.to_string(),
            "--once",
            "--reason",
            "fine",
        ],
    );
    ok(&out, "approve --once");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("approved"),
        "{}",
        describe(&out)
    );
    jit_tests::assert_ran(&join(exec, "approved exec"), "approved once");
    // The webhook announced that hold, with a Slack-compatible text.
    assert!(
        eventually(Duration::from_secs(20), || receiver
            .received(&format!("\"id\":{}", view.id))
            && receiver.received("\"text\"")),
        "the webhook receiver got no notification for request {}: {:?}\ndaemon log:\n{}",
        view.id,
        receiver.bodies.lock().unwrap(),
        daemon.log()
    );
    // ... and, once approved, how the hold ended.
    let ended = format!("\"text\":\"jit: request {} approved by ", view.id);
    assert!(
        eventually(Duration::from_secs(20), || receiver.received(&ended)),
        "the webhook receiver got no end message for request {}: {:?}",
        view.id,
        receiver.bodies.lock().unwrap()
    );
    // The real daemon serves the review page (http.web) from its binary, and only its session
    // routes without a bearer token.
    let (status, page) = http("GET", "/", None, None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<script src=\"/ui/app.js\""), "{page}");
    assert_eq!(http("GET", "/ui/pending", None, None).0, 401);

    step("deny by group approver");
    // Deny, by a reviewer who is an approver through the `sre` group.
    let exec = agent.spawn(&held);
    let view = wait_held(&files, &held, 1).remove(0);
    let out = jitctl_as(
        &files,
        REVIEWER.0,
        REVIEWER.1,
        &["deny", &view.id.to_string()],
    );
    ok(&out, "deny by a group approver");
    jit_tests::assert_eperm(&join(exec, "denied exec"), "denied by a reviewer");

    step("kill");
    // Kill.
    let exec = agent.spawn(&held);
    let view = wait_held(&files, &held, 1).remove(0);
    ok(&jitctl(&files, &["kill", &view.id.to_string()]), "kill");
    match join(exec, "killed exec") {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt as _;
            assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
        }
        Err(err) => panic!("killed exec: expected a SIGKILLed process, got error {err}"),
    }

    step("approve for a duration");
    // Approve for a duration: matching execs pass without a hold until it expires.
    let exec = agent.spawn(&held);
    let view = wait_held(&files, &held, 1).remove(0);
    let approved_at = Instant::now();
    ok(
        &jitctl(&files, &["approve", &view.id.to_string(), "--for", "4s"]),
        "approve --for",
    );
    jit_tests::assert_ran(&join(exec, "approved exec"), "approved for 4s");
    jit_tests::assert_ran(
        &join(agent.spawn(&held), "second exec inside the grant"),
        "second exec inside the grant",
    );
    if let Some(rest) = Duration::from_secs(5).checked_sub(approved_at.elapsed()) {
        std::thread::sleep(rest);
    }
    let exec = agent.spawn(&held);
    let view = wait_held(&files, &held, 1).remove(0);
    ok(
        &jitctl(&files, &["deny", &view.id.to_string()]),
        "deny after expiry",
    );
    jit_tests::assert_eperm(&join(exec, "exec after the grant expired"), "expired grant");

    step("timeout, daemon up");
    // Timeout with the daemon running: denied after 2 s, audited as decided by `timeout`.
    let started = Instant::now();
    let exec = agent.spawn(&timed);
    jit_tests::assert_eperm(&join(exec, "timed exec"), "on_timeout = deny");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before the timeout"
    );
    // The kernel answer comes first, its record just after: wait for it.
    assert!(eventually(Duration::from_secs(10), || audit_has(
        &files.audit,
        |r| r["type"] == "approval" && r["reviewer"] == "timeout" && r["decision"] == "deny"
    )));

    step("approvers");
    // Approvers: root is not one for strict-agent; the reviewer account is.
    let exec = strict.spawn(&held);
    let view = wait_held(&files, &held, 1).remove(0);
    assert_eq!(view.agent, "strict-agent");
    let out = jitctl(&files, &["approve", &view.id.to_string()]);
    assert!(
        !out.status.success(),
        "root is not an approver here: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not among its approvers"),
        "{}",
        describe(&out)
    );
    ok(
        &jitctl_as(
            &files,
            REVIEWER.0,
            REVIEWER.1,
            &["approve", &view.id.to_string()],
        ),
        "approve by reviewer",
    );
    jit_tests::assert_ran(
        &join(exec, "strict exec"),
        "approved by the listed reviewer",
    );

    step("two approvals required");
    // required_approvals = 2: the first approval is recorded and audited, the process stays
    // held; the same reviewer cannot count twice; a second, distinct approver releases it.
    let exec = quorum.spawn(&held);
    let view = wait_held(&files, &held, 1).remove(0);
    assert_eq!(view.agent, "quorum-agent");
    assert_eq!(view.required_approvals, 2);
    let id = view.id.to_string();
    let out = jitctl(&files, &["approve", &id, "--reason", "looks fine"]);
    ok(&out, "first of two approvals");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 more approval(s) needed"),
        "{}",
        describe(&out)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        process_state(view.pid),
        'T',
        "one approval of two releases nothing"
    );
    let listed = pending(&files);
    let still = listed.iter().find(|v| v.id == view.id);
    assert_eq!(
        still.map(|v| v.approvals.clone()),
        Some(vec!["root".to_owned()]),
        "the recorded approval is listed: {listed:?}"
    );
    assert!(audit_has(&files.audit, |r| r["type"] == "approval"
        && r["request_id"] == view.id
        && r["reviewer"] == "root"
        && r["approvals_missing"] == 1));
    let out = jitctl(&files, &["approve", &id]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("approved this request already"),
        "the same reviewer twice: {}",
        describe(&out)
    );
    assert_eq!(process_state(view.pid), 'T', "still held after a repeat");
    let out = jitctl_as(&files, REVIEWER.0, REVIEWER.1, &["approve", &id]);
    ok(&out, "second approval, by another reviewer");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("approved"),
        "{}",
        describe(&out)
    );
    jit_tests::assert_ran(&join(exec, "exec approved by two"), "two approvals");
    // The kernel answer comes first, its record just after: wait for it.
    assert!(eventually(Duration::from_secs(10), || audit_has(
        &files.audit,
        |r| r["type"] == "approval"
            && r["request_id"] == view.id
            && r["reviewer"] == "reviewer"
            && r.get("approvals_missing").is_none()
    )));
    // One denial is enough, whatever approvals came before.
    let exec = quorum.spawn(&held);
    let view = wait_held(&files, &held, 1).remove(0);
    ok(
        &jitctl(&files, &["approve", &view.id.to_string()]),
        "first approval",
    );
    ok(
        &jitctl_as(
            &files,
            REVIEWER.0,
            REVIEWER.1,
            &["deny", &view.id.to_string()],
        ),
        "deny by the second reviewer",
    );
    jit_tests::assert_eperm(&join(exec, "approved once, then denied"), "denied");

    step("held process killed from outside");
    // A held process that dies without a decision (here SIGKILLed by someone other than jit):
    // the daemon drops the request, clears the kernel's entry and audits the end.
    let exec = agent.spawn(&held);
    let view = wait_held(&files, &held, 1).remove(0);
    kill_held(view.pid);
    join(exec, "exec killed from outside").ok();
    assert!(
        eventually(Duration::from_secs(20), || pending(&files)
            .iter()
            .all(|v| v.id != view.id)),
        "request {} still listed after its process died",
        view.id
    );
    assert!(
        eventually(Duration::from_secs(5), || audit_has(
            &files.audit,
            |r| r["type"] == "hold_ended"
                && r["request_id"] == view.id
                && r["action"]["path"] == held.as_str()
        )),
        "no hold_ended record for request {}",
        view.id
    );

    step("HTTP API");
    let exec = strict.spawn(&held);
    let view = wait_held(&files, &held, 1).remove(0);
    assert_eq!(http("GET", "/v1/pending", None, None).0, 401, "no token");
    assert_eq!(
        http("GET", "/v1/pending", Some("wrong-token-0123456789"), None).0,
        401,
        "wrong token"
    );
    let (status, body) = http("GET", "/v1/pending", Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&view.id.to_string()), "{body}");
    let approve = format!("/v1/pending/{}/approve", view.id);
    assert_eq!(
        http("POST", &approve, None, Some("{}")).0,
        401,
        "approve without a token"
    );
    assert_eq!(
        process_state(view.pid),
        'T',
        "still held after the refused approval"
    );
    let (status, body) = http(
        "POST",
        &approve,
        Some(TOKEN),
        Some(r#"{"once":true,"reason":"via http"}"#),
    );
    assert_eq!(status, 200, "{body}");
    jit_tests::assert_ran(&join(exec, "exec approved over HTTP"), "approved over HTTP");
    // The kernel answer comes first, its record just after: wait for it.
    assert!(eventually(Duration::from_secs(10), || audit_has(
        &files.audit,
        |r| r["type"] == "approval" && r["reviewer"] == "reviewer" && r["reason"] == "via http"
    )));

    step("request from inside");
    // A request from inside an agent cgroup is refused, even from root.
    let exec = agent.spawn(&held);
    let view = wait_held(&files, &held, 1).remove(0);
    let config = files.config.to_str().unwrap().to_owned();
    let id = view.id.to_string();
    let out = jitctl(
        &files,
        &[
            "run",
            "--agent",
            "esc-agent",
            "--",
            "/jit/bin/jitctl",
            "--config",
            &config,
            "approve",
            &id,
        ],
    );
    assert!(
        !out.status.success(),
        "approve from inside: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        process_state(view.pid),
        'T',
        "still held after the refused approval"
    );
    step("handed-on connections");
    handed_on_connections_are_refused(&files, view.id, view.pid);
    ok(&jitctl(&files, &["deny", &id]), "deny");
    jit_tests::assert_eperm(&join(exec, "exec"), "denied");

    step("50 simultaneous holds");
    // 50 simultaneous holds from 50 processes, answered in a scrambled order.
    let execs: Vec<Exec> = (0..50).map(|_| agent.spawn(&held)).collect();
    let views = wait_held(&files, &held, 50);
    let by_pid: std::collections::HashMap<u32, u64> = views.iter().map(|v| (v.pid, v.id)).collect();
    assert_eq!(by_pid.len(), 50, "50 distinct held processes");
    let mut order: Vec<usize> = (0..50).collect();
    let mut seed = 0x2545_f491_u64;
    for i in (1..order.len()).rev() {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        order.swap(i, usize::try_from(seed >> 33).unwrap() % (i + 1));
    }
    let mut approved = std::collections::HashSet::new();
    for (n, &i) in order.iter().enumerate() {
        let id = views[i].id;
        if n % 2 == 0 {
            ok(
                &jitctl(&files, &["approve", &id.to_string()]),
                "approve one of 50",
            );
            approved.insert(views[i].pid);
        } else {
            ok(
                &jitctl(&files, &["deny", &id.to_string()]),
                "deny one of 50",
            );
        }
    }
    let results: Vec<_> = execs.into_iter().map(|e| join(e, "one of 50")).collect();
    let ran = results
        .iter()
        .filter(|r| matches!(r, Ok(s) if s.success()))
        .count();
    let denied = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.raw_os_error() == Some(libc::EPERM)))
        .count();
    assert_eq!(
        (ran, denied),
        (25, 25),
        "25 approved ran, 25 denied failed: {results:?}"
    );
    assert!(pending(&files).is_empty(), "nothing left pending");

    step("restart with 10 held");
    // SIGKILL the daemon with 10 tasks held, one whose 2 s timeout passes while it is down, and
    // one more whose process is killed while no daemon runs.
    let execs: Vec<Exec> = (0..11).map(|_| agent.spawn(&held)).collect();
    let mut held_views = wait_held(&files, &held, 11);
    let timed_exec = agent.spawn(&timed);
    wait_held(&files, &timed, 1);
    daemon.kill();
    let doomed = held_views.pop().expect("11 held");
    kill_held(doomed.pid);
    // It usually stays a zombie until its exec thread reaps it, which happens only once the
    // other held execs have gone on: those forked while its exec-error pipe was open inherited
    // it and hold it open while they are stopped before close-on-exec (see the README's note on
    // held execs and fds). When none did, it is reaped at once.
    let dead = || {
        fs::read_to_string(format!("/proc/{}/stat", doomed.pid)).map_or(true, |stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
    };
    assert!(
        eventually(Duration::from_secs(20), dead),
        "the held process {} died from SIGKILL",
        doomed.pid
    );
    std::thread::sleep(Duration::from_secs(3));
    for v in &held_views {
        assert_eq!(
            process_state(v.pid),
            'T',
            "held task {} still stopped with no daemon",
            v.pid
        );
    }
    assert!(
        !timed_exec.is_finished(),
        "no daemon: nothing resolved the timed hold yet"
    );
    let daemon = files.start();
    // The overdue hold is resolved at once, and audited as late.
    jit_tests::assert_eperm(
        &join(timed_exec, "timed exec after restart"),
        "overdue on restart",
    );
    // The kernel answer comes first, its record just after: wait for it.
    assert!(eventually(Duration::from_secs(10), || audit_has(
        &files.audit,
        |r| r["type"] == "approval"
            && r["reviewer"] == "timeout"
            && r["reason"].as_str().is_some_and(|s| s.contains("late"))
    )));
    // The one that died while no daemon ran is cleaned up and audited, not listed.
    assert!(
        eventually(Duration::from_secs(20), || audit_has(
            &files.audit,
            |r| r["type"] == "hold_ended" && r["request_id"] == doomed.id
        )),
        "no hold_ended record for request {} (died while the daemon was down)",
        doomed.id
    );
    // All 10 others are listed again, with their paths, and still stopped.
    let relisted = wait_held(&files, &held, 10);
    assert!(
        relisted.iter().all(|v| v.id != doomed.id),
        "the dead process's request is not listed: {relisted:?}"
    );
    assert_eq!(
        relisted.len(),
        10,
        "exactly the 10 live holds: {relisted:?}"
    );
    for v in &held_views {
        assert!(
            relisted.iter().any(|r| r.id == v.id && r.path == held),
            "request {} re-adopted",
            v.id
        );
        assert_eq!(process_state(v.pid), 'T');
    }
    for v in &relisted {
        ok(
            &jitctl(&files, &["approve", &v.id.to_string()]),
            "approve after restart",
        );
    }
    let results: Vec<_> = execs
        .into_iter()
        .map(|e| join(e, "held across the restart"))
        .collect();
    let killed = results
        .iter()
        .filter(|r| {
            use std::os::unix::process::ExitStatusExt as _;
            matches!(r, Ok(s) if s.signal() == Some(9))
        })
        .count();
    let ran = results
        .iter()
        .filter(|r| matches!(r, Ok(s) if s.success()))
        .count();
    assert_eq!(
        (ran, killed),
        (10, 1),
        "10 approved after the restart ran, the one killed while no daemon ran did not: \
         {results:?}"
    );
    drop(daemon);
}
