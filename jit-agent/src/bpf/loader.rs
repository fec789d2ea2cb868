//! Loading jit's programs: owned by this process ([`Enforcer::load_and_attach`], dropping the
//! enforcer detaches them: for tests and benchmarks) or pinned in bpffs
//! ([`Enforcer::load_pinned`]) so enforcement, held tasks and undelivered events outlive the
//! process: the daemon's way. A restarted daemon adopts the pinned state instead of loading
//! anew, so there is no moment without enforcement (docs/ARCHITECTURE.md, I2).
use std::{collections::BTreeMap, fs, io, mem::size_of, path::Path};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Map, MapData},
    programs::{Lsm, ProgramError, links::FdLink, lsm::LsmLinkId},
};
use jit_common::{
    AgentCgroup, ScopeConfig,
    cache::{SEQLOCKS_GLOBAL, SeqLocks},
    event::{DenialCount, DenialKey},
    layout::LAYOUT_GLOBAL,
    map_names,
    pending::{ExecBinding, GrantKey, GrantValue, PendingRequest},
    policy::{AgentConfig, IdentityKey, PolicyKey, PolicyValue},
    program_names,
    protect::ProtectConfig,
};

use super::{BpfError, Enforcer, Programs};
use crate::btf::{self as kbtf, KernelBtf};

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

/// Where the daemon pins programs, links and maps by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/jit";

/// The maps userspace drives, with the key and value sizes this version expects of them
/// (compared with pinned maps before adopting them; a ring buffer has neither).
const USER_MAPS: [(&str, usize, usize); 16] = [
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
    (map_names::BIND_KEY, size_of::<u32>(), size_of::<[u64; 2]>()),
    (
        map_names::EXEC_BIND,
        // Keyed by task (`task_struct` address), see jit-ebpf's `maps::bind_key`.
        size_of::<u64>(),
        size_of::<ExecBinding>(),
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
    (
        map_names::IDENTITY,
        size_of::<IdentityKey>(),
        size_of::<u32>(),
    ),
    (
        map_names::DENIALS,
        size_of::<DenialKey>(),
        size_of::<DenialCount>(),
    ),
    // Provenance marks outlive the daemon like holds do (see `jit_common::provenance`).
    (
        map_names::MARKS,
        size_of::<jit_common::provenance::MarkKey>(),
        size_of::<jit_common::provenance::Mark>(),
    ),
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
        enforcer.bind_key()?;
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
            enforcer.bind_key()?;
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
        enforcer.bind_key()?;
        Ok((enforcer, Startup::Loaded))
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

pub(super) fn load_object() -> Result<Ebpf, BpfError> {
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

pub(super) fn attach_lsm(
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
