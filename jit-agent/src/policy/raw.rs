//! The policy file as written: serde structs that keep the position of every value, so that
//! validation (in `parse`) can point at the exact spot of each mistake. Names and values are
//! kept as strings here and checked there, because serde stops at the first error while a
//! policy author wants all of them.
use std::{fmt, ops::Range};

use serde::{
    Deserialize, Deserializer,
    de::{self, SeqAccess, Visitor},
};
use toml::Spanned;

/// `[agent]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub name: Spanned<String>,
    pub cgroups: Spanned<StringOrList>,
    pub mode: Option<Spanned<String>>,
    pub default: Option<Spanned<String>>,
}

/// `[escalation]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEscalation {
    pub approvers: Option<Spanned<RawApprovers>>,
    pub timeout: Option<Spanned<String>>,
    pub on_timeout: Option<Spanned<String>>,
    pub grant: Option<Spanned<String>>,
    pub required_approvals: Option<Spanned<i64>>,
    pub self_approval: Option<Spanned<bool>>,
    pub max_grant: Option<Spanned<String>>,
    /// `[escalation.low]` ... `[escalation.critical]`: defaults for rules of that `risk`.
    pub low: Option<Spanned<RawLevel>>,
    pub medium: Option<Spanned<RawLevel>>,
    pub high: Option<Spanned<RawLevel>>,
    pub critical: Option<Spanned<RawLevel>>,
}

/// `[escalation.high]`: who reviews, and how, the holds of rules with `risk = "high"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLevel {
    pub approvers: Option<Spanned<RawApprovers>>,
    pub required_approvals: Option<Spanned<i64>>,
    pub timeout: Option<Spanned<String>>,
    pub on_timeout: Option<Spanned<String>>,
}

/// `approvers = { users = [...], groups = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApprovers {
    #[serde(default)]
    pub users: Vec<Spanned<String>>,
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
}

/// One `[[rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub name: Spanned<String>,
    pub op: Spanned<StringOrList>,
    pub path: Spanned<StringOrList>,
    pub decision: Spanned<String>,
    pub when: Option<Spanned<RawWhen>>,
    pub timeout: Option<Spanned<String>>,
    pub on_timeout: Option<Spanned<String>>,
    pub hint: Option<Spanned<String>>,
    pub risk: Option<Spanned<String>>,
    pub approvers: Option<Spanned<RawApprovers>>,
    pub required_approvals: Option<Spanned<i64>>,
    /// Daemon-side conditions (policies/README.md, "Conditions").
    pub args: Option<Spanned<Vec<Spanned<String>>>>,
    pub cwd: Option<Spanned<StringOrList>>,
    pub caller: Option<Spanned<StringOrList>>,
    pub ancestor: Option<Spanned<StringOrList>>,
    pub env: Option<Spanned<std::collections::BTreeMap<Spanned<String>, Spanned<String>>>>,
    pub target: Option<Spanned<RawTarget>>,
    pub sha256: Option<Spanned<StringOrList>>,
    /// Kernel-side conditions (policies/README.md, "Users and groups").
    pub user: Option<Spanned<StringOrList>>,
    pub group: Option<Spanned<StringOrList>>,
    /// Kernel-side condition on who wrote the executed file (policies/README.md, "Provenance").
    pub written_by: Option<Spanned<StringOrList>>,
}

/// `target = { exists = BOOL, min_size = SIZE, max_size = SIZE }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub exists: Option<Spanned<bool>>,
    pub min_size: Option<Spanned<RawSize>>,
    pub max_size: Option<Spanned<RawSize>>,
}

/// A size: bytes as an integer, or a string with a unit (`"10M"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

/// `when = { inside | outside = "...", tz = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWhen {
    pub inside: Option<Spanned<String>>,
    pub outside: Option<Spanned<String>>,
    pub tz: Option<Spanned<String>>,
}

/// A string or a list of strings (`op = "exec"` or `op = ["write", "create"]`).
///
/// A hand-written visitor rather than `#[serde(untagged)]`: untagged enums buffer their input
/// and lose the positions of the list items.
#[derive(Debug)]
pub(super) enum StringOrList {
    /// The position is that of the enclosing `Spanned`.
    One(String),
    Many(Vec<Spanned<String>>),
}

impl StringOrList {
    /// Every item with its span, given the span of the whole value.
    pub fn items(this: &Spanned<Self>) -> impl Iterator<Item = (&str, Range<usize>)> + '_ {
        let (one, many) = match this.get_ref() {
            Self::One(s) => (Some((s.as_str(), this.span())), None),
            Self::Many(v) => (
                None,
                Some(v.iter().map(|s| (s.get_ref().as_str(), s.span()))),
            ),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOrList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrList::One(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(StringOrList::One(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(StringOrList::Many(items))
            }
        }
        deserializer.deserialize_any(V)
    }
}
