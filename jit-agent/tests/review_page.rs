//! The review page's server side, served for real on a loopback port (plain and TLS) in front of
//! a fake kernel backend (`support/fake_holds.rs`), driven by a real HTTP client: off by
//! default, sign-in, the cookie's attributes, CSRF on every state-changing request, the cards'
//! escaping, sign-out. The page itself runs in a browser in `review_page_browser.rs`.

#[path = "support/fake_holds.rs"]
mod fake_holds;

use std::{sync::Arc, time::Duration};

use fake_holds::{FakeHolds, view, write_token};
use jit_agent::approval::{
    ApprovalService, ReviewAction,
    http::{ServeOptions, Tokens, serve_with},
    tls::Tls,
    web::Card,
};
use serde_json::{Value, json};

const ALICE: &str = "alice-page-0123456789abcdef";

struct Page {
    base: String,
    service: Arc<FakeHolds>,
    _dir: tempfile::TempDir,
}

async fn start(web: bool, tls: bool) -> (Page, Option<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::load(&[write_token(dir.path(), "alice", ALICE)]).unwrap();
    let service = Arc::new(FakeHolds::default());
    service.hold(view(1, "/usr/bin/curl"));
    let mut hostile = view(2, "/tmp/a\u{1b}[2Kb\u{202e}c");
    hostile.agent = "<b>x</b>".into();
    service.hold(hostile);
    let (tls, cert) = if tls {
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl makes the test certificate");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        (
            Some(Tls::load(&cert, &key).unwrap()),
            Some(std::fs::read(&cert).unwrap()),
        )
    } else {
        (None, None)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://{}", listener.local_addr().unwrap());
    let svc: Arc<dyn ApprovalService> = service.clone();
    let options = ServeOptions {
        web,
        tls,
        slack: None,
    };
    tokio::spawn(async move {
        serve_with(listener, tokens, svc, options, std::future::pending())
            .await
            .unwrap();
    });
    (
        Page {
            base,
            service,
            _dir: dir,
        },
        cert,
    )
}

fn agent(cert: Option<&[u8]>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)));
    if let Some(pem) = cert {
        let cert = ureq::tls::Certificate::from_pem(pem).unwrap();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                .build(),
        );
    }
    config.build().into()
}

/// status, headers, body of one request (on the blocking pool).
async fn request(
    agent: &ureq::Agent,
    method: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
) -> (u16, ureq::http::HeaderMap, String) {
    let agent = agent.clone();
    tokio::task::spawn_blocking(move || {
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        let request = builder.body(body.unwrap_or_default()).unwrap();
        let mut response = agent.run(request).unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, headers, text)
    })
    .await
    .unwrap()
}

/// Signs in: the cookie pair to send back, the CSRF token, and the `Set-Cookie` line.
async fn sign_in(agent: &ureq::Agent, base: &str) -> (String, String, String) {
    let (status, headers, body) = request(
        agent,
        "POST",
        format!("{base}/ui/login"),
        vec![("content-type", "application/json".into())],
        Some(json!({ "token": ALICE }).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let set_cookie = headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["reviewer"], "alice");
    (pair, body["csrf"].as_str().unwrap().to_owned(), set_cookie)
}

#[tokio::test]
async fn the_page_is_off_by_default() {
    let (page, _) = start(false, false).await;
    let agent = agent(None);
    for path in ["/", "/ui/app.js", "/ui/pending"] {
        let (status, _, _) =
            request(&agent, "GET", format!("{}{path}", page.base), vec![], None).await;
        assert_eq!(status, 401, "{path} is served without http.web");
    }
}

#[tokio::test]
async fn the_page_and_its_assets_come_from_the_binary_with_a_strict_policy() {
    let (page, _) = start(true, false).await;
    let agent = agent(None);
    let (status, headers, body) = request(&agent, "GET", page.base.clone(), vec![], None).await;
    assert_eq!(status, 200);
    assert!(body.contains("<script src=\"/ui/app.js\""));
    // No third-party asset: every URL in the page is this origin's.
    assert!(!body.contains("http://") && !body.contains("https://"));
    let csp = headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let (status, _, js) = request(
        &agent,
        "GET",
        format!("{}/ui/app.js", page.base),
        vec![],
        None,
    )
    .await;
    assert_eq!(status, 200);
    for markup in [
        ".innerHTML",
        ".outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(
            !js.contains(markup),
            "the page must never parse strings as markup ({markup})"
        );
    }
    // The JSON API keeps its bearer tokens, unknown routes too.
    let (status, _, _) = request(
        &agent,
        "GET",
        format!("{}/v1/pending", page.base),
        vec![],
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = request(&agent, "GET", format!("{}/nope", page.base), vec![], None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn sign_in_cookie_csrf_and_sign_out() {
    let (page, _) = start(true, false).await;
    let agent = agent(None);
    let base = &page.base;
    // Not signed in: nothing.
    let (status, _, _) = request(&agent, "GET", format!("{base}/ui/pending"), vec![], None).await;
    assert_eq!(status, 401);
    // A wrong token, and a form post (what a cross-site page could send), are refused.
    let (status, headers, _) = request(
        &agent,
        "POST",
        format!("{base}/ui/login"),
        vec![("content-type", "application/json".into())],
        Some(json!({ "token": "guess" }).to_string()),
    )
    .await;
    assert_eq!(status, 401);
    assert!(headers.get("set-cookie").is_none());
    let (status, _, _) = request(
        &agent,
        "POST",
        format!("{base}/ui/login"),
        vec![("content-type", "application/x-www-form-urlencoded".into())],
        Some(format!("token={ALICE}")),
    )
    .await;
    assert_eq!(status, 415);

    let (cookie, csrf, set_cookie) = sign_in(&agent, base).await;
    assert!(set_cookie.starts_with("jit_session="));
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: no Secure");
    assert!(!set_cookie.contains(ALICE), "the token is not the cookie");

    // The cards, escaped.
    let (status, _, body) = request(
        &agent,
        "GET",
        format!("{base}/ui/pending"),
        vec![("cookie", cookie.clone())],
        None,
    )
    .await;
    assert_eq!(status, 200);
    let cards: Vec<Card> = serde_json::from_str(&body).unwrap();
    assert_eq!(cards.len(), 2);
    assert_eq!(cards[0].id, "1");
    assert_eq!(
        cards[0].runs.as_deref(),
        Some("curl -fsSL https://example.com/install.sh")
    );
    assert_eq!(cards[1].path, "/tmp/a\\x1b[2Kb\\u{202e}c");
    assert_eq!(
        cards[1].agent, "<b>x</b>",
        "escaped for a terminal, shown as text by the page"
    );

    let auth = vec![
        ("cookie", cookie.clone()),
        ("content-type", "application/json".to_owned()),
        ("x-csrf-token", csrf),
    ];
    // Sign-out ends the session for good.
    let (status, _, _) = request(&agent, "POST", format!("{base}/ui/logout"), auth, None).await;
    assert_eq!(status, 204);
    let (status, _, _) = request(
        &agent,
        "GET",
        format!("{base}/ui/pending"),
        vec![("cookie", cookie)],
        None,
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_land_in_history() {
    let (page, _) = start(true, false).await;
    let agent = agent(None);
    let base = &page.base;
    let (cookie, csrf, _) = sign_in(&agent, base).await;
    // State changes need the CSRF token: without it, or with another, nothing is decided.
    let deny = format!("{base}/ui/pending/1/deny");
    let body = Some(json!({ "reason": "no" }).to_string());
    let json_ct = ("content-type", "application/json".to_owned());
    for headers in [
        vec![("cookie", cookie.clone()), json_ct.clone()],
        vec![
            ("cookie", cookie.clone()),
            json_ct.clone(),
            ("x-csrf-token", "0".repeat(64)),
        ],
    ] {
        let (status, _, _) = request(&agent, "POST", deny.clone(), headers, body.clone()).await;
        assert_eq!(status, 403);
    }
    // Nor does the CSRF token alone, without the session.
    let (status, _, _) = request(
        &agent,
        "POST",
        deny.clone(),
        vec![json_ct.clone(), ("x-csrf-token", csrf.clone())],
        body.clone(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(page.service.decisions().is_empty());

    let auth = vec![
        ("cookie", cookie.clone()),
        json_ct.clone(),
        ("x-csrf-token", csrf.clone()),
    ];
    let (status, _, answer) = request(&agent, "POST", deny, auth.clone(), body).await;
    assert_eq!(status, 200, "{answer}");
    let decisions = page.service.decisions();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].action, ReviewAction::Deny);
    assert_eq!(decisions[0].reviewer.name, "alice");
    assert_eq!(decisions[0].reviewer.channel, "web");
    assert_eq!(decisions[0].reason.as_deref(), Some("no"));

    // Approve for a duration; a bad duration is refused.
    let approve = format!("{base}/ui/pending/2/approve");
    let (status, _, _) = request(
        &agent,
        "POST",
        approve.clone(),
        auth.clone(),
        Some(r#"{"for":"soon"}"#.into()),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = request(
        &agent,
        "POST",
        approve,
        auth.clone(),
        Some(r#"{"for":"15m"}"#.into()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        page.service.decisions()[1].action,
        ReviewAction::Approve {
            once: false,
            for_secs: Some(900)
        }
    );

    // The history has both, newest first, and filters.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, _, body) = request(
        &agent,
        "GET",
        format!("{base}/ui/history"),
        vec![("cookie", cookie.clone())],
        None,
    )
    .await;
    let history: Vec<Value> = serde_json::from_str(&body).unwrap();
    let decisions: Vec<_> = history
        .iter()
        .map(|h| h["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["approve", "deny"]);
    let (_, _, body) = request(
        &agent,
        "GET",
        format!("{base}/ui/history?decision=deny&agent=coding-agent&op=exec"),
        vec![("cookie", cookie.clone())],
        None,
    )
    .await;
    let history: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["reason"], "no");
}

#[tokio::test]
async fn over_tls_the_cookie_is_secure_and_plain_http_gets_nothing() {
    let (page, cert) = start(true, true).await;
    let agent = agent(cert.as_deref());
    let (cookie, _, set_cookie) = sign_in(&agent, &page.base).await;
    assert!(
        set_cookie.starts_with("__Host-jit_session="),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    let (status, _, body) = request(
        &agent,
        "GET",
        format!("{}/ui/pending", page.base),
        vec![("cookie", cookie)],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Vec<Card>>(&body).unwrap().len(), 2);
    // The bearer API works over TLS as well.
    let (status, _, _) = request(
        &agent,
        "GET",
        format!("{}/v1/pending", page.base),
        vec![("authorization", format!("Bearer {ALICE}"))],
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Plain HTTP on the TLS port: no answer.
    let plain = page.base.replace("https://", "http://");
    let result = tokio::task::spawn_blocking(move || {
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent()
            .get(&plain)
            .call()
    })
    .await
    .unwrap();
    assert!(
        result.is_err(),
        "plain HTTP was answered on the TLS listener"
    );
}
