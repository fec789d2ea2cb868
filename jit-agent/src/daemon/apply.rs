//! Installing a compiled policy in the kernel without a gap.
//!
//! Every agent's rules are written under a fresh rule set id while the old rule set keeps
//! deciding; then one map update per agent switches its configuration (default, mode, wildcard
//! positions and rule set id together) to the new rule set. The kernel reads that entry once per
//! decision, so each decision uses the old rules or the new ones, never a mix and never neither.
//! The old rule sets are removed after a grace period, when no program can still be using them.
//! Anything that fails before the switch leaves the old policy in force untouched.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use sha2::{Digest as _, Sha256};

use crate::{
    bpf::{BpfError, Enforcer},
    cgroup,
    policy::Compiled,
};

/// Why a policy could not be installed (the previous one stays in force).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("agent {agent}: cgroup {path}: {action} failed: {source}")]
    Cgroup {
        agent: String,
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("agent {agent}: {source}")]
    Inspect {
        agent: String,
        #[source]
        source: cgroup::CgroupError,
    },
    #[error("agents {first} and {second} have the same agent id {id:#010x}; rename one of them")]
    IdCollision {
        first: String,
        second: String,
        id: u32,
    },
    #[error("installing the policy in the kernel failed: {0}")]
    Kernel(#[from] BpfError),
}

/// One agent as installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledAgent {
    pub id: u32,
    pub ruleset: u32,
    /// `(path relative to the cgroup2 mount, cgroup id)`.
    pub cgroups: Vec<(String, u64)>,
    pub rules: usize,
}

/// The agent id of `name`: derived from the name, so a restarted daemon (and any other tool)
/// finds the same agent under the same id without stored state. Never 0.
#[must_use]
pub fn agent_id(name: &str) -> u32 {
    let digest = Sha256::digest(name.as_bytes());
    let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    id.max(1)
}

/// Installs `compiled`: creates missing managed cgroups, writes the new rule sets, switches
/// every agent to its new rule set, registers the agents' cgroups and takes out of scope every
/// cgroup and agent the policy no longer has. Returns the installed agents by name.
///
/// `next_ruleset` is the first unused rule set id; it is advanced past the ids used.
///
/// # Errors
/// On any failure; when it happens before the switch, nothing the kernel uses changed.
pub fn install(
    enforcer: &mut Enforcer,
    cgroup_root: &Path,
    compiled: &Compiled,
    next_ruleset: &mut u32,
) -> Result<BTreeMap<String, InstalledAgent>, ApplyError> {
    // 1. Everything that can fail without touching the kernel.
    let mut ids: BTreeMap<u32, &str> = BTreeMap::new();
    let mut dirs: Vec<Vec<(String, PathBuf)>> = Vec::new();
    for agent in &compiled.agents {
        let id = agent_id(&agent.name);
        if let Some(first) = ids.insert(id, &agent.name) {
            return Err(ApplyError::IdCollision {
                first: first.to_owned(),
                second: agent.name.clone(),
                id,
            });
        }
        let mut agent_dirs = Vec::new();
        for rel in &agent.cgroups {
            let dir = cgroup_root.join(rel);
            fs::create_dir_all(&dir).map_err(|source| ApplyError::Cgroup {
                agent: agent.name.clone(),
                path: dir.clone(),
                action: "creating",
                source,
            })?;
            cgroup::inspect(&dir).map_err(|source| ApplyError::Inspect {
                agent: agent.name.clone(),
                source,
            })?;
            agent_dirs.push((rel.clone(), dir));
        }
        dirs.push(agent_dirs);
    }

    // 2. The new rule sets, beside the old ones.
    let live = live_rulesets(enforcer)?;
    let mut rulesets = Vec::with_capacity(compiled.agents.len());
    for agent in &compiled.agents {
        // An agent with `user`/`group` conditions takes a block of consecutive rule sets, one
        // per identity class; a block never wraps past the largest id.
        let count = agent.rulesets();
        if next_ruleset.checked_add(count).is_none() {
            *next_ruleset = 1;
        }
        let ruleset = *next_ruleset;
        *next_ruleset = ruleset.wrapping_add(count).max(1);
        let identities = agent
            .classes
            .as_ref()
            .map(|c| c.keys(ruleset))
            .unwrap_or_default();
        let written = enforcer
            .insert_rules(agent.keys(ruleset))
            .and_then(|()| enforcer.insert_identities(identities));
        if let Err(err) = written {
            // Undo: the half-written rule sets are not referenced by anything.
            let _ = enforcer.retain_rulesets(&live);
            return Err(err.into());
        }
        rulesets.push(ruleset);
    }

    // 3. The switch, agent by agent, then scope.
    let mut installed = BTreeMap::new();
    for ((agent, ruleset), agent_dirs) in compiled.agents.iter().zip(&rulesets).zip(&dirs) {
        let id = agent_id(&agent.name);
        enforcer.set_agent_config(id, agent.config.with_ruleset(*ruleset))?;
        let mut cgroups = Vec::new();
        for (rel, dir) in agent_dirs {
            let info = enforcer.register_agent_cgroup(dir, id)?;
            cgroups.push((rel.clone(), info.id));
        }
        installed.insert(
            agent.name.clone(),
            InstalledAgent {
                id,
                ruleset: *ruleset,
                cgroups,
                rules: agent.entry_count(),
            },
        );
    }

    // 4. Out of scope: cgroups and agents the policy no longer has (also those a previous
    //    daemon registered).
    let keep_cgroups: BTreeSet<u64> = installed
        .values()
        .flat_map(|a| a.cgroups.iter().map(|(_, id)| *id))
        .collect();
    for (cgroup_id, _) in enforcer.registered_cgroups()? {
        if !keep_cgroups.contains(&cgroup_id) {
            enforcer.unregister_agent_cgroup(cgroup_id)?;
        }
    }
    for (id, _) in enforcer.agent_configs()? {
        if !ids.contains_key(&id) {
            enforcer.remove_agent_config(id)?;
        }
    }
    Ok(installed)
}

/// The rule sets agents currently use (every one of an agent's identity classes).
///
/// # Errors
/// When the agent configurations cannot be read.
pub fn live_rulesets(enforcer: &mut Enforcer) -> Result<Vec<u32>, BpfError> {
    Ok(enforcer
        .agent_configs()?
        .into_iter()
        .flat_map(|(_, config)| {
            (0..=u32::from(config.extra_rulesets)).map(move |i| config.ruleset.wrapping_add(i))
        })
        .collect())
}

/// The first rule set id after every one in use.
///
/// # Errors
/// When the agent configurations cannot be read.
pub fn first_free_ruleset(enforcer: &mut Enforcer) -> Result<u32, BpfError> {
    Ok(live_rulesets(enforcer)?
        .into_iter()
        .max()
        .map_or(1, |max| max.wrapping_add(1).max(1)))
}
