//! Agent configurations and rule sets: what the programs decide by.
use aya::maps::{
    HashMap, MapError,
    lpm_trie::{Key, LpmTrie},
};
use jit_common::{
    map_names,
    policy::{AgentConfig, IdentityKey, KEY_DATA_LEN, PolicyKey, PolicyValue},
};

use super::{BpfError, Enforcer, map_err};

impl Enforcer {
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

    /// Adds or replaces identity map entries (see `jit_common::policy::IdentityKey`).
    ///
    /// # Errors
    /// When a map update fails (for example when the map is full).
    pub fn insert_identities(
        &mut self,
        entries: impl IntoIterator<Item = (IdentityKey, u32)>,
    ) -> Result<(), BpfError> {
        let mut map: HashMap<_, IdentityKey, u32> = self.open(map_names::IDENTITY)?;
        for (key, offset) in entries {
            map.insert(key, offset, 0)
                .map_err(map_err(map_names::IDENTITY, "insert"))?;
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

    /// Removes every rule (and identity map entry) whose rule set is not in `keep`; returns
    /// how many rules were removed.
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
        let mut identities: HashMap<_, IdentityKey, u32> = self.open(map_names::IDENTITY)?;
        let stale_ids = identities
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(map_names::IDENTITY, "read"))?
            .into_iter()
            .filter(|key| !keep.contains(&key.ruleset))
            .collect::<Vec<_>>();
        for key in &stale_ids {
            match identities.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(map_err(map_names::IDENTITY, "remove")(source)),
            }
        }
        self.policy_changed()?;
        Ok(stale.len())
    }
}
