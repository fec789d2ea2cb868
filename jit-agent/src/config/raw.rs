//! The configuration file as written: every key optional, values checked as they are read
//! ([`super::values`]), then the whole validated into a [`Config`].
use std::{collections::HashSet, net::SocketAddr, ops::Range};

use serde::Deserialize;
use toml::Spanned;

use super::{
    AgentSocketConfig, AuditConfig, Config, ExportConfig, HttpConfig, HttpToken, LogConfig,
    LogFormat, MetricsConfig, SlackConfig, SocketConfig, WebhookConfig,
    values::{AbsPath, ByteSize, Fsync, Keep, Level, SocketMode, Url},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    policy_dir: AbsPath,
    audit: RawAudit,
    socket: RawSocket,
    agent_socket: RawAgentSocket,
    log: RawLog,
    http: RawHttp,
    webhook: RawWebhook,
    slack: Option<Spanned<RawSlack>>,
    metrics: RawMetrics,
    export: RawExport,
    bpffs: AbsPath,
    cgroup_root: AbsPath,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    path: AbsPath,
    fsync: Fsync,
    max_bytes: ByteSize,
    keep: Keep,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSocket {
    path: AbsPath,
    mode: SocketMode,
    group: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAgentSocket {
    enabled: bool,
    path: Spanned<AbsPath>,
}

impl Default for RawAgentSocket {
    fn default() -> Self {
        let d = Config::default().agent_socket;
        Self {
            enabled: d.enabled,
            path: Spanned::new(0..0, AbsPath(d.path)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: LogFormat,
    level: Level,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    enabled: Spanned<bool>,
    listen: Spanned<SocketAddr>,
    web: Spanned<bool>,
    tls_cert: Option<Spanned<AbsPath>>,
    tls_key: Option<Spanned<AbsPath>>,
    #[serde(rename = "token")]
    tokens: Vec<RawToken>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWebhook {
    url: Option<Url>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    listen: Option<SocketAddr>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawExport {
    journald: Option<AbsPath>,
    syslog: Option<Syslog>,
}

/// `unix:/ABSOLUTE/PATH` or `udp:IP:PORT`.
struct Syslog(crate::audit::export::SyslogTarget);

impl<'de> Deserialize<'de> for Syslog {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(Self).map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    #[serde(default = "default_slack_api")]
    api_url: String,
    channel: String,
    bot_token_file: AbsPath,
    signing_secret_file: AbsPath,
    #[serde(default)]
    users: std::collections::BTreeMap<String, String>,
}

fn default_slack_api() -> String {
    crate::approval::slack::DEFAULT_API_URL.to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Spanned<String>,
    token_file: AbsPath,
}

impl Default for RawConfig {
    fn default() -> Self {
        let d = Config::default();
        Self {
            policy_dir: AbsPath(d.policy_dir),
            audit: RawAudit::default(),
            socket: RawSocket::default(),
            agent_socket: RawAgentSocket::default(),
            log: RawLog::default(),
            http: RawHttp::default(),
            webhook: RawWebhook::default(),
            slack: None,
            metrics: RawMetrics::default(),
            export: RawExport::default(),
            bpffs: AbsPath(d.bpffs),
            cgroup_root: AbsPath(d.cgroup_root),
        }
    }
}

impl Default for RawAudit {
    fn default() -> Self {
        let d = Config::default().audit;
        Self {
            path: AbsPath(d.path),
            fsync: Fsync(d.fsync),
            max_bytes: ByteSize(d.max_bytes),
            keep: Keep(d.keep),
        }
    }
}

impl Default for RawSocket {
    fn default() -> Self {
        let d = Config::default().socket;
        Self {
            path: AbsPath(d.path),
            mode: SocketMode(d.mode),
            group: None,
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        let d = Config::default().log;
        Self {
            format: d.format,
            level: Level(d.level),
        }
    }
}

impl Default for RawHttp {
    fn default() -> Self {
        let d = Config::default().http;
        Self {
            enabled: Spanned::new(0..0, d.enabled),
            listen: Spanned::new(0..0, d.listen),
            web: Spanned::new(0..0, d.web),
            tls_cert: None,
            tls_key: None,
            tokens: Vec::new(),
        }
    }
}

impl RawConfig {
    /// Checks what involves several keys; single values were checked while parsing.
    #[expect(
        clippy::too_many_lines,
        reason = "one section after the other, each short; the whole config in one place"
    )]
    pub(super) fn validate(self) -> Result<Config, (Range<usize>, String)> {
        if let Some(group) = &self.socket.group
            && group.get_ref().is_empty()
        {
            return Err((group.span(), "socket group must not be empty".to_owned()));
        }
        if self.agent_socket.enabled && self.agent_socket.path.get_ref().0 == self.socket.path.0 {
            return Err((
                self.agent_socket.path.span(),
                "agent_socket.path is the control socket's path; the agent socket needs a path \
                 of its own (such as /run/jit/agent.sock)"
                    .to_owned(),
            ));
        }
        let mut names = HashSet::new();
        let mut tokens = Vec::with_capacity(self.http.tokens.len());
        for token in self.http.tokens {
            let name = token.name.get_ref();
            if !valid_token_name(name) {
                return Err((
                    token.name.span(),
                    format!(
                        "token name {name:?} must be 1 to 64 characters of letters, digits, \
                         `_`, `-` and `.` (it names the reviewer in audit records)"
                    ),
                ));
            }
            if !names.insert(name.clone()) {
                return Err((
                    token.name.span(),
                    format!("token name {name:?} is used twice; each reviewer needs one name"),
                ));
            }
            tokens.push(HttpToken {
                name: token.name.into_inner(),
                token_file: token.token_file.0,
            });
        }
        if *self.http.enabled.get_ref() && tokens.is_empty() {
            return Err((
                self.http.enabled.span(),
                "the HTTP API is enabled but has no [[http.token]]: no request could \
                 authenticate"
                    .to_owned(),
            ));
        }
        let tls = tls_pair(self.http.tls_cert, self.http.tls_key)?;
        if *self.http.web.get_ref()
            && !self.http.listen.get_ref().ip().is_loopback()
            && tls.is_none()
        {
            return Err((
                self.http.listen.span(),
                format!(
                    "the review page (http.web) would be served without TLS on {}, beyond \
                     loopback: set http.tls_cert and http.tls_key, or listen on 127.0.0.1",
                    self.http.listen.get_ref()
                ),
            ));
        }
        let slack = slack(self.slack, *self.http.enabled.get_ref())?;
        Ok(Config {
            policy_dir: self.policy_dir.0,
            audit: AuditConfig {
                path: self.audit.path.0,
                fsync: self.audit.fsync.0,
                max_bytes: self.audit.max_bytes.0,
                keep: self.audit.keep.0,
            },
            socket: SocketConfig {
                path: self.socket.path.0,
                mode: self.socket.mode.0,
                group: self.socket.group.map(Spanned::into_inner),
            },
            agent_socket: AgentSocketConfig {
                enabled: self.agent_socket.enabled,
                path: self.agent_socket.path.into_inner().0,
            },
            log: LogConfig {
                format: self.log.format,
                level: self.log.level.0,
            },
            http: HttpConfig {
                enabled: self.http.enabled.into_inner(),
                listen: self.http.listen.into_inner(),
                web: self.http.web.into_inner(),
                tls,
                tokens,
            },
            webhook: WebhookConfig {
                url: self.webhook.url.map(|u| u.0),
            },
            slack,
            metrics: MetricsConfig {
                listen: self.metrics.listen,
            },
            export: ExportConfig {
                journald: self.export.journald.map(|p| p.0),
                syslog: self.export.syslog.map(|s| s.0),
            },
            bpffs: self.bpffs.0,
            cgroup_root: self.cgroup_root.0,
        })
    }
}

/// Certificate and key files.
type TlsFiles = (std::path::PathBuf, std::path::PathBuf);

/// `http.tls_cert` and `http.tls_key`: both or neither.
fn tls_pair(
    cert: Option<Spanned<AbsPath>>,
    key: Option<Spanned<AbsPath>>,
) -> Result<Option<TlsFiles>, (Range<usize>, String)> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some((cert.into_inner().0, key.into_inner().0))),
        (Some(one), None) | (None, Some(one)) => Err((
            one.span(),
            "http.tls_cert and http.tls_key go together: set both (TLS) or neither".to_owned(),
        )),
    }
}

/// `[slack]`, which needs the HTTP listener (the clicks arrive there).
fn slack(
    raw: Option<Spanned<RawSlack>>,
    http_enabled: bool,
) -> Result<Option<SlackConfig>, (Range<usize>, String)> {
    let Some(raw) = raw else { return Ok(None) };
    let span = raw.span();
    let raw = raw.into_inner();
    if !http_enabled {
        return Err((
            span,
            "[slack] needs the HTTP listener (http.enabled = true): Slack's button clicks \
             arrive there"
                .to_owned(),
        ));
    }
    if !(raw.api_url.starts_with("https://") || raw.api_url.starts_with("http://")) {
        return Err((span, "slack.api_url must be an http(s) URL".to_owned()));
    }
    if raw.channel.trim().is_empty() {
        return Err((span, "slack.channel must name a channel id".to_owned()));
    }
    if let Some(name) = raw.users.values().find(|n| !valid_token_name(n)) {
        return Err((
            span,
            format!(
                "slack.users: reviewer name {name:?} must be 1 to 64 characters of letters, \
                 digits, `_`, `-` and `.`"
            ),
        ));
    }
    Ok(Some(SlackConfig {
        api_url: raw.api_url,
        channel: raw.channel,
        bot_token_file: raw.bot_token_file.0,
        signing_secret_file: raw.signing_secret_file.0,
        users: raw.users.into_iter().collect(),
    }))
}

fn valid_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

// ---- values checked while parsing: their errors get the value's position from toml ----
