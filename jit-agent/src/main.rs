//! `jit-agent`: the jit daemon. See the README, "The daemon".
use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory as _, Parser};
use jit_agent::{
    config::{Config, LogFormat, Overrides},
    daemon, gendocs, prereq,
};
use tracing::error;

/// jit's daemon: enforces the agent policies in the kernel, audits every decision and serves
/// `jitctl`.
#[derive(Parser)]
#[command(name = "jit-agent", version, about)]
struct Args {
    /// Config file (TOML; see jit-agent.example.toml). Default: /etc/jit/jit-agent.toml when it
    /// exists, else built-in defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Policy directory (overrides the config file).
    #[arg(long, value_name = "DIR")]
    policies: Option<PathBuf>,
    /// Audit log file (overrides the config file).
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Control socket path (overrides the config file).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Log format (overrides the config file).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
}

fn main() -> ExitCode {
    if let Some(code) = gendocs::from_env(Args::command, "8") {
        return code;
    }
    let args = Args::parse();
    let config_file = Config::file_to_read(args.config.as_deref());
    let overrides = Overrides {
        policy_dir: args.policies,
        audit_path: args.audit_log,
        socket_path: args.socket,
        log_format: args.log_format,
    };
    let config = match Config::resolve(config_file.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => {
            // No logger yet: the config says which one.
            eprintln!("jit-agent: {err}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    if let Err(err) = prereq::check(&config.cgroup_root, &config.bpffs) {
        error!("cannot start: {err}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(config, config_file)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// The log: `[log] level`, or `RUST_LOG`'s filter when it is set and valid (README,
/// "Configuration").
fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::default().add_directive(config.log.level.into()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}
