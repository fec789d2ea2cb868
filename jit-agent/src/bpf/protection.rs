//! Self-protection: the daemon's process and files, out of every agent's reach.
use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::maps::{
    Array, MapError,
    lpm_trie::{Key, LpmTrie},
};
use jit_common::{
    map_names,
    policy::{KEY_DATA_LEN, PolicyKey},
    protect::{self, ProtectConfig},
};

use super::{BpfError, Enforcer, map_err};

impl Enforcer {
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
}
