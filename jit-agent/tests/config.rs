//! The daemon config file: defaults, the example file, precedence, and every error with its
//! position.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use jit_agent::{
    approval::webhook::WebhookUrl,
    audit::FsyncPolicy,
    config::{Config, ConfigError, HttpToken, LogFormat, Overrides},
};
use tracing::level_filters::LevelFilter;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("jit.toml"), text)
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn defaults() {
    let c = Config::resolve(None, Overrides::default()).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c, parse("").unwrap());
    assert_eq!(c.policy_dir, Path::new("/etc/jit/policies"));
    assert_eq!(c.audit.path, Path::new("/var/log/jit/audit.jsonl"));
    assert_eq!(c.audit.fsync, FsyncPolicy::Always);
    assert_eq!(c.audit.max_bytes, 64 << 20);
    assert_eq!(c.audit.keep, 8);
    assert_eq!(c.socket.path, Path::new("/run/jit/jit.sock"));
    assert_eq!(c.socket.mode, 0o600);
    assert_eq!(c.socket.group, None);
    assert_eq!(c.log.format, LogFormat::Human);
    assert_eq!(c.log.level, LevelFilter::INFO);
    assert!(!c.http.enabled);
    assert_eq!(
        c.http.listen,
        "127.0.0.1:7070".parse::<SocketAddr>().unwrap()
    );
    assert!(c.http.tokens.is_empty());
    assert_eq!(c.webhook.url, None);
    assert_eq!(c.bpffs, Path::new("/sys/fs/bpf/jit"));
    assert_eq!(c.cgroup_root, Path::new("/sys/fs/cgroup"));
    let o = c.audit.options();
    assert_eq!(
        (o.path, o.max_bytes, o.keep),
        (c.audit.path.clone(), 64 << 20, 8)
    );
}

#[test]
fn example_file_parses_to_the_defaults_plus_its_examples() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("jit-agent.example.toml");
    let c = Config::resolve(Some(&path), Overrides::default()).unwrap();
    let mut expected = Config::default();
    expected.http.tokens.push(HttpToken {
        name: "alice".into(),
        token_file: "/etc/jit/tokens/alice".into(),
    });
    assert_eq!(c, expected);

    // The commented webhook, metrics and export examples are valid too.
    let text = std::fs::read_to_string(&path).unwrap();
    let c = Config::parse(
        &path,
        &text
            .replace(
                "\n# listen = \"127.0.0.1:9464\"",
                "\nlisten = \"127.0.0.1:9464\"",
            )
            .replace("\n# journald = ", "\njournald = ")
            .replace("\n# syslog = ", "\nsyslog = "),
    )
    .unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(
        c.export.journald.as_deref(),
        Some(Path::new("/run/systemd/journal/socket"))
    );
    assert_eq!(
        c.export.syslog.map(|s| s.to_string()).as_deref(),
        Some("unix:/dev/log")
    );
    assert!(
        text.contains("\n# url = \"https://"),
        "the example lost its webhook url"
    );
    let c = Config::parse(&path, &text.replace("\n# url = ", "\nurl = ")).unwrap();
    let url = c.webhook.url.expect("webhook url");
    assert!(
        url.as_str()
            .starts_with("https://hooks.slack.com/services/")
    );
    assert_eq!(url.to_string(), "https://hooks.slack.com/…");
}

#[test]
fn every_key() {
    let c = parse(
        r#"
policy_dir = "/p"
bpffs = "/b"
cgroup_root = "/c"
[audit]
path = "/a/log"
fsync = "250ms"
max_bytes = 1048576
keep = 0
[socket]
path = "/s"
mode = "0660"
group = "jit-reviewers"
[log]
format = "json"
level = "debug"
[http]
enabled = true
listen = "[::1]:8080"
[[http.token]]
name = "alice"
token_file = "/t/alice"
[[http.token]]
name = "bob.smith"
token_file = "/t/bob"
[webhook]
url = "https://hooks.example.com/services/T0/B0/secret"
"#,
    )
    .unwrap();
    assert_eq!(c.policy_dir, Path::new("/p"));
    assert_eq!(c.bpffs, Path::new("/b"));
    assert_eq!(c.cgroup_root, Path::new("/c"));
    assert_eq!(c.audit.path, Path::new("/a/log"));
    assert_eq!(
        c.audit.fsync,
        FsyncPolicy::Interval(Duration::from_millis(250))
    );
    assert_eq!((c.audit.max_bytes, c.audit.keep), (1 << 20, 0));
    assert_eq!(c.socket.mode, 0o660);
    assert_eq!(c.socket.group.as_deref(), Some("jit-reviewers"));
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, LevelFilter::DEBUG);
    assert!(c.http.enabled);
    assert_eq!(c.http.listen, "[::1]:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(
        c.http
            .tokens
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["alice", "bob.smith"]
    );
    assert_eq!(
        c.webhook.url.as_ref().map(WebhookUrl::as_str),
        Some("https://hooks.example.com/services/T0/B0/secret")
    );
    assert_eq!(
        parse("[webhook]\nurl = \"http://127.0.0.1:9000/hook\"")
            .unwrap()
            .webhook
            .url
            .unwrap()
            .to_string(),
        "http://127.0.0.1:9000/…"
    );
    assert_eq!(parse("[webhook]").unwrap().webhook.url, None);
    assert_eq!(
        parse("[audit]\nfsync = \"never\"").unwrap().audit.fsync,
        FsyncPolicy::Never
    );
    assert_eq!(parse("[audit]\nmax_bytes = 0").unwrap().audit.max_bytes, 0);
    assert_eq!(
        parse("[audit]\nmax_bytes = \"2GiB\"")
            .unwrap()
            .audit
            .max_bytes,
        2 << 30
    );
    assert_eq!(
        parse("[socket]\nmode = \"600\"").unwrap().socket.mode,
        0o600
    );
}

#[test]
fn precedence_flags_over_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jit.toml");
    std::fs::write(
        &file,
        "policy_dir = \"/from/file\"\n[socket]\npath = \"/file.sock\"\n[log]\nformat = \"json\"\n",
    )
    .unwrap();

    let c = Config::resolve(Some(&file), Overrides::default()).unwrap();
    assert_eq!(c.policy_dir, Path::new("/from/file"));
    assert_eq!(c.socket.path, Path::new("/file.sock"));
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.audit.path, Path::new("/var/log/jit/audit.jsonl")); // default

    let c = Config::resolve(
        Some(&file),
        Overrides {
            policy_dir: Some("/from/flag".into()),
            audit_path: Some("/flag/audit.jsonl".into()),
            socket_path: Some("/flag.sock".into()),
            log_format: Some(LogFormat::Human),
        },
    )
    .unwrap();
    assert_eq!(c.policy_dir, Path::new("/from/flag"));
    assert_eq!(c.audit.path, Path::new("/flag/audit.jsonl"));
    assert_eq!(c.socket.path, Path::new("/flag.sock"));
    assert_eq!(c.log.format, LogFormat::Human);

    // Flags also apply without a file; relative flag paths are taken from the cwd.
    let c = Config::resolve(
        None,
        Overrides {
            policy_dir: Some("policies".into()),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(
        c.policy_dir,
        std::env::current_dir().unwrap().join("policies")
    );
    let e = Config::resolve(
        None,
        Overrides {
            socket_path: Some(PathBuf::new()),
            ..Overrides::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("--socket: : "), "{e}");
}

#[test]
fn missing_file_given_explicitly_is_an_error() {
    let e = Config::resolve(
        Some(Path::new("/nonexistent/jit.toml")),
        Overrides::default(),
    )
    .unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert_eq!(
        e.to_string(),
        "/nonexistent/jit.toml: cannot read the config file: No such file or directory (os \
         error 2)"
    );
}

/// Each invalid file and its exact error.
const ERROR_CASES: &[(&str, &str)] = &[
    // Syntax.
    (
        "policy_dir = ",
        "jit.toml:1:14: string values must be quoted, expected literal string",
    ),
    // Unknown keys, at top level and in a table.
    (
        "policy_dirs = \"/x\"",
        "jit.toml:1:1: unknown field `policy_dirs`, expected one of `policy_dir`, `audit`, \
             `socket`, `agent_socket`, `log`, `http`, `webhook`, `slack`, `metrics`, `export`, \
             `bpffs`, `cgroup_root`",
    ),
    (
        "[socket]\npath = \"/run/jit/jit.sock\"\n[agent_socket]\npath = \"/run/jit/jit.sock\"",
        "jit.toml:4:8: agent_socket.path is the control socket's path; the agent socket needs a \
         path of its own (such as /run/jit/agent.sock)",
    ),
    (
        "[audit]\nkeep = 2\nrotate = true",
        "jit.toml:3:1: unknown field `rotate`, expected one of `path`, `fsync`, `max_bytes`, \
             `keep`",
    ),
    (
        "[[http.token]]\nname = \"a\"\ntoken_file = \"/t\"\ntoken = \"secret\"",
        "jit.toml:4:1: unknown field `token`, expected `name` or `token_file`",
    ),
    (
        "[webhook]\nurl = \"https://h/x\"\nretries = 3",
        "jit.toml:3:1: unknown field `retries`, expected `url`",
    ),
    // Types and values.
    (
        "policy_dir = \"etc/jit\"",
        "jit.toml:1:14: path \"etc/jit\" must be absolute (start with `/`)",
    ),
    (
        "[audit]\npath = 5",
        "jit.toml:2:8: invalid type: integer `5`, expected a string",
    ),
    (
        "[audit]\nfsync = \"sometimes\"",
        "jit.toml:2:9: fsync \"sometimes\" is neither \"always\", \"never\" nor an interval \
             like \"1s\" or \"250ms\" (expected number at 0)",
    ),
    (
        "[audit]\nmax_bytes = 1000",
        "jit.toml:2:13: max_bytes 1000 is below the minimum of 65536 (64 KiB); use 0 to \
             disable rotation",
    ),
    (
        "[audit]\nmax_bytes = \"64MB\"",
        "jit.toml:2:13: size \"64MB\" is not a number followed by B, KiB, MiB or GiB",
    ),
    (
        "[audit]\nmax_bytes = -1",
        "jit.toml:2:13: max_bytes must not be negative",
    ),
    (
        "[audit]\nkeep = 1001",
        "jit.toml:2:8: keep 1001 is out of range: 0 to 1000 rotated files",
    ),
    (
        "[socket]\nmode = \"0999\"",
        "jit.toml:2:8: socket mode \"0999\" is not an octal permission string like \"0600\" \
             or \"0660\"",
    ),
    (
        "[socket]\nmode = 384",
        "jit.toml:2:8: invalid type: integer `384`, expected an octal mode string like \
             \"0600\"",
    ),
    (
        "[socket]\nmode = \"0666\"",
        "jit.toml:2:8: socket mode \"0666\" gives other users access to the control socket; \
             let reviewers in with `group` and a mode like \"0660\"",
    ),
    (
        "[socket]\ngroup = \"\"",
        "jit.toml:2:9: socket group must not be empty",
    ),
    (
        "[log]\nformat = \"xml\"",
        "jit.toml:2:10: unknown variant `xml`, expected `human` or `json`",
    ),
    (
        "[log]\nlevel = \"verbose\"",
        "jit.toml:2:9: log level \"verbose\" is not one of off, error, warn, info, debug, \
             trace",
    ),
    (
        "[http]\nlisten = \"localhost\"",
        "jit.toml:2:10: invalid socket address syntax",
    ),
    (
        "[http]\nenabled = true",
        "jit.toml:2:11: the HTTP API is enabled but has no [[http.token]]: no request could \
             authenticate",
    ),
    (
        "[[http.token]]\nname = \"a\"\ntoken_file = \"/t\"\n[[http.token]]\nname = \"a\"\ntoken_file = \"/u\"",
        "jit.toml:5:8: token name \"a\" is used twice; each reviewer needs one name",
    ),
    (
        "[[http.token]]\nname = \"al ice\"\ntoken_file = \"/t\"",
        "jit.toml:2:8: token name \"al ice\" must be 1 to 64 characters of letters, digits, \
             `_`, `-` and `.` (it names the reviewer in audit records)",
    ),
    (
        "[[http.token]]\nname = \"a\"",
        "jit.toml:1:1: missing field `token_file`",
    ),
    (
        "[[http.token]]\nname = \"a\"\ntoken_file = \"t\"",
        "jit.toml:3:14: path \"t\" must be absolute (start with `/`)",
    ),
    // The URL itself stays out of the messages: it may be a credential.
    (
        "[webhook]\nurl = \"ftp://files/secret\"",
        "jit.toml:2:7: webhook url must start with https:// (or http:// for a local relay)",
    ),
    (
        "[webhook]\nurl = \"hooks.slack.com/services/secret\"",
        "jit.toml:2:7: webhook url must start with https:// (or http:// for a local relay)",
    ),
    (
        "[webhook]\nurl = \"https:///secret\"",
        "jit.toml:2:7: webhook url is not a URL: invalid format",
    ),
    (
        "[webhook]\nurl = true",
        "jit.toml:2:7: invalid type: boolean `true`, expected a string",
    ),
];

#[test]
fn error_messages_with_positions() {
    let mut failures = Vec::new();
    for (text, expected) in ERROR_CASES {
        let got = err(text);
        if got != *expected {
            failures.push(format!(
                "{text:?}\n  expected: {expected}\n  got:      {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn errors_from_a_file_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "# comment\n\n[log]\n  level = \"loud\"\n").unwrap();
    let e = Config::resolve(Some(&file), Overrides::default()).unwrap_err();
    assert!(matches!(
        e,
        ConfigError::Invalid {
            line: 4,
            column: 11,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        format!(
            "{}:4:11: log level \"loud\" is not one of off, error, warn, info, debug, trace",
            file.display()
        )
    );
}

#[test]
fn review_page_tls_and_slack() {
    let c = parse(
        r#"
[http]
enabled = true
listen = "0.0.0.0:7443"
web = true
tls_cert = "/etc/jit/tls/cert.pem"
tls_key = "/etc/jit/tls/key.pem"
[[http.token]]
name = "alice"
token_file = "/etc/jit/tokens/alice"
[slack]
channel = "C0123"
bot_token_file = "/etc/jit/slack-bot-token"
signing_secret_file = "/etc/jit/slack-signing-secret"
[slack.users]
U0ALICE = "alice"
"#,
    )
    .unwrap();
    assert!(c.http.web);
    assert_eq!(
        c.http.tls,
        Some((
            PathBuf::from("/etc/jit/tls/cert.pem"),
            PathBuf::from("/etc/jit/tls/key.pem")
        ))
    );
    let slack = c.slack.unwrap();
    assert_eq!(slack.api_url, "https://slack.com/api");
    assert_eq!(slack.channel, "C0123");
    assert_eq!(slack.users, vec![("U0ALICE".into(), "alice".into())]);

    // The page beyond loopback without TLS: refused, at the listen address.
    let e = err("[http]\nlisten = \"0.0.0.0:7070\"\nweb = true");
    assert!(
        e.starts_with("jit.toml:2:10: the review page (http.web) would be served without TLS"),
        "{e}"
    );
    // On loopback it is fine without TLS.
    assert!(parse("[http]\nweb = true").unwrap().http.web);
    // One of the pair alone.
    let e = err("[http]\ntls_cert = \"/c.pem\"");
    assert!(
        e.contains("http.tls_cert and http.tls_key go together"),
        "{e}"
    );
    // Slack without the listener its clicks arrive at.
    let e = err("[slack]\nchannel = \"C1\"\nbot_token_file = \"/b\"\nsigning_secret_file = \"/s\"");
    assert!(e.contains("[slack] needs the HTTP listener"), "{e}");
}

#[test]
fn a_bad_syslog_target_is_named_with_its_position() {
    let path = Path::new("/etc/jit/jit-agent.toml");
    let err = Config::parse(path, "[export]\nsyslog = \"tcp:1.2.3.4:514\"\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("jit-agent.toml:2:"), "{text}");
    assert!(
        text.contains("expected unix:/dev/log or udp:IP:PORT"),
        "{text}"
    );
    let err = Config::parse(path, "[export]\nsyslog = \"unix:dev/log\"\n").unwrap_err();
    assert!(err.to_string().contains("must be absolute"), "{err}");
    let c = Config::parse(path, "[export]\nsyslog = \"udp:[::1]:514\"\n").unwrap();
    assert_eq!(c.export.syslog.unwrap().to_string(), "udp:[::1]:514");
}
