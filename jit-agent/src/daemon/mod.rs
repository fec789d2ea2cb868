//! The `jit-agent` daemon: components that each own their state and talk over typed channels
//! (docs/ARCHITECTURE.md):
//!
//! - [`kernel`]: the kernel handle, the only owner of the programs and maps (its own thread);
//! - [`events`]: the event reader (ring buffer → audit sink and hold manager) and the counter
//!   poller;
//! - [`audit_sink`]: the only writer of the audit log (its own thread, group commit);
//! - [`policy_store`]: loads, installs and publishes policy snapshots, keeps the last good one;
//! - [`holds`]: the hold manager (queue, decisions, quorum, timeouts, reconciliation);
//! - [`history`]: each agent's recent denials and holds, for the agent socket;
//! - [`metrics_http`]: the Prometheus listener, a reader of [`crate::metrics::Metrics`] (which
//!   the components above record into) and of the components' state at scrape time;
//! - the channels, clients of the above: the control socket ([`server`]), the agent socket
//!   ([`agent_socket`]), the HTTP API and the webhook notifier ([`crate::approval`]).
mod agent_socket;
pub mod apply;
mod audit_sink;
mod events;
pub mod export;
mod history;
mod holds;
mod kernel;
mod last_good;
mod metrics_http;
pub mod peer;
mod policy_store;
mod server;

use std::{fs, path::PathBuf, sync::Arc};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

pub use self::policy_store::last_good_dir;
use self::{
    audit_sink::AuditSink,
    holds::{HoldManager, Holds},
    kernel::KernelHandle,
    policy_store::{PolicyOwner, PolicyStore},
};
use crate::{
    audit::{
        AuditWriter,
        record::{DaemonStarted, DaemonStopped, RecordBody},
    },
    bpf::{Enforcer, Startup},
    config::Config,
};

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Bpf(#[from] crate::bpf::BpfError),
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error(
        "no valid policy to enforce: {0}\n(the daemon loaded jit's programs just now, so there \
         is no previous policy to keep; fix the policy and start again)"
    )]
    NoPolicy(String),
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP API: {0}")]
    Tokens(#[from] crate::approval::http::TokenError),
    #[error("HTTP API: {0}")]
    Tls(#[from] crate::approval::tls::TlsError),
    #[error("Slack: {0}")]
    Slack(#[from] crate::approval::slack::SlackError),
    #[error("HTTP API: cannot listen on {listen}: {source}")]
    Http {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics: cannot listen on {listen}: {source}")]
    Metrics {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    KernelGone(#[from] kernel::KernelGone),
}

/// What the control and agent sockets serve from: handles on the components.
#[derive(Clone)]
struct Context {
    config: Arc<Config>,
    startup: Startup,
    kernel: KernelHandle,
    policy: PolicyStore,
    holds: Holds,
    history: history::History,
}

/// Raises the descriptor limit and opens the audit log, saying when it was found cut.
fn open_audit(config: &Config) -> Result<AuditWriter, DaemonError> {
    // Descriptors are what a starved daemon runs out of first (each control connection, each
    // /proc read): use every one the hard limit allows.
    match crate::robust::raise_nofile_limit() {
        Ok((old, new)) if old != new => info!(old, new, "raised the open files limit"),
        Ok(_) => {}
        Err(err) => warn!(error = %err, "cannot raise the open files limit"),
    }
    let audit = AuditWriter::open(config.audit.options())?;
    if let Some(cut) = audit.cut() {
        error!(
            log_seq = cut.log_seq,
            checkpoint_seq = cut.checkpoint_seq,
            "the audit log ends before its checkpoint: records were cut off while no daemon ran \
             (recorded as audit_cut; `jitctl audit verify` fails from now on)"
        );
    }
    Ok(audit)
}

/// The kernel side at start: the programs loaded or adopted, self-protection in force, the
/// first free rule set id. Runs on a blocking thread.
fn open_kernel(
    config: &Config,
    config_file: Option<&std::path::Path>,
) -> Result<(Enforcer, Startup, u32), DaemonError> {
    let (mut enforcer, startup) = Enforcer::load_pinned(&config.bpffs)?;
    match startup {
        Startup::Loaded => {
            info!(pins = %config.bpffs.display(), "programs loaded, attached and pinned");
        }
        Startup::Adopted => info!(
            pins = %config.bpffs.display(),
            "adopted the attached programs and maps of a previous run: enforcement never stopped"
        ),
    }
    // Self-protection, on by default: agents may not signal or trace this process, nor change
    // the policy directory, the audit log, the control socket or the config file (the kernel
    // also keeps them out of cgroupfs, bpffs and bpf()). Set before anything else, also when
    // adopting.
    let protected = config.protected_paths(config_file);
    let protected: Vec<&std::path::Path> = protected.iter().map(PathBuf::as_path).collect();
    enforcer.set_protection(std::process::id(), &protected)?;
    info!(?protected, "self-protection in force for agent cgroups");
    // Rule sets no agent uses are left over from an install that stopped half way (a crash
    // between writing the new rule sets and switching to them): remove them before any id
    // after the live ones is used again, so that a new rule set never starts with stale rules.
    let live = apply::live_rulesets(&mut enforcer)?;
    let stale = enforcer.retain_rulesets(&live)?;
    if stale > 0 {
        info!(
            rules = stale,
            "removed rules left over from an interrupted policy install"
        );
    }
    let next_ruleset = apply::first_free_ruleset(&mut enforcer)?;
    Ok((enforcer, startup, next_ruleset))
}

/// The HTTP API's tokens, options (review page, TLS, Slack) and listener, when it is enabled.
/// Every file (tokens, certificate, key, Slack secrets) is read here: a bad one stops the
/// daemon at start.
async fn bind_http(
    config: &Config,
) -> Result<
    Option<(
        crate::approval::http::Tokens,
        crate::approval::http::ServeOptions,
        tokio::net::TcpListener,
    )>,
    DaemonError,
> {
    if !config.http.enabled {
        return Ok(None);
    }
    let (tokens, options) = {
        let http = config.http.clone();
        let slack = config.slack.clone();
        tokio::task::spawn_blocking(move || -> Result<_, DaemonError> {
            let tokens = crate::approval::http::Tokens::load(&http.tokens)?;
            let tls = match &http.tls {
                Some((cert, key)) => Some(crate::approval::tls::Tls::load(cert, key)?),
                None => None,
            };
            let slack = match &slack {
                Some(slack) => Some(Arc::new(crate::approval::slack::SlackInteractions::load(
                    slack,
                )?)),
                None => None,
            };
            Ok((
                tokens,
                crate::approval::http::ServeOptions {
                    web: http.web,
                    tls,
                    slack,
                },
            ))
        })
        .await??
    };
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| DaemonError::Http {
            listen: config.http.listen.to_string(),
            source,
        })?;
    Ok(Some((tokens, options, listener)))
}

/// The Slack notifier (its bot token read now), when `[slack]` is configured.
async fn load_slack_notifier(
    config: &Config,
) -> Result<Option<crate::approval::slack::SlackNotifier>, DaemonError> {
    let Some(slack) = config.slack.clone() else {
        return Ok(None);
    };
    Ok(Some(
        tokio::task::spawn_blocking(move || crate::approval::slack::SlackNotifier::load(&slack))
            .await??,
    ))
}

/// Starts what reviewers reach over the network, once the holds service runs: the webhook's
/// end-of-hold messages, the Slack notifier, and the HTTP listener (API, review page, Slack's
/// endpoint).
fn start_reviewer_channels(
    config: &Config,
    service: Arc<dyn crate::approval::ApprovalService>,
    webhook: Option<crate::approval::webhook::WebhookHandle>,
    slack: Option<crate::approval::slack::SlackNotifier>,
    http: Option<(
        crate::approval::http::Tokens,
        crate::approval::http::ServeOptions,
        tokio::net::TcpListener,
    )>,
) {
    if let Some(webhook) = webhook {
        // The generic webhook also hears how each hold ended.
        tokio::spawn(webhook.follow_endings(service.subscribe()));
    }
    if let Some(slack) = slack {
        info!("new holds are posted to Slack with buttons");
        tokio::spawn(slack.run(Arc::clone(&service)));
    }
    if let Some((tokens, options, listener)) = http {
        info!(
            listen = %config.http.listen, web = options.web, tls = options.tls.is_some(),
            "HTTP approval API ready"
        );
        tokio::spawn(async move {
            let served = crate::approval::http::serve_with(
                listener,
                tokens,
                service,
                options,
                std::future::pending(),
            )
            .await;
            if let Err(err) = served {
                error!(error = %err, "the HTTP approval API stopped");
            }
        });
    }
}

/// Binds and serves the agent socket, when it is enabled.
async fn start_agent_socket(context: &Context) -> Result<(), DaemonError> {
    if context.config.agent_socket.enabled {
        let path = context.config.agent_socket.path.clone();
        let listener = tokio::task::spawn_blocking(move || agent_socket::bind(&path)).await??;
        tokio::spawn(agent_socket::serve(context.clone(), listener));
    }
    Ok(())
}

/// Tells systemd the daemon is ready (`READY=1`, with a `STATUS=` line) when it runs as a
/// `Type=notify` service. A failure to tell is logged: systemd then times the start out, which
/// is the right outcome for a service manager that cannot be reached.
fn notify_ready(startup: Startup) {
    let status = match startup {
        Startup::Adopted => "enforcing; adopted the programs of a previous run",
        Startup::Loaded => "enforcing; loaded the programs",
    };
    if let Err(err) = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]) {
        error!(error = %err, "cannot tell systemd that the daemon is ready (NOTIFY_SOCKET)");
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
/// When the kernel state, the audit log or the socket cannot be set up, or there is no policy
/// to enforce.
#[expect(
    clippy::too_many_lines,
    reason = "the start-up sequence in its order: each step needs the handles of the ones before"
)]
pub async fn run(config: Config, config_file: Option<PathBuf>) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    // Start-up I/O (the audit log's tail and fsync, program loading) on blocking threads too.
    let audit = {
        let config = Arc::clone(&config);
        tokio::task::spawn_blocking(move || open_audit(&config)).await??
    };
    let (mut enforcer, startup, next_ruleset) = {
        let config = Arc::clone(&config);
        tokio::task::spawn_blocking(move || open_kernel(&config, config_file.as_deref())).await??
    };
    let metrics = crate::metrics::Metrics::new();
    let metrics_listener = metrics_http::bind(&config).await?;
    let webhook = config.webhook.url.clone().map(|url| {
        info!(url = %url, "new holds are announced to the webhook");
        crate::approval::webhook::spawn(url, crate::approval::webhook::WebhookOptions::default())
    });
    // Token files are read before anything else starts: a bad one stops the daemon here.
    let http = bind_http(&config).await?;
    let slack = load_slack_notifier(&config).await?;
    let webhook_ends = webhook.clone();
    let ring = enforcer.take_events()?;
    let kernel = KernelHandle::spawn(enforcer)?;
    let audit = AuditSink::spawn(audit, metrics.clone())?;
    let targets = export::ExportTargets {
        journald: config.export.journald.clone(),
        syslog: config.export.syslog.clone(),
    };
    if !targets.is_empty() {
        export::spawn(&targets, audit.subscribe(), metrics.clone())?;
    }
    audit.record(RecordBody::DaemonStarted(DaemonStarted {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
    }));
    let (mut policy_owner, policy) = PolicyOwner::new(
        Arc::clone(&config),
        kernel.clone(),
        audit.clone(),
        next_ruleset,
        metrics.clone(),
    );
    let (mut hold_manager, holds) = HoldManager::new(
        kernel.clone(),
        audit.clone(),
        policy.clone(),
        webhook.clone(),
        config.audit.path.clone(),
        holds::monotonic_ns(),
        metrics.clone(),
    );
    let history = history::History::spawn();
    // Events first: whatever the kernel queued while no daemon ran is audited before anything
    // else happens.
    let event_task = tokio::spawn(events::read_events(
        ring,
        policy.clone(),
        audit.clone(),
        holds.clone(),
        history.clone(),
        metrics.clone(),
    )?);

    if let Err(errors) = policy_owner.start(startup == Startup::Adopted).await {
        return Err(DaemonError::NoPolicy(errors));
    }
    tokio::spawn(policy_owner.run());

    // Holds the kernel kept while no daemon ran: adopted, and overdue ones resolved, before
    // reviewers can connect.
    hold_manager.reconcile().await;
    tokio::spawn(hold_manager.run());

    let context_policy = policy.clone();
    let counters_policy = policy.clone();
    let context = Context {
        config: Arc::clone(&config),
        startup,
        kernel: kernel.clone(),
        policy,
        holds: holds.clone(),
        history,
    };
    // The socket's group (NSS) and directory: on a blocking thread.
    let listener = {
        let socket = config.socket.clone();
        tokio::task::spawn_blocking(move || server::bind(&socket)).await??
    };
    start_agent_socket(&context).await?;
    tokio::spawn(server::serve(context, listener));
    start_reviewer_channels(&config, Arc::new(holds), webhook_ends, slack, http);
    if let Some(listener) = metrics_listener {
        let (kernel, bpffs) = (kernel.clone(), config.bpffs.clone());
        let sources = metrics_http::Sources {
            metrics,
            kernel,
            policy: context_policy,
            webhook,
            bpffs,
        };
        tokio::spawn(metrics_http::serve(listener, sources));
    }
    tokio::spawn(events::poll_counters(
        kernel,
        audit.clone(),
        counters_policy,
    ));
    // systemd (`Type=notify`, see packaging/jit-agent.service): ready only now, with the
    // programs attached, a policy in the kernel and the sockets answering — so `systemctl start`
    // returns when jit enforces and `jitctl` works. Without NOTIFY_SOCKET this does nothing.
    notify_ready(startup);

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let reason = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        result = event_task => {
            error!(?result, "the event reader stopped");
            "event reader failed"
        }
    };
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    info!(
        reason,
        "stopping; the programs stay attached and keep enforcing the policy"
    );
    audit.record(RecordBody::DaemonStopped(DaemonStopped {
        reason: reason.to_owned(),
    }));
    audit.flush().await;
    let _ = fs::remove_file(&config.socket.path);
    if config.agent_socket.enabled {
        let _ = fs::remove_file(&config.agent_socket.path);
    }
    Ok(())
}
