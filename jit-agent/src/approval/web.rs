//! The review page (`http.web = true`): a page served by the HTTP listener where reviewers
//! sign in with their token and answer held actions with buttons.
//!
//! | route | |
//! |---|---|
//! | `GET /` | the page (`web/index.html`; its script and style sheet are `/ui/app.js`, `/ui/app.css`) |
//! | `POST /ui/login` | `{"token": "..."}`: a session cookie and the session's CSRF token |
//! | `GET /ui/session` | who is signed in, and the CSRF token (after a reload) |
//! | `POST /ui/logout` | ends the session |
//! | `GET /ui/pending` | the held actions as review cards ([`Card`]) |
//! | `POST /ui/pending/{id}/approve\|deny\|kill` | as `/v1/...` |
//! | `GET /ui/stream` | the audit stream (server-sent events), which tells the page to refresh |
//! | `GET /ui/history?agent=&op=&decision=` | recent decisions, newest first ([`HistoryEntry`]) |
//!
//! Security (docs/threat-model.md, "The review page"):
//! - the token is sent once, to `/ui/login`, and exchanged for a random session id in a cookie
//!   that scripts cannot read (`HttpOnly`), that no other site's request carries
//!   (`SameSite=Strict`) and, with TLS, that travels only over TLS (`Secure`, `__Host-` name);
//!   the daemon keeps only the id's SHA-256 digest;
//! - every state-changing request (`POST` but the sign-in) must carry the session's CSRF token
//!   in `X-CSRF-Token`, compared in constant time; the sign-in must be JSON (a cross-site form
//!   cannot send it without a CORS preflight, which is never granted);
//! - everything the page uses is embedded in the binary (no third-party asset, the host may
//!   have no internet), served with a `Content-Security-Policy` that allows only this origin's
//!   script and style, no inline script, no framing;
//! - every string that came from the agent is [escaped](crate::text) here, and the page puts
//!   strings into the document only as text (`textContent`), never as markup;
//! - who may decide is the [`ApprovalService`](super::ApprovalService)'s to check, as for every
//!   channel; the page only shows who may.

use std::{
    collections::{HashMap, VecDeque},
    io::Read as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{KeepAlive, Sse},
    },
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{
    Decided, PendingView, ReviewAction, Reviewer,
    http::{
        ApiError, AppState, ApproveBody, MAX_BODY_BYTES, ReasonBody, Tokens, approve_action,
        blocking, decide, events, parse_body, parse_id, reason,
    },
};
use crate::text::{argv_line, escape, escaped_once};

/// The `channel` of reviewers who decide on the page.
pub const CHANNEL: &str = "web";
/// How long a session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_hours(8);
/// Sessions kept at most; signing in beyond this ends the oldest.
const MAX_SESSIONS: usize = 1024;
/// Decisions kept for the history view.
pub const HISTORY_LEN: usize = 500;

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const APP_CSS: &str = include_str!("web/app.css");

/// Only this origin's script, style and connections; nothing inline, no framing, no forms
/// posted elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Session {
    reviewer: String,
    csrf: String,
    expires: Instant,
}

/// The signed-in sessions, by the SHA-256 digest of their id.
#[derive(Default)]
struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

#[derive(Clone)]
struct WebState {
    app: AppState,
    tokens: Tokens,
    sessions: Arc<Sessions>,
    history: Arc<Mutex<VecDeque<HistoryEntry>>>,
    /// Served over TLS: the cookie is `Secure`.
    secure: bool,
}

/// The page's routes. `secure`: the listener serves TLS.
pub(super) fn router(app: AppState, tokens: Tokens, secure: bool) -> Router {
    let history = Arc::new(Mutex::new(VecDeque::new()));
    tokio::spawn(keep_history(
        app.service.subscribe(),
        Arc::clone(&history),
        app.stopping.clone(),
    ));
    let state = WebState {
        app,
        tokens,
        sessions: Arc::default(),
        history,
        secure,
    };
    Router::new()
        .route("/", get(index))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
        .route("/ui/login", post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/session", get(session))
        .route("/ui/pending", get(pending))
        .route("/ui/pending/{id}/{action}", post(act))
        .route("/ui/stream", get(stream))
        .route("/ui/history", get(history_route))
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// `count` random bytes from the kernel, hex: session ids and CSRF tokens. Fails closed: no
/// session without randomness.
fn random_hex(count: usize) -> Result<String, ApiError> {
    let mut bytes = vec![0u8; count];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| {
            tracing::error!(error = %e, "no randomness for a session");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        })?;
    Ok(crate::audit::to_hex(&bytes))
}

impl WebState {
    fn cookie_name(&self) -> &'static str {
        // `__Host-`: the browser accepts it only with `Secure`, `Path=/` and no `Domain`.
        if self.secure {
            "__Host-jit_session"
        } else {
            "jit_session"
        }
    }

    fn cookie(&self, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
            self.cookie_name()
        ))
        .expect("a cookie of hex digits is a valid header")
    }

    /// The session id the request's cookie carries.
    fn session_id<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let name = self.cookie_name();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The signed-in reviewer and the session's CSRF token, or 401.
    fn signed_in(&self, headers: &HeaderMap) -> Result<(Reviewer, String), ApiError> {
        let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "not signed in");
        let id = self.session_id(headers).ok_or_else(unauthorized)?;
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        let mut map = self.sessions.map.lock().expect("sessions lock");
        let session = map.get(&key).ok_or_else(unauthorized)?;
        if session.expires <= Instant::now() {
            map.remove(&key);
            return Err(unauthorized());
        }
        Ok((
            Reviewer {
                name: session.reviewer.clone(),
                uid: None,
                gids: Vec::new(),
                channel: CHANNEL.to_owned(),
            },
            session.csrf.clone(),
        ))
    }

    /// As [`Self::signed_in`], for a state-changing request: its `X-CSRF-Token` must be the
    /// session's (403 otherwise).
    fn signed_in_csrf(&self, headers: &HeaderMap) -> Result<Reviewer, ApiError> {
        let (reviewer, csrf) = self.signed_in(headers)?;
        let presented = headers
            .get("x-csrf-token")
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !bool::from(presented.ct_eq(csrf.as_bytes())) {
            tracing::warn!(reviewer = %reviewer.name, "review page request without a valid CSRF token refused");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "missing or invalid CSRF token",
            ));
        }
        Ok(reviewer)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    token: String,
}

/// What the page learns about its session.
#[derive(Serialize)]
struct SessionInfo {
    reviewer: String,
    csrf: String,
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn login(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // JSON only: a cross-site HTML form cannot send it (no login CSRF).
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "sign in with a JSON body",
        ));
    }
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let body: LoginBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let Some(name) = state.tokens.reviewer(body.token.trim().as_bytes()) else {
        tracing::warn!("review page sign-in with an invalid token refused");
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid token"));
    };
    let name = name.to_owned();
    let id = random_hex(32)?;
    let csrf = random_hex(32)?;
    {
        let mut map = state.sessions.map.lock().expect("sessions lock");
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            Sha256::digest(id.as_bytes()).into(),
            Session {
                reviewer: name.clone(),
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
    }
    tracing::info!(reviewer = %name, "signed in on the review page");
    let mut response = Json(SessionInfo {
        reviewer: name,
        csrf,
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, state.cookie(&id, SESSION_TTL.as_secs()));
    Ok(no_store(response))
}

async fn logout(State(state): State<WebState>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.signed_in_csrf(&headers)?;
    if let Some(id) = state.session_id(&headers) {
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        state
            .sessions
            .map
            .lock()
            .expect("sessions lock")
            .remove(&key);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, state.cookie("", 0));
    Ok(response)
}

async fn session(State(state): State<WebState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (reviewer, csrf) = state.signed_in(&headers)?;
    Ok(no_store(
        Json(SessionInfo {
            reviewer: reviewer.name,
            csrf,
        })
        .into_response(),
    ))
}

/// A held action as the page shows it: every string that came from the agent or the policy
/// already [escaped](crate::text) (control, invisible and bidirectional characters visible),
/// argument vectors as one line with visible boundaries.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Card {
    pub id: String,
    pub agent: String,
    pub op: String,
    pub path: String,
    /// For a rename or link: source and destination.
    pub ends: Option<(String, String)>,
    pub rule: Option<String>,
    pub risk: Option<String>,
    pub hint: Option<String>,
    /// For an exec: the command that runs if approved, and its environment.
    pub runs: Option<String>,
    pub env: Option<String>,
    /// The calling process's argv.
    pub argv: Option<String>,
    pub exe: Option<String>,
    pub cwd: Option<String>,
    pub user: String,
    pub pid: u32,
    pub parents: Vec<String>,
    pub target: Option<String>,
    pub held_at: String,
    pub age_secs: u64,
    pub timeout_in_secs: u64,
    pub on_timeout: String,
    pub approvers: Vec<String>,
    pub approvals: Vec<String>,
    pub required_approvals: u32,
    /// The agent's own claim (unverified), and the pid that sent it.
    pub justification: Option<String>,
    pub justification_pid: Option<u32>,
}

fn esc(s: &str) -> String {
    escape(s).into_owned()
}

impl From<&PendingView> for Card {
    fn from(r: &PendingView) -> Self {
        let opt = |s: &Option<String>| s.as_deref().map(esc);
        Self {
            // A string: ids are kernel times in ns, beyond what a JavaScript number holds
            // exactly.
            id: r.id.to_string(),
            agent: esc(&r.agent),
            op: esc(&r.op),
            path: r.shown_path(),
            // Escaped by the daemon (see `PendingView::ends`); once more is harmless.
            ends: r
                .ends
                .as_ref()
                .map(|(a, b)| (escaped_once(a).into_owned(), escaped_once(b).into_owned())),
            rule: opt(&r.rule),
            risk: opt(&r.risk),
            hint: opt(&r.hint),
            runs: r.exec_argv.as_deref().map(argv_line),
            env: r.exec_env.as_deref().map(argv_line),
            argv: r.argv.as_deref().map(argv_line),
            exe: opt(&r.exe),
            cwd: opt(&r.cwd),
            user: {
                let real = match &r.user {
                    Some(user) => format!("{} (uid {})", esc(user), r.uid),
                    None => format!("uid {}", r.uid),
                };
                match r.acting.as_ref().filter(|a| a.uid != r.uid) {
                    Some(a) => format!("{real}, acting as {}", a.describe()),
                    None => real,
                }
            },
            pid: r.pid,
            parents: r.parents.iter().map(|p| esc(p)).collect(),
            target: r.target.as_ref().map(|t| {
                format!(
                    "{} bytes, owner {}, mode {}",
                    t.size,
                    t.owner.as_deref().map_or_else(|| t.uid.to_string(), esc),
                    esc(&t.mode)
                )
            }),
            held_at: esc(&r.held_at),
            age_secs: r.age_secs,
            timeout_in_secs: r.timeout_in_secs,
            on_timeout: esc(&r.on_timeout),
            approvers: r.approvers.iter().map(|a| esc(a)).collect(),
            approvals: r.approvals.iter().map(|a| esc(a)).collect(),
            required_approvals: r.required_approvals,
            justification: r
                .justification
                .as_ref()
                .map(|j| escaped_once(&j.text).into_owned()),
            justification_pid: r.justification.as_ref().map(|j| j.pid),
        }
    }
}

async fn pending(State(state): State<WebState>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.signed_in(&headers)?;
    let service = Arc::clone(&state.app.service);
    let views = blocking(move || service.pending()).await?;
    let cards: Vec<Card> = views.iter().map(Card::from).collect();
    Ok(no_store(Json(cards).into_response()))
}

async fn act(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Decided>, ApiError> {
    let reviewer = state.signed_in_csrf(&headers)?;
    let id = parse_id(&id)?;
    match action.as_str() {
        "approve" => {
            let body: ApproveBody = parse_body(body)?;
            let action = approve_action(&body)?;
            decide(state.app, reviewer, id, action, reason(body.reason)).await
        }
        "deny" | "kill" => {
            let body: ReasonBody = parse_body(body)?;
            let action = if action == "deny" {
                ReviewAction::Deny
            } else {
                ReviewAction::Kill
            };
            decide(state.app, reviewer, id, action, reason(body.reason)).await
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "no such action")),
    }
}

async fn stream(State(state): State<WebState>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.signed_in(&headers)?;
    let receiver = state.app.service.subscribe();
    Ok(Sse::new(events(receiver, state.app.stopping.clone()))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A decision (or a hold's end) in the history view, escaped as [`Card`]s are.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    pub time: String,
    pub id: String,
    /// `approve`, `deny`, `kill`, or `ended` (the process went away while held).
    pub decision: String,
    /// Who decided: a reviewer's name, or `timeout`.
    pub reviewer: String,
    pub scope: Option<String>,
    pub reason: Option<String>,
    pub agent: Option<String>,
    pub op: Option<String>,
    pub path: Option<String>,
    /// Present while a quorum is incomplete: approvals still missing.
    pub approvals_missing: Option<u64>,
}

/// The history entry of an audit record: `approval` and `hold_ended` records, others `None`.
fn history_entry(record: &serde_json::Value) -> Option<HistoryEntry> {
    let s = |v: &serde_json::Value, key: &str| v.get(key).and_then(|x| x.as_str()).map(esc);
    let kind = record.get("type")?.as_str()?;
    let (decision, reviewer) = match kind {
        "approval" => (s(record, "decision")?, s(record, "reviewer")?),
        "hold_ended" => ("ended".to_owned(), String::new()),
        _ => return None,
    };
    let action = record.get("action").cloned().unwrap_or_default();
    Some(HistoryEntry {
        time: s(record, "time").unwrap_or_default(),
        id: record.get("request_id")?.as_u64()?.to_string(),
        decision,
        reviewer,
        scope: s(record, "scope"),
        reason: s(record, "reason"),
        agent: s(&action, "agent"),
        op: s(&action, "op"),
        path: s(&action, "path"),
        approvals_missing: record
            .get("approvals_missing")
            .and_then(serde_json::Value::as_u64),
    })
}

/// Keeps the last [`HISTORY_LEN`] decisions seen on the audit stream (since the daemon
/// started: the audit log is the full record).
async fn keep_history(
    mut receiver: tokio::sync::broadcast::Receiver<String>,
    history: Arc<Mutex<VecDeque<HistoryEntry>>>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let record = tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return,
            next = receiver.recv() => match next {
                Ok(record) => record,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "review page history missed records");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&record) else {
            continue;
        };
        if let Some(entry) = history_entry(&value) {
            let mut history = history.lock().expect("history lock");
            if history.len() >= HISTORY_LEN {
                history.pop_back();
            }
            history.push_front(entry);
        }
    }
}

/// A filter field: blank means no filter.
fn nonblank(field: Option<&str>) -> Option<&str> {
    field.map(str::trim).filter(|f| !f.is_empty())
}

#[derive(Deserialize)]
struct HistoryFilter {
    agent: Option<String>,
    op: Option<String>,
    decision: Option<String>,
}

async fn history_route(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(filter): Query<HistoryFilter>,
) -> Result<Response, ApiError> {
    state.signed_in(&headers)?;
    let (agent, op, decision) = (
        nonblank(filter.agent.as_deref()),
        nonblank(filter.op.as_deref()),
        nonblank(filter.decision.as_deref()),
    );
    let entries: Vec<HistoryEntry> = state
        .history
        .lock()
        .expect("history lock")
        .iter()
        .filter(|e| agent.is_none_or(|a| e.agent.as_deref() == Some(a)))
        .filter(|e| op.is_none_or(|o| e.op.as_deref() == Some(o)))
        .filter(|e| decision.is_none_or(|d| e.decision == d))
        .cloned()
        .collect();
    Ok(no_store(Json(entries).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_entries_from_records() {
        let record = serde_json::json!({
            "type": "approval", "time": "t", "request_id": 7, "reviewer": "alice",
            "decision": "deny", "scope": "once", "reason": "no\u{202e}",
            "action": {"agent": "a", "op": "exec", "path": "/x\n", "pid": 1}
        });
        let entry = history_entry(&record).unwrap();
        assert_eq!(entry.decision, "deny");
        assert_eq!(entry.reason.as_deref(), Some("no\\u{202e}"));
        assert_eq!(entry.path.as_deref(), Some("/x\\n"));
        let ended = serde_json::json!({"type": "hold_ended", "request_id": 8, "reason": "exited"});
        assert_eq!(history_entry(&ended).unwrap().decision, "ended");
        assert!(history_entry(&serde_json::json!({"type": "kernel", "request_id": 1})).is_none());
    }
}
