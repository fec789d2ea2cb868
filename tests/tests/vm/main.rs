//! jit's privileged integration tests, run inside the test VM by `cargo xtask test`.
//!
//! One test binary on purpose: loading jit runs the verifier over every program, which takes
//! tens of seconds under software emulation, and the tests share one load per binary.
mod agent_socket;
mod approval_binding;
mod audit_load;
mod boundary;
mod conditions;
mod daemon;
mod escalation;
mod exec_deny;
mod exec_hold;
mod exec_policy;
mod file_ops;
mod io_uring;
mod last_good;
mod metrics;
mod op_groups;
mod policy_tooling;
mod provenance;
mod rule_escalation;
mod self_protect;
mod separation;
mod users;
mod write_cache;
