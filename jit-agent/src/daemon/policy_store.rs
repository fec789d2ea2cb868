//! The policy store: loads, installs and publishes the policy (docs/ARCHITECTURE.md, I3 and
//! I6).
//!
//! One task owns everything about loading (the directory's fingerprint, the next rule set id,
//! the last good policy on disk) and publishes each result as an immutable [`PolicySnapshot`]
//! on a `watch` channel: readers (the event reader, the hold manager, the control socket) take
//! the current snapshot without waiting for anyone. Reading and compiling the directory (file
//! reads, NSS lookups of approvers) runs on blocking threads; installing is one command to the
//! kernel handle.
//!
//! Every policy installed from the directory is also kept, as its source texts, in a root-only
//! directory beside the audit log ([`last_good_dir`], `last_good.rs`). A restarted daemon whose policy directory
//! no longer loads keeps what the kernel enforces (the pinned maps are untouched) and serves
//! reviewers from that copy: approvers, quorum, timeouts and names of the policy the kernel
//! has (I6).
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use jiff::Timestamp;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot, watch},
};
use tracing::{error, info, warn};

pub use super::last_good::last_good_dir;
use super::{
    apply::{self, InstalledAgent},
    audit_sink::AuditSink,
    holds::ConditionCache,
    kernel::KernelHandle,
    last_good::{load_last_good, save_last_good},
};
use crate::{
    audit::record::{PolicyLoaded, PolicyRejected, RecordBody},
    config::Config,
    policy::{self, AgentPolicy, Compiled, PolicySet},
};

/// How often the policy directory is checked for changes.
const POLICY_POLL: Duration = Duration::from_secs(1);
/// How long old rule sets stay in the kernel after a switch: far longer than any program runs
/// (they are non-sleepable and finish within microseconds), so none can still be using them.
const RULESET_GRACE: Duration = Duration::from_secs(2);

/// Where the policy that reviewers are served comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// The policy directory, as loaded and installed by this daemon.
    Directory,
    /// The last good policy a previous run kept ([`last_good_dir`]): the directory did not
    /// load at start; the kernel keeps enforcing what that run installed.
    LastGood { dir: PathBuf, saved: String },
    /// Nothing: the directory did not load and no last good policy was found. The kernel
    /// keeps enforcing what it has; reviewers cannot be matched to approvers.
    KernelOnly,
}

/// The policy as installed, and what the daemon knows about it. Immutable: a change publishes
/// a new snapshot.
#[derive(Debug)]
pub struct PolicySnapshot {
    pub generation: u64,
    pub set: Option<Arc<PolicySet>>,
    pub compiled: Option<Arc<Compiled>>,
    pub installed: BTreeMap<String, InstalledAgent>,
    pub files: Vec<String>,
    /// Why the newest attempt was rejected, while an older policy stays in force.
    pub last_error: Option<String>,
    pub served: Served,
    /// The maps the daemon-side conditions are decided with, built when first needed.
    pub conditions: ConditionCache,
}

impl PolicySnapshot {
    fn empty() -> Self {
        Self {
            generation: 0,
            set: None,
            compiled: None,
            installed: BTreeMap::new(),
            files: Vec::new(),
            last_error: None,
            served: Served::KernelOnly,
            conditions: ConditionCache::default(),
        }
    }

    /// Agent name by agent id.
    #[must_use]
    pub fn agent_name(&self, id: u32) -> Option<String> {
        self.installed
            .iter()
            .find(|(_, a)| a.id == id)
            .map(|(name, _)| name.clone())
    }

    /// The name of rule `id`, if it has one.
    #[must_use]
    pub fn rule_name(&self, id: u32) -> Option<String> {
        self.compiled
            .as_ref()
            .and_then(|c| c.rules.get(&id))
            .map(|r| r.rule.clone())
    }

    /// The `hint` of rule `id`, if it has one.
    #[must_use]
    pub fn rule_hint(&self, id: u32) -> Option<String> {
        self.compiled
            .as_ref()
            .and_then(|c| c.rules.get(&id))
            .and_then(|r| r.hint.clone())
    }

    /// Whether rule `rule_id` of agent `agent_id` has daemon-side conditions (policies/README.md,
    /// "Conditions"): only such holds are assessed by the daemon.
    #[must_use]
    pub fn rule_is_conditional(&self, agent_id: u32, rule_id: u32) -> bool {
        self.agent_policy(agent_id).is_some_and(|a| {
            a.rules
                .iter()
                .any(|r| r.id == rule_id && r.is_conditional())
        })
    }

    /// The policy of agent `id`.
    #[must_use]
    pub fn agent_policy(&self, id: u32) -> Option<&AgentPolicy> {
        self.set.as_ref()?.agent(&self.agent_name(id)?)
    }

    /// What `jitctl status` says about where reviewers' policy comes from, when it is not the
    /// policy directory.
    #[must_use]
    pub fn served_note(&self) -> Option<String> {
        match &self.served {
            Served::Directory => None,
            Served::LastGood { dir, saved } => Some(format!(
                "the last good policy, saved {saved} in {} (the policy directory did not load \
                 at start; the kernel keeps enforcing what was installed)",
                dir.display()
            )),
            Served::KernelOnly => Some(
                "none: the policy directory did not load at start and no last good policy was \
                 kept; the kernel keeps enforcing what was installed, but no reviewer can \
                 approve"
                    .to_owned(),
            ),
        }
    }
}

/// The policy's readers and the way to ask for a reload; clones share the store.
#[derive(Clone)]
pub struct PolicyStore {
    snapshot: watch::Receiver<Arc<PolicySnapshot>>,
    reloads: mpsc::UnboundedSender<ReloadRequest>,
}

struct ReloadRequest {
    trigger: &'static str,
    reply: oneshot::Sender<Result<(u64, Vec<String>), String>>,
}

impl PolicyStore {
    /// The policy in force now.
    #[must_use]
    pub fn current(&self) -> Arc<PolicySnapshot> {
        Arc::clone(&self.snapshot.borrow())
    }

    /// Reads, compiles and installs the policy directory now.
    ///
    /// # Errors
    /// The rejection, as text for the requester; the previous policy stays in force.
    pub async fn reload(&self, trigger: &'static str) -> Result<(u64, Vec<String>), String> {
        let (reply, answer) = oneshot::channel();
        self.reloads
            .send(ReloadRequest { trigger, reply })
            .map_err(|_| "the daemon is stopping".to_owned())?;
        answer
            .await
            .unwrap_or_else(|_| Err("the daemon is stopping".to_owned()))
    }
}

/// Returns the heap pages freed since the last call to the system. A reload parses every
/// policy file into a syntax tree, a policy set and compiled rules at once (for 100,000 rules,
/// hundreds of MiB at the peak), and the allocator keeps what it freed as the daemon's resident
/// memory; only the new snapshot needs to stay.
fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: `malloc_trim` only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What identifies the policy directory's content cheaply: each `*.toml` file's name, size and
/// modification time.
type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

/// The task that owns loading and installing. Built by [`PolicyOwner::new`], given its start
/// with [`PolicyOwner::start`], then run with [`PolicyOwner::run`].
pub struct PolicyOwner {
    config: Arc<Config>,
    kernel: KernelHandle,
    audit: AuditSink,
    fingerprint: Fingerprint,
    next_ruleset: u32,
    /// The source texts last saved as the last good policy.
    saved: Option<Vec<(String, String)>>,
    publish: watch::Sender<Arc<PolicySnapshot>>,
    requests: mpsc::UnboundedReceiver<ReloadRequest>,
    metrics: crate::metrics::Metrics,
}

impl PolicyOwner {
    /// The owner and the store its readers use.
    #[must_use]
    pub fn new(
        config: Arc<Config>,
        kernel: KernelHandle,
        audit: AuditSink,
        next_ruleset: u32,
        metrics: crate::metrics::Metrics,
    ) -> (Self, PolicyStore) {
        let (publish, snapshot) = watch::channel(Arc::new(PolicySnapshot::empty()));
        let (reloads, requests) = mpsc::unbounded_channel();
        let owner = Self {
            config,
            kernel,
            audit,
            fingerprint: Vec::new(),
            next_ruleset,
            saved: None,
            publish,
            requests,
            metrics,
        };
        (owner, PolicyStore { snapshot, reloads })
    }

    fn current(&self) -> Arc<PolicySnapshot> {
        Arc::clone(&self.publish.borrow())
    }

    /// The first load. When the directory does not load and `adopted` (the kernel has a
    /// previous run's policy), the last good policy is served to reviewers (I6).
    ///
    /// # Errors
    /// The directory's errors when it does not load and nothing was adopted.
    pub async fn start(&mut self, adopted: bool) -> Result<(), String> {
        let errors = match self.reload("start").await {
            Ok(_) => return Ok(()),
            Err(errors) if !adopted => return Err(errors),
            Err(errors) => errors,
        };
        let dir = last_good_dir(&self.config);
        let root = self.config.cgroup_root.clone();
        let loaded = tokio::task::spawn_blocking(move || load_last_good(&dir, &root))
            .await
            .unwrap_or_else(|e| Err(format!("loading the last good policy: {e}")));
        let snapshot = match loaded {
            Ok((set, compiled, saved, cgroup_ids)) => {
                let kernel_configs = self
                    .kernel
                    .call(crate::bpf::Enforcer::agent_configs)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                let installed = compiled
                    .agents
                    .iter()
                    .map(|agent| {
                        let id = apply::agent_id(&agent.name);
                        let ruleset = kernel_configs
                            .iter()
                            .find(|(k, _)| *k == id)
                            .map_or(0, |(_, c)| c.ruleset);
                        let cgroups = agent
                            .cgroups
                            .iter()
                            .map(|rel| (rel.clone(), cgroup_ids.get(rel).copied().unwrap_or(0)))
                            .collect();
                        let installed = InstalledAgent {
                            id,
                            ruleset,
                            cgroups,
                            rules: agent.entry_count(),
                        };
                        (agent.name.clone(), installed)
                    })
                    .collect();
                let dir = last_good_dir(&self.config);
                error!(
                    last_good = %dir.display(),
                    saved = %saved,
                    "the policy directory does not load (errors above); the kernel keeps \
                     enforcing the policy a previous run installed, and reviewers are served \
                     the last good policy it kept"
                );
                PolicySnapshot {
                    generation: 0,
                    files: set
                        .agents()
                        .iter()
                        .map(|a| a.file.display().to_string())
                        .collect(),
                    set: Some(Arc::new(set)),
                    compiled: Some(Arc::new(compiled)),
                    installed,
                    last_error: Some(errors),
                    served: Served::LastGood { dir, saved },
                    conditions: ConditionCache::default(),
                }
            }
            Err(why) => {
                error!(
                    why,
                    "the policy directory does not load and there is no usable last good \
                     policy; the kernel keeps enforcing what a previous run installed, but \
                     reviewers cannot be matched to approvers until the directory is fixed"
                );
                PolicySnapshot {
                    last_error: Some(errors),
                    ..PolicySnapshot::empty()
                }
            }
        };
        self.publish.send_replace(Arc::new(snapshot));
        Ok(())
    }

    /// Reads the policy directory, compiles and installs it. A policy that fails is rejected
    /// (logged and audited) and the installed one stays in force.
    async fn reload(&mut self, trigger: &str) -> Result<(u64, Vec<String>), String> {
        let result = self.load_and_install(trigger).await;
        give_back_freed_memory();
        result
    }

    /// [`PolicyOwner::reload`], up to dropping what only the reload needed.
    async fn load_and_install(&mut self, trigger: &str) -> Result<(u64, Vec<String>), String> {
        let dir = self.config.policy_dir.clone();
        let read = tokio::task::spawn_blocking(move || {
            let fingerprint = fingerprint(&dir);
            let loaded = policy::load_dir_sources(&dir).map(|(set, sources)| {
                let compiled = policy::compile(&set, Timestamp::now());
                (set, sources, compiled)
            });
            (fingerprint, loaded)
        })
        .await;
        let (fingerprint, loaded) = match read {
            Ok(read) => read,
            Err(err) => {
                return Err(self.reject(
                    trigger,
                    vec![format!("reading the policy failed: {err}")],
                    Vec::new(),
                ));
            }
        };
        let (set, sources, compiled) = match loaded {
            Ok(loaded) => loaded,
            Err(errors) => {
                let messages = errors.errors().iter().map(ToString::to_string).collect();
                return Err(self.reject(trigger, messages, fingerprint));
            }
        };
        let root = self.config.cgroup_root.clone();
        let mut next = self.next_ruleset;
        let installed = self
            .kernel
            .call(move |enforcer| {
                let installed = apply::install(enforcer, &root, &compiled, &mut next);
                (installed, next, compiled)
            })
            .await;
        let (installed, next, compiled) = match installed {
            Ok(done) => done,
            Err(gone) => return Err(self.reject(trigger, vec![gone.to_string()], fingerprint)),
        };
        self.next_ruleset = next;
        let installed = match installed {
            Ok(installed) => installed,
            Err(err) => return Err(self.reject(trigger, vec![err.to_string()], fingerprint)),
        };
        self.fingerprint = fingerprint;
        let mut files: Vec<String> = set
            .agents()
            .iter()
            .map(|a| a.file.display().to_string())
            .collect();
        files.sort();
        files.dedup();
        let generation = self.current().generation + 1;
        let agents: Vec<String> = installed.keys().cloned().collect();
        self.publish.send_replace(Arc::new(PolicySnapshot {
            generation,
            set: Some(Arc::new(set)),
            compiled: Some(Arc::new(compiled)),
            installed,
            files: files.clone(),
            last_error: None,
            served: Served::Directory,
            conditions: ConditionCache::default(),
        }));
        info!(generation, trigger, ?agents, "policy loaded");
        self.audit.record(RecordBody::PolicyLoaded(PolicyLoaded {
            generation,
            files: files.clone(),
        }));
        self.metrics.policy_reload(true);
        self.save_last_good(sources).await;
        self.collect_old_rulesets();
        Ok((generation, files))
    }

    fn reject(&mut self, trigger: &str, messages: Vec<String>, fingerprint: Fingerprint) -> String {
        let text = messages.join("\n");
        self.metrics.policy_reload(false);
        self.fingerprint = fingerprint;
        let current = self.current();
        let keeping = current.generation;
        self.publish.send_replace(Arc::new(PolicySnapshot {
            generation: current.generation,
            set: current.set.clone(),
            compiled: current.compiled.clone(),
            installed: current.installed.clone(),
            files: current.files.clone(),
            last_error: Some(text.clone()),
            served: current.served.clone(),
            conditions: ConditionCache::default(),
        }));
        error!(
            trigger,
            keeping_generation = keeping,
            "policy rejected; the previous policy stays in force:\n{text}"
        );
        self.audit
            .record(RecordBody::PolicyRejected(PolicyRejected {
                errors: messages,
            }));
        text
    }

    /// Keeps `sources` as the last good policy, when they differ from the one kept.
    async fn save_last_good(&mut self, sources: Vec<(PathBuf, String)>) {
        let texts: Vec<(String, String)> = sources
            .into_iter()
            .filter_map(|(path, text)| {
                Some((path.file_name()?.to_string_lossy().into_owned(), text))
            })
            .collect();
        if self.saved.as_ref() == Some(&texts) {
            return;
        }
        let dir = last_good_dir(&self.config);
        let from = self.config.policy_dir.clone();
        let copy = texts.clone();
        let saved = tokio::task::spawn_blocking(move || save_last_good(&dir, &from, &copy)).await;
        match saved {
            Ok(Ok(())) => self.saved = Some(texts),
            Ok(Err(err)) => {
                warn!(error = %err, "keeping a copy of the last good policy failed");
            }
            Err(err) => warn!(error = %err, "keeping a copy of the last good policy failed"),
        }
    }

    /// Removes rule sets no agent uses any more, after the grace period.
    fn collect_old_rulesets(&self) {
        let kernel = self.kernel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RULESET_GRACE).await;
            let result = kernel
                .call(|enforcer| {
                    apply::live_rulesets(enforcer).and_then(|live| enforcer.retain_rulesets(&live))
                })
                .await;
            match result {
                Ok(Ok(0)) | Err(_) => {}
                Ok(Ok(n)) => info!(removed = n, "old rule sets removed"),
                Ok(Err(err)) => {
                    warn!(error = %err, "removing old rule sets failed; retried at the next reload");
                }
            }
        });
    }

    /// Reloads on request, on SIGHUP, when a file in the policy directory changes, and at the
    /// next time-window boundary, until the daemon stops.
    pub async fn run(mut self) {
        let mut hup = signal(SignalKind::hangup()).ok();
        if hup.is_none() {
            error!("cannot listen for SIGHUP; reload with `jitctl policy reload`");
        }
        let mut poll = tokio::time::interval(POLICY_POLL);
        loop {
            let boundary = self
                .current()
                .compiled
                .as_ref()
                .and_then(|c| c.valid_until)
                .map(|at| {
                    let wait = at.duration_since(Timestamp::now());
                    Duration::try_from(wait).unwrap_or(Duration::ZERO)
                });
            let trigger = tokio::select! {
                request = self.requests.recv() => {
                    let Some(request) = request else { return };
                    let result = self.reload(request.trigger).await;
                    let _ = request.reply.send(result);
                    continue;
                }
                () = hup_or_forever(hup.as_mut()) => "SIGHUP",
                _ = poll.tick() => {
                    let dir = self.config.policy_dir.clone();
                    let now = tokio::task::spawn_blocking(move || fingerprint(&dir))
                        .await
                        .unwrap_or_default();
                    if now == self.fingerprint {
                        continue;
                    }
                    "file change"
                }
                () = sleep_or_forever(boundary) => "time window",
            };
            // Errors are logged and audited by reload itself.
            let _ = self.reload(trigger).await;
        }
    }
}

async fn hup_or_forever(hup: Option<&mut tokio::signal::unix::Signal>) {
    match hup {
        Some(hup) => {
            hup.recv().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut files: Vec<_> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".toml"))
        .map(|e| {
            let meta = e.metadata().ok();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.as_ref().map_or(0, fs::Metadata::len),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect();
    files.sort();
    files
}
