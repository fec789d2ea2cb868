//! What the daemon needs from the host, checked before it touches anything, each failure named
//! together with its fix.
use std::{fs, path::Path};

use aya::programs::{LsmAttachType, ProgramType};

/// A missing prerequisite: the message says what is missing and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum PrereqError {
    #[error(
        "jit-agent needs root, or the capabilities CAP_BPF and CAP_MAC_ADMIN (effective now: \
         {missing} missing): run it as root, e.g. from its systemd unit"
    )]
    Privileges { missing: String },
    #[error(
        "kernel BTF is missing ({path} does not exist): jit needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (every Debian, Ubuntu, Fedora and RHEL kernel since 2021 is)"
    )]
    Btf { path: String },
    #[error(
        "BPF LSM is not active: {detail}. Enable it with the `lsm=` boot parameter, adding `bpf` \
         to the kernel's list (for example `lsm={suggested}`; e.g. in GRUB_CMDLINE_LINUX in \
         /etc/default/grub, then `update-grub` and reboot); the kernel must be built with \
         CONFIG_BPF_LSM=y"
    )]
    BpfLsm { detail: String, suggested: String },
    #[error(
        "cgroup v2 is not mounted at {path}: mount it (`mount -t cgroup2 none {path}`) or boot \
         with `systemd.unified_cgroup_hierarchy=1`; jit places agents in cgroup v2 groups"
    )]
    Cgroup2 { path: String },
    #[error(
        "the BPF filesystem is not mounted at {path}: mount it (`mount -t bpf bpf {path}`); jit \
         pins its programs there so enforcement outlives the daemon"
    )]
    Bpffs { path: String },
}

const CAP_MAC_ADMIN: u32 = 33;
const CAP_BPF: u32 = 39;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// The LSM order Debian and most distributions boot with, plus `bpf`.
const TYPICAL_LSMS: &str = "landlock,lockdown,yama,integrity,apparmor,bpf";

/// Checks every prerequisite, in the order a fix has to happen.
///
/// # Errors
/// The first missing prerequisite.
pub fn check(cgroup_root: &Path, bpffs: &Path) -> Result<(), PrereqError> {
    privileges()?;
    btf()?;
    bpf_lsm()?;
    filesystem(cgroup_root, CGROUP2_SUPER_MAGIC).map_err(|()| PrereqError::Cgroup2 {
        path: cgroup_root.display().to_string(),
    })?;
    // The pin directory itself is created by the daemon; its parent must be bpffs.
    let mount = bpffs.parent().unwrap_or(bpffs);
    filesystem(mount, BPF_FS_MAGIC).map_err(|()| PrereqError::Bpffs {
        path: mount.display().to_string(),
    })
}

fn privileges() -> Result<(), PrereqError> {
    // Unreadable: no capabilities assumed, so the check fails with a message rather than the
    // load failing later without one.
    let effective = procfs::process::Process::myself()
        .and_then(|p| p.status())
        .map_or(0, |s| s.capeff);
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_MAC_ADMIN, "CAP_MAC_ADMIN")]
        .into_iter()
        .filter(|(bit, _)| effective & (1 << bit) == 0)
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PrereqError::Privileges {
            missing: missing.join(" and "),
        })
    }
}

fn btf() -> Result<(), PrereqError> {
    let path = "/sys/kernel/btf/vmlinux";
    if Path::new(path).exists() {
        Ok(())
    } else {
        Err(PrereqError::Btf {
            path: path.to_owned(),
        })
    }
}

/// BPF LSM is active when the kernel accepts an LSM program: the check loads a trivial one (not
/// attached). The LSM list only explains a refusal: some kernels list `bpf` yet refuse LSM
/// programs (seen on sandboxed hosts), and securityfs may not be mounted at all.
fn bpf_lsm() -> Result<(), PrereqError> {
    let probe = aya::sys::is_program_supported(ProgramType::Lsm(LsmAttachType::Mac));
    if matches!(probe, Ok(true)) {
        return Ok(());
    }
    let list_path = "/sys/kernel/security/lsm";
    let list = fs::read_to_string(list_path).ok();
    let list = list.as_deref().map(str::trim).filter(|l| !l.is_empty());
    let suggested = list.map_or_else(|| TYPICAL_LSMS.to_owned(), |l| format!("{l},bpf"));
    let refused = match probe {
        Err(err) => format!("probing for BPF LSM support failed ({err})"),
        Ok(_) => "the kernel refuses to load BPF LSM programs".to_owned(),
    };
    let detail = match list {
        None => format!(
            "{refused}, and {list_path} cannot be read to tell which LSMs are active (mount \
             securityfs to see: `mount -t securityfs securityfs /sys/kernel/security`)"
        ),
        Some(list) if !list.split(',').any(|lsm| lsm == "bpf") => {
            format!("{refused}: the active LSMs are `{list}`, without `bpf`")
        }
        Some(list) => format!(
            "{refused} although the active LSMs (`{list}`) include `bpf` (a kernel without \
             CONFIG_BPF_LSM, or a sandbox that forbids LSM programs)"
        ),
    };
    Err(PrereqError::BpfLsm { detail, suggested })
}

fn filesystem(path: &Path, magic: i64) -> Result<(), ()> {
    match nix::sys::statfs::statfs(path) {
        Ok(stat) if stat.filesystem_type().0 == magic => Ok(()),
        _ => Err(()),
    }
}
