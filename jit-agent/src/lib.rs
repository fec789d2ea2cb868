//! jit's userspace library: everything the daemon, `jitctl` and the privileged tests share.
//!
//! [`bpf`] is the only module that touches aya objects.
pub mod agent_api;
pub mod approval;
pub mod audit;
pub mod bind;
pub mod bpf;
pub mod btf;
pub mod cgroup;
pub mod config;
pub mod control;
pub mod daemon;
pub mod gendocs;
pub mod metrics;
pub mod policy;
pub mod prereq;
pub mod robust;
pub mod text;
pub mod tooling;
