//! Who an agent is: its name and the cgroups its processes live in. Checked separately from
//! the rest of the file because the checks across files (unique names, one agent per cgroup)
//! need them even when other parts of the file are wrong.
use jit_common::scope::MAX_AGENT_CGROUP_LEVEL;

use super::{
    error::{FileErrors, Position},
    raw::{RawAgent, StringOrList},
};

/// Longest agent name: names end up in audit records, socket messages and `jitctl` output.
const MAX_NAME_LEN: usize = 64;

/// What the checks across files need, available even when the rest of the file is wrong.
pub(super) struct Identity {
    pub name: String,
    pub name_at: Position,
    pub cgroups: Vec<(String, Position)>,
}

/// The agent's name and cgroups, checked.
pub(super) fn identity(errs: &mut FileErrors<'_>, agent: &RawAgent) -> Option<Identity> {
    let name = agent.name.get_ref();
    let name_ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        errs.at(
            &agent.name.span(),
            format!(
                "bad agent name `{name}`: use 1 to {MAX_NAME_LEN} letters, digits, `-`, `_` or \
                 `.`, not starting with `-` or `.`"
            ),
        );
    }
    let mut cgroups: Vec<(String, Position)> = Vec::new();
    let mut all_ok = true;
    for (raw, span) in StringOrList::items(&agent.cgroups) {
        match normalize_cgroup(raw) {
            Ok(c) => {
                if cgroups.iter().any(|(seen, _)| *seen == c) {
                    errs.at(&span, format!("cgroup `{c}` is listed twice"));
                } else {
                    cgroups.push((c, errs.position(&span)));
                }
            }
            Err(message) => {
                all_ok = false;
                errs.at(&span, format!("bad cgroup `{raw}`: {message}"));
            }
        }
    }
    if all_ok && cgroups.is_empty() {
        errs.at(
            &agent.cgroups.span(),
            "`cgroups` is empty: the agent would govern no process",
        );
    }
    name_ok.then(|| Identity {
        name: name.clone(),
        name_at: errs.position(&agent.name.span()),
        cgroups,
    })
}

/// `jit/coding-agent` from `jit/coding-agent`, `/jit/coding-agent` or `jit/coding-agent/`.
///
/// A leading `/` is accepted because `/proc/PID/cgroup` writes cgroup paths that way; both
/// mean "relative to the cgroup2 mount".
pub(super) fn normalize_cgroup(raw: &str) -> Result<String, String> {
    let path = raw.strip_prefix('/').unwrap_or(raw);
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return Err(
            "the root cgroup holds every process on the host; name a cgroup below it, \
                    like `jit/my-agent`"
                .to_owned(),
        );
    }
    if let Some(rest) = path
        .strip_prefix("sys/fs/cgroup")
        .filter(|r| r.is_empty() || r.starts_with('/'))
    {
        return Err(format!(
            "cgroup paths are relative to the cgroup2 mount: write `{}`",
            rest.trim_start_matches('/')
        ));
    }
    let mut depth = 0u32;
    for component in path.split('/') {
        match component {
            "" => return Err("empty component (`//`)".to_owned()),
            "." | ".." => return Err("`.` and `..` components are not allowed".to_owned()),
            c if c.contains('\0') => return Err("contains a NUL byte".to_owned()),
            _ => depth += 1,
        }
    }
    if depth > MAX_AGENT_CGROUP_LEVEL {
        return Err(format!(
            "{depth} levels deep; agent cgroups can be at most {MAX_AGENT_CGROUP_LEVEL} levels \
             below the root"
        ));
    }
    Ok(path.to_owned())
}
