//! Daemon-side conditions of a rule (policies/README.md, "Conditions"): what the kernel cannot
//! see cheaply — the command line of an `exec`, the working directory, the calling program and
//! its parent chain, the environment an `exec` passes, the target file's existence and size.
//!
//! A rule with conditions is compiled into the kernel as a `hold`; the daemon then reads these
//! facts from the stopped task and decides the held action by the first rule whose conditions
//! all hold, or, when none does, as if the conditional rules did not exist (see
//! `daemon::holds::assess`). This module holds the validated form of the conditions and their
//! evaluation against the facts; it reads nothing itself.
use super::{args::ArgsPattern, model::RulePath};

/// The conditions of one rule; every condition present must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// `args`: the exec's `argv[1..]` (op `exec` only).
    pub args: Option<ArgsPattern>,
    /// `cwd`: the working directory is one of these (a directory pattern also matches the
    /// directory itself).
    pub cwd: Vec<RulePath>,
    /// `caller`: the program of the acting process (`/proc/PID/exe`; for an exec, the program
    /// calling it) is one of these.
    pub caller: Vec<RulePath>,
    /// `ancestor`: some process in the parent chain runs one of these.
    pub ancestor: Vec<RulePath>,
    /// `env`: each variable is set to a value matching its pattern (op `exec` only: the
    /// environment the new program gets).
    pub env: Vec<(String, ArgsPattern)>,
    /// `target`: the file the action names exists or not, and its size.
    pub target: Option<TargetCondition>,
    /// `sha256`: the SHA-256 of the executed (or mapped) file is one of these (op `exec` only).
    pub sha256: Vec<[u8; 32]>,
}

/// `target = { exists = BOOL, min_size = SIZE, max_size = SIZE }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetCondition {
    pub exists: Option<bool>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
}

/// What the daemon read about a held action; `None` where it could not read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// `argv[1..]` of a held exec.
    pub args: Option<Vec<String>>,
    pub cwd: Option<String>,
    pub caller: Option<String>,
    /// The programs of the ancestors, nearest first; an unreadable one is `None`.
    pub ancestors: Option<Vec<Option<String>>>,
    /// The environment a held exec passes, as `NAME=value` strings.
    pub env: Option<Vec<String>>,
    pub target: Option<Target>,
    /// The SHA-256 of the file a held exec runs (or maps), read by the daemon from that very
    /// file (its device and inode checked against the kernel's).
    pub sha256: Option<[u8; 32]>,
}

/// The file an action names, as found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Missing,
    /// It exists, with this size.
    Size(u64),
}

/// The outcome of one condition, or of all of a rule's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    Yes,
    No,
    /// A fact it needs could not be read.
    Unknown,
}

impl Truth {
    fn of(b: bool) -> Self {
        if b { Self::Yes } else { Self::No }
    }

    /// Both: `No` if either is, else `Unknown` if either is.
    fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::No, _) | (_, Self::No) => Self::No,
            (Self::Unknown, _) | (_, Self::Unknown) => Self::Unknown,
            _ => Self::Yes,
        }
    }
}

/// Whether `path` matches one of `patterns`, by the kernel's matching (see policies/README.md,
/// "Matching"). With `dir_itself`, `/srv/work/` also matches `/srv/work`.
fn path_in(patterns: &[RulePath], path: &str, dir_itself: bool) -> bool {
    use jit_common::policy::Op;

    use super::pattern_matches;
    // A directory itself: what is below it matches, as a name inside it would.
    let inside = if path == "/" {
        "/x".to_owned()
    } else {
        format!("{path}/x")
    };
    patterns.iter().any(|p| {
        pattern_matches(Op::Exec, &p.pattern, path.as_bytes())
            || (dir_itself
                && p.pattern.ends_with('/')
                && pattern_matches(Op::Exec, &p.pattern, inside.as_bytes()))
    })
}

impl Conditions {
    /// Whether the rule has any condition at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Whether every condition holds for `facts`.
    #[must_use]
    pub fn evaluate(&self, facts: &Facts) -> Truth {
        let mut truth = Truth::Yes;
        if let Some(pattern) = &self.args {
            truth = truth.and(
                facts
                    .args
                    .as_ref()
                    .map_or(Truth::Unknown, |a| Truth::of(pattern.matches(a))),
            );
        }
        if !self.cwd.is_empty() {
            truth = truth.and(
                facts
                    .cwd
                    .as_ref()
                    .map_or(Truth::Unknown, |c| Truth::of(path_in(&self.cwd, c, true))),
            );
        }
        if !self.caller.is_empty() {
            truth = truth.and(facts.caller.as_ref().map_or(Truth::Unknown, |c| {
                Truth::of(path_in(&self.caller, c, false))
            }));
        }
        if !self.ancestor.is_empty() {
            truth = truth.and(match &facts.ancestors {
                None => Truth::Unknown,
                Some(chain) => {
                    if chain
                        .iter()
                        .flatten()
                        .any(|exe| path_in(&self.ancestor, exe, false))
                    {
                        Truth::Yes
                    } else if chain.iter().any(Option::is_none) {
                        Truth::Unknown
                    } else {
                        Truth::No
                    }
                }
            });
        }
        for (name, pattern) in &self.env {
            truth = truth.and(facts.env.as_ref().map_or(Truth::Unknown, |env| {
                // The kernel passes the vector as is: with a name set twice, getenv(3) sees the
                // first, so the first decides here too.
                let value = env.iter().find_map(|kv| {
                    kv.split_once('=')
                        .filter(|(k, _)| k == name)
                        .map(|(_, v)| v)
                });
                Truth::of(value.is_some_and(|v| pattern.matches(&[v])))
            }));
        }
        if !self.sha256.is_empty() {
            truth = truth.and(
                facts
                    .sha256
                    .map_or(Truth::Unknown, |h| Truth::of(self.sha256.contains(&h))),
            );
        }
        if let Some(target) = &self.target {
            truth = truth.and(facts.target.map_or(Truth::Unknown, |found| {
                let size = match found {
                    Target::Missing => None,
                    Target::Size(n) => Some(n),
                };
                let exists_ok = target.exists.is_none_or(|e| e == size.is_some());
                let min_ok = target.min_size.is_none_or(|m| size.is_some_and(|n| n >= m));
                let max_ok = target.max_size.is_none_or(|m| size.is_some_and(|n| n <= m));
                Truth::of(exists_ok && min_ok && max_ok)
            }));
        }
        truth
    }
}

/// A size: a non-negative integer of bytes, or a string with a binary unit (`"512K"`, `"10M"`,
/// `"1G"`, also `"10MiB"`; `"100"` is bytes).
///
/// # Errors
/// Anything else, with what was expected.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let expected = || {
        format!(
            "bad size `{text}`: expected bytes, or a number with K, M or G (binary units), like \"10M\""
        )
    };
    let n: u64 = number.parse().map_err(|_| expected())?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return Err(expected()),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use jit_common::policy::RuleShape;

    use super::*;

    fn paths(p: &[&str]) -> Vec<RulePath> {
        p.iter()
            .map(|s| RulePath {
                pattern: (*s).to_owned(),
                shape: RuleShape::parse(s.as_bytes()).unwrap(),
            })
            .collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("10MB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn every_condition_must_hold_and_unknown_facts_stay_unknown() {
        let c = Conditions {
            args: Some(ArgsPattern::parse(&["push", "**"]).unwrap()),
            cwd: paths(&["/srv/work/"]),
            ..Conditions::default()
        };
        let mut facts = Facts {
            args: Some(vec!["push".into(), "origin".into()]),
            cwd: Some("/srv/work".into()),
            ..Facts::default()
        };
        assert_eq!(c.evaluate(&facts), Truth::Yes);
        facts.cwd = Some("/srv/work/app".into());
        assert_eq!(c.evaluate(&facts), Truth::Yes);
        facts.cwd = Some("/srv/workshop".into());
        assert_eq!(c.evaluate(&facts), Truth::No);
        facts.cwd = None;
        assert_eq!(c.evaluate(&facts), Truth::Unknown);
        facts.args = Some(vec!["status".into()]);
        assert_eq!(
            c.evaluate(&facts),
            Truth::No,
            "a definite no beats an unknown"
        );
    }

    #[test]
    fn ancestors_env_and_target() {
        let c = Conditions {
            ancestor: paths(&["/usr/sbin/cron"]),
            env: vec![("CI".into(), ArgsPattern::parse(&["true"]).unwrap())],
            target: Some(TargetCondition {
                exists: Some(true),
                max_size: Some(10),
                ..TargetCondition::default()
            }),
            ..Conditions::default()
        };
        let facts = Facts {
            ancestors: Some(vec![None, Some("/usr/sbin/cron".into())]),
            env: Some(vec!["CI=true".into(), "CI=false".into()]),
            target: Some(Target::Size(10)),
            ..Facts::default()
        };
        assert_eq!(c.evaluate(&facts), Truth::Yes);
        let unknown_parent = Facts {
            ancestors: Some(vec![None, Some("/usr/bin/bash".into())]),
            ..facts.clone()
        };
        assert_eq!(c.evaluate(&unknown_parent), Truth::Unknown);
        let too_big = Facts {
            target: Some(Target::Size(11)),
            ..facts.clone()
        };
        assert_eq!(c.evaluate(&too_big), Truth::No);
        let absent = Facts {
            target: Some(Target::Missing),
            ..facts.clone()
        };
        assert_eq!(c.evaluate(&absent), Truth::No);
        let unset = Facts {
            env: Some(vec!["CIX=true".into()]),
            ..facts
        };
        assert_eq!(c.evaluate(&unset), Truth::No);
    }
}
