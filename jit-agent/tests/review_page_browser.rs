//! The review page in a real browser: headless Chromium, driven through Debian's chromedriver
//! with a W3C `WebDriver` client (fantoccini), against the daemon's HTTP listener served for real on a loopback
//! port in this process, in front of a fake kernel backend (`support/fake_holds.rs`).
//!
//! These tests do not skip: without `chromedriver` (Debian's `chromium-driver`, installed by
//! `cargo xtask setup`) they fail and say what to install.

#[path = "support/fake_holds.rs"]
mod fake_holds;

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use fake_holds::{FakeHolds, view, write_token};
use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use jit_agent::approval::{
    ApprovalService, ReviewAction,
    http::{ServeOptions, Tokens, serve_with},
};
use serde_json::json;

const ALICE: &str = "alice-browser-0123456789abcdef";
/// How long the page gets to show a change.
const PATIENCE: Duration = Duration::from_secs(15);

/// One browser at a time: the machine is small, and Chromium is not.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
}

/// chromedriver on a free loopback port, ended when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let Some(chromedriver) = find_program("chromedriver") else {
        panic!(
            "chromedriver is not installed: the review page's browser tests need Debian's \
             `chromium` and `chromium-driver` (`cargo xtask setup` installs them, or \
             `apt-get install chromium chromium-driver`)"
        );
    };
    assert!(
        find_program("chromium").is_some(),
        "chromium is not installed: `apt-get install chromium` (or `cargo xtask setup`)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    driver
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let args = [
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--window-size=1100,1000".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": find_program("chromium").unwrap(), "args": args }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session with headless Chromium")
}

/// The listener with the review page, in front of `service`.
async fn serve_page(service: Arc<FakeHolds>, dir: &std::path::Path) -> String {
    let tokens = Tokens::load(&[
        write_token(dir, "alice", ALICE),
        write_token(dir, "bob", "bob-browser-0123456789abcdef"),
    ])
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service: Arc<dyn ApprovalService> = service;
    let options = ServeOptions {
        web: true,
        ..ServeOptions::default()
    };
    tokio::spawn(async move {
        serve_with(listener, tokens, service, options, std::future::pending())
            .await
            .unwrap();
    });
    base
}

async fn wait_for(client: &Client, css: &str) -> Element {
    client
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("the page never showed {css}: {e}"))
}

/// Waits until no element matches `css`.
async fn wait_gone(client: &Client, css: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if client.find_all(Locator::Css(css)).await.unwrap().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{css} is still on the page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the text of `css` contains `needle`.
async fn wait_text(client: &Client, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = match client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never said {needle:?}; it says {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(client: &Client, base: &str) {
    client.goto(base).await.unwrap();
    let token = wait_for(client, "#login-view:not([hidden]) #token").await;
    token.send_keys(ALICE).await.unwrap();
    client
        .find(Locator::Css("#login-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(client, "#who", "signed in as alice").await;
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

/// A hold whose agent-made strings try to become markup and to hide characters.
fn hostile_view(id: u64) -> jit_agent::approval::PendingView {
    let mut hostile = view(id, "/tmp/<img src=x onerror=alert(1)>\u{202e}gpj.sh");
    hostile.agent = "agent<b>bold</b>".into();
    hostile.op = "write".into();
    hostile.exec_argv = None;
    hostile.exec_env = None;
    hostile.risk = Some("medium".into());
    hostile.justification = Some(jit_agent::approval::Justification {
        text: "<script>alert(2)</script> trust me".into(),
        source: "agent".into(),
        pid: 4242,
        at: "2026-01-02T09:14:05Z".into(),
    });
    hostile
}

#[tokio::test]
async fn a_hold_appears_live_is_approved_with_a_reason_and_disappears() {
    let _one = BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(FakeHolds::default());
    let base = serve_page(Arc::clone(&service), dir.path()).await;
    let driver = start_driver();
    let client = browser(&driver, &dir.path().join("profile")).await;

    sign_in(&client, &base).await;
    wait_text(&client, "#empty", "Nothing is held").await;

    // Two holds arrive while the page is open: they appear without a reload (SSE).
    service.hold(view(7001, "/usr/bin/curl"));
    service.hold(hostile_view(7002));
    let card = wait_for(&client, r#"article[data-id="7001"]"#).await;
    wait_for(&client, r#"article[data-id="7002"]"#).await;
    wait_text(&client, "#count", "2").await;

    // Every field the card promises.
    let text = card.text().await.unwrap();
    for field in [
        "exec /usr/bin/curl",
        "risk high",
        "coding-agent",
        "network tools need a reviewer",
        "curl -fsSL https://example.com/install.sh",
        "API_KEY=<hidden>",
        "bash ./setup.sh",
        "/srv/work/app",
        "dev (uid 1000)",
        "4190 bash /usr/bin/bash",
        "alice, group:oncall",
        "0 of 1",
        "deny in",
    ] {
        assert!(text.contains(field), "card lacks {field:?}:\n{text}");
    }

    // Agent-made strings are text, never markup: no element was made of them, and the
    // bidirectional override is shown escaped.
    let hostile_card = client
        .find(Locator::Css(r#"article[data-id="7002"]"#))
        .await
        .unwrap();
    let hostile_text = hostile_card.text().await.unwrap();
    assert!(hostile_text.contains("/tmp/<img src=x onerror=alert(1)>\\u{202e}gpj.sh"));
    assert!(hostile_text.contains("agent<b>bold</b>"));
    assert!(hostile_text.contains("<script>alert(2)</script> trust me"));
    assert!(hostile_text.contains("unverified"));
    assert!(
        client
            .find_all(Locator::Css("#cards img, #cards b, #cards script"))
            .await
            .unwrap()
            .is_empty(),
        "an agent-made string became markup"
    );

    let shot = client.screenshot().await.unwrap();
    let path = target_dir().join("review-page.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &shot).unwrap();

    // Approve once, with a reason.
    client
        .find(Locator::Css("#reason-7001"))
        .await
        .unwrap()
        .send_keys("install script reviewed")
        .await
        .unwrap();
    client
        .find(Locator::Css(
            r#"article[data-id="7001"] button[data-action="approve-once"]"#,
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_gone(&client, r#"article[data-id="7001"]"#).await;
    wait_text(&client, "#status", "Request 7001 approved").await;
    let decisions = service.decisions();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].id, 7001);
    assert_eq!(
        decisions[0].action,
        ReviewAction::Approve {
            once: true,
            for_secs: None
        }
    );
    assert_eq!(decisions[0].reviewer.name, "alice");
    assert_eq!(decisions[0].reviewer.channel, "web");
    assert_eq!(
        decisions[0].reason.as_deref(),
        Some("install script reviewed")
    );

    // A hold that ends elsewhere (the process went away) leaves the page by itself too.
    service.end(7002, "the held process exited");
    wait_gone(&client, r#"article[data-id="7002"]"#).await;
    wait_text(&client, "#count", "0").await;

    client.close().await.unwrap();
}

#[tokio::test]
async fn a_hold_is_denied_from_the_keyboard_refused_to_a_non_approver_and_kept_in_history() {
    let _one = BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(FakeHolds::default());
    // One held before the page opens, one only bob may decide.
    let mut bobs = view(8002, "/usr/bin/ssh");
    bobs.approvers = vec!["bob".into()];
    service.hold(bobs);
    let base = serve_page(Arc::clone(&service), dir.path()).await;
    let driver = start_driver();
    let client = browser(&driver, &dir.path().join("profile")).await;
    client.set_window_size(400, 900).await.unwrap();

    sign_in(&client, &base).await;
    wait_for(&client, r#"article[data-id="8002"]"#).await;
    service.hold(view(8001, "/usr/bin/wget"));
    wait_for(&client, r#"article[data-id="8001"]"#).await;

    // Deny 8001 from the keyboard: type the reason, focus Deny, press Enter.
    client
        .find(Locator::Css("#reason-8001"))
        .await
        .unwrap()
        .send_keys("not from this host")
        .await
        .unwrap();
    let deny = client
        .find(Locator::Css(
            r#"article[data-id="8001"] button[data-action="deny"]"#,
        ))
        .await
        .unwrap();
    client
        .execute(
            "arguments[0].focus()",
            vec![serde_json::to_value(&deny).unwrap()],
        )
        .await
        .unwrap();
    deny.send_keys("\u{E007}").await.unwrap();
    wait_gone(&client, r#"article[data-id="8001"]"#).await;
    let decisions = service.decisions();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].action, ReviewAction::Deny);
    assert_eq!(decisions[0].reason.as_deref(), Some("not from this host"));

    // alice is not among 8002's approvers: the service refuses, the page says so, the hold
    // stays.
    client
        .find(Locator::Css(
            r#"article[data-id="8002"] button[data-action="approve-for"]"#,
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#status.error", "may not decide").await;
    assert_eq!(service.decisions().len(), 1);
    assert_eq!(service.pending().len(), 1);
    wait_for(&client, r#"article[data-id="8002"]"#).await;

    // The history view lists the denial, and filters.
    client
        .find(Locator::Css("#tab-history"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let row = wait_text(&client, "#history tbody", "not from this host").await;
    assert!(row.contains("deny") && row.contains("alice") && row.contains("/usr/bin/wget"));
    let select = client.find(Locator::Css("#f-decision")).await.unwrap();
    select.select_by_value("approve").await.unwrap();
    client
        .find(Locator::Css("#history-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#history tbody", "No decisions match").await;

    let shot = client.screenshot().await.unwrap();
    std::fs::write(target_dir().join("review-page-phone.png"), &shot).unwrap();
    client.close().await.unwrap();
}
