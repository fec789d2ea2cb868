//! Self-protection (docs/ARCHITECTURE.md, I9), on the real hooks: a process in an agent cgroup cannot
//! signal (also by `SIGIO`) or trace the daemon, write to or restructure any cgroup filesystem,
//! call `bpf()`, change the daemon's protected paths, or change how paths resolve (mount,
//! umount, `move_mount`, `pivot_root`, `chroot`), whatever its policy says; the same actions from
//! outside agent cgroups still work. A sibling's `SIGCONT` does not release a held task.
use std::{
    ffi::CString,
    fs,
    path::Path,
    process::{Child, Command},
    ptr, thread,
    time::Duration,
};

use jit_common::{
    event::{Event, EventKind},
    policy::{Decision, Mode, Op},
    protect::{SELF_PROTECTION_RULE_ID, event_op},
};
use jit_tests::{
    AgentSetup, CGROUP2_ROOT, TestCgroup, TestDir, assert_ran, c_path, errno_of, process_state,
    require_vm, wait_stopped,
};

/// A process standing in for the daemon, outside every agent cgroup, killed on drop.
struct FakeDaemon(Child);

impl FakeDaemon {
    fn start() -> Self {
        Self(
            Command::new("/bin/sleep")
                .arg("1000")
                .spawn()
                .expect("start sleep"),
        )
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("pid")
    }

    /// Fails unless it still runs (neither stopped, nor dead).
    fn assert_running(&mut self, what: &str) {
        thread::sleep(Duration::from_millis(50));
        assert!(
            self.0.try_wait().expect("try_wait").is_none(),
            "{what}: the daemon exited"
        );
        let state = process_state(self.0.id());
        assert!(matches!(state, 'S' | 'R'), "{what}: daemon state {state}");
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The self-protection denials among `events`, as `(op, file.ino, file.name)`.
/// Asserts that a self-protection event since the last drain names signal `signal` sent to
/// `daemon`.
fn assert_signal_refused(setup: &mut AgentSetup, daemon: &FakeDaemon, signal: libc::c_int) {
    let events = protection_events(&setup.drain_events());
    assert!(
        events.contains(&(
            event_op::SIGNAL,
            u64::from(daemon.0.id()),
            u64::from(signal.cast_unsigned())
        )),
        "a self-protection event names signal {signal} and the daemon: {events:?}"
    );
}

fn protection_events(events: &[Event]) -> Vec<(u8, u64, u64)> {
    events
        .iter()
        .filter(|e| e.rule_id == SELF_PROTECTION_RULE_ID)
        .inspect(|e| {
            assert_eq!(e.kind, EventKind::Decision as u8);
            assert_eq!(
                (e.decision, e.enforced),
                (Decision::Deny as u8, Decision::Deny as u8)
            );
        })
        .map(|e| (e.op, e.file.ino, e.file.name))
        .collect()
}

#[test]
fn agents_cannot_signal_the_daemon() {
    require_vm();
    let mut daemon = FakeDaemon::start();
    let bystander = FakeDaemon::start();
    let mut setup = AgentSetup::new("sp-signal", Decision::Allow, Mode::Enforce);
    let pid = daemon.pid();
    setup
        .enforcer()
        .set_protection(daemon.0.id(), &[])
        .expect("set protection");
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    for sig in [
        libc::SIGTERM,
        libc::SIGSTOP,
        libc::SIGKILL,
        libc::SIGCONT,
        0,
    ] {
        // SAFETY (closures): plain syscalls.
        let errno = errno_of(agent, || unsafe { libc::kill(pid, sig) } == 0);
        assert_eq!(errno, libc::EPERM, "kill(daemon, {sig}) from an agent");
        daemon.assert_running(&format!("after kill(daemon, {sig}) from an agent"));
    }
    let errno = errno_of(
        agent,
        || unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGTERM) } == 0,
    );
    assert_eq!(errno, libc::EPERM, "tgkill(daemon) from an agent");
    // An agent's shell doing it (its complaint silenced: it would garble the test output).
    let status = setup
        .cgroup
        .run(
            "/bin/sh",
            &["-c", &format!("exec 2>/dev/null; kill -KILL {pid}")],
        )
        .expect("run sh");
    assert!(
        !status.success(),
        "kill -KILL daemon from an agent: {status}"
    );
    daemon.assert_running("after busybox kill from an agent");
    assert_signal_refused(&mut setup, &daemon, libc::SIGKILL);

    // Other targets are the policy's business, and the daemon is reachable from outside.
    let other = bystander.pid();
    assert_eq!(
        errno_of(agent, || unsafe { libc::kill(other, 0) } == 0),
        0,
        "kill(other, 0) from an agent"
    );
    assert_eq!(
        errno_of(None, || unsafe { libc::kill(pid, 0) } == 0),
        0,
        "kill(daemon, 0) from outside"
    );
    assert_eq!(
        errno_of(None, || unsafe { libc::kill(pid, libc::SIGKILL) } == 0),
        0,
        "kill(daemon, SIGKILL) from outside"
    );
    let status = daemon.0.wait().expect("wait for the daemon");
    assert!(
        !status.success(),
        "SIGKILL from outside ended the daemon: {status}"
    );
    setup
        .enforcer()
        .set_protection(0, &[])
        .expect("reset protection");
}

/// Points a pipe's `O_ASYNC` owner at `pid` and makes it readable: the kernel then sends
/// `pid` a `SIGIO`, whose default action ends the process. Returns whether every call succeeded
/// (the signal itself is sent afterwards, by the kernel, and cannot fail the write).
fn sigio_to(pid: i32) -> bool {
    let mut fds = [0; 2];
    // SAFETY: plain syscalls on our own descriptors.
    unsafe {
        libc::pipe(fds.as_mut_ptr()) == 0
            && libc::fcntl(fds[0], libc::F_SETOWN, pid) == 0
            && libc::fcntl(fds[0], libc::F_SETFL, libc::O_ASYNC | libc::O_NONBLOCK) == 0
            && libc::write(fds[1], b"x".as_ptr().cast(), 1) == 1
    }
}

#[test]
fn agents_cannot_kill_the_daemon_with_sigio() {
    require_vm();
    let mut daemon = FakeDaemon::start();
    let mut bystander = FakeDaemon::start();
    let mut setup = AgentSetup::new("sp-sigio", Decision::Allow, Mode::Enforce);
    setup
        .enforcer()
        .set_protection(daemon.0.id(), &[])
        .expect("set protection");
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let pid = daemon.pid();
    assert_eq!(
        errno_of(agent, || sigio_to(pid)),
        0,
        "the agent's own calls succeed; the kernel's SIGIO is what is refused"
    );
    daemon.assert_running("after an agent pointed SIGIO at the daemon");
    assert_signal_refused(&mut setup, &daemon, libc::SIGIO);
    // Nor can it write the daemon's /proc files (here: make it the OOM killer's first victim),
    // nor those of any other process outside its agent (see boundary.rs).
    let other = bystander.pid();
    let daemon_oom = c_path(Path::new(&format!("/proc/{pid}/oom_score_adj")));
    let other_oom = c_path(Path::new(&format!("/proc/{other}/oom_score_adj")));
    assert_eq!(
        errno_of(agent, || write_zero(&daemon_oom)),
        libc::EPERM,
        "an agent writing /proc/<daemon>/oom_score_adj"
    );
    assert_eq!(
        errno_of(agent, || write_zero(&other_oom)),
        libc::EPERM,
        "an agent writing another process's oom_score_adj"
    );
    // The same SIGIO against another process kills it: SIGIO works here, the test can fail.
    assert_eq!(errno_of(agent, || sigio_to(other)), 0);
    let status = bystander.0.wait().expect("wait for the bystander");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGIO),
        "SIGIO ended the bystander: {status}"
    );
    setup
        .enforcer()
        .set_protection(0, &[])
        .expect("reset protection");
}

#[test]
fn agents_cannot_ptrace_the_daemon() {
    require_vm();
    let mut daemon = FakeDaemon::start();
    let mut setup = AgentSetup::new("sp-ptrace", Decision::Allow, Mode::Enforce);
    let pid = daemon.pid();
    setup
        .enforcer()
        .set_protection(daemon.0.id(), &[])
        .expect("set protection");
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let null = ptr::null_mut::<libc::c_void>();
    for (request, name) in [
        (libc::PTRACE_ATTACH, "PTRACE_ATTACH"),
        (libc::PTRACE_SEIZE, "PTRACE_SEIZE"),
    ] {
        // SAFETY (closures): plain syscalls.
        let errno = errno_of(
            agent,
            || unsafe { libc::ptrace(request, pid, null, null) } == 0,
        );
        assert_eq!(errno, libc::EPERM, "{name} of the daemon from an agent");
        daemon.assert_running(&format!("after {name} from an agent"));
    }
    // Reading its memory goes through the same check (mm_access answers EACCES).
    let mem = c_path(Path::new(&format!("/proc/{pid}/mem")));
    let open_mem = || unsafe { libc::open(mem.as_ptr(), libc::O_RDONLY) } >= 0;
    assert_eq!(
        errno_of(agent, open_mem),
        libc::EACCES,
        "open /proc/daemon/mem from an agent"
    );
    let events = protection_events(&setup.drain_events());
    assert!(
        events
            .iter()
            .any(|&(op, ino, _)| op == event_op::PTRACE && ino == u64::from(daemon.0.id())),
        "a self-protection event names the daemon: {events:?}"
    );

    // From outside: seize (no stop; the tracer's exit detaches) and open its memory.
    assert_eq!(
        errno_of(None, || unsafe {
            libc::ptrace(libc::PTRACE_SEIZE, pid, null, null)
        } == 0),
        0,
        "PTRACE_SEIZE of the daemon from outside"
    );
    assert_eq!(
        errno_of(None, open_mem),
        0,
        "open /proc/daemon/mem from outside"
    );
    daemon.assert_running("after the tracer outside exited");
    setup
        .enforcer()
        .set_protection(0, &[])
        .expect("reset protection");
}

/// Opens `path` for writing and writes "0" (our own pid, for `cgroup.procs`).
fn write_zero(path: &CString) -> bool {
    // SAFETY: plain syscalls on a valid C string and a static buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
        fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1
    }
}

#[test]
fn agents_cannot_write_cgroup_files_on_any_cgroup2_mount() {
    require_vm();
    let setup = AgentSetup::new("sp-cgroup-write", Decision::Allow, Mode::Enforce);
    let other = TestCgroup::new("sp-other");
    // A second mount of the cgroup2 hierarchy, somewhere the path /sys/fs/cgroup says nothing.
    let dir = TestDir::new("sp-cgroup2-mount");
    let mnt = c_path(dir.path());
    // SAFETY: plain mount(2) with valid C strings.
    let mounted = unsafe {
        libc::mount(
            c"none".as_ptr(),
            mnt.as_ptr(),
            c"cgroup2".as_ptr(),
            0,
            ptr::null(),
        )
    };
    assert_eq!(
        mounted,
        0,
        "mount cgroup2: {}",
        std::io::Error::last_os_error()
    );
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let root = Path::new(CGROUP2_ROOT);
    let other_name = other.path().file_name().expect("cgroup name");
    let targets = [
        root.join("cgroup.procs"),
        other.path().join("cgroup.procs"),
        other.path().join("cgroup.threads"),
        setup.cgroup.path().join("cgroup.subtree_control"),
        setup.cgroup.path().join("cgroup.procs"),
        root.join("cgroup.subtree_control"),
        dir.path().join("cgroup.procs"),
        dir.path().join(other_name).join("cgroup.procs"),
    ];
    for target in &targets {
        let path = c_path(target);
        assert_eq!(
            errno_of(agent, || write_zero(&path)),
            libc::EPERM,
            "writing {} from an agent",
            target.display()
        );
    }
    // The same through a shell, as an agent would try it.
    let status = setup
        .cgroup
        .run(
            "/bin/sh",
            &[
                "-c",
                "exec 2>/dev/null; echo $$ > /sys/fs/cgroup/cgroup.procs",
            ],
        )
        .expect("run sh");
    assert!(
        !status.success(),
        "sh: echo $$ > cgroup.procs from an agent: {status}"
    );

    // From outside both mounts work (the child moves itself into `other`, then exits).
    for target in [
        other.path().join("cgroup.procs"),
        dir.path().join(other_name).join("cgroup.procs"),
    ] {
        let path = c_path(&target);
        assert_eq!(
            errno_of(None, || write_zero(&path)),
            0,
            "writing {} from outside",
            target.display()
        );
    }
    // SAFETY: plain umount(2).
    assert_eq!(unsafe { libc::umount2(mnt.as_ptr(), 0) }, 0, "umount");
}

#[test]
fn agents_cannot_mkdir_rmdir_or_rename_in_cgroupfs() {
    require_vm();
    let mut setup = AgentSetup::new("sp-cgroup-dirs", Decision::Allow, Mode::Enforce);
    let other = TestCgroup::new("sp-victim");
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let nested = c_path(&setup.cgroup.path().join("escape"));
    let top =
        c_path(&Path::new(CGROUP2_ROOT).join(format!("jit-sp-escape-{}", std::process::id())));
    let victim = c_path(other.path());
    let moved = c_path(&other.path().with_extension("moved"));
    // SAFETY (closures): plain syscalls on valid C strings.
    for (path, what) in [
        (&nested, "mkdir in its own cgroup"),
        (&top, "mkdir at the root"),
    ] {
        assert_eq!(
            errno_of(agent, || unsafe { libc::mkdir(path.as_ptr(), 0o755) } == 0),
            libc::EPERM,
            "{what} from an agent"
        );
    }
    assert_eq!(
        errno_of(agent, || unsafe { libc::rmdir(victim.as_ptr()) } == 0),
        libc::EPERM,
        "rmdir of another cgroup from an agent"
    );
    // cgroup2 refuses rename with EPERM by itself: the event shows jit refused it first.
    assert_eq!(
        errno_of(agent, || unsafe {
            libc::rename(victim.as_ptr(), moved.as_ptr())
        } == 0),
        libc::EPERM,
        "rename of another cgroup from an agent"
    );
    assert!(other.path().exists(), "the victim cgroup is still there");
    let events = setup.drain_events();
    let denied: Vec<u8> = protection_events(&events)
        .iter()
        .map(|&(op, ..)| op)
        .collect();
    assert_eq!(
        denied,
        vec![
            Op::Mkdir as u8,
            Op::Mkdir as u8,
            Op::Rmdir as u8,
            Op::Rename as u8
        ],
        "every attempt reported as self-protection"
    );
    // From outside.
    assert_eq!(
        errno_of(None, || unsafe { libc::mkdir(nested.as_ptr(), 0o755) } == 0),
        0,
        "mkdir from outside"
    );
    assert_eq!(
        errno_of(None, || unsafe { libc::rmdir(nested.as_ptr()) } == 0),
        0,
        "rmdir from outside"
    );
    assert_eq!(
        errno_of(None, || unsafe { libc::rmdir(victim.as_ptr()) } == 0),
        0,
        "rmdir from outside"
    );
    assert_eq!(
        errno_of(None, || unsafe { libc::mkdir(victim.as_ptr(), 0o755) } == 0),
        0,
        "mkdir again"
    );
    let _ = setup.drain_events();
    errno_of(
        None,
        || unsafe { libc::rename(victim.as_ptr(), moved.as_ptr()) } == 0,
    );
    assert!(
        protection_events(&setup.drain_events()).is_empty(),
        "nothing reported from outside"
    );
}

/// `bpf(BPF_MAP_CREATE)` of a one-entry array; the map fd is left to `_exit`.
fn bpf_map_create() -> bool {
    let mut attr = [0u32; 32];
    // map_type BPF_MAP_TYPE_ARRAY, key_size, value_size, max_entries.
    attr[..4].copy_from_slice(&[2, 4, 4, 1]);
    // SAFETY: bpf(2) with a zeroed attribute buffer of the size passed.
    unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), size_of_val(&attr)) >= 0 }
}

/// `bpf(BPF_PROG_LOAD)` of a socket filter `r0 = 0; exit`.
fn bpf_prog_load() -> bool {
    static INSNS: [u64; 2] = [0xb7, 0x95];
    static LICENSE: &[u8] = b"GPL\0";
    #[repr(C)]
    struct Attr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        rest: [u64; 12],
    }
    let attr = Attr {
        prog_type: 1,
        insn_cnt: 2,
        insns: INSNS.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        rest: [0; 12],
    };
    // SAFETY: bpf(2) with an attribute buffer of the size passed, pointing at statics.
    unsafe { libc::syscall(libc::SYS_bpf, 5, &raw const attr, size_of::<Attr>()) >= 0 }
}

#[test]
fn agents_cannot_call_bpf() {
    require_vm();
    let mut setup = AgentSetup::new("sp-bpf", Decision::Allow, Mode::Enforce);
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    assert_eq!(
        errno_of(agent, bpf_map_create),
        libc::EPERM,
        "BPF_MAP_CREATE from an agent"
    );
    assert_eq!(
        errno_of(agent, bpf_prog_load),
        libc::EPERM,
        "BPF_PROG_LOAD from an agent"
    );
    let denied = protection_events(&setup.drain_events());
    assert_eq!(
        denied,
        vec![(event_op::BPF, 0, 0), (event_op::BPF, 0, 5)],
        "both commands reported"
    );
    assert_eq!(
        errno_of(None, bpf_map_create),
        0,
        "BPF_MAP_CREATE from outside"
    );
    assert_eq!(
        errno_of(None, bpf_prog_load),
        0,
        "BPF_PROG_LOAD from outside"
    );
}

/// One file operation on the protected tree, by raw syscall.
#[derive(Clone, Copy, Debug)]
enum Act {
    Write,
    Create,
    Truncate,
    Chmod,
    Chown,
    Unlink,
    RenameWithin,
    RenameIn,
    RenameOut,
    Link,
    Symlink,
    Mkdir,
    Rmdir,
    RmdirProtectedDir,
    RenameParent,
}

const ACTS: [Act; 15] = [
    Act::Write,
    Act::Create,
    Act::Truncate,
    Act::Chmod,
    Act::Chown,
    Act::Unlink,
    Act::RenameWithin,
    Act::RenameIn,
    Act::RenameOut,
    Act::Link,
    Act::Symlink,
    Act::Mkdir,
    Act::Rmdir,
    Act::RmdirProtectedDir,
    Act::RenameParent,
];

/// `base/jit/policies` (protected, with `file` and the empty `sub` in it), `base/outside`.
struct Tree {
    base: TestDir,
}

impl Tree {
    fn new() -> Self {
        let base = TestDir::new("sp-protected");
        let tree = Self { base };
        fs::create_dir_all(tree.protected().join("sub")).unwrap();
        fs::write(tree.protected().join("file"), "policy").unwrap();
        fs::write(tree.base.path().join("outside"), "x").unwrap();
        tree
    }

    fn protected(&self) -> std::path::PathBuf {
        self.base.path().join("jit/policies")
    }

    /// The operation as a closure over prepared C strings.
    fn act(&self, act: Act) -> impl Fn() -> bool + use<> {
        let p = self.protected();
        let base = self.base.path().to_owned();
        let a = c_path(&p.join("file"));
        let (b, c) = match act {
            Act::Create => (c_path(&p.join("new")), c_path(&p)),
            Act::RenameWithin => (a.clone(), c_path(&p.join("renamed"))),
            Act::RenameIn => (c_path(&base.join("outside")), c_path(&p.join("moved-in"))),
            Act::RenameOut => (a.clone(), c_path(&base.join("moved-out"))),
            Act::Link => (a.clone(), c_path(&p.join("hardlink"))),
            Act::Symlink => (a.clone(), c_path(&p.join("symlink"))),
            Act::Mkdir => (c_path(&p.join("newdir")), a.clone()),
            Act::Rmdir => (c_path(&p.join("sub")), a.clone()),
            Act::RmdirProtectedDir => (c_path(&p), a.clone()),
            Act::RenameParent => (c_path(&base.join("jit")), c_path(&base.join("jit-moved"))),
            _ => (a.clone(), a.clone()),
        };
        // SAFETY (all arms): plain syscalls on valid C strings.
        move || unsafe {
            match act {
                Act::Write => {
                    let fd = libc::open(a.as_ptr(), libc::O_WRONLY);
                    fd >= 0 && libc::write(fd, b"evil".as_ptr().cast(), 4) == 4
                }
                Act::Create => libc::open(b.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644) >= 0,
                Act::Truncate => libc::truncate(a.as_ptr(), 0) == 0,
                Act::Chmod => libc::chmod(a.as_ptr(), 0o777) == 0,
                Act::Chown => libc::chown(a.as_ptr(), 1000, 1000) == 0,
                Act::Unlink => libc::unlink(a.as_ptr()) == 0,
                Act::RenameWithin | Act::RenameIn | Act::RenameOut | Act::RenameParent => {
                    libc::rename(b.as_ptr(), c.as_ptr()) == 0
                }
                Act::Link => libc::link(b.as_ptr(), c.as_ptr()) == 0,
                Act::Symlink => libc::symlink(b.as_ptr(), c.as_ptr()) == 0,
                Act::Mkdir => libc::mkdir(b.as_ptr(), 0o755) == 0,
                Act::Rmdir | Act::RmdirProtectedDir => libc::rmdir(b.as_ptr()) == 0,
            }
        }
    }
}

/// Every path under `dir` with the content of every file: what must not change.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Option<String>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            out.push((path, None));
        } else {
            let content = fs::read_to_string(&path).ok();
            out.push((path, content));
        }
    }
    out.sort();
    out
}

fn check_protected_paths(mode: Mode) {
    let mut setup = AgentSetup::new(&format!("sp-paths-{}", mode.name()), Decision::Allow, mode);
    // The policy allows everything there explicitly: self-protection must still win.
    for op in Op::ALL {
        setup.rule(op, "/tmp/", Decision::Allow);
    }
    for act in ACTS {
        let tree = Tree::new();
        let protected = tree.protected();
        if matches!(act, Act::RmdirProtectedDir) {
            // Empty, so that only jit can make the rmdir fail.
            fs::remove_file(protected.join("file")).unwrap();
            fs::remove_dir(protected.join("sub")).unwrap();
        }
        setup
            .enforcer()
            .set_protection(0, &[protected.as_path()])
            .expect("set protection");
        let before = snapshot(tree.base.path());
        let agent_cgroup = setup.cgroup.path().to_owned();
        let agent = Some(agent_cgroup.as_path());
        assert_eq!(
            errno_of(agent, tree.act(act)),
            libc::EPERM,
            "{act:?} on the protected directory from an agent ({})",
            mode.name()
        );
        assert_eq!(
            snapshot(tree.base.path()),
            before,
            "{act:?} changed nothing"
        );
        let events = setup.drain_events();
        let denial = events
            .iter()
            .find(|e| e.rule_id == SELF_PROTECTION_RULE_ID)
            .unwrap_or_else(|| panic!("{act:?}: no self-protection event"));
        assert_eq!(
            (denial.kind, denial.decision, denial.enforced),
            (
                EventKind::Decision as u8,
                Decision::Deny as u8,
                Decision::Deny as u8
            )
        );
        if matches!(act, Act::Write) {
            assert_eq!(denial.op, Op::Write as u8);
            assert_eq!(
                denial.path_bytes(),
                protected.join("file").as_os_str().as_encoded_bytes()
            );
        }
        // From outside the same operation works.
        assert_eq!(errno_of(None, tree.act(act)), 0, "{act:?} from outside");
    }
    // Beside a protected tree the agent's policy decides (allow).
    let tree = Tree::new();
    setup
        .enforcer()
        .set_protection(0, &[tree.protected().as_path()])
        .expect("set protection");
    let beside = c_path(&tree.base.path().join("outside"));
    assert_eq!(
        errno_of(Some(setup.cgroup.path()), || unsafe {
            libc::truncate(beside.as_ptr(), 0)
        } == 0),
        0,
        "truncate beside the protected directory from an agent"
    );
    setup
        .enforcer()
        .set_protection(0, &[])
        .expect("reset protection");
}

#[test]
fn protected_paths_refuse_every_file_op_in_enforce_mode() {
    require_vm();
    check_protected_paths(Mode::Enforce);
}

#[test]
fn protected_paths_refuse_every_file_op_in_shadow_mode() {
    require_vm();
    check_protected_paths(Mode::Shadow);
}

#[test]
fn a_sibling_sigcont_does_not_release_a_held_task() {
    require_vm();
    let dir = TestDir::new("sp-sibling");
    let tool = dir.install_true("held");
    let mut setup = AgentSetup::new("sp-sibling", Decision::Allow, Mode::Enforce);
    setup.rule(Op::Exec, &tool, Decision::Hold);
    let child = setup.cgroup.spawn(&tool);
    let (tid, request) = setup.wait_for_hold();
    wait_stopped(request.tgid);
    // A sibling in the same agent cgroup continues it, as an agent helping itself would.
    let pid = request.tgid.to_string();
    for _ in 0..3 {
        assert_ran(
            &setup.cgroup.run("/bin/kill", &["-CONT", &pid]),
            "sibling kill -CONT",
        );
        thread::sleep(Duration::from_millis(50));
    }
    wait_stopped(request.tgid);
    let (tid_again, still) = setup.wait_for_hold();
    assert_eq!(
        (tid_again, still.request_id),
        (tid, request.request_id),
        "the same request still waits"
    );
    assert!(!child.is_finished(), "execve has not returned");
    setup.approve(tid, &request);
    assert_ran(&setup.join(child), "approved after the sibling's SIGCONTs");
}

/// `mount(source, target, fstype, flags)`. Async-signal-safe.
fn mount(source: &CString, target: &CString, fstype: &CString, flags: libc::c_ulong) -> bool {
    // SAFETY: valid C strings; no data argument.
    unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            ptr::null(),
        ) == 0
    }
}

/// Clones the mount tree at `source` with `open_tree` and attaches it at `target` with
/// `move_mount` (the new mount API). Async-signal-safe.
fn move_tree_into(source: &CString, target: &CString) -> bool {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    // SAFETY: plain syscalls on valid C strings.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE,
        );
        fd >= 0
            && libc::syscall(
                libc::SYS_move_mount,
                fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            ) == 0
    }
}

#[test]
fn agents_cannot_change_how_paths_resolve() {
    require_vm();
    let dir = TestDir::new("sp-mount");
    let secret = dir.path().join("secret");
    let open = dir.path().join("open");
    let mounted = dir.path().join("mounted");
    for d in [&secret, &open, &mounted] {
        fs::create_dir(d).unwrap();
    }
    fs::write(secret.join("file"), b"secret").unwrap();
    let (c_secret, c_open, c_mounted) = (c_path(&secret), c_path(&open), c_path(&mounted));
    let (tmpfs, none, empty) = (
        CString::new("tmpfs").unwrap(),
        CString::new("none").unwrap(),
        CString::new("").unwrap(),
    );
    // A mount made from outside, for the agent to try to remove.
    assert!(mount(&none, &c_mounted, &tmpfs, 0), "tmpfs for the test");
    let mut setup = AgentSetup::new("sp-mount", Decision::Allow, Mode::Enforce);
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());

    let bind = || mount(&c_secret, &c_open, &empty, libc::MS_BIND);
    assert_eq!(
        errno_of(agent, bind),
        libc::EPERM,
        "bind mount from an agent"
    );
    assert!(!open.join("file").exists(), "nothing was bind-mounted");
    assert_eq!(
        errno_of(agent, || mount(&none, &c_open, &tmpfs, 0)),
        libc::EPERM,
        "tmpfs mount from an agent"
    );
    // SAFETY (closures below): plain syscalls on C strings built before the fork.
    assert_eq!(
        errno_of(agent, || unsafe { libc::umount2(c_mounted.as_ptr(), 0) }
            == 0),
        libc::EPERM,
        "umount from an agent"
    );
    assert_eq!(
        errno_of(agent, || unsafe { libc::chroot(c_secret.as_ptr()) } == 0),
        libc::EPERM,
        "chroot from an agent"
    );
    // pivot_root needs a mount namespace of its own; unsharing one is allowed, pivoting not.
    let pivot = || unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::syscall(libc::SYS_pivot_root, c_mounted.as_ptr(), c_mounted.as_ptr()) == 0
    };
    assert_eq!(
        errno_of(agent, pivot),
        libc::EPERM,
        "pivot_root from an agent"
    );
    // The new mount API: clone a tree with open_tree, attach it with move_mount.
    let move_tree = || move_tree_into(&c_secret, &c_open);
    assert_eq!(
        errno_of(agent, move_tree),
        libc::EPERM,
        "move_mount from an agent"
    );
    assert!(!open.join("file").exists(), "nothing was moved into place");
    let ops: Vec<u8> = protection_events(&setup.drain_events())
        .into_iter()
        .map(|(op, ..)| op)
        .collect();
    assert!(
        ops.contains(&event_op::MOUNT) && ops.contains(&event_op::CHROOT),
        "self-protection events for mount and chroot: {ops:?}"
    );

    // Outside agent cgroups all of it works.
    assert_eq!(errno_of(None, bind), 0, "bind mount from outside");
    assert!(open.join("file").exists());
    // SAFETY: plain syscalls.
    assert_eq!(
        errno_of(None, || unsafe { libc::umount2(c_open.as_ptr(), 0) } == 0),
        0,
        "umount from outside"
    );
    assert_eq!(
        errno_of(None, || unsafe { libc::chroot(c_secret.as_ptr()) } == 0),
        0,
        "chroot from outside"
    );
    assert_eq!(
        errno_of(None, || unsafe { libc::umount2(c_mounted.as_ptr(), 0) }
            == 0),
        0,
        "umount of the test's tmpfs from outside"
    );
}
