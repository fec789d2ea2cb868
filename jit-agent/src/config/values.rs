//! Single configuration values checked while the file is parsed: their errors get the value's
//! position from toml. A leaf module.
use std::{fmt, path::PathBuf};

use serde::{Deserialize, Deserializer, de};
use tracing::level_filters::LevelFilter;

use super::{MAX_KEEP, MIN_MAX_BYTES};
use crate::{approval::webhook::WebhookUrl, audit::FsyncPolicy};

pub(super) struct AbsPath(pub(super) PathBuf);

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !s.starts_with('/') {
            return Err(de::Error::custom(format!(
                "path {s:?} must be absolute (start with `/`)"
            )));
        }
        Ok(Self(PathBuf::from(s)))
    }
}

/// `webhook.url`.
pub(super) struct Url(pub(super) WebhookUrl);

impl<'de> Deserialize<'de> for Url {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // The message leaves the URL out: it may hold a secret, and the position says which.
        s.parse().map(Self).map_err(de::Error::custom)
    }
}

/// `audit.fsync`.
pub(super) struct Fsync(pub(super) FsyncPolicy);

impl<'de> Deserialize<'de> for Fsync {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "always" => Ok(Self(FsyncPolicy::Always)),
            "never" => Ok(Self(FsyncPolicy::Never)),
            other => humantime::parse_duration(other)
                .map(|d| Self(FsyncPolicy::Interval(d)))
                .map_err(|e| {
                    de::Error::custom(format!(
                        "fsync {other:?} is neither \"always\", \"never\" nor an interval like \
                         \"1s\" or \"250ms\" ({e})"
                    ))
                }),
        }
    }
}

/// `audit.max_bytes`: an integer number of bytes or a string with a binary unit (`"64MiB"`).
pub(super) struct ByteSize(pub(super) u64);

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size like \"64MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::custom("max_bytes must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
                parse_size(v).ok_or_else(|| {
                    E::custom(format!(
                        "size {v:?} is not a number followed by B, KiB, MiB or GiB"
                    ))
                })
            }
        }
        let n = d.deserialize_any(Visitor)?;
        if n != 0 && n < MIN_MAX_BYTES {
            return Err(de::Error::custom(format!(
                "max_bytes {n} is below the minimum of {MIN_MAX_BYTES} (64 KiB); use 0 to \
                 disable rotation"
            )));
        }
        Ok(Self(n))
    }
}

/// `audit.keep`.
pub(super) struct Keep(pub(super) u32);

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u32::try_from(n) {
            Ok(k) if k <= MAX_KEEP => Ok(Self(k)),
            _ => Err(de::Error::custom(format!(
                "keep {n} is out of range: 0 to {MAX_KEEP} rotated files"
            ))),
        }
    }
}

/// `socket.mode`: an octal string, so `"0660"` means what it says (a TOML integer `660` would
/// be decimal).
pub(super) struct SocketMode(pub(super) u32);

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = SocketMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an octal mode string like \"0600\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SocketMode, E> {
                let digits = s.strip_prefix("0o").unwrap_or(s);
                let mode = (matches!(digits.len(), 3 | 4))
                    .then(|| u32::from_str_radix(digits, 8).ok())
                    .flatten()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "socket mode {s:?} is not an octal permission string like \"0600\" \
                             or \"0660\""
                        ))
                    })?;
                if mode & 0o007 != 0 {
                    return Err(E::custom(format!(
                        "socket mode {s:?} gives other users access to the control socket; \
                         let reviewers in with `group` and a mode like \"0660\""
                    )));
                }
                Ok(SocketMode(mode))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `log.level`.
pub(super) struct Level(pub(super) LevelFilter);

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let level = match s.as_str() {
            "off" => LevelFilter::OFF,
            "error" => LevelFilter::ERROR,
            "warn" => LevelFilter::WARN,
            "info" => LevelFilter::INFO,
            "debug" => LevelFilter::DEBUG,
            "trace" => LevelFilter::TRACE,
            _ => {
                return Err(de::Error::custom(format!(
                    "log level {s:?} is not one of off, error, warn, info, debug, trace"
                )));
            }
        };
        Ok(Self(level))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1TB"), None);
        assert_eq!(parse_size("MiB"), None);
    }
}
