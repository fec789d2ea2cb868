//! Which cgroups are agents: `AGENT_CGROUPS` and the scope entry the programs check first.
use std::path::Path;

use aya::maps::{Array, HashMap, MapData, MapError};
use jit_common::{AgentCgroup, ScopeConfig, map_names, scope::SlotUpdate};

use super::{BpfError, Enforcer, map_err};
use crate::cgroup::{self, CgroupInfo};

impl Enforcer {
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

    pub(super) fn agent_cgroups(
        &mut self,
    ) -> Result<HashMap<&mut MapData, u64, AgentCgroup>, BpfError> {
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
