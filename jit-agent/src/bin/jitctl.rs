//! `jitctl`: run a command as an agent, inspect the daemon, check and reload policies, read and
//! verify the audit trail. See the README, "jitctl".
use std::{
    collections::HashMap,
    io::{IsTerminal as _, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{CommandFactory as _, Parser, Subcommand};
use jiff::Timestamp;
use jit_agent::{
    approval::ReviewAction,
    audit::{
        self, AuditFilter, AuditReader, Record, RecordBody,
        checkpoint::{checkpoint_path, read_checkpoint},
        table, verify, verify_with_checkpoint,
    },
    config::{Config, Overrides},
    control::{self, Request, Response},
    tooling::cli::{self, PolicyTool},
};

#[derive(Parser)]
#[command(
    name = "jitctl",
    version,
    about = "Control jit: run agents, check and reload policies, read the audit trail"
)]
struct Cli {
    /// The daemon's config file: its socket, audit log and policy directory (and, for the
    /// policy tools, the paths self-protection covers). Default: /etc/jit/jit-agent.toml when
    /// it exists.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The daemon's control socket (default: from the config, else /run/jit/jit.sock).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Colour: `auto` (on a terminal, unless `NO_COLOR` is set), `always` or `never`.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    color: ColorWhen,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run CMD as agent NAME: the daemon moves this process into the agent's cgroup, then it
    /// becomes CMD, under the agent's policy. Exits with CMD's status.
    Run {
        #[arg(long, value_name = "NAME")]
        agent: String,
        /// Say why it failed as JSON (`{"error": ...}`); on success CMD runs as usual.
        #[arg(long)]
        json: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Held actions waiting for a reviewer, with their context.
    Pending {
        #[arg(long)]
        json: bool,
    },
    /// Approve held action ID: it proceeds. Without --once or --for, the agent's `grant`
    /// setting decides the scope.
    Approve {
        id: u64,
        /// Only this action.
        #[arg(long, conflicts_with = "for_")]
        once: bool,
        /// This action, and the same operation of the agent on the same file, for DURATION
        /// (e.g. 15m), enforced by the kernel's clock.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        for_: Option<Duration>,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deny held action ID: it fails with EPERM and the process continues.
    Deny {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Kill the process of held action ID.
    Kill {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The daemon's state: programs, agents, policy generation, counters.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Policy commands.
    Policy {
        #[command(subcommand)]
        command: PolicyCmd,
    },
    /// For agents, from inside an agent: ask jit about this agent's own denials and holds
    /// (the agent socket; `jitctl run` sets `JIT_AGENT_SOCKET`). Never decides anything.
    Agent {
        /// The agent socket (default: `JIT_AGENT_SOCKET`, else from the config, else
        /// /run/jit/agent.sock).
        #[arg(long, value_name = "PATH")]
        agent_socket: Option<PathBuf>,
        #[command(subcommand)]
        command: AgentCmd,
    },
    /// Print the audit log, its rotated files first (a table by default), or verify its hash
    /// chain.
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCmd>,
        /// Keep printing new records as they are written, across rotations.
        #[arg(long)]
        follow: bool,
        /// Print the records as they are stored (JSON Lines).
        #[arg(long)]
        json: bool,
        /// The log to read (default: from the config, else /var/log/jit/audit.jsonl).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

/// `jitctl audit`'s filters; each given must match (records without the field do not).
#[derive(clap::Args)]
struct FilterArgs {
    /// Records about agent NAME.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Records about operation OP (exec, write, ...).
    #[arg(long, value_name = "OP")]
    op: Option<String>,
    /// Kernel records whose policy decision or enforcement is DECISION (allow, audit, hold,
    /// deny), and reviewers' answers that are DECISION (approve, deny, kill).
    #[arg(long, value_name = "DECISION")]
    decision: Option<String>,
    /// Records written at or after TIME: RFC 3339 (`2026-12-01T05:00:00Z`) or a duration ago
    /// (`15m`, `2h`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<Timestamp>,
    /// Records written before TIME (as for --since).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<Timestamp>,
    /// Records of held action (request) ID.
    #[arg(long, value_name = "ID")]
    request: Option<u64>,
}

impl From<FilterArgs> for AuditFilter {
    fn from(f: FilterArgs) -> Self {
        Self {
            agent: f.agent,
            op: f.op,
            decision: f.decision,
            since: f.since,
            until: f.until,
            request: f.request,
        }
    }
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let ago = humantime::parse_duration(s).map_err(|_| {
        format!("{s:?}: expected an RFC 3339 time (2026-12-01T05:00:00Z) or a duration ago (15m)")
    })?;
    let ago = jiff::SignedDuration::try_from(ago).map_err(|e| format!("{s:?}: {e}"))?;
    Timestamp::now()
        .checked_sub(ago)
        .map_err(|e| format!("{s:?}: {e}"))
}

#[derive(Subcommand)]
enum AgentCmd {
    /// This agent's most recent denials and holds, newest first: op, path, rule and the
    /// policy author's hint.
    Why {
        /// How many (at most 100).
        #[arg(long, default_value_t = jit_agent::agent_api::DEFAULT_LAST)]
        last: usize,
        #[arg(long)]
        json: bool,
    },
    /// This agent's held actions waiting for a reviewer, and how long until their timeout.
    Pending {
        #[arg(long)]
        json: bool,
    },
    /// Tell the reviewers why held action ID is needed (shown to them marked as
    /// agent-provided, and audited). At most 500 bytes; a few per minute.
    Justify {
        id: u64,
        text: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    #[command(flatten)]
    Tool(PolicyTool),
    /// Make the daemon re-read its policy directory now.
    Reload {
        /// Print the generation and files as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain of FILEs (oldest first; default: the configured log and its rotated
    /// files) and its end against the checkpoint; names the first broken record. Exits non-zero
    /// on a broken chain, a log cut short or rotated history missing.
    Verify {
        files: Vec<PathBuf>,
        /// The checkpoint to compare the end with (default: LAST-FILE.head).
        #[arg(long, value_name = "FILE", conflicts_with = "no_checkpoint")]
        checkpoint: Option<PathBuf>,
        /// Check the chain only: a cut-off end cannot be detected then.
        #[arg(long)]
        no_checkpoint: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Cmd {
    /// Whether the command was asked for JSON: then errors are JSON too.
    fn json(&self) -> bool {
        match self {
            Self::Run { json, .. }
            | Self::Pending { json }
            | Self::Approve { json, .. }
            | Self::Deny { json, .. }
            | Self::Kill { json, .. }
            | Self::Status { json }
            | Self::Audit {
                verify: None, json, ..
            }
            | Self::Audit {
                verify: Some(AuditCmd::Verify { json, .. }),
                ..
            }
            | Self::Policy {
                command: PolicyCmd::Reload { json },
            } => *json,
            Self::Agent { command, .. } => match command {
                AgentCmd::Why { json, .. }
                | AgentCmd::Pending { json }
                | AgentCmd::Justify { json, .. } => *json,
            },
            Self::Policy {
                command: PolicyCmd::Tool(tool),
            } => tool.json(),
        }
    }
}

/// Whether to colour: `--color`, else a terminal without `NO_COLOR` (no-color.org).
fn colour(when: ColorWhen) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

fn main() -> ExitCode {
    if let Some(code) = jit_agent::gendocs::from_env(Cli::command, "1") {
        return code;
    }
    let cli = Cli::parse();
    // Diagnostics on stderr, as RUST_LOG says (default: warnings only).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let json = cli.command.json();
    match run(cli) {
        Ok(code) => code,
        Err(err) if json => {
            println!("{}", serde_json::json!({ "error": format!("{err:#}") }));
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("jitctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut cli: Cli) -> Result<ExitCode> {
    cli.config = Config::file_to_read(cli.config.as_deref());
    let config = Config::resolve(cli.config.as_deref(), Overrides::default())?;
    tracing::debug!(config = ?cli.config, socket = %config.socket.path.display(), "config resolved");
    let colour = colour(cli.color);
    let socket = cli.socket.unwrap_or_else(|| config.socket.path.clone());
    match cli.command {
        Cmd::Run { agent, command, .. } => run_as(&socket, &config, &agent, &command),
        Cmd::Agent {
            agent_socket,
            command,
        } => {
            let path = agent_socket
                .or_else(|| {
                    std::env::var_os(jit_agent::config::AGENT_SOCKET_ENV)
                        .filter(|v| !v.is_empty())
                        .map(PathBuf::from)
                })
                .unwrap_or_else(|| config.agent_socket.path.clone());
            agent(&path, &command)
        }
        Cmd::Status { json } => status(&socket, json, colour),
        Cmd::Pending { json } => pending(&socket, json),
        Cmd::Approve {
            id,
            once,
            for_,
            reason,
            json,
        } => decide(
            &socket,
            id,
            ReviewAction::Approve {
                once,
                for_secs: for_.map(|d| d.as_secs().max(1)),
            },
            reason,
            json,
        ),
        Cmd::Deny { id, reason, json } => decide(&socket, id, ReviewAction::Deny, reason, json),
        Cmd::Kill { id, reason, json } => decide(&socket, id, ReviewAction::Kill, reason, json),
        Cmd::Policy {
            command: PolicyCmd::Tool(tool),
        } => cli::run(
            tool,
            &cli::Context {
                config,
                config_file: cli.config,
            },
        ),
        Cmd::Policy {
            command: PolicyCmd::Reload { json },
        } => match call(&socket, &Request::Reload)? {
            Response::Reloaded { generation, files } if json => {
                println!(
                    "{}",
                    serde_json::json!({ "generation": generation, "files": files })
                );
                Ok(ExitCode::SUCCESS)
            }
            Response::Reloaded { generation, files } => {
                println!(
                    "policy generation {generation} loaded from {}",
                    files.join(", ")
                );
                Ok(ExitCode::SUCCESS)
            }
            other => fail(other),
        },
        Cmd::Audit {
            verify:
                Some(AuditCmd::Verify {
                    files,
                    checkpoint,
                    no_checkpoint,
                    json,
                }),
            ..
        } => Ok(verify_audit(
            &config,
            files,
            checkpoint.as_deref(),
            no_checkpoint,
            json,
        )),
        Cmd::Audit {
            verify: None,
            follow,
            json,
            file,
            filter,
        } => {
            let output = AuditOutput { json, colour };
            audit(
                &file.unwrap_or(config.audit.path),
                follow,
                &filter.into(),
                output,
            )
        }
    }
}

/// `jitctl audit verify`: the chain, then its end against the checkpoint.
fn verify_audit(
    config: &Config,
    files: Vec<PathBuf>,
    checkpoint: Option<&Path>,
    no_checkpoint: bool,
    json: bool,
) -> ExitCode {
    let mut report = VerifyReport::default();
    let ok = verify_report(config, files, checkpoint, no_checkpoint, &mut report);
    if json {
        report.ok = ok;
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("jitctl: {err}"),
        }
    } else {
        for line in &report.messages {
            println!("{line}");
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What `jitctl audit verify` found: the text lines it prints, and for `--json` the facts.
#[derive(Default, serde::Serialize)]
struct VerifyReport {
    ok: bool,
    files: Vec<PathBuf>,
    records: u64,
    head_seq: Option<u64>,
    head_hash: Option<String>,
    anchored: Option<bool>,
    checkpoint: Option<PathBuf>,
    /// Records written after the checkpoint.
    ahead: Option<u64>,
    rotated_through: Option<u64>,
    /// Why it is broken.
    error: Option<String>,
    messages: Vec<String>,
}

impl VerifyReport {
    fn say(&mut self, text: String) {
        self.messages.push(text);
    }

    fn broken(&mut self, text: String) -> bool {
        self.messages.push(format!("BROKEN: {text}"));
        self.error = Some(text);
        false
    }
}

/// Verifies and fills `report`; true when the chain is intact.
fn verify_report(
    config: &Config,
    files: Vec<PathBuf>,
    checkpoint: Option<&Path>,
    no_checkpoint: bool,
    report: &mut VerifyReport,
) -> bool {
    let defaulted = files.is_empty();
    let files = if defaulted {
        audit::chain_files(&config.audit.path, config.audit.keep)
    } else {
        files
    };
    let Some(last) = files.last() else {
        return report.broken(format!(
            "no audit log at {} (nor rotated files)",
            config.audit.path.display()
        ));
    };
    // The daemon's own log must have its checkpoint; for other files it is used when present.
    let own_log = defaulted || *last == config.audit.path;
    let checkpoint_file = (!no_checkpoint).then(|| {
        checkpoint.map_or_else(
            || checkpoint_path(if defaulted { &config.audit.path } else { last }),
            Path::to_owned,
        )
    });
    let checkpoint = match &checkpoint_file {
        None => None,
        Some(path) => match read_checkpoint(path) {
            Ok(Some(c)) => Some(c),
            Ok(None) if checkpoint.is_none() && !own_log => None,
            Ok(None) => {
                return report.broken(format!(
                    "the checkpoint {} does not exist: whether the end of the log was cut off \
                     cannot be told (--no-checkpoint checks the chain alone)",
                    path.display()
                ));
            }
            Err(err) => return report.broken(format!("reading the checkpoint: {err}")),
        },
    };
    report.files.clone_from(&files);
    report.checkpoint.clone_from(&checkpoint_file);
    let result = match &checkpoint {
        Some(c) => verify_with_checkpoint(&files, c).map(|(s, ahead)| (s, Some(ahead))),
        None => verify(&files).map(|s| (s, None)),
    };
    match result {
        Ok((summary, ahead)) => {
            report.records = summary.records;
            report.head_seq = Some(summary.head.seq);
            report.head_hash = Some(summary.head.hash.clone());
            report.anchored = Some(summary.anchored);
            report.ahead = ahead;
            report.rotated_through = checkpoint.as_ref().map(|c| c.rotated_through);
            report.say(format!(
                "ok: {} records in {} files, chain intact; last record seq {} hash {}",
                summary.records, summary.files, summary.head.seq, summary.head.hash
            ));
            match (ahead, &checkpoint_file) {
                (Some(ahead), Some(path)) => report.say(format!(
                    "checkpoint {}: the log reaches it{}",
                    path.display(),
                    if ahead > 0 {
                        format!(" and has {ahead} record(s) written after it")
                    } else {
                        String::new()
                    }
                )),
                _ => report.say(
                    "note: no checkpoint compared: records cut off the end of the log would not \
                     show"
                        .to_owned(),
                ),
            }
            if let Some(c) = checkpoint.as_ref().filter(|c| c.rotated_through > 0) {
                report.say(format!(
                    "note: records up to seq {} were rotated away by the writer (audit.keep)",
                    c.rotated_through
                ));
            } else if !summary.anchored {
                report.say(
                    "note: the chain does not start at its first record (older files not \
                     given or rotated away): the first record's link was not checked"
                        .to_owned(),
                );
            }
            true
        }
        Err(err) => report.broken(err.to_string()),
    }
}

fn call(socket: &Path, request: &Request) -> Result<Response> {
    Ok(control::call(socket, request, Duration::from_secs(30))?)
}

fn fail(response: Response) -> Result<ExitCode> {
    match response {
        Response::Error { error } | Response::Refused { message: error, .. } => bail!("{error}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

fn run_as(socket: &Path, config: &Config, agent: &str, command: &[String]) -> Result<ExitCode> {
    match call(
        socket,
        &Request::Run {
            agent: agent.to_owned(),
        },
    )? {
        Response::Placed { .. } => {}
        other => return fail(other),
    }
    let (program, args) = command.split_first().context("no command given")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    // How the agent finds the socket that tells it why (README, "For agent authors").
    if config.agent_socket.enabled {
        cmd.env(
            jit_agent::config::AGENT_SOCKET_ENV,
            &config.agent_socket.path,
        );
    }
    let err = cmd.exec();
    eprintln!("jitctl: running {program}: {err}");
    // The shell's conventions: 127 not found, 126 found but not runnable (e.g. denied by jit).
    Ok(ExitCode::from(
        if err.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
    ))
}

fn agent(socket: &Path, command: &AgentCmd) -> Result<ExitCode> {
    use jit_agent::agent_api::{self, AgentRequest, AgentResponse};
    let (request, json) = match command {
        AgentCmd::Why { last, json } => (AgentRequest::Why { last: Some(*last) }, *json),
        AgentCmd::Pending { json } => (AgentRequest::Pending, *json),
        AgentCmd::Justify { id, text, json } => (
            AgentRequest::Justify {
                id: *id,
                text: text.clone(),
            },
            *json,
        ),
    };
    let response = agent_api::call(socket, &request, Duration::from_secs(30))?;
    if let AgentResponse::Error { error } = &response {
        bail!("{error}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&response)?);
        return Ok(ExitCode::SUCCESS);
    }
    let escape = |s: &str| jit_agent::text::escape(s).into_owned();
    // Paths and justifications come escaped from the daemon.
    let escaped = |s: &str| jit_agent::text::escaped_once(s).into_owned();
    let rule = |rule: &Option<String>| {
        rule.as_deref().map_or_else(
            || "[default]".to_owned(),
            |r| format!("[rule: {}]", escape(r)),
        )
    };
    match response {
        AgentResponse::Why { agent, records } => {
            if records.is_empty() {
                println!("agent {}: no recent denials or holds", escape(&agent));
            }
            for r in records {
                let id = r
                    .request_id
                    .map_or_else(String::new, |id| format!(" (request {id})"));
                println!(
                    "{}  {} {} {} {}{id}",
                    escape(&r.at),
                    escape(&r.kind),
                    escape(&r.op),
                    escaped(&r.path),
                    rule(&r.rule)
                );
                if let Some(hint) = &r.hint {
                    println!("    hint: {}", escape(hint));
                }
            }
        }
        AgentResponse::Pending { agent, holds } => {
            if holds.is_empty() {
                println!("agent {}: no held actions", escape(&agent));
            }
            for h in holds {
                println!(
                    "{}  {} {} {}  (pid {}, held {}, {} in {})",
                    h.id,
                    escape(&h.op),
                    escaped(&h.path),
                    rule(&h.rule),
                    h.pid,
                    human_duration(h.age_secs),
                    escape(&h.on_timeout),
                    human_duration(h.timeout_in_secs)
                );
                if let Some(hint) = &h.hint {
                    println!("    hint: {}", escape(hint));
                }
                if let Some(j) = &h.justification {
                    println!("    justification sent: \"{}\"", escaped(&j.text));
                }
            }
        }
        AgentResponse::Justified { id, text } => {
            println!(
                "{id}: justification attached for the reviewers: \"{}\"",
                escaped(&text)
            );
        }
        AgentResponse::Error { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(
    socket: &Path,
    id: u64,
    action: ReviewAction,
    reason: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    match call(socket, &Request::Decide { id, action, reason })? {
        Response::Decided(d) if json => {
            println!("{}", serde_json::to_string(&d)?);
            Ok(ExitCode::SUCCESS)
        }
        Response::Decided(d) if d.approvals_missing > 0 => {
            println!(
                "{}: approval recorded; {} more approval(s) needed",
                d.id, d.approvals_missing
            );
            Ok(ExitCode::SUCCESS)
        }
        Response::Decided(d) => {
            println!("{}: {}", d.id, d.outcome);
            Ok(ExitCode::SUCCESS)
        }
        other => fail(other),
    }
}

fn pending(socket: &Path, json: bool) -> Result<ExitCode> {
    let requests = match call(socket, &Request::Pending)? {
        Response::Pending { requests } => requests,
        other => return fail(other),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&requests)?);
        return Ok(ExitCode::SUCCESS);
    }
    if requests.is_empty() {
        println!("no held actions");
        return Ok(ExitCode::SUCCESS);
    }
    for r in &requests {
        println!("{}", jit_agent::approval::review_card(r));
    }
    Ok(ExitCode::SUCCESS)
}

fn status(socket: &Path, json: bool, colour: bool) -> Result<ExitCode> {
    let s = match call(socket, &Request::Status)? {
        Response::Status(s) => s,
        other => return fail(other),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "jit-agent {} (pid {}), programs {} from {}",
        s.version, s.pid, s.startup, s.pin_dir
    );
    println!(
        "programs attached: {}/{}",
        s.programs.len(),
        s.programs_expected
    );
    println!(
        "policy generation {}: {}",
        s.policy_generation,
        s.policy_files.join(", ")
    );
    if let Some(served) = &s.policy_served {
        println!("policy served to reviewers: {served}");
    }
    if let Some(err) = &s.policy_error {
        println!(
            "{} (the policy above stays in force):\n  {}",
            paint(colour, RED, "last reload REJECTED"),
            err.replace('\n', "\n  ")
        );
    }
    println!("agents:");
    for a in &s.agents {
        println!(
            "  {:<20} id {:#010x}  mode {:<7} default {:<5} {} entries  cgroups {}",
            a.name,
            a.id,
            a.mode,
            a.default,
            a.rules,
            a.cgroups.join(", ")
        );
    }
    let counters: Vec<String> = s.counters.iter().map(|(n, v)| format!("{n}={v}")).collect();
    println!("counters: {}", counters.join(" "));
    println!("events dropped: {}", s.events_dropped);
    println!("pending holds: {}", s.pending);
    println!("audit log: {}", s.audit_log);
    Ok(ExitCode::SUCCESS)
}

/// How `jitctl audit` prints.
#[derive(Clone, Copy)]
struct AuditOutput {
    json: bool,
    colour: bool,
}

const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";

fn paint(colour: bool, code: &str, text: &str) -> String {
    if colour {
        format!("{code}{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// The colour of a record's row: denials and kills red, holds yellow, approvals green.
fn row_colour(record: &Record) -> Option<&'static str> {
    match &record.body {
        RecordBody::Kernel(k) if k.enforced == "deny" || k.decision == "deny" => Some(RED),
        RecordBody::Kernel(k) if k.kind == "hold" => Some(YELLOW),
        RecordBody::Approval(a) => Some(match a.decision.name() {
            "approve" => GREEN,
            _ => RED,
        }),
        RecordBody::PolicyRejected(_)
        | RecordBody::EventsDropped(_)
        | RecordBody::AuditRefused(_)
        | RecordBody::DenialsSummarized(_)
        | RecordBody::AuditCut(_) => Some(RED),
        _ => None,
    }
}

/// `1m59s`: the two largest units, as `deny in 1m59s` reads.
fn human_duration(secs: u64) -> String {
    jit_agent::text::human_duration(secs)
}

/// `jitctl audit`: the log's files in chain order, filtered; with `follow`, forever.
fn audit(path: &Path, follow: bool, filter: &AuditFilter, output: AuditOutput) -> Result<ExitCode> {
    let mut reader = AuditReader::open(path, follow, Duration::from_millis(200))
        .with_context(|| format!("reading {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    if !output.json {
        writeln!(out, "{}", table::table_header())?;
    }
    // When each hold was recorded: its answer's row says how long the reviewers took.
    let mut held_at: HashMap<u64, Timestamp> = HashMap::new();
    while let Some(line) = reader.next_line()? {
        let record = Record::from_line(&line).ok();
        if let Some(RecordBody::Kernel(k)) = record.as_ref().map(|r| &r.body)
            && k.kind == "hold"
            && let Some(id) = k.request_id
        {
            held_at.insert(id, record.as_ref().map_or_else(Timestamp::now, |r| r.time));
        }
        let shown = match &record {
            Some(r) => filter.matches(r),
            // A line that is not a record is shown only when nothing is filtered.
            None => filter.is_empty(),
        };
        if !shown {
            continue;
        }
        if output.json {
            out.write_all(&line)?;
            out.write_all(b"\n")?;
        } else {
            let Some(record) = record else {
                writeln!(out, "{}", table::format_line(&line))?;
                continue;
            };
            let mut row = table::format_row(&record);
            let answered = match &record.body {
                RecordBody::Approval(a) if a.approvals_missing == 0 => {
                    Some((a.request_id, a.decision.name()))
                }
                RecordBody::HoldEnded(h) => Some((h.request_id, "ended")),
                _ => None,
            };
            if let Some((id, what)) = answered
                && let Some(at) = held_at.remove(&id)
            {
                let secs = u64::try_from(record.time.duration_since(at).as_secs()).unwrap_or(0);
                row = format!("{}  ({what} in {})", row.trim_end(), human_duration(secs));
            }
            match row_colour(&record) {
                Some(code) if output.colour => writeln!(out, "{}", paint(true, code, &row))?,
                _ => writeln!(out, "{row}")?,
            }
        }
        if follow {
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
