//! The write-decision cache (`jit_common::cache`): a write open allowed once is allowed again
//! from the cache, and every change that could make the next decision differ is seen — a
//! rename of a directory above the file, a mount moved or detached, a rule added, the file
//! deleted. Each
//! case first proves the cache holds the allow (the hit counter moves), then makes the change
//! from outside the agent cgroup and expects the next open of the very same file (the same
//! dentry, reopened through `/proc/self/fd`) to be decided afresh and denied.
use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use jit_common::{
    event::counter,
    policy::{Decision, Mode, Op},
};
use jit_tests::{AgentSetup, TestDir, join_cgroup, require_vm};

/// Size of one request to the [`Opener`]: a kind byte, then a NUL-terminated path. Below
/// `PIPE_BUF`, so each request is one atomic pipe write and one read.
const REQUEST: usize = 512;
/// Request kinds.
const KEEP: u8 = b'K';
const WRITE: u8 = b'W';
/// `open(O_WRONLY | O_CREAT | O_EXCL)` and close: a new file created and opened for writing.
const CREATE: u8 = b'C';
const UNLINK: u8 = b'U';

/// A process in the agent cgroup, pinned to CPU 0 (the cache is per CPU), that opens what it is
/// told: `keep` opens a file read-only and keeps the descriptor (read opens are not decided), `write`
/// opens for writing and closes at once. It lives across the test so its descriptors outlive
/// renames and deletions of what they point at.
struct Opener {
    pid: libc::pid_t,
    requests: libc::c_int,
    replies: libc::c_int,
}

impl Opener {
    fn start(setup: &AgentSetup) -> Self {
        Self::start_in(setup, None)
    }

    /// [`Opener::start`], the child `chroot`ed into `root` first (agents may not `chroot`: a
    /// launcher does it before the agent joins its cgroup).
    fn start_in(setup: &AgentSetup, root: Option<&Path>) -> Self {
        let procs = setup.cgroup.procs();
        let root = root.map(|r| CString::new(r.as_os_str().as_bytes()).unwrap());
        let (mut to_child, mut from_child) = ([0; 2], [0; 2]);
        // SAFETY: plain pipe creation into arrays of two descriptors.
        unsafe {
            assert_eq!(libc::pipe(to_child.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(from_child.as_mut_ptr()), 0);
        }
        // SAFETY: the child only makes async-signal-safe calls and leaves with _exit.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => unsafe {
                // The parent's ends: held here, the request pipe would never reach end-of-file.
                libc::close(to_child[1]);
                libc::close(from_child[0]);
                Self::serve(&procs, root.as_deref(), to_child[0], from_child[1])
            },
            pid => {
                // SAFETY: closing the child's ends in the parent.
                unsafe {
                    libc::close(to_child[0]);
                    libc::close(from_child[1]);
                }
                Self {
                    pid,
                    requests: to_child[1],
                    replies: from_child[0],
                }
            }
        }
    }

    /// The child's loop: one reply (an i32) per request, until the request pipe closes.
    unsafe fn serve(
        procs: &CString,
        root: Option<&std::ffi::CStr>,
        requests: libc::c_int,
        replies: libc::c_int,
    ) -> ! {
        // SAFETY: async-signal-safe syscalls on buffers of this frame.
        unsafe {
            if let Some(root) = root {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    libc::_exit(201);
                }
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(202);
                }
                libc::close(fd);
            } else if join_cgroup(procs).is_err() {
                libc::_exit(200);
            }
            let mut cpus: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut cpus);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const cpus);
            let mut request = [0u8; REQUEST];
            while libc::read(requests, request.as_mut_ptr().cast(), REQUEST)
                == REQUEST.cast_signed()
            {
                let path = request.as_ptr().add(1).cast::<libc::c_char>();
                let errno = || *libc::__errno_location();
                let reply: i32 = if request[0] == KEEP {
                    libc::open(path, libc::O_RDONLY)
                } else if request[0] == UNLINK {
                    if libc::unlink(path) == 0 { 0 } else { errno() }
                } else if request[0] == CREATE {
                    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
                    let fd = libc::open(path, flags, 0o600);
                    if fd >= 0 {
                        libc::close(fd);
                        0
                    } else {
                        errno()
                    }
                } else {
                    let fd = libc::open(path, libc::O_WRONLY);
                    if fd >= 0 {
                        libc::close(fd);
                        0
                    } else {
                        *libc::__errno_location()
                    }
                };
                libc::write(replies, (&raw const reply).cast(), 4);
            }
            libc::_exit(0)
        }
    }

    fn ask(&self, kind: u8, path: &Path) -> i32 {
        let bytes = path.as_os_str().as_bytes();
        assert!(bytes.len() < REQUEST - 1, "path too long for a request");
        let mut request = [0u8; REQUEST];
        request[0] = kind;
        request[1..=bytes.len()].copy_from_slice(bytes);
        let mut reply = 0i32;
        // SAFETY: plain reads and writes of local buffers on our pipe ends.
        unsafe {
            assert_eq!(
                libc::write(self.requests, request.as_ptr().cast(), REQUEST),
                REQUEST.cast_signed()
            );
            assert_eq!(libc::read(self.replies, (&raw mut reply).cast(), 4), 4);
        }
        reply
    }

    /// Opens `path` read-only in the child; returns the child's path to that descriptor.
    fn keep(&self, path: &Path) -> PathBuf {
        let fd = self.ask(KEEP, path);
        assert!(fd >= 0, "the opener could not open {}", path.display());
        PathBuf::from(format!("/proc/self/fd/{fd}"))
    }

    /// Opens `path` for writing in the child: 0 or the errno.
    fn write(&self, path: &Path) -> i32 {
        self.ask(WRITE, path)
    }

    /// Creates `path` (which must not exist) and opens it for writing: 0 or the errno.
    fn create(&self, path: &Path) -> i32 {
        self.ask(CREATE, path)
    }

    /// Unlinks `path`: 0 or the errno.
    fn unlink(&self, path: &Path) -> i32 {
        self.ask(UNLINK, path)
    }
}

impl Drop for Opener {
    fn drop(&mut self) {
        // SAFETY: closing our pipe ends ends the child's loop; then reap it.
        unsafe {
            libc::close(self.requests);
            libc::close(self.replies);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

fn cache_hits(setup: &mut AgentSetup) -> u64 {
    setup.enforcer().counters().expect("counters")[counter::CACHE_HITS as usize]
}

/// Opens `path` for writing twice, both allowed, and asserts the second came from the cache.
fn allowed_and_cached(setup: &mut AgentSetup, opener: &Opener, path: &Path, what: &str) {
    let before = cache_hits(setup);
    assert_eq!(opener.write(path), 0, "{what}: first write open");
    assert_eq!(opener.write(path), 0, "{what}: second write open");
    assert!(
        cache_hits(setup) > before,
        "{what}: the second write open did not come from the cache"
    );
}

fn mount(source: &str, target: &Path, fstype: Option<&str>, flags: libc::c_ulong) {
    let source = CString::new(source).unwrap();
    let target_c = CString::new(target.as_os_str().as_bytes()).unwrap();
    let fstype = fstype.map(|t| CString::new(t).unwrap());
    // SAFETY: valid C strings (or null) for mount(2).
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    assert_eq!(
        ret,
        0,
        "mount on {}: {}",
        target.display(),
        std::io::Error::last_os_error()
    );
}

/// Lazily detaches the mount on its path when dropped (the opener may still hold files on it).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let target = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn write_decision_cache_sees_every_change() {
    require_vm();
    let dir = TestDir::new("write-cache");
    // A private tmpfs of the test's own: a mount under a shared parent cannot be moved.
    mount("jit-cache-test", dir.path(), Some("tmpfs"), 0);
    mount("none", dir.path(), None, libc::MS_PRIVATE);
    let _unmount = Unmount(dir.path().to_owned());
    let (ok, no) = (dir.path().join("ok"), dir.path().join("no"));
    for sub in [ok.join("sub"), ok.join("mnt"), no.clone()] {
        fs::create_dir_all(sub).unwrap();
    }
    let exact = dir.path().join("exact");
    for file in [ok.join("f"), ok.join("g"), ok.join("sub/f"), exact.clone()] {
        fs::write(file, "data").unwrap();
    }
    let mut setup = AgentSetup::new("write-cache", Decision::Deny, Mode::Enforce);
    setup.rule(Op::Write, &format!("{}/", ok.display()), Decision::Allow);
    setup.rule(Op::Write, exact.to_str().unwrap(), Decision::Allow);
    let opener = Opener::start(&setup);

    // Repeated opens of one file: all but the first from the cache (one CPU, nothing changed).
    let before = cache_hits(&mut setup);
    for _ in 0..10 {
        assert_eq!(
            opener.write(&ok.join("f")),
            0,
            "write open under the allowed directory"
        );
    }
    let hits = cache_hits(&mut setup) - before;
    assert!(
        hits >= 9,
        "10 write opens of one file, {hits} from the cache"
    );

    // A directory above the file renamed, from outside: the same dentry now has a denied path.
    let moved = opener.keep(&ok.join("sub/f"));
    allowed_and_cached(&mut setup, &opener, &moved, "before the rename");
    fs::rename(ok.join("sub"), no.join("sub")).unwrap();
    assert_eq!(
        opener.write(&moved),
        libc::EPERM,
        "the file's directory was renamed into the denied one: the cached allow must not apply"
    );

    // A mount moved: the file on it now lies under the denied directory.
    let mnt = ok.join("mnt");
    mount("jit-cache-test", &mnt, Some("tmpfs"), 0);
    fs::write(mnt.join("f"), "data").unwrap();
    let on_mount = opener.keep(&mnt.join("f"));
    allowed_and_cached(&mut setup, &opener, &on_mount, "before the mount move");
    let moved_mnt = no.join("mnt");
    fs::create_dir(&moved_mnt).unwrap();
    mount(mnt.to_str().unwrap(), &moved_mnt, None, libc::MS_MOVE);
    let result = opener.write(&on_mount);
    drop(Unmount(moved_mnt));
    assert_eq!(
        result,
        libc::EPERM,
        "the mount was moved under the denied directory: the cached allow must not apply"
    );

    // A mount detached (`umount -l`) under an open file: the file's path is now relative to the
    // detached tree (`/f`), which no rule allows. An unmount takes `mount_lock` but, unlike a
    // mount or a move (which mark the new mountpoint under `rename_lock`), not `rename_lock`.
    let det = ok.join("det");
    fs::create_dir(&det).unwrap();
    mount("jit-cache-test", &det, Some("tmpfs"), 0);
    fs::write(det.join("f"), "data").unwrap();
    let on_detached = opener.keep(&det.join("f"));
    allowed_and_cached(&mut setup, &opener, &on_detached, "before the unmount");
    drop(Unmount(det));
    assert_eq!(
        opener.write(&on_detached),
        libc::EPERM,
        "the file's mount was detached: the cached allow must not apply"
    );

    // A rule added: the policy generation changes.
    allowed_and_cached(&mut setup, &opener, &ok.join("g"), "before the new rule");
    setup.rule(Op::Write, ok.join("g").to_str().unwrap(), Decision::Deny);
    assert_eq!(
        opener.write(&ok.join("g")),
        libc::EPERM,
        "a deny rule for the file was added: the cached allow must not apply"
    );

    // The file deleted: reopened through its descriptor, its path is `... (deleted)`, which
    // the exact rule does not match.
    let deleted = opener.keep(&exact);
    allowed_and_cached(&mut setup, &opener, &deleted, "before the deletion");
    fs::remove_file(&exact).unwrap();
    assert_eq!(
        opener.write(&deleted),
        libc::EPERM,
        "the file was deleted: its path changed and the cached allow must not apply"
    );
    drop(opener);
}

/// A create decides, besides itself, the write open and the unlink of the new file that follow
/// (`jit_common::cache`, "Files an agent creates"): each from the cache when the rules allow
/// it, never when they do not, and never once anything their decision depended on changed.
#[test]
fn a_create_decides_the_open_and_the_unlink_that_follow() {
    require_vm();
    let dir = TestDir::new("create-seed");
    mount("jit-seed-test", dir.path(), Some("tmpfs"), 0);
    mount("none", dir.path(), None, libc::MS_PRIVATE);
    let _unmount = Unmount(dir.path().to_owned());
    let [all, keep, readonly, moved] =
        ["all", "keep", "readonly", "moved"].map(|d| dir.path().join(d));
    for sub in [
        all.join("sub"),
        keep.clone(),
        readonly.clone(),
        moved.clone(),
    ] {
        fs::create_dir_all(sub).unwrap();
    }
    let mut setup = AgentSetup::new("create-seed", Decision::Deny, Mode::Enforce);
    for (place, ops) in [
        (&all, &[Op::Create, Op::Write, Op::Unlink][..]),
        (&keep, &[Op::Create, Op::Write]),
        (&readonly, &[Op::Create]),
        (&moved, &[Op::Create, Op::Write]),
    ] {
        for &op in ops {
            setup.rule(op, &format!("{}/", place.display()), Decision::Allow);
        }
    }
    let opener = Opener::start(&setup);

    // Allowed throughout: the open and the unlink of every new file come from the cache.
    let before = cache_hits(&mut setup);
    for i in 0..20 {
        let file = all.join(format!("f{i}"));
        assert_eq!(opener.create(&file), 0, "create {}", file.display());
        assert_eq!(opener.unlink(&file), 0, "unlink {}", file.display());
    }
    let hits = cache_hits(&mut setup) - before;
    assert!(
        hits >= 38,
        "20 creates and unlinks where every rule allows: {hits} decisions from the cache"
    );

    // The rules allow the create but not the write open: the open fails; nor the unlink.
    let file = readonly.join("f");
    let before = cache_hits(&mut setup);
    assert_eq!(
        opener.create(&file),
        libc::EPERM,
        "write open of a create-only file"
    );
    assert!(file.exists(), "the create itself was allowed");
    assert_eq!(
        opener.unlink(&file),
        libc::EPERM,
        "unlink where no rule allows it"
    );
    assert_eq!(
        cache_hits(&mut setup),
        before,
        "nothing denied comes from the cache"
    );

    // Create and write allowed, unlink not: the open from the cache, the unlink denied.
    let file = keep.join("f");
    assert_eq!(opener.create(&file), 0);
    assert_eq!(
        opener.unlink(&file),
        libc::EPERM,
        "unlink where no rule allows it"
    );

    // A rule added between the create and the unlink: the unlink is decided afresh.
    let file = all.join("denied-later");
    assert_eq!(opener.create(&file), 0);
    setup.rule(Op::Unlink, file.to_str().unwrap(), Decision::Deny);
    assert_eq!(
        opener.unlink(&file),
        libc::EPERM,
        "a rule added after the create"
    );

    // The directory renamed from outside: the new file's path is now where unlink is denied.
    let file = all.join("sub/f");
    assert_eq!(opener.create(&file), 0);
    fs::rename(all.join("sub"), moved.join("sub")).unwrap();
    assert_eq!(
        opener.unlink(&moved.join("sub/f")),
        libc::EPERM,
        "the file's directory was moved where unlink is denied"
    );
    drop(opener);

    // A task whose root is not the namespace's: its open is judged by the path it sees (`/f`,
    // which no rule allows), not by the create's, whatever a seed would say.
    let jailed = Opener::start_in(&setup, Some(&all));
    let before = cache_hits(&mut setup);
    assert_eq!(
        jailed.create(Path::new("/jailed")),
        libc::EPERM,
        "the open of a chrooted agent is decided by the path it sees"
    );
    assert!(
        all.join("jailed").exists(),
        "the create was allowed by its full path"
    );
    assert_eq!(
        cache_hits(&mut setup),
        before,
        "no seed for a chrooted task"
    );
}
