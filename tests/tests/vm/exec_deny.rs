//! Exec denial for processes in an agent cgroup, on the real kernel hook: the scope check
//! (registered cgroup, its descendants, everyone else; agent cgroups listed in the scope entry's
//! slots and beyond them) and detaching.
use jit_agent::bpf::Enforcer;
use jit_common::{
    policy::{AgentConfig, Decision, Mode},
    scope::{SCOPE_SLOTS, SLOTS_REBUILDING},
};
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

/// More agent cgroups than the scope entry has slots, then fewer again: the programs switch
/// from the slot search to the hash search and back, and every cgroup is decided by its own
/// agent all along (nested ones by the deepest).
#[test]
fn scope_beyond_the_slots_and_back() {
    require_vm();
    // A private load: the shared one's registrations come and go with the other tests.
    let mut enforcer = Enforcer::load_and_attach().expect("load and attach jit programs");
    let cgroups: Vec<TestCgroup> = (0..=SCOPE_SLOTS + 2)
        .map(|_| TestCgroup::new("scope"))
        .collect();
    // Agent 1 denies every exec, agent 2 allows every exec.
    for (agent, decision) in [(1, Decision::Deny), (2, Decision::Allow)] {
        enforcer
            .set_agent_config(
                agent,
                AgentConfig::new(decision, Mode::Enforce, 0).with_ruleset(agent),
            )
            .expect("agent config");
    }
    let nested = cgroups[0].child("allowed");
    let mut ids = Vec::new();
    for (i, cgroup) in cgroups.iter().enumerate() {
        let info = enforcer
            .register_agent_cgroup(cgroup.path(), 1)
            .expect("register agent cgroup");
        ids.push(info.id);
        let slots_used = enforcer.scope().expect("scope entry").slots_used;
        if i < SCOPE_SLOTS {
            assert_eq!(slots_used as usize, i + 1, "{} cgroups fit", i + 1);
        } else {
            assert_eq!(slots_used, SLOTS_REBUILDING, "{} cgroups do not fit", i + 1);
        }
        assert_eperm(
            &cgroup.run(TRUE, &[]),
            "exec in a just registered agent cgroup",
        );
        if let Some(next) = cgroups.get(i + 1) {
            assert_ran(&next.run(TRUE, &[]), "exec in a cgroup not registered yet");
        }
        assert_eperm(
            &nested.run(TRUE, &[]),
            "a child of the first agent cgroup, not registered itself yet",
        );
    }
    // By level: the nested cgroup of the allowing agent wins over its denying parent.
    enforcer
        .register_agent_cgroup(nested.path(), 2)
        .expect("register nested agent cgroup");
    assert_ran(&nested.run(TRUE, &[]), "nested allowing agent, by level");
    assert_eperm(&cgroups[0].run(TRUE, &[]), "its parent, by level");
    // Back into the slots: keep the first two and the nested one.
    for &id in &ids[2..] {
        enforcer
            .unregister_agent_cgroup(id)
            .expect("unregister agent cgroup");
    }
    assert_eq!(
        enforcer.scope().expect("scope entry").slots_used,
        3,
        "three cgroups fit in the slots again"
    );
    assert_ran(
        &nested.run(TRUE, &[]),
        "nested allowing agent, in the slots",
    );
    assert_eperm(&cgroups[0].run(TRUE, &[]), "its parent, in the slots");
    assert_eperm(&cgroups[1].run(TRUE, &[]), "the other kept cgroup");
    for cgroup in &cgroups[2..] {
        assert_ran(&cgroup.run(TRUE, &[]), "an unregistered cgroup");
    }
    enforcer.detach().expect("detach");
}
