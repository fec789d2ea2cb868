//! Loading jit's BPF LSM programs and driving their maps. The only module that touches aya.
//!
//! Two ways to hold the programs: [`Enforcer::load_and_attach`] owns them (dropping the enforcer
//! detaches them: for tests and benchmarks), [`Enforcer::load_pinned`] pins programs, links and
//! maps in bpffs so enforcement, held tasks and undelivered events outlive the process: the
//! daemon's way. A restarted daemon adopts the pinned state instead of loading anew, so there is
//! no moment without enforcement.
use std::{
    collections::BTreeMap,
    fs, io,
    mem::size_of,
    path::{Path, PathBuf},
};

use aya::{
    Btf, BtfError, Ebpf, EbpfError, EbpfLoader,
    maps::{
        Array, HashMap, Map, MapData, MapError, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    pin::PinError,
    programs::{Lsm, ProgramError, links::FdLink, lsm::LsmLinkId},
};
use jit_common::{
    AgentCgroup, ScopeConfig,
    cache::{SEQLOCKS_GLOBAL, SeqLocks},
    event::counter,
    layout::LAYOUT_GLOBAL,
    map_names,
    pending::{GrantKey, GrantValue, PendingRequest, STATE_ALLOWED, STATE_DENIED, STATE_PENDING},
    policy::{AgentConfig, KEY_DATA_LEN, PatternError, PolicyKey, PolicyValue},
    program_names,
    protect::{self, ProtectConfig},
    scope::{MAX_AGENT_CGROUP_LEVEL, SlotUpdate},
};

use crate::{
    btf::{self as kbtf, KernelBtf},
    cgroup::{self, CgroupError, CgroupInfo},
};

mod floor;
pub use floor::Floor;

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

/// `bpf_map_update_elem` flag: update an existing element only.
const BPF_EXIST: u64 = 2;

/// Where the daemon pins programs, links and maps by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/jit";

/// The maps userspace drives, with the key and value sizes this version expects of them
/// (compared with pinned maps before adopting them; a ring buffer has neither).
const USER_MAPS: [(&str, usize, usize); 11] = [
    (
        map_names::AGENT_CGROUPS,
        size_of::<u64>(),
        size_of::<AgentCgroup>(),
    ),
    (
        map_names::SCOPE_CONFIG,
        size_of::<u32>(),
        size_of::<ScopeConfig>(),
    ),
    (
        map_names::POLICY,
        size_of::<PolicyKey>(),
        size_of::<PolicyValue>(),
    ),
    (
        map_names::AGENT_CONFIG,
        size_of::<u32>(),
        size_of::<AgentConfig>(),
    ),
    (map_names::EVENTS, 0, 0),
    (map_names::COUNTERS, size_of::<u32>(), size_of::<u64>()),
    (
        map_names::PENDING,
        size_of::<u32>(),
        size_of::<PendingRequest>(),
    ),
    (
        map_names::GRANTS,
        size_of::<GrantKey>(),
        size_of::<GrantValue>(),
    ),
    (
        map_names::PROTECT_CONFIG,
        size_of::<u32>(),
        size_of::<ProtectConfig>(),
    ),
    (
        map_names::PROTECTED,
        size_of::<PolicyKey>(),
        size_of::<u32>(),
    ),
    (map_names::POLICY_GEN, size_of::<u32>(), size_of::<u64>()),
];

/// How [`Enforcer::load_pinned`] found the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Startup {
    /// Nothing (complete) was pinned: the programs were loaded, attached and pinned now.
    Loaded,
    /// A previous run's programs were attached and pinned: they were adopted as they are,
    /// with every rule, held task and undelivered event.
    Adopted,
}

enum Programs {
    /// Loaded by this process with links it owns: dropping them detaches the programs.
    Owned {
        ebpf: Ebpf,
        links: Vec<(&'static str, LsmLinkId)>,
    },
    /// Attached through links pinned under `dir`: they stay attached when this process exits.
    Pinned { dir: PathBuf },
}

/// jit's programs, loaded and attached, and handles on their maps.
///
/// Dropping it detaches every program it owns; pinned programs stay attached.
pub struct Enforcer {
    maps: BTreeMap<&'static str, Map>,
    programs: Programs,
    /// Whether [`Enforcer::policy_changed`] keeps the write-decision cache on.
    cache_enabled: bool,
}

impl Enforcer {
    /// Loads the embedded eBPF object and attaches every LSM program, owned by the returned
    /// value: dropping it (or [`Enforcer::detach`]) detaches them. Nothing is pinned.
    ///
    /// # Errors
    /// When the object is missing, the kernel lacks BTF, or the verifier or attach refuses.
    pub fn load_and_attach() -> Result<Self, BpfError> {
        let mut ebpf = load_object()?;
        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        let mut links = Vec::with_capacity(program_names::ALL.len());
        for (name, hook) in programs_for_this_kernel()? {
            links.push((name, attach_lsm(&mut ebpf, name, hook, &btf)?));
        }
        let maps = take_user_maps(&mut ebpf)?;
        let mut enforcer = Self {
            maps,
            programs: Programs::Owned { ebpf, links },
            cache_enabled: true,
        };
        // A fresh generation map holds 0, which keeps the cache off until this.
        enforcer.policy_changed()?;
        Ok(enforcer)
    }

    /// The daemon's start: adopts the programs and maps pinned under `dir` by a previous run
    /// when they are all there (and compatible), or else loads, attaches and pins them there
    /// (`dir/maps/NAME`, `dir/links/PROGRAM`). The programs stay attached when this process
    /// exits or crashes.
    ///
    /// A partial pin set (a start that crashed half way) is replaced: the new programs are
    /// attached before the old pins are removed, so enforcement never pauses.
    ///
    /// # Errors
    /// As [`Enforcer::load_and_attach`], bpffs errors, and [`BpfError::IncompatiblePin`] when
    /// the pinned maps were made by a version with other map layouts.
    pub fn load_pinned(dir: &Path) -> Result<(Self, Startup), BpfError> {
        let maps_dir = dir.join("maps");
        let links_dir = dir.join("links");
        let complete = USER_MAPS
            .iter()
            .all(|(name, ..)| maps_dir.join(name).exists())
            && programs_for_this_kernel()?
                .iter()
                .all(|(name, _)| links_dir.join(name).exists());
        if complete {
            let mut maps = BTreeMap::new();
            for (name, key, value) in USER_MAPS {
                let path = maps_dir.join(name);
                let data = MapData::from_pin(&path).map_err(|source| BpfError::PinnedMap {
                    path: path.clone(),
                    action: "open",
                    source,
                })?;
                check_compatible(&data, &path, dir, key, value)?;
                let map = Map::from_map_data(data).map_err(|source| BpfError::PinnedMap {
                    path: path.clone(),
                    action: "open",
                    source,
                })?;
                maps.insert(name, map);
            }
            let mut enforcer = Self {
                maps,
                programs: Programs::Pinned {
                    dir: dir.to_owned(),
                },
                cache_enabled: true,
            };
            // Nothing cached before this start is trusted after it.
            enforcer.policy_changed()?;
            return Ok((enforcer, Startup::Adopted));
        }

        let mut ebpf = load_object()?;
        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        let mut links = Vec::with_capacity(program_names::ALL.len());
        for (name, hook) in programs_for_this_kernel()? {
            links.push((name, attach_lsm(&mut ebpf, name, hook, &btf)?));
        }
        let maps = take_user_maps(&mut ebpf)?;
        for sub in [&maps_dir, &links_dir] {
            create_pin_dir(sub)?;
            remove_pins(sub)?;
        }
        for (name, map) in &maps {
            let path = maps_dir.join(name);
            map.pin(&path).map_err(|source| BpfError::Pin {
                path,
                action: "pinning map",
                source,
            })?;
        }
        for (name, link_id) in links {
            let link = program_mut(&mut ebpf, name)?
                .take_link(link_id)
                .map_err(|source| BpfError::Program {
                    name,
                    action: "take link",
                    source,
                })?;
            let path = links_dir.join(name);
            FdLink::from(link)
                .pin(&path)
                .map_err(|source| BpfError::Pin {
                    path,
                    action: "pinning link",
                    source,
                })?;
        }
        // The pinned links keep the programs loaded; the object can go.
        drop(ebpf);
        let mut enforcer = Self {
            maps,
            programs: Programs::Pinned {
                dir: dir.to_owned(),
            },
            cache_enabled: true,
        };
        enforcer.policy_changed()?;
        Ok((enforcer, Startup::Loaded))
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
        if ScopeConfig::default().with_level(info.level).is_none() {
            return Err(BpfError::CgroupTooDeep {
                path: dir.display().to_string(),
                level: info.level,
            });
        }
        // The hash entry first, then the scope entry (mask and slots): a task is in scope only
        // once both list its cgroup.
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
        self.sync_scope()?;
        Ok(info)
    }

    /// Takes the cgroup with id `cgroup_id` out of jit's scope (its processes are no longer
    /// evaluated) and recomputes the scope entry.
    ///
    /// # Errors
    /// When a map operation fails.
    pub fn unregister_agent_cgroup(&mut self, cgroup_id: u64) -> Result<(), BpfError> {
        let mut cgroups = self.agent_cgroups()?;
        match cgroups.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(map_err(map_names::AGENT_CGROUPS, "remove")(source)),
        }
        self.sync_scope()
    }

    /// The scope entry: which agent cgroups the programs find in its slots, and at which levels
    /// agent cgroups are registered.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn scope(&mut self) -> Result<ScopeConfig, BpfError> {
        self.scope_config()?
            .get(&0, 0)
            .map_err(map_err(map_names::SCOPE_CONFIG, "read"))
    }

    /// Rewrites the scope entry (`SCOPE_CONFIG`) to list exactly the cgroups registered in
    /// `AGENT_CGROUPS`, in the order of writes that never lets a program search slots being
    /// rewritten (see `jit_common::scope`).
    fn sync_scope(&mut self) -> Result<(), BpfError> {
        let target = ScopeConfig::for_cgroups(self.registered_cgroups()?);
        let mut config = self.scope_config()?;
        let current = config
            .get(&0, 0)
            .map_err(map_err(map_names::SCOPE_CONFIG, "read"))?;
        let write = |config: &mut Array<&mut MapData, ScopeConfig>, value: ScopeConfig| {
            config
                .set(0, value, 0)
                .map_err(map_err(map_names::SCOPE_CONFIG, "update"))
        };
        match current.slot_update(&target) {
            SlotUpdate::Direct(value) => write(&mut config, value)?,
            SlotUpdate::Rebuild {
                hide,
                rewrite,
                publish,
            } => {
                write(&mut config, hide)?;
                wait_for_rcu_readers();
                write(&mut config, rewrite)?;
                write(&mut config, publish)?;
            }
        }
        self.policy_changed()
    }

    /// Removes an agent's configuration; its cgroups, if any are still registered, then fail
    /// closed.
    ///
    /// # Errors
    /// When the map update fails.
    pub fn remove_agent_config(&mut self, agent_id: u32) -> Result<(), BpfError> {
        let mut configs: HashMap<_, u32, AgentConfig> = self.open(map_names::AGENT_CONFIG)?;
        match configs.remove(&agent_id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(map_err(map_names::AGENT_CONFIG, "remove")(source)),
        }
        self.policy_changed()
    }

    /// Sets an agent's default decision, mode and wildcard positions.
    ///
    /// # Errors
    /// When the map update fails.
    pub fn set_agent_config(&mut self, agent_id: u32, config: AgentConfig) -> Result<(), BpfError> {
        let mut configs: HashMap<_, u32, AgentConfig> = self.open(map_names::AGENT_CONFIG)?;
        configs
            .insert(agent_id, config, 0)
            .map_err(map_err(map_names::AGENT_CONFIG, "insert"))?;
        self.policy_changed()
    }

    /// Adds or replaces one compiled rule.
    ///
    /// # Errors
    /// As [`Enforcer::insert_rules`].
    pub fn insert_rule(&mut self, key: &PolicyKey, value: PolicyValue) -> Result<(), BpfError> {
        self.insert_rules([(*key, value)])
    }

    /// Adds or replaces compiled rules, in order, stopping at the first that fails; cached
    /// decisions are invalidated once, after the last (also after a failure, for the rules
    /// inserted before it).
    ///
    /// # Errors
    /// [`BpfError::RuleIdZero`] for a value with rule id 0 (see `PolicyValue::NO_MATCH`); when
    /// a map update fails (for example when the map is full).
    pub fn insert_rules(
        &mut self,
        rules: impl IntoIterator<Item = (PolicyKey, PolicyValue)>,
    ) -> Result<(), BpfError> {
        let mut trie: LpmTrie<_, [u8; KEY_DATA_LEN], PolicyValue> = self.open(map_names::POLICY)?;
        let inserted = rules.into_iter().try_for_each(|(key, value)| {
            if !value.is_match() {
                return Err(BpfError::RuleIdZero);
            }
            trie.insert(&Key::new(key.prefixlen, key.data), value, 0)
                .map_err(map_err(map_names::POLICY, "insert"))
        });
        self.policy_changed()?;
        inserted
    }

    /// Sets who and what processes in agent cgroups may not touch, on top of what is always
    /// refused to them (writing to cgroup and bpf filesystems, calling `bpf()`):
    ///
    /// - `daemon_tgid`: the daemon's process id; agents can neither signal it (any signal,
    ///   0 included, also as a file owner's `SIGIO`) nor ptrace it (attach, `/proc/PID/mem`,
    ///   `process_vm_readv`, ...), nor change anything under `/proc/PID/` (`oom_score_adj`, ...).
    ///   0 turns this part off.
    /// - `protected`: the daemon's files and directories (policy directory, audit log
    ///   directory, config file, control socket directory). Agents cannot write, create,
    ///   unlink, rename, truncate, chmod, chown, link, symlink, mkdir or rmdir the path itself
    ///   or anything below it, nor rename or remove a directory above it; whatever their mode
    ///   (shadow too), default, rules and grants say.
    ///
    /// Each path is resolved (symlinks followed) when it exists, since the kernel matches
    /// resolved paths; a path that does not exist yet is taken as given and must be absolute.
    /// Replaces the previous set: the new entries are in place before the old ones are
    /// removed, so a path protected before and after is never unprotected in between.
    /// Denials are reported as decision events with rule id
    /// [`jit_common::protect::SELF_PROTECTION_RULE_ID`].
    ///
    /// # Errors
    /// [`BpfError::ProtectedPath`] for a path that cannot be protected (`/`, relative, too
    /// long for a policy key); map errors.
    pub fn set_protection(
        &mut self,
        daemon_tgid: u32,
        protected: &[&Path],
    ) -> Result<(), BpfError> {
        let mut keys: Vec<PolicyKey> = Vec::new();
        // The daemon's /proc directory too: no agent may write its oom_score_adj (to make it
        // the OOM killer's first victim), its attributes or anything else there.
        let proc_dir = (daemon_tgid != 0).then(|| PathBuf::from(format!("/proc/{daemon_tgid}")));
        for path in protected.iter().copied().chain(proc_dir.as_deref()) {
            let resolved = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
            let bytes = resolved.as_os_str().as_encoded_bytes();
            protect::protected_patterns(bytes, |pattern| {
                let key = protect::protected_key(pattern)?;
                if !keys.contains(&key) {
                    keys.push(key);
                }
                Ok(())
            })
            .map_err(|source| BpfError::ProtectedPath {
                path: path.to_owned(),
                source,
            })?;
        }
        let mut trie: LpmTrie<_, [u8; KEY_DATA_LEN], u32> = self.open(map_names::PROTECTED)?;
        for key in &keys {
            trie.insert(&Key::new(key.prefixlen, key.data), 1, 0)
                .map_err(map_err(map_names::PROTECTED, "insert"))?;
        }
        let stale = trie
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(map_names::PROTECTED, "read"))?
            .into_iter()
            .filter(|old| {
                !keys
                    .iter()
                    .any(|k| k.prefixlen == old.prefix_len() && k.data == old.data())
            })
            .collect::<Vec<_>>();
        for key in &stale {
            match trie.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(map_err(map_names::PROTECTED, "remove")(source)),
            }
        }
        let mut config: Array<_, ProtectConfig> = self.open(map_names::PROTECT_CONFIG)?;
        config
            .set(
                0,
                ProtectConfig {
                    daemon_tgid,
                    pad: 0,
                },
                0,
            )
            .map_err(map_err(map_names::PROTECT_CONFIG, "update"))?;
        self.policy_changed()
    }

    /// The event ring buffer. Can be taken once; events are read with `RingBuf::next`.
    ///
    /// # Errors
    /// When it was taken already.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, BpfError> {
        let map = self
            .maps
            .remove(map_names::EVENTS)
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
        let array: PerCpuArray<_, u64> = self.open(map_names::COUNTERS)?;
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
        let pending: HashMap<_, u32, PendingRequest> = self.open(map_names::PENDING)?;
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
        let mut pending: HashMap<_, u32, PendingRequest> = self.open(map_names::PENDING)?;
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
        // Only ever an update of the kernel's entry (`BPF_EXIST`), never a new one: the kernel
        // may have removed it meanwhile (its stop failed), and only the kernel makes entries
        // (its hold counters rely on that, see `jit_common::pending::held_slot`).
        match pending.insert(tid, request, BPF_EXIST) {
            Ok(()) => {}
            Err(MapError::SyscallError(err))
                if err.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Err(BpfError::NotPending { tid, request_id });
            }
            Err(source) => return Err(map_err(map_names::PENDING, "update")(source)),
        }
        let pid = nix::unistd::Pid::from_raw(request.tgid.cast_signed());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).map_err(|source| {
            BpfError::Continue {
                tgid: request.tgid,
                source,
            }
        })
    }

    /// Forgets the pending entry of thread `tid` if it is still request `request_id`: for a
    /// task killed or gone while held (its entry would otherwise stay in the map forever).
    ///
    /// # Errors
    /// When the map cannot be read or updated.
    pub fn remove_pending(&mut self, tid: u32, request_id: u64) -> Result<(), BpfError> {
        let mut pending: HashMap<_, u32, PendingRequest> = self.open(map_names::PENDING)?;
        match pending.get(&tid, 0) {
            Ok(request) if request.request_id == request_id => match pending.remove(&tid) {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(source) => Err(map_err(map_names::PENDING, "remove")(source)),
            },
            Ok(_) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(map_err(map_names::PENDING, "read")(source)),
        }
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
        let mut grants: HashMap<_, GrantKey, GrantValue> = self.open(map_names::GRANTS)?;
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

    fn map(&mut self, name: &'static str) -> Result<&mut Map, BpfError> {
        self.maps.get_mut(name).ok_or(BpfError::MissingMap { name })
    }

    /// Map `name` as the typed aya map `M` (which checks key and value sizes).
    fn open<'a, M>(&'a mut self, name: &'static str) -> Result<M, BpfError>
    where
        M: TryFrom<&'a mut Map, Error = MapError>,
    {
        M::try_from(self.map(name)?).map_err(map_err(name, "open"))
    }

    /// Detaches every program: from now on no process is affected by jit. Pinned programs are
    /// unpinned (links and maps), which detaches them once no other process holds them.
    ///
    /// # Errors
    /// When the kernel refuses to detach, or a pin cannot be removed.
    pub fn detach(mut self) -> Result<(), BpfError> {
        match &mut self.programs {
            Programs::Owned { ebpf, links } => {
                for (name, link) in std::mem::take(links) {
                    let prog: &mut Lsm = program_mut(ebpf, name)?;
                    prog.detach(link).map_err(|source| BpfError::Program {
                        name,
                        action: "detach",
                        source,
                    })?;
                }
            }
            Programs::Pinned { dir } => {
                for sub in ["links", "maps"] {
                    let sub = dir.join(sub);
                    remove_pins(&sub)?;
                    remove_dir(&sub)?;
                }
                remove_dir(dir)?;
            }
        }
        Ok(())
    }

    /// Every agent's configuration: `(agent id, config)`.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn agent_configs(&mut self) -> Result<Vec<(u32, AgentConfig)>, BpfError> {
        let configs: HashMap<_, u32, AgentConfig> = self.open(map_names::AGENT_CONFIG)?;
        configs
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(map_names::AGENT_CONFIG, "read"))
    }

    /// Every registered agent cgroup: `(cgroup id, entry)`.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn registered_cgroups(&mut self) -> Result<Vec<(u64, AgentCgroup)>, BpfError> {
        self.agent_cgroups()?
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(map_names::AGENT_CGROUPS, "read"))
    }

    /// Removes every rule whose rule set is not in `keep`; returns how many were removed.
    ///
    /// # Errors
    /// When the map cannot be read or an entry cannot be removed.
    pub fn retain_rulesets(&mut self, keep: &[u32]) -> Result<usize, BpfError> {
        let mut trie: LpmTrie<_, [u8; KEY_DATA_LEN], PolicyValue> = self.open(map_names::POLICY)?;
        let stale = trie
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(map_names::POLICY, "read"))?
            .into_iter()
            .filter(|key| {
                let [a, b, c, d, ..] = key.data();
                !keep.contains(&u32::from_be_bytes([a, b, c, d]))
            })
            .collect::<Vec<_>>();
        for key in &stale {
            match trie.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(map_err(map_names::POLICY, "remove")(source)),
            }
        }
        self.policy_changed()?;
        Ok(stale.len())
    }

    /// Turns the write-decision cache (see `jit_common::cache`) on, the default, or off: off,
    /// every write open is decided in full. For measuring what the cache saves.
    ///
    /// # Errors
    /// When the map update fails.
    pub fn set_decision_cache(&mut self, enabled: bool) -> Result<(), BpfError> {
        self.cache_enabled = enabled;
        self.policy_changed()
    }

    /// Invalidates every cached write decision: called after every change to the rules, agent
    /// configurations, scope or protected paths, which the cached decisions were made under.
    /// Writes the next policy generation, or 0 while the cache is off.
    fn policy_changed(&mut self) -> Result<(), BpfError> {
        let enabled = self.cache_enabled;
        let mut generation: Array<_, u64> = self.open(map_names::POLICY_GEN)?;
        let current = generation
            .get(&0, 0)
            .map_err(map_err(map_names::POLICY_GEN, "read"))?;
        let next = if enabled {
            current.wrapping_add(1).max(1)
        } else {
            0
        };
        generation
            .set(0, next, 0)
            .map_err(map_err(map_names::POLICY_GEN, "update"))
    }

    fn agent_cgroups(&mut self) -> Result<HashMap<&mut MapData, u64, AgentCgroup>, BpfError> {
        self.open(map_names::AGENT_CGROUPS)
    }

    fn scope_config(&mut self) -> Result<Array<&mut MapData, ScopeConfig>, BpfError> {
        self.open(map_names::SCOPE_CONFIG)
    }
}

/// Returns once every BPF program that was running when it was called has returned: BPF LSM
/// programs run inside an RCU read-side section, and `membarrier(MEMBARRIER_CMD_GLOBAL)` waits
/// for an RCU grace period (`synchronize_rcu`).
///
/// The command is refused on `nohz_full` kernels; then a pause far longer than any program runs
/// (they take microseconds) stands in, and the fallback is logged.
fn wait_for_rcu_readers() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    // SAFETY: plain syscall without pointer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "membarrier(MEMBARRIER_CMD_GLOBAL) failed; waiting 100 ms for running BPF programs instead"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn map_err(name: &'static str, action: &'static str) -> impl FnOnce(MapError) -> BpfError {
    move |source| BpfError::Map {
        name,
        action,
        source,
    }
}

/// Loads the embedded object with the struct layouts of the running kernel.
/// The programs (name, hook) this kernel gets: every one of `program_names::ALL` whose hook it
/// has (`program_names::OPTIONAL_HOOKS` may be missing on older kernels) with the signature
/// the program was written for (`program_names::FOR_SIGNATURE`).
///
/// # Errors
/// When the kernel's BTF cannot be read.
pub fn programs_for_this_kernel() -> Result<Vec<(&'static str, &'static str)>, BpfError> {
    let kernel = KernelBtf::from_sys_fs().map_err(BpfError::Layout)?;
    Ok(program_names::ALL
        .into_iter()
        .filter(|(name, hook)| {
            let params = kernel.func_param_count(&format!("bpf_lsm_{hook}")).ok();
            let hook_ok = params.is_some() || !program_names::OPTIONAL_HOOKS.contains(hook);
            let signature_ok = program_names::FOR_SIGNATURE
                .iter()
                .find(|(program, _)| program == name)
                .is_none_or(|(_, wanted)| params == Some(*wanted));
            hook_ok && signature_ok
        })
        .collect())
}

fn load_object() -> Result<Ebpf, BpfError> {
    let object = EBPF_OBJECT.ok_or(BpfError::NotBuilt)?;
    let kernel = KernelBtf::from_sys_fs().map_err(BpfError::Layout)?;
    let layout = kbtf::kernel_layout(&kernel).map_err(BpfError::Layout)?;
    let seqlocks = fs::read_to_string("/proc/kallsyms")
        .map_or(SeqLocks::UNSET, |text| SeqLocks::from_kallsyms(&text));
    if seqlocks.known() {
        tracing::debug!("write-decision cache on (rename_lock and mount_lock found in kallsyms)");
    } else {
        tracing::warn!(
            "write-decision cache off: rename_lock and mount_lock are not in /proc/kallsyms \
             (kernel without CONFIG_KALLSYMS_ALL?); every write open is decided in full"
        );
    }
    EbpfLoader::new()
        .override_global(LAYOUT_GLOBAL, &layout, true)
        .override_global(SEQLOCKS_GLOBAL, &seqlocks, true)
        .load(object)
        .map_err(BpfError::Load)
}

fn take_user_maps(ebpf: &mut Ebpf) -> Result<BTreeMap<&'static str, Map>, BpfError> {
    USER_MAPS
        .iter()
        .map(|&(name, ..)| {
            let map = ebpf.take_map(name).ok_or(BpfError::MissingMap { name })?;
            Ok((name, map))
        })
        .collect()
}

fn check_compatible(
    data: &MapData,
    path: &Path,
    dir: &Path,
    key: usize,
    value: usize,
) -> Result<(), BpfError> {
    let info = data.info().map_err(|source| BpfError::PinnedMap {
        path: path.to_owned(),
        action: "inspect",
        source,
    })?;
    let want = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    if info.key_size() != want(key) || info.value_size() != want(value) {
        return Err(BpfError::IncompatiblePin {
            path: path.to_owned(),
            dir: dir.to_owned(),
            key_size: info.key_size(),
            value_size: info.value_size(),
            want_key: want(key),
            want_value: want(value),
        });
    }
    Ok(())
}

fn create_pin_dir(dir: &Path) -> Result<(), BpfError> {
    fs::create_dir_all(dir).map_err(|source| BpfError::PinIo {
        path: dir.to_owned(),
        action: "creating the pin directory",
        source,
    })
}

/// Removes every pin (file) in `dir`; a missing `dir` has none.
fn remove_pins(dir: &Path) -> Result<(), BpfError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BpfError::PinIo {
                path: dir.to_owned(),
                action: "listing pins",
                source,
            });
        }
    };
    for entry in entries {
        let path = entry
            .map_err(|source| BpfError::PinIo {
                path: dir.to_owned(),
                action: "listing pins",
                source,
            })?
            .path();
        fs::remove_file(&path).map_err(|source| BpfError::PinIo {
            path: path.clone(),
            action: "removing a pin",
            source,
        })?;
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<(), BpfError> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BpfError::PinIo {
            path: dir.to_owned(),
            action: "removing the pin directory",
            source,
        }),
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
    let started = std::time::Instant::now();
    prog.load(hook, btf).map_err(wrap("load"))?;
    tracing::debug!(
        program = name,
        ms = started.elapsed().as_millis(),
        "program loaded (verified)"
    );
    prog.attach().map_err(wrap("attach"))
}
