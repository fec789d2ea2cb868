//! Showing untrusted text to humans.
//!
//! Paths, argument vectors, executable names, working directories and parent names are chosen
//! by the agent (it names its files and its processes); rules, reasons and reviewer names come
//! from people who are not the terminal's owner either. Printed as they are, a carriage return
//! or a terminal escape sequence in any of them can overwrite what a reviewer sees — a review
//! card whose `runs:` line shows a harmless command while another one runs.
//!
//! Every human output (`jitctl pending`, `jitctl audit`, the webhook's text) goes through
//! [`escape`] or [`escape_bytes`]; JSON outputs stay exact (JSON escapes control characters
//! itself). The escaping is *injective*: different inputs never look the same, so a literal
//! backslash is shown as `\\` (otherwise a real newline, shown as `\n`, could pass for the two
//! characters `\` `n` in a `sh -c` argument). What is escaped:
//!
//! | input | shown as |
//! | --- | --- |
//! | `\` | `\\` |
//! | newline, carriage return, tab | `\n`, `\r`, `\t` |
//! | other C0 controls (U+0000–U+001F), DEL (U+007F) | `\xNN` (`\x1b` for ESC) |
//! | C1 controls (U+0080–U+009F, e.g. the one-byte CSI U+009B) | `\u{9b}` |
//! | invisible and direction-changing characters (bidi overrides and isolates, zero-width characters, line and paragraph separators, BOM) | `\u{202e}` |
//! | U+FFFD, the replacement character (invalid UTF-8 someone already replaced) | `\u{fffd}` |
//! | bytes that are not valid UTF-8 ([`escape_bytes`] only) | `\xNN` per byte |
//!
//! Everything else, printable text of any script, is shown unchanged. [`unescape`] reverses
//! [`escape_bytes`] (the tests use it to prove nothing is lost or confused).
use std::{borrow::Cow, fmt::Write as _};

/// Whether `c` is shown escaped (other than `\`).
fn hidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        // Arabic letter mark, Mongolian vowel separator.
        | '\u{61c}' | '\u{180e}'
        // Zero-width space/joiners, LRM/RLM, line/paragraph separators, bidi embeddings and
        // overrides, word joiner and invisible operators, bidi isolates, deprecated format
        // characters.
        | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}'
        | '\u{feff}'
        // Interlinear annotation characters, the replacement character.
        | '\u{fff9}'..='\u{fffb}' | '\u{fffd}'
        // Tags (can spell invisible text).
        | '\u{e0000}'..='\u{e007f}')
}

fn needs_escape(c: char) -> bool {
    c == '\\' || hidden(c)
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if u32::from(c) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if hidden(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// Text that was [escaped](escape) already (by the daemon, before it stored it), to show as
/// it is: unchanged when it holds nothing [`escape`] hides, so it is not escaped twice (`\x1b`
/// stays `\x1b`, not `\\x1b`); escaped when it does (it was not escaped after all, for
/// example a view some other client built).
#[must_use]
pub fn escaped_once(s: &str) -> Cow<'_, str> {
    if s.chars().any(hidden) {
        escape(s)
    } else {
        Cow::Borrowed(s)
    }
}

/// `s` as it may be shown on a terminal: see the module docs. Borrows when nothing needs
/// escaping.
#[must_use]
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        push_char(&mut out, c);
    }
    Cow::Owned(out)
}

/// [`escape`] for bytes that may not be UTF-8 (a path as the kernel reported it): each byte
/// of an invalid sequence is shown as `\xNN`.
#[must_use]
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return escape(s);
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// An argument vector as one line: each argument escaped, and quoted (`"..."`, with `"` shown
/// as `\"`) when it is empty or contains a space or a quote, so the argument boundaries are
/// visible (`rm "a b"` is one file, `rm a b` two).
#[must_use]
pub fn argv_line(argv: &[String]) -> String {
    let mut line = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        let shown = escape(arg);
        if arg.is_empty() || arg.contains([' ', '"', '\'']) {
            line.push('"');
            line.push_str(&shown.replace('"', "\\\""));
            line.push('"');
        } else {
            line.push_str(&shown);
        }
    }
    line
}

/// The bytes [`escape_bytes`] (or [`escape`]) was given, from what it showed; `None` for text
/// it cannot have produced.
#[must_use]
pub fn unescape(shown: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(shown.len());
    let mut chars = shown.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            if hidden(c) {
                return None;
            }
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next()? {
            '\\' => out.push(b'\\'),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                if hex.len() != 2 {
                    return None;
                }
                out.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let c = char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?;
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Decodes the lowercase hex of a `path_hex` field.
#[must_use]
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A duration for people: the two largest units of days, hours, minutes and seconds, without
/// spaces, as `deny in 1m59s` reads (`45s`, `1m59s`, `2h0m`, `3d4h`).
#[must_use]
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// No byte or character in `shown` can control a terminal or hide text.
    fn inert(shown: &str) -> bool {
        shown.chars().all(|c| !hidden(c)) && shown.bytes().all(|b| b >= 0x20 && b != 0x7f)
    }

    #[test]
    fn escaped_text_is_not_escaped_twice() {
        let once = escape("INC-42\x1b[2J\\");
        assert_eq!(escaped_once(&once), once);
        assert_eq!(escaped_once("raw\x1b[2J"), "raw\\x1b[2J");
        assert!(inert(&escaped_once("a\u{202e}b\r")));
    }

    #[test]
    fn examples() {
        assert_eq!(escape("/srv/demo/bin/deploy"), "/srv/demo/bin/deploy");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape("a\rb\nc\td"), "a\\rb\\nc\\td");
        assert_eq!(escape("x\x1b[2Ky"), "x\\x1b[2Ky");
        assert_eq!(escape("\0\x7f"), "\\x00\\x7f");
        assert_eq!(escape("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(escape("a\u{202e}txt.exe"), "a\\u{202e}txt.exe");
        assert_eq!(escape("c:\\n"), "c:\\\\n");
        assert_eq!(escape("grüße/日本語 ok"), "grüße/日本語 ok");
        assert_eq!(escape_bytes(b"/tmp/\xff\xfex\x1b"), "/tmp/\\xff\\xfex\\x1b");
        assert_eq!(escape_bytes("é".as_bytes()), "é");
        // A cut multi-byte character: its bytes, not a replacement character.
        assert_eq!(escape_bytes(b"a\xc3"), "a\\xc3");
        assert_eq!(escape("lossy \u{fffd}"), "lossy \\u{fffd}");
    }

    #[test]
    fn argv_shows_argument_boundaries() {
        let argv = |a: &[&str]| argv_line(&a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(argv(&["rm", "-rf", "/tmp/x"]), "rm -rf /tmp/x");
        assert_eq!(argv(&["rm", "a b"]), "rm \"a b\"");
        assert_eq!(argv(&["echo", ""]), "echo \"\"");
        assert_eq!(
            argv(&["sh", "-c", "echo \"hi\"\rrm -rf /"]),
            "sh -c \"echo \\\"hi\\\"\\rrm -rf /\""
        );
        assert_eq!(argv(&["printf", "a\\n"]), "printf a\\\\n");
        assert_eq!(argv(&["printf", "a\n"]), "printf a\\n");
    }

    #[test]
    fn hex() {
        assert_eq!(from_hex("2f74ff"), Some(vec![0x2f, 0x74, 0xff]));
        assert_eq!(from_hex("2f7"), None);
        assert_eq!(from_hex("zz"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes: the output is inert and gives the input back.
        #[test]
        fn any_bytes_are_shown_inert_and_losslessly(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let shown = escape_bytes(&bytes);
            prop_assert!(inert(&shown), "{shown:?}");
            prop_assert_eq!(unescape(&shown), Some(bytes));
        }

        /// Any string, including every control and format character.
        #[test]
        fn any_text_is_shown_inert_and_losslessly(s in any::<String>()) {
            let shown = escape(&s);
            prop_assert!(inert(&shown), "{shown:?}");
            prop_assert_eq!(unescape(&shown), Some(s.into_bytes()));
        }

        /// Printable text (any script, no backslash) is shown exactly as it is.
        #[test]
        fn printable_text_is_unchanged(s in "[^\\\\\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}\u{2060}-\u{206f}\u{e0000}-\u{e007f}\u{fffd}]*") {
            prop_assert_eq!(escape(&s), s.as_str());
            prop_assert_eq!(escape_bytes(s.as_bytes()), s.as_str());
        }

        /// Printable ASCII but the backslash: unchanged.
        #[test]
        fn printable_ascii_is_unchanged(s in "[ -\\[\\]-~]*") {
            prop_assert_eq!(escape(&s), s.as_str());
        }
    }
}
