//! The HTTP approval API, served for real on a loopback port in front of an in-memory
//! [`ApprovalService`], driven by a real HTTP client: authentication, every route, the mapping
//! of errors to statuses, and the record stream. (The daemon's own service is tested in the VM.)

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use jit_agent::{
    approval::{
        ApprovalService, DecideError, Decided, PendingView, ReviewAction, Reviewer,
        http::{TokenError, Tokens, serve, serve_until},
    },
    config::HttpToken,
};
use serde_json::{Value, json};
use tokio::sync::{broadcast, oneshot};

const ALICE: &str = "alice-0123456789abcdef";
const MALLORY: &str = "mallory-0123456789abcdef";

/// What the service was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Decision {
    id: u64,
    reviewer: Reviewer,
    action: ReviewAction,
    reason: Option<String>,
}

/// A real, small [`ApprovalService`]: a list of held actions, the decisions applied to it, and
/// a broadcast of records. `mallory` is nobody's approver.
struct MemoryService {
    pending: Mutex<Vec<PendingView>>,
    decisions: Mutex<Vec<Decision>>,
    records: broadcast::Sender<String>,
}

impl ApprovalService for MemoryService {
    fn pending(&self) -> Vec<PendingView> {
        self.pending.lock().unwrap().clone()
    }

    fn decide(
        &self,
        id: u64,
        reviewer: &Reviewer,
        action: ReviewAction,
        reason: Option<String>,
    ) -> Result<Decided, DecideError> {
        let mut pending = self.pending.lock().unwrap();
        let index = pending
            .iter()
            .position(|p| p.id == id)
            .ok_or(DecideError::NotPending(id))?;
        if reviewer.name == "mallory" {
            return Err(DecideError::NotAnApprover {
                reviewer: reviewer.name.clone(),
                agent: pending[index].agent.clone(),
            });
        }
        if id == 99 {
            return Err(DecideError::Failed("the kernel refused".to_owned()));
        }
        pending.remove(index);
        self.decisions.lock().unwrap().push(Decision {
            id,
            reviewer: reviewer.clone(),
            action,
            reason,
        });
        let outcome = match action {
            ReviewAction::Approve { .. } => "approved",
            ReviewAction::Deny => "denied",
            ReviewAction::Kill => "killed",
        };
        Ok(Decided {
            id,
            outcome: outcome.to_owned(),
            approvals_missing: 0,
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<String> {
        self.records.subscribe()
    }
}

fn view(id: u64, path: &str) -> PendingView {
    PendingView {
        id,
        agent: "coding-agent".into(),
        op: "exec".into(),
        path: path.into(),
        path_hex: None,
        rule: Some("network tools need a reviewer".into()),
        pid: 4242,
        tid: 4242,
        uid: 1000,
        user: Some("dev".into()),
        exe: Some("/usr/bin/bash".into()),
        argv: Some(vec!["curl".into(), "https://example.org".into()]),
        exec_argv: None,
        exec_env: None,
        ends: None,
        cwd: Some("/srv/work".into()),
        parents: vec!["4200 bash /usr/bin/bash".into()],
        held_at: "2026-01-01T00:00:00Z".into(),
        age_secs: 3,
        timeout_in_secs: 297,
        on_timeout: "deny".into(),
        target: None,
        approvals: vec![],
        required_approvals: 1,
        hint: None,
        justification: None,
        acting: None,
        written_by: None,
        risk: None,
        approvers: Vec::new(),
    }
}

/// A running server: its base URL, the service behind it, and the token files' directory.
struct Server {
    base: String,
    service: Arc<MemoryService>,
    _dir: tempfile::TempDir,
}

fn write_token(dir: &Path, name: &str, content: &str, mode: u32) -> HttpToken {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    HttpToken {
        name: name.into(),
        token_file: path,
    }
}

/// The token files, the service, and a listener on a free loopback port.
async fn fixture() -> (Server, Tokens, tokio::net::TcpListener) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::load(&[
        // Surrounding whitespace (the newline an editor adds) is not part of the token.
        write_token(dir.path(), "alice", &format!("  {ALICE}\n"), 0o600),
        write_token(dir.path(), "mallory", MALLORY, 0o400),
    ])
    .unwrap();
    let service = Arc::new(MemoryService {
        pending: Mutex::new(vec![
            view(1, "/usr/bin/curl"),
            view(2, "/usr/bin/wget"),
            view(3, "/usr/bin/ssh"),
            view(99, "/usr/bin/nc"),
        ]),
        decisions: Mutex::new(Vec::new()),
        records: broadcast::channel(16).0,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server {
        base: format!("http://{}", listener.local_addr().unwrap()),
        service,
        _dir: dir,
    };
    (server, tokens, listener)
}

/// A server that runs until the test ends.
async fn start() -> Server {
    let (server, tokens, listener) = fixture().await;
    let service: Arc<dyn ApprovalService> = server.service.clone();
    tokio::spawn(async move { serve(listener, tokens, service).await.unwrap() });
    server
}

/// Reads `/v1/stream` on the blocking pool: says when the response headers arrived (the handler
/// has subscribed by then), then collects `(event, data)` pairs until `count` or the end.
fn read_stream(
    url: String,
    count: usize,
) -> (
    oneshot::Receiver<()>,
    tokio::task::JoinHandle<Vec<(String, String)>>,
) {
    let (subscribed_tx, subscribed_rx) = oneshot::channel();
    let reader = tokio::task::spawn_blocking(move || {
        let response = agent()
            .get(&url)
            .header("authorization", &bearer(ALICE))
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "text/event-stream"
        );
        subscribed_tx.send(()).unwrap();
        let mut events = Vec::new();
        let mut name = String::from("message");
        for line in BufReader::new(response.into_body().into_reader()).lines() {
            let line = line.unwrap();
            if let Some(event) = line.strip_prefix("event:") {
                event.trim_start().clone_into(&mut name);
            } else if let Some(data) = line.strip_prefix("data:") {
                events.push((
                    std::mem::replace(&mut name, "message".into()),
                    data.trim_start().to_owned(),
                ));
                if events.len() == count {
                    break;
                }
            }
        }
        events
    });
    (subscribed_rx, reader)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// An answer: status, `WWW-Authenticate`, JSON body.
#[derive(Debug)]
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: Value,
}

/// One request with a blocking client on the blocking pool (the server runs on this runtime).
async fn call(method: &str, url: String, auth: Option<String>, body: Option<String>) -> Answer {
    let method = method.to_owned();
    tokio::task::spawn_blocking(move || {
        let agent = agent();
        let response = match method.as_str() {
            "GET" => {
                let mut request = agent.get(&url);
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                request.call()
            }
            "POST" => {
                let mut request = agent.post(&url).header("content-type", "application/json");
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                request.send(body.unwrap_or_default())
            }
            other => panic!("method {other}"),
        }
        .unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.into_body().read_to_string().unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {url}: {status}: body {text:?} is not JSON: {e}"));
        Answer {
            status,
            challenge,
            body,
        }
    })
    .await
    .unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

impl Server {
    async fn get(&self, path: &str, token: &str) -> Answer {
        call(
            "GET",
            format!("{}{path}", self.base),
            Some(bearer(token)),
            None,
        )
        .await
    }

    async fn post(&self, path: &str, token: &str, body: &str) -> Answer {
        call(
            "POST",
            format!("{}{path}", self.base),
            Some(bearer(token)),
            Some(body.to_owned()),
        )
        .await
    }

    fn decisions(&self) -> Vec<Decision> {
        self.service.decisions.lock().unwrap().clone()
    }
}

fn alice() -> Reviewer {
    Reviewer {
        name: "alice".into(),
        uid: None,
        gids: vec![],
        channel: "http".into(),
    }
}

#[tokio::test]
async fn list_with_a_valid_token() {
    let server = start().await;
    let answer = server.get("/v1/pending", ALICE).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let listed: Vec<PendingView> = serde_json::from_value(answer.body).unwrap();
    assert_eq!(listed, server.service.pending());
    assert_eq!(listed.len(), 4);
}

#[tokio::test]
async fn approve_deny_kill_reach_the_service_as_the_tokens_reviewer() {
    let server = start().await;

    let answer = server
        .post(
            "/v1/pending/1/approve",
            ALICE,
            r#"{"for": "15m", "reason": "needed for the release"}"#,
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.body,
        json!({"id": 1, "outcome": "approved", "approvals_missing": 0})
    );
    let answer = server
        .post("/v1/pending/2/approve", ALICE, r#"{"once": true}"#)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = server
        .post("/v1/pending/3/deny", ALICE, r#"{"reason": "no"}"#)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["outcome"], "denied");

    assert_eq!(
        server.decisions(),
        [
            Decision {
                id: 1,
                reviewer: alice(),
                action: ReviewAction::Approve {
                    once: false,
                    for_secs: Some(900)
                },
                reason: Some("needed for the release".into()),
            },
            Decision {
                id: 2,
                reviewer: alice(),
                action: ReviewAction::Approve {
                    once: true,
                    for_secs: None
                },
                reason: None,
            },
            Decision {
                id: 3,
                reviewer: alice(),
                action: ReviewAction::Deny,
                reason: Some("no".into()),
            },
        ]
    );
    // Decided requests are gone from the list.
    let answer = server.get("/v1/pending", ALICE).await;
    let ids: Vec<u64> = answer
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [99]);
}

#[tokio::test]
async fn empty_bodies_mean_defaults() {
    let server = start().await;
    let answer = server.post("/v1/pending/1/approve", ALICE, "").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = server.post("/v1/pending/2/kill", ALICE, "").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["outcome"], "killed");
    let actions: Vec<_> = server
        .decisions()
        .into_iter()
        .map(|d| (d.id, d.action, d.reason))
        .collect();
    assert_eq!(
        actions,
        [
            (
                1,
                ReviewAction::Approve {
                    once: false,
                    for_secs: None
                },
                None
            ),
            (2, ReviewAction::Kill, None),
        ]
    );
}

#[tokio::test]
async fn without_a_token_401() {
    let server = start().await;
    for (method, path) in [
        ("GET", "/v1/pending"),
        ("POST", "/v1/pending/1/approve"),
        ("GET", "/v1/stream"),
        ("GET", "/no/such/route"),
    ] {
        let answer = call(
            method,
            format!("{}{path}", server.base),
            None,
            Some("{}".into()),
        )
        .await;
        assert_eq!(answer.status, 401, "{method} {path}: {answer:?}");
        assert_eq!(answer.challenge.as_deref(), Some(r#"Bearer realm="jit""#));
        assert_eq!(answer.body, json!({"error": "missing bearer token"}));
    }
    // Another scheme is no bearer token either.
    let answer = call(
        "GET",
        format!("{}/v1/pending", server.base),
        Some(format!("Basic {ALICE}")),
        None,
    )
    .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(server.decisions().is_empty());
}

#[tokio::test]
async fn wrong_token_401() {
    let server = start().await;
    for token in [
        "not-a-token",
        &ALICE[..ALICE.len() - 1],
        &format!("{ALICE}x"),
        "",
    ] {
        let answer = server.post("/v1/pending/1/approve", token, "{}").await;
        assert_eq!(answer.status, 401, "{token:?}: {answer:?}");
        assert!(
            answer.challenge.as_deref().unwrap().starts_with("Bearer "),
            "{answer:?}"
        );
        assert!(
            answer.body["error"]
                .as_str()
                .unwrap()
                .contains("bearer token")
        );
    }
    // The scheme is case-insensitive (RFC 7235); the token is not.
    let answer = call(
        "GET",
        format!("{}/v1/pending", server.base),
        Some(format!("bearer {ALICE}")),
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = server.get("/v1/pending", &ALICE.to_uppercase()).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(server.decisions().is_empty());
}

#[tokio::test]
async fn unknown_id_404() {
    let server = start().await;
    let answer = server.post("/v1/pending/7/deny", ALICE, "{}").await;
    assert_eq!(answer.status, 404, "{answer:?}");
    assert_eq!(answer.body["error"], DecideError::NotPending(7).to_string());
    let answer = server.get("/v1/nothing", ALICE).await;
    assert_eq!(answer.status, 404, "{answer:?}");
    let answer = server.get("/v1/pending/1/approve", ALICE).await;
    assert_eq!(answer.status, 405, "{answer:?}");
    assert_eq!(answer.body["error"], "method not allowed on this route");
}

#[tokio::test]
async fn reviewer_not_allowed_403_and_service_failure_500() {
    let server = start().await;
    let answer = server.post("/v1/pending/1/approve", MALLORY, "{}").await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(
        answer.body["error"],
        "mallory may not decide for agent coding-agent: not among its approvers"
    );
    let answer = server.post("/v1/pending/99/kill", ALICE, "{}").await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert_eq!(answer.body["error"], "the kernel refused");
}

#[tokio::test]
async fn bad_bodies_and_ids_400() {
    let server = start().await;
    let cases = [
        ("/v1/pending/1/approve", "{", "invalid request body: "),
        (
            "/v1/pending/1/approve",
            r#"{"for": "soon"}"#,
            "\"for\": \"soon\" is not a duration",
        ),
        (
            "/v1/pending/1/approve",
            r#"{"for": "100ms"}"#,
            "shorter than one second",
        ),
        (
            "/v1/pending/1/approve",
            r#"{"once": true, "for": "1h"}"#,
            "exclude each other",
        ),
        (
            "/v1/pending/1/approve",
            r#"{"once": "yes"}"#,
            "invalid request body: invalid type",
        ),
        (
            "/v1/pending/1/approve",
            r#"{"forever": true}"#,
            "unknown field `forever`",
        ),
        (
            "/v1/pending/1/deny",
            r#"{"once": true}"#,
            "unknown field `once`",
        ),
        ("/v1/pending/1/deny", "[]", "invalid request body: "),
        (
            "/v1/pending/abc/approve",
            "{}",
            "request id \"abc\" is not a number",
        ),
        (
            "/v1/pending/-1/kill",
            "{}",
            "request id \"-1\" is not a number",
        ),
    ];
    for (path, body, expected) in cases {
        let answer = server.post(path, ALICE, body).await;
        assert_eq!(answer.status, 400, "{path} {body}: {answer:?}");
        let message = answer.body["error"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{path} {body}: {message:?} lacks {expected:?}"
        );
    }
    // Too big a body: refused before it is parsed.
    let huge = format!(r#"{{"reason": "{}"}}"#, "x".repeat(64 * 1024));
    let answer = server.post("/v1/pending/1/deny", ALICE, &huge).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(server.decisions().is_empty());
}

#[tokio::test]
async fn stream_receives_a_record_published_after_subscribing() {
    let server = start().await;
    let (subscribed, reader) = read_stream(format!("{}/v1/stream", server.base), 2);
    subscribed.await.unwrap();
    assert_eq!(server.service.records.receiver_count(), 1);
    let records = [
        r#"{"seq":1,"kind":"hold","id":1}"#,
        r#"{"seq":2,"kind":"decision","id":1,"decision":"approve"}"#,
    ];
    for record in records {
        server.service.records.send(record.to_owned()).unwrap();
    }
    let events = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("no records on the stream within 10 s")
        .unwrap();
    let expected: Vec<_> = records
        .iter()
        .map(|r| ("message".to_owned(), (*r).to_owned()))
        .collect();
    assert_eq!(events, expected);
}

#[tokio::test]
async fn a_stream_that_falls_behind_says_how_much_it_missed() {
    let server = start().await;
    let (subscribed, reader) = read_stream(format!("{}/v1/stream", server.base), 17);
    subscribed.await.unwrap();
    // 20 records into a buffer of 16 before the server's stream (on this one-thread runtime)
    // gets to run: the 4 oldest are lost.
    for seq in 0..20 {
        server
            .service
            .records
            .send(format!(r#"{{"seq":{seq}}}"#))
            .unwrap();
    }
    let events = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("no records on the stream within 10 s")
        .unwrap();
    assert_eq!(
        events[0],
        ("lagged".to_owned(), r#"{"missed":4}"#.to_owned())
    );
    let seqs: Vec<_> = events[1..].iter().map(|(_, d)| d.as_str()).collect();
    let expected: Vec<_> = (4..20).map(|seq| format!(r#"{{"seq":{seq}}}"#)).collect();
    assert_eq!(seqs, expected);
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_the_server() {
    let (server, tokens, listener) = fixture().await;
    let service: Arc<dyn ApprovalService> = server.service.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_until(listener, tokens, service, async move {
        stopped.await.ok();
    }));
    let (subscribed, reader) = read_stream(format!("{}/v1/stream", server.base), usize::MAX);
    subscribed.await.unwrap();
    server.service.records.send("{}".to_owned()).unwrap();
    stop.send(()).unwrap();
    // The server returns although the stream was open, and the stream ended (not timed out).
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the server did not stop within 5 s")
        .unwrap()
        .unwrap();
    let events = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the stream did not end within 5 s")
        .unwrap();
    assert_eq!(events, [("message".to_owned(), "{}".to_owned())]);
    // The sender is still alive: it was the shutdown, not a closed channel, that ended it.
    assert_eq!(server.service.records.receiver_count(), 0);
}

#[test]
fn tokens_load_rejects_unusable_files_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = |tokens: &[HttpToken]| Tokens::load(tokens).unwrap_err().to_string();

    let open = write_token(d, "open", "abcdefabcdefabcdef", 0o644);
    assert_eq!(
        err(std::slice::from_ref(&open)),
        format!(
            "{}: the token file of open is accessible by group or others (mode 0644); make it \
             readable by its owner only (chmod 0600)",
            open.token_file.display()
        )
    );
    let group = write_token(d, "group", "abcdefabcdefabcdef", 0o640);
    assert!(matches!(
        Tokens::load(&[group]),
        Err(TokenError::Permissions { mode: 0o640, .. })
    ));
    let empty = write_token(d, "empty", " \n\t\n", 0o600);
    assert_eq!(
        err(std::slice::from_ref(&empty)),
        format!(
            "{}: the token file of empty is empty",
            empty.token_file.display()
        )
    );
    let spaced = write_token(d, "spaced", "two words", 0o600);
    assert!(err(&[spaced]).contains("must be one line of printable ASCII without spaces"));
    let missing = HttpToken {
        name: "missing".into(),
        token_file: d.join("nonexistent"),
    };
    assert_eq!(
        err(std::slice::from_ref(&missing)),
        format!(
            "{}: cannot read the token of missing: No such file or directory (os error 2)",
            missing.token_file.display()
        )
    );
    let a = write_token(d, "a", "same-token-0123456789", 0o600);
    let b = write_token(d, "b", "same-token-0123456789\n", 0o600);
    assert_eq!(
        err(&[a.clone(), b.clone()]),
        format!(
            "{}: the token of b is the same as a's; a token must name one reviewer",
            b.token_file.display()
        )
    );
    assert!(matches!(Tokens::load(&[]), Err(TokenError::None)));
    let tokens = Tokens::load(&[a]).unwrap();
    // Debug shows the reviewers, never the tokens.
    assert_eq!(format!("{tokens:?}"), r#"["a"]"#);
}
