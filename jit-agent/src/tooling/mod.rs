//! Policy tooling for admins, without a daemon and without root: what a policy decides for an
//! action and why (`explain`), whether it decides as expected (`test`), what a change would
//! have changed in recorded history (`replay`), rules proposed from reviewers' answers
//! (`suggest`), and warnings about rules that do not do what they seem to (`check --strict`).
//!
//! Every decision comes from the code the daemon compiles into the kernel and the matcher the
//! kernel runs ([`model`]); nothing here re-implements matching. See README, "Writing and
//! testing policies".
pub mod cases;
pub mod cli;
pub mod diagnostics;
pub mod explain;
pub mod lint;
pub mod model;
pub mod replay;
pub mod suggest;

use jiff::{Timestamp, Zoned};

/// `ts` as RFC 3339 in UTC, seconds precision (`2026-01-05T09:00:00Z`).
#[must_use]
pub fn rfc3339(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses an instant: RFC 3339 with an offset (`2026-03-29T01:30:00Z`,
/// `2026-03-29T03:30:00+02:00`), or a civil time in a time zone (`2026-03-29T02:30[Europe/Berlin]`;
/// a time the clocks skip or repeat there is taken as jiff does by default: the later of two,
/// or shifted forward over a gap).
///
/// # Errors
/// When the text is neither.
pub fn parse_instant(text: &str) -> Result<Timestamp, String> {
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts);
    }
    text.parse::<Zoned>().map(|z| z.timestamp()).map_err(|_| {
        format!(
            "`{text}` is not a time: use RFC 3339 with an offset (2026-03-29T01:30:00Z) or a \
             civil time and a zone (2026-03-29T02:30[Europe/Berlin])"
        )
    })
}
