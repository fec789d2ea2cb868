//! The daemon's configuration file (`jit-agent --config FILE`, TOML).
//!
//! Every key is optional; [`Config::default`] holds the documented defaults, and
//! `jit-agent/jit-agent.example.toml` documents every key. Unknown keys are errors (a typo must
//! not silently leave a security setting at its default). Errors name the position:
//! `FILE:LINE:COL: message`.
//!
//! Precedence: command-line flags ([`Overrides`]) > the file > the defaults; see
//! [`Config::resolve`].
//!
//! The file as written (every key optional) is `raw`; single values checked while they are
//! read (paths, sizes, modes, ...) are `values`, a leaf.
//!
//! | key | default | |
//! |---|---|---|
//! | `policy_dir` | `/etc/jit/policies` | absolute path |
//! | `bpffs` | `/sys/fs/bpf/jit` | where programs and maps are pinned |
//! | `cgroup_root` | `/sys/fs/cgroup` | the cgroup2 mount |
//! | `audit.path` | `/var/log/jit/audit.jsonl` | |
//! | `audit.fsync` | `"always"` | `"always"`, `"never"` or an interval like `"1s"` |
//! | `audit.max_bytes` | 64 MiB | bytes, or a string `"64MiB"`; 0 = never rotate |
//! | `audit.keep` | 8 | rotated files kept (0..=1000) |
//! | `socket.path` | `/run/jit/jit.sock` | |
//! | `socket.mode` | `"0600"` | octal string; no permissions for others |
//! | `socket.group` | none | group owning the socket (reviewers) |
//! | `agent_socket.enabled` | `true` | the agent-facing socket (`jitctl agent ...`) |
//! | `agent_socket.path` | `/run/jit/agent.sock` | mode `0666`: every agent, any uid, may ask |
//! | `log.format` | `"human"` | `"human"` or `"json"` |
//! | `log.level` | `"info"` | `off`, `error`, `warn`, `info`, `debug`, `trace` |
//! | `http.enabled` | `false` | |
//! | `http.listen` | `127.0.0.1:7070` | |
//! | `http.web` | `false` | the review page on the same listener (needs TLS beyond loopback) |
//! | `http.tls_cert`, `http.tls_key` | none | PEM files: the listener speaks TLS (both or neither) |
//! | `[[http.token]]` | none | `name`, `token_file` (absolute path) |
//! | `[slack]` | none | `channel`, `bot_token_file`, `signing_secret_file`, `api_url`, `[slack.users]` (needs `http.enabled`) |
//! | `webhook.url` | none | `https://` (or `http://`) URL notified of each new held action |
//! | `export.journald` | none (off) | journald's native socket, `/run/systemd/journal/socket`: every audit record also goes to the journal (docs/log-export.md) |
//! | `export.syslog` | none (off) | `unix:/dev/log` or `udp:IP:PORT`: every audit record also goes to syslog, RFC 5424 |
//! | `metrics.listen` | none (off) | address of the Prometheus listener (`/metrics`, `/healthz`), e.g. `127.0.0.1:9464` |

use std::{
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use tracing::level_filters::LevelFilter;

/// Defined by the HTTP channel, which must not depend on the config (one-way: config →
/// approval).
pub use crate::approval::{http::HttpToken, slack::SlackConfig};
mod raw;
mod values;

use self::raw::RawConfig;
use crate::{
    approval::webhook::WebhookUrl,
    audit::{AuditOptions, FsyncPolicy},
};

/// The config file both binaries read when `--config` is not given (and it exists).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/jit/jit-agent.toml";
/// Default policy directory.
pub const DEFAULT_POLICY_DIR: &str = "/etc/jit/policies";
/// Default audit log.
pub const DEFAULT_AUDIT_PATH: &str = "/var/log/jit/audit.jsonl";
/// Default control socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/jit/jit.sock";
/// Default agent-facing socket.
pub const DEFAULT_AGENT_SOCKET_PATH: &str = "/run/jit/agent.sock";
/// The environment variable `jitctl run` sets for the agent: the agent socket's path.
pub const AGENT_SOCKET_ENV: &str = "JIT_AGENT_SOCKET";
/// Default pin directory on bpffs.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/jit";
/// Default cgroup2 mount.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Default HTTP listen address (loopback: exposing it is a deliberate choice).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7070";
/// Most rotated audit files that may be kept; bounds the renames of one rotation.
pub const MAX_KEEP: u32 = 1000;
/// Smallest `audit.max_bytes` other than 0: one record with a long path and argv can take tens
/// of KiB, and rotating on every record would defeat `keep`.
pub const MIN_MAX_BYTES: u64 = 64 * 1024;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A syntax error, a wrong type or value, an unknown key: with its position.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        message: String,
    },
    /// The rare error the parser gives no position for.
    #[error("{}: {message}", path.display())]
    Unpositioned { path: PathBuf, message: String },
    #[error("{flag}: {message}")]
    Override { flag: &'static str, message: String },
}

/// How the daemon writes its own log (not the audit log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text for a terminal or journald.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The resolved configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub policy_dir: PathBuf,
    pub audit: AuditConfig,
    pub socket: SocketConfig,
    pub agent_socket: AgentSocketConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub webhook: WebhookConfig,
    /// `[slack]`: interactive approvals in Slack ([`crate::approval::slack`]).
    pub slack: Option<SlackConfig>,
    pub metrics: MetricsConfig,
    pub export: ExportConfig,
    pub bpffs: PathBuf,
    pub cgroup_root: PathBuf,
}

/// `[audit]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub fsync: FsyncPolicy,
    /// 0 = never rotate.
    pub max_bytes: u64,
    pub keep: u32,
}

impl AuditConfig {
    /// The options for [`AuditWriter::open`](crate::audit::AuditWriter::open).
    #[must_use]
    pub fn options(&self) -> AuditOptions {
        AuditOptions {
            path: self.path.clone(),
            fsync: self.fsync,
            max_bytes: self.max_bytes,
            keep: self.keep,
        }
    }
}

/// `[socket]`: the control socket `jitctl` talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    pub path: PathBuf,
    /// Permission bits, at most `0o770`.
    pub mode: u32,
    /// Group that owns the socket, so its members (reviewers) can connect.
    pub group: Option<String>,
}

/// `[agent_socket]`: the socket agents ask about their own denials and holds
/// ([`crate::agent_api`]). Mode `0666`: the daemon answers from the kernel's identity of the
/// caller, never from its permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSocketConfig {
    pub enabled: bool,
    pub path: PathBuf,
}

/// `[log]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: LevelFilter,
}

/// `[http]`: the approval API ([`crate::approval::http`]), served only when `enabled`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// The review page ([`crate::approval::web`]).
    pub web: bool,
    /// Certificate chain and private key (PEM): TLS on the listener.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub tokens: Vec<HttpToken>,
}

/// `[webhook]`: where new held actions are announced (a Slack-compatible incoming webhook).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `None`: no notifications. The URL is often a credential; it is never logged in full.
    pub url: Option<WebhookUrl>,
}

/// `[metrics]`: the Prometheus listener ([`crate::metrics`]), served only when `listen` is set.
/// It has no authentication: bind it to loopback or a management network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}

/// `[export]`: where audit records also go (docs/log-export.md); best effort, the audit log
/// stays the record of truth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportConfig {
    /// journald's native socket.
    pub journald: Option<PathBuf>,
    pub syslog: Option<crate::audit::export::SyslogTarget>,
}

/// Command-line flags that override the file. `None` = not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--policies DIR`.
    pub policy_dir: Option<PathBuf>,
    /// `--audit-log FILE`.
    pub audit_path: Option<PathBuf>,
    /// `--socket PATH`.
    pub socket_path: Option<PathBuf>,
    /// `--log-format human|json`.
    pub log_format: Option<LogFormat>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy_dir: DEFAULT_POLICY_DIR.into(),
            audit: AuditConfig {
                path: DEFAULT_AUDIT_PATH.into(),
                fsync: FsyncPolicy::Always,
                max_bytes: 64 * 1024 * 1024,
                keep: 8,
            },
            socket: SocketConfig {
                path: DEFAULT_SOCKET_PATH.into(),
                mode: 0o600,
                group: None,
            },
            agent_socket: AgentSocketConfig {
                enabled: true,
                path: DEFAULT_AGENT_SOCKET_PATH.into(),
            },
            log: LogConfig {
                format: LogFormat::Human,
                level: LevelFilter::INFO,
            },
            http: HttpConfig {
                enabled: false,
                listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
                web: false,
                tls: None,
                tokens: Vec::new(),
            },
            webhook: WebhookConfig::default(),
            slack: None,
            metrics: MetricsConfig::default(),
            export: ExportConfig::default(),
            bpffs: DEFAULT_BPFFS.into(),
            cgroup_root: DEFAULT_CGROUP_ROOT.into(),
        }
    }
}

impl Config {
    /// The daemon's own files, for [`Enforcer::set_protection`](crate::bpf::Enforcer::set_protection):
    /// the policy directory, the directory of the audit log (its rotations live next to it),
    /// the directories of the control socket and of the agent socket, and `config_file` when
    /// given. Agents can change
    /// nothing in there, so the audit log and the socket belong in directories of their own
    /// (the defaults `/var/log/jit` and `/run/jit`); a file directly under `/` protects only
    /// itself.
    #[must_use]
    pub fn protected_paths(&self, config_file: Option<&Path>) -> Vec<PathBuf> {
        let mut paths = vec![self.policy_dir.clone()];
        for file in [&self.audit.path, &self.socket.path, &self.agent_socket.path] {
            let dir = file.parent().filter(|dir| *dir != Path::new("/"));
            let protect = dir.map_or_else(|| file.clone(), Path::to_owned);
            if !paths.contains(&protect) {
                paths.push(protect);
            }
        }
        paths.extend(config_file.map(Path::to_owned));
        paths
    }

    /// The config file to read: `explicit` (`--config FILE`, which must then exist), else
    /// [`DEFAULT_CONFIG_PATH`] when it exists, else none (the built-in defaults). A default file
    /// whose existence cannot be checked (a directory that cannot be searched) is returned, so
    /// that reading it fails with its error instead of silently running with the defaults.
    #[must_use]
    pub fn file_to_read(explicit: Option<&Path>) -> Option<PathBuf> {
        Self::file_to_read_from(explicit, Path::new(DEFAULT_CONFIG_PATH))
    }

    fn file_to_read_from(explicit: Option<&Path>, default: &Path) -> Option<PathBuf> {
        if let Some(path) = explicit {
            return Some(path.to_owned());
        }
        match default.try_exists() {
            Ok(false) => None,
            Ok(true) | Err(_) => Some(default.to_owned()),
        }
    }

    /// The configuration to run with: the defaults, replaced by what `file` sets (when given),
    /// replaced by what `overrides` sets. A relative override path is taken relative to the
    /// current directory (as a user typing a flag expects) and made absolute, because the
    /// daemon must not depend on its working directory; paths in the file must be absolute.
    ///
    /// # Errors
    /// When `file` is given but cannot be read or is invalid, or an override path is empty.
    pub fn resolve(file: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse(path, &text)?
            }
            None => Self::default(),
        };
        let absolute = |flag: &'static str, p: PathBuf| {
            std::path::absolute(&p).map_err(|e| ConfigError::Override {
                flag,
                message: format!("{}: {e}", p.display()),
            })
        };
        if let Some(p) = overrides.policy_dir {
            config.policy_dir = absolute("--policies", p)?;
        }
        if let Some(p) = overrides.audit_path {
            config.audit.path = absolute("--audit-log", p)?;
        }
        if let Some(p) = overrides.socket_path {
            config.socket.path = absolute("--socket", p)?;
        }
        if let Some(f) = overrides.log_format {
            config.log.format = f;
        }
        Ok(config)
    }

    /// Parses the text of a config file; `path` only names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] (or, rarely, [`ConfigError::Unpositioned`]).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => positioned(path, text, &span, e.message().trim_end().to_owned()),
            None => ConfigError::Unpositioned {
                path: path.to_owned(),
                message: e.message().trim_end().to_owned(),
            },
        })?;
        raw.validate()
            .map_err(|(span, message)| positioned(path, text, &span, message))
    }
}

/// Line and column (1-based, column in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

fn positioned(path: &Path, text: &str, span: &Range<usize>, message: String) -> ConfigError {
    let (line, column) = line_col(text, span.start);
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_file_is_read_only_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("jit-agent.toml");
        let explicit = Path::new("/nonexistent/explicit.toml");
        assert_eq!(Config::file_to_read_from(None, &default), None);
        assert_eq!(
            Config::file_to_read_from(Some(explicit), &default).as_deref(),
            Some(explicit)
        );
        std::fs::write(&default, "").unwrap();
        assert_eq!(
            Config::file_to_read_from(None, &default).as_deref(),
            Some(default.as_path())
        );
        assert_eq!(
            Config::file_to_read_from(Some(explicit), &default).as_deref(),
            Some(explicit)
        );
        assert_eq!(DEFAULT_CONFIG_PATH, "/etc/jit/jit-agent.toml");
    }

    #[test]
    fn line_col_counts_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // "bé = " is 6 bytes, 5 characters: the value starts in column 6.
        assert_eq!(line_col(text, 12), (2, 6));
    }

    #[test]
    fn protected_paths_are_the_daemons_directories() {
        let mut config = Config::default();
        assert_eq!(
            config.protected_paths(Some(Path::new("/etc/jit/jit.toml"))),
            [
                "/etc/jit/policies",
                "/var/log/jit",
                "/run/jit",
                "/etc/jit/jit.toml"
            ]
            .map(PathBuf::from)
        );
        config.socket.path = "/jit.sock".into();
        assert_eq!(config.protected_paths(None)[2], PathBuf::from("/jit.sock"));
        // The agent socket's directory is protected too (agents must not replace it).
        assert_eq!(config.protected_paths(None)[3], PathBuf::from("/run/jit"));
        config.agent_socket.path = "/run/jit-agents/agent.sock".into();
        assert_eq!(
            config.protected_paths(None)[3],
            PathBuf::from("/run/jit-agents")
        );
    }
}
