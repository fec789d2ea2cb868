//! Provenance through the real daemon (README, "Provenance"): the kernel marks every file an
//! agent writes, and `written_by` rules decide the agent's execs of them, whatever their name.
//! The same bytes installed from outside run; the mark follows a rename and a hard link, stays
//! when a process outside rewrites the file and when the daemon is killed and restarted; a
//! `#!` script is decided on the script; the dynamic loader cannot map what `execve` may not
//! run; a `memfd` counts as the agent's own; a copy made inside the agent is the agent's; a
//! hold by a `written_by` rule shows who wrote the file.
use std::{
    fs, io,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    time::Duration,
};

use jit_tests::{
    CGROUP2_ROOT, TestDir,
    daemon::{DaemonFiles, describe, eventually, jitctl},
    join_cgroup, procs_of, require_vm,
};

const BUILDER: &str = "jit-test-prov/builder";
const OTHER: &str = "jit-test-prov/other";

/// A dynamically linked program of the VM (so the loader test has something to map), run as
/// `PROGRAM --version`.
const PROGRAM: &str = jit_tests::daemon::JITCTL;

/// Runs `program args...` in `cgroup` (the child joins it before `execve`), output discarded.
fn run_in(cgroup: &str, program: &str, args: &[&str]) -> io::Result<ExitStatus> {
    let procs = procs_of(&Path::new(CGROUP2_ROOT).join(cgroup));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: async-signal-safe calls only (open, write, close) on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || join_cgroup(&procs));
    }
    cmd.status()
}

/// Whether `program --version` ran (and exited 0) in `cgroup`; `false` when `execve` failed
/// with EPERM. Anything else fails the test.
fn runs(cgroup: &str, program: &str) -> bool {
    match run_in(cgroup, program, &["--version"]) {
        Ok(status) => {
            assert!(status.success(), "{program} in {cgroup}: {status}");
            true
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => false,
        Err(e) => panic!("{program} in {cgroup}: {e}"),
    }
}

/// `cp SOURCE DEST` in `cgroup` (`None`: outside every agent).
fn copy(cgroup: Option<&str>, source: &str, dest: &str) {
    let status = match cgroup {
        Some(cgroup) => run_in(cgroup, "/bin/cp", &[source, dest]),
        None => Command::new("/bin/cp").args([source, dest]).status(),
    }
    .expect("run cp");
    assert!(status.success(), "cp {source} {dest}: {status}");
}

fn records(files: &DaemonFiles) -> Vec<serde_json::Value> {
    fs::read_to_string(&files.audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

fn policy(work: &Path) -> (String, String) {
    let builder = format!(
        r#"[agent]
name = "builder"
cgroups = ["{BUILDER}"]
default = "allow"

[escalation]
approvers = {{ users = ["root"] }}
timeout = "1h"

[[rule]]
name = "nothing agents wrote runs"
op = "exec"
path = "/"
written_by = "any-agent"
decision = "deny"

[[rule]]
name = "agents' code in review waits"
op = "exec"
path = "{review}/"
written_by = "agent"
decision = "hold"
"#,
        review = work.join("review").display()
    );
    let other = format!(
        r#"[agent]
name = "other"
cgroups = ["{OTHER}"]
default = "allow"

[[rule]]
name = "other agents' code does not run"
op = "exec"
path = "/"
written_by = "other-agent"
decision = "deny"
"#
    );
    (builder, other)
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: the marks made by its first steps are what the later ones check"
)]
fn what_an_agent_wrote_is_decided_by_who_wrote_it() {
    require_vm();
    let work = TestDir::new("provenance");
    let dir = |name: &str| {
        let d = work.path().join(name);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        d
    };
    let (bin, review) = (dir("bin"), dir("review"));
    let path = |d: &Path, name: &str| d.join(name).to_str().unwrap().to_owned();
    let mut files = DaemonFiles::new("provenance");
    files.cgroups.extend([
        BUILDER.to_owned(),
        OTHER.to_owned(),
        "jit-test-prov".to_owned(),
    ]);
    let (builder_policy, other_policy) = policy(work.path());
    files.write_policy("builder.toml", &builder_policy);
    files.write_policy("other.toml", &other_policy);
    let mut daemon = files.start();
    let true_bin = PROGRAM;

    // The same bytes: installed from outside, they run; copied by the agent, they do not.
    let installed = path(&bin, "installed");
    copy(None, true_bin, &installed);
    assert!(runs(BUILDER, &installed), "installed from outside: runs");
    let built = path(&bin, "built");
    copy(Some(BUILDER), true_bin, &built);
    assert!(!runs(BUILDER, &built), "written by the agent: denied");
    let mut denial = None;
    assert!(
        eventually(Duration::from_secs(20), || {
            denial = records(&files)
                .into_iter()
                .find(|r| r["type"] == "kernel" && r["path"] == built.as_str());
            denial.is_some()
        }),
        "a kernel record of the denial"
    );
    let denial = denial.unwrap();
    assert_eq!(denial["written_by"], "this-agent", "{denial}");
    assert_eq!(denial["rule"], "nothing agents wrote runs", "{denial}");
    assert!(runs(BUILDER, true_bin), "the original still runs");

    // The mark is the inode's: it follows a rename and a hard link made from outside.
    let renamed = path(&bin, "renamed");
    fs::rename(&built, &renamed).unwrap();
    assert!(!runs(BUILDER, &renamed), "renamed: still denied");
    let linked = path(&bin, "linked");
    fs::hard_link(&renamed, &linked).unwrap();
    assert!(!runs(BUILDER, &linked), "hard link: denied");
    // A process outside rewrites it (same inode): it stays the agent's.
    copy(None, true_bin, &renamed);
    assert!(
        !runs(BUILDER, &linked),
        "rewritten from outside: still denied"
    );
    // A copy made outside is a new file nobody in an agent wrote.
    let laundered = path(&bin, "copied-outside");
    copy(None, &renamed, &laundered);
    assert!(
        runs(BUILDER, &laundered),
        "a copy made outside is the host's"
    );
    // A copy made inside is the agent's again, under any name.
    let again = path(&bin, "copied-inside");
    copy(Some(BUILDER), &installed, &again);
    assert!(!runs(BUILDER, &again));

    // A script the agent wrote is decided on the script; the host's interpreter still runs.
    let script = path(&bin, "script.sh");
    let status = run_in(
        BUILDER,
        "/bin/sh",
        &[
            "-c",
            &format!("printf '#!/bin/sh\\nexit 0\\n' > {script} && chmod 755 {script}"),
        ],
    )
    .unwrap();
    assert!(status.success());
    match run_in(BUILDER, &script, &[]) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "the script: {e}"),
        Ok(status) => panic!("an agent-written script ran: {status}"),
    }
    let status = run_in(BUILDER, "/bin/sh", &["-c", "exit 0"]).unwrap();
    assert!(status.success(), "the host's interpreter runs");

    // The dynamic loader cannot map what execve may not run.
    let loader = fs::canonicalize("/lib64/ld-linux-x86-64.so.2").unwrap();
    let status = run_in(BUILDER, loader.to_str().unwrap(), &[&linked]).unwrap();
    assert!(
        !status.success(),
        "ld.so ran an agent-written program: {status}"
    );
    assert!(
        eventually(Duration::from_secs(20), || records(&files).iter().any(
            |r| {
                r["type"] == "kernel"
                    && r["mapping"] == true
                    && r["written_by"] == "this-agent"
                    && r["enforced"] == "deny"
            }
        )),
        "a denied executable mapping is recorded"
    );

    // A memfd holds what a process wrote: it counts as the agent's own.
    let image = fs::read(PROGRAM).unwrap();
    let procs = procs_of(&Path::new(CGROUP2_ROOT).join(BUILDER));
    let child = jit_tests::ForkedChild::start(&procs, move || {
        // SAFETY: plain syscalls on our own descriptor and buffers, in the forked child.
        unsafe {
            let fd = libc::memfd_create(c"code".as_ptr(), 0);
            if fd < 0
                || libc::write(fd, image.as_ptr().cast(), image.len()) != image.len().cast_signed()
            {
                return 200;
            }
            let argv = [c"code".as_ptr(), c"--version".as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            libc::fexecve(fd, argv.as_ptr(), envp.as_ptr());
            *libc::__errno_location()
        }
    });
    assert_eq!(child.result(), libc::EPERM, "a memfd exec is refused");

    // Another agent: a file the builder wrote is another agent's; its own are not.
    assert!(
        !runs(OTHER, &linked),
        "the builder's program, for the other agent"
    );
    let own = path(&bin, "other-own");
    copy(Some(OTHER), true_bin, &own);
    assert!(runs(OTHER, &own), "the other agent's own program");
    assert!(!runs(BUILDER, &own), "for the builder it is an agent's");

    // A hold by a `written_by` rule: the reviewer is told who wrote the file.
    let held = path(&review, "tool");
    copy(Some(BUILDER), true_bin, &held);
    let runner = {
        let held = held.clone();
        std::thread::spawn(move || run_in(BUILDER, &held, &["--version"]))
    };
    let mut view = None;
    assert!(
        eventually(Duration::from_mins(1), || {
            let out = jitctl(&files, &["pending", "--json"]);
            let views: Vec<jit_agent::approval::PendingView> =
                serde_json::from_slice(&out.stdout).unwrap_or_default();
            view = views.into_iter().find(|v| v.path == held);
            view.is_some()
        }),
        "the agent's program in review/ was not held"
    );
    let view = view.unwrap();
    assert_eq!(view.written_by.as_deref(), Some("this-agent"), "{view:?}");
    let card = jitctl(&files, &["pending"]);
    let card = String::from_utf8_lossy(&card.stdout);
    assert!(card.contains("written by: this agent"), "{card}");
    // Rewritten by the agent while held (after the reviewer saw it): the approval is for the
    // file as it was, so the restarted exec is held again, not run.
    copy(Some(BUILDER), &installed, &held);
    let out = jitctl(&files, &["approve", &view.id.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    let mut again = None;
    assert!(
        eventually(Duration::from_mins(1), || {
            let out = jitctl(&files, &["pending", "--json"]);
            let views: Vec<jit_agent::approval::PendingView> =
                serde_json::from_slice(&out.stdout).unwrap_or_default();
            again = views
                .into_iter()
                .find(|v| v.path == held && v.id != view.id);
            again.is_some()
        }),
        "a program rewritten while held was not held again"
    );
    let out = jitctl(&files, &["deny", &again.unwrap().id.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    let result = runner.join().unwrap();
    assert_eq!(
        result.err().and_then(|e| e.raw_os_error()),
        Some(libc::EPERM),
        "denied by the reviewer"
    );

    // Marks outlive the daemon: killed and started again, it finds them in the kernel.
    daemon.kill();
    let _daemon = files.start();
    assert!(
        !runs(BUILDER, &linked),
        "after a daemon restart: still denied"
    );
    assert!(
        runs(BUILDER, &installed),
        "and the host's program still runs"
    );
}

/// The kernel encoding of a `st_dev` (`MKDEV`: 12 bits of major, 20 of minor), which marks are
/// keyed by.
fn kernel_dev(st_dev: u64) -> u64 {
    (u64::from(libc::major(st_dev)) << 20) | u64::from(libc::minor(st_dev))
}

/// Opens `path` for writing (creating it); whether it succeeded. Async-signal-safe.
fn open_for_writing(path: &std::ffi::CStr) -> bool {
    // SAFETY: a raw syscall on a prepared C string; the descriptor is ours.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644);
        fd >= 0 && libc::close(fd) == 0
    }
}

/// The marks themselves, in the kernel's map: made by an agent's write open only, kept by the
/// inode through a rename and writes from outside, gone once the file is deleted.
#[test]
fn marks_belong_to_the_inode_and_go_with_it() {
    use std::os::unix::fs::MetadataExt as _;

    use jit_common::policy::{Decision, Mode};
    use jit_tests::{AgentSetup, c_path, errno_of};

    require_vm();
    let dir = TestDir::new("marks");
    let file = dir.path().join("f");
    let mut setup = AgentSetup::new("marks", Decision::Allow, Mode::Enforce);
    let agent = setup.agent;
    let cgroup = setup.cgroup.path().to_owned();
    let mut mark_of = |path: &Path| {
        let meta = fs::metadata(path).unwrap();
        setup
            .enforcer()
            .mark(kernel_dev(meta.dev()), meta.ino())
            .expect("read MARKS")
    };
    fs::write(&file, "from outside").unwrap();
    assert_eq!(mark_of(&file), None, "written from outside: no mark");
    let read_only = c_path(&file);
    // SAFETY: a raw syscall on a prepared C string.
    let opened = errno_of(Some(&cgroup), || unsafe {
        let fd = libc::open(read_only.as_ptr(), libc::O_RDONLY);
        fd >= 0 && libc::close(fd) == 0
    });
    assert_eq!(opened, 0);
    assert_eq!(mark_of(&file), None, "read by the agent: no mark");

    let c_file = c_path(&file);
    assert_eq!(errno_of(Some(&cgroup), || open_for_writing(&c_file)), 0);
    let mark = mark_of(&file).expect("opened for writing by the agent: marked");
    assert_eq!((mark.agent_id, mark.first_agent_id), (agent, agent));
    assert!(mark.last_ns >= mark.first_ns && mark.first_ns > 0);

    let renamed = dir.path().join("g");
    fs::rename(&file, &renamed).unwrap();
    fs::write(&renamed, "rewritten from outside").unwrap();
    assert_eq!(
        mark_of(&renamed),
        Some(mark),
        "the inode keeps its mark, unchanged"
    );

    // truncate(2) by path gives the file the agent's content too (a shortened script).
    let cut = dir.path().join("cut");
    fs::write(&cut, "from outside, long").unwrap();
    let c_cut = c_path(&cut);
    // SAFETY: a raw syscall on a prepared C string.
    let truncated = errno_of(Some(&cgroup), || unsafe {
        libc::truncate(c_cut.as_ptr(), 4) == 0
    });
    assert_eq!(truncated, 0);
    assert_eq!(
        mark_of(&cut).map(|m| m.agent_id),
        Some(agent),
        "truncated by the agent: marked"
    );

    // A new file created by the agent is marked as it is created.
    let created = dir.path().join("new");
    let c_created = c_path(&created);
    assert_eq!(errno_of(Some(&cgroup), || open_for_writing(&c_created)), 0);
    let meta = fs::metadata(&created).unwrap();
    assert!(mark_of(&created).is_some(), "created by the agent: marked");

    // Deleted: the inode is freed and its mark with it.
    fs::remove_file(&created).unwrap();
    let key = (kernel_dev(meta.dev()), meta.ino());
    assert!(
        eventually(Duration::from_secs(20), || {
            setup
                .enforcer()
                .mark(key.0, key.1)
                .expect("read MARKS")
                .is_none()
        }),
        "the mark of a deleted file is forgotten"
    );
}

/// Content rules through the real daemon: a program denied by its SHA-256 stays denied under
/// any name and wherever it is copied (by an agent or from outside); another program runs.
/// The kernel holds the agent's execs for the rule, and the daemon decides from the digest of
/// the very file the kernel holds.
#[test]
fn a_program_denied_by_its_digest_is_denied_under_any_name() {
    const CGROUP: &str = "jit-test-hash/agent";
    require_vm();
    let work = TestDir::new("hash");
    let out = Command::new("sha256sum").arg(PROGRAM).output().unwrap();
    assert!(out.status.success());
    let digest = String::from_utf8(out.stdout).unwrap()[..64].to_owned();
    let mut files = DaemonFiles::new("hash");
    files
        .cgroups
        .extend([CGROUP.to_owned(), "jit-test-hash".to_owned()]);
    files.write_policy(
        "hash.toml",
        &format!(
            r#"[agent]
name = "hashes"
cgroups = ["{CGROUP}"]
default = "allow"

# Where programs are run from, not the loader's and libraries' directories: the kernel maps
# the loader inside execve, where a hold cannot wait for the daemon (policies/README.md).
[[rule]]
name = "not jitctl, by any name"
op = "exec"
path = ["/jit/", "{work}/"]
sha256 = ["{digest}"]
decision = "deny"
"#,
            work = work.path().display()
        ),
    );
    let _daemon = files.start();
    let elsewhere = work.path().join("bin").join("innocent-name");
    fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    fs::set_permissions(work.path().join("bin"), fs::Permissions::from_mode(0o777)).unwrap();
    let elsewhere = elsewhere.to_str().unwrap().to_owned();
    copy(None, PROGRAM, &elsewhere);
    assert!(!runs(CGROUP, PROGRAM), "the program itself");
    assert!(
        !runs(CGROUP, &elsewhere),
        "a copy made outside, under another name"
    );
    let inside = work.path().join("bin").join("agent-copy");
    let inside = inside.to_str().unwrap().to_owned();
    copy(Some(CGROUP), PROGRAM, &inside);
    assert!(!runs(CGROUP, &inside), "a copy made by the agent");
    assert!(
        runs(CGROUP, jit_tests::daemon::JIT_AGENT),
        "another program runs"
    );
    // Each was decided by the daemon, from the digest.
    let decided = |decision: &str| {
        records(&files)
            .iter()
            .filter(|r| {
                r["type"] == "approval" && r["reviewer"] == "policy" && r["decision"] == decision
            })
            .count()
    };
    assert!(
        eventually(Duration::from_secs(20), || decided("deny") >= 3
            && decided("approve") >= 1),
        "the daemon's decisions are audited: {} denials, {} approvals",
        decided("deny"),
        decided("approve")
    );
}
