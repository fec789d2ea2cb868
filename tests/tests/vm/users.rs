//! `user` and `group` conditions through the real daemon (policies/README.md, "Users and
//! groups"): the kernel decides by the effective uid and gid of the process, in the rule set of
//! its identity class, without a round trip to the daemon; a rule with `user` and daemon-side
//! conditions is held and decided by the daemon for that user only. Credentials that change
//! inside a running process change the decision at once (the write-decision cache is keyed by
//! them), and a reload that names other users moves the decisions with it.
use std::{
    ffi::CString,
    fs, io,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::Path,
    process::{Command, ExitStatus},
    time::Duration,
};

use jit_tests::{
    CGROUP2_ROOT, ForkedChild, TestDir, c_path,
    daemon::{DaemonFiles, describe, eventually, jitctl},
    join_cgroup, procs_of, require_vm,
};

const CGROUP: &str = "jit-test-users/agent";
/// The guest's accounts (see xtask's initramfs): `reviewer` is uid 1000 (group 1000), `sre` is
/// gid 1001, `nobody` uid 65534, `nogroup` gid 65534.
const REVIEWER: u32 = 1000;
const SRE: u32 = 1001;
const NOBODY: u32 = 65534;

/// Runs `program args...` in the agent cgroup as `uid`/`gid` (real, effective and saved; no
/// supplementary groups): the child joins the cgroup as root, then drops to the ids.
fn run_as(uid: u32, gid: u32, program: &str, args: &[&str]) -> io::Result<ExitStatus> {
    let procs = procs_of(&Path::new(CGROUP2_ROOT).join(CGROUP));
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: async-signal-safe calls only (open, write, close, setgroups, setres[ug]id) on
    // memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            join_cgroup(&procs)?;
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.status()
}

/// Opens `path` for writing (creating it) in a child in the agent cgroup; 0 or the errno.
fn write_open(path: &CString) -> i32 {
    // SAFETY: a raw syscall on a prepared C string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o666) };
    if fd < 0 {
        return io::Error::last_os_error().raw_os_error().unwrap_or(255);
    }
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    0
}

fn pending(files: &DaemonFiles) -> Vec<jit_agent::approval::PendingView> {
    let out = jitctl(files, &["pending", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("pending JSON")
}

/// The audit records of decisions by the policy's conditions.
fn policy_decisions(files: &DaemonFiles) -> Vec<serde_json::Value> {
    records(files)
        .into_iter()
        .filter(|r| r["type"] == "approval" && r["reviewer"] == "policy")
        .collect()
}

fn records(files: &DaemonFiles) -> Vec<serde_json::Value> {
    fs::read_to_string(&files.audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

fn policy(work: &Path, tool: &str, data_user: &str) -> String {
    format!(
        r#"[agent]
name = "users"
cgroups = ["{CGROUP}"]
default = "allow"

[escalation]
approvers = {{ users = ["root"] }}
timeout = "1h"

[[rule]]
name = "root does not run tool2"
op = "exec"
path = "{tool2}"
user = "root"
decision = "deny"

[[rule]]
name = "writes of held wait for a reviewer"
op = "write"
path = "{held}"
decision = "hold"

[[rule]]
name = "data is read-only for {data_user}"
op = "modify"
path = "{data}/"
user = "{data_user}"
decision = "deny"

[[rule]]
name = "group sre does not run the tool"
op = "exec"
path = "{tool}"
group = "sre"
decision = "deny"

[[rule]]
name = "reviewer runs tool status"
op = "exec"
path = "{tool}"
user = "reviewer"
args = ["status"]
decision = "allow"

[[rule]]
name = "reviewer runs nothing else of the tool"
op = "exec"
path = "{tool}"
user = "reviewer"
decision = "deny"
"#,
        data = work.join("data").display(),
        tool2 = work.join("tool2/true").display(),
        held = work.join("held").display(),
    )
}

/// [`run_as`] for root with the filesystem uid set to `fsuid` before the exec.
fn run_with_fsuid(fsuid: u32, program: &str) -> io::Result<ExitStatus> {
    let procs = procs_of(&Path::new(CGROUP2_ROOT).join(CGROUP));
    let mut cmd = Command::new(program);
    // SAFETY: async-signal-safe calls only, on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            join_cgroup(&procs)?;
            libc::setfsuid(fsuid);
            Ok(())
        });
    }
    cmd.status()
}

/// SIGUSR1 handler of the held child: becomes nobody (a raw, async-signal-safe syscall).
extern "C" fn become_nobody(_: libc::c_int) {
    // SAFETY: a plain syscall.
    unsafe { libc::setresuid(NOBODY, NOBODY, NOBODY) };
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one daemon start (tens of seconds under emulation) for every identity case"
)]
fn rules_decide_by_the_user_and_group_a_process_acts_as_in_the_kernel() {
    require_vm();
    let work = TestDir::new("users");
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let tool = work.install_true("tool");
    let tool2 = work.install_true("tool2");
    let held = work.path().join("held");
    fs::write(&held, "held").unwrap();
    fs::set_permissions(&held, fs::Permissions::from_mode(0o666)).unwrap();
    let data = work.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o777)).unwrap();
    // Owned by nobody and writable by all: whatever refuses nobody below is jit, not the
    // file's permissions (unlink, truncate, chmod all pass the kernel's own checks).
    let owned = data.join("f");
    fs::write(&owned, "data").unwrap();
    std::os::unix::fs::chown(&owned, Some(NOBODY), Some(NOBODY)).unwrap();
    fs::set_permissions(&owned, fs::Permissions::from_mode(0o666)).unwrap();
    let mut files = DaemonFiles::new("users");
    files
        .cgroups
        .extend([CGROUP.to_owned(), "jit-test-users".to_owned()]);
    files.write_policy("users.toml", &policy(work.path(), &tool, "nobody"));
    let daemon = files.start();
    let procs = procs_of(&Path::new(CGROUP2_ROOT).join(CGROUP));

    // Writes: nobody is refused, root and the reviewer are not (no daemon round trip: the
    // kernel decides in the rule set of the process's class).
    let file = c_path(&data.join("f"));
    let as_ids = |uid: u32, gid: u32| {
        let file = file.clone();
        ForkedChild::start(&procs, move || {
            // SAFETY: plain syscalls.
            if unsafe { libc::setresgid(gid, gid, gid) } != 0
                || unsafe { libc::setresuid(uid, uid, uid) } != 0
            {
                return 201;
            }
            write_open(&file)
        })
        .result()
    };
    assert_eq!(as_ids(NOBODY, NOBODY), libc::EPERM, "nobody writes data");
    assert_eq!(as_ids(0, 0), 0, "root writes data");
    assert_eq!(as_ids(REVIEWER, REVIEWER), 0, "reviewer writes data");

    // The uid the process acts as on files decides, not the real one: a root process acting
    // as nobody is refused, one that only keeps nobody as its real uid is not; and the
    // filesystem uid (setfsuid) rather than the effective one, since file access is checked as
    // that.
    let mixed = |ruid: u32, euid: u32, fsuid: Option<u32>| {
        let file = file.clone();
        ForkedChild::start(&procs, move || {
            // SAFETY: plain syscalls.
            if unsafe { libc::setresuid(ruid, euid, 0) } != 0 {
                return 201;
            }
            if let Some(fsuid) = fsuid {
                // SAFETY: a plain syscall (it returns the previous fsuid).
                unsafe { libc::setfsuid(fsuid) };
                // SAFETY: as above; -1 only reads the current value.
                if unsafe { libc::setfsuid(u32::MAX) } != fsuid.cast_signed() {
                    return 203;
                }
            }
            write_open(&file)
        })
        .result()
    };
    assert_eq!(
        mixed(0, NOBODY, None),
        libc::EPERM,
        "real root, effective nobody"
    );
    assert_eq!(mixed(NOBODY, 0, None), 0, "real nobody, effective root");
    assert_eq!(
        mixed(NOBODY, 0, Some(NOBODY)),
        libc::EPERM,
        "effective root acting on files as nobody (setfsuid)"
    );
    assert_eq!(
        mixed(0, NOBODY, Some(0)),
        0,
        "effective nobody acting on files as root (setfsuid)"
    );

    // One process, one file: allowed (and cached) as root, refused once it becomes nobody.
    let file_once = file.clone();
    let code = ForkedChild::start(&procs, move || {
        for _ in 0..3 {
            if write_open(&file_once) != 0 {
                return 202;
            }
        }
        // SAFETY: plain syscalls.
        if unsafe { libc::setresgid(NOBODY, NOBODY, NOBODY) } != 0
            || unsafe { libc::setresuid(NOBODY, NOBODY, NOBODY) } != 0
        {
            return 201;
        }
        write_open(&file_once)
    })
    .result();
    assert_eq!(
        code,
        libc::EPERM,
        "a write allowed (and cached) as root is refused after setuid(nobody)"
    );

    // Every write-like op of the `modify` rule, for nobody only.
    let target = c_path(&data.join("f"));
    let code = ForkedChild::start(&procs, move || {
        // SAFETY: plain syscalls on prepared C strings.
        unsafe {
            if libc::setresuid(NOBODY, NOBODY, NOBODY) != 0 {
                return 201;
            }
            let refused = |r: libc::c_int| r != 0 && *libc::__errno_location() == libc::EPERM;
            if !refused(libc::unlink(target.as_ptr())) {
                return 10;
            }
            if !refused(libc::truncate(target.as_ptr(), 0)) {
                return 11;
            }
            if !refused(libc::chmod(target.as_ptr(), 0o600)) {
                return 12;
            }
        }
        0
    })
    .result();
    assert_eq!(
        code, 0,
        "nobody's unlink/truncate/chmod (10/11/12 = that one passed)"
    );

    // Exec by group: nobody with group sre is refused by the kernel; the reviewer with its
    // own group is held and decided by the daemon by the arguments (its conditional rules).
    jit_tests::assert_eperm(&run_as(NOBODY, SRE, &tool, &["status"]), "group sre");
    jit_tests::assert_ran(
        &run_as(REVIEWER, REVIEWER, &tool, &["status"]),
        "reviewer: tool status",
    );
    jit_tests::assert_eperm(
        &run_as(REVIEWER, REVIEWER, &tool, &["push"]),
        "reviewer: tool push",
    );
    // Root and nobody: no rule names them for the tool, the default allows, no hold.
    jit_tests::assert_ran(&run_as(0, 0, &tool, &["push"]), "root: tool push");
    jit_tests::assert_ran(
        &run_as(NOBODY, NOBODY, &tool, &["push"]),
        "nobody: tool push",
    );
    // An exec is decided by the effective uid (what the program will run as; execve resets
    // the filesystem uid to it): root with the filesystem uid of nobody is still root.
    jit_tests::assert_eperm(&run_as(0, 0, &tool2, &[]), "root runs tool2");
    jit_tests::assert_eperm(
        &run_with_fsuid(NOBODY, &tool2),
        "root with fsuid nobody runs tool2",
    );
    jit_tests::assert_ran(&run_as(NOBODY, NOBODY, &tool2, &[]), "nobody runs tool2");

    // An approval is for the action as it was held: a held thread that becomes another user
    // before the answer (a signal handler runs when it is continued, before the syscall
    // restarts) gets a refusal.
    let held_c = c_path(&held);
    let child = ForkedChild::start(&procs, move || {
        // SAFETY: installing an async-signal-safe handler.
        unsafe {
            libc::signal(
                libc::SIGUSR1,
                become_nobody as *const () as libc::sighandler_t,
            )
        };
        write_open(&held_c)
    });
    let held_str = held.to_str().unwrap().to_owned();
    let mut id = None;
    assert!(
        eventually(Duration::from_mins(1), || {
            id = pending(&files)
                .into_iter()
                .find(|v| v.path == held_str)
                .map(|v| v.id);
            id.is_some()
        }),
        "the write of held was not held"
    );
    // SAFETY: signals to our own child.
    unsafe {
        libc::kill(child.0, libc::SIGUSR1);
        libc::kill(child.0, libc::SIGCONT);
    }
    // It runs the handler, comes back to the pending hold and stops again.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        eventually(Duration::from_secs(10), || {
            jit_tests::process_state(child.0.cast_unsigned()) == 'T'
        }),
        "the held child did not stop again after its handler"
    );
    let out = jitctl(&files, &["approve", &id.unwrap().to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        child.result(),
        libc::EPERM,
        "the approval of root's write does not let nobody's through"
    );

    let decisions = policy_decisions(&files);
    assert_eq!(
        decisions.len(),
        2,
        "only the reviewer's two execs went to the daemon: {decisions:#?}"
    );

    // Records carry the effective ids the kernel decided by.
    let denial = records(&files).into_iter().find(|r| {
        r["type"] == "kernel" && r["decision"] == "deny" && r["op"] == "write" && r["uid"] == NOBODY
    });
    assert!(
        denial.is_some(),
        "the refused write is audited with uid 65534"
    );

    // A reload that names root instead of nobody moves the refusal.
    files.write_policy("users.toml", &policy(work.path(), &tool, "root"));
    let out = jitctl(&files, &["policy", "reload"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        eventually(Duration::from_secs(30), || as_ids(0, 0) == libc::EPERM),
        "root is refused after the reload"
    );
    assert_eq!(
        as_ids(NOBODY, NOBODY),
        0,
        "nobody writes data after the reload"
    );
    assert_eq!(as_ids(REVIEWER, REVIEWER), 0, "reviewer still writes data");
    drop(daemon);
}
