//! The agent socket protocol: what an agent may ask jit about itself (`jitctl agent ...`).
//!
//! One JSON request per line, one JSON response per line, on a Unix socket separate from the
//! control socket (`[agent_socket]`, default `/run/jit/agent.sock`; `jitctl run` puts its path
//! in `JIT_AGENT_SOCKET`). The daemon identifies the caller's agent from the kernel (the cgroup
//! of the process that connected and wrote the request, see `daemon::peer`), never from the
//! request, and answers only about that agent. Nothing here can approve, deny, extend or
//! re-prioritise a hold: the requests are `why`, `pending` and `justify`, and a justification
//! is only text shown to reviewers, marked as agent-provided.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Longest request line the daemon reads, in bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Longest justification, in bytes of UTF-8 as the agent sent it (before escaping).
pub const MAX_JUSTIFICATION: usize = 500;
/// Records `why` returns when the request says no `last`.
pub const DEFAULT_LAST: usize = 10;
/// Records the daemon keeps per agent (and so the most `why` can return).
pub const MAX_LAST: usize = 100;
/// Justifications one agent may send within [`JUSTIFY_WINDOW`] (accepted ones count).
pub const JUSTIFY_BURST: usize = 5;
/// The window of the justification rate limit.
pub const JUSTIFY_WINDOW: Duration = Duration::from_mins(1);

/// What an agent asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentRequest {
    /// The agent's most recent denials and holds, newest first (`last`: how many, default
    /// [`DEFAULT_LAST`], at most [`MAX_LAST`]).
    Why {
        #[serde(default)]
        last: Option<usize>,
    },
    /// The agent's held actions still waiting for a reviewer.
    Pending,
    /// Attach `text` to the agent's own pending hold `id`, for reviewers to read.
    Justify { id: u64, text: String },
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AgentResponse {
    Why {
        /// The caller's agent, as the kernel identified it.
        agent: String,
        records: Vec<AgentRecord>,
    },
    Pending {
        agent: String,
        holds: Vec<AgentHold>,
    },
    /// The justification is attached (and audited): `text` as reviewers see it, escaped.
    Justified { id: u64, text: String },
    /// The request was refused or failed; `error` says why.
    Error { error: String },
}

/// One denial or hold of the agent, as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// When the daemon read the event (RFC 3339).
    pub at: String,
    /// `deny` (the action failed with `EPERM`) or `hold` (it waited for a reviewer).
    pub kind: String,
    pub op: String,
    /// Escaped ([`crate::text`]): safe to print.
    pub path: String,
    /// The rule that decided; `None`: the agent's default decision (or self-protection).
    pub rule: Option<String>,
    /// The policy author's hint for that rule.
    pub hint: Option<String>,
    /// For a hold: the id `justify` takes.
    pub request_id: Option<u64>,
    pub pid: u32,
}

/// One of the agent's own pending holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHold {
    pub id: u64,
    pub op: String,
    /// Escaped ([`crate::text`]).
    pub path: String,
    pub rule: Option<String>,
    pub hint: Option<String>,
    pub pid: u32,
    pub held_at: String,
    pub age_secs: u64,
    /// Seconds until `on_timeout` applies.
    pub timeout_in_secs: u64,
    pub on_timeout: String,
    /// The justification attached so far, if any.
    pub justification: Option<crate::approval::Justification>,
}

/// Why a justification was not attached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum JustifyError {
    /// Not a pending hold of the caller's agent (whether it exists for another agent is not
    /// said).
    #[error("request {0} is not a pending hold of your agent")]
    NotYours(u64),
    #[error(
        "too many justifications: at most {burst} per {window_secs} s per agent; try again in \
         {retry_in_secs} s"
    )]
    RateLimited {
        burst: usize,
        window_secs: u64,
        retry_in_secs: u64,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The justification as it is stored and shown: refused when empty or longer than
/// [`MAX_JUSTIFICATION`] bytes, then [escaped](crate::text::escape) so that no control
/// character, escape sequence or invisible character reaches a reviewer's terminal, a webhook
/// receiver or the audit log as itself. (Invalid UTF-8 never gets here: a request line that is
/// not UTF-8 is not JSON and is refused as malformed.)
///
/// # Errors
/// [`JustifyError::Invalid`] saying what is wrong.
pub fn justification_text(raw: &str) -> Result<String, JustifyError> {
    if raw.trim().is_empty() {
        return Err(JustifyError::Invalid(
            "the justification is empty: say why the action is needed".to_owned(),
        ));
    }
    if raw.len() > MAX_JUSTIFICATION {
        return Err(JustifyError::Invalid(format!(
            "the justification is {} bytes long; at most {MAX_JUSTIFICATION}",
            raw.len()
        )));
    }
    Ok(crate::text::escape(raw).into_owned())
}

/// Parses one request line. Invalid UTF-8, unknown commands and unknown fields are errors.
///
/// # Errors
/// The message the daemon answers with.
pub fn parse_request(line: &[u8]) -> Result<AgentRequest, String> {
    if std::str::from_utf8(line).is_err() {
        return Err("malformed request: not UTF-8 (requests are JSON)".to_owned());
    }
    serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))
}

/// How many records a `why` with `last` returns.
#[must_use]
pub fn clamp_last(last: Option<usize>) -> usize {
    last.unwrap_or(DEFAULT_LAST).clamp(1, MAX_LAST)
}

/// Errors of a client call.
#[derive(Debug, thiserror::Error)]
pub enum AgentClientError {
    #[error(
        "cannot connect to jit's agent socket at {path}: {source} (is this process run by \
         `jitctl run`? it sets {env})"
    )]
    Connect {
        path: String,
        env: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to jit failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("jit sent an answer this client does not understand: {0}")]
    Protocol(#[from] serde_json::Error),
    #[error("jit closed the connection without an answer")]
    NoAnswer,
}

/// Sends `request` on the agent socket at `socket` and waits (at most `timeout`) for the answer.
///
/// # Errors
/// When the socket cannot be reached or answers nonsense.
pub fn call(
    socket: &Path,
    request: &AgentRequest,
    timeout: Duration,
) -> Result<AgentResponse, AgentClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| AgentClientError::Connect {
        path: socket.display().to_string(),
        env: crate::config::AGENT_SOCKET_ENV,
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(AgentClientError::NoAnswer);
    }
    Ok(serde_json::from_str(&answer)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        assert_eq!(
            parse_request(br#"{"cmd":"why"}"#),
            Ok(AgentRequest::Why { last: None })
        );
        assert_eq!(
            parse_request(br#"{"cmd":"why","last":3}"#),
            Ok(AgentRequest::Why { last: Some(3) })
        );
        assert_eq!(
            parse_request(br#"{"cmd":"pending"}"#),
            Ok(AgentRequest::Pending)
        );
        assert_eq!(
            parse_request(br#"{"cmd":"justify","id":7,"text":"needed for the release"}"#),
            Ok(AgentRequest::Justify {
                id: 7,
                text: "needed for the release".to_owned()
            })
        );
        // Nothing that decides exists on this socket, under any spelling.
        for line in [
            &br#"{"cmd":"decide","id":7,"action":{"action":"approve","once":true,"for_secs":null}}"#[..],
            br#"{"cmd":"approve","id":7}"#,
            br#"{"cmd":"extend","id":7}"#,
            br#"{"cmd":"justify","id":7,"text":"x","priority":1}"#,
            br#"{"cmd":"justify","id":7,"text":"x","approve":true}"#,
            b"not json",
            b"",
        ] {
            assert!(parse_request(line).is_err(), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn invalid_utf8_and_lone_surrogates_are_refused() {
        let err = parse_request(b"{\"cmd\":\"justify\",\"id\":1,\"text\":\"a\xff\"}").unwrap_err();
        assert!(err.contains("not UTF-8"), "{err}");
        // A JSON escape of half a surrogate pair is not a string either.
        assert!(parse_request(br#"{"cmd":"justify","id":1,"text":"a\udc80"}"#).is_err());
    }

    #[test]
    fn justifications_are_bounded_and_escaped() {
        assert_eq!(
            justification_text("deploy the hotfix for INC-42").unwrap(),
            "deploy the hotfix for INC-42"
        );
        let shown = justification_text("ok\n\x1b[2J\x1b[1Aapproved by root\u{202e}").unwrap();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(!shown.contains('\u{202e}'), "{shown:?}");
        assert!(
            shown.contains("\\n") && shown.contains("\\x1b"),
            "{shown:?}"
        );
        assert!(matches!(
            justification_text(&"x".repeat(MAX_JUSTIFICATION + 1)),
            Err(JustifyError::Invalid(_))
        ));
        assert!(justification_text(&"x".repeat(MAX_JUSTIFICATION)).is_ok());
        assert!(matches!(
            justification_text(" \t "),
            Err(JustifyError::Invalid(_))
        ));
    }

    #[test]
    fn last_is_clamped() {
        assert_eq!(clamp_last(None), DEFAULT_LAST);
        assert_eq!(clamp_last(Some(0)), 1);
        assert_eq!(clamp_last(Some(1_000_000)), MAX_LAST);
    }
}
