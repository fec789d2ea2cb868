//! Policy matching: which rule decides an operation on a path, and what the kernel then does.
//!
//! Userspace compiles every rule into one entry of an LPM trie (`BPF_MAP_TYPE_LPM_TRIE`) keyed by
//! [`PolicyKey`]; the kernel resolves the path of each operation and runs [`evaluate`]. Both
//! sides use this module, so the host tests exercise exactly the code the kernel runs.
//!
//! # Rules
//!
//! A pattern is an absolute path. Ending in `/` it is a *directory rule* and matches everything
//! below that directory (`/srv/work/` matches `/srv/work/x` but neither `/srv/work` nor
//! `/srv/workshop`); `/` alone matches every path. Otherwise it is an *exact rule* and matches
//! that path only. One whole component may be `*`, which matches exactly one non-empty component
//! (`/home/*/.ssh/`). The most specific matching rule wins (see [`PolicyValue`]); an operation
//! no rule matches gets the agent's default decision.
//!
//! # Why an LPM trie works
//!
//! A rule key is a byte prefix of the lookup key of every path it matches: exact rules end in a
//! NUL terminator that only the lookup key of that very path carries at that position, directory
//! rules end in `/`. Among the rules that are prefixes of one key, the longest is also the most
//! specific, so the trie's single answer is the best rule for that key. Rules with a `*` are
//! stored with a literal `*`; for each component position that holds a `*` in some rule of the
//! agent ([`AgentConfig::wildcard_components`]) the kernel looks up a second key in which that
//! component of the path is replaced by `*` ([`wildcard_key`]), and keeps the best answer
//! ([`better`]).
//!
//! # Long paths
//!
//! A key holds at most [`PATH_CAPACITY`] (251) path bytes. A longer path is looked up by its
//! first 251 bytes without a terminator: no exact rule can match it, while directory rules still
//! match as long as the part of the path they cover lies within those 251 bytes (always the case
//! for a directory rule without `*`, since patterns fit in 251 bytes; a `*` component whose
//! match would end beyond byte 251 does not match).

#![expect(
    clippy::inline_always,
    reason = "the eBPF programs call these: inlined, they avoid BPF-to-BPF calls and let the \
              verifier see constant arguments"
)]

use core::fmt;

/// Bytes of [`PolicyKey::data`]: the kernel's maximum for LPM trie keys.
pub const KEY_DATA_LEN: usize = 256;
/// Bytes of [`PolicyKey::data`] before the path: agent id (4, big-endian) and op (1).
pub const KEY_HEADER_LEN: usize = 5;
/// Path bytes a key can hold, terminator included.
pub const PATH_CAPACITY: usize = KEY_DATA_LEN - KEY_HEADER_LEN;
/// Deepest component (counting from 0, the first component after the leading `/`) that can be
/// a wildcard: [`AgentConfig::wildcard_components`] has one bit per position.
pub const MAX_WILDCARD_COMPONENT: u32 = 31;
// One bit per wildcard position in a u32 mask.
const _: () = assert!(MAX_WILDCARD_COMPONENT + 1 == u32::BITS);
/// [`Verdict::rule_id`] of a decision taken by the agent's default; compiled rules use ids from 1.
pub const DEFAULT_RULE_ID: u32 = 0;

/// An operation the hooks decide. Stored as `u8` in keys and events.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Exec = 0,
    Write = 1,
    Create = 2,
    Unlink = 3,
    Rename = 4,
    Truncate = 5,
    Mkdir = 6,
    Rmdir = 7,
    Link = 8,
    Symlink = 9,
    Chmod = 10,
    Chown = 11,
    /// Creating a character or block device node (`mknod`): its own op because a device node
    /// in an allowed directory is a door to the device, not a file.
    Device = 12,
    /// Changing metadata other than mode and owner: extended attributes (POSIX ACLs and
    /// `security.*` included), inode flags (`chattr`), timestamps.
    Metadata = 13,
}

impl Op {
    /// Every op, in numeric order.
    pub const ALL: [Self; 14] = [
        Self::Exec,
        Self::Write,
        Self::Create,
        Self::Unlink,
        Self::Rename,
        Self::Truncate,
        Self::Mkdir,
        Self::Rmdir,
        Self::Link,
        Self::Symlink,
        Self::Chmod,
        Self::Chown,
        Self::Device,
        Self::Metadata,
    ];

    /// The name used in policy files and logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Write => "write",
            Self::Create => "create",
            Self::Unlink => "unlink",
            Self::Rename => "rename",
            Self::Truncate => "truncate",
            Self::Mkdir => "mkdir",
            Self::Rmdir => "rmdir",
            Self::Link => "link",
            Self::Symlink => "symlink",
            Self::Chmod => "chmod",
            Self::Chown => "chown",
            Self::Device => "device",
            Self::Metadata => "metadata",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }

    #[must_use]
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Exec,
            1 => Self::Write,
            2 => Self::Create,
            3 => Self::Unlink,
            4 => Self::Rename,
            5 => Self::Truncate,
            6 => Self::Mkdir,
            7 => Self::Rmdir,
            8 => Self::Link,
            9 => Self::Symlink,
            10 => Self::Chmod,
            11 => Self::Chown,
            12 => Self::Device,
            13 => Self::Metadata,
            _ => return None,
        })
    }
}

/// What a rule (or an agent's default) says about an operation. Stored as `u8` in map values.
///
/// The numeric order is the severity order, so a corrupt value read as [`Decision::Deny`] is
/// also the most severe.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Let it happen silently.
    Allow = 0,
    /// Let it happen and report it.
    Audit = 1,
    /// Pause the process until a reviewer decides.
    Hold = 2,
    /// Refuse with `EPERM`.
    Deny = 3,
}

impl Decision {
    /// Every decision, from least to most severe.
    pub const ALL: [Self; 4] = [Self::Allow, Self::Audit, Self::Hold, Self::Deny];

    /// Rank used to break ties between equally specific rules: deny > hold > audit > allow.
    #[must_use]
    #[inline(always)]
    pub const fn severity(self) -> u8 {
        self as u8
    }

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Audit => "audit",
            Self::Hold => "hold",
            Self::Deny => "deny",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    #[must_use]
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Allow,
            1 => Self::Audit,
            2 => Self::Hold,
            3 => Self::Deny,
            _ => return None,
        })
    }

    /// Reads a decision from a map, failing closed: anything unknown is [`Decision::Deny`].
    #[must_use]
    #[inline(always)]
    pub const fn from_u8_or_deny(v: u8) -> Self {
        match Self::from_u8(v) {
            Some(d) => d,
            None => Self::Deny,
        }
    }
}

/// Whether an agent's decisions are applied or only reported.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Apply every decision.
    Enforce = 0,
    /// Allow everything, but report what enforce mode would have done (to try out a policy).
    Shadow = 1,
}

impl Mode {
    pub const ALL: [Self; 2] = [Self::Enforce, Self::Shadow];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Shadow => "shadow",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    #[must_use]
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Enforce),
            1 => Some(Self::Shadow),
            _ => None,
        }
    }
}

/// Why a pattern cannot be compiled into a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternError {
    /// Empty or not starting with `/`: rules match the absolute paths the kernel resolves.
    NotAbsolute,
    /// `//` somewhere: resolved paths never contain empty components, so the rule could not
    /// match anything.
    EmptyComponent,
    /// A `.` or `..` component: resolved paths never contain them.
    DotComponent,
    /// A NUL byte, which terminates exact rules in the key.
    NulByte,
    /// `*` together with other bytes in one component (`/tmp/*.log`).
    PartialWildcard,
    /// A component of several `*` (`/a/**/b`): a `*` matches exactly one component.
    RecursiveWildcard,
    /// More than one `*` component.
    MultipleWildcards,
    /// `*` deeper than [`MAX_WILDCARD_COMPONENT`].
    WildcardTooDeep {
        /// Position of the `*` (0 = first component after the leading `/`).
        component: usize,
    },
    /// Longer than a key can hold.
    TooLong {
        /// Length of the pattern in bytes.
        len: usize,
        /// Longest pattern of this kind (exact or directory) a key can hold.
        max: usize,
    },
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAbsolute => f.write_str("pattern must be an absolute path (start with `/`)"),
            Self::EmptyComponent => f.write_str("pattern has an empty component (`//`)"),
            Self::DotComponent => f.write_str(
                "pattern has a `.` or `..` component; rules match resolved paths, which have none",
            ),
            Self::NulByte => f.write_str("pattern contains a NUL byte"),
            Self::PartialWildcard => f.write_str(
                "partial-component wildcards are not supported: `*` must be a whole component, \
                 as in `/home/*/.ssh/`",
            ),
            Self::RecursiveWildcard => f.write_str(
                "`**` is not supported: `*` matches exactly one component; a pattern ending in \
                 `/` matches everything below a directory",
            ),
            Self::MultipleWildcards => {
                f.write_str("at most one `*` component per pattern is supported")
            }
            Self::WildcardTooDeep { component } => write!(
                f,
                "`*` is component {component} (counting from 0); only components 0 to \
                 {MAX_WILDCARD_COMPONENT} can be wildcards"
            ),
            Self::TooLong { len, max } => write!(
                f,
                "pattern is {len} bytes long; at most {max} fit in a policy key"
            ),
        }
    }
}

impl core::error::Error for PatternError {}

/// What [`PolicyKey::for_rule`] learned from a pattern: its specificity and wildcard position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleShape {
    /// See [`PolicyValue::literal_len`].
    pub literal_len: u16,
    /// See [`PolicyValue::pattern_len`].
    pub pattern_len: u16,
    /// Position of the `*` component, if any: its bit must be set in the agent's
    /// [`AgentConfig::wildcard_components`].
    pub wildcard_component: Option<u32>,
}

impl RuleShape {
    /// Validates `pattern` (see [`PatternError`]) and measures it.
    ///
    /// # Errors
    /// When the pattern cannot be compiled; the error says why.
    pub fn parse(pattern: &[u8]) -> Result<Self, PatternError> {
        let Some((&b'/', rest)) = pattern.split_first() else {
            return Err(PatternError::NotAbsolute);
        };
        let directory = pattern.last() == Some(&b'/');
        let mut wildcard = None;
        if pattern != b"/" {
            let body = rest.strip_suffix(b"/").unwrap_or(rest);
            // Offset of the current component in `pattern`.
            let mut offset = 1;
            for (index, component) in body.split(|&b| b == b'/').enumerate() {
                match component {
                    [] => return Err(PatternError::EmptyComponent),
                    b"." | b".." => return Err(PatternError::DotComponent),
                    b"*" => {
                        if wildcard.is_some() {
                            return Err(PatternError::MultipleWildcards);
                        }
                        if index > MAX_WILDCARD_COMPONENT as usize {
                            return Err(PatternError::WildcardTooDeep { component: index });
                        }
                        wildcard = Some((index, offset));
                    }
                    _ if component.contains(&0) => return Err(PatternError::NulByte),
                    _ if component.iter().all(|&b| b == b'*') => {
                        return Err(PatternError::RecursiveWildcard);
                    }
                    _ if component.contains(&b'*') => return Err(PatternError::PartialWildcard),
                    _ => {}
                }
                offset += component.len() + 1;
            }
        }
        // Exact rules carry a terminator.
        let terminator = usize::from(!directory);
        let max = PATH_CAPACITY - terminator;
        if pattern.len() > max {
            return Err(PatternError::TooLong {
                len: pattern.len(),
                max,
            });
        }
        let pattern_len = pattern.len() + terminator;
        let (literal_len, wildcard_component) = match wildcard {
            Some((index, offset)) => (offset, Some(index)),
            None => (pattern_len, None),
        };
        // Lengths are at most PATH_CAPACITY and components at most MAX_WILDCARD_COMPONENT.
        let narrow = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        Ok(Self {
            literal_len: narrow(literal_len),
            pattern_len: narrow(pattern_len),
            wildcard_component: wildcard_component
                .map(|c| u32::try_from(c).unwrap_or(MAX_WILDCARD_COMPONENT)),
        })
    }

    /// The bit this rule needs in [`AgentConfig::wildcard_components`] (0 without `*`).
    #[must_use]
    pub const fn wildcard_mask(&self) -> u32 {
        match self.wildcard_component {
            Some(c) if c <= MAX_WILDCARD_COMPONENT => 1 << c,
            _ => 0,
        }
    }

    /// The map value of a rule of this shape.
    #[must_use]
    pub const fn value(&self, decision: Decision, rule_id: u32) -> PolicyValue {
        PolicyValue {
            decision: decision as u8,
            pad: [0; 3],
            rule_id,
            literal_len: self.literal_len,
            pattern_len: self.pattern_len,
        }
    }
}

/// Key of the policy LPM trie, for rules (stored) and for resolved paths (looked up).
///
/// Same layout as aya's `lpm_trie::Key<[u8; KEY_DATA_LEN]>`, which both the userspace and the
/// eBPF map API take. `data` is the rule set id (4 bytes, big-endian, so map dumps read naturally; see
/// [`AgentConfig::ruleset`]),
/// the op (1 byte), then the path; `prefixlen` counts the significant *bits* of
/// `data`, and the bytes past them are ignored by the trie (and by `==`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PolicyKey {
    pub prefixlen: u32,
    pub data: [u8; KEY_DATA_LEN],
}

/// `bytes` significant bytes as an LPM prefix length.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "clamped to KEY_DATA_LEN, which fits in u32"
)]
const fn prefix_bits(bytes: usize) -> u32 {
    let bytes = if bytes > KEY_DATA_LEN {
        KEY_DATA_LEN
    } else {
        bytes
    };
    bytes as u32 * 8
}

impl PolicyKey {
    /// All zeros (prefix length 0).
    pub const EMPTY: Self = Self {
        prefixlen: 0,
        data: [0; KEY_DATA_LEN],
    };

    /// The key of a rule, and the rule's shape (see the module docs for pattern syntax).
    ///
    /// # Errors
    /// When the pattern cannot be compiled; the error says why.
    pub fn for_rule(
        ruleset: u32,
        op: Op,
        pattern: &[u8],
    ) -> Result<(Self, RuleShape), PatternError> {
        let shape = RuleShape::parse(pattern)?;
        let mut key = Self::EMPTY;
        key.set_header(ruleset, op);
        for (slot, &b) in key.path_mut().iter_mut().zip(pattern) {
            *slot = b;
        }
        // An exact rule's terminator is already there (zeroed key), and counted in pattern_len.
        key.prefixlen = prefix_bits(KEY_HEADER_LEN + shape.pattern_len as usize);
        Ok((key, shape))
    }

    /// The lookup key of the resolved `path` (without terminator; it must not contain NUL, which
    /// resolved paths never do). See the module docs for paths longer than 250 bytes.
    ///
    /// Builds the 260-byte key on the stack: the eBPF programs rather fill a key in map memory
    /// with [`PolicyKey::path_mut`] and [`PolicyKey::finish_lookup`].
    #[must_use]
    #[inline(always)]
    pub fn for_lookup(ruleset: u32, op: Op, path: &[u8]) -> Self {
        let mut key = Self::EMPTY;
        let buf = key.path_mut();
        for i in 0..PATH_CAPACITY {
            match (buf.get_mut(i), path.get(i)) {
                (Some(slot), Some(&b)) => *slot = b,
                _ => break,
            }
        }
        key.finish_lookup(ruleset, op, path.len());
        key
    }

    /// The part of `data` that holds the path: the eBPF side resolves the path straight into it
    /// (for example with `bpf_d_path`) and then calls [`PolicyKey::finish_lookup`].
    #[inline(always)]
    pub fn path_mut(&mut self) -> &mut [u8; PATH_CAPACITY] {
        let [_, _, _, _, _, path @ ..] = &mut self.data;
        path
    }

    /// Turns a key whose [`PolicyKey::path_mut`] starts with a resolved path of `path_len`
    /// bytes (terminator not counted) into its lookup key: writes the header, terminates the
    /// path and sets the prefix length.
    ///
    /// A `path_len` above 250 means the path did not fit: the key then keeps the first
    /// [`PATH_CAPACITY`] bytes, unterminated, so that only directory rules can match.
    #[inline(always)]
    pub fn finish_lookup(&mut self, ruleset: u32, op: Op, path_len: usize) {
        self.set_header(ruleset, op);
        if path_len < PATH_CAPACITY {
            if let Some(terminator) = self.path_mut().get_mut(path_len) {
                *terminator = 0;
            }
            self.prefixlen = prefix_bits(KEY_HEADER_LEN + path_len + 1);
        } else {
            self.prefixlen = prefix_bits(KEY_DATA_LEN);
        }
    }

    #[inline(always)]
    fn set_header(&mut self, ruleset: u32, op: Op) {
        let [a0, a1, a2, a3, op_byte, ..] = &mut self.data;
        let [b0, b1, b2, b3] = ruleset.to_be_bytes();
        (*a0, *a1, *a2, *a3, *op_byte) = (b0, b1, b2, b3, op as u8);
    }

    /// Number of significant bytes of `data` (prefix length rounded up, at most the whole).
    #[must_use]
    #[inline(always)]
    pub fn significant_len(&self) -> usize {
        let bytes = self.prefixlen.div_ceil(8) as usize;
        if bytes > KEY_DATA_LEN {
            KEY_DATA_LEN
        } else {
            bytes
        }
    }

    /// The significant bytes of `data`.
    #[must_use]
    pub fn significant(&self) -> &[u8] {
        self.data
            .get(..self.significant_len())
            .unwrap_or(&self.data)
    }
}

impl PartialEq for PolicyKey {
    /// Equal when the trie would treat them alike: same prefix length and same bytes up to it.
    fn eq(&self, other: &Self) -> bool {
        self.prefixlen == other.prefixlen && self.significant() == other.significant()
    }
}

impl Eq for PolicyKey {}

impl fmt::Debug for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a0, a1, a2, a3, op, path @ ..] = &self.data;
        let path_len = self.significant_len().saturating_sub(KEY_HEADER_LEN);
        f.debug_struct("PolicyKey")
            .field("prefixlen", &self.prefixlen)
            .field("agent", &u32::from_be_bytes([*a0, *a1, *a2, *a3]))
            .field("op", op)
            .field(
                "path",
                &format_args!(
                    "\"{}\"",
                    path.get(..path_len).unwrap_or(path).escape_ascii()
                ),
            )
            .finish()
    }
}

/// Value of the policy LPM trie: one rule (or several rules with the same key, see [`merge`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyValue {
    /// A [`Decision`].
    pub decision: u8,
    /// Explicit padding: keeps the layout free of implicit holes.
    pub pad: [u8; 3],
    /// Reported in events so users can tell which rule decided; never [`DEFAULT_RULE_ID`].
    pub rule_id: u32,
    /// First part of the specificity: bytes of the pattern before its `*` component, or, without
    /// `*`, its whole length plus 1 for an exact rule's terminator (so an exact rule beats every
    /// directory rule above it). Longer literal prefixes are more specific.
    pub literal_len: u16,
    /// Second part of the specificity: the pattern length, plus 1 for an exact rule. Breaks ties
    /// between rules with the same literal prefix (`/home/*/.ssh/` beats `/home/`).
    pub pattern_len: u16,
}

impl PolicyValue {
    /// Specificity, then severity, as one number: larger wins.
    #[inline(always)]
    fn rank(&self) -> u64 {
        (u64::from(self.literal_len) << 32)
            | (u64::from(self.pattern_len) << 16)
            | u64::from(Decision::from_u8_or_deny(self.decision).severity())
    }

    /// Whether `self` should decide rather than `other`: more specific, then more severe, then
    /// the lower rule id (so the outcome never depends on lookup order).
    #[inline(always)]
    fn outranks(&self, other: &Self) -> bool {
        let (a, b) = (self.rank(), other.rank());
        a > b || (a == b && self.rule_id < other.rule_id)
    }
}

impl PolicyValue {
    /// "No rule matched", as a whole value rather than `None`: the kernel side keeps lookup
    /// results in this form so that no code path ever reads an uninitialized payload (the
    /// compiler may load an `Option`'s payload before testing it, and the verifier rejects that
    /// when the stack slot last held a pointer). What marks it is its rule id,
    /// [`DEFAULT_RULE_ID`], which no compiled rule has; its decision is deny, should anything
    /// ever read it as a rule.
    pub const NO_MATCH: Self = Self {
        decision: Decision::Deny as u8,
        pad: [0; 3],
        rule_id: DEFAULT_RULE_ID,
        literal_len: 0,
        pattern_len: 0,
    };

    /// A lookup result in the [`PolicyValue::NO_MATCH`] form.
    #[must_use]
    #[inline(always)]
    pub fn or_no_match(found: Option<Self>) -> Self {
        match found {
            Some(v) => v,
            None => Self::NO_MATCH,
        }
    }

    /// Whether this is a match rather than [`PolicyValue::NO_MATCH`].
    #[must_use]
    #[inline(always)]
    pub const fn is_match(&self) -> bool {
        self.rule_id != DEFAULT_RULE_ID
    }

    /// The match that decides, of `self` and `other` (either may be [`PolicyValue::NO_MATCH`]).
    #[must_use]
    #[inline(always)]
    pub fn best_of(self, other: Self) -> Self {
        if !other.is_match() || (self.is_match() && !other.outranks(&self)) {
            self
        } else {
            other
        }
    }
}

/// The match that decides, of two lookups of the same operation (either may have found nothing).
#[must_use]
#[inline(always)]
pub fn better(a: Option<PolicyValue>, b: Option<PolicyValue>) -> Option<PolicyValue> {
    let best = PolicyValue::or_no_match(a).best_of(PolicyValue::or_no_match(b));
    best.is_match().then_some(best)
}

/// The one value to store for two rules that compiled to the same key (and so have the same
/// specificity): the more severe decision, or on a tie the lower rule id.
#[must_use]
pub fn merge(a: PolicyValue, b: PolicyValue) -> PolicyValue {
    let (sa, sb) = (
        Decision::from_u8_or_deny(a.decision).severity(),
        Decision::from_u8_or_deny(b.decision).severity(),
    );
    if sb > sa || (sb == sa && b.rule_id < a.rule_id) {
        b
    } else {
        a
    }
}

/// Per-agent settings, value of the agent config map (keyed by agent id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// [`Decision`] for operations no rule matches.
    pub default_decision: u8,
    /// A [`Mode`].
    pub mode: u8,
    /// [`IDENTITY_BY_USER`] and [`IDENTITY_BY_GROUP`] bits: some rule of the agent names users
    /// or groups, so the rule set depends on the uid or gid the process acts as on files (its `fsuid`, `fsgid`) (see
    /// [`IdentityKey`]). 0 for most agents: then nothing about the process is read.
    pub identity: u8,
    /// How many rule sets follow [`AgentConfig::ruleset`] for identity classes: the agent's
    /// rules live in `ruleset ..= ruleset + extra_rulesets`.
    pub extra_rulesets: u8,
    /// Bit `i` set: some rule of the agent has `*` as component `i`, so the kernel must look up
    /// the path with component `i` replaced by `*`. Extra bits only cost lookups.
    pub wildcard_components: u32,
    /// The rule set the kernel looks the agent's rules up in: the first four bytes of every
    /// [`PolicyKey`] of this agent. A new policy is written under a fresh rule set id while the
    /// old one keeps deciding, and takes effect with the single update of this entry that
    /// switches the id: there is no moment in which neither the old nor the new rules apply.
    pub ruleset: u32,
}

impl AgentConfig {
    /// A configuration looking rules up in rule set 0; set [`AgentConfig::ruleset`] (or use
    /// [`AgentConfig::with_ruleset`]) before installing it.
    #[must_use]
    pub const fn new(default_decision: Decision, mode: Mode, wildcard_components: u32) -> Self {
        Self {
            default_decision: default_decision as u8,
            mode: mode as u8,
            identity: 0,
            extra_rulesets: 0,
            wildcard_components,
            ruleset: 0,
        }
    }

    /// The same configuration, looking its rules up in `ruleset`.
    #[must_use]
    pub const fn with_ruleset(mut self, ruleset: u32) -> Self {
        self.ruleset = ruleset;
        self
    }
}

/// [`AgentConfig::identity`] bit: the agent's rules name users (`user = ...`).
pub const IDENTITY_BY_USER: u8 = 1;
/// [`AgentConfig::identity`] bit: the agent's rules name groups (`group = ...`).
pub const IDENTITY_BY_GROUP: u8 = 2;
/// [`AgentConfig::identity`] bit: the agent's rules name writers (`written_by = ...`).
pub const IDENTITY_BY_WRITER: u8 = 4;
/// [`IdentityKey::kind`] of a uid.
pub const IDENTITY_UID: u32 = 0;
/// [`IdentityKey::kind`] of a gid.
pub const IDENTITY_GID: u32 = 1;
/// [`IdentityKey::kind`] of a writer class (`provenance::WRITER_*`, never `WRITER_NONE`).
pub const IDENTITY_WRITER: u32 = 2;
/// Most rule sets an agent may have (one per combination of the users and groups its rules
/// name, and "anyone else"): each is a whole copy of the agent's rules in the kernel.
pub const MAX_IDENTITY_RULESETS: usize = 64;

/// Key of the identity map: which rule set of an agent a uid or gid selects.
///
/// Rules with `user`/`group` conditions are decided in the kernel by rule sets per *identity
/// class*: each uid that some rule of the agent names is a class, every other uid is the class
/// "anyone else", and likewise for gids. The agent's rule sets are `ruleset + u * (G + 1) + g`
/// for uid class `u` and gid class `g` (0 = anyone else, `G` gids named); the map holds the
/// offset `u * (G + 1)` under the uid and `g` under the gid, and an id that is not in the map
/// is class 0. Keys carry the agent's base rule set rather than the agent: a new policy writes
/// its entries under its new rule set before the agent switches to it, like the rules.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdentityKey {
    /// [`AgentConfig::ruleset`] of the agent.
    pub ruleset: u32,
    /// [`IDENTITY_UID`] or [`IDENTITY_GID`].
    pub kind: u32,
    /// The uid or gid (as the initial user namespace sees it).
    pub id: u32,
}

/// The rule set that decides for a process acting as `uid` and `gid` on files under `cfg`,
/// given the identity map's answers (`offset(kind, id)`, `None` when absent). An offset that
/// would leave the agent's rule sets (a corrupt map) is taken as the largest one's.
#[inline(always)]
pub fn identity_ruleset(
    cfg: &AgentConfig,
    uid: u32,
    gid: u32,
    writer: u32,
    offset: impl Fn(&IdentityKey) -> Option<u32>,
) -> u32 {
    let mut extra = 0u32;
    if cfg.identity & IDENTITY_BY_WRITER != 0 && writer != 0 {
        extra = offset(&IdentityKey {
            ruleset: cfg.ruleset,
            kind: IDENTITY_WRITER,
            id: writer,
        })
        .unwrap_or(0);
    }
    if cfg.identity & IDENTITY_BY_USER != 0 {
        extra = extra.wrapping_add(
            offset(&IdentityKey {
                ruleset: cfg.ruleset,
                kind: IDENTITY_UID,
                id: uid,
            })
            .unwrap_or(0),
        );
    }
    if cfg.identity & IDENTITY_BY_GROUP != 0 {
        extra = extra.wrapping_add(
            offset(&IdentityKey {
                ruleset: cfg.ruleset,
                kind: IDENTITY_GID,
                id: gid,
            })
            .unwrap_or(0),
        );
    }
    let last = u32::from(cfg.extra_rulesets);
    cfg.ruleset
        .wrapping_add(if extra > last { last } else { extra })
}

/// The outcome for one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What the policy says (reported in events).
    pub decision: Decision,
    /// What the kernel applies: [`Verdict::decision`] in enforce mode; in shadow mode
    /// [`Decision::Allow`] for an allow and [`Decision::Audit`] (allowed, reported) otherwise.
    pub enforced: Decision,
    /// Rule that decided, or [`DEFAULT_RULE_ID`] for the agent's default.
    pub rule_id: u32,
}

impl Verdict {
    /// For when the kernel cannot evaluate the policy at all (unresolvable path, missing agent
    /// config): deny.
    #[must_use]
    #[inline(always)]
    pub const fn fail_closed() -> Self {
        Self {
            decision: Decision::Deny,
            enforced: Decision::Deny,
            rule_id: DEFAULT_RULE_ID,
        }
    }
}

/// Of the verdicts for the two ends of a rename or link (`first`: the source, `second`: the
/// target), whether `first` is the one that applies: both ends are evaluated and the more
/// severe decision applies, so a denied file cannot be renamed or linked into an allowed place;
/// between equal decisions the target's verdict (its rule) is the one reported.
#[must_use]
#[inline(always)]
pub const fn first_of_pair_decides(first: &Verdict, second: &Verdict) -> bool {
    first.decision as u8 > second.decision as u8
}

/// The verdict for the best match (if any) under `cfg`. Corrupt values fail closed: an unknown
/// decision is [`Decision::Deny`], an unknown mode is [`Mode::Enforce`].
#[must_use]
#[inline(always)]
pub fn verdict(matched: Option<PolicyValue>, cfg: &AgentConfig) -> Verdict {
    verdict_for(PolicyValue::or_no_match(matched), cfg)
}

/// [`verdict`] for a match in the [`PolicyValue::NO_MATCH`] form (what the kernel runs).
#[must_use]
#[inline(always)]
pub fn verdict_for(best: PolicyValue, cfg: &AgentConfig) -> Verdict {
    let raw = if best.is_match() {
        best.decision
    } else {
        cfg.default_decision
    };
    // NO_MATCH carries DEFAULT_RULE_ID: no branch needed.
    let rule_id = best.rule_id;
    let decision = Decision::from_u8_or_deny(raw);
    let enforced = match Mode::from_u8(cfg.mode) {
        Some(Mode::Shadow) => match decision {
            Decision::Allow => Decision::Allow,
            _ => Decision::Audit,
        },
        Some(Mode::Enforce) | None => decision,
    };
    Verdict {
        decision,
        enforced,
        rule_id,
    }
}

/// Slots for slash positions in a [`PathLayout`]: enough for every wildcard-capable component
/// (its leading and its trailing slash), and a power of two.
pub const SLASH_SLOTS: usize = 64;

/// Where the slashes of a lookup key's path are, found by [`scan_path`] in a single pass so that
/// each wildcard lookup after it is plain arithmetic plus two bulk copies.
///
/// The kernel keeps it in map memory: [`scan_path`] writes it with volatile stores so the loop
/// carries no state in registers, which lets the verifier merge the branches of every iteration
/// instead of exploring each combination.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PathLayout {
    /// Path bytes before the terminator (all significant path bytes when unterminated).
    pub len: u32,
    /// 1 when the key holds the whole path (terminated); 0 when it was cut at 251 bytes.
    pub terminated: u32,
    /// Slashes recorded in `slash_at`.
    pub slashes: u32,
    /// Explicit padding.
    pub pad: u32,
    /// Path index of the `n`-th slash.
    pub slash_at: [u8; SLASH_SLOTS],
}

impl PathLayout {
    /// Nothing scanned yet.
    pub const EMPTY: Self = Self {
        len: 0,
        terminated: 0,
        slashes: 0,
        pad: 0,
        slash_at: [0; SLASH_SLOTS],
    };
}

/// Records the length, termination and slash positions of the path in lookup key `key`.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "path indices are below PATH_CAPACITY (251), slash counts below SLASH_SLOTS"
)]
pub fn scan_path(key: &PolicyKey, out: &mut PathLayout) {
    // SAFETY (all volatile accesses): plain integer fields of a valid `&mut`.
    unsafe {
        core::ptr::write_volatile(&raw mut out.len, 0);
        core::ptr::write_volatile(&raw mut out.terminated, 0);
        core::ptr::write_volatile(&raw mut out.slashes, 0);
    }
    let path_bytes = key.significant_len().saturating_sub(KEY_HEADER_LEN);
    let [_, _, _, _, _, path @ ..] = &key.data;
    for i in 0..PATH_CAPACITY {
        if i >= path_bytes {
            break;
        }
        let Some(&b) = path.get(i) else { break };
        if b == 0 {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(&raw mut out.terminated, 1) };
            break;
        }
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&raw mut out.len, i as u32 + 1) };
        if b == b'/' {
            // SAFETY: as above.
            let n = unsafe { core::ptr::read_volatile(&raw const out.slashes) } as usize;
            if let Some(slot) = out.slash_at.get_mut(n) {
                // SAFETY: as above.
                unsafe {
                    core::ptr::write_volatile(slot, i as u8);
                    core::ptr::write_volatile(&raw mut out.slashes, n as u32 + 1);
                }
            }
        }
    }
}

/// How to turn a lookup key into its wildcard key for one component: copy the whole key, put
/// `*` at path index `star_at`, and copy `tail_len` path bytes from `tail_from` (the rest of the
/// path after the component, terminator included when there is one) to `star_at + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Splice {
    pub star_at: usize,
    pub tail_from: usize,
    pub tail_len: usize,
    pub prefixlen: u32,
}

/// The [`Splice`] replacing component `component` (0 = first after the leading `/`) of the
/// scanned path by `*`, or `None` when there is nothing to look up: the path is not absolute,
/// has no such component or an empty one there, the component is cut off by the 251-byte
/// capacity (a wildcard rule needs the whole component), or `component` exceeds
/// [`MAX_WILDCARD_COMPONENT`]. A truncated path gives a truncated key (no terminator), so that
/// again only directory rules can match it.
#[must_use]
#[inline(always)]
pub fn splice(layout: &PathLayout, component: u32) -> Option<Splice> {
    if component > MAX_WILDCARD_COMPONENT {
        return None;
    }
    let k = component as usize;
    let slashes = layout.slashes as usize;
    let len = (layout.len as usize).min(PATH_CAPACITY);
    let terminated = layout.terminated != 0;
    if slashes == 0 || *layout.slash_at.first()? != 0 || k >= slashes {
        return None;
    }
    let start = usize::from(*layout.slash_at.get(k)?) + 1;
    let end = if k + 1 < slashes {
        usize::from(*layout.slash_at.get(k + 1)?)
    } else if terminated {
        len
    } else {
        return None;
    };
    if end <= start || end > len {
        return None;
    }
    let new_len = len - (end - start - 1);
    let (tail_len, prefixlen) = if terminated {
        (len - end + 1, prefix_bits(KEY_HEADER_LEN + new_len + 1))
    } else {
        (len - end, prefix_bits(KEY_HEADER_LEN + new_len))
    };
    Some(Splice {
        star_at: start,
        tail_from: end,
        tail_len,
        prefixlen,
    })
}

/// Builds the wildcard key described by `s` into `out`. `copy(out, out_at, src, src_at, len)`
/// copies `len` bytes of `src.data` from `src_at` to `out.data` at `out_at`; the caller supplies
/// it because the kernel copies with a helper while the host copies slices.
#[inline(always)]
pub fn apply_splice(
    src: &PolicyKey,
    s: &Splice,
    out: &mut PolicyKey,
    copy: &impl Fn(&mut PolicyKey, usize, &PolicyKey, usize, usize),
) {
    copy(out, 0, src, 0, KEY_DATA_LEN);
    if let Some(star) = out.data.get_mut(KEY_HEADER_LEN + s.star_at) {
        *star = b'*';
    }
    copy(
        out,
        KEY_HEADER_LEN + s.star_at + 1,
        src,
        KEY_HEADER_LEN + s.tail_from,
        s.tail_len,
    );
    out.prefixlen = s.prefixlen;
}

/// `copy` for [`apply_splice`] on the host: plain slice copies (out-of-range parts are skipped).
pub fn copy_slices(out: &mut PolicyKey, out_at: usize, src: &PolicyKey, src_at: usize, len: usize) {
    if let (Some(dst), Some(from)) = (
        out.data.get_mut(out_at..out_at + len),
        src.data.get(src_at..src_at + len),
    ) {
        dst.copy_from_slice(from);
    }
}

/// Builds into `out` the lookup key of the path in `src` with its component `component`
/// replaced by a single `*` (see [`splice`] for when there is none: then `false`, and `out` is
/// unspecified). Host convenience over [`scan_path`], [`splice`] and [`apply_splice`].
#[must_use]
pub fn wildcard_key(src: &PolicyKey, component: u32, out: &mut PolicyKey) -> bool {
    let mut layout = PathLayout::EMPTY;
    scan_path(src, &mut layout);
    match splice(&layout, component) {
        Some(s) => {
            apply_splice(src, &s, out, &copy_slices);
            true
        }
        None => false,
    }
}

/// The verdict for the operation whose lookup key is `key`: the whole kernel-side algorithm,
/// generic over the map lookup and the byte copy so the host runs exactly what the kernel runs.
///
/// Looks up `key`; when the agent has wildcard rules, scans the path once and looks up, for
/// each bit of `cfg.wildcard_components`, the key with that component replaced by `*` (built in
/// `wildcard`); decides by the best match. `lookup` returns [`PolicyValue::NO_MATCH`] for a key
/// the map does not hold.
#[inline(always)]
pub fn evaluate_with(
    lookup: impl Fn(&PolicyKey) -> PolicyValue,
    key: &PolicyKey,
    cfg: &AgentConfig,
    layout: &mut PathLayout,
    wildcard: &mut PolicyKey,
    copy: impl Fn(&mut PolicyKey, usize, &PolicyKey, usize, usize),
) -> Verdict {
    let mut best = lookup(key);
    let mask = cfg.wildcard_components;
    if mask != 0 {
        scan_path(key, layout);
        for component in 0..u32::BITS {
            if mask & (1 << component) != 0
                && let Some(s) = splice(layout, component)
            {
                apply_splice(key, &s, wildcard, &copy);
                best = best.best_of(lookup(wildcard));
            }
        }
    }
    verdict_for(best, cfg)
}

/// [`evaluate_with`] with host memory: a stack [`PathLayout`] and slice copies.
pub fn evaluate(
    lookup: impl Fn(&PolicyKey) -> Option<PolicyValue>,
    key: &PolicyKey,
    cfg: &AgentConfig,
    scratch: &mut PolicyKey,
) -> Verdict {
    let mut layout = PathLayout::EMPTY;
    evaluate_with(
        |k| PolicyValue::or_no_match(lookup(k)),
        key,
        cfg,
        &mut layout,
        scratch,
        copy_slices,
    )
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)`: a u32 and a byte array of a size divisible by 4, no padding.
    unsafe impl aya::Pod for super::PolicyKey {}
    // SAFETY: `repr(C)` struct of plain integers, padding explicit.
    unsafe impl aya::Pod for super::PolicyValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AgentConfig {}
    // SAFETY: `repr(C)`, three u32, no padding.
    unsafe impl aya::Pod for super::IdentityKey {}
}

#[cfg(test)]
mod tests;
