//! The hash chain: what `prev` is computed from.

use sha2::{Digest as _, Sha256};

/// `prev` of the first record of a chain.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Lowercase hex of `bytes`.
#[must_use]
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Hex SHA-256 of a record's line, newline excluded: the next record's `prev`.
#[must_use]
pub fn line_hash(line: &[u8]) -> String {
    to_hex(&Sha256::digest(line))
}

/// The end of a chain: what the next record continues from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// `seq` of the last record; 0 when the chain is empty.
    pub seq: u64,
    /// [`line_hash`] of the last record; [`GENESIS_PREV`] when the chain is empty.
    pub hash: String,
}

impl ChainHead {
    /// An empty chain: the next record is `seq` 1 with `prev` [`GENESIS_PREV`].
    #[must_use]
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_PREV.to_owned(),
        }
    }
}

/// Whether `s` looks like a `prev` value: 64 lowercase hex digits.
#[must_use]
pub fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The fields every record has that the chain is made of; everything else in a line is only
/// covered by the hash. Parsing just these lets the writer and `verify` continue past record
/// types this build does not know.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ChainFields {
    pub v: u32,
    pub seq: u64,
    pub prev: String,
}
