//! The webhook notifier against real local receivers: retries with backoff until accepted,
//! bounded attempts, no retry of a permanent refusal, per-attempt timeouts, and a `notify` that
//! never waits.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use jit_agent::approval::{
    PendingView,
    webhook::{WebhookHandle, WebhookOptions, WebhookStats, WebhookUrl, spawn},
};
use serde_json::Value;

/// A receiver that answers `fail_with` to the first `failures` attempts, then 200.
#[derive(Default)]
struct Receiver {
    attempts: AtomicU32,
    failures: u32,
    fail_with: u16,
    accepted: Mutex<Vec<Value>>,
    content_types: Mutex<Vec<String>>,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let attempt = receiver.attempts.fetch_add(1, Ordering::SeqCst) + 1;
    receiver.content_types.lock().unwrap().push(
        headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
    );
    if attempt <= receiver.failures {
        return StatusCode::from_u16(receiver.fail_with).unwrap();
    }
    receiver.accepted.lock().unwrap().push(body);
    StatusCode::OK
}

async fn start_receiver(failures: u32, fail_with: u16) -> (WebhookUrl, Arc<Receiver>) {
    let receiver = Arc::new(Receiver {
        failures,
        fail_with,
        ..Receiver::default()
    });
    let app = Router::new()
        .route("/services/T0/B0/secret", post(receive))
        .with_state(Arc::clone(&receiver));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/services/T0/B0/secret",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url.parse().unwrap(), receiver)
}

/// Fast backoff for tests: 10, 20, 40, 50, 50, ... ms.
fn fast(attempts: u32) -> WebhookOptions {
    WebhookOptions {
        attempts,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        queue: 8,
    }
}

fn view(id: u64) -> PendingView {
    PendingView {
        id,
        agent: "coding-agent".into(),
        op: "exec".into(),
        path: "/usr/bin/curl".into(),
        path_hex: None,
        rule: Some("network tools need a reviewer".into()),
        pid: 4242,
        tid: 4243,
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
        age_secs: 0,
        timeout_in_secs: 300,
        on_timeout: "deny".into(),
        target: None,
        approvals: vec![],
        required_approvals: 1,
        hint: None,
        justification: None,
        risk: None,
        approvers: Vec::new(),
        acting: None,
        written_by: None,
    }
}

/// Waits until `done` holds for the handle's stats; panics after 20 s.
async fn wait_for(handle: &WebhookHandle, done: impl Fn(WebhookStats) -> bool) -> WebhookStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = handle.stats();
        if done(stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "webhook stats stuck at {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn retries_until_accepted_and_delivers_once() {
    let (url, receiver) = start_receiver(2, 500).await;
    let handle = spawn(url, fast(5));
    let held = view(17);
    handle.notify(held.clone());
    let stats = wait_for(&handle, |s| s.delivered + s.failed > 0).await;
    assert_eq!(
        stats,
        WebhookStats {
            delivered: 1,
            failed: 0,
            dropped: 0
        }
    );
    assert_eq!(receiver.attempts.load(Ordering::SeqCst), 3);
    let accepted = receiver.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    let body = &accepted[0];
    assert_eq!(body["request"], serde_json::to_value(&held).unwrap());
    assert_eq!(
        body["text"],
        "jit: agent coding-agent is held before exec /usr/bin/curl (pid 4242, exe \
         /usr/bin/bash, rule \"network tools need a reviewer\", request 17). Answer with \
         `jitctl approve 17` [--once | --for 15m], `jitctl deny 17` or `jitctl kill 17`."
    );
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    assert!(
        receiver
            .content_types
            .lock()
            .unwrap()
            .iter()
            .all(|c| c == "application/json")
    );
}

#[tokio::test]
async fn never_accepted_gives_up_after_the_bounded_attempts() {
    let (url, receiver) = start_receiver(u32::MAX, 503).await;
    let handle = spawn(url, fast(5));
    let started = Instant::now();
    handle.notify(view(1));
    let stats = wait_for(&handle, |s| s.delivered + s.failed > 0).await;
    let elapsed = started.elapsed();
    assert_eq!(
        stats,
        WebhookStats {
            delivered: 0,
            failed: 1,
            dropped: 0
        }
    );
    assert_eq!(receiver.attempts.load(Ordering::SeqCst), 5);
    // The waits between the attempts: 10 + 20 + 40 + 50 (capped) ms.
    assert!(elapsed >= Duration::from_millis(120), "{elapsed:?}");
    // And nothing more after giving up; the next notification is tried afresh.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.attempts.load(Ordering::SeqCst), 5);
    handle.notify(view(2));
    wait_for(&handle, |s| s.failed == 2).await;
    assert_eq!(receiver.attempts.load(Ordering::SeqCst), 10);
    assert!(receiver.accepted.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_permanent_refusal_is_not_retried() {
    let (url, receiver) = start_receiver(u32::MAX, 404).await;
    let handle = spawn(url, fast(5));
    handle.notify(view(1));
    let stats = wait_for(&handle, |s| s.failed > 0).await;
    assert_eq!(stats.delivered, 0);
    assert_eq!(receiver.attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_silent_endpoint_times_out_and_notify_never_waits() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url: WebhookUrl = format!("http://{}/hook", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let connections = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let handle = spawn(
        url,
        WebhookOptions {
            attempts: 2,
            timeout: Duration::from_millis(300),
            queue: 2,
            ..fast(2)
        },
    );
    let started = Instant::now();
    for id in 0..10 {
        handle.notify(view(id));
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "notify waited: {:?}",
        started.elapsed()
    );
    // The delivery task has not run yet (this runtime has one thread and nothing yielded): two
    // fit in the queue, the rest are dropped; the two are each tried twice, and time out.
    let stats = wait_for(&handle, |s| s.failed == 2).await;
    assert_eq!(stats.delivered, 0);
    assert_eq!(stats.dropped, 8);
    assert_eq!(connections.load(Ordering::SeqCst), 4);
}
