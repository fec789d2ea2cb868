//! Errors of the kernel side.
use std::{io, path::PathBuf};

use aya::{BtfError, EbpfError, maps::MapError, pin::PinError, programs::ProgramError};
use jit_common::{policy::PatternError, scope::MAX_AGENT_CGROUP_LEVEL};

use crate::{btf as kbtf, cgroup::CgroupError};

/// Errors of the kernel side.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "this build of jit has no eBPF programs: bpf-linker was missing when it was compiled; \
         run `cargo xtask setup` and rebuild"
    )]
    NotBuilt,
    #[error("loading the jit eBPF object failed")]
    Load(#[source] EbpfError),
    #[error(
        "a rule cannot have id 0: the kernel reads that id as \"no rule matched\" (rule ids start at 1)"
    )]
    RuleIdZero,
    #[error(
        "reading kernel BTF from /sys/kernel/btf/vmlinux failed (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Btf(#[source] BtfError),
    #[error("program {name}: {action} failed")]
    Program {
        name: &'static str,
        action: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {name} is missing from the eBPF object")]
    MissingMap { name: &'static str },
    #[error("map {name}: {action} failed")]
    Map {
        name: &'static str,
        action: &'static str,
        #[source]
        source: MapError,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("reading struct layouts from the kernel's BTF failed")]
    Layout(#[source] kbtf::BtfError),
    #[error(
        "request {request_id} of thread {tid} is not pending (already answered, or the task is gone)"
    )]
    NotPending { tid: u32, request_id: u64 },
    #[error("continuing held process {tgid} failed")]
    Continue {
        tgid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("reading CLOCK_MONOTONIC failed")]
    Clock(#[source] nix::Error),
    #[error("making the secret key of argument bindings failed")]
    Random(#[source] std::io::Error),
    #[error(
        "cgroup {path} is at level {level}; agent cgroups must be at level {max} or closer to the root",
        max = MAX_AGENT_CGROUP_LEVEL
    )]
    CgroupTooDeep { path: String, level: u32 },
    #[error("cannot protect {path}: {source}")]
    ProtectedPath {
        path: PathBuf,
        #[source]
        source: PatternError,
    },
    #[error("{path}: {action} failed")]
    Pin {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: PinError,
    },
    #[error("{path}: {action} failed")]
    PinIo {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("pinned map {path}: {action} failed")]
    PinnedMap {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "pinned map {path} was made by an incompatible jit version (key size {key_size}, value \
         size {value_size}; this version needs {want_key} and {want_value}). Held tasks may be \
         waiting in it: resolve them with the old version, or remove {dir} to detach the old \
         programs (this releases nothing: held tasks stay stopped until continued by hand)"
    )]
    IncompatiblePin {
        path: PathBuf,
        dir: PathBuf,
        key_size: u32,
        value_size: u32,
        want_key: u32,
        want_value: u32,
    },
}
