//! The `jit-agent` daemon: owns the kernel state, keeps the policy in force, turns kernel
//! events into the audit trail and serves `jitctl` on the control socket.
//!
//! Tasks: the event reader ([`events`]), the counter poller, the policy watcher (file changes,
//! SIGHUP, time-window boundaries) and the control socket ([`server`]). They share [`Daemon`]:
//! the enforcer and the audit writer sit behind mutexes held only for the map operation or the
//! write at hand.
pub mod apply;
mod escalation;
mod events;
pub mod peer;
mod server;

use std::{
    collections::BTreeMap,
    fs,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use jiff::Timestamp;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    audit::{
        AuditWriter,
        record::{DaemonStarted, DaemonStopped, PolicyLoaded, PolicyRejected, RecordBody},
    },
    bpf::{Enforcer, Startup},
    config::Config,
    policy::{self, Compiled},
};

/// How often the policy directory is checked for changes.
const POLICY_POLL: Duration = Duration::from_secs(1);
/// How long old rule sets stay in the kernel after a switch: far longer than any program runs
/// (they are non-sleepable and finish within microseconds), so none can still be using them.
const RULESET_GRACE: Duration = Duration::from_secs(2);
/// How often the kernel counters are polled for dropped events.
const COUNTER_POLL: Duration = Duration::from_secs(2);

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
    #[error("HTTP API: cannot listen on {listen}: {source}")]
    Http {
        listen: String,
        #[source]
        source: std::io::Error,
    },
}

/// The policy as installed, and what the daemon knows about it.
#[derive(Default)]
pub struct PolicyState {
    pub generation: u64,
    pub set: Option<policy::PolicySet>,
    pub compiled: Option<Compiled>,
    pub installed: BTreeMap<String, apply::InstalledAgent>,
    pub files: Vec<String>,
    /// Why the newest attempt was rejected, while an older policy stays in force.
    pub last_error: Option<String>,
    pub next_ruleset: u32,
    fingerprint: Vec<(String, u64, Option<SystemTime>)>,
}

impl PolicyState {
    /// Agent name by agent id.
    fn agent_name(&self, id: u32) -> Option<String> {
        self.installed
            .iter()
            .find(|(_, a)| a.id == id)
            .map(|(name, _)| name.clone())
    }

    fn rule_name(&self, id: u32) -> Option<String> {
        self.compiled
            .as_ref()
            .and_then(|c| c.rules.get(&id))
            .map(|r| r.rule.clone())
    }
}

/// State shared by the daemon's tasks.
pub struct Daemon {
    pub config: Config,
    pub startup: Startup,
    enforcer: Mutex<Enforcer>,
    audit: Mutex<AuditWriter>,
    policy: Mutex<PolicyState>,
    queue: Mutex<escalation::Queue>,
    /// Every audit line as written, for live followers (HTTP stream).
    audit_lines: tokio::sync::broadcast::Sender<String>,
    /// The monotonic clock when this daemon started: timeouts whose deadline passed before it
    /// were missed by a daemon that was not running.
    started_ns: u64,
    /// Where new holds are announced, when a webhook is configured.
    webhook: Option<crate::approval::webhook::WebhookHandle>,
}

impl Daemon {
    fn enforcer(&self) -> MutexGuard<'_, Enforcer> {
        self.enforcer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn policy(&self) -> MutexGuard<'_, PolicyState> {
        self.policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn queue(&self) -> MutexGuard<'_, escalation::Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells reviewers about a new held action: the log, and the webhook when configured.
    fn notify(&self, view: &crate::approval::PendingView) {
        if let Some(webhook) = &self.webhook {
            webhook.notify(view.clone());
        }
        info!(
            id = view.id,
            agent = %view.agent,
            op = %view.op,
            path = %view.path,
            pid = view.pid,
            "held for review: `jitctl approve {}` or `jitctl deny {}`",
            view.id,
            view.id
        );
    }

    /// Appends an audit record; a failure is logged loudly (the daemon keeps enforcing: the
    /// kernel does not depend on the log).
    fn audit(&self, body: RecordBody) {
        let mut writer = self
            .audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match writer.append(body) {
            Ok(appended) => {
                // Nobody listening is fine.
                let _ = self.audit_lines.send(appended.line);
            }
            Err(err) => error!(error = %err, "writing the audit log failed"),
        }
    }

    /// Flushes the audit log when its `fsync = "interval"` period has passed.
    fn sync_audit_if_due(&self) {
        let mut writer = self
            .audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(err) = writer.sync_if_due() {
            error!(error = %err, "syncing the audit log failed");
        }
    }

    /// Reads the policy directory, compiles and installs it. A policy that fails is rejected
    /// (logged and audited) and the installed one stays in force.
    ///
    /// # Errors
    /// The rejection, as text for the requester.
    pub fn reload(self: &Arc<Self>, trigger: &str) -> Result<(u64, Vec<String>), String> {
        let dir = &self.config.policy_dir;
        let fingerprint = fingerprint(dir);
        let set = match policy::load_dir(dir) {
            Ok(set) => set,
            Err(errors) => {
                let messages: Vec<String> =
                    errors.errors().iter().map(ToString::to_string).collect();
                return Err(self.reject(trigger, messages, fingerprint));
            }
        };
        let compiled = policy::compile(&set, Timestamp::now());
        let files_of_set: Vec<String> = set
            .agents()
            .iter()
            .map(|a| a.file.display().to_string())
            .collect();
        let mut state = self.policy();
        state.fingerprint = fingerprint;
        let mut next = state.next_ruleset;
        let installed = {
            let mut enforcer = self.enforcer();
            apply::install(
                &mut enforcer,
                &self.config.cgroup_root,
                &compiled,
                &mut next,
            )
        };
        state.next_ruleset = next;
        let installed = match installed {
            Ok(installed) => installed,
            Err(err) => {
                let fingerprint = std::mem::take(&mut state.fingerprint);
                drop(state);
                return Err(self.reject(trigger, vec![err.to_string()], fingerprint));
            }
        };
        let mut files = files_of_set;
        files.sort();
        files.dedup();
        state.generation += 1;
        state.installed = installed;
        state.compiled = Some(compiled);
        state.set = Some(set);
        state.files.clone_from(&files);
        state.last_error = None;
        let generation = state.generation;
        let agents: Vec<String> = state.installed.keys().cloned().collect();
        drop(state);
        info!(generation, trigger, ?agents, "policy loaded");
        self.audit(RecordBody::PolicyLoaded(PolicyLoaded {
            generation,
            files: files.clone(),
        }));
        self.collect_old_rulesets();
        Ok((generation, files))
    }

    fn reject(
        &self,
        trigger: &str,
        messages: Vec<String>,
        fingerprint: Vec<(String, u64, Option<SystemTime>)>,
    ) -> String {
        let text = messages.join("\n");
        let mut state = self.policy();
        state.fingerprint = fingerprint;
        state.last_error = Some(text.clone());
        let keeping = state.generation;
        drop(state);
        error!(
            trigger,
            keeping_generation = keeping,
            "policy rejected; the previous policy stays in force:\n{text}"
        );
        self.audit(RecordBody::PolicyRejected(PolicyRejected {
            errors: messages,
        }));
        text
    }

    /// Removes rule sets no agent uses any more, after the grace period.
    fn collect_old_rulesets(self: &Arc<Self>) {
        let daemon = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(RULESET_GRACE).await;
            let mut enforcer = daemon.enforcer();
            let result = apply::live_rulesets(&mut enforcer)
                .and_then(|live| enforcer.retain_rulesets(&live));
            match result {
                Ok(0) => {}
                Ok(n) => info!(removed = n, "old rule sets removed"),
                Err(err) => {
                    warn!(error = %err, "removing old rule sets failed; retried at the next reload");
                }
            }
        });
    }

    /// Whether the policy directory changed since the last load attempt.
    fn policy_changed(&self) -> bool {
        fingerprint(&self.config.policy_dir) != self.policy().fingerprint
    }
}

/// What identifies the policy directory's content cheaply: each `*.toml` file's name, size and
/// modification time.
fn fingerprint(dir: &std::path::Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".toml"))
        .map(|e| {
            let meta = e.metadata().ok();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.as_ref().map_or(0, std::fs::Metadata::len),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect();
    files.sort();
    files
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

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
/// When the kernel state, the audit log or the socket cannot be set up, or there is no policy
/// to enforce.
pub async fn run(config: Config, config_file: Option<PathBuf>) -> Result<(), DaemonError> {
    let audit = open_audit(&config)?;
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
    // the policy directory, the audit log, the control socket or the config file (the kernel also keeps them
    // out of cgroupfs, bpffs and bpf()). Set before anything else, also when adopting.
    let protected = config.protected_paths(config_file.as_deref());
    let protected: Vec<&std::path::Path> = protected.iter().map(PathBuf::as_path).collect();
    enforcer.set_protection(std::process::id(), &protected)?;
    info!(?protected, "self-protection in force for agent cgroups");
    let next_ruleset = apply::first_free_ruleset(&mut enforcer)?;
    let webhook = config.webhook.url.clone().map(|url| {
        info!(url = %url, "new holds are announced to the webhook");
        crate::approval::webhook::spawn(url, crate::approval::webhook::WebhookOptions::default())
    });
    // Token files are read before anything else starts: a bad one stops the daemon here.
    let http = if config.http.enabled {
        let tokens = crate::approval::http::Tokens::load(&config.http.tokens)?;
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| DaemonError::Http {
                listen: config.http.listen.to_string(),
                source,
            })?;
        Some((tokens, listener))
    } else {
        None
    };
    let events = enforcer.take_events()?;
    let daemon = Arc::new(Daemon {
        config,
        startup,
        enforcer: Mutex::new(enforcer),
        audit: Mutex::new(audit),
        policy: Mutex::new(PolicyState {
            next_ruleset,
            ..PolicyState::default()
        }),
        queue: Mutex::new(escalation::Queue::default()),
        audit_lines: tokio::sync::broadcast::channel(1024).0,
        webhook,
        started_ns: escalation::monotonic_ns(),
    });
    daemon.audit(RecordBody::DaemonStarted(DaemonStarted {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
    }));
    // Events first: whatever the kernel queued while no daemon ran is audited before anything
    // else happens.
    let event_task = tokio::spawn(events::read_events(Arc::clone(&daemon), events)?);

    if let Err(errors) = daemon.reload("start") {
        if startup == Startup::Loaded {
            return Err(DaemonError::NoPolicy(errors));
        }
        warn!("keeping the policy the previous daemon installed in the kernel");
    }

    // Holds the kernel kept while no daemon ran: adopted, and overdue ones resolved, before
    // reviewers can connect.
    daemon.reconcile();
    tokio::spawn(reconcile_loop(Arc::clone(&daemon)));

    let listener = server::bind(&daemon.config.socket)?;
    tokio::spawn(server::serve(Arc::clone(&daemon), listener));
    if let Some((tokens, listener)) = http {
        info!(listen = %daemon.config.http.listen, "HTTP approval API ready");
        let service: Arc<dyn crate::approval::ApprovalService> = Arc::clone(&daemon) as _;
        tokio::spawn(async move {
            if let Err(err) = crate::approval::http::serve(listener, tokens, service).await {
                error!(error = %err, "the HTTP approval API stopped");
            }
        });
    }
    tokio::spawn(events::poll_counters(Arc::clone(&daemon)));
    tokio::spawn(watch_policy(Arc::clone(&daemon)));

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
    info!(
        reason,
        "stopping; the programs stay attached and keep enforcing the policy"
    );
    daemon.audit(RecordBody::DaemonStopped(DaemonStopped {
        reason: reason.to_owned(),
    }));
    let _ = fs::remove_file(&daemon.config.socket.path);
    Ok(())
}

/// Reloads the policy on SIGHUP, when a file in the policy directory changes, and at the next
/// time-window boundary.
async fn watch_policy(daemon: Arc<Daemon>) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        error!("cannot listen for SIGHUP; reload with `jitctl policy reload`");
        return;
    };
    let mut poll = tokio::time::interval(POLICY_POLL);
    loop {
        let boundary = daemon
            .policy()
            .compiled
            .as_ref()
            .and_then(|c| c.valid_until)
            .map(|at| {
                let wait = at.duration_since(Timestamp::now());
                Duration::try_from(wait).unwrap_or(Duration::ZERO)
            });
        let trigger = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            _ = poll.tick() => {
                if !daemon.policy_changed() {
                    continue;
                }
                "file change"
            }
            () = sleep_or_forever(boundary) => "time window",
        };
        // Errors are logged and audited by reload itself.
        let _ = daemon.reload(trigger);
    }
}

/// How often the queue is reconciled with the kernel's pending map (and timeouts applied).
const RECONCILE: Duration = Duration::from_millis(500);

async fn reconcile_loop(daemon: Arc<Daemon>) {
    let mut tick = tokio::time::interval(RECONCILE);
    loop {
        tick.tick().await;
        daemon.reconcile();
    }
}

impl crate::approval::ApprovalService for Daemon {
    fn pending(&self) -> Vec<crate::approval::PendingView> {
        self.pending_views()
    }

    fn decide(
        &self,
        id: u64,
        reviewer: &crate::approval::Reviewer,
        action: crate::approval::ReviewAction,
        reason: Option<String>,
    ) -> Result<crate::approval::Decided, crate::approval::DecideError> {
        Daemon::decide(self, id, reviewer, action, reason)
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.audit_lines.subscribe()
    }
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}
