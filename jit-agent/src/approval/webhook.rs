//! The webhook notifier: tells a chat channel (Slack incoming webhooks, or anything that takes
//! the same JSON) about each new held action, so reviewers learn of it without watching
//! `jitctl pending`.
//!
//! Each notification is one `POST` of `{"text": "<one-line summary>", "request": <PendingView>}`;
//! when the hold ends (by any channel, by its timeout, or because the process went away), one
//! more: `{"text": "jit: request ID approved by alice (once)", "ended": {"request_id": ID,
//! "how": "...", "record": <the audit record>}}`.
//! Delivery runs in its own task fed by a bounded channel: [`WebhookHandle::notify`] never
//! waits, a slow or failing endpoint delays only later notifications, and a full queue drops
//! (and counts) rather than holding up the daemon. Failed attempts are retried with exponential
//! backoff a bounded number of times, then logged and given up: the held action stays pending
//! either way, so a lost notification costs time, never a decision.

use std::{
    fmt,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;
use ureq::http::Uri;

use super::PendingView;

/// Why a webhook URL was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("webhook url is not a URL: {0}")]
    Syntax(String),
    #[error("webhook url must start with https:// (or http:// for a local relay)")]
    Scheme,
    #[error("webhook url has no host")]
    NoHost,
}

/// Where notifications go: an absolute `http` or `https` URL.
///
/// Its path is often a credential (a Slack webhook URL is all it takes to post to the channel),
/// so [`fmt::Debug`] and [`fmt::Display`] show only the scheme and host: logs and config dumps
/// never reveal it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    full: String,
    shown: String,
}

impl WebhookUrl {
    /// The full URL, secret path included.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl FromStr for WebhookUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        // Before parsing: without a scheme, "not a URL" would say less than "which scheme".
        let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return Err(UrlError::Scheme);
        }
        let uri: Uri = s.parse().map_err(|e| UrlError::Syntax(format!("{e}")))?;
        let Some(scheme @ ("https" | "http")) = uri.scheme_str() else {
            return Err(UrlError::Scheme);
        };
        let host = uri
            .authority()
            .map(ureq::http::uri::Authority::host)
            .filter(|h| !h.is_empty())
            .ok_or(UrlError::NoHost)?;
        let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
        Ok(Self {
            full: s.to_owned(),
            shown: format!("{scheme}://{host}{port}/…"),
        })
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.shown)
    }
}

/// How hard to try. The defaults suit a chat webhook: five attempts within about eight
/// seconds, then give up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookOptions {
    /// Attempts per notification, the first included (at least 1).
    pub attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one.
    pub initial_backoff: Duration,
    /// Longest wait between attempts (also bounds a `Retry-After` the endpoint asks for).
    pub max_backoff: Duration,
    /// Limit for one attempt: connecting, sending and reading the answer.
    pub timeout: Duration,
    /// Notifications waiting for delivery before new ones are dropped.
    pub queue: usize,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            timeout: Duration::from_secs(10),
            queue: 256,
        }
    }
}

impl WebhookOptions {
    /// The wait after failed attempt `failed` (1-based).
    fn backoff(&self, failed: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failed.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// What the notifier has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Notifications the endpoint accepted (answered 2xx).
    pub delivered: u64,
    /// Notifications given up after the last attempt or a permanent refusal.
    pub failed: u64,
    /// Notifications dropped because the queue was full or the task had ended.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// Queues notifications for the delivery task. Cheap to clone; the task ends (after the queue
/// drains) when every handle is dropped.
#[derive(Clone, Debug)]
pub struct WebhookHandle {
    sender: mpsc::Sender<Message>,
    counters: Arc<Counters>,
}

impl WebhookHandle {
    /// Queues a notification about a new held action. Never waits: with the queue full the
    /// notification is dropped, counted and logged.
    pub fn notify(&self, view: PendingView) {
        self.queue(Message::New(Box::new(view)));
    }

    /// Queues the message that says how hold `id` ended (`how`, from its audit `record`).
    pub fn notify_ended(&self, id: u64, how: String, record: serde_json::Value) {
        self.queue(Message::Ended { id, how, record });
    }

    /// Follows the audit stream and announces every hold's end ([`super::slack::ending`]),
    /// until the stream closes.
    pub async fn follow_endings(self, mut records: tokio::sync::broadcast::Receiver<String>) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let record = match records.recv().await {
                Ok(record) => record,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "webhook notifier missed audit records");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let Ok(record) = serde_json::from_str::<serde_json::Value>(&record) else {
                continue;
            };
            if let Some((id, how)) = super::slack::ending(&record) {
                self.notify_ended(id, how, record);
            }
        }
    }

    fn queue(&self, message: Message) {
        if let Err(e) = self.sender.try_send(message) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            let (reason, id) = match &e {
                mpsc::error::TrySendError::Full(m) => ("the queue is full", m.id()),
                mpsc::error::TrySendError::Closed(m) => ("the delivery task has ended", m.id()),
            };
            tracing::warn!(id, "webhook notification dropped: {reason}");
        }
    }

    /// Counts of delivered, failed and dropped notifications.
    #[must_use]
    pub fn stats(&self) -> WebhookStats {
        WebhookStats {
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

/// What is queued for delivery.
#[derive(Debug)]
enum Message {
    New(Box<PendingView>),
    Ended {
        id: u64,
        how: String,
        record: serde_json::Value,
    },
}

impl Message {
    fn id(&self) -> u64 {
        match self {
            Self::New(view) => view.id,
            Self::Ended { id, .. } => *id,
        }
    }

    fn body(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            Self::New(view) => serde_json::to_vec(&Notification {
                text: &summary(view),
                request: view,
            }),
            Self::Ended { id, how, record } => serde_json::to_vec(&serde_json::json!({
                "text": format!("jit: request {id} {how}."),
                "ended": { "request_id": id, "how": how, "record": record },
            })),
        }
    }
}

/// Starts the delivery task for `url`.
///
/// # Panics
/// Outside a tokio runtime.
#[must_use]
pub fn spawn(url: WebhookUrl, options: WebhookOptions) -> WebhookHandle {
    let (sender, receiver) = mpsc::channel(options.queue.max(1));
    let counters = Arc::new(Counters::default());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(options.timeout))
        // Statuses are inspected, not errors; a redirect of a POST is a misconfiguration.
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("jit-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    tokio::spawn(deliver_all(
        Endpoint { agent, url },
        options,
        receiver,
        Arc::clone(&counters),
    ));
    WebhookHandle { sender, counters }
}

struct Endpoint {
    agent: ureq::Agent,
    url: WebhookUrl,
}

async fn deliver_all(
    endpoint: Endpoint,
    options: WebhookOptions,
    mut receiver: mpsc::Receiver<Message>,
    counters: Arc<Counters>,
) {
    let endpoint = Arc::new(endpoint);
    tracing::info!(url = %endpoint.url, "webhook notifier started");
    while let Some(message) = receiver.recv().await {
        let counter = if deliver(&endpoint, &options, &message).await {
            &counters.delivered
        } else {
            &counters.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    tracing::debug!(url = %endpoint.url, "webhook notifier stopped");
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// Worth another try (5xx, 408, 429, network trouble); the endpoint may say when.
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help (another 4xx, a redirect).
    Refused(String),
}

/// Delivers one notification, retrying as `options` allow. True when it was accepted.
async fn deliver(endpoint: &Arc<Endpoint>, options: &WebhookOptions, message: &Message) -> bool {
    let id = message.id();
    let body = match message.body() {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(id, error = %e, "webhook notification cannot be encoded");
            return false;
        }
    };
    let body: Arc<[u8]> = body.into();
    let attempts = options.attempts.max(1);
    for attempt in 1..=attempts {
        let endpoint_ = Arc::clone(endpoint);
        let body_ = Arc::clone(&body);
        let outcome = tokio::task::spawn_blocking(move || post(&endpoint_, &body_))
            .await
            .unwrap_or_else(|e| Attempt::Retry {
                why: format!("the sending thread failed: {e}"),
                retry_after: None,
            });
        match outcome {
            Attempt::Delivered => {
                tracing::debug!(id, attempt, "webhook notification delivered");
                return true;
            }
            Attempt::Refused(why) => {
                tracing::error!(
                    id, attempt, url = %endpoint.url,
                    "webhook refused the notification, not retrying: {why}"
                );
                return false;
            }
            Attempt::Retry { why, retry_after } if attempt < attempts => {
                let wait = retry_after
                    .map_or_else(|| options.backoff(attempt), |d| d.min(options.max_backoff));
                tracing::warn!(
                    id, attempt, of = attempts, url = %endpoint.url,
                    "webhook notification failed, retrying in {wait:?}: {why}"
                );
                tokio::time::sleep(wait).await;
            }
            Attempt::Retry { why, .. } => {
                tracing::error!(
                    id, attempts, url = %endpoint.url,
                    "webhook notification given up: {why}"
                );
            }
        }
    }
    false
}

/// One blocking attempt (runs on the blocking pool).
fn post(endpoint: &Endpoint, body: &[u8]) -> Attempt {
    let response = endpoint
        .agent
        .post(endpoint.url.as_str())
        .header("content-type", "application/json")
        .send(body);
    let response = match response {
        Ok(response) => response,
        // Transport errors name no URL beyond what `url` shows; `BadUri` cannot happen for a
        // `WebhookUrl` but would print it, so it is kept out.
        Err(ureq::Error::BadUri(_)) => return Attempt::Refused("invalid URL".to_owned()),
        Err(e) => {
            return Attempt::Retry {
                why: e.to_string(),
                retry_after: None,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered;
    }
    let why = format!("HTTP {status}");
    if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Attempt::Retry { why, retry_after }
    } else {
        Attempt::Refused(why)
    }
}

/// The JSON posted: `text` for Slack and humans, `request` for machines.
#[derive(serde::Serialize)]
struct Notification<'a> {
    text: &'a str,
    request: &'a PendingView,
}

/// The one-line summary: agent, op, path, pid, exe, rule, id and the commands to answer.
///
/// Path, exe, agent and rule come from the agent's side (it chooses its file names), so they are
/// escaped for Slack's markup: `&`, `<`, `>` would otherwise make links or `<!channel>` pings,
/// and control characters (a newline in a file name) would break the single line.
#[must_use]
pub fn summary(view: &PendingView) -> String {
    let rule = view.rule.as_deref().map_or_else(
        || "the agent's default".to_owned(),
        |r| format!("rule \"{}\"", slack_escape(r)),
    );
    let exe = view
        .exe
        .as_deref()
        .map_or_else(|| "?".to_owned(), slack_escape);
    let id = view.id;
    let runs = view.exec_argv.as_ref().map_or_else(String::new, |argv| {
        let mut line = crate::text::argv_line(argv);
        if line.len() > 300 {
            let mut cut = 300;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str("...");
        }
        format!(" as `{}`", slack_markup(&line).replace('`', "'"))
    });
    let said = view.justification.as_ref().map_or_else(String::new, |j| {
        format!(
            " Agent-provided justification (unverified): \"{}\".",
            slack_markup(&crate::text::escaped_once(&j.text))
        )
    });
    let risk = view
        .risk
        .as_deref()
        .map_or_else(String::new, |k| format!(", risk {}", slack_escape(k)));
    let who = if view.approvers.is_empty() {
        String::new()
    } else {
        format!(
            " Approvers: {} ({} needed).",
            slack_escape(&view.approvers.join(", ")),
            view.required_approvals
        )
    };
    format!(
        "jit: agent {agent} is held before {op} {path}{runs} (pid {pid}, exe {exe}, {rule}{risk}, \
         request {id}).{who}{said} Answer with `jitctl approve {id}` [--once | --for 15m], `jitctl deny {id}` or \
         `jitctl kill {id}`.",
        agent = slack_escape(&view.agent),
        op = slack_escape(&view.op),
        path = slack_markup(&view.shown_path()),
        pid = view.pid,
    )
}

/// Makes control characters, escape sequences and invisible characters visible
/// ([`crate::text::escape`]), then escapes Slack's three markup characters.
pub(super) fn slack_escape(text: &str) -> String {
    slack_markup(&crate::text::escape(text))
}

/// Escapes Slack's markup characters of text that is already [escaped](crate::text::escape).
pub(super) fn slack_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = WebhookOptions::default();
        let waits: Vec<_> = (1..=7).map(|n| options.backoff(n).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(options.backoff(200), Duration::from_secs(8));
    }

    #[test]
    fn urls() {
        let url: WebhookUrl = "https://hooks.slack.com/services/T0/B0/secret"
            .parse()
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://hooks.slack.com/services/T0/B0/secret"
        );
        assert_eq!(url.to_string(), "https://hooks.slack.com/…");
        assert!(!format!("{url:?}").contains("secret"));
        let local: WebhookUrl = "http://127.0.0.1:8080/hook".parse().unwrap();
        assert_eq!(local.to_string(), "http://127.0.0.1:8080/…");
        assert_eq!("ftp://x/y".parse::<WebhookUrl>(), Err(UrlError::Scheme));
        assert_eq!("/just/a/path".parse::<WebhookUrl>(), Err(UrlError::Scheme));
        assert!(matches!(
            "https://exa mple".parse::<WebhookUrl>(),
            Err(UrlError::Syntax(_))
        ));
    }

    #[test]
    fn escaping() {
        assert_eq!(
            slack_escape("/tmp/<!channel>&\nx"),
            "/tmp/&lt;!channel&gt;&amp;\\nx"
        );
        assert_eq!(
            slack_escape("a\rb\x1b[2K\u{202e}"),
            "a\\rb\\x1b[2K\\u{202e}"
        );
    }
}
