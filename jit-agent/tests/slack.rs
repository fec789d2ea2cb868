//! Slack interactive approvals, against a local server that plays Slack (its Web API and the
//! interaction's `response_url`): the message with buttons, signed and badly signed clicks, a
//! replayed and a stale timestamp, a Slack user who is not mapped and one who is not an
//! approver, and the message rewritten when the hold ends by any channel. Also the generic
//! webhook's message when a hold ends.

#[path = "support/fake_holds.rs"]
mod fake_holds;

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{Json, Router, extract::State, http::HeaderMap, routing::post};
use fake_holds::{FakeHolds, view, write_token};
use jit_agent::approval::{
    ApprovalService, ReviewAction, Reviewer,
    http::{ServeOptions, Tokens, serve_with},
    slack::{SlackConfig, SlackInteractions, SlackNotifier, signature},
    webhook::{WebhookOptions, spawn},
};
use serde_json::{Value, json};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// What the fake Slack received: (path, authorization, JSON body).
type Calls = Arc<Mutex<Vec<(String, String, Value)>>>;

async fn record(
    State(calls): State<Calls>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Json<Value> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    calls
        .lock()
        .unwrap()
        .push((uri.path().to_owned(), auth, body));
    Json(json!({ "ok": true, "channel": "C0JIT", "ts": "1700000000.000100" }))
}

async fn fake_slack() -> (String, Calls) {
    let calls: Calls = Arc::default();
    let app = Router::new()
        .route("/api/chat.postMessage", post(record))
        .route("/api/chat.update", post(record))
        .route("/response", post(record))
        .route("/hook", post(record))
        .with_state(Arc::clone(&calls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, calls)
}

/// Waits for a call to `path` that satisfies `check`.
async fn wait_call(calls: &Calls, path: &str, check: impl Fn(&Value) -> bool) -> (String, Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((_, auth, body)) = calls
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _, b)| p == path && check(b))
        {
            return (auth.clone(), body.clone());
        }
        assert!(
            Instant::now() < deadline,
            "no call to {path} as expected; calls: {:#?}",
            calls.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Setup {
    jit: String,
    slack: String,
    calls: Calls,
    service: Arc<FakeHolds>,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (slack, calls) = fake_slack().await;
    let secret_file = dir.path().join("signing-secret");
    let bot_file = dir.path().join("bot-token");
    for (path, content) in [(&secret_file, SECRET), (&bot_file, "xoxb-test-token")] {
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = SlackConfig {
        api_url: format!("{slack}/api"),
        channel: "C0JIT".into(),
        bot_token_file: bot_file,
        signing_secret_file: secret_file,
        users: vec![
            ("U0ALICE".into(), "alice".into()),
            ("U0BOB".into(), "bob".into()),
        ],
    };
    let service = Arc::new(FakeHolds::default());
    let svc: Arc<dyn ApprovalService> = service.clone();
    tokio::spawn(SlackNotifier::load(&config).unwrap().run(Arc::clone(&svc)));
    let tokens = Tokens::load(&[write_token(
        dir.path(),
        "alice",
        "alice-slack-0123456789abcdef",
    )])
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jit = format!("http://{}", listener.local_addr().unwrap());
    let options = ServeOptions {
        web: false,
        tls: None,
        slack: Some(Arc::new(SlackInteractions::load(&config).unwrap())),
    };
    tokio::spawn(async move {
        serve_with(listener, tokens, svc, options, std::future::pending())
            .await
            .unwrap();
    });
    Setup {
        jit,
        slack,
        calls,
        service,
        _dir: dir,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A click on a button, as Slack sends it: form-encoded `payload`.
fn click(slack: &str, user: &str, action: &str, id: u64) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": "someone" },
        "actions": [{ "action_id": action, "block_id": "jit_decision", "value": id.to_string() }],
        "response_url": format!("{slack}/response"),
        "container": { "channel_id": "C0JIT", "message_ts": "1700000000.000100" },
    });
    let mut body = String::from("payload=");
    for b in payload.to_string().bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            body.push(b as char);
        } else {
            let _ = write!(body, "%{b:02X}");
        }
    }
    body
}

/// Posts `body` to the interaction endpoint with the given timestamp and signature.
async fn send(jit: &str, body: &str, timestamp: u64, sig: String) -> u16 {
    let url = format!("{jit}/slack/interactions");
    let body = body.to_owned();
    tokio::task::spawn_blocking(move || {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", sig)
            .send(body.as_bytes())
            .unwrap()
            .status()
            .as_u16()
    })
    .await
    .unwrap()
}

async fn send_signed(jit: &str, body: &str) -> u16 {
    let ts = now();
    send(
        jit,
        body,
        ts,
        signature(SECRET.as_bytes(), &ts.to_string(), body.as_bytes()),
    )
    .await
}

async fn wait_decisions(service: &FakeHolds, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while service.decisions().len() < count {
        assert!(Instant::now() < deadline, "no decision was applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_signed_click_approves_and_the_message_is_updated() {
    let s = setup().await;
    s.service.hold(view(5, "/usr/bin/curl"));
    let (auth, message) = wait_call(&s.calls, "/api/chat.postMessage", |_| true).await;
    assert_eq!(auth, "Bearer xoxb-test-token");
    assert_eq!(message["channel"], "C0JIT");
    let buttons = &message["blocks"][1]["elements"];
    assert_eq!(buttons[0]["action_id"], "jit_approve");
    assert_eq!(buttons[0]["value"], "5");
    assert_eq!(buttons[1]["action_id"], "jit_deny");
    assert!(message["text"].as_str().unwrap().contains("/usr/bin/curl"));

    let body = click(&s.slack, "U0ALICE", "jit_approve", 5);
    assert_eq!(send_signed(&s.jit, &body).await, 200);
    wait_decisions(&s.service, 1).await;
    let decision = &s.service.decisions()[0];
    assert_eq!(decision.id, 5);
    assert_eq!(
        decision.action,
        ReviewAction::Approve {
            once: true,
            for_secs: None
        }
    );
    assert_eq!(decision.reviewer.name, "alice");
    assert_eq!(decision.reviewer.channel, "slack");

    let (_, update) = wait_call(&s.calls, "/api/chat.update", |_| true).await;
    assert_eq!(update["ts"], "1700000000.000100");
    assert_eq!(update["channel"], "C0JIT");
    let text = update["text"].as_str().unwrap();
    assert!(text.contains("request 5 approved by alice"), "{text}");
    assert_eq!(
        update["blocks"].as_array().unwrap().len(),
        1,
        "the buttons are gone"
    );

    // The same request again, within the window: a replay, refused.
    let ts = now();
    let sig = signature(SECRET.as_bytes(), &ts.to_string(), body.as_bytes());
    s.service.hold(view(6, "/usr/bin/wget"));
    let body6 = click(&s.slack, "U0ALICE", "jit_deny", 6);
    let sig6 = signature(SECRET.as_bytes(), &ts.to_string(), body6.as_bytes());
    assert_eq!(send(&s.jit, &body6, ts, sig6.clone()).await, 200);
    assert_eq!(send(&s.jit, &body6, ts, sig6).await, 401);
    wait_decisions(&s.service, 2).await;
    let _ = sig;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.service.decisions().len(),
        2,
        "the replay decided something"
    );
}

#[tokio::test]
async fn bad_signatures_stale_timestamps_and_strangers_decide_nothing() {
    let s = setup().await;
    s.service.hold(view(7, "/usr/bin/curl"));
    let body = click(&s.slack, "U0ALICE", "jit_approve", 7);
    let ts = now();
    // Signed with another secret; the right signature over another body; none at all.
    let wrong = signature(b"not-the-secret", &ts.to_string(), body.as_bytes());
    assert_eq!(send(&s.jit, &body, ts, wrong).await, 401);
    let other = signature(SECRET.as_bytes(), &ts.to_string(), b"payload=%7B%7D");
    assert_eq!(send(&s.jit, &body, ts, other).await, 401);
    assert_eq!(send(&s.jit, &body, ts, String::new()).await, 401);
    // Correctly signed, but six minutes old (or in the future).
    for stale in [ts - 360, ts + 360] {
        let sig = signature(SECRET.as_bytes(), &stale.to_string(), body.as_bytes());
        assert_eq!(send(&s.jit, &body, stale, sig).await, 401);
    }

    // A Slack user with no reviewer name: told so, nothing decided.
    let eve = click(&s.slack, "U0EVE", "jit_approve", 7);
    assert_eq!(send_signed(&s.jit, &eve).await, 200);
    let (_, told) = wait_call(&s.calls, "/response", |b| {
        b["text"].as_str().is_some_and(|t| t.contains("not mapped"))
    })
    .await;
    assert_eq!(told["response_type"], "ephemeral");

    // bob is mapped but is not among the hold's approvers (alice, group:oncall): the service
    // refuses him, as on every channel.
    let bob = click(&s.slack, "U0BOB", "jit_approve", 7);
    assert_eq!(send_signed(&s.jit, &bob).await, 200);
    wait_call(&s.calls, "/response", |b| {
        b["text"]
            .as_str()
            .is_some_and(|t| t.contains("bob may not decide"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.service.decisions().is_empty());
    assert_eq!(s.service.pending().len(), 1);
    assert!(
        !s.calls
            .lock()
            .unwrap()
            .iter()
            .any(|(p, _, _)| p == "/api/chat.update"),
        "the message changed though the hold did not end"
    );
}

#[tokio::test]
async fn the_message_says_how_a_hold_ended_by_another_channel() {
    let s = setup().await;
    s.service.hold(view(8, "/usr/bin/curl"));
    s.service.hold(view(9, "/usr/bin/wget"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.calls.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Denied with jitctl (the socket), and the other's process went away.
    let carol = Reviewer {
        name: "alice".into(),
        uid: Some(1000),
        gids: vec![],
        channel: "socket".into(),
    };
    s.service
        .decide(8, &carol, ReviewAction::Deny, Some("<!channel> no".into()))
        .unwrap();
    s.service.end(9, "the held process exited");
    let (_, denied) = wait_call(&s.calls, "/api/chat.update", |b| {
        b["text"].as_str().is_some_and(|t| t.contains("request 8"))
    })
    .await;
    let text = denied["text"].as_str().unwrap();
    assert!(text.contains("denied by alice"), "{text}");
    assert!(
        text.contains("&lt;!channel&gt;"),
        "reasons are escaped for Slack: {text}"
    );
    wait_call(&s.calls, "/api/chat.update", |b| {
        b["text"]
            .as_str()
            .is_some_and(|t| t.contains("request 9 ended without a decision"))
    })
    .await;
}

#[tokio::test]
async fn the_generic_webhook_hears_how_holds_end() {
    let (slack, calls) = fake_slack().await;
    let service = Arc::new(FakeHolds::default());
    let webhook = spawn(
        format!("{slack}/hook").parse().unwrap(),
        WebhookOptions::default(),
    );
    tokio::spawn(webhook.clone().follow_endings(service.subscribe()));
    service.hold(view(11, "/usr/bin/curl"));
    webhook.notify(view(11, "/usr/bin/curl"));
    wait_call(&calls, "/hook", |b| b["request"]["id"] == 11).await;
    let reviewer = Reviewer {
        name: "alice".into(),
        uid: None,
        gids: vec![],
        channel: "http".into(),
    };
    service
        .decide(
            11,
            &reviewer,
            ReviewAction::Approve {
                once: true,
                for_secs: None,
            },
            None,
        )
        .unwrap();
    let (_, ended) = wait_call(&calls, "/hook", |b| b.get("ended").is_some()).await;
    assert_eq!(ended["text"], "jit: request 11 approved by alice (once).");
    assert_eq!(ended["ended"]["request_id"], 11);
    assert_eq!(ended["ended"]["record"]["type"], "approval");
}
