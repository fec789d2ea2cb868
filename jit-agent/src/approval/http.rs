//! The HTTP approval API: reviewers list, approve, deny and kill held actions, and follow the
//! audit stream, with a bearer token per reviewer.
//!
//! | route | |
//! |---|---|
//! | `GET /v1/pending` | the held actions, a JSON array of [`PendingView`] |
//! | `POST /v1/pending/{id}/approve` | `{"once": true}`, `{"for": "15m"}` or `{}` (the agent's default), each with an optional `"reason"` |
//! | `POST /v1/pending/{id}/deny` | `{"reason": "..."}` (optional) |
//! | `POST /v1/pending/{id}/kill` | `{"reason": "..."}` (optional) |
//! | `GET /v1/stream` | server-sent events: one `data:` line per audit record; a `lagged` event says how many were missed |
//!
//! Every route, unknown ones included, needs `Authorization: Bearer <token>`: the token names the
//! reviewer, and the [`ApprovalService`] decides what that reviewer may do. Errors are JSON
//! objects `{"error": "..."}`.
//!
//! The same listener can also serve, as [`ServeOptions`] say: the review page (`/` and `/ui/...`,
//! session cookies instead of bearer tokens, [`super::web`]), Slack's interaction endpoint
//! (`/slack/interactions`, Slack's signature, [`super::slack`]), and TLS ([`super::tls`]).
//!
//! The service's methods are synchronous and may block (locks, audit `fsync`), so they run on
//! the blocking pool, never on the tasks that serve connections.

use std::{
    fmt, future::Future, io::Read as _, os::unix::fs::PermissionsExt as _, path::PathBuf, sync::Arc,
};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Request, State, rejection::BytesRejection},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::{
    net::TcpListener,
    sync::{broadcast, watch},
};

use super::{ApprovalService, DecideError, Decided, PendingView, ReviewAction, Reviewer};

/// Largest request body: the bodies are a few small fields; anything bigger is a mistake or an
/// attack.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Largest token file read: a token is a line of text, not a document.
const MAX_TOKEN_BYTES: u64 = 4096;
/// Tokens shorter than this are accepted but warned about: they can be guessed.
const MIN_STRONG_TOKEN_BYTES: usize = 16;
/// The `channel` of every reviewer authenticated here.
pub const CHANNEL: &str = "http";

/// Why the tokens could not be loaded. Each names the file and the reviewer it belongs to.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no [[http.token]] configured: no request could authenticate")]
    None,
    #[error("{}: cannot read the token of {name}: {source}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: the token file of {name} is accessible by group or others (mode {mode:04o}); \
         make it readable by its owner only (chmod 0600)",
        path.display()
    )]
    Permissions {
        name: String,
        path: PathBuf,
        mode: u32,
    },
    #[error("{}: the token file of {name} is empty", path.display())]
    Empty { name: String, path: PathBuf },
    #[error(
        "{}: the token of {name} must be one line of printable ASCII without spaces, at most \
         {MAX_TOKEN_BYTES} bytes",
        path.display()
    )]
    Malformed { name: String, path: PathBuf },
    #[error(
        "{}: the token of {name} is the same as {other}'s; a token must name one reviewer",
        path.display()
    )]
    Shared {
        name: String,
        other: String,
        path: PathBuf,
    },
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("HTTP API on {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// `[[http.token]]` of the daemon's config: a bearer token a reviewer authenticates with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpToken {
    /// Who the token belongs to: the reviewer name in audit records.
    pub name: String,
    /// File holding the token (read at start; kept out of the config so the config can be
    /// world-readable).
    pub token_file: std::path::PathBuf,
}

/// The reviewers' bearer tokens. Only SHA-256 digests are kept: comparing fixed-size digests in
/// constant time hides both the token and its length from timing.
#[derive(Clone)]
pub struct Tokens {
    entries: Arc<[TokenEntry]>,
}

struct TokenEntry {
    name: String,
    digest: [u8; 32],
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.name))
            .finish()
    }
}

impl Tokens {
    /// Reads every token file (`[[http.token]]`). A file must be private to its owner (mode
    /// `0600` or stricter: the token is a reviewer's credential) and hold one non-empty token;
    /// surrounding whitespace is ignored.
    ///
    /// # Errors
    /// [`TokenError`] naming the first file that cannot be used, or [`TokenError::None`] for an
    /// empty list.
    pub fn load(tokens: &[HttpToken]) -> Result<Self, TokenError> {
        if tokens.is_empty() {
            return Err(TokenError::None);
        }
        let mut entries: Vec<TokenEntry> = Vec::with_capacity(tokens.len());
        for token in tokens {
            let secret = read_token(token)?;
            if secret.len() < MIN_STRONG_TOKEN_BYTES {
                tracing::warn!(
                    reviewer = %token.name,
                    file = %token.token_file.display(),
                    "HTTP token is shorter than {MIN_STRONG_TOKEN_BYTES} characters and could be \
                     guessed"
                );
            }
            let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
            if let Some(other) = entries.iter().find(|e| e.digest == digest) {
                return Err(TokenError::Shared {
                    name: token.name.clone(),
                    other: other.name.clone(),
                    path: token.token_file.clone(),
                });
            }
            entries.push(TokenEntry {
                name: token.name.clone(),
                digest,
            });
        }
        Ok(Self {
            entries: entries.into(),
        })
    }

    /// The reviewer a presented token belongs to. Every entry is compared, in constant time, so
    /// the time taken says nothing about which one (or how much of one) matched.
    pub(super) fn reviewer(&self, presented: &[u8]) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for entry in self.entries.iter() {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry.name.as_str());
            }
        }
        found
    }
}

fn read_token(token: &HttpToken) -> Result<String, TokenError> {
    let path = &token.token_file;
    let read_err = |source| TokenError::Read {
        name: token.name.clone(),
        path: path.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    // The mode of the file opened, not of whatever the path names a moment later.
    let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Permissions {
            name: token.name.clone(),
            path: path.clone(),
            mode,
        });
    }
    let mut raw = Vec::new();
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(read_err)?;
    let malformed = || TokenError::Malformed {
        name: token.name.clone(),
        path: path.clone(),
    };
    if raw.len() as u64 > MAX_TOKEN_BYTES {
        return Err(malformed());
    }
    let text = String::from_utf8(raw).map_err(|_| malformed())?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(TokenError::Empty {
            name: token.name.clone(),
            path: path.clone(),
        });
    }
    // What a client can send after `Bearer `: anything else could never match.
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed());
    }
    Ok(secret.to_owned())
}

#[derive(Clone)]
pub(super) struct AppState {
    pub(super) service: Arc<dyn ApprovalService>,
    /// Becomes true at shutdown: ends the otherwise endless `/v1/stream` responses, which a
    /// graceful shutdown would wait for.
    pub(super) stopping: watch::Receiver<bool>,
}

/// Serves the API on `listener` until the process ends or the task is aborted.
///
/// # Errors
/// [`ServeError`] when accepting connections fails for good.
pub async fn serve(
    listener: TcpListener,
    tokens: Tokens,
    service: Arc<dyn ApprovalService>,
) -> Result<(), ServeError> {
    serve_until(listener, tokens, service, std::future::pending()).await
}

/// Serves the API on `listener` until `shutdown` completes, then ends open `/v1/stream`
/// responses, lets other requests in flight finish, and returns.
///
/// # Errors
/// [`ServeError`] when accepting connections fails for good.
pub async fn serve_until(
    listener: TcpListener,
    tokens: Tokens,
    service: Arc<dyn ApprovalService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(listener, tokens, service, ServeOptions::default(), shutdown).await
}

/// What the listener serves besides the JSON API, and how.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// The review page ([`super::web`], `http.web`).
    pub web: bool,
    /// TLS (`http.tls_cert`, `http.tls_key`); `None`: plain HTTP.
    pub tls: Option<super::tls::Tls>,
    /// Slack's interaction endpoint ([`super::slack`], `[slack]`).
    pub slack: Option<Arc<super::slack::SlackInteractions>>,
}

/// [`serve_until`] with the review page, TLS or Slack's endpoint as `options` say.
///
/// # Errors
/// [`ServeError`] when accepting connections fails for good.
pub async fn serve_with(
    listener: TcpListener,
    tokens: Tokens,
    service: Arc<dyn ApprovalService>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    tracing::info!(
        %addr, reviewers = ?tokens, web = options.web, tls = options.tls.is_some(),
        slack = options.slack.is_some(), "HTTP approval API listening"
    );
    let (stop, stopping) = watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        stop.send_replace(true);
    };
    let app = router(tokens, service, stopping, &options);
    let served = match &options.tls {
        None => {
            axum::serve(
                BackoffListener {
                    listener,
                    backoff: crate::robust::AcceptBackoff::new("HTTP API"),
                },
                app,
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
        Some(tls) => {
            let listener =
                super::tls::TlsListener::spawn(listener, tls).map_err(|source| ServeError::Io {
                    addr: addr.clone(),
                    source,
                })?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    served.map_err(|source| ServeError::Io { addr, source })
}

/// The TCP listener with the daemon's accept backoff: errors that are not about one connection
/// (`EMFILE`) are retried after a bounded, growing wait and logged once per burst.
struct BackoffListener {
    listener: TcpListener,
    backoff: crate::robust::AcceptBackoff,
}

impl axum::serve::Listener for BackoffListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok(accepted) => {
                    self.backoff.succeeded();
                    return accepted;
                }
                Err(err) => {
                    let wait = self.backoff.failed(&err);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// The routes: the JSON API with bearer authentication on all of its routes and on unknown
/// ones, and, as `options` say, the review page (session cookies, [`super::web`]) and Slack's
/// endpoint (Slack's signature, [`super::slack`]).
fn router(
    tokens: Tokens,
    service: Arc<dyn ApprovalService>,
    stopping: watch::Receiver<bool>,
    options: &ServeOptions,
) -> Router {
    let state = AppState { service, stopping };
    let api = Router::new()
        .route("/v1/pending", get(list))
        .route("/v1/pending/{id}/approve", post(approve))
        .route("/v1/pending/{id}/deny", post(deny))
        .route("/v1/pending/{id}/kill", post(kill))
        .route("/v1/stream", get(stream_records))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Outermost, so it also covers the fallback: unauthenticated clients learn nothing,
        // not even which routes exist.
        .layer(middleware::from_fn_with_state(tokens.clone(), authenticate));
    let mut app = Router::new();
    if options.web {
        app = app.merge(super::web::router(
            state.clone(),
            tokens,
            options.tls.is_some(),
        ));
    }
    if let Some(slack) = &options.slack {
        app = app.merge(super::slack::router(state, Arc::clone(slack)));
    }
    app.merge(api)
}

/// An error answer: `{"error": message}` with its status.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl fmt::Display) -> Self {
        Self {
            status,
            message: message.to_string(),
        }
    }

    pub(super) fn bad_request(message: impl fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> Self {
        let status = match &e {
            DecideError::NotPending(_) => StatusCode::NOT_FOUND,
            DecideError::NotAnApprover { .. }
            | DecideError::AlreadyApproved(_)
            | DecideError::SelfApproval { .. } => StatusCode::FORBIDDEN,
            DecideError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e)
    }
}

/// Finds the reviewer of the bearer token and hands it to the handler, or answers 401.
async fn authenticate(State(tokens): State<Tokens>, mut request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let reviewer = match presented {
        None => return unauthorized("missing bearer token", r#"Bearer realm="jit""#),
        Some(token) => tokens.reviewer(token.as_bytes()),
    };
    let Some(name) = reviewer else {
        tracing::warn!(
            method = %request.method(),
            path = %request.uri().path(),
            "HTTP request with an invalid bearer token refused"
        );
        return unauthorized(
            "invalid bearer token",
            r#"Bearer realm="jit", error="invalid_token""#,
        );
    };
    request.extensions_mut().insert(Reviewer {
        name: name.to_owned(),
        uid: None,
        gids: Vec::new(),
        channel: CHANNEL.to_owned(),
    });
    next.run(request).await
}

fn unauthorized(message: &str, challenge: &'static str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// Runs a blocking call of the service on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "approval service call failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<PendingView>>, ApiError> {
    Ok(Json(blocking(move || state.service.pending()).await?))
}

/// `POST .../approve`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApproveBody {
    pub(super) once: Option<bool>,
    #[serde(rename = "for")]
    pub(super) for_: Option<String>,
    pub(super) reason: Option<String>,
}

/// `POST .../deny` and `.../kill`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReasonBody {
    pub(super) reason: Option<String>,
}

/// The request id in the path.
pub(super) fn parse_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("request id {raw:?} is not a number")))
}

/// A JSON body, where an empty body means "all defaults" (a bare `curl -X POST` approves with
/// the agent's default scope).
pub(super) fn parse_body<T: Default + for<'de> Deserialize<'de>>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Blank reasons are no reasons.
pub(super) fn reason(reason: Option<String>) -> Option<String> {
    reason.filter(|r| !r.trim().is_empty())
}

pub(super) fn approve_action(body: &ApproveBody) -> Result<ReviewAction, ApiError> {
    let once = body.once.unwrap_or(false);
    let for_secs = match &body.for_ {
        None => None,
        Some(_) if once => {
            return Err(ApiError::bad_request(
                "\"once\" and \"for\" exclude each other",
            ));
        }
        Some(text) => {
            let duration = humantime::parse_duration(text).map_err(|e| {
                ApiError::bad_request(format!(
                    "\"for\": {text:?} is not a duration like \"15m\" or \"2h\" ({e})"
                ))
            })?;
            if duration.as_secs() == 0 {
                return Err(ApiError::bad_request(format!(
                    "\"for\": {text:?} is shorter than one second"
                )));
            }
            Some(duration.as_secs())
        }
    };
    Ok(ReviewAction::Approve { once, for_secs })
}

async fn approve(
    State(state): State<AppState>,
    Extension(reviewer): Extension<Reviewer>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Decided>, ApiError> {
    let id = parse_id(&id)?;
    let body: ApproveBody = parse_body(body)?;
    let action = approve_action(&body)?;
    decide(state, reviewer, id, action, reason(body.reason)).await
}

async fn deny(
    State(state): State<AppState>,
    Extension(reviewer): Extension<Reviewer>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Decided>, ApiError> {
    let id = parse_id(&id)?;
    let body: ReasonBody = parse_body(body)?;
    decide(state, reviewer, id, ReviewAction::Deny, reason(body.reason)).await
}

async fn kill(
    State(state): State<AppState>,
    Extension(reviewer): Extension<Reviewer>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Decided>, ApiError> {
    let id = parse_id(&id)?;
    let body: ReasonBody = parse_body(body)?;
    decide(state, reviewer, id, ReviewAction::Kill, reason(body.reason)).await
}

pub(super) async fn decide(
    state: AppState,
    reviewer: Reviewer,
    id: u64,
    action: ReviewAction,
    reason: Option<String>,
) -> Result<Json<Decided>, ApiError> {
    let name = reviewer.name.clone();
    let outcome = blocking(move || state.service.decide(id, &reviewer, action, reason)).await?;
    match outcome {
        Ok(decided) => {
            tracing::info!(id, reviewer = %name, ?action, outcome = %decided.outcome, "decided over HTTP");
            Ok(Json(decided))
        }
        Err(e) => {
            if matches!(e, DecideError::Failed(_)) {
                tracing::error!(id, reviewer = %name, ?action, error = %e, "decision failed");
            }
            Err(e.into())
        }
    }
}

/// `GET /v1/stream`: subscribes before answering, so every record published after the response
/// headers arrive reaches the client.
async fn stream_records(State(state): State<AppState>) -> Response {
    let receiver = state.service.subscribe();
    Sse::new(events(receiver, state.stopping))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The records as events; a slow client that fell behind the broadcast buffer is told how many
/// it missed instead of being cut off.
pub(super) fn events(
    receiver: broadcast::Receiver<String>,
    stopping: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    stream::unfold(
        (receiver, stopping),
        |(mut receiver, mut stopping)| async move {
            let next = tokio::select! {
                // Also when the sender is gone: the server is going away.
                _ = stopping.wait_for(|stop| *stop) => return None,
                next = receiver.recv() => next,
            };
            let event = match next {
                Ok(record) => Event::default().data(record),
                Err(broadcast::error::RecvError::Lagged(missed)) => Event::default()
                    .event("lagged")
                    .data(serde_json::json!({ "missed": missed }).to_string()),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((Ok(event), (receiver, stopping)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> ApproveBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn approve_bodies() {
        let action = |json| approve_action(&body(json)).ok();
        assert_eq!(
            action("{}"),
            Some(ReviewAction::Approve {
                once: false,
                for_secs: None
            })
        );
        assert_eq!(
            action(r#"{"once": true}"#),
            Some(ReviewAction::Approve {
                once: true,
                for_secs: None
            })
        );
        assert_eq!(
            action(r#"{"for": "1h 30m"}"#),
            Some(ReviewAction::Approve {
                once: false,
                for_secs: Some(5400)
            })
        );
        assert_eq!(action(r#"{"once": true, "for": "15m"}"#), None);
        assert_eq!(action(r#"{"for": "500ms"}"#), None);
        assert_eq!(action(r#"{"for": "soon"}"#), None);
    }

    #[test]
    fn token_lookup_matches_whole_tokens_only() {
        let entry = |name: &str, secret: &str| TokenEntry {
            name: name.to_owned(),
            digest: Sha256::digest(secret.as_bytes()).into(),
        };
        let tokens = Tokens {
            entries: vec![entry("alice", "a-secret"), entry("bob", "b-secret")].into(),
        };
        assert_eq!(tokens.reviewer(b"a-secret"), Some("alice"));
        assert_eq!(tokens.reviewer(b"b-secret"), Some("bob"));
        assert_eq!(tokens.reviewer(b"a-secre"), None);
        assert_eq!(tokens.reviewer(b"a-secret "), None);
        assert_eq!(tokens.reviewer(b""), None);
        assert_eq!(format!("{tokens:?}"), r#"["alice", "bob"]"#);
    }
}
