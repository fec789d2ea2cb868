//! Slack interactive approvals (`[slack]`): each new held action is posted to a channel as a
//! Block Kit message with Approve / Deny buttons; a click comes back to the HTTP listener as an
//! interaction payload (`POST /slack/interactions`), is checked and applied; and when the hold
//! ends, by whichever channel, the message is rewritten to say how (approved by whom, denied,
//! killed, timed out, process gone) and loses its buttons.
//!
//! - Messages are posted and updated with Slack's Web API (`chat.postMessage`, `chat.update`)
//!   and a bot token; the API's base URL is configurable (`slack.api_url`), so a local server
//!   can play Slack in tests.
//! - An interaction is accepted only with a valid signature: `X-Slack-Signature` must be
//!   `v0=` HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{body}` under the signing secret,
//!   compared in constant time; the timestamp must be within [`MAX_SKEW`] of now (a stale one
//!   is refused), and a signature is accepted once (a replay within the window is refused).
//! - The Slack user id is mapped to a reviewer name (`[slack.users]`); an unmapped user decides
//!   nothing. The [`ApprovalService`] then applies the same approver rules as for every
//!   channel (the reviewer's channel is `slack`).
//! - Every string from the agent is escaped for Slack's markup ([`super::webhook::summary`]).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::broadcast;

use super::{
    ApprovalService, DecideError, PendingView, ReviewAction, Reviewer,
    http::{AppState, MAX_BODY_BYTES},
    webhook::{slack_escape, summary},
};

/// The `channel` of reviewers who decide in Slack.
pub const CHANNEL: &str = "slack";
/// How far a request's timestamp may be from now (Slack's recommendation).
pub const MAX_SKEW: Duration = Duration::from_mins(5);
/// Slack's Web API.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";
/// Button action ids.
const APPROVE: &str = "jit_approve";
const DENY: &str = "jit_deny";

/// `[slack]` of the daemon's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlackConfig {
    /// Web API base URL (`https://slack.com/api`).
    pub api_url: String,
    /// The channel id messages go to (`C0123ABCD`).
    pub channel: String,
    /// The bot token (`xoxb-...`), mode 0600.
    pub bot_token_file: PathBuf,
    /// The app's signing secret, mode 0600.
    pub signing_secret_file: PathBuf,
    /// Slack user id → reviewer name.
    pub users: Vec<(String, String)>,
}

/// Why the Slack secrets could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error("{}: cannot read the Slack {what}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: the Slack {what} is accessible by group or others (mode {mode:04o}); chmod 0600",
        path.display()
    )]
    Permissions {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("{}: the Slack {what} is empty or not one line of printable ASCII", path.display())]
    Malformed { what: &'static str, path: PathBuf },
}

fn read_secret(what: &'static str, path: &Path) -> Result<String, SlackError> {
    use std::os::unix::fs::PermissionsExt as _;
    let read = |source| SlackError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SlackError::Permissions {
            what,
            path: path.to_owned(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let secret = text.trim();
    if secret.is_empty() || secret.len() > 4096 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SlackError::Malformed {
            what,
            path: path.to_owned(),
        });
    }
    Ok(secret.to_owned())
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
#[must_use]
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The `X-Slack-Signature` of `body` sent at `timestamp`: `v0=` and the HMAC in hex.
#[must_use]
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut message = format!("v0:{timestamp}:").into_bytes();
    message.extend_from_slice(body);
    let mac = hmac_sha256(secret, &message);
    format!("v0={}", crate::audit::to_hex(&mac))
}

/// The receiving side: verifies interaction payloads and applies them.
pub struct SlackInteractions {
    signing_secret: Vec<u8>,
    users: HashMap<String, String>,
    /// Signatures accepted within the window, with when they were: each is accepted once.
    seen: Mutex<HashMap<[u8; 32], Instant>>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for SlackInteractions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackInteractions")
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("jit-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

impl SlackInteractions {
    /// Reads the signing secret.
    ///
    /// # Errors
    /// [`SlackError`] when the file cannot be used.
    pub fn load(config: &SlackConfig) -> Result<Self, SlackError> {
        let secret = read_secret("signing secret", &config.signing_secret_file)?;
        Ok(Self::new(secret.into_bytes(), config.users.iter().cloned()))
    }

    /// With the secret and the user map given.
    pub fn new(signing_secret: Vec<u8>, users: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            signing_secret,
            users: users.into_iter().collect(),
            seen: Mutex::default(),
            agent: agent(),
        }
    }

    /// Checks the signature and the timestamp of a request, and that it was not seen before.
    fn verify(&self, headers: &HeaderMap, body: &[u8], now: u64) -> Result<(), &'static str> {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let timestamp = header("x-slack-request-timestamp").ok_or("no timestamp")?;
        let presented = header("x-slack-signature").ok_or("no signature")?;
        let sent: u64 = timestamp.trim().parse().map_err(|_| "bad timestamp")?;
        if now.abs_diff(sent) > MAX_SKEW.as_secs() {
            return Err("stale timestamp");
        }
        let expected = signature(&self.signing_secret, timestamp, body);
        if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            return Err("bad signature");
        }
        let key: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut seen = self.seen.lock().expect("seen lock");
        let now_i = Instant::now();
        seen.retain(|_, at| now_i.duration_since(*at) <= MAX_SKEW * 2);
        if seen.insert(key, now_i).is_some() {
            return Err("replayed request");
        }
        Ok(())
    }

    /// Posts `text` to the interaction's `response_url` as a message only the clicking user
    /// sees. Best effort.
    fn tell(&self, response_url: Option<&str>, text: &str) {
        let Some(url) = response_url else { return };
        let body = json!({ "response_type": "ephemeral", "replace_original": false, "text": text });
        if let Err(e) = self
            .agent
            .post(url)
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
        {
            tracing::warn!(error = %e, "cannot answer a Slack interaction");
        }
    }
}

#[derive(Clone)]
struct SlackState {
    app: AppState,
    slack: Arc<SlackInteractions>,
}

pub(super) fn router(app: AppState, slack: Arc<SlackInteractions>) -> Router {
    Router::new()
        .route("/slack/interactions", post(interaction))
        .with_state(SlackState { app, slack })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /slack/interactions`: `payload=<JSON>`, form-encoded, signed.
async fn interaction(State(state): State<SlackState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(why) = state.slack.verify(&headers, &body, unix_now()) {
        tracing::warn!("Slack interaction refused: {why}");
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    let payload = form_urlencoded_payload(&body);
    let Some(payload) = payload.and_then(|p| serde_json::from_str::<Value>(&p).ok()) else {
        return (StatusCode::BAD_REQUEST, "no interaction payload").into_response();
    };
    let slack = Arc::clone(&state.slack);
    let service = Arc::clone(&state.app.service);
    // Slack wants an answer within 3 s; the decision (audit fsync) runs on the blocking pool
    // and the outcome goes to the user through `response_url`.
    tokio::task::spawn_blocking(move || apply(&slack, service.as_ref(), &payload));
    StatusCode::OK.into_response()
}

/// The `payload` field of a form-encoded body.
fn form_urlencoded_payload(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Form {
        payload: String,
    }
    serde_urlencoded::from_bytes::<Form>(body)
        .ok()
        .map(|f| f.payload)
}

/// Applies a verified `block_actions` payload.
fn apply(slack: &SlackInteractions, service: &dyn ApprovalService, payload: &Value) {
    let response_url = payload.get("response_url").and_then(Value::as_str);
    let user = payload
        .pointer("/user/id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(action) = payload.pointer("/actions/0") else {
        return;
    };
    let action_id = action.get("action_id").and_then(Value::as_str);
    let id = action
        .get("value")
        .and_then(Value::as_str)
        .and_then(|v| v.parse::<u64>().ok());
    let (Some(action_id), Some(id)) = (action_id, id) else {
        slack.tell(response_url, "jit: this button is not one of jit's.");
        return;
    };
    let review = match action_id {
        APPROVE => ReviewAction::Approve {
            once: true,
            for_secs: None,
        },
        DENY => ReviewAction::Deny,
        _ => return,
    };
    let Some(name) = slack.users.get(user) else {
        tracing::warn!(%user, id, "Slack user without a reviewer name ([slack.users]) refused");
        slack.tell(
            response_url,
            &format!(
                "jit: your Slack user ({}) is not mapped to a reviewer; nothing was decided.",
                slack_escape(user)
            ),
        );
        return;
    };
    let reviewer = Reviewer {
        name: name.clone(),
        uid: None,
        gids: Vec::new(),
        channel: CHANNEL.to_owned(),
    };
    match service.decide(id, &reviewer, review, Some("via Slack".to_owned())) {
        Ok(decided) => {
            tracing::info!(id, reviewer = %name, outcome = %decided.outcome, "decided in Slack");
            if decided.approvals_missing > 0 {
                slack.tell(
                    response_url,
                    &format!(
                        "jit: your approval of request {id} is recorded; {} more needed.",
                        decided.approvals_missing
                    ),
                );
            }
        }
        Err(e) => {
            if matches!(e, DecideError::Failed(_)) {
                tracing::error!(id, reviewer = %name, error = %e, "Slack decision failed");
            }
            slack.tell(
                response_url,
                &format!("jit: {}", slack_escape(&e.to_string())),
            );
        }
    }
}

/// The Block Kit message of a new hold: its summary and the two buttons.
#[must_use]
pub fn hold_message(channel: &str, view: &PendingView) -> Value {
    let text = summary(view);
    let id = view.id.to_string();
    json!({
        "channel": channel,
        "text": text,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
            { "type": "actions", "block_id": "jit_decision", "elements": [
                { "type": "button", "action_id": APPROVE, "style": "primary", "value": id,
                  "text": { "type": "plain_text", "text": "Approve once" } },
                { "type": "button", "action_id": DENY, "style": "danger", "value": id,
                  "text": { "type": "plain_text", "text": "Deny" } }
            ]}
        ]
    })
}

/// How a hold ended, from its audit record (`approval` that took effect, or `hold_ended`);
/// `None` for any other record.
#[must_use]
pub fn ending(record: &Value) -> Option<(u64, String)> {
    let id = record.get("request_id")?.as_u64()?;
    let s = |key| record.get(key).and_then(Value::as_str).unwrap_or("?");
    let text = match record.get("type")?.as_str()? {
        "approval" if record.get("approvals_missing").is_none() => {
            let reason = record
                .get("reason")
                .and_then(Value::as_str)
                .map_or_else(String::new, |r| format!(" (\"{}\")", slack_escape(r)));
            match (s("decision"), s("reviewer")) {
                (decision, "timeout") => format!("timed out: {}", slack_escape(decision)),
                ("approve", who) => format!(
                    "approved by {} ({}){reason}",
                    slack_escape(who),
                    slack_escape(s("scope"))
                ),
                ("deny", who) => format!("denied by {}{reason}", slack_escape(who)),
                ("kill", who) => format!("killed by {}{reason}", slack_escape(who)),
                (other, who) => format!("{} by {}", slack_escape(other), slack_escape(who)),
            }
        }
        "hold_ended" => format!("ended without a decision: {}", slack_escape(s("reason"))),
        _ => return None,
    };
    Some((id, text))
}

/// How long a hold whose record was published may take to be listed: the daemon lists a hold
/// once its record is durable (after the audit log's fsync), which follows the publication.
const VISIBLE_WITHIN: Duration = Duration::from_secs(10);

/// The pending view of hold `id`, waiting (bounded) until the service lists it. `None` when it
/// never does (decided or gone meanwhile).
fn visible_hold(service: &dyn ApprovalService, id: u64) -> Option<PendingView> {
    let deadline = Instant::now() + VISIBLE_WITHIN;
    let mut wait = Duration::from_millis(20);
    loop {
        if let Some(view) = service.pending().into_iter().find(|p| p.id == id) {
            return Some(view);
        }
        if Instant::now() >= deadline {
            tracing::warn!(id, "held action never listed; not posted to Slack");
            return None;
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(500));
    }
}

/// Posts new holds and rewrites their messages when they end.
pub struct SlackNotifier {
    api_url: String,
    channel: String,
    bot_token: String,
    agent: ureq::Agent,
}

impl SlackNotifier {
    /// Reads the bot token.
    ///
    /// # Errors
    /// [`SlackError`] when the file cannot be used.
    pub fn load(config: &SlackConfig) -> Result<Self, SlackError> {
        Ok(Self {
            api_url: config.api_url.trim_end_matches('/').to_owned(),
            channel: config.channel.clone(),
            bot_token: read_secret("bot token", &config.bot_token_file)?,
            agent: agent(),
        })
    }

    /// One Web API call; the answer's JSON when Slack says `ok`.
    fn call(&self, method: &str, body: &Value) -> Result<Value, String> {
        let mut response = self
            .agent
            .post(format!("{}/{method}", self.api_url))
            .header("content-type", "application/json; charset=utf-8")
            .header("authorization", format!("Bearer {}", self.bot_token))
            .send(body.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(1024 * 1024)
            .read_to_string()
            .map_err(|e| format!("HTTP {status}: {e}"))?;
        let answer: Value =
            serde_json::from_str(&text).map_err(|e| format!("HTTP {status}: {e}"))?;
        if answer.get("ok").and_then(Value::as_bool) == Some(true) {
            Ok(answer)
        } else {
            Err(format!(
                "HTTP {status}: {}",
                answer
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("not ok")
            ))
        }
    }

    /// Follows the audit stream of `service` until it closes: a new hold is posted (with the
    /// buttons), an ended one has its message rewritten. Subscribes at once, before the
    /// returned future first runs: no record published after this call is missed.
    pub fn run(self, service: Arc<dyn ApprovalService>) -> impl Future<Output = ()> + Send {
        let records = service.subscribe();
        self.follow(service, records)
    }

    async fn follow(
        self,
        service: Arc<dyn ApprovalService>,
        mut records: broadcast::Receiver<String>,
    ) {
        let this = Arc::new(self);
        // Request id → (channel, ts) of its message.
        let mut posted: HashMap<u64, (String, String)> = HashMap::new();
        loop {
            let record = match records.recv().await {
                Ok(record) => record,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "Slack notifier missed audit records");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Ok(record) = serde_json::from_str::<Value>(&record) else {
                continue;
            };
            let is_hold = record.get("type").and_then(Value::as_str) == Some("kernel")
                && record.get("kind").and_then(Value::as_str) == Some("hold");
            if is_hold {
                let Some(id) = record.get("request_id").and_then(Value::as_u64) else {
                    continue;
                };
                let service = Arc::clone(&service);
                let this_ = Arc::clone(&this);
                let sent = tokio::task::spawn_blocking(move || {
                    let view = visible_hold(service.as_ref(), id)?;
                    let body = hold_message(&this_.channel, &view);
                    match this_.call("chat.postMessage", &body) {
                        Ok(answer) => Some((
                            answer.get("channel")?.as_str()?.to_owned(),
                            answer.get("ts")?.as_str()?.to_owned(),
                        )),
                        Err(e) => {
                            tracing::error!(id, "Slack chat.postMessage failed: {e}");
                            None
                        }
                    }
                })
                .await;
                if let Ok(Some(message)) = sent {
                    posted.insert(id, message);
                }
            } else if let Some((id, how)) = ending(&record)
                && let Some((channel, ts)) = posted.remove(&id)
            {
                let this_ = Arc::clone(&this);
                let text = format!("jit: request {id} {how}.");
                let body = json!({
                    "channel": channel, "ts": ts, "text": text,
                    "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": text } }]
                });
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = this_.call("chat.update", &body) {
                        tracing::error!(id, "Slack chat.update failed: {e}");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = crate::audit::to_hex(&mac);
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_long_key_rfc4231_case_6() {
        let key = [0xaau8; 131];
        let mac = hmac_sha256(
            &key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        let hex: String = crate::audit::to_hex(&mac);
        assert_eq!(
            hex,
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn slacks_documented_example() {
        // api.slack.com "Verifying requests from Slack".
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            signature(b"8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn endings() {
        let r = json!({"type": "approval", "request_id": 5, "reviewer": "alice",
                       "decision": "approve", "scope": "once", "reason": "<!channel>"});
        assert_eq!(
            ending(&r),
            Some((
                5,
                "approved by alice (once) (\"&lt;!channel&gt;\")".to_owned()
            ))
        );
        let partial = json!({"type": "approval", "request_id": 5, "reviewer": "alice",
                             "decision": "approve", "scope": "once", "approvals_missing": 1});
        assert_eq!(ending(&partial), None);
        let t =
            json!({"type": "approval", "request_id": 6, "reviewer": "timeout", "decision": "deny"});
        assert_eq!(ending(&t), Some((6, "timed out: deny".to_owned())));
    }
}
