//! Exec denial for processes in an agent cgroup, on the real kernel hook.
use jit_agent::bpf::Enforcer;
use jit_common::policy::{AgentConfig, Decision, Mode};
use jit_tests::{TestCgroup, assert_eperm, assert_ran, require_vm};

/// Tiny program every test runs; in the VM it is busybox's `true`.
const TRUE: &str = "/bin/true";

fn enforcer_with(cgroup: &TestCgroup) -> Enforcer {
    let mut enforcer = Enforcer::load_and_attach().expect("load and attach jit programs");
    enforcer
        .register_agent_cgroup(cgroup.path(), 1)
        .expect("register agent cgroup");
    enforcer
        .set_agent_config(1, AgentConfig::new(Decision::Deny, Mode::Enforce, 0))
        .expect("agent config: deny every exec");
    enforcer
}

#[test]
fn exec_inside_registered_cgroup_fails_with_eperm() {
    require_vm();
    let agent = TestCgroup::new("agent");
    let _enforcer = enforcer_with(&agent);
    assert_eperm(&agent.run(TRUE, &[]), "exec in the agent cgroup");
}

#[test]
fn exec_outside_registered_cgroup_runs() {
    require_vm();
    let agent = TestCgroup::new("agent");
    let other = TestCgroup::new("other");
    let _enforcer = enforcer_with(&agent);
    assert_ran(&other.run(TRUE, &[]), "exec in an unregistered cgroup");
    // The test process itself sits in the root cgroup and also stays unaffected.
    assert_ran(
        &std::process::Command::new(TRUE).status(),
        "exec in the root cgroup",
    );
}

#[test]
fn exec_in_child_of_registered_cgroup_fails_with_eperm() {
    require_vm();
    let agent = TestCgroup::new("agent");
    let child = agent.child("worker");
    let grandchild = child.child("task");
    let _enforcer = enforcer_with(&agent);
    assert_eperm(&child.run(TRUE, &[]), "exec in a child cgroup");
    assert_eperm(&grandchild.run(TRUE, &[]), "exec in a grandchild cgroup");
}

#[test]
fn exec_inside_runs_again_after_detach() {
    require_vm();
    let agent = TestCgroup::new("agent");
    let enforcer = enforcer_with(&agent);
    assert_eperm(&agent.run(TRUE, &[]), "exec before detach");
    enforcer.detach().expect("detach");
    assert_ran(&agent.run(TRUE, &[]), "exec after detach");
}
