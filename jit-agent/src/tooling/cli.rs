//! The `jitctl policy` subcommands that need no daemon: `check`, `explain`, `test`, `replay`,
//! `suggest`. `jitctl` parses them with the rest of its command line and calls [`run`].
use std::{
    io::IsTerminal as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use jiff::Timestamp;
use jit_common::policy::Op;

use super::{
    cases,
    diagnostics::{self, Diagnostic},
    explain, lint,
    model::{Action, Decider, Protected, subject_of},
    parse_instant, replay, suggest,
};
use crate::{
    config::Config,
    policy::{LoadOptions, PolicySet, Subject, conditions::Facts, load_dir_with},
};

/// Exit status of `policy check --strict` when the policy loads but has warnings.
pub const EXIT_WARNINGS: u8 = 2;

/// What every command that loads a policy takes.
#[derive(Args, Clone, Debug)]
pub struct PolicyArgs {
    /// The policy directory (default: the config's `policy_dir`, else /etc/jit/policies).
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Do not resolve approver users and groups (for machines without those accounts, such
    /// as CI); everything else is checked as the daemon checks it.
    #[arg(long)]
    pub offline: bool,
}

/// What the daemon would read about the held action, for rules with conditions
/// (policies/README.md, "Conditions"). None given: such a rule's hold is shown as the kernel's.
#[derive(Args, Clone, Debug, Default)]
pub struct FactArgs {
    /// An argument of the exec after the program (`argv[1..]`), in order; repeat it.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// The exec has no arguments after the program.
    #[arg(long, conflicts_with = "args")]
    no_args: bool,
    /// The working directory.
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// The program doing the action (for an exec: the one calling it).
    #[arg(long, value_name = "PROGRAM")]
    caller: Option<String>,
    /// A program in the parent chain, nearest first; repeat it. The chain is taken as complete.
    #[arg(long = "ancestor", value_name = "PROGRAM")]
    ancestors: Vec<String>,
    /// An environment variable the exec passes (`NAME=VALUE`); repeat it. Any given: the
    /// environment is exactly these.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// The target's size in bytes (it exists).
    #[arg(long, value_name = "BYTES", conflicts_with = "target_missing")]
    target_size: Option<u64>,
    /// The target does not exist.
    #[arg(long)]
    target_missing: bool,
    /// The SHA-256 of the executed file (64 hexadecimal digits), for rules with `sha256`.
    #[arg(long, value_name = "HEX", value_parser = parse_sha256_arg)]
    sha256: Option<[u8; 32]>,
    /// The user the process acts as (its effective, or filesystem, uid), by name or uid, for rules with `user` (the kernel
    /// decides those). Not given: only rules without `user` apply.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// The group the process acts as, by name or gid, for rules with `group`.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Who wrote the executed file, for rules with `written_by` (the kernel decides those):
    /// `this-agent`, `other-agent` or `none` (the default: no agent wrote it).
    #[arg(long, value_name = "WRITER", value_parser = parse_writer, default_value = "none")]
    written_by: u32,
}

/// `--sha256`.
fn parse_sha256_arg(text: &str) -> Result<[u8; 32], String> {
    crate::policy::parse_sha256(text)
        .ok_or_else(|| format!("`{text}`: expected 64 hexadecimal digits"))
}

/// `--written-by`.
fn parse_writer(name: &str) -> Result<u32, String> {
    jit_common::provenance::writer_from_name(name)
        .ok_or_else(|| format!("`{name}`: use this-agent, other-agent or none"))
}

impl FactArgs {
    /// The process's user and group, as given.
    fn subject(&self) -> Subject {
        Subject {
            writer: self.written_by,
            ..subject_of(self.user.as_deref(), self.group.as_deref())
        }
    }

    /// The facts given, or `None` when none is.
    fn into_facts(self) -> Result<Option<Facts>, String> {
        use crate::policy::conditions::Target;
        if let Some(bad) = self.env.iter().find(|e| !e.contains('=')) {
            return Err(format!("--env {bad}: expected NAME=VALUE"));
        }
        let given = !self.args.is_empty()
            || self.no_args
            || self.cwd.is_some()
            || self.caller.is_some()
            || !self.ancestors.is_empty()
            || !self.env.is_empty()
            || self.target_size.is_some()
            || self.target_missing
            || self.sha256.is_some();
        Ok(given.then(|| Facts {
            args: (self.no_args || !self.args.is_empty()).then_some(self.args),
            cwd: self.cwd,
            caller: self.caller,
            ancestors: (!self.ancestors.is_empty())
                .then(|| self.ancestors.into_iter().map(Some).collect()),
            env: (!self.env.is_empty()).then_some(self.env),
            target: if self.target_missing {
                Some(Target::Missing)
            } else {
                self.target_size.map(Target::Size)
            },
            sha256: self.sha256,
        }))
    }
}

#[derive(Subcommand, Clone, Debug)]
pub enum PolicyTool {
    /// Validate a policy directory without a daemon; exits 1 on any error. With --strict, also
    /// warns about rules that never decide, guards that other ops sidestep, patterns that
    /// cannot match on this host and allow-only agents (exit 2 when there are warnings only).
    Check {
        dir: PathBuf,
        /// Do not resolve approver users and groups.
        #[arg(long)]
        offline: bool,
        /// Also warn about rules that load but do not do what they seem to.
        #[arg(long)]
        strict: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What the policy decides for one action, which rule decides it and why every other
    /// matching rule lost, and what a hold would need.
    Explain {
        #[command(flatten)]
        policy: PolicyArgs,
        /// The agent (its `[agent] name`).
        #[arg(long, value_name = "NAME")]
        agent: String,
        /// exec, write, create, unlink, rename, truncate, mkdir, rmdir, link, symlink, chmod,
        /// chown, device, metadata.
        #[arg(long, value_name = "OP", value_parser = parse_op)]
        op: Op,
        /// When the action happens (RFC 3339, or `2026-03-29T02:30[Europe/Berlin]`; default:
        /// now): decides which `when` rules are in force.
        #[arg(long, value_name = "TIME", value_parser = parse_instant)]
        at: Option<Timestamp>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        facts: Box<FactArgs>,
        /// The resolved path (as the kernel sees it: absolute, symlinks resolved).
        path: String,
        /// For rename and link: the other end (the new name).
        target: Option<String>,
    },
    /// Run case files (actions and the decisions they must get) against the policy; a table
    /// of results, exit 1 on any mismatch.
    Test {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[arg(required = true, value_name = "CASES.toml")]
        files: Vec<PathBuf>,
    },
    /// Decide every kernel decision recorded in audit files again under the policy: how many
    /// would change, from what to what, and the changed records.
    Replay {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Audit files, oldest first.
        #[arg(required = true, value_name = "AUDIT.jsonl")]
        files: Vec<PathBuf>,
    },
    /// Propose rules (TOML to paste) from holds reviewers answered the same way at least N
    /// times. Writes no policy file. With --policies, proposals the policy already decides so
    /// are left out.
    Suggest {
        /// The policy to leave out what it already decides (default: none).
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
        /// Do not resolve approver users and groups.
        #[arg(long)]
        offline: bool,
        /// Decisions needed for a proposal.
        #[arg(long, value_name = "N", default_value_t = 3)]
        min: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[arg(required = true, value_name = "AUDIT.jsonl")]
        files: Vec<PathBuf>,
    },
}

impl PolicyTool {
    /// Whether the tool was asked for JSON.
    #[must_use]
    pub const fn json(&self) -> bool {
        match self {
            Self::Check { json, .. }
            | Self::Explain { json, .. }
            | Self::Test { json, .. }
            | Self::Replay { json, .. }
            | Self::Suggest { json, .. } => *json,
        }
    }
}

fn parse_op(name: &str) -> Result<Op, String> {
    Op::from_name(name).ok_or_else(|| {
        format!(
            "unknown op `{name}`: expected one of {}",
            Op::ALL.map(Op::name).join(", ")
        )
    })
}

/// Where the daemon's settings come from, for the paths self-protection covers.
pub struct Context {
    pub config: Config,
    pub config_file: Option<PathBuf>,
}

impl Context {
    fn policy_dir(&self, given: Option<&Path>) -> PathBuf {
        given.map_or_else(|| self.config.policy_dir.clone(), Path::to_owned)
    }

    /// The daemon's protected paths, with `policy_dir` as its policy directory.
    fn protected(&self, policy_dir: &Path) -> Protected {
        let mut config = self.config.clone();
        config.policy_dir =
            std::path::absolute(policy_dir).unwrap_or_else(|_| policy_dir.to_owned());
        let paths = config.protected_paths(self.config_file.as_deref());
        Protected::new(paths.iter().map(PathBuf::as_path))
    }
}

fn print_diagnostics(diagnostics: &[Diagnostic]) {
    let carets = std::io::stderr().is_terminal();
    eprint!("{}", diagnostics::render(diagnostics, carets));
}

/// Loads the policy for a command, printing its errors; `None` when it does not load.
fn load(dir: &Path, offline: bool) -> Option<PolicySet> {
    let options = LoadOptions {
        resolve_accounts: !offline,
    };
    match load_dir_with(dir, options) {
        Ok(set) => Some(set),
        Err(errors) => {
            let d: Vec<Diagnostic> = errors.errors().iter().map(Diagnostic::from).collect();
            print_diagnostics(&d);
            eprintln!(
                "{}: {} errors: the policy does not load",
                dir.display(),
                d.len()
            );
            None
        }
    }
}

/// Runs one of the commands.
///
/// # Errors
/// Bad arguments and unreadable files; policy errors are printed and give exit status 1.
pub fn run(command: PolicyTool, ctx: &Context) -> Result<ExitCode> {
    match command {
        PolicyTool::Check {
            dir,
            offline,
            strict,
            json,
        } => Ok(check(ctx, &dir, offline, strict, json)),
        PolicyTool::Explain {
            policy,
            agent,
            op,
            at,
            json,
            facts,
            path,
            target,
        } => {
            for p in std::iter::once(&path).chain(target.as_ref()) {
                cases::check_resolved(p).map_err(anyhow::Error::msg)?;
            }
            if target.is_some() && !matches!(op, Op::Rename | Op::Link) {
                bail!("a second path (the target) is for rename and link only");
            }
            let dir = ctx.policy_dir(policy.policies.as_deref());
            let Some(set) = load(&dir, policy.offline) else {
                return Ok(ExitCode::FAILURE);
            };
            let decider = Decider::new(&set, ctx.protected(&dir)).on_this_host();
            let action = Action {
                agent,
                op,
                path: path.into_bytes(),
                target: target.map(String::into_bytes),
                at: at.unwrap_or_else(Timestamp::now),
                subject: facts.subject(),
                facts: facts.into_facts().map_err(anyhow::Error::msg)?,
            };
            let e = explain::explain(&decider, &action)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                print!("{}", explain::render(&e));
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyTool::Test {
            policy,
            json,
            files,
        } => test(ctx, &policy, json, &files),
        PolicyTool::Replay {
            policy,
            json,
            files,
        } => {
            let dir = ctx.policy_dir(policy.policies.as_deref());
            let Some(set) = load(&dir, policy.offline) else {
                return Ok(ExitCode::FAILURE);
            };
            let decider = Decider::new(&set, ctx.protected(&dir));
            let trail = replay::read_trail(&files).context("reading the audit files")?;
            let r = replay::replay(&decider, &trail);
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", replay::render(&r, &dir));
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyTool::Suggest {
            policies,
            offline,
            min,
            json,
            files,
        } => {
            let set = match &policies {
                Some(dir) => match load(dir, offline) {
                    Some(set) => Some((set, dir.clone())),
                    None => return Ok(ExitCode::FAILURE),
                },
                None => None,
            };
            let decider = set
                .as_ref()
                .map(|(set, dir)| Decider::new(set, ctx.protected(dir)));
            let trail = replay::read_trail(&files).context("reading the audit files")?;
            let s = suggest::suggest(&trail, min, decider.as_ref(), Timestamp::now());
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", suggest::render(&s));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(ctx: &Context, dir: &Path, offline: bool, strict: bool, json: bool) -> ExitCode {
    let options = LoadOptions {
        resolve_accounts: !offline,
    };
    let (set, errors) = match load_dir_with(dir, options) {
        Ok(set) => (Some(set), Vec::new()),
        Err(errors) => (None, errors.errors().iter().map(Diagnostic::from).collect()),
    };
    let warnings = match (&set, strict) {
        (Some(set), true) => lint::lint(set, &ctx.protected(dir)),
        _ => Vec::new(),
    };
    let agents = set.as_ref().map_or(0, |s| s.agents().len());
    let rules: usize = set
        .as_ref()
        .map_or(0, |s| s.agents().iter().map(|a| a.rules.len()).sum());
    if json {
        let answer = serde_json::json!({
            "dir": dir.display().to_string(),
            "ok": errors.is_empty(),
            "agents": agents,
            "rules": rules,
            "errors": errors,
            "warnings": warnings,
        });
        println!("{answer:#}");
    } else if errors.is_empty() {
        print_diagnostics(&warnings);
        let warned = if strict {
            format!(", {} warnings", warnings.len())
        } else {
            String::new()
        };
        println!(
            "{}: ok, {agents} agents, {rules} rules{warned}",
            dir.display()
        );
    } else {
        print_diagnostics(&errors);
        eprintln!("{}: {} errors", dir.display(), errors.len());
    }
    if !errors.is_empty() {
        ExitCode::FAILURE
    } else if !warnings.is_empty() {
        ExitCode::from(EXIT_WARNINGS)
    } else {
        ExitCode::SUCCESS
    }
}

fn test(ctx: &Context, policy: &PolicyArgs, json: bool, files: &[PathBuf]) -> Result<ExitCode> {
    let dir = ctx.policy_dir(policy.policies.as_deref());
    let Some(set) = load(&dir, policy.offline) else {
        return Ok(ExitCode::FAILURE);
    };
    let decider = Decider::new(&set, ctx.protected(&dir));
    let mut results = Vec::new();
    let mut broken = false;
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        match cases::parse(file, &text, &set) {
            Ok(cases) => results.extend(cases::run(&decider, file, &cases)),
            Err(errors) => {
                broken = true;
                print_diagnostics(&errors);
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", cases::render(&results));
    }
    if broken {
        eprintln!("some case files have errors (above): their cases did not run");
    }
    Ok(if broken || results.iter().any(|r| !r.pass) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
