//! Op groups through the real daemon and its compiler: a `deny` rule written `op = "modify"`
//! refuses every write-like syscall on its file, by a real process in the agent cgroup, and
//! the renames of each directory above it (which would move the file away without touching
//! it); a `hold` rule written the same way holds the rename of its parent directory until a
//! reviewer answers. Files next to the guarded one stay free.
use std::{
    ffi::CString,
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    time::Duration,
};

use jit_agent::approval::PendingView;
use jit_tests::{
    CGROUP2_ROOT, TestDir, c_path,
    daemon::{DaemonFiles, describe, eventually, jitctl},
    errno_of, process_state, require_vm,
};

const CGROUP: &str = "jit-test-groups/agent";

fn pending(files: &DaemonFiles) -> Vec<PendingView> {
    let out = jitctl(files, &["pending", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("pending JSON")
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one daemon start (tens of seconds under emulation) for every op of the group"
)]
fn op_groups_guard_every_write_like_op_and_the_directories_above() {
    require_vm();
    let work = TestDir::new("groups");
    let dir = work.path().to_str().unwrap().to_owned();
    let guarded = work.path().join("guarded");
    let held_dir = work.path().join("held");
    fs::create_dir_all(&guarded).unwrap();
    fs::create_dir_all(&held_dir).unwrap();
    let config = guarded.join("config");
    fs::write(&config, "original").unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(held_dir.join("config"), "held").unwrap();
    let other = guarded.join("other");
    fs::write(&other, "free").unwrap();

    let mut files = DaemonFiles::new("groups");
    files
        .cgroups
        .extend([CGROUP.to_owned(), "jit-test-groups".to_owned()]);
    files.write_policy(
        "groups.toml",
        &format!(
            r#"[agent]
name = "groups-agent"
cgroups = ["{CGROUP}"]
default = "allow"

[escalation]
approvers = {{ users = ["root"] }}
timeout = "1h"

[[rule]]
name = "protected config"
op = "modify"
path = ["{dir}/guarded/config", "{dir}/guarded/new"]
decision = "deny"

[[rule]]
name = "held config"
op = "modify"
path = "{dir}/held/config"
decision = "hold"
"#
        ),
    );
    let daemon = files.start();
    let agent = Path::new(CGROUP2_ROOT).join(CGROUP);
    let errno = |action: &dyn Fn() -> bool| errno_of(Some(&agent), action);

    let c_config = c_path(&config);
    let c_other = c_path(&other);
    let c_new = c_path(&guarded.join("new"));
    let c_copy = c_path(&guarded.join("copy"));
    let c_moved = c_path(&work.path().join("moved"));
    let c_guarded = c_path(&guarded);
    let c_work = c_path(work.path());
    let c_nowhere = CString::new("/nowhere").unwrap();
    // SAFETY (every closure below): plain syscalls on C strings built before forking.
    let open = |path: &CString, flags: i32| {
        let fd = unsafe { libc::open(path.as_ptr(), flags, 0o644) };
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
        fd >= 0
    };
    let cases: [(&str, &dyn Fn() -> bool); 17] = [
        ("open for writing", &|| open(&c_config, libc::O_WRONLY)),
        ("open O_RDONLY|O_TRUNC", &|| {
            open(&c_config, libc::O_RDONLY | libc::O_TRUNC)
        }),
        ("truncate", &|| unsafe {
            libc::truncate(c_config.as_ptr(), 0) == 0
        }),
        ("unlink", &|| unsafe {
            libc::unlink(c_config.as_ptr()) == 0
        }),
        ("rename it away", &|| unsafe {
            libc::rename(c_config.as_ptr(), c_copy.as_ptr()) == 0
        }),
        ("rename another file over it", &|| unsafe {
            libc::rename(c_other.as_ptr(), c_config.as_ptr()) == 0
        }),
        ("rename its directory", &|| unsafe {
            libc::rename(c_guarded.as_ptr(), c_moved.as_ptr()) == 0
        }),
        ("rename the directory above", &|| {
            let up = c"/tmp/jit-groups-renamed";
            unsafe { libc::rename(c_work.as_ptr(), up.as_ptr()) == 0 }
        }),
        ("link it", &|| unsafe {
            libc::link(c_config.as_ptr(), c_copy.as_ptr()) == 0
        }),
        ("chmod", &|| unsafe {
            libc::chmod(c_config.as_ptr(), 0o777) == 0
        }),
        ("chown", &|| unsafe {
            libc::chown(c_config.as_ptr(), 1, 1) == 0
        }),
        ("set its times", &|| unsafe {
            libc::utimensat(libc::AT_FDCWD, c_config.as_ptr(), std::ptr::null(), 0) == 0
        }),
        ("create the guarded new name", &|| {
            open(&c_new, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY)
        }),
        ("mkdir at the guarded name", &|| unsafe {
            libc::mkdir(c_new.as_ptr(), 0o755) == 0
        }),
        ("symlink at the guarded name", &|| unsafe {
            libc::symlink(c_nowhere.as_ptr(), c_new.as_ptr()) == 0
        }),
        ("mkfifo at the guarded name", &|| unsafe {
            libc::mknod(c_new.as_ptr(), libc::S_IFIFO | 0o644, 0) == 0
        }),
        ("mknod a device at the guarded name", &|| unsafe {
            libc::mknod(c_new.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) == 0
        }),
    ];
    for (what, action) in cases {
        assert_eq!(errno(action), libc::EPERM, "{what} was not refused");
    }
    // Nothing changed.
    assert_eq!(fs::read_to_string(&config).unwrap(), "original");
    let meta = fs::metadata(&config).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.uid(), meta.nlink()),
        (0o644, 0, 1)
    );
    assert!(!guarded.join("new").exists() && !guarded.join("copy").exists());
    assert!(other.exists() && guarded.exists());

    // The rest of the directory is not guarded.
    let c_other2 = c_path(&guarded.join("other2"));
    assert_eq!(
        errno(&|| open(&c_other, libc::O_WRONLY)),
        0,
        "writing a sibling"
    );
    assert_eq!(
        errno(&|| unsafe { libc::rename(c_other.as_ptr(), c_other2.as_ptr()) == 0 }),
        0,
        "renaming a sibling"
    );

    // The hold rule holds the rename of its file's directory; a reviewer's deny refuses it.
    let c_held = c_path(&held_dir);
    let c_held_moved = c_path(&work.path().join("held-moved"));
    let held_path = held_dir.to_str().unwrap().to_owned();
    let agent_path = agent.clone();
    let rename = std::thread::spawn(move || {
        errno_of(Some(&agent_path), || {
            // SAFETY: as above.
            unsafe { libc::rename(c_held.as_ptr(), c_held_moved.as_ptr()) == 0 }
        })
    });
    let mut view = None;
    assert!(
        eventually(Duration::from_mins(1), || {
            view = pending(&files).into_iter().find(|v| v.path == held_path);
            view.is_some()
        }),
        "the rename of {held_path} was not held\ndaemon log:\n{}",
        daemon.log()
    );
    let view = view.unwrap();
    assert_eq!(
        (view.op.as_str(), view.rule.as_deref()),
        ("rename", Some("held config"))
    );
    assert_eq!(process_state(view.pid), 'T');
    let out = jitctl(&files, &["deny", &view.id.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(rename.join().unwrap(), libc::EPERM, "the denied rename");
    assert!(held_dir.join("config").exists());
    drop(daemon);
}
