//! `jitctl`: run a command as an agent, inspect the daemon, check and reload policies, read and
//! verify the audit trail. See the README, "jitctl".
use std::{
    io::{BufRead as _, BufReader, Seek as _, SeekFrom},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{CommandFactory as _, Parser, Subcommand};
use jit_agent::{
    approval::ReviewAction,
    audit::{
        self,
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
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run CMD as agent NAME: the daemon moves this process into the agent's cgroup, then it
    /// becomes CMD, under the agent's policy. Exits with CMD's status.
    Run {
        #[arg(long, value_name = "NAME")]
        agent: String,
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
    },
    /// Deny held action ID: it fails with EPERM and the process continues.
    Deny {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Kill the process of held action ID.
    Kill {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
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
    /// Print the audit log (a table by default), or verify its hash chain.
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCmd>,
        /// Keep printing new records as they are written.
        #[arg(long)]
        follow: bool,
        /// Print the records as they are stored (JSON Lines).
        #[arg(long)]
        json: bool,
        /// The log to read (default: from the config, else /var/log/jit/audit.jsonl).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
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
    Justify { id: u64, text: String },
}

#[derive(Subcommand)]
enum PolicyCmd {
    #[command(flatten)]
    Tool(PolicyTool),
    /// Make the daemon re-read its policy directory now.
    Reload,
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
    },
}

fn main() -> ExitCode {
    if let Some(code) = jit_agent::gendocs::from_env(Cli::command, "1") {
        return code;
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("jitctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut cli: Cli) -> Result<ExitCode> {
    cli.config = Config::file_to_read(cli.config.as_deref());
    let config = Config::resolve(cli.config.as_deref(), Overrides::default())?;
    let socket = cli.socket.unwrap_or_else(|| config.socket.path.clone());
    match cli.command {
        Cmd::Run { agent, command } => run_as(&socket, &config, &agent, &command),
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
        Cmd::Status { json } => status(&socket, json),
        Cmd::Pending { json } => pending(&socket, json),
        Cmd::Approve {
            id,
            once,
            for_,
            reason,
        } => decide(
            &socket,
            id,
            ReviewAction::Approve {
                once,
                for_secs: for_.map(|d| d.as_secs().max(1)),
            },
            reason,
        ),
        Cmd::Deny { id, reason } => decide(&socket, id, ReviewAction::Deny, reason),
        Cmd::Kill { id, reason } => decide(&socket, id, ReviewAction::Kill, reason),
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
            command: PolicyCmd::Reload,
        } => match call(&socket, &Request::Reload)? {
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
                }),
            ..
        } => Ok(verify_audit(
            &config,
            files,
            checkpoint.as_deref(),
            no_checkpoint,
        )),
        Cmd::Audit {
            verify: None,
            follow,
            json,
            file,
        } => audit(&file.unwrap_or(config.audit.path), follow, json),
    }
}

/// `jitctl audit verify`: the chain, then its end against the checkpoint.
fn verify_audit(
    config: &Config,
    files: Vec<PathBuf>,
    checkpoint: Option<&Path>,
    no_checkpoint: bool,
) -> ExitCode {
    let defaulted = files.is_empty();
    let files = if defaulted {
        audit::chain_files(&config.audit.path, config.audit.keep)
    } else {
        files
    };
    let Some(last) = files.last() else {
        println!(
            "BROKEN: no audit log at {} (nor rotated files)",
            config.audit.path.display()
        );
        return ExitCode::FAILURE;
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
                println!(
                    "BROKEN: the checkpoint {} does not exist: whether the end of the log was cut \
                     off cannot be told (--no-checkpoint checks the chain alone)",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
            Err(err) => {
                println!("BROKEN: reading the checkpoint: {err}");
                return ExitCode::FAILURE;
            }
        },
    };
    let result = match &checkpoint {
        Some(c) => verify_with_checkpoint(&files, c).map(|(s, ahead)| (s, Some(ahead))),
        None => verify(&files).map(|s| (s, None)),
    };
    match result {
        Ok((summary, ahead)) => {
            println!(
                "ok: {} records in {} files, chain intact; last record seq {} hash {}",
                summary.records, summary.files, summary.head.seq, summary.head.hash
            );
            match (ahead, &checkpoint_file) {
                (Some(ahead), Some(path)) => println!(
                    "checkpoint {}: the log reaches it{}",
                    path.display(),
                    if ahead > 0 {
                        format!(" and has {ahead} record(s) written after it")
                    } else {
                        String::new()
                    }
                ),
                _ => println!(
                    "note: no checkpoint compared: records cut off the end of the log would not \
                     show"
                ),
            }
            if let Some(c) = checkpoint.as_ref().filter(|c| c.rotated_through > 0) {
                println!(
                    "note: records up to seq {} were rotated away by the writer (audit.keep)",
                    c.rotated_through
                );
            } else if !summary.anchored {
                println!(
                    "note: the chain does not start at its first record (older files not \
                     given or rotated away): the first record's link was not checked"
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("BROKEN: {err}");
            ExitCode::FAILURE
        }
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
        AgentCmd::Justify { id, text } => (
            AgentRequest::Justify {
                id: *id,
                text: text.clone(),
            },
            false,
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
                    "{}  {} {} {}  (pid {}, held {}s, {} in {}s)",
                    h.id,
                    escape(&h.op),
                    escaped(&h.path),
                    rule(&h.rule),
                    h.pid,
                    h.age_secs,
                    escape(&h.on_timeout),
                    h.timeout_in_secs
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
) -> Result<ExitCode> {
    match call(socket, &Request::Decide { id, action, reason })? {
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

fn status(socket: &Path, json: bool) -> Result<ExitCode> {
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
            "last reload REJECTED (the policy above stays in force):\n  {}",
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

fn audit(path: &Path, follow: bool, json: bool) -> Result<ExitCode> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(file);
    if !json {
        println!("{}", table::table_header());
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            // A partial line is re-read once complete.
            reader.seek(SeekFrom::Current(-i64::try_from(n)?))?;
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let record = &line[..line.len() - 1];
        if json {
            println!("{}", String::from_utf8_lossy(record));
        } else {
            println!("{}", table::format_line(record));
        }
    }
}
