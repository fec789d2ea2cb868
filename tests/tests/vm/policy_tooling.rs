//! `jitctl policy replay` and `suggest` on an audit trail the real daemon wrote: an audit, a
//! denial, three approved holds and a refused one, then replayed under a changed policy.
//!
//! The trail it writes is printed between `AUDIT-FIXTURE-BEGIN` and `AUDIT-FIXTURE-END` (run
//! with `--nocapture` to see it): `jit-agent/tests/fixtures/tooling/vm-audit.jsonl`, which the
//! host tests replay, is one such run (see that directory's README).
use std::{fs, path::Path, process::Output, thread::JoinHandle, time::Duration};

use jit_agent::approval::PendingView;
use jit_tests::{
    CGROUP2_ROOT, ExistingCgroup,
    daemon::{DaemonFiles, describe, eventually, jitctl},
    require_vm,
};

const CGROUP: &str = "jit-test-tooling/agent";
/// Fixed paths (not a per-run scratch directory) so that the fixture reads the same every run.
const ROOT: &str = "/tmp/jit-replay";

fn policy(deploy: &str, report: &str) -> String {
    format!(
        r#"[agent]
name = "replay-agent"
cgroups = ["{CGROUP}"]
default = "allow"

[escalation]
approvers = {{ users = ["root"] }}
timeout = "1h"
self_approval = true

[[rule]]
name = "deploys need a reviewer"
op = "exec"
path = "{ROOT}/deploy/true"
decision = "{deploy}"

[[rule]]
name = "reports are audited"
op = "exec"
path = "{ROOT}/report/true"
decision = "{report}"

[[rule]]
name = "secrets are off limits"
op = ["write", "create", "unlink", "rename", "truncate"]
path = "{ROOT}/secrets/"
decision = "deny"

[[rule]]
name = "deleting the database needs a reviewer"
op = "unlink"
path = "{ROOT}/work/db"
decision = "hold"
"#
    )
}

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", describe(out));
}

fn held(files: &DaemonFiles, path: &str) -> PendingView {
    let mut found = None;
    let seen = eventually(Duration::from_mins(1), || {
        let out = jitctl(files, &["pending", "--json"]);
        let views: Vec<PendingView> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        found = views.into_iter().find(|v| v.path == path);
        found.is_some()
    });
    assert!(seen, "no hold of {path}");
    found.expect("found above")
}

fn finish(exec: JoinHandle<std::io::Result<std::process::ExitStatus>>) -> bool {
    assert!(
        eventually(Duration::from_mins(1), || exec.is_finished()),
        "the held process did not finish"
    );
    exec.join().expect("exec thread").is_ok_and(|s| s.success())
}

fn install(path: &str) {
    let source = fs::canonicalize("/bin/true").expect("resolve /bin/true");
    fs::copy(&source, path).unwrap_or_else(|e| panic!("copy to {path}: {e}"));
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: the replay needs the trail the steps before it wrote"
)]
fn replay_and_suggest_read_a_real_audit_trail() {
    require_vm();
    let _ = fs::remove_dir_all(ROOT);
    for dir in ["deploy", "report", "secrets", "work"] {
        fs::create_dir_all(Path::new(ROOT).join(dir)).expect("mkdir");
    }
    // Copies of busybox's `true`, named `true`: busybox runs the applet its file is named after.
    let (deploy, report) = (format!("{ROOT}/deploy/true"), format!("{ROOT}/report/true"));
    install(&deploy);
    install(&report);
    let db = format!("{ROOT}/work/db");
    fs::write(&db, "customers").expect("write db");
    let mut files = DaemonFiles::new("tooling");
    files
        .cgroups
        .extend([CGROUP.to_owned(), "jit-test-tooling".to_owned()]);
    files.write_policy("replay-agent.toml", &policy("hold", "audit"));
    let mut daemon = files.start();
    let agent = ExistingCgroup(Path::new(CGROUP2_ROOT).join(CGROUP));

    // An audited exec, and a denied write.
    jit_tests::assert_ran(&agent.run(&report, &[]), "audited report");
    let write = agent.run(
        "/bin/sh",
        &["-c", &format!("echo leaked > {ROOT}/secrets/key")],
    );
    assert!(
        write.is_ok_and(|s| !s.success()),
        "the write into secrets/ must fail"
    );
    // Three deploys, each held and approved.
    for n in 0..3 {
        let exec = agent.spawn_with_args(&deploy, &["--release", &format!("1.{n}")]);
        let view = held(&files, &deploy);
        ok(
            &jitctl(
                &files,
                &[
                    "approve",
                    &view.id.to_string(),
                    "--once",
                    "--reason",
                    "signed off",
                ],
            ),
            "approve deploy",
        );
        assert!(finish(exec), "approved deploy {n} ran");
    }
    // Deleting the database: held and refused.
    let rm = agent.spawn_with_args("/bin/rm", &[&db]);
    let view = held(&files, &db);
    ok(
        &jitctl(
            &files,
            &["deny", &view.id.to_string(), "--reason", "never delete it"],
        ),
        "deny rm",
    );
    assert!(!finish(rm), "the refused rm fails");
    assert!(Path::new(&db).exists(), "the database is still there");
    let status = daemon.terminate();
    assert!(status.success(), "daemon stopped: {status}");

    let trail = fs::read_to_string(&files.audit).expect("read the audit log");
    println!("AUDIT-FIXTURE-BEGIN");
    print!("{trail}");
    println!("AUDIT-FIXTURE-END");

    // Replayed under a policy where deploys pass and reports are not audited.
    let changed = files.dir.join("changed");
    fs::create_dir_all(&changed).expect("mkdir changed");
    fs::write(changed.join("replay-agent.toml"), policy("allow", "allow"))
        .expect("write the changed policy");
    let audit = files.audit.to_str().expect("UTF-8").to_owned();
    let out = jitctl(
        &files,
        &[
            "policy",
            "replay",
            "--policies",
            changed.to_str().expect("UTF-8"),
            "--json",
            &audit,
        ],
    );
    ok(&out, "policy replay");
    let replay: serde_json::Value = serde_json::from_slice(&out.stdout).expect("replay JSON");
    // report (audit), the write (deny), three deploy holds, the rm hold.
    assert_eq!(replay["replayed"], 6, "{replay:#}");
    assert_eq!(replay["changed"], 4, "{replay:#}");
    assert_eq!(replay["unchanged"], 2, "{replay:#}");
    let groups = replay["groups"].as_array().expect("groups");
    assert!(
        groups.iter().any(|g| g["op"] == "exec"
            && g["count"] == 3
            && g["from"]["decision"] == "hold"
            && g["to"]["decision"] == "allow"),
        "{replay:#}"
    );
    // Under the policy that wrote it, nothing changes.
    let out = jitctl(
        &files,
        &[
            "policy",
            "replay",
            "--policies",
            files.policies.to_str().expect("UTF-8"),
            "--json",
            &audit,
        ],
    );
    ok(&out, "policy replay, same policy");
    let same: serde_json::Value = serde_json::from_slice(&out.stdout).expect("replay JSON");
    assert_eq!(same["replayed"], 6, "{same:#}");
    assert_eq!(same["unchanged"], 6, "{same:#}");

    // Three approvals of the deploy make a proposal; one refusal of rm does not.
    let out = jitctl(
        &files,
        &["policy", "suggest", "--min", "3", "--json", &audit],
    );
    ok(&out, "policy suggest");
    let suggest: serde_json::Value = serde_json::from_slice(&out.stdout).expect("suggest JSON");
    assert_eq!(suggest["decided_holds"], 4, "{suggest:#}");
    let proposals = suggest["suggestions"].as_array().expect("suggestions");
    assert_eq!(proposals.len(), 1, "{suggest:#}");
    assert_eq!(proposals[0]["pattern"], deploy.as_str());
    assert_eq!(proposals[0]["decision"], "allow");
    assert_eq!(proposals[0]["count"], 3);

    drop(files);
    let _ = fs::remove_dir_all(ROOT);
}
