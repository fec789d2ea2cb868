//! Loading jit's BPF LSM programs and driving their maps. The only module that touches aya.
use std::path::Path;

use aya::{
    Btf, BtfError, Ebpf, EbpfError, EbpfLoader,
    maps::{
        Array, HashMap, MapData, MapError, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{Lsm, ProgramError, lsm::LsmLinkId},
};
use jit_common::{
    AgentCgroup, ScopeConfig,
    event::counter,
    layout::LAYOUT_GLOBAL,
    map_names,
    pending::{GrantKey, GrantValue, PendingRequest, STATE_ALLOWED, STATE_DENIED, STATE_PENDING},
    policy::{AgentConfig, KEY_DATA_LEN, PolicyKey, PolicyValue},
    program_names,
    scope::MAX_AGENT_CGROUP_LEVEL,
};

use crate::{
    btf::{self as kbtf, KernelBtf},
    cgroup::{self, CgroupError, CgroupInfo},
};

/// The eBPF object built from `jit-ebpf` by this crate's build script.
#[cfg(not(jit_ebpf_missing))]
static EBPF_OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/jit"
)));
#[cfg(jit_ebpf_missing)]
static EBPF_OBJECT: Option<&[u8]> = None;

/// Whether this build carries the eBPF programs (it does not when bpf-linker was missing).
#[must_use]
pub fn has_ebpf_object() -> bool {
    EBPF_OBJECT.is_some()
}

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
    #[error(
        "cgroup {path} is at level {level}; agent cgroups must be at level {max} or closer to the root",
        max = MAX_AGENT_CGROUP_LEVEL
    )]
    CgroupTooDeep { path: String, level: u32 },
}

/// jit's programs, loaded and attached, and handles on their maps.
///
/// Dropping it detaches every program.
pub struct Enforcer {
    ebpf: Ebpf,
    links: Vec<(&'static str, LsmLinkId)>,
}

impl Enforcer {
    /// Loads the embedded eBPF object and attaches every LSM program.
    ///
    /// # Errors
    /// When the object is missing, the kernel lacks BTF, or the verifier or attach refuses.
    pub fn load_and_attach() -> Result<Self, BpfError> {
        let object = EBPF_OBJECT.ok_or(BpfError::NotBuilt)?;
        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        let layout = KernelBtf::from_sys_fs()
            .and_then(|kernel| kbtf::kernel_layout(&kernel))
            .map_err(BpfError::Layout)?;
        let mut ebpf = EbpfLoader::new()
            .override_global(LAYOUT_GLOBAL, &layout, true)
            .load(object)
            .map_err(BpfError::Load)?;
        let mut links = Vec::with_capacity(program_names::ALL.len());
        for (name, hook) in program_names::ALL {
            links.push((name, attach_lsm(&mut ebpf, name, hook, &btf)?));
        }
        Ok(Self { ebpf, links })
    }

    /// Puts every process in `dir` and its descendant cgroups under jit as agent `agent_id`.
    ///
    /// # Errors
    /// When `dir` is not a cgroup2 directory, is nested too deep, or a map update fails.
    pub fn register_agent_cgroup(
        &mut self,
        dir: &Path,
        agent_id: u32,
    ) -> Result<CgroupInfo, BpfError> {
        let info = cgroup::inspect(dir)?;
        let too_deep = || BpfError::CgroupTooDeep {
            path: dir.display().to_string(),
            level: info.level,
        };
        let config = self.scope_config()?;
        let current = config
            .get(&0, 0)
            .map_err(map_err(map_names::SCOPE_CONFIG, "read"))?;
        let updated = current.with_level(info.level).ok_or_else(too_deep)?;

        // Entry first, then the level bit: a task is in scope only once both exist.
        let mut cgroups = self.agent_cgroups()?;
        cgroups
            .insert(
                info.id,
                AgentCgroup {
                    agent_id,
                    level: info.level,
                },
                0,
            )
            .map_err(map_err(map_names::AGENT_CGROUPS, "insert"))?;
        let mut config = self.scope_config()?;
        config
            .set(0, updated, 0)
            .map_err(map_err(map_names::SCOPE_CONFIG, "update"))?;
        Ok(info)
    }

    /// Takes the cgroup with id `cgroup_id` out of jit's scope (its processes are no longer
    /// evaluated) and recomputes which cgroup levels hold agent cgroups.
    ///
    /// # Errors
    /// When a map operation fails.
    pub fn unregister_agent_cgroup(&mut self, cgroup_id: u64) -> Result<(), BpfError> {
        let mut cgroups = self.agent_cgroups()?;
        match cgroups.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(map_err(map_names::AGENT_CGROUPS, "remove")(source)),
        }
        let mut mask = ScopeConfig::default();
        for entry in &cgroups {
            let (_, cgroup) = entry.map_err(map_err(map_names::AGENT_CGROUPS, "read"))?;
            mask = mask.with_level(cgroup.level).unwrap_or(mask);
        }
        let mut config = self.scope_config()?;
        config
            .set(0, mask, 0)
            .map_err(map_err(map_names::SCOPE_CONFIG, "update"))
    }

    /// Removes an agent's configuration; its cgroups, if any are still registered, then fail
    /// closed.
    ///
    /// # Errors
    /// When the map update fails.
    pub fn remove_agent_config(&mut self, agent_id: u32) -> Result<(), BpfError> {
        let map = self.map(map_names::AGENT_CONFIG)?;
        let mut configs: HashMap<_, u32, AgentConfig> =
            HashMap::try_from(map).map_err(map_err(map_names::AGENT_CONFIG, "open"))?;
        match configs.remove(&agent_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(map_err(map_names::AGENT_CONFIG, "remove")(source)),
        }
    }

    /// Sets an agent's default decision, mode and wildcard positions.
    ///
    /// # Errors
    /// When the map update fails.
    pub fn set_agent_config(&mut self, agent_id: u32, config: AgentConfig) -> Result<(), BpfError> {
        let map = self.map(map_names::AGENT_CONFIG)?;
        let mut configs: HashMap<_, u32, AgentConfig> =
            HashMap::try_from(map).map_err(map_err(map_names::AGENT_CONFIG, "open"))?;
        configs
            .insert(agent_id, config, 0)
            .map_err(map_err(map_names::AGENT_CONFIG, "insert"))
    }

    /// Adds or replaces one compiled rule.
    ///
    /// # Errors
    /// When the map update fails (for example when the map is full).
    pub fn insert_rule(&mut self, key: &PolicyKey, value: PolicyValue) -> Result<(), BpfError> {
        let map = self.map(map_names::POLICY)?;
        let mut trie: LpmTrie<_, [u8; KEY_DATA_LEN], PolicyValue> =
            LpmTrie::try_from(map).map_err(map_err(map_names::POLICY, "open"))?;
        trie.insert(&Key::new(key.prefixlen, key.data), value, 0)
            .map_err(map_err(map_names::POLICY, "insert"))
    }

    /// The event ring buffer. Can be taken once; events are read with `RingBuf::next`.
    ///
    /// # Errors
    /// When it was taken already.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, BpfError> {
        let map = self
            .ebpf
            .take_map(map_names::EVENTS)
            .ok_or(BpfError::MissingMap {
                name: map_names::EVENTS,
            })?;
        RingBuf::try_from(map).map_err(map_err(map_names::EVENTS, "open"))
    }

    /// The counters, summed over all CPUs, indexed by `jit_common::event::counter`.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn counters(&mut self) -> Result<[u64; counter::COUNT as usize], BpfError> {
        let map = self.map(map_names::COUNTERS)?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(map_err(map_names::COUNTERS, "open"))?;
        let mut sums = [0u64; counter::COUNT as usize];
        for (index, sum) in (0u32..).zip(sums.iter_mut()) {
            let per_cpu = array
                .get(&index, 0)
                .map_err(map_err(map_names::COUNTERS, "read"))?;
            *sum = per_cpu.iter().sum();
        }
        Ok(sums)
    }

    /// Every held task: `(thread id, request)`, answered or not.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn pending_requests(&mut self) -> Result<Vec<(u32, PendingRequest)>, BpfError> {
        let map = self.map(map_names::PENDING)?;
        let pending: HashMap<_, u32, PendingRequest> =
            HashMap::try_from(map).map_err(map_err(map_names::PENDING, "open"))?;
        pending
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(map_names::PENDING, "read"))
    }

    /// Answers held request `request_id` of thread `tid`: records the decision in the kernel,
    /// then continues the process. The restarted syscall consumes the answer once.
    ///
    /// # Errors
    /// [`BpfError::NotPending`] when that request is not waiting (answered already, or another
    /// hold of the thread replaced it); map or signal errors.
    pub fn answer(&mut self, tid: u32, request_id: u64, allow: bool) -> Result<(), BpfError> {
        let map = self.map(map_names::PENDING)?;
        let mut pending: HashMap<_, u32, PendingRequest> =
            HashMap::try_from(map).map_err(map_err(map_names::PENDING, "open"))?;
        let mut request = match pending.get(&tid, 0) {
            Ok(request) if request.request_id == request_id && request.state == STATE_PENDING => {
                request
            }
            Ok(_) | Err(MapError::KeyNotFound) => {
                return Err(BpfError::NotPending { tid, request_id });
            }
            Err(source) => return Err(map_err(map_names::PENDING, "read")(source)),
        };
        request.state = if allow { STATE_ALLOWED } else { STATE_DENIED };
        // The answer must be in place before the task runs again: it re-enters the hook at once.
        pending
            .insert(tid, request, 0)
            .map_err(map_err(map_names::PENDING, "update"))?;
        let pid = nix::unistd::Pid::from_raw(request.tgid.cast_signed());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).map_err(|source| {
            BpfError::Continue {
                tgid: request.tgid,
                source,
            }
        })
    }

    /// Approves every held action `key` describes for `duration` from now, enforced by the
    /// kernel's clock (the grant stops working at the deadline even when no daemon runs).
    ///
    /// # Errors
    /// When the clock or the map update fails.
    pub fn grant_for(
        &mut self,
        key: GrantKey,
        duration: std::time::Duration,
        rule_id: u32,
    ) -> Result<(), BpfError> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_err(BpfError::Clock)?;
        let now_ns = u64::try_from(std::time::Duration::from(now).as_nanos()).unwrap_or(u64::MAX);
        let expires_ns =
            now_ns.saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
        let map = self.map(map_names::GRANTS)?;
        let mut grants: HashMap<_, GrantKey, GrantValue> =
            HashMap::try_from(map).map_err(map_err(map_names::GRANTS, "open"))?;
        grants
            .insert(
                key,
                GrantValue {
                    expires_ns,
                    rule_id,
                    pad: 0,
                },
                0,
            )
            .map_err(map_err(map_names::GRANTS, "insert"))
    }

    fn map(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, BpfError> {
        self.ebpf.map_mut(name).ok_or(BpfError::MissingMap { name })
    }

    /// Detaches every program: from now on no process is affected by jit.
    ///
    /// # Errors
    /// When the kernel refuses to detach.
    pub fn detach(mut self) -> Result<(), BpfError> {
        for (name, link) in std::mem::take(&mut self.links) {
            let prog: &mut Lsm = program_mut(&mut self.ebpf, name)?;
            prog.detach(link).map_err(|source| BpfError::Program {
                name,
                action: "detach",
                source,
            })?;
        }
        Ok(())
    }

    fn agent_cgroups(
        &mut self,
    ) -> Result<HashMap<&mut aya::maps::MapData, u64, AgentCgroup>, BpfError> {
        let map = self
            .ebpf
            .map_mut(map_names::AGENT_CGROUPS)
            .ok_or(BpfError::MissingMap {
                name: map_names::AGENT_CGROUPS,
            })?;
        HashMap::try_from(map).map_err(map_err(map_names::AGENT_CGROUPS, "open"))
    }

    fn scope_config(&mut self) -> Result<Array<&mut aya::maps::MapData, ScopeConfig>, BpfError> {
        let map = self
            .ebpf
            .map_mut(map_names::SCOPE_CONFIG)
            .ok_or(BpfError::MissingMap {
                name: map_names::SCOPE_CONFIG,
            })?;
        Array::try_from(map).map_err(map_err(map_names::SCOPE_CONFIG, "open"))
    }
}

fn map_err(name: &'static str, action: &'static str) -> impl FnOnce(MapError) -> BpfError {
    move |source| BpfError::Map {
        name,
        action,
        source,
    }
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Lsm, BpfError> {
    let program = ebpf.program_mut(name).ok_or(BpfError::Program {
        name,
        action: "find",
        source: ProgramError::NotLoaded,
    })?;
    program.try_into().map_err(|source| BpfError::Program {
        name,
        action: "find",
        source,
    })
}

fn attach_lsm(
    ebpf: &mut Ebpf,
    name: &'static str,
    hook: &str,
    btf: &Btf,
) -> Result<LsmLinkId, BpfError> {
    let prog = program_mut(ebpf, name)?;
    let wrap = |action| {
        move |source| BpfError::Program {
            name,
            action,
            source,
        }
    };
    prog.load(hook, btf).map_err(wrap("load"))?;
    prog.attach().map_err(wrap("attach"))
}
