//! The HTTP API out of file descriptors: accepting fails with `EMFILE` while the process has
//! none left; the server waits with a bounded backoff (no spinning: little CPU used) and serves
//! the waiting client as soon as descriptors are free again. Its own test binary: it lowers the
//! process's descriptor limit.
use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::PermissionsExt as _,
    sync::Arc,
    time::Duration,
};

use jit_agent::{
    approval::{ApprovalService, DecideError, Decided, PendingView, ReviewAction, Reviewer, http},
    config::HttpToken,
};
use tokio::sync::broadcast;

const TOKEN: &str = "alice-0123456789abcdef";

struct Empty(broadcast::Sender<String>);

impl ApprovalService for Empty {
    fn pending(&self) -> Vec<PendingView> {
        Vec::new()
    }

    fn decide(
        &self,
        id: u64,
        _: &Reviewer,
        _: ReviewAction,
        _: Option<String>,
    ) -> Result<Decided, DecideError> {
        Err(DecideError::NotPending(id))
    }

    fn subscribe(&self) -> broadcast::Receiver<String> {
        self.0.subscribe()
    }
}

/// CPU time (user + system) this process used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) },
        0
    );
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.unsigned_abs())
            + Duration::from_micros(t.tv_usec.unsigned_abs())
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[tokio::test]
async fn out_of_descriptors_the_server_waits_without_spinning_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("alice");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tokens = http::Tokens::load(&[HttpToken {
        name: "alice".into(),
        token_file,
    }])
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service: Arc<dyn ApprovalService> = Arc::new(Empty(broadcast::channel(4).0));
    tokio::spawn(async move { http::serve(listener, tokens, service).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Use up every descriptor, then give one back for the client's socket: the server's
    // accept has none.
    let mut fill = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => fill.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
        assert!(fill.len() < 1_000_000, "no descriptor limit?");
    }
    fill.pop();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            stream,
            "GET /v1/pending HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: \
             close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    });
    let before = cpu_time();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let used = cpu_time().saturating_sub(before);
    assert!(!client.is_finished(), "answered without a descriptor?");
    drop(fill);
    let answer = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("[]"), "{answer}");
    // A spinning accept loop burns a whole core for the 1.5 s.
    assert!(
        used < Duration::from_millis(500),
        "{used:?} of CPU in 1.5 s while out of descriptors"
    );
}
