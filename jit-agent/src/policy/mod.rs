//! Policy: TOML files to typed, validated rules, and rules to policy map entries.
//!
//! The pipeline is `load_dir` (parse and validate every `*.toml` of a directory, one agent per
//! file) → [`PolicySet`] → [`compile`] at an instant → [`Compiled`] (per agent an
//! [`AgentConfig`](jit_common::policy::AgentConfig) and map entries) →
//! [`CompiledAgent::keys`] under a ruleset id chosen by the daemon.
//!
//! Loading is all or nothing: a set with any error is rejected as a whole with every error
//! found, each as `FILE:LINE:COL: message`, so the daemon keeps the previous policy
//! (docs/ARCHITECTURE.md, I3: a bad policy never weakens enforcement). The file format, its defaults and its
//! errors are documented in `policies/README.md`.
pub mod args;
mod compile;
pub mod conditions;
mod error;
mod escalation;
mod identity;
mod model;
mod parse;
mod raw;
mod values;
mod window;

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
};

use jiff::Timestamp;

use self::parse::{FileOutcome, parse_file};
pub use self::{
    compile::{
        Compiled, CompiledAgent, Entry, IdentityClasses, RuleInfo, ancestor_guards, compile,
        compile_agent, compile_classes, pattern_matches,
    },
    error::{PolicyError, PolicyErrors, Position},
    escalation::DEFAULT_TIMEOUT,
    model::{
        Account, AgentPolicy, Approvers, Escalation, Grant, Level, MAX_HINT, OnTimeout, OpGroup,
        Review, Risk, Rule, RulePath, Subject, Who,
    },
    parse::parse_sha256,
    window::{Activity, TimeWindow, When, WindowError},
};

/// A validated set of agent policies; only the loaders build one.
#[derive(Clone, Debug)]
pub struct PolicySet {
    agents: Vec<AgentPolicy>,
}

impl PolicySet {
    /// The agents, in file-name order.
    #[must_use]
    pub fn agents(&self) -> &[AgentPolicy] {
        &self.agents
    }

    #[must_use]
    pub fn agent(&self, name: &str) -> Option<&AgentPolicy> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// The rule with id `id` and its agent.
    #[must_use]
    pub fn rule(&self, id: u32) -> Option<(&AgentPolicy, &Rule)> {
        self.agents
            .iter()
            .find_map(|a| a.rules.iter().find(|r| r.id == id).map(|r| (a, r)))
    }

    /// The first instant strictly after `after` at which some rule's `when` condition changes:
    /// the daemon compiles again then. `None` when no rule has a changing condition.
    #[must_use]
    pub fn next_transition(&self, after: Timestamp) -> Option<Timestamp> {
        self.agents
            .iter()
            .flat_map(|a| &a.rules)
            .filter_map(|r| r.when.as_ref()?.next_transition(after))
            .min()
    }
}

/// Loads every `*.toml` file directly in `dir` (not in subdirectories; names starting with `.`,
/// such as editor backups, are skipped), in file-name order.
///
/// # Errors
/// Every problem found in any file, and the directory being unreadable or holding no policy
/// (an empty directory is refused rather than read as "govern no agent", which would silently
/// lift all enforcement).
pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyErrors> {
    load_dir_with(dir, LoadOptions::default())
}

/// How a policy is loaded: the daemon always uses the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Resolve approver users and groups through NSS (the daemon must: it authorizes reviewers
    /// by id). `false` is `jitctl policy ... --offline`, for machines without those accounts
    /// (CI): names are checked for duplicates only and get the id [`UNRESOLVED_ID`].
    pub resolve_accounts: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            resolve_accounts: true,
        }
    }
}

/// [`Account::id`] of an approver loaded with `resolve_accounts = false`: `(uid_t) -1`, which
/// no account has. Such a set is for offline tooling only and never reaches the daemon.
pub const UNRESOLVED_ID: u32 = u32::MAX;

/// [`load_dir`] with `options`.
///
/// # Errors
/// As [`load_dir`].
pub fn load_dir_with(dir: &Path, options: LoadOptions) -> Result<PolicySet, PolicyErrors> {
    load_dir_sources_with(dir, options).map(|(set, _)| set)
}

/// [`load_dir`], also returning the texts the set was made of (`(path, text)` in file-name
/// order): what the daemon keeps as its last good policy.
///
/// # Errors
/// As [`load_dir`].
pub fn load_dir_sources(dir: &Path) -> Result<(PolicySet, Vec<(PathBuf, String)>), PolicyErrors> {
    load_dir_sources_with(dir, LoadOptions::default())
}

fn load_dir_sources_with(
    dir: &Path,
    options: LoadOptions,
) -> Result<(PolicySet, Vec<(PathBuf, String)>), PolicyErrors> {
    let whole = |file: &Path, message: String| PolicyError {
        file: file.to_owned(),
        position: None,
        message,
    };
    let entries = fs::read_dir(dir)
        .and_then(Iterator::collect::<io::Result<Vec<_>>>)
        .map_err(|e| {
            PolicyErrors(vec![whole(
                dir,
                format!("cannot read policy directory: {e}"),
            )])
        })?;
    let mut paths: Vec<PathBuf> = entries
        .into_iter()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && p.file_name()
                    .is_some_and(|n| !n.as_encoded_bytes().starts_with(b"."))
        })
        .collect();
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));

    let mut errors = Vec::new();
    let mut sources = Vec::new();
    for path in paths {
        match fs::metadata(&path) {
            Ok(m) if !m.is_file() => errors.push(whole(&path, "not a regular file".to_owned())),
            Ok(_) => match fs::read_to_string(&path) {
                Ok(text) => sources.push((path, text)),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    errors.push(whole(&path, "not valid UTF-8".to_owned()));
                }
                Err(e) => errors.push(whole(&path, format!("cannot read: {e}"))),
            },
            Err(e) => errors.push(whole(&path, format!("cannot read: {e}"))),
        }
    }
    if sources.is_empty() && errors.is_empty() {
        errors.push(whole(
            dir,
            "no policy files (*.toml) in this directory".to_owned(),
        ));
    }
    let set = load_sources(
        sources.iter().map(|(p, t)| (p.as_path(), t.as_str())),
        errors,
        options,
    )?;
    Ok((set, sources))
}

/// Loads one policy from `text`, reporting errors against the file name `name`. For tests and
/// for checking a single file.
///
/// # Errors
/// Every problem found in the text.
pub fn load_str(name: &str, text: &str) -> Result<PolicySet, PolicyErrors> {
    load_sources(
        [(Path::new(name), text)],
        Vec::new(),
        LoadOptions::default(),
    )
}

/// [`load_str`] with `options`.
///
/// # Errors
/// Every problem found in the text.
pub fn load_str_with(
    name: &str,
    text: &str,
    options: LoadOptions,
) -> Result<PolicySet, PolicyErrors> {
    load_sources([(Path::new(name), text)], Vec::new(), options)
}

/// Parses each file, checks them against each other and numbers the rules.
fn load_sources<'a>(
    sources: impl IntoIterator<Item = (&'a Path, &'a str)>,
    mut errors: Vec<PolicyError>,
    options: LoadOptions,
) -> Result<PolicySet, PolicyErrors> {
    let outcomes: Vec<(&Path, FileOutcome)> = sources
        .into_iter()
        .map(|(file, text)| (file, parse_file(file, text, options, &mut errors)))
        .collect();
    check_across(&outcomes, &mut errors);
    if !errors.is_empty() {
        errors.sort();
        errors.dedup();
        return Err(PolicyErrors(errors));
    }
    let mut agents: Vec<AgentPolicy> = outcomes.into_iter().filter_map(|(_, o)| o.agent).collect();
    for (id, rule) in (1u32..).zip(agents.iter_mut().flat_map(|a| &mut a.rules)) {
        rule.id = id;
    }
    Ok(PolicySet { agents })
}

/// Agent names are unique, and a cgroup belongs to at most one agent: claiming the same cgroup,
/// or one inside another agent's, would leave it to map insertion order which policy governs
/// a process.
fn check_across(outcomes: &[(&Path, FileOutcome)], errors: &mut Vec<PolicyError>) {
    let mut names: HashMap<&str, &Path> = HashMap::new();
    // (cgroup, agent, file) of every claim so far.
    let mut claims: Vec<(&str, &str, &Path)> = Vec::new();
    for (file, outcome) in outcomes {
        let Some(id) = &outcome.identity else {
            continue;
        };
        let mut report = |position: Position, message: String| {
            errors.push(PolicyError {
                file: file.to_path_buf(),
                position: Some(position),
                message,
            });
        };
        if let Some(first) = names.get(id.name.as_str()) {
            report(
                id.name_at,
                format!(
                    "agent `{}` is already defined in {}",
                    id.name,
                    first.display()
                ),
            );
        } else {
            names.insert(&id.name, file);
        }
        for (cgroup, at) in &id.cgroups {
            // The first conflict is enough to say what is wrong; listing every cgroup below
            // a broad claim (`jit`) would bury it.
            for &(other, agent, other_file) in claims.iter().filter(|c| c.2 != *file) {
                let message = if other == cgroup {
                    format!(
                        "cgroup `{cgroup}` is already claimed by agent `{agent}` in {}",
                        other_file.display()
                    )
                } else if is_below(cgroup, other) {
                    format!(
                        "cgroup `{cgroup}` is inside cgroup `{other}` of agent `{agent}` ({}); \
                         a cgroup can belong to one agent only",
                        other_file.display()
                    )
                } else if is_below(other, cgroup) {
                    format!(
                        "cgroup `{cgroup}` contains cgroup `{other}` of agent `{agent}` ({}); \
                         a cgroup can belong to one agent only",
                        other_file.display()
                    )
                } else {
                    continue;
                };
                report(*at, message);
                break;
            }
        }
        for (cgroup, _) in &id.cgroups {
            if !claims.iter().any(|c| c.0 == cgroup) {
                claims.push((cgroup, &id.name, file));
            }
        }
    }
}

/// Whether cgroup `inner` is strictly below cgroup `outer`.
fn is_below(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.starts_with('/'))
}
