//! The daemon refuses to start, naming what is missing and how to fix it, on a machine that
//! cannot run BPF LSM programs. The machine these tests run on in CI is such a machine (its
//! kernel lists `bpf` among the LSMs but refuses LSM programs); where that is not so, the test
//! says loudly that it did not check anything.
use std::process::Command;

use aya::programs::{LsmAttachType, ProgramType};

#[test]
fn daemon_refuses_to_start_without_bpf_lsm_and_names_the_fix() {
    let root = nix::unistd::geteuid().is_root();
    let lsm_loads = root
        && aya::sys::is_program_supported(ProgramType::Lsm(LsmAttachType::Mac)).unwrap_or(false);
    if lsm_loads {
        eprintln!(
            "SKIPPED daemon_refuses_to_start_without_bpf_lsm_and_names_the_fix: this machine can \
             load BPF LSM programs, so the daemon would start; the VM tests cover that case"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jit-agent"))
        .arg("--policies")
        .arg(dir.path())
        .arg("--audit-log")
        .arg(dir.path().join("audit.jsonl"))
        .arg("--socket")
        .arg(dir.path().join("jit.sock"))
        .output()
        .expect("run jit-agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    if root {
        assert!(
            stderr.contains("BPF LSM is not active"),
            "stderr:\n{stderr}"
        );
        assert!(
            stderr.contains("lsm="),
            "the fix (lsm= boot parameter) is named:\n{stderr}"
        );
    } else {
        assert!(stderr.contains("needs root"), "stderr:\n{stderr}");
    }
    // Nothing was created: no socket, no audit log.
    assert!(!dir.path().join("jit.sock").exists());
    assert!(!dir.path().join("audit.jsonl").exists());
}
