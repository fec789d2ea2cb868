//! Exec denial for processes in an agent cgroup, on the real kernel hook: the scope check
//! (registered cgroup, its descendants, everyone else) and detaching.
use jit_agent::bpf::Enforcer;
use jit_common::policy::{AgentConfig, Decision, Mode};
use jit_tests::{AgentSetup, TestCgroup, assert_eperm, assert_ran, require_vm};

/// Tiny program every test runs; in the VM it is busybox's `true`.
const TRUE: &str = "/bin/true";

/// An agent whose every exec is denied.
fn deny_all(name: &str) -> AgentSetup {
    AgentSetup::new(name, Decision::Deny, Mode::Enforce)
}

#[test]
fn exec_inside_registered_cgroup_fails_with_eperm() {
    require_vm();
    let setup = deny_all("agent");
    assert_eperm(&setup.exec(TRUE), "exec in the agent cgroup");
}

#[test]
fn exec_outside_registered_cgroup_runs() {
    require_vm();
    let _setup = deny_all("agent");
    let other = TestCgroup::new("other");
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
    let setup = deny_all("agent");
    let child = setup.cgroup.child("worker");
    let grandchild = child.child("task");
    assert_eperm(&child.run(TRUE, &[]), "exec in a child cgroup");
    assert_eperm(&grandchild.run(TRUE, &[]), "exec in a grandchild cgroup");
}

#[test]
fn exec_inside_runs_again_after_detach() {
    require_vm();
    // A private load: detaching the shared one would affect the other tests.
    let agent = TestCgroup::new("agent");
    let mut enforcer = Enforcer::load_and_attach().expect("load and attach jit programs");
    enforcer
        .register_agent_cgroup(agent.path(), 1)
        .expect("register agent cgroup");
    enforcer
        .set_agent_config(
            1,
            AgentConfig::new(Decision::Deny, Mode::Enforce, 0).with_ruleset(1),
        )
        .expect("agent config: deny every exec");
    assert_eperm(&agent.run(TRUE, &[]), "exec before detach");
    enforcer.detach().expect("detach");
    assert_ran(&agent.run(TRUE, &[]), "exec after detach");
}
