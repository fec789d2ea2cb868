//! The kernel boundary (issue 11), on the real hooks: a process in an agent cgroup cannot reach
//! by another road what its policy refuses, nor leave its confinement, nor use other processes
//! or the kernel itself as tools. Each test makes the real syscalls from a process inside an
//! agent cgroup (as root), asserts the errno, that nothing changed, and the audit event; the
//! same calls from outside agent cgroups still work. Attackers' variants (other flags, other
//! syscalls reaching the same kernel path) are tried alongside.
//!
//! - code that never passes `execve`: `mmap`/`mprotect` with `PROT_EXEC` of a file is decided
//!   as `exec` of that file (`ld.so DENIED`, `LD_PRELOAD`, `dlopen`, `pkey_mprotect`,
//!   `READ_IMPLIES_EXEC`, memfd code under an exec allowlist), anonymous JIT memory is not;
//! - a `#!` interpreter is decided by its own `exec` rule, a hold there is a deny;
//! - paths that are not the path the system sees fail closed: detached trees (`open_tree`,
//!   `fsmount`), lazily unmounted mounts, other mount namespaces, escaped bind-mount dentries,
//!   too deep or too long paths;
//! - truncation without a write open (`O_RDONLY|O_TRUNC`, `ftruncate`) is decided as `truncate`;
//! - `clone3(CLONE_INTO_CGROUP)` is refused;
//! - other processes: ptrace-style access and resource or scheduling changes reach only the
//!   agent's own processes;
//! - the kernel's loaders (`init_module`, `finit_module`, `kexec_load`, `kexec_file_load`);
//! - device nodes are decided as `device`, extended attributes, ACLs, inode flags and
//!   timestamps as `metadata`.
//!
//! Differences between the kernels (6.1 routes truncation through `path_truncate`, has no tmpfs
//! `user.*` xattrs) are printed, not skipped: the refusal is asserted on both.
use std::{
    ffi::{CStr, CString},
    fs,
    io::Write as _,
    os::unix::{
        ffi::OsStrExt as _,
        fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        process::{CommandExt as _, ExitStatusExt as _},
    },
    path::{Path, PathBuf},
    process::{Command, Output},
    ptr,
    sync::atomic::{AtomicU64, Ordering},
};

use jit_common::{
    event::{EVENT_FLAG_MAPPING, EVENT_FLAG_PATH_UNRESOLVED, Event, EventKind},
    policy::{AgentConfig, Decision, Mode, Op},
    protect::{SELF_PROTECTION_RULE_ID, event_op},
};
use jit_tests::{
    AgentSetup, CGROUP2_ROOT, ExistingCgroup, ForkedChild, TestCgroup, TestDir, assert_eperm,
    assert_ran, c_path, daemon::JITCTL, errno_of, join_cgroup, require_vm,
};

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// Prints a note that passing tests still show (libtest captures only `print!`/`eprint!`): for
/// what a kernel cannot do, so that nothing is skipped silently. The note lands after libtest's
/// `test NAME ... `; repeating that prefix after it keeps the test's own `ok` or `FAILED` on a
/// line of its own kind, which is what xtask counts.
fn note(msg: &str) {
    let name = std::thread::current().name().unwrap_or("?").to_owned();
    let _ = write!(
        std::io::stderr().lock(),
        "boundary NOTE: {msg}\ntest {name} ... "
    );
}

/// `(major, minor)` of the running kernel.
fn kernel_version() -> (u32, u32) {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release
        .trim()
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Sets `errno` to `code` and returns `false`: how a forked child's closure reports a failure
/// of a step that must not fail (codes above 200 are the test's own).
fn fail_with(code: i32) -> bool {
    // SAFETY: errno is thread-local and always writable.
    unsafe { *libc::__errno_location() = code };
    false
}

/// One attempt of an attacker: what it is, and the syscalls (async-signal-safe).
type Attempt = (&'static str, Box<dyn Fn() -> bool>);

/// Whether a raw syscall's return value means success.
fn ok(ret: libc::c_long) -> bool {
    ret >= 0
}

fn describe(e: &Event) -> String {
    format!(
        "kind {} op {} decision {} enforced {} rule {} flags {:#x} ino {} name {} path {:?}",
        e.kind,
        e.op,
        e.decision,
        e.enforced,
        e.rule_id,
        e.flags,
        e.file.ino,
        e.file.name,
        String::from_utf8_lossy(e.path_bytes())
    )
}

/// The first of `events` that `pred` accepts; fails listing every event otherwise.
fn find_event<'a>(events: &'a [Event], what: &str, pred: impl Fn(&Event) -> bool) -> &'a Event {
    events.iter().find(|e| pred(e)).unwrap_or_else(|| {
        let all: Vec<String> = events.iter().map(describe).collect();
        panic!("{what}: no such event among {all:#?}")
    })
}

/// Asserts a decision event of `op` on `path`: denied by rule `rule_id` (or by self-protection
/// or the default when that is the id passed), enforced as `enforced`, with `flags` set.
fn assert_decision(
    events: &[Event],
    op: Op,
    path: &Path,
    rule_id: u32,
    (decision, enforced): (Decision, Decision),
    flags: u32,
    what: &str,
) {
    let event = find_event(events, what, |e| {
        e.op == op as u8 && e.path_bytes() == path.as_os_str().as_bytes()
    });
    assert_eq!(
        (
            event.kind,
            event.decision,
            event.enforced,
            event.rule_id,
            event.flags & flags
        ),
        (
            EventKind::Decision as u8,
            decision as u8,
            enforced as u8,
            rule_id,
            flags
        ),
        "{what}: {}",
        describe(event)
    );
}

/// Asserts a self-protection denial of kind `op` (an `event_op` code), naming `target` (a tgid)
/// when given.
fn assert_protection(events: &[Event], op: u8, target: Option<u32>, what: &str) {
    let event = find_event(events, what, |e| {
        e.rule_id == SELF_PROTECTION_RULE_ID
            && e.op == op
            && target.is_none_or(|t| e.file.ino == u64::from(t))
    });
    assert_eq!(
        (event.kind, event.decision, event.enforced),
        (
            EventKind::Decision as u8,
            Decision::Deny as u8,
            Decision::Deny as u8
        ),
        "{what}: {}",
        describe(event)
    );
}

/// Asserts a decision of `op` that failed closed: enforced as a deny, flagged unresolved.
fn assert_unresolved(events: &[Event], op: Op, what: &str) {
    let event = find_event(events, what, |e| {
        e.op == op as u8 && e.flags & EVENT_FLAG_PATH_UNRESOLVED != 0
    });
    assert_eq!(
        (event.kind, event.enforced),
        (EventKind::Decision as u8, Decision::Deny as u8),
        "{what}: {}",
        describe(event)
    );
}

/// A process forked from the test that waits in `pause()` until dropped (killed): a target
/// for the other-process tests, with the test's own address space (so the address of a static
/// is valid in it). `prepare` runs in the child after it joined `cgroup`.
struct Sleeper(libc::pid_t);

impl Sleeper {
    fn start(cgroup: Option<&Path>, prepare: fn() -> bool) -> Self {
        let procs = cgroup.map(|c| c_path(&c.join("cgroup.procs")));
        let mut fds = [0; 2];
        // SAFETY: a pipe of our own.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        // SAFETY: the child makes async-signal-safe calls only and never returns.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => unsafe {
                libc::close(fds[0]);
                let joined = procs.as_ref().is_none_or(|p| join_cgroup(p).is_ok());
                if !joined || !prepare() {
                    libc::_exit(200);
                }
                libc::write(fds[1], b"r".as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            },
            pid => {
                // SAFETY: our pipe; the read returns 0 if the child died before it was ready.
                let ready = unsafe {
                    libc::close(fds[1]);
                    let mut byte = 0u8;
                    let n = libc::read(fds[0], (&raw mut byte).cast(), 1);
                    libc::close(fds[0]);
                    n
                };
                let sleeper = Self(pid);
                assert_eq!(ready, 1, "the sleeper {pid} did not get ready");
                sleeper
            }
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.0
    }

    fn tgid(&self) -> u32 {
        self.0.cast_unsigned()
    }

    /// Fails unless it is still there, sleeping.
    fn assert_alive(&self, what: &str) {
        let state = jit_tests::process_state(self.tgid());
        assert_eq!(state, 'S', "{what}: the target's state");
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, ptr::null_mut(), 0);
        }
    }
}

/// Runs `program args` with `env` in the cgroup `cgroup` (or outside for `None`) and collects
/// its output.
fn output_in(cgroup: Option<&Path>, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).envs(env.iter().copied());
    if let Some(cgroup) = cgroup {
        let procs = c_path(&cgroup.join("cgroup.procs"));
        // SAFETY: join_cgroup is async-signal-safe; the string was built before.
        unsafe {
            cmd.pre_exec(move || join_cgroup(&procs));
        }
    }
    cmd.output()
        .unwrap_or_else(|err| panic!("run {}: {err}", program.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `open(path, flags)` then closes; for the closures of `errno_of`.
fn open_ok(path: &CString, flags: libc::c_int) -> bool {
    // SAFETY: plain syscalls on a valid C string.
    unsafe {
        let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644);
        fd >= 0 && libc::close(fd) == 0
    }
}

/// `openat(dir, name, flags)`; the descriptor is left to `_exit`.
fn openat_ok(dir: libc::c_int, name: &CStr, flags: libc::c_int) -> bool {
    // SAFETY: plain syscall on a valid C string.
    unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, 0o644) >= 0 }
}

// ---------------------------------------------------------------------------------------------
// Code that never passes execve

/// The dynamic loader, as the test binary's own `PT_INTERP` names it (copied into the VM).
const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";

/// A shared library the test binary itself has loaded (so it exists in the VM): `libgcc_s`.
fn a_library() -> PathBuf {
    let maps = fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.contains("libgcc_s"))
        .map(PathBuf::from)
        .expect("libgcc_s is mapped by the test binary")
}

/// `dir/denied` and `dir/allowed`, each with `lib.so` (a copy of a real shared library) and
/// `prog` (a copy of the dynamically linked `jitctl`).
struct CodeTree {
    dir: TestDir,
}

impl CodeTree {
    fn new(name: &str) -> Self {
        let dir = TestDir::new(name);
        let library = a_library();
        for sub in ["denied", "allowed"] {
            let d = dir.path().join(sub);
            fs::create_dir_all(&d).unwrap();
            fs::copy(&library, d.join("lib.so")).unwrap();
            fs::copy(JITCTL, d.join("prog")).unwrap();
        }
        Self { dir }
    }

    fn denied(&self) -> PathBuf {
        self.dir.path().join("denied")
    }

    fn allowed(&self) -> PathBuf {
        self.dir.path().join("allowed")
    }
}

/// Opens `path` read-only and maps its first page with `prot` and `flags`.
fn map_file(path: &CString, prot: libc::c_int, flags: libc::c_int) -> bool {
    // SAFETY: plain syscalls; the mapping is left to `_exit`.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return fail_with(201);
        }
        libc::mmap(ptr::null_mut(), 4096, prot, flags, fd, 0) != libc::MAP_FAILED
    }
}

/// Maps `path` readable only (which must work), then asks for `PROT_EXEC` with `mprotect`
/// (or `pkey_mprotect` with pkey -1, the same kernel path).
fn map_then_protect_exec(path: &CString, pkey: bool) -> bool {
    // SAFETY: plain syscalls on our own mapping.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return fail_with(201);
        }
        let addr = libc::mmap(
            ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0,
        );
        if addr == libc::MAP_FAILED {
            return fail_with(202);
        }
        let prot = libc::PROT_READ | libc::PROT_EXEC;
        if pkey {
            ok(libc::syscall(libc::SYS_pkey_mprotect, addr, 4096, prot, -1))
        } else {
            libc::mprotect(addr, 4096, prot) == 0
        }
    }
}

/// With `READ_IMPLIES_EXEC` set, a `PROT_READ` map (or `mprotect`) of `path` is executable:
/// the kernel adds `PROT_EXEC` itself.
fn map_read_implies_exec(path: &CString, via_mprotect: bool) -> bool {
    const READ_IMPLIES_EXEC: libc::c_ulong = 0x040_0000;
    // SAFETY: personality(2) on ourselves, then plain syscalls.
    unsafe {
        if libc::personality(READ_IMPLIES_EXEC) == -1 {
            return fail_with(203);
        }
        if via_mprotect {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            let addr = libc::mmap(
                ptr::null_mut(),
                4096,
                libc::PROT_NONE,
                libc::MAP_PRIVATE,
                fd,
                0,
            );
            if fd < 0 || addr == libc::MAP_FAILED {
                return fail_with(202);
            }
            libc::mprotect(addr, 4096, libc::PROT_READ) == 0
        } else {
            map_file(path, libc::PROT_READ, libc::MAP_PRIVATE)
        }
    }
}

/// Anonymous executable memory, as a JIT compiler makes it.
fn map_anonymous_exec() -> bool {
    // SAFETY: a fresh anonymous mapping.
    unsafe {
        libc::mmap(
            ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        ) != libc::MAP_FAILED
    }
}

/// `dlopen(path)`; when it fails, sets errno to `EPERM` if `dlerror` says the loader was
/// refused ("Operation not permitted" or "failed to map segment"), to 204 otherwise.
fn dlopen_ok(path: &CString) -> bool {
    // SAFETY: dlopen/dlerror on a valid C string, comparisons without allocating.
    unsafe {
        if !libc::dlopen(path.as_ptr(), libc::RTLD_NOW).is_null() {
            return true;
        }
        let err = libc::dlerror();
        let refused = !err.is_null()
            && (!libc::strstr(err, c"Operation not permitted".as_ptr()).is_null()
                || !libc::strstr(err, c"failed to map segment".as_ptr()).is_null());
        fail_with(if refused { libc::EPERM } else { 204 })
    }
}

#[test]
fn executable_mappings_of_a_denied_file_are_refused() {
    require_vm();
    let tree = CodeTree::new("map");
    let mut setup = AgentSetup::new("map", Decision::Allow, Mode::Enforce);
    let rule = setup.rule(
        Op::Exec,
        &format!("{}/", tree.denied().display()),
        Decision::Deny,
    );
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let lib_path = tree.denied().join("lib.so");
    let lib = c_path(&lib_path);
    let allowed = c_path(&tree.allowed().join("lib.so"));
    let (rx, r, x) = (
        libc::PROT_READ | libc::PROT_EXEC,
        libc::PROT_READ,
        libc::PROT_EXEC,
    );
    for (what, prot, flags) in [
        ("PROT_READ|PROT_EXEC, MAP_PRIVATE", rx, libc::MAP_PRIVATE),
        ("PROT_EXEC, MAP_SHARED", x, libc::MAP_SHARED),
        (
            "PROT_READ|PROT_WRITE|PROT_EXEC, MAP_PRIVATE",
            rx | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
        ),
    ] {
        assert_eq!(
            errno_of(agent, || map_file(&lib, prot, flags)),
            libc::EPERM,
            "mmap({what}) of a denied file from an agent"
        );
    }
    assert_eq!(
        errno_of(agent, || map_then_protect_exec(&lib, false)),
        libc::EPERM,
        "mprotect(PROT_EXEC) of a PROT_READ map of a denied file from an agent"
    );
    assert_eq!(
        errno_of(agent, || map_then_protect_exec(&lib, true)),
        libc::EPERM,
        "pkey_mprotect(PROT_EXEC) of a denied file from an agent"
    );
    assert_eq!(
        errno_of(agent, || map_read_implies_exec(&lib, false)),
        libc::EPERM,
        "mmap(PROT_READ) under READ_IMPLIES_EXEC (executable) of a denied file from an agent"
    );
    assert_eq!(
        errno_of(agent, || map_read_implies_exec(&lib, true)),
        libc::EPERM,
        "mprotect(PROT_READ) under READ_IMPLIES_EXEC of a denied file from an agent"
    );
    assert_eq!(
        errno_of(agent, || dlopen_ok(&lib)),
        libc::EPERM,
        "dlopen of a denied library from an agent (dlerror names the refusal)"
    );
    let events = setup.drain_events();
    assert_decision(
        &events,
        Op::Exec,
        &lib_path,
        rule,
        (Decision::Deny, Decision::Deny),
        EVENT_FLAG_MAPPING,
        "the refused mapping is reported as an exec of the file, flagged as a mapping",
    );

    // Not executable, not a denied file, or not a file at all: nothing to decide.
    assert_eq!(
        errno_of(agent, || map_file(&lib, r, libc::MAP_PRIVATE)),
        0,
        "mmap(PROT_READ) of a denied file from an agent"
    );
    assert_eq!(
        errno_of(agent, map_anonymous_exec),
        0,
        "anonymous PROT_EXEC memory (a JIT) from an agent"
    );
    assert_eq!(
        errno_of(agent, || map_file(&allowed, rx, libc::MAP_PRIVATE)),
        0,
        "mmap(PROT_EXEC) of an allowed file from an agent"
    );
    assert_eq!(
        errno_of(agent, || map_then_protect_exec(&allowed, false)),
        0,
        "mprotect(PROT_EXEC) of an allowed file from an agent"
    );
    assert_eq!(
        errno_of(agent, || dlopen_ok(&allowed)),
        0,
        "dlopen of an allowed library from an agent"
    );

    // Outside agent cgroups the denied file maps as before.
    assert_eq!(errno_of(None, || map_file(&lib, rx, libc::MAP_PRIVATE)), 0);
    assert_eq!(errno_of(None, || map_then_protect_exec(&lib, false)), 0);
    assert_eq!(errno_of(None, || dlopen_ok(&lib)), 0, "dlopen from outside");
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one class of attack: its variants, the allowed cases and the outside check together"
)]
fn the_loader_cannot_run_or_preload_a_denied_file() {
    require_vm();
    assert!(
        Path::new(LD_SO).exists(),
        "{LD_SO} is not in the VM: the initramfs must carry the test binary's loader"
    );
    let tree = CodeTree::new("ldso");
    let mut setup = AgentSetup::new("ldso", Decision::Allow, Mode::Enforce);
    let rule = setup.rule(
        Op::Exec,
        &format!("{}/", tree.denied().display()),
        Decision::Deny,
    );
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let version = env!("CARGO_PKG_VERSION");
    let (denied_prog, allowed_prog) = (tree.denied().join("prog"), tree.allowed().join("prog"));
    let denied_lib = tree.denied().join("lib.so");
    let ld_so = Path::new(LD_SO);

    // The denied program run by the loader: the loader's mmap of it is refused.
    let out = output_in(
        agent,
        ld_so,
        &[denied_prog.to_str().unwrap(), "--version"],
        &[],
    );
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(127),
        "ld.so DENIED from an agent: the loader fails (stderr {stderr:?})"
    );
    assert!(
        !text(&out.stdout).contains(version),
        "ld.so DENIED from an agent: the program did not run"
    );
    assert!(
        stderr.contains("failed to map segment") || stderr.contains("Operation not permitted"),
        "ld.so says why: {stderr:?}"
    );
    let events = setup.drain_events();
    assert_decision(
        &events,
        Op::Exec,
        &denied_prog,
        rule,
        (Decision::Deny, Decision::Deny),
        EVENT_FLAG_MAPPING,
        "ld.so DENIED reported as a mapping of DENIED",
    );

    // LD_PRELOAD and --preload of a denied library: the loader refuses it and says so (glibc
    // goes on without it, as it does for any library it cannot preload).
    for (what, args, env) in [
        (
            "LD_PRELOAD",
            vec!["--version"],
            vec![("LD_PRELOAD", denied_lib.to_str().unwrap())],
        ),
        (
            "ld.so --preload",
            vec![
                "--preload",
                denied_lib.to_str().unwrap(),
                allowed_prog.to_str().unwrap(),
                "--version",
            ],
            vec![],
        ),
    ] {
        let program = if env.is_empty() {
            ld_so
        } else {
            allowed_prog.as_path()
        };
        let out = output_in(agent, program, &args, &env);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("cannot be preloaded"),
            "{what} of a denied library from an agent: the loader refused it ({:?}, stderr {stderr:?})",
            out.status
        );
    }
    assert_decision(
        &setup.drain_events(),
        Op::Exec,
        &denied_lib,
        rule,
        (Decision::Deny, Decision::Deny),
        EVENT_FLAG_MAPPING,
        "the preloaded library reported as a mapping",
    );

    // Allowed programs run through the loader; from outside the denied one runs too.
    let out = output_in(
        agent,
        ld_so,
        &[allowed_prog.to_str().unwrap(), "--version"],
        &[],
    );
    assert!(
        out.status.success() && text(&out.stdout).contains(version),
        "ld.so ALLOWED from an agent: {:?} {}",
        out.status,
        text(&out.stderr)
    );
    let out = output_in(
        None,
        ld_so,
        &[denied_prog.to_str().unwrap(), "--version"],
        &[("LD_PRELOAD", denied_lib.to_str().unwrap())],
    );
    assert!(
        out.status.success()
            && text(&out.stdout).contains(version)
            && !text(&out.stderr).contains("cannot be preloaded"),
        "ld.so DENIED with LD_PRELOAD from outside: {:?} {}",
        out.status,
        text(&out.stderr)
    );
}

/// A memfd with `data` in it; the descriptor is left to `_exit`.
fn memfd_with(data: &[u8]) -> libc::c_int {
    // SAFETY: plain syscalls on our own descriptor and a valid buffer.
    unsafe {
        let fd = libc::memfd_create(c"code".as_ptr(), 0);
        if fd >= 0 && libc::write(fd, data.as_ptr().cast(), data.len()) == data.len().cast_signed()
        {
            fd
        } else {
            -1
        }
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one class of attack: its variants, the allowed cases and the outside check together"
)]
fn an_exec_allowlist_covers_the_loader_and_refuses_memfd_and_shm_code() {
    require_vm();
    let dir = TestDir::new("allowlist");
    let prog = dir.path().join("bin").join("prog");
    fs::create_dir_all(prog.parent().unwrap()).unwrap();
    fs::copy(JITCTL, &prog).unwrap();
    let lib_copy = dir.path().join("lib.so");
    fs::copy(a_library(), &lib_copy).unwrap();
    let busybox = fs::read("/bin/busybox").expect("read busybox");
    let mut setup = AgentSetup::new("allowlist", Decision::Allow, Mode::Enforce);
    // An exec allowlist: everything else is refused.
    let deny_all = setup.rule(Op::Exec, "/", Decision::Deny);
    let bin = format!("{}/", prog.parent().unwrap().display());
    setup.rule(Op::Exec, &bin, Decision::Allow);
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());

    // Without the loader and the libraries in the list, a dynamically linked program dies in
    // execve after the point of no return (the kernel cannot map its interpreter).
    let out = output_in(agent, &prog, &["--version"], &[]);
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "a program whose loader the allowlist does not cover must not run: {:?}",
        out.status
    );
    note(&format!(
        "a dynamic program without its loader in the exec allowlist ends with {:?} (signal {:?})",
        out.status.code(),
        out.status.signal()
    ));
    assert_decision(
        &setup.drain_events(),
        Op::Exec,
        Path::new(LD_SO),
        deny_all,
        (Decision::Deny, Decision::Deny),
        EVENT_FLAG_MAPPING,
        "the interpreter mapped by execve is decided (and reported) as a mapping",
    );

    // With them (Debian's layout, plus the VM's /lib), it runs.
    for lib in ["/lib/", "/lib64/", "/usr/lib/"] {
        setup.rule(Op::Exec, lib, Decision::Allow);
    }
    let out = output_in(agent, &prog, &["--version"], &[]);
    assert!(
        out.status.success(),
        "with the loader and libraries allowed the program runs: {:?} {}",
        out.status,
        text(&out.stderr)
    );
    let lib = c_path(&lib_copy);
    assert_eq!(
        errno_of(agent, || dlopen_ok(&lib)),
        libc::EPERM,
        "dlopen of a library outside the allowlist"
    );
    assert_eq!(
        errno_of(agent, map_anonymous_exec),
        0,
        "anonymous executable memory under an allowlist"
    );

    // A System V shared memory segment attached executable (SHM_EXEC) maps a file too.
    let shm_exec = || {
        // SAFETY: a private segment of our own, removed right after the attempt.
        unsafe {
            let id = libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600);
            if id < 0 {
                return fail_with(210);
            }
            let attached = libc::shmat(id, ptr::null(), libc::SHM_EXEC);
            let errno = *libc::__errno_location();
            libc::shmctl(id, libc::IPC_RMID, ptr::null_mut());
            if attached as isize == -1 {
                *libc::__errno_location() = errno;
                return false;
            }
            libc::shmdt(attached);
            true
        }
    };
    assert_eq!(
        errno_of(agent, shm_exec),
        libc::EPERM,
        "shmat(SHM_EXEC) under an exec allowlist"
    );
    assert_eq!(errno_of(None, shm_exec), 0, "shmat(SHM_EXEC) from outside");

    // Code written into a memfd: neither mapped executable nor executed.
    let memfd_map = || {
        let fd = memfd_with(&busybox);
        fd >= 0
            // SAFETY: mapping our own memfd.
            && unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE,
                    fd,
                    0,
                )
            } != libc::MAP_FAILED
    };
    assert_eq!(
        errno_of(agent, memfd_map),
        libc::EPERM,
        "mmap(PROT_EXEC) of a memfd under an exec allowlist"
    );
    let memfd_exec = setup.cgroup.run_exec(move || {
        let fd = memfd_with(&busybox);
        let argv = [c"true".as_ptr(), ptr::null()];
        let envp = [ptr::null::<libc::c_char>()];
        // SAFETY: execveat on our own memfd with NULL-terminated arrays of static strings.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd,
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
        }
        Err(std::io::Error::last_os_error())
    });
    assert_eperm(&memfd_exec, "execveat of a memfd under an exec allowlist");
}

// ---------------------------------------------------------------------------------------------
// #! interpreters

#[test]
fn a_script_interpreter_is_decided_by_its_own_exec_rule() {
    require_vm();
    let dir = TestDir::new("shebang");
    let busybox = fs::canonicalize("/bin/busybox").unwrap();
    let mut scripts = Vec::new();
    for case in ["denied", "held", "free"] {
        let interp = dir.path().join(case).join("sh");
        fs::create_dir_all(interp.parent().unwrap()).unwrap();
        fs::copy(&busybox, &interp).unwrap();
        let script = dir.path().join(format!("{case}.sh"));
        fs::write(&script, format!("#!{}\nexit 0\n", interp.display())).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        // A script whose interpreter is the script above: the kernel follows up to 4 levels.
        let nested = dir.path().join(format!("{case}-nested.sh"));
        fs::write(&nested, format!("#!{}\n", script.display())).unwrap();
        fs::set_permissions(&nested, fs::Permissions::from_mode(0o755)).unwrap();
        scripts.push((interp, script, nested));
    }
    let [denied, held, free] = <[_; 3]>::try_from(scripts).unwrap();
    let mut setup = AgentSetup::new("shebang", Decision::Allow, Mode::Enforce);
    let deny_rule = setup.rule(Op::Exec, denied.0.to_str().unwrap(), Decision::Deny);
    let hold_rule = setup.rule(Op::Exec, held.0.to_str().unwrap(), Decision::Hold);

    // The scripts themselves are allowed (the default); their interpreters decide.
    for script in [&denied.1, &denied.2] {
        assert_eperm(
            &setup.cgroup.run(script.to_str().unwrap(), &[]),
            &format!("{} with a denied interpreter", script.display()),
        );
    }
    assert_decision(
        &setup.drain_events(),
        Op::Exec,
        &denied.0,
        deny_rule,
        (Decision::Deny, Decision::Deny),
        0,
        "the denied interpreter",
    );
    // A held interpreter at the #! pass: enforced as a deny, no hold made.
    for script in [&held.1, &held.2] {
        assert_eperm(
            &setup.cgroup.run(script.to_str().unwrap(), &[]),
            &format!("{} with a held interpreter", script.display()),
        );
        assert!(
            setup.pending().is_empty(),
            "no hold was made at the #! pass"
        );
    }
    assert_decision(
        &setup.drain_events(),
        Op::Exec,
        &held.0,
        hold_rule,
        (Decision::Hold, Decision::Deny),
        0,
        "the held interpreter, enforced as a deny",
    );
    // Run directly the held interpreter is a real hold.
    let agent = ExistingCgroup(setup.cgroup.path().to_owned());
    let child = agent.spawn_with_args(held.0.to_str().unwrap(), &["-c", "exit 0"]);
    let (tid, request) = setup.wait_for_hold();
    assert_eq!(request.op, Op::Exec as u8);
    setup.approve(tid, &request);
    assert_ran(
        &setup.join(child),
        "the held interpreter run directly, approved",
    );

    // Other interpreters run; outside agent cgroups every script runs.
    for script in [&free.1, &free.2] {
        assert_ran(
            &setup.cgroup.run(script.to_str().unwrap(), &[]),
            "a script with an allowed interpreter",
        );
    }
    let outside = TestCgroup::new("shebang-outside");
    for script in [&denied.1, &held.1, &held.2] {
        assert_ran(
            &outside.run(script.to_str().unwrap(), &[]),
            &format!("{} from outside", script.display()),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Paths that are not the path the system sees

const OPEN_TREE_CLONE: libc::c_uint = 1;

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE)`: a detached copy of the mount at `path`.
fn open_tree_clone(path: &CString) -> libc::c_int {
    // SAFETY: plain syscall on a valid C string.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC.cast_unsigned(),
        )
    };
    i32::try_from(fd).unwrap_or(-1)
}

/// `dir/open/file`, `dir/protected/file`, `dir/policies/p.toml` (each "data"), `dir/bin/true`.
struct MountTree {
    dir: TestDir,
}

impl MountTree {
    fn new(name: &str) -> Self {
        let dir = TestDir::new(name);
        for sub in ["open", "protected", "policies"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        fs::write(dir.path().join("open/file"), "data").unwrap();
        fs::write(dir.path().join("protected/file"), "data").unwrap();
        fs::write(dir.path().join("policies/p.toml"), "data").unwrap();
        let _ = dir.install_true("bin");
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Fails unless the three files still hold "data" and nothing was created.
    fn assert_unchanged(&self, what: &str) {
        for rel in ["open/file", "protected/file", "policies/p.toml"] {
            assert_eq!(
                fs::read_to_string(self.path(rel)).unwrap(),
                "data",
                "{what}: {rel} unchanged"
            );
        }
        for rel in ["open/new", "protected/new"] {
            assert!(!self.path(rel).exists(), "{what}: {rel} was not created");
        }
    }
}

/// Opens `rel` below the detached tree of `root` for writing (with `O_CREAT` when `create`)
/// and writes to it.
fn write_via_tree(root: &CString, rel: &CStr, create: bool) -> bool {
    let tree = open_tree_clone(root);
    if tree < 0 {
        return fail_with(205);
    }
    let flags = libc::O_WRONLY | if create { libc::O_CREAT } else { 0 };
    // SAFETY: plain syscalls.
    unsafe {
        let fd = libc::openat(tree, rel.as_ptr(), flags | libc::O_CLOEXEC, 0o644);
        fd >= 0 && libc::write(fd, b"evil".as_ptr().cast(), 4) == 4
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one class of attack: its variants, the allowed cases and the outside check together"
)]
fn writes_and_execs_through_a_detached_tree_fail_closed() {
    require_vm();
    let tree = MountTree::new("detached");
    let mut setup = AgentSetup::new("detached", Decision::Allow, Mode::Enforce);
    let protected = format!("{}/", tree.path("protected").display());
    setup.rule(Op::Write, &protected, Decision::Deny);
    setup.rule(Op::Create, &protected, Decision::Deny);
    setup
        .enforcer()
        .set_protection(0, &[tree.path("policies").as_path()])
        .expect("set protection");
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let root = c_path(tree.dir.path());

    // Cloning the tree is not refused (no hook sees it); what is done through it is.
    let clone_only = || open_tree_clone(&root) >= 0;
    let cloned = errno_of(agent, clone_only);
    if cloned != 0 {
        note(&format!(
            "open_tree(OPEN_TREE_CLONE) itself is refused for agents (errno {cloned})"
        ));
    }
    for (rel, create) in [
        (c"protected/file", false),
        (c"protected/new", true),
        (c"policies/p.toml", false),
        // Allowed at its real path: through the detached tree it has none, so it fails closed.
        (c"open/file", false),
        (c"open/new", true),
    ] {
        assert_eq!(
            errno_of(agent, || write_via_tree(&root, rel, create)),
            libc::EPERM,
            "write to {rel:?} through a detached tree from an agent"
        );
    }
    tree.assert_unchanged("after writes through a detached tree");
    assert_unresolved(
        &setup.drain_events(),
        Op::Write,
        "a write on a detached mount fails closed",
    );
    // A program in the tree (allowed at its real path) does not run from it.
    let exec = setup.cgroup.run_exec(move || {
        let tree = open_tree_clone(&root);
        let argv = [c"true".as_ptr(), ptr::null()];
        let envp = [ptr::null::<libc::c_char>()];
        // SAFETY: execveat with NULL-terminated arrays of static strings.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                tree,
                c"bin/true".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                0,
            );
        }
        Err(std::io::Error::last_os_error())
    });
    assert_eperm(&exec, "exec from a detached tree");
    assert_unresolved(
        &setup.drain_events(),
        Op::Exec,
        "an exec on a detached mount fails closed",
    );
    assert_ran(
        &setup.exec(tree.path("bin/true").to_str().unwrap()),
        "the same program at its real path",
    );

    // A fresh anonymous mount (fsopen/fsmount) is just as pathless.
    let fsmount_write = || {
        // SAFETY: plain syscalls with valid C strings; descriptors left to _exit.
        unsafe {
            let fs = libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 1);
            if fs < 0 {
                return false;
            }
            let created = libc::syscall(
                libc::SYS_fsconfig,
                fs,
                6,
                ptr::null::<u8>(),
                ptr::null::<u8>(),
                0,
            );
            if created < 0 {
                return false;
            }
            let mnt = libc::syscall(libc::SYS_fsmount, fs, 1, 0);
            mnt >= 0
                && openat_ok(
                    i32::try_from(mnt).unwrap_or(-1),
                    c"new",
                    libc::O_WRONLY | libc::O_CREAT,
                )
        }
    };
    assert_eq!(
        errno_of(agent, fsmount_write),
        libc::EPERM,
        "creating a file on an fsmount() mount from an agent"
    );

    // From outside the detached tree works (and writes).
    let root = c_path(tree.dir.path());
    assert_eq!(
        errno_of(None, || write_via_tree(&root, c"open/file", false)),
        0,
        "write through a detached tree from outside"
    );
    assert_eq!(fs::read_to_string(tree.path("open/file")).unwrap(), "evil");
    setup
        .enforcer()
        .set_protection(0, &[])
        .expect("reset protection");
}

/// `unshare(CLONE_NEWNS)` for a [`Sleeper`].
fn new_mount_namespace() -> bool {
    // SAFETY: unshare(2) of the calling process.
    unsafe { libc::unshare(libc::CLONE_NEWNS) == 0 }
}

/// Waits until process `pid` is in a mount namespace other than ours.
fn wait_other_mount_ns(pid: libc::pid_t) {
    let ours = fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_ne!(
        fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        ours,
        "process {pid} has a mount namespace of its own"
    );
}

#[test]
fn files_of_another_mount_namespace_fail_closed() {
    require_vm();
    let tree = MountTree::new("mntns");
    let mut setup = AgentSetup::new("mntns", Decision::Allow, Mode::Enforce);
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let file = tree.path("open/file");
    // Another agent process in a namespace of its own (reachable: the same agent), and a
    // non-agent one.
    let mate = Sleeper::start(Some(&agent_cgroup), new_mount_namespace);
    let stranger = Sleeper::start(None, new_mount_namespace);
    wait_other_mount_ns(mate.pid());
    wait_other_mount_ns(stranger.pid());
    let via = |pid: libc::pid_t| {
        c_path(&Path::new(&format!("/proc/{pid}/root")).join(file.strip_prefix("/").unwrap()))
    };
    let (via_mate, via_stranger) = (via(mate.pid()), via(stranger.pid()));
    let write = libc::O_WRONLY;

    assert_eq!(
        errno_of(agent, || open_ok(&via_mate, write)),
        libc::EPERM,
        "write open of an allowed file through /proc/<agent process in another mount ns>/root"
    );
    assert_unresolved(
        &setup.drain_events(),
        Op::Write,
        "a file on another namespace's mount fails closed",
    );
    let errno = errno_of(agent, || open_ok(&via_stranger, write));
    assert!(
        matches!(errno, libc::EPERM | libc::EACCES),
        "write open through /proc/<non-agent process>/root from an agent: errno {errno}"
    );
    note(&format!(
        "/proc/<non-agent pid>/root from an agent: errno {errno} (EACCES = ptrace check, EPERM = path fails closed)"
    ));
    // A directory descriptor of the other namespace's mount, opened outside and inherited.
    let dir_fd = {
        let dir = c_path(
            &Path::new(&format!("/proc/{}/root", stranger.pid()))
                .join(tree.path("open").strip_prefix("/").unwrap()),
        );
        // SAFETY: plain open of a valid C string; closed below.
        unsafe { libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) }
    };
    assert!(
        dir_fd >= 0,
        "open the other namespace's directory from outside"
    );
    assert_eq!(
        errno_of(agent, || openat_ok(dir_fd, c"file", write)),
        libc::EPERM,
        "write open relative to a descriptor of another mount namespace, passed in"
    );
    assert_eq!(
        errno_of(agent, || openat_ok(dir_fd, c"new", write | libc::O_CREAT)),
        libc::EPERM,
        "create relative to a descriptor of another mount namespace, passed in"
    );
    tree.assert_unchanged("after writes through another mount namespace");
    mate.assert_alive("the namespace holder");

    // From outside: both work.
    assert_eq!(errno_of(None, || open_ok(&via_stranger, write)), 0);
    assert_eq!(errno_of(None, || openat_ok(dir_fd, c"file", write)), 0);
    // SAFETY: our descriptor.
    unsafe { libc::close(dir_fd) };
}

#[test]
fn lazily_unmounted_and_escaped_paths_fail_closed() {
    require_vm();
    let dir = TestDir::new("escape");
    let mnt = dir.path().join("lazy");
    let src = dir.path().join("src");
    let view = dir.path().join("view");
    for d in [&mnt, &src.join("inner/moving"), &view] {
        fs::create_dir_all(d).unwrap();
    }
    let (c_mnt, c_src_inner, c_view) = (c_path(&mnt), c_path(&src.join("inner")), c_path(&view));
    // SAFETY (block): mounts made by the test itself, outside agent cgroups.
    unsafe {
        assert_eq!(
            libc::mount(
                c"none".as_ptr(),
                c_mnt.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                ptr::null()
            ),
            0,
            "tmpfs"
        );
        assert_eq!(
            libc::mount(
                c_src_inner.as_ptr(),
                c_view.as_ptr(),
                ptr::null(),
                libc::MS_BIND,
                ptr::null()
            ),
            0,
            "bind mount"
        );
    }
    fs::write(mnt.join("file"), "data").unwrap();
    fs::write(src.join("inner/moving/file"), "data").unwrap();
    // A directory on a mount lazily unmounted, and one that escapes its bind mount's root.
    let open_dir = |path: &Path| {
        let c = c_path(path);
        // SAFETY: plain open; closed at the end.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        assert!(fd >= 0, "open {}", path.display());
        fd
    };
    let lazy_fd = open_dir(&mnt);
    // SAFETY: umount2 of the test's own mount.
    assert_eq!(
        unsafe { libc::umount2(c_mnt.as_ptr(), libc::MNT_DETACH) },
        0
    );
    let escaped_fd = open_dir(&view.join("moving"));
    fs::rename(src.join("inner/moving"), src.join("moved-out")).unwrap();

    let mut setup = AgentSetup::new("escape", Decision::Allow, Mode::Enforce);
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    for (what, fd) in [
        ("a lazily unmounted mount", lazy_fd),
        ("an escaped dentry", escaped_fd),
    ] {
        assert_eq!(
            errno_of(agent, || openat_ok(fd, c"file", libc::O_WRONLY)),
            libc::EPERM,
            "write open on {what} from an agent"
        );
        assert_eq!(
            errno_of(agent, || openat_ok(
                fd,
                c"new",
                libc::O_WRONLY | libc::O_CREAT
            )),
            libc::EPERM,
            "create on {what} from an agent"
        );
        assert_unresolved(&setup.drain_events(), Op::Write, what);
    }
    assert_eq!(
        fs::read_to_string(src.join("moved-out/file")).unwrap(),
        "data",
        "the escaped file is unchanged"
    );
    assert!(!src.join("moved-out/new").exists());
    // From outside both work.
    for fd in [lazy_fd, escaped_fd] {
        assert_eq!(errno_of(None, || openat_ok(fd, c"file", libc::O_WRONLY)), 0);
    }
    // SAFETY: our descriptors and mount.
    unsafe {
        libc::close(lazy_fd);
        libc::close(escaped_fd);
        libc::umount2(c_view.as_ptr(), 0);
    }
}

/// Creates `depth` nested directories named `name` below `base` with a file "data" at the
/// bottom, component by component (the whole path may exceed `PATH_MAX`); returns a
/// descriptor of the deepest directory.
fn deep_tree(base: &Path, name: &CStr, depth: usize) -> libc::c_int {
    let c = c_path(base);
    // SAFETY: plain syscalls on our own descriptors and valid C strings.
    unsafe {
        let mut fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        for _ in 0..depth {
            libc::mkdirat(fd, name.as_ptr(), 0o755);
            let next = libc::openat(fd, name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            assert!(next >= 0, "descend: {}", std::io::Error::last_os_error());
            libc::close(fd);
            fd = next;
        }
        let file = libc::openat(fd, c"file".as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644);
        assert!(file >= 0, "create the deep file");
        libc::write(file, b"data".as_ptr().cast(), 4);
        libc::close(file);
        fd
    }
}

/// The content of `file` below the directory descriptor `dir`.
fn read_at(dir: libc::c_int) -> Vec<u8> {
    let mut buf = [0u8; 16];
    // SAFETY: plain syscalls into a local buffer.
    unsafe {
        let fd = libc::openat(dir, c"file".as_ptr(), libc::O_RDONLY);
        assert!(fd >= 0, "open the deep file");
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        buf[..usize::try_from(n).unwrap()].to_vec()
    }
}

#[test]
fn too_deep_or_too_long_paths_fail_closed() {
    require_vm();
    let dir = TestDir::new("deep");
    let long_name = CString::new("l".repeat(200)).unwrap();
    // 30 components: within every limit. 80: deeper than the walk's 64. 25 × 201 bytes: longer
    // than 4096.
    let shallow = deep_tree(dir.path(), c"s", 30);
    let deep = deep_tree(dir.path(), c"d", 80);
    let long = deep_tree(dir.path(), &long_name, 25);
    let mut setup = AgentSetup::new("deep", Decision::Allow, Mode::Enforce);
    // Whatever the rules allow there.
    setup.rule(
        Op::Write,
        &format!("{}/", dir.path().display()),
        Decision::Allow,
    );
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    assert_eq!(
        errno_of(agent, || openat_ok(shallow, c"file", libc::O_WRONLY)),
        0,
        "write open 30 components deep from an agent"
    );
    // Deeper than the walk's limit but short: `bpf_d_path` resolves the write open, and the
    // truncation (decided by the walk on both kernels) fails closed. Longer than PATH_MAX: the
    // write open itself fails closed.
    for (what, fd, op) in [
        ("83 components deep", deep, Op::Truncate),
        ("over 5000 bytes long", long, Op::Write),
    ] {
        assert_eq!(
            errno_of(agent, || openat_ok(
                fd,
                c"file",
                libc::O_WRONLY | libc::O_TRUNC
            )),
            libc::EPERM,
            "write open of a path {what} from an agent"
        );
        assert_eq!(read_at(fd), b"data", "{what}: unchanged");
        assert_unresolved(&setup.drain_events(), op, what);
        assert_eq!(
            errno_of(None, || openat_ok(fd, c"file", libc::O_WRONLY)),
            0,
            "{what}: from outside"
        );
    }
    // SAFETY: our descriptors.
    unsafe {
        libc::close(shallow);
        libc::close(deep);
        libc::close(long);
    }
    // remove_dir_all handles the long path relative to descriptors.
}

#[test]
fn open_by_handle_is_decided_like_an_open() {
    require_vm();
    let dir = TestDir::new("handle");
    let secret = dir.path().join("secret");
    fs::write(&secret, "data").unwrap();
    // The handle, made outside: root may open it anywhere it has a descriptor of the mount.
    let mut handle = [0u32; 34];
    handle[0] = 128;
    let mut mnt_id = 0;
    let c_secret = c_path(&secret);
    // SAFETY: a buffer with room for MAX_HANDLE_SZ bytes after the 8-byte header.
    let named = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c_secret.as_ptr(),
            handle.as_mut_ptr(),
            &raw mut mnt_id,
            0,
        )
    };
    assert_eq!(
        named,
        0,
        "name_to_handle_at: {}",
        std::io::Error::last_os_error()
    );
    let c_dir = c_path(dir.path());
    // SAFETY: plain open; closed below.
    let mount_fd = unsafe { libc::open(c_dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    let mut setup = AgentSetup::new("handle", Decision::Allow, Mode::Enforce);
    let rule = setup.rule(Op::Write, secret.to_str().unwrap(), Decision::Deny);
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let by_handle = || {
        // SAFETY: the handle buffer filled above.
        ok(unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount_fd,
                handle.as_ptr(),
                libc::O_WRONLY | libc::O_TRUNC,
            )
        })
    };
    assert_eq!(
        errno_of(agent, by_handle),
        libc::EPERM,
        "write open of a denied file by handle from an agent"
    );
    assert_eq!(fs::read_to_string(&secret).unwrap(), "data");
    let events = setup.drain_events();
    // A cached dentry is connected and has its path; a disconnected one fails closed.
    let event = find_event(&events, "the open by handle", |e| e.op == Op::Write as u8);
    assert!(
        event.rule_id == rule || event.flags & EVENT_FLAG_PATH_UNRESOLVED != 0,
        "decided by the file's rule or failed closed: {}",
        describe(event)
    );
    assert_eq!(errno_of(None, by_handle), 0, "by handle from outside");
    // SAFETY: our descriptor.
    unsafe { libc::close(mount_fd) };
}

// ---------------------------------------------------------------------------------------------
// Truncation

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one class of attack: its variants, the allowed cases and the outside check together"
)]
fn truncation_without_a_write_open_is_decided_as_truncate() {
    require_vm();
    let (major, minor) = kernel_version();
    if (major, minor) < (6, 2) {
        note(&format!(
            "kernel {major}.{minor}: no security_file_truncate; open(O_TRUNC) and ftruncate go through path_truncate (asserted all the same)"
        ));
    }
    let dir = TestDir::new("trunc");
    for sub in ["denied", "allowed", "log"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
        fs::write(dir.path().join(sub).join("f"), "data").unwrap();
    }
    let denied = dir.path().join("denied/f");
    let allowed = dir.path().join("allowed/f");
    let log = dir.path().join("log/f");
    let mut setup = AgentSetup::new("trunc", Decision::Allow, Mode::Enforce);
    let rule = setup.rule(
        Op::Truncate,
        &format!("{}/", denied.parent().unwrap().display()),
        Decision::Deny,
    );
    setup
        .enforcer()
        .set_protection(0, &[log.parent().unwrap()])
        .expect("set protection");
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let truncations = |path: &Path| {
        let c = c_path(path);
        let proc_fd = CString::new("/proc/self/fd/3").unwrap();
        [
            (
                "open(O_RDONLY|O_TRUNC)",
                Box::new({
                    let c = c.clone();
                    move || open_ok(&c, libc::O_RDONLY | libc::O_TRUNC)
                }) as Box<dyn Fn() -> bool>,
            ),
            (
                "open(O_WRONLY|O_TRUNC)",
                Box::new({
                    let c = c.clone();
                    move || open_ok(&c, libc::O_WRONLY | libc::O_TRUNC)
                }),
            ),
            (
                "ftruncate",
                Box::new({
                    let c = c.clone();
                    // SAFETY: plain syscalls.
                    move || unsafe {
                        let fd = libc::open(c.as_ptr(), libc::O_WRONLY);
                        if fd < 0 {
                            return fail_with(206);
                        }
                        libc::ftruncate(fd, 0) == 0
                    }
                }),
            ),
            (
                "O_RDONLY|O_TRUNC through /proc/self/fd of an O_PATH descriptor",
                Box::new(move || {
                    // SAFETY: plain syscalls; fd 3 is the lowest free descriptor after 0-2.
                    unsafe {
                        libc::close(3);
                        if libc::open(c.as_ptr(), libc::O_PATH) != 3 {
                            return fail_with(207);
                        }
                    }
                    open_ok(&proc_fd, libc::O_RDONLY | libc::O_TRUNC)
                }),
            ),
        ]
    };
    for (what, act) in truncations(&denied) {
        assert_eq!(
            errno_of(agent, act),
            libc::EPERM,
            "{what} of a file whose truncation is denied, from an agent"
        );
        assert_eq!(
            fs::read_to_string(&denied).unwrap(),
            "data",
            "{what}: unchanged"
        );
        assert_decision(
            &setup.drain_events(),
            Op::Truncate,
            &denied,
            rule,
            (Decision::Deny, Decision::Deny),
            0,
            what,
        );
    }
    // The daemon's audit log (a protected path) cannot be emptied this way either (its write
    // opens, and so ftruncate, were refused before).
    for (what, act) in truncations(&log)
        .into_iter()
        .filter(|(what, _)| what.contains("O_RDONLY"))
    {
        assert_eq!(
            errno_of(agent, act),
            libc::EPERM,
            "{what} of a protected file from an agent"
        );
        assert_eq!(
            fs::read_to_string(&log).unwrap(),
            "data",
            "{what}: unchanged"
        );
        assert_protection(&setup.drain_events(), Op::Truncate as u8, None, what);
    }
    for (what, act) in truncations(&allowed) {
        fs::write(&allowed, "data").unwrap();
        assert_eq!(
            errno_of(agent, act),
            0,
            "{what} of an allowed file, from an agent"
        );
        assert_eq!(
            fs::read_to_string(&allowed).unwrap(),
            "",
            "{what}: truncated"
        );
    }
    for (what, act) in truncations(&denied) {
        fs::write(&denied, "data").unwrap();
        assert_eq!(errno_of(None, act), 0, "{what} from outside");
        assert_eq!(
            fs::read_to_string(&denied).unwrap(),
            "",
            "{what}: truncated"
        );
    }
    setup
        .enforcer()
        .set_protection(0, &[])
        .expect("reset protection");
}

// ---------------------------------------------------------------------------------------------
// Leaving the cgroup

/// `struct clone_args` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Whether `/proc/self/cgroup` reads exactly `expected`.
fn in_cgroup(expected: &[u8]) -> bool {
    let mut buf = [0u8; 512];
    // SAFETY: plain syscalls into a local buffer.
    unsafe {
        let fd = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        usize::try_from(n).is_ok_and(|n| &buf[..n] == expected)
    }
}

/// `/proc/self/cgroup` of a process in the cgroup directory `cgroup`.
fn cgroup_line(cgroup: &Path) -> Vec<u8> {
    let rel = cgroup.strip_prefix(CGROUP2_ROOT).unwrap();
    format!("0::/{}\n", rel.display()).into_bytes()
}

/// `clone3` with `flags` (and `cgroup` as the target descriptor); the child checks that its
/// `/proc/self/cgroup` is `child_expects` and exits. Afterwards the caller checks it is still
/// in `self_expects` (errno 251 if not). Errno 250: the child was not where it should be.
fn clone3_into(flags: u64, cgroup: libc::c_int, child_expects: &[u8], self_expects: &[u8]) -> bool {
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: u64::try_from(cgroup).unwrap_or(0),
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without a new stack behaves like fork; the child makes raw syscalls
    // only and leaves with _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &raw mut args, size_of::<CloneArgs>()) };
    if pid == 0 {
        // SAFETY: the child leaves at once.
        unsafe { libc::_exit(i32::from(!in_cgroup(child_expects))) }
    }
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    if !in_cgroup(self_expects) {
        return fail_with(251);
    }
    if pid < 0 {
        return fail_with(errno);
    }
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(i32::try_from(pid).unwrap_or(-1), &raw mut status, 0) };
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 || fail_with(250)
}

#[test]
fn agents_cannot_clone_into_another_cgroup() {
    require_vm();
    let other = TestCgroup::new("clone-target");
    let mut setup = AgentSetup::new("clone3", Decision::Allow, Mode::Enforce);
    let sub = setup.cgroup.child("sub");
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let (in_agent, in_other, in_sub) = (
        cgroup_line(&agent_cgroup),
        cgroup_line(other.path()),
        cgroup_line(sub.path()),
    );
    let open_dir = |path: &Path, flags: libc::c_int| {
        let c = c_path(path);
        // SAFETY: plain open; descriptors closed at the end of the test.
        let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_DIRECTORY) };
        assert!(fd >= 0, "open {}", path.display());
        fd
    };
    // Descriptors opened outside and inherited ("passed in").
    let passed = [
        (
            "another cgroup, O_RDONLY",
            open_dir(other.path(), libc::O_RDONLY),
            &in_other,
        ),
        (
            "another cgroup, O_PATH",
            open_dir(other.path(), libc::O_PATH),
            &in_other,
        ),
        (
            "the cgroup2 root, O_PATH",
            open_dir(Path::new(CGROUP2_ROOT), libc::O_PATH),
            &b"0::/\n".to_vec(),
        ),
        (
            "a child of its own cgroup",
            open_dir(sub.path(), libc::O_RDONLY),
            &in_sub,
        ),
        (
            "its own cgroup",
            open_dir(&agent_cgroup, libc::O_PATH),
            &in_agent,
        ),
    ];
    for (what, fd, target) in &passed {
        assert_eq!(
            errno_of(agent, || clone3_into(
                CLONE_INTO_CGROUP,
                *fd,
                target,
                &in_agent
            )),
            libc::EPERM,
            "clone3(CLONE_INTO_CGROUP) into {what} from an agent"
        );
    }
    // Descriptors the agent opens itself.
    let other_path = c_path(other.path());
    let own_open = || {
        // SAFETY: plain open of a valid C string.
        let fd = unsafe { libc::open(other_path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
        fd >= 0 && clone3_into(CLONE_INTO_CGROUP, fd, &in_other, &in_agent)
    };
    assert_eq!(
        errno_of(agent, own_open),
        libc::EPERM,
        "clone3(CLONE_INTO_CGROUP) with a descriptor the agent opened"
    );
    assert_eq!(
        fs::read_to_string(other.path().join("cgroup.procs")).unwrap(),
        "",
        "nothing landed in the other cgroup"
    );
    assert_protection(
        &setup.drain_events(),
        event_op::CGROUP,
        None,
        "clone3(CLONE_INTO_CGROUP) reported",
    );
    // Plain clone3 (and so fork) still works, the child stays in the agent cgroup.
    assert_eq!(
        errno_of(agent, || clone3_into(0, 0, &in_agent, &in_agent)),
        0,
        "plain clone3 from an agent"
    );
    // From outside the move works.
    let test_cgroup = fs::read("/proc/self/cgroup").unwrap();
    let (_, fd, _) = &passed[1];
    assert_eq!(
        errno_of(None, || clone3_into(
            CLONE_INTO_CGROUP,
            *fd,
            &in_other,
            &test_cgroup
        )),
        0,
        "clone3(CLONE_INTO_CGROUP) from outside"
    );
    for (_, fd, _) in passed {
        // SAFETY: our descriptors.
        unsafe { libc::close(fd) };
    }
}

// ---------------------------------------------------------------------------------------------
// Other processes

/// A word every sleeper (a fork of the test) has at the same address.
static MARKER: AtomicU64 = AtomicU64::new(0x1111_2222_3333_4444);
const SCRIBBLE: u64 = 0xdead_beef_dead_beef;

/// Reads (or writes, with `write`) `MARKER` in process `pid` with `process_vm_readv/writev`.
fn process_vm(pid: libc::pid_t, write: bool) -> bool {
    let mut local = SCRIBBLE;
    let local_iov = libc::iovec {
        iov_base: (&raw mut local).cast(),
        iov_len: 8,
    };
    let remote_iov = libc::iovec {
        iov_base: MARKER.as_ptr().cast(),
        iov_len: 8,
    };
    // SAFETY: valid iovecs of 8 bytes each.
    let n = unsafe {
        if write {
            libc::process_vm_writev(pid, &raw const local_iov, 1, &raw const remote_iov, 1, 0)
        } else {
            libc::process_vm_readv(pid, &raw const local_iov, 1, &raw const remote_iov, 1, 0)
        }
    };
    n == 8
}

/// `MARKER` in process `pid`, read from here (outside agent cgroups).
fn marker_of(pid: libc::pid_t) -> u64 {
    let mut value = 0u64;
    let local = libc::iovec {
        iov_base: (&raw mut value).cast(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: MARKER.as_ptr().cast(),
        iov_len: 8,
    };
    // SAFETY: valid iovecs.
    let n = unsafe { libc::process_vm_readv(pid, &raw const local, 1, &raw const remote, 1, 0) };
    assert_eq!(n, 8, "read the marker of {pid}");
    value
}

/// `pidfd_getfd(pidfd_open(pid), 0)`: a copy of its standard input.
fn steal_fd(pid: libc::pid_t) -> bool {
    // SAFETY: plain syscalls.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if pidfd < 0 {
            return fail_with(208);
        }
        ok(libc::syscall(libc::SYS_pidfd_getfd, pidfd, 0, 0))
    }
}

/// `process_madvise(pidfd_open(pid), MADV_COLD)` of the page holding `MARKER`.
fn madvise_other(pid: libc::pid_t) -> bool {
    const MADV_COLD: libc::c_int = 20;
    let page = MARKER.as_ptr() as usize & !4095;
    let iov = libc::iovec {
        iov_base: page as *mut libc::c_void,
        iov_len: 4096,
    };
    // SAFETY: plain syscalls with a valid iovec.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if pidfd < 0 {
            return fail_with(208);
        }
        ok(libc::syscall(
            libc::SYS_process_madvise,
            pidfd,
            &raw const iov,
            1,
            MADV_COLD,
            0,
        ))
    }
}

/// `setns(pidfd_open(pid), CLONE_NEWNS)`: moving into its mount namespace.
fn setns_mount(pid: libc::pid_t) -> bool {
    // SAFETY: plain syscalls.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if pidfd < 0 {
            return fail_with(208);
        }
        libc::setns(i32::try_from(pidfd).unwrap_or(-1), libc::CLONE_NEWNS) == 0
    }
}

/// `pidfd_open(pid)` alone: a handle, no access (signals to non-daemon processes are not
/// restricted, nor is naming them).
fn pidfd_ok(pid: libc::pid_t) -> bool {
    // SAFETY: plain syscall.
    ok(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })
}

/// `kcmp(self, pid, KCMP_VM)`.
fn kcmp_vm(pid: libc::pid_t) -> bool {
    // SAFETY: plain syscall.
    ok(unsafe { libc::syscall(libc::SYS_kcmp, libc::getpid(), pid, 1, 0, 0) })
}

fn ptrace_req(request: libc::c_uint, pid: libc::pid_t) -> bool {
    let null = ptr::null_mut::<libc::c_void>();
    // SAFETY: plain syscall; the tracer's exit detaches.
    unsafe { libc::ptrace(request, pid, null, null) == 0 }
}

/// Registers `cgroup` as a second agent (`id`) of the shared jit, allowing everything; returns
/// its cgroup id for [`unregister_agent`].
fn register_agent(setup: &mut AgentSetup, cgroup: &Path, id: u32) -> u64 {
    let info = setup
        .enforcer()
        .register_agent_cgroup(cgroup, id)
        .expect("register a second agent");
    let config = AgentConfig {
        default_decision: Decision::Allow as u8,
        mode: Mode::Enforce as u8,
        identity: 0,
        extra_rulesets: 0,
        wildcard_components: 0,
        ruleset: id,
    };
    setup
        .enforcer()
        .set_agent_config(id, config)
        .expect("configure the second agent");
    info.id
}

fn unregister_agent(setup: &mut AgentSetup, cgroup_id: u64, id: u32) {
    let enforcer = setup.enforcer();
    enforcer
        .unregister_agent_cgroup(cgroup_id)
        .expect("unregister the second agent");
    enforcer
        .remove_agent_config(id)
        .expect("remove the second agent's config");
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one class of attack: its variants, the allowed cases and the outside check together"
)]
fn agents_reach_only_processes_of_their_own_agent() {
    require_vm();
    let mut setup = AgentSetup::new("reach", Decision::Allow, Mode::Enforce);
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let mate_cgroup = setup.cgroup.child("mate");
    let other_agent = TestCgroup::new("reach-other");
    let other_id = setup.agent + 10_000;
    let other_cgroup_id = register_agent(&mut setup, other_agent.path(), other_id);
    let stranger = Sleeper::start(None, || true);
    let neighbour = Sleeper::start(Some(other_agent.path()), || true);
    let mate = Sleeper::start(Some(mate_cgroup.path()), || true);
    let marker = MARKER.load(Ordering::Relaxed);

    for (who, target) in [
        ("a non-agent process", &stranger),
        ("another agent's process", &neighbour),
    ] {
        let pid = target.pid();
        let mem = c_path(Path::new(&format!("/proc/{pid}/mem")));
        let environ = c_path(Path::new(&format!("/proc/{pid}/environ")));
        let fd0 = c_path(Path::new(&format!("/proc/{pid}/fd/0")));
        let cases: [(&str, &dyn Fn() -> bool, i32); 13] = [
            (
                "PTRACE_ATTACH",
                &|| ptrace_req(libc::PTRACE_ATTACH, pid),
                libc::EPERM,
            ),
            (
                "PTRACE_SEIZE",
                &|| ptrace_req(libc::PTRACE_SEIZE, pid),
                libc::EPERM,
            ),
            ("process_vm_writev", &|| process_vm(pid, true), libc::EPERM),
            ("process_vm_readv", &|| process_vm(pid, false), libc::EPERM),
            ("pidfd_getfd", &|| steal_fd(pid), libc::EPERM),
            ("kcmp", &|| kcmp_vm(pid), libc::EPERM),
            // A write open of another process's /proc/PID/ file is refused before procfs looks
            // (EPERM, op `resource`); for reads procfs maps the refused mm_access to EACCES.
            (
                "open /proc/PID/mem O_RDWR",
                &|| open_ok(&mem, libc::O_RDWR),
                libc::EPERM,
            ),
            (
                "open /proc/PID/mem O_RDONLY",
                &|| open_ok(&mem, libc::O_RDONLY),
                libc::EACCES,
            ),
            (
                "open /proc/PID/environ",
                &|| open_ok(&environ, libc::O_RDONLY),
                libc::EACCES,
            ),
            (
                "open /proc/PID/fd/0 (its descriptor, reopened)",
                &|| open_ok(&fd0, libc::O_RDONLY),
                libc::EACCES,
            ),
            (
                "process_madvise(MADV_COLD)",
                &|| madvise_other(pid),
                libc::EACCES,
            ),
            (
                "setns(pidfd, CLONE_NEWNS)",
                &|| setns_mount(pid),
                libc::EPERM,
            ),
            ("pidfd_open (a handle, no access)", &|| pidfd_ok(pid), 0),
        ];
        for (what, act, errno) in cases {
            let got = errno_of(agent, act);
            // The kernel's own refusal (mm_access, procfs' ptrace check) is EACCES; where jit
            // refuses first (a write open of another process's /proc file) it is EPERM.
            let refused = got == errno || (errno == libc::EACCES && got == libc::EPERM);
            assert!(
                refused,
                "{what} on {who} from an agent: errno {got}, expected {errno}"
            );
        }
        assert_eq!(marker_of(pid), marker, "{who}: memory untouched");
        target.assert_alive(who);
        assert_protection(
            &setup.drain_events(),
            event_op::PTRACE,
            Some(target.tgid()),
            &format!("access to {who} reported with its tgid"),
        );
    }
    // PTRACE_TRACEME with a parent outside the agent (the test) is refused.
    assert_eq!(
        errno_of(agent, || ptrace_req(libc::PTRACE_TRACEME, 0)),
        libc::EPERM,
        "PTRACE_TRACEME under a non-agent parent"
    );

    // Its own agent's processes, in another cgroup of the agent, it reaches.
    let pid = mate.pid();
    for (what, act) in [
        (
            "process_vm_readv",
            &(|| process_vm(pid, false)) as &dyn Fn() -> bool,
        ),
        ("kcmp", &|| kcmp_vm(pid)),
        ("pidfd_getfd", &|| steal_fd(pid)),
        ("process_madvise", &|| madvise_other(pid)),
        ("PTRACE_SEIZE", &|| ptrace_req(libc::PTRACE_SEIZE, pid)),
    ] {
        assert_eq!(errno_of(agent, act), 0, "{what} on its own agent's process");
    }
    // And its own children may ask to be traced.
    let traceme_under_agent = || {
        // SAFETY: fork in a single-threaded child; the grandchild makes raw syscalls only.
        unsafe {
            match libc::fork() {
                -1 => false,
                0 => libc::_exit(i32::from(!ptrace_req(libc::PTRACE_TRACEME, 0))),
                child => {
                    let mut status = 0;
                    libc::waitpid(child, &raw mut status, 0);
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
                }
            }
        }
    };
    assert_eq!(
        errno_of(agent, traceme_under_agent),
        0,
        "PTRACE_TRACEME under a parent of the same agent"
    );

    // From outside: write into the stranger's memory.
    let target = stranger.pid();
    assert_eq!(
        errno_of(None, || process_vm(target, true)),
        0,
        "process_vm_writev from outside"
    );
    assert_eq!(marker_of(target), SCRIBBLE, "written from outside");
    drop(neighbour);
    unregister_agent(&mut setup, other_cgroup_id, other_id);
}

/// Resource and scheduling state of process `pid`, read from here.
#[derive(Debug, PartialEq, Eq)]
struct Sched {
    limits: String,
    nice: i32,
    ioprio: i64,
    policy: i32,
    affinity: Vec<u8>,
    timerslack: String,
}

fn sched_of(pid: libc::pid_t) -> Sched {
    let mut set = unsafe { std::mem::zeroed::<libc::cpu_set_t>() };
    // SAFETY: plain syscalls with a local cpu set.
    let (nice, ioprio, policy) = unsafe {
        assert_eq!(
            libc::sched_getaffinity(pid, size_of::<libc::cpu_set_t>(), &raw mut set),
            0
        );
        (
            libc::getpriority(libc::PRIO_PROCESS, pid.cast_unsigned()),
            libc::syscall(libc::SYS_ioprio_get, 1, pid),
            libc::sched_getscheduler(pid),
        )
    };
    let affinity = (0..64)
        // SAFETY: reading bits of a local cpu set.
        .map(|cpu| u8::from(unsafe { libc::CPU_ISSET(cpu, &set) }))
        .collect();
    Sched {
        limits: fs::read_to_string(format!("/proc/{pid}/limits")).unwrap(),
        nice,
        ioprio,
        policy,
        affinity,
        timerslack: fs::read_to_string(format!("/proc/{pid}/timerslack_ns")).unwrap_or_default(),
    }
}

/// Every resource or scheduling change an attacker would try on process `pid`, as
/// `(name, closure)`; each must only use raw syscalls.
#[expect(clippy::too_many_lines, reason = "a list of attempts")]
fn resource_changes(pid: libc::pid_t) -> Vec<Attempt> {
    let timerslack = c_path(Path::new(&format!("/proc/{pid}/timerslack_ns")));
    let prlimit = move |resource, value| {
        move || {
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            // SAFETY: prlimit with a valid new limit and no old one.
            unsafe { libc::prlimit(pid, resource, &raw const limit, ptr::null_mut()) == 0 }
        }
    };
    vec![
        (
            "prlimit(RLIMIT_NOFILE)",
            Box::new(prlimit(libc::RLIMIT_NOFILE, 1)),
        ),
        (
            "prlimit(RLIMIT_CPU)",
            Box::new(prlimit(libc::RLIMIT_CPU, 1)),
        ),
        (
            "prlimit(RLIMIT_AS)",
            Box::new(prlimit(libc::RLIMIT_AS, 4096)),
        ),
        (
            "setpriority(PRIO_PROCESS)",
            // SAFETY (closures below): plain syscalls with local arguments.
            Box::new(move || unsafe {
                libc::setpriority(libc::PRIO_PROCESS, pid.cast_unsigned(), 19) == 0
            }),
        ),
        (
            "setpriority(PRIO_PGRP)",
            Box::new(move || unsafe {
                libc::setpriority(libc::PRIO_PGRP, pid.cast_unsigned(), 19) == 0
            }),
        ),
        (
            "ioprio_set(IOPRIO_WHO_PROCESS, idle)",
            Box::new(move || unsafe { ok(libc::syscall(libc::SYS_ioprio_set, 1, pid, 3 << 13)) }),
        ),
        (
            "ioprio_set(IOPRIO_WHO_PGRP, idle)",
            Box::new(move || unsafe { ok(libc::syscall(libc::SYS_ioprio_set, 2, pid, 3 << 13)) }),
        ),
        (
            "sched_setaffinity",
            Box::new(move || unsafe {
                let mut set = std::mem::zeroed::<libc::cpu_set_t>();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &raw const set) == 0
            }),
        ),
        (
            "sched_setscheduler(SCHED_IDLE)",
            Box::new(move || unsafe {
                let param = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(pid, libc::SCHED_IDLE, &raw const param) == 0
            }),
        ),
        (
            "sched_setparam",
            Box::new(move || unsafe {
                let param = libc::sched_param { sched_priority: 0 };
                libc::sched_setparam(pid, &raw const param) == 0
            }),
        ),
        (
            "sched_setattr(nice 19)",
            Box::new(move || unsafe {
                // struct sched_attr, version 0: size, policy, flags, nice, priority, runtime,
                // deadline, period.
                let mut attr = [0u32; 12];
                attr[0] = 48;
                attr[4] = 19;
                ok(libc::syscall(
                    libc::SYS_sched_setattr,
                    pid,
                    attr.as_ptr(),
                    0,
                ))
            }),
        ),
        (
            "write /proc/PID/timerslack_ns",
            Box::new(move || unsafe {
                let fd = libc::open(timerslack.as_ptr(), libc::O_WRONLY);
                fd >= 0 && libc::write(fd, b"999999999".as_ptr().cast(), 9) == 9
            }),
        ),
        (
            "migrate_pages",
            Box::new(move || unsafe {
                let nodes: libc::c_ulong = 1;
                ok(libc::syscall(
                    libc::SYS_migrate_pages,
                    pid,
                    64,
                    &raw const nodes,
                    &raw const nodes,
                ))
            }),
        ),
        (
            "move_pages (query)",
            Box::new(move || unsafe {
                ok(libc::syscall(
                    libc::SYS_move_pages,
                    pid,
                    0,
                    ptr::null::<u8>(),
                    ptr::null::<u8>(),
                    ptr::null::<u8>(),
                    0,
                ))
            }),
        ),
    ]
}

/// A sleeper leading its own session and process group (so that group-wide calls reach it
/// alone).
fn own_session() -> bool {
    // SAFETY: setsid(2) of the calling process.
    unsafe { libc::setsid() >= 0 }
}

#[test]
fn agents_cannot_change_resources_or_scheduling_of_other_processes() {
    require_vm();
    let mut setup = AgentSetup::new("resource", Decision::Allow, Mode::Enforce);
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let mate_cgroup = setup.cgroup.child("mate");
    let stranger = Sleeper::start(None, own_session);
    let daemon = Sleeper::start(None, own_session);
    let mate = Sleeper::start(Some(mate_cgroup.path()), own_session);
    setup
        .enforcer()
        .set_protection(daemon.tgid(), &[])
        .expect("set protection");

    for (who, target) in [("a non-agent process", &stranger), ("the daemon", &daemon)] {
        let pid = target.pid();
        let before = sched_of(pid);
        for (what, act) in resource_changes(pid) {
            let errno = errno_of(agent, act);
            if errno == libc::ENOSYS {
                note(&format!("{what}: ENOSYS on this kernel (not built in)"));
                continue;
            }
            assert_eq!(errno, libc::EPERM, "{what} on {who} from an agent");
        }
        assert_eq!(
            sched_of(pid),
            before,
            "{who}: limits and scheduling unchanged"
        );
        target.assert_alive(who);
        assert_protection(
            &setup.drain_events(),
            event_op::RESOURCE,
            Some(target.tgid()),
            &format!("resource change of {who} reported with its tgid"),
        );
    }

    // Its own agent's processes and itself it may change.
    let pid = mate.pid();
    for (what, act) in resource_changes(pid) {
        if what.starts_with("migrate_pages") || what.starts_with("move_pages") {
            continue;
        }
        assert_eq!(errno_of(agent, act), 0, "{what} on its own agent's process");
    }
    let myself = || {
        let limit = libc::rlimit {
            rlim_cur: 64,
            rlim_max: 64,
        };
        // SAFETY: plain syscalls on the calling process.
        unsafe {
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) == 0
                && libc::setpriority(libc::PRIO_PROCESS, 0, 5) == 0
        }
    };
    assert_eq!(errno_of(agent, myself), 0, "setrlimit and renice of itself");

    // From outside every change works.
    let pid = stranger.pid();
    let before = sched_of(pid);
    for (what, act) in resource_changes(pid) {
        let errno = errno_of(None, act);
        assert!(
            errno == 0 || errno == libc::ENOSYS,
            "{what} on a non-agent process from outside: errno {errno}"
        );
    }
    let after = sched_of(pid);
    assert_ne!(after.limits, before.limits, "limits changed from outside");
    assert_eq!(after.nice, 19, "reniced from outside");
    stranger.assert_alive("after the changes from outside");
    setup
        .enforcer()
        .set_protection(0, &[])
        .expect("reset protection");
}

/// The autogroup nice of another session is its scheduling too; the kernel asks
/// `task_setnice` about the writer, not the target.
#[test]
fn agents_cannot_renice_another_sessions_autogroup() {
    require_vm();
    let stranger = Sleeper::start(None, own_session);
    let autogroup = PathBuf::from(format!("/proc/{}/autogroup", stranger.pid()));
    if !autogroup.exists() {
        note("no /proc/PID/autogroup (CONFIG_SCHED_AUTOGROUP off): nothing to assert");
        return;
    }
    let before = fs::read_to_string(&autogroup).unwrap();
    let setup = AgentSetup::new("autogroup", Decision::Allow, Mode::Enforce);
    let c = c_path(&autogroup);
    let write = || {
        // SAFETY: plain syscalls.
        unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_WRONLY);
            fd >= 0 && libc::write(fd, b"19".as_ptr().cast(), 2) == 2
        }
    };
    assert_eq!(
        errno_of(Some(setup.cgroup.path()), write),
        libc::EPERM,
        "renice of a non-agent session's autogroup from an agent"
    );
    assert_eq!(
        fs::read_to_string(&autogroup).unwrap(),
        before,
        "autogroup unchanged"
    );
    assert_eq!(errno_of(None, write), 0, "from outside");
}

// ---------------------------------------------------------------------------------------------
// The kernel itself

#[test]
fn agents_cannot_reach_the_kernel_loaders() {
    require_vm();
    let dir = TestDir::new("kernel");
    let junk = dir.path().join("module.ko");
    fs::write(&junk, vec![0u8; 4096]).unwrap();
    let modules_before = fs::read_to_string("/proc/modules").unwrap_or_default();
    let mut setup = AgentSetup::new("kernel", Decision::Allow, Mode::Enforce);
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let c_junk = c_path(&junk);
    let open_junk = move || {
        // SAFETY: plain open of a valid C string.
        unsafe { libc::open(c_junk.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }
    };
    let image = [0u8; 128];
    let calls: [Attempt; 4] = [
        (
            "finit_module",
            Box::new({
                let open_junk = open_junk.clone();
                // SAFETY (closures): plain syscalls with valid arguments.
                move || unsafe {
                    ok(libc::syscall(
                        libc::SYS_finit_module,
                        open_junk(),
                        c"".as_ptr(),
                        0,
                    ))
                }
            }),
        ),
        (
            "init_module",
            Box::new(move || unsafe {
                ok(libc::syscall(
                    libc::SYS_init_module,
                    image.as_ptr(),
                    image.len(),
                    c"".as_ptr(),
                ))
            }),
        ),
        (
            "kexec_file_load",
            Box::new(move || unsafe {
                // KEXEC_FILE_NO_INITRAMFS
                ok(libc::syscall(
                    libc::SYS_kexec_file_load,
                    open_junk(),
                    -1,
                    0,
                    ptr::null::<u8>(),
                    4,
                ))
            }),
        ),
        (
            "kexec_load (no segments: unload)",
            Box::new(|| unsafe {
                ok(libc::syscall(
                    libc::SYS_kexec_load,
                    0,
                    0,
                    ptr::null::<u8>(),
                    0,
                ))
            }),
        ),
    ];
    for (what, act) in &calls {
        let errno = errno_of(agent, act);
        if errno == libc::ENOSYS {
            note(&format!("{what}: ENOSYS on this kernel"));
            continue;
        }
        assert_eq!(
            errno,
            libc::EPERM,
            "{what} from an agent (EPERM, not the loader's ENOEXEC)"
        );
    }
    assert_eq!(
        fs::read_to_string("/proc/modules").unwrap_or_default(),
        modules_before,
        "no module loaded"
    );
    assert_protection(
        &setup.drain_events(),
        event_op::KERNEL,
        None,
        "loader calls reported",
    );
    // From outside the calls reach the loaders, which reject the junk.
    for ((what, act), expected) in
        calls
            .iter()
            .zip([libc::ENOEXEC, libc::ENOEXEC, libc::ENOEXEC, 0])
    {
        let errno = errno_of(None, act);
        if errno == libc::ENOSYS {
            continue;
        }
        assert_eq!(errno, expected, "{what} from outside");
    }
}

// ---------------------------------------------------------------------------------------------
// Device nodes

fn mknod_ok(path: &CString, mode: libc::mode_t, major: u32, minor: u32) -> bool {
    // SAFETY: plain syscall on a valid C string.
    unsafe { libc::mknod(path.as_ptr(), mode, libc::makedev(major, minor)) == 0 }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one class of attack: its variants, the allowed cases and the outside check together"
)]
fn device_nodes_are_decided_as_device() {
    require_vm();
    let dir = TestDir::new("device");
    let (work, devices, held) = (
        dir.path().join("work"),
        dir.path().join("devices"),
        dir.path().join("held"),
    );
    for d in [&work, &devices, &held] {
        fs::create_dir_all(d).unwrap();
    }
    let mut setup = AgentSetup::new("device", Decision::Allow, Mode::Enforce);
    // A workspace where creating files is fine but device nodes are not, and the reverse.
    let deny = setup.rule(Op::Device, &format!("{}/", work.display()), Decision::Deny);
    setup.rule(
        Op::Device,
        &format!("{}/", devices.display()),
        Decision::Allow,
    );
    setup.rule(
        Op::Create,
        &format!("{}/", devices.display()),
        Decision::Deny,
    );
    setup.rule(Op::Device, &format!("{}/", held.display()), Decision::Hold);
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());

    let null = c_path(&work.join("null"));
    assert_eq!(
        errno_of(agent, || mknod_ok(&null, libc::S_IFCHR | 0o666, 1, 3)),
        libc::EPERM,
        "mknod of a character device (1:3) in the workspace from an agent"
    );
    let c_work = c_path(&work);
    let mknodat_blk = || {
        // SAFETY: plain syscalls on valid C strings.
        unsafe {
            let fd = libc::open(c_work.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            libc::mknodat(
                fd,
                c"disk".as_ptr(),
                libc::S_IFBLK | 0o600,
                libc::makedev(7, 0),
            ) == 0
        }
    };
    assert_eq!(
        errno_of(agent, mknodat_blk),
        libc::EPERM,
        "mknodat of a block device (7:0) in the workspace from an agent"
    );
    assert!(
        fs::read_dir(&work).unwrap().next().is_none(),
        "no node was created"
    );
    assert_decision(
        &setup.drain_events(),
        Op::Device,
        &work.join("null"),
        deny,
        (Decision::Deny, Decision::Deny),
        0,
        "the character device",
    );
    // FIFOs and regular files there are plain creations.
    let (fifo, regular) = (c_path(&work.join("fifo")), c_path(&work.join("regular")));
    assert_eq!(
        errno_of(agent, || mknod_ok(&fifo, libc::S_IFIFO | 0o600, 0, 0)),
        0,
        "mkfifo"
    );
    assert_eq!(
        errno_of(agent, || open_ok(&regular, libc::O_WRONLY | libc::O_CREAT)),
        0,
        "regular create"
    );

    // Where device nodes are allowed and creating is not: decided as device, not create.
    let allowed = devices.join("null");
    let c_allowed = c_path(&allowed);
    assert_eq!(
        errno_of(agent, || mknod_ok(&c_allowed, libc::S_IFCHR | 0o666, 1, 3)),
        0,
        "mknod where device nodes are allowed"
    );
    let meta = fs::metadata(&allowed).unwrap();
    assert!(meta.file_type().is_char_device() && meta.rdev() == libc::makedev(1, 3));
    let fifo2 = c_path(&devices.join("fifo"));
    assert_eq!(
        errno_of(agent, || mknod_ok(&fifo2, libc::S_IFIFO | 0o600, 0, 0)),
        libc::EPERM,
        "mkfifo where creating is denied"
    );

    // A hold binds to the new node's name: nothing exists while held, approved it is made.
    let node = held.join("null");
    let c_node = c_path(&node);
    let child = ForkedChild::start(&setup.cgroup.procs(), || {
        if mknod_ok(&c_node, libc::S_IFCHR | 0o666, 1, 3) {
            0
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        }
    });
    let (tid, request) = setup.wait_for_hold();
    assert_eq!(request.op, Op::Device as u8, "held as device");
    jit_tests::wait_stopped(request.tgid);
    assert!(!node.exists(), "no node while held");
    setup.approve(tid, &request);
    assert_eq!(child.result(), 0, "held mknod, approved");
    assert!(node.exists(), "created once approved");

    // From outside device nodes are made anywhere.
    assert_eq!(
        errno_of(None, || mknod_ok(&null, libc::S_IFCHR | 0o666, 1, 3)),
        0
    );
}

// ---------------------------------------------------------------------------------------------
// Metadata

/// Every extended attribute of `path` (not following a final symlink), sorted.
fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = c_path(path);
    let mut names = vec![0u8; 4096];
    // SAFETY: buffers of the sizes passed.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    names.truncate(usize::try_from(n).unwrap());
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| {
            let cname = CString::new(name).unwrap();
            let mut value = vec![0u8; 4096];
            // SAFETY: as above.
            let len = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            value.truncate(usize::try_from(len).unwrap_or(0));
            (name.to_vec(), value)
        })
        .collect();
    out.sort();
    out
}

/// A POSIX access ACL with a named user (not reducible to the mode bits).
fn acl_blob() -> Vec<u8> {
    let mut blob = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 7u16, u32::MAX),
        (0x02, 7, 1000),
        (0x04, 5, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 5, u32::MAX),
    ] {
        blob.extend_from_slice(&tag.to_le_bytes());
        blob.extend_from_slice(&perm.to_le_bytes());
        blob.extend_from_slice(&id.to_le_bytes());
    }
    blob
}

/// One extended-attribute change, by raw syscall.
#[derive(Clone, Copy, Debug)]
enum XattrAct {
    Set(&'static CStr),
    /// `lsetxattr` of `trusted.x` on the symlink itself.
    LsetOnLink,
    /// `fsetxattr` of `trusted.x` through an `O_RDONLY` descriptor.
    Fset,
    /// `system.posix_acl_access` (what `setfacl -m u:1000:rwx` writes).
    Acl,
    /// `system.posix_acl_default` on the directory.
    DefaultAcl,
    Remove,
    LremoveOnLink,
    /// `fremovexattr` of `trusted.x` (set by an earlier act where changes are allowed).
    Fremove,
}

const XATTR_ACTS: [XattrAct; 10] = [
    XattrAct::Set(c"user.x"),
    XattrAct::Set(c"trusted.x"),
    XattrAct::Set(c"security.x"),
    XattrAct::LsetOnLink,
    XattrAct::Fset,
    XattrAct::Acl,
    XattrAct::DefaultAcl,
    XattrAct::Remove,
    XattrAct::LremoveOnLink,
    XattrAct::Fremove,
];

/// `dir/{f,link,d}` with `trusted.keep` set on `f`, `link` and `d`.
fn xattr_target(dir: &Path) {
    fs::create_dir_all(dir.join("d")).unwrap();
    fs::write(dir.join("f"), "data").unwrap();
    std::os::unix::fs::symlink(dir.join("f"), dir.join("link")).unwrap();
    for name in ["f", "link", "d"] {
        let c = c_path(&dir.join(name));
        // SAFETY: valid C strings and buffer.
        let set = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                c"trusted.keep".as_ptr(),
                b"v".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(
            set,
            0,
            "set trusted.keep: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl XattrAct {
    /// The path whose metadata the act changes.
    fn target(self, dir: &Path) -> PathBuf {
        match self {
            Self::LsetOnLink | Self::LremoveOnLink => dir.join("link"),
            Self::DefaultAcl => dir.join("d"),
            _ => dir.join("f"),
        }
    }

    fn closure(self, dir: &Path) -> impl Fn() -> bool + use<> {
        let path = c_path(&self.target(dir));
        let acl = acl_blob();
        // SAFETY: plain syscalls on valid C strings and buffers.
        move || unsafe {
            let (value, len) = (b"v2".as_ptr().cast(), 2);
            match self {
                Self::Set(name) => libc::setxattr(path.as_ptr(), name.as_ptr(), value, len, 0) == 0,
                Self::LsetOnLink => {
                    libc::lsetxattr(path.as_ptr(), c"trusted.x".as_ptr(), value, len, 0) == 0
                }
                Self::Fset => {
                    let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
                    fd >= 0 && libc::fsetxattr(fd, c"trusted.x".as_ptr(), value, len, 0) == 0
                }
                Self::Acl | Self::DefaultAcl => {
                    let name = if matches!(self, Self::Acl) {
                        c"system.posix_acl_access"
                    } else {
                        c"system.posix_acl_default"
                    };
                    libc::setxattr(
                        path.as_ptr(),
                        name.as_ptr(),
                        acl.as_ptr().cast(),
                        acl.len(),
                        0,
                    ) == 0
                }
                Self::Remove => libc::removexattr(path.as_ptr(), c"trusted.keep".as_ptr()) == 0,
                Self::LremoveOnLink => {
                    libc::lremovexattr(path.as_ptr(), c"trusted.keep".as_ptr()) == 0
                }
                Self::Fremove => {
                    let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
                    fd >= 0 && libc::fremovexattr(fd, c"trusted.x".as_ptr()) == 0
                }
            }
        }
    }
}

#[test]
fn extended_attributes_and_acls_are_decided_as_metadata() {
    require_vm();
    let user_xattrs = kernel_version() >= (6, 6);
    if !user_xattrs {
        note(
            "tmpfs has no user.* xattrs before 6.6: outside agent cgroups setxattr(user.x) is EOPNOTSUPP (the agent's EPERM is asserted all the same)",
        );
    }
    let dir = TestDir::new("xattr");
    let (denied, allowed) = (dir.path().join("denied"), dir.path().join("allowed"));
    xattr_target(&denied);
    xattr_target(&allowed);
    let mut setup = AgentSetup::new("xattr", Decision::Deny, Mode::Enforce);
    let rule = setup.rule(
        Op::Metadata,
        &format!("{}/", denied.display()),
        Decision::Deny,
    );
    setup.rule(
        Op::Metadata,
        &format!("{}/", allowed.display()),
        Decision::Allow,
    );
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let snapshot =
        |dir: &Path| -> Vec<_> { ["f", "link", "d"].map(|n| xattrs(&dir.join(n))).to_vec() };

    let before = snapshot(&denied);
    for act in XATTR_ACTS {
        assert_eq!(
            errno_of(agent, act.closure(&denied)),
            libc::EPERM,
            "{act:?} where metadata changes are denied, from an agent"
        );
        assert_decision(
            &setup.drain_events(),
            Op::Metadata,
            &act.target(&denied),
            rule,
            (Decision::Deny, Decision::Deny),
            0,
            &format!("{act:?}"),
        );
    }
    assert_eq!(snapshot(&denied), before, "no attribute or ACL changed");
    assert_eq!(
        fs::metadata(denied.join("f")).unwrap().mode() & 0o777,
        0o644,
        "mode unchanged"
    );

    for act in XATTR_ACTS {
        let expected = if matches!(act, XattrAct::Set(n) if n == c"user.x") && !user_xattrs {
            libc::EOPNOTSUPP
        } else {
            0
        };
        assert_eq!(
            errno_of(agent, act.closure(&allowed)),
            expected,
            "{act:?} where metadata changes are allowed, from an agent"
        );
    }
    assert_ne!(snapshot(&allowed), before, "the allowed changes happened");
    for act in XATTR_ACTS {
        let expected = if matches!(act, XattrAct::Set(n) if n == c"user.x") && !user_xattrs {
            libc::EOPNOTSUPP
        } else {
            0
        };
        assert_eq!(
            errno_of(None, act.closure(&denied)),
            expected,
            "{act:?} from outside"
        );
    }
}

const FS_IMMUTABLE_FL: libc::c_int = 0x10;
const FS_APPEND_FL: libc::c_int = 0x20;
/// `FS_IOC_FSGETXATTR` / `FS_IOC_FSSETXATTR` (`struct fsxattr`, 28 bytes).
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_IMMUTABLE: u32 = 0x8;
/// `FS_IOC32_SETFLAGS`, what a 32-bit `chattr` sends.
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;

/// The inode flags of `path`.
fn inode_flags(path: &Path) -> libc::c_int {
    let c = c_path(path);
    let mut flags: libc::c_int = 0;
    // SAFETY: plain syscalls; the descriptor is closed.
    unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_RDONLY);
        assert!(fd >= 0);
        assert_eq!(
            libc::ioctl(fd, libc::FS_IOC_GETFLAGS, &raw mut flags),
            0,
            "FS_IOC_GETFLAGS"
        );
        libc::close(fd);
    }
    flags
}

/// Opens `path` read-only and sets its inode flags to `flags` with `FS_IOC_SETFLAGS`.
fn set_flags(path: &CString, flags: libc::c_int) -> bool {
    // SAFETY: plain syscalls.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
        fd >= 0 && libc::ioctl(fd, libc::FS_IOC_SETFLAGS, &raw const flags) == 0
    }
}

/// Sets `FS_XFLAG_IMMUTABLE` with `FS_IOC_FSSETXATTR` (after `FS_IOC_FSGETXATTR`).
fn set_xflag_immutable(path: &CString) -> bool {
    let mut fsx = [0u32; 7];
    // SAFETY: plain syscalls with a 28-byte struct fsxattr.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
        if fd < 0 || libc::ioctl(fd, FS_IOC_FSGETXATTR, fsx.as_mut_ptr()) != 0 {
            return fail_with(209);
        }
        fsx[0] |= FS_XFLAG_IMMUTABLE;
        libc::ioctl(fd, FS_IOC_FSSETXATTR, fsx.as_ptr()) == 0
    }
}

/// `ioctl(FS_IOC32_SETFLAGS, FS_IMMUTABLE_FL)` through the 32-bit system call entry (`int
/// 0x80`), as a 32-bit `chattr` makes it: the compat ioctl path has an LSM hook of its own
/// (`file_ioctl_compat`). Run in a grandchild: without ia32 emulation `int 0x80` may kill it.
/// Errno 252: no ia32 emulation.
fn compat_set_immutable(path: &CString) -> bool {
    // SAFETY: fork of a single-threaded child; the grandchild makes raw syscalls only.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return fail_with(201);
        }
        let pid = libc::fork();
        if pid == 0 {
            // The argument must be addressable with 32 bits.
            let page = libc::mmap(
                ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            );
            if page == libc::MAP_FAILED {
                libc::_exit(253);
            }
            *page.cast::<libc::c_int>() = FS_IMMUTABLE_FL;
            let ret: i32;
            // ia32 ioctl is system call 54: ebx = fd, ecx = cmd, edx = arg. rbx cannot be an
            // operand (LLVM reserves it): swap it in and out.
            core::arch::asm!(
                "xchg {fd:r}, rbx",
                "int 0x80",
                "xchg {fd:r}, rbx",
                fd = inout(reg) u64::from(fd.cast_unsigned()) => _,
                inlateout("eax") 54i32 => ret,
                in("ecx") FS_IOC32_SETFLAGS,
                in("edx") u32::try_from(page as usize).unwrap_or(0),
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            );
            libc::_exit(if ret == -libc::ENOSYS {
                252
            } else if ret < 0 {
                -ret
            } else {
                0
            });
        }
        let mut status = 0;
        libc::waitpid(pid, &raw mut status, 0);
        if !libc::WIFEXITED(status) {
            return fail_with(252);
        }
        match libc::WEXITSTATUS(status) {
            0 => true,
            errno => fail_with(errno),
        }
    }
}

#[test]
fn inode_flags_are_decided_as_metadata() {
    require_vm();
    let dir = TestDir::new("chattr");
    let (denied, allowed) = (dir.path().join("denied"), dir.path().join("allowed"));
    for d in [&denied, &allowed] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("f"), "data").unwrap();
    }
    let mut setup = AgentSetup::new("chattr", Decision::Deny, Mode::Enforce);
    let rule = setup.rule(
        Op::Metadata,
        &format!("{}/", denied.display()),
        Decision::Deny,
    );
    setup.rule(
        Op::Metadata,
        &format!("{}/", allowed.display()),
        Decision::Allow,
    );
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let (file, c_file) = (denied.join("f"), c_path(&denied.join("f")));
    let flags_before = inode_flags(&file);

    for (what, flags) in [("chattr +i", FS_IMMUTABLE_FL), ("chattr +a", FS_APPEND_FL)] {
        assert_eq!(
            errno_of(agent, || set_flags(&c_file, flags_before | flags)),
            libc::EPERM,
            "FS_IOC_SETFLAGS ({what}) from an agent"
        );
    }
    assert_eq!(
        errno_of(agent, || set_xflag_immutable(&c_file)),
        libc::EPERM,
        "FS_IOC_FSSETXATTR (FS_XFLAG_IMMUTABLE) from an agent"
    );
    match errno_of(agent, || compat_set_immutable(&c_file)) {
        252 => note(
            "no ia32 emulation on this kernel: the 32-bit FS_IOC32_SETFLAGS path cannot be tried",
        ),
        errno => assert_eq!(
            errno,
            libc::EPERM,
            "32-bit FS_IOC32_SETFLAGS (int 0x80) from an agent"
        ),
    }
    assert_eq!(inode_flags(&file), flags_before, "flags unchanged");
    assert_decision(
        &setup.drain_events(),
        Op::Metadata,
        &file,
        rule,
        (Decision::Deny, Decision::Deny),
        0,
        "chattr",
    );

    let (allowed_file, c_allowed) = (allowed.join("f"), c_path(&allowed.join("f")));
    assert_eq!(
        errno_of(agent, || set_flags(
            &c_allowed,
            flags_before | FS_IMMUTABLE_FL
        )),
        0,
        "chattr +i where metadata changes are allowed"
    );
    assert_ne!(inode_flags(&allowed_file) & FS_IMMUTABLE_FL, 0, "immutable");
    assert!(
        set_flags(&c_allowed, flags_before),
        "clear the flag (outside)"
    );
    // From outside: immutable, and then the file really refuses writes.
    assert_eq!(
        errno_of(None, || set_flags(&c_file, flags_before | FS_IMMUTABLE_FL)),
        0
    );
    assert!(
        fs::OpenOptions::new().write(true).open(&file).is_err(),
        "an immutable file refuses writes"
    );
    assert!(set_flags(&c_file, flags_before), "clear the flag (outside)");
    match errno_of(None, || compat_set_immutable(&c_file)) {
        252 => {}
        errno => {
            assert_eq!(errno, 0, "32-bit FS_IOC32_SETFLAGS from outside");
            assert!(set_flags(&c_file, flags_before), "clear the flag (outside)");
        }
    }
}

/// `(atime, mtime)` of `path` in seconds.
fn times_of(path: &Path) -> (i64, i64) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.atime(), meta.mtime())
}

/// The timestamp changes an attacker would try on `path` (a file; `link` a symlink to it).
fn timestamp_changes(path: &Path, link: &Path) -> Vec<Attempt> {
    let (c, l) = (c_path(path), c_path(link));
    let explicit = [
        libc::timespec {
            tv_sec: 978_307_200,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 978_307_200,
            tv_nsec: 0,
        },
    ];
    let tv = [
        libc::timeval {
            tv_sec: 978_307_200,
            tv_usec: 0,
        },
        libc::timeval {
            tv_sec: 978_307_200,
            tv_usec: 0,
        },
    ];
    let (c1, c2, c3, c4, c5) = (c.clone(), c.clone(), c.clone(), c.clone(), c);
    // SAFETY (every closure): plain syscalls on valid C strings and arrays.
    vec![
        (
            "utimensat(explicit times)",
            Box::new(move || unsafe {
                libc::utimensat(libc::AT_FDCWD, c1.as_ptr(), explicit.as_ptr(), 0) == 0
            }),
        ),
        (
            "utimensat(NULL) (touch)",
            Box::new(move || unsafe {
                libc::utimensat(libc::AT_FDCWD, c2.as_ptr(), ptr::null(), 0) == 0
            }),
        ),
        (
            "futimens on an O_RDONLY descriptor",
            Box::new(move || unsafe {
                let fd = libc::open(c3.as_ptr(), libc::O_RDONLY);
                fd >= 0 && libc::futimens(fd, explicit.as_ptr()) == 0
            }),
        ),
        (
            "utimes",
            Box::new(move || unsafe { libc::utimes(c4.as_ptr(), tv.as_ptr()) == 0 }),
        ),
        (
            "futimesat",
            Box::new(move || unsafe {
                ok(libc::syscall(
                    libc::SYS_futimesat,
                    libc::AT_FDCWD,
                    c5.as_ptr(),
                    tv.as_ptr(),
                ))
            }),
        ),
        (
            "utimensat(AT_SYMLINK_NOFOLLOW) on a symlink",
            Box::new(move || unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    l.as_ptr(),
                    explicit.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                ) == 0
            }),
        ),
    ]
}

/// Sets `path`'s (not following symlinks) atime and mtime to `secs`.
fn set_times(path: &Path, secs: i64) {
    let c = c_path(path);
    let t = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid C string and array.
    let set = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(set, 0, "utimensat");
}

#[test]
fn timestamps_are_decided_as_metadata() {
    require_vm();
    let dir = TestDir::new("times");
    let (denied, allowed) = (dir.path().join("denied"), dir.path().join("allowed"));
    for d in [&denied, &allowed] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("f"), "data").unwrap();
        fs::write(d.join("other"), "data").unwrap();
        std::os::unix::fs::symlink(d.join("f"), d.join("link")).unwrap();
        for name in ["f", "link"] {
            set_times(&d.join(name), 1_000_000_000);
        }
    }
    let mut setup = AgentSetup::new("times", Decision::Deny, Mode::Enforce);
    let denied_dir = format!("{}/", denied.display());
    let rule = setup.rule(Op::Metadata, &denied_dir, Decision::Deny);
    // busybox, for `touch`.
    setup.rule(Op::Exec, "/bin/", Decision::Allow);
    setup.rule(
        Op::Metadata,
        &format!("{}/", allowed.display()),
        Decision::Allow,
    );
    // What is decided otherwise stays so: truncate, chmod and writes are allowed there.
    for op in [Op::Truncate, Op::Chmod, Op::Write] {
        setup.rule(op, &denied_dir, Decision::Allow);
    }
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let (file, link) = (denied.join("f"), denied.join("link"));
    let before = (times_of(&file), times_of(&link));
    for (what, act) in timestamp_changes(&file, &link) {
        assert_eq!(errno_of(agent, act), libc::EPERM, "{what} from an agent");
    }
    let touch = output_in(
        agent,
        Path::new("/bin/touch"),
        &["-d", "2001-01-01", file.to_str().unwrap()],
        &[],
    );
    assert!(
        !touch.status.success() && text(&touch.stderr).contains("Operation not permitted"),
        "busybox touch -d from an agent: {:?} {}",
        touch.status,
        text(&touch.stderr)
    );
    assert_eq!(
        (times_of(&file), times_of(&link)),
        before,
        "timestamps unchanged"
    );
    assert_decision(
        &setup.drain_events(),
        Op::Metadata,
        &file,
        rule,
        (Decision::Deny, Decision::Deny),
        0,
        "utimensat",
    );

    // Truncation, chmod and writes there update times as a side effect: not metadata.
    let other = c_path(&denied.join("other"));
    // SAFETY (closures): plain syscalls on a valid C string.
    assert_eq!(
        errno_of(agent, || unsafe { libc::truncate(other.as_ptr(), 1) } == 0),
        0,
        "truncate"
    );
    assert_eq!(
        errno_of(agent, || unsafe { libc::chmod(other.as_ptr(), 0o600) } == 0),
        0,
        "chmod"
    );
    let write = || unsafe {
        let fd = libc::open(other.as_ptr(), libc::O_WRONLY);
        fd >= 0 && libc::write(fd, b"x".as_ptr().cast(), 1) == 1
    };
    assert_eq!(errno_of(agent, write), 0, "write");

    let (allowed_file, allowed_link) = (allowed.join("f"), allowed.join("link"));
    for (what, act) in timestamp_changes(&allowed_file, &allowed_link) {
        assert_eq!(
            errno_of(agent, act),
            0,
            "{what} where metadata changes are allowed"
        );
    }
    assert_ne!(times_of(&allowed_file), before.0, "changed where allowed");
    for (what, act) in timestamp_changes(&file, &link) {
        assert_eq!(errno_of(None, act), 0, "{what} from outside");
    }
    assert_ne!(times_of(&file), before.0, "changed from outside");
}

#[test]
fn metadata_of_a_filesystem_seen_only_through_a_bind_mount_fails_closed() {
    require_vm();
    let dir = TestDir::new("bindmeta");
    let (fsdir, view, whole) = (
        dir.path().join("fs"),
        dir.path().join("view"),
        dir.path().join("whole"),
    );
    for d in [&fsdir, &view, &whole] {
        fs::create_dir_all(d).unwrap();
    }
    let (c_fs, c_view, c_whole) = (c_path(&fsdir), c_path(&view), c_path(&whole));
    let sub = fsdir.join("sub");
    // SAFETY (block): mounts made by the test, outside agent cgroups.
    unsafe {
        assert_eq!(
            libc::mount(
                c"none".as_ptr(),
                c_fs.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                ptr::null()
            ),
            0
        );
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("f"), "data").unwrap();
        let c_sub = c_path(&sub);
        assert_eq!(
            libc::mount(
                c_sub.as_ptr(),
                c_view.as_ptr(),
                ptr::null(),
                libc::MS_BIND,
                ptr::null()
            ),
            0
        );
        // Now the filesystem is reachable only through the bind mount of its subdirectory.
        assert_eq!(libc::umount2(c_fs.as_ptr(), 0), 0);
        // And a second tmpfs mounted whole, for contrast.
        assert_eq!(
            libc::mount(
                c"none".as_ptr(),
                c_whole.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                ptr::null()
            ),
            0
        );
    }
    fs::write(whole.join("f"), "data").unwrap();
    let mut setup = AgentSetup::new("bindmeta", Decision::Allow, Mode::Enforce);
    setup.rule(
        Op::Metadata,
        &format!("{}/", dir.path().display()),
        Decision::Allow,
    );
    let agent_cgroup = setup.cgroup.path().to_owned();
    let agent = Some(agent_cgroup.as_path());
    let set = |path: &Path| {
        let c = c_path(path);
        // SAFETY: valid C strings and buffer.
        move || unsafe {
            libc::setxattr(
                c.as_ptr(),
                c"trusted.x".as_ptr(),
                b"v".as_ptr().cast(),
                1,
                0,
            ) == 0
        }
    };
    assert_eq!(
        errno_of(agent, set(&view.join("f"))),
        libc::EPERM,
        "setxattr on a filesystem visible only through a bind mount of a subdirectory"
    );
    assert_unresolved(&setup.drain_events(), Op::Metadata, "fails closed");
    assert!(xattrs(&view.join("f")).is_empty(), "no attribute set");
    assert_eq!(
        errno_of(agent, set(&whole.join("f"))),
        0,
        "on a filesystem mounted whole"
    );
    assert_eq!(errno_of(None, set(&view.join("f"))), 0, "from outside");
    // SAFETY: the test's own mounts.
    unsafe {
        libc::umount2(c_view.as_ptr(), 0);
        libc::umount2(c_whole.as_ptr(), 0);
    }
}
