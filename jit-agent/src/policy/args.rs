//! Argument-vector patterns: the `args` condition of a rule, which decides a held `exec` by its
//! command line (policies/README.md, "Conditions"), and the value patterns of `env`.
//!
//! A pattern is a list with one item per argument after the program (`argv[1..]`; the program
//! itself is the rule's `path`), read at a glance:
//!
//! - `"push"` matches exactly that argument;
//! - `"*"` matches any one argument (also an empty one); inside an item `*` matches any run of
//!   characters and `?` one character (`"--force*"`, `"v?.?"`); `\*`, `\?` and `\\` are the
//!   characters themselves;
//! - `"**"` as an item of its own matches any number of arguments, none included.
//!
//! So `["push", "*", "**"]` is "`push` and at least one more argument", `["status"]` is exactly
//! `status` with nothing after it, `["push", "**", "--force*", "**"]` is a push with a
//! `--force…` argument anywhere, and `["**"]` is any command line.
use std::fmt;

/// One item of a pattern, matching one argument.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Char(char),
    /// `?`
    One,
    /// `*`
    Any,
}

/// One item of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    /// Matches one argument.
    Arg(Vec<Piece>),
    /// `**`: any number of arguments.
    Any,
}

/// A validated argument-vector pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgsPattern {
    items: Vec<Item>,
}

/// Why an item is not a valid pattern; `index` is the item's position in the list, so the
/// policy loader can point at its `FILE:LINE:COL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgsError {
    pub index: usize,
    pub message: String,
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "argument pattern {}: {}", self.index + 1, self.message)
    }
}

impl ArgsPattern {
    /// Parses the items of a pattern.
    ///
    /// # Errors
    /// Two `**` in a row, a `**` inside an item (`"a**"`: write `"a*"`), a trailing `\`, a NUL
    /// (no argument can hold one).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, ArgsError> {
        let mut out = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let item = item.as_ref();
            let error = |message: String| ArgsError { index, message };
            if item == "**" {
                if out.last() == Some(&Item::Any) {
                    return Err(error(
                        "`**` twice in a row means the same as once".to_owned(),
                    ));
                }
                out.push(Item::Any);
                continue;
            }
            let mut pieces = Vec::new();
            let mut chars = item.chars();
            while let Some(c) = chars.next() {
                pieces.push(match c {
                    '\0' => return Err(error("an argument cannot contain NUL".to_owned())),
                    '\\' => match chars.next() {
                        Some(e @ ('*' | '?' | '\\')) => Piece::Char(e),
                        Some(other) => {
                            return Err(error(format!(
                                "`\\{other}` is not an escape: only `\\*`, `\\?` and `\\\\` are"
                            )));
                        }
                        None => return Err(error("ends in a lone `\\`".to_owned())),
                    },
                    '*' if pieces.last() == Some(&Piece::Any) => {
                        return Err(error(format!(
                            "`**` inside `{item}` means the same as `*`; `**` alone, as the last \
                             item, means any further arguments"
                        )));
                    }
                    '*' => Piece::Any,
                    '?' => Piece::One,
                    c => Piece::Char(c),
                });
            }
            out.push(Item::Arg(pieces));
        }
        Ok(Self { items: out })
    }

    /// Whether `args` (the arguments after the program, `argv[1..]`) match. Dynamic
    /// programming over (item, argument): each argument is globbed at most once per item, so
    /// a pattern with several `**` stays linear in the command line's length.
    #[must_use]
    pub fn matches<S: AsRef<str>>(&self, args: &[S]) -> bool {
        let n = args.len();
        // `next[j]`: the items after the current one match `args[j..]`.
        let mut next = vec![false; n + 1];
        next[n] = true;
        for item in self.items.iter().rev() {
            let mut here = vec![false; n + 1];
            for j in (0..=n).rev() {
                here[j] = match item {
                    Item::Any => next[j] || (j < n && here[j + 1]),
                    Item::Arg(pieces) => j < n && next[j + 1] && glob(pieces, args[j].as_ref()),
                };
            }
            next = here;
        }
        next[0]
    }
}

/// Wildcard matching in linear time: on a mismatch after a `*`, retry with the `*` taking one
/// more character (only the last `*` ever needs to be retried).
fn glob(pieces: &[Piece], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pieces.get(p) {
            Some(Piece::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Piece::One) => {
                p += 1;
                t += 1;
            }
            Some(Piece::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pieces[p..].iter().all(|x| *x == Piece::Any)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pattern(items: &[&str]) -> ArgsPattern {
        ArgsPattern::parse(items).unwrap()
    }

    #[test]
    fn reads_as_written() {
        let push = pattern(&["push", "*", "**"]);
        assert!(push.matches(&["push", "origin"]));
        assert!(push.matches(&["push", "origin", "main", "--force"]));
        assert!(!push.matches(&["push"]), "`*` needs an argument");
        assert!(!push.matches(&["pull", "origin"]));
        let status = pattern(&["status"]);
        assert!(status.matches(&["status"]));
        assert!(
            !status.matches(&["status", "--short"]),
            "no `**`: nothing after"
        );
        assert!(pattern(&["**"]).matches::<&str>(&[]));
        assert!(pattern(&[]).matches::<&str>(&[]));
        assert!(!pattern(&[]).matches(&["x"]));
        let force = pattern(&["push", "**"]);
        assert!(force.matches(&["push"]));
        let flag = pattern(&["--force*", "v?.?"]);
        assert!(flag.matches(&["--force-with-lease", "v1.2"]));
        assert!(!flag.matches(&["--forc", "v1.2"]));
        assert!(!flag.matches(&["--force", "v1.23"]));
        assert!(
            pattern(&["*"]).matches(&[""]),
            "an empty argument is one argument"
        );
        assert!(pattern(&["\\*"]).matches(&["*"]));
        assert!(!pattern(&["\\*"]).matches(&["x"]));
        assert!(pattern(&["a\\\\b"]).matches(&["a\\b"]));
        assert!(pattern(&["é*"]).matches(&["été"]), "characters, not bytes");
        let anywhere = pattern(&["push", "**", "--force*", "**"]);
        assert!(anywhere.matches(&["push", "--force"]));
        assert!(anywhere.matches(&["push", "origin", "main", "--force-with-lease"]));
        assert!(anywhere.matches(&["push", "origin", "--force", "main"]));
        assert!(!anywhere.matches(&["push", "origin", "main"]));
        assert!(!anywhere.matches(&["pull", "--force"]));
        let main = pattern(&["push", "**", "*main"]);
        assert!(main.matches(&["push", "origin", "HEAD:main"]));
        assert!(
            !main.matches(&["push", "origin", "main", "--tags"]),
            "`*main` is last"
        );
    }

    #[test]
    fn mistakes_name_the_item() {
        let err = |items: &[&str]| ArgsPattern::parse(items).unwrap_err();
        assert_eq!(err(&["push", "**", "**"]).index, 2);
        assert!(err(&["**", "**"]).message.contains("twice in a row"));
        assert_eq!(err(&["push", "a**"]).index, 1);
        assert!(
            err(&["push", "a**"])
                .message
                .contains("means the same as `*`")
        );
        assert!(err(&["a\\"]).message.contains("lone `\\`"));
        assert!(err(&["\\n"]).message.contains("is not an escape"));
        assert!(err(&["a\0"]).message.contains("NUL"));
        assert_eq!(
            err(&["x", "**", "**"]).to_string(),
            "argument pattern 3: `**` twice in a row means the same as once"
        );
    }

    /// The reference: the textbook recursive definition, exponential but obviously right.
    fn reference(pieces: &[Piece], text: &[char]) -> bool {
        match pieces.split_first() {
            None => text.is_empty(),
            Some((Piece::Any, rest)) => (0..=text.len()).any(|i| reference(rest, &text[i..])),
            Some((Piece::One, rest)) => !text.is_empty() && reference(rest, &text[1..]),
            Some((Piece::Char(c), rest)) => text.first() == Some(c) && reference(rest, &text[1..]),
        }
    }

    /// The reference for lists: the recursive definition over items.
    fn reference_list(items: &[Item], args: &[&str]) -> bool {
        match items.split_first() {
            None => args.is_empty(),
            Some((Item::Any, rest)) => (0..=args.len()).any(|i| reference_list(rest, &args[i..])),
            Some((Item::Arg(pieces), rest)) => args.split_first().is_some_and(|(a, tail)| {
                let chars: Vec<char> = a.chars().collect();
                reference(pieces, &chars) && reference_list(rest, tail)
            }),
        }
    }

    proptest! {
        #[test]
        fn lists_agree_with_the_reference(
            items in proptest::collection::vec("a|b|\\*|\\*\\*|a\\*", 0..5),
            args in proptest::collection::vec("a|b|ab|", 0..6),
        ) {
            let Ok(p) = ArgsPattern::parse(&items) else {
                // Two `**` in a row: refused, nothing to compare.
                return Ok(());
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            prop_assert_eq!(p.matches(&args), reference_list(&p.items, &args));
        }

        #[test]
        fn glob_agrees_with_the_reference(
            item in "[ab*?]{0,8}",
            text in "[ab]{0,10}",
        ) {
            // `**` inside an item is refused by the parser; collapse it as a user would.
            let mut item = item;
            while item.contains("**") {
                item = item.replace("**", "*");
            }
            let p = ArgsPattern::parse(&[item.as_str()]).unwrap();
            let chars: Vec<char> = text.chars().collect();
            let Item::Arg(pieces) = &p.items[0] else {
                unreachable!("one item that is not `**`")
            };
            prop_assert_eq!(glob(pieces, &text), reference(pieces, &chars));
        }

        #[test]
        fn counts_follow_the_rest_marker(n in 0usize..4, extra in 0usize..4, rest: bool) {
            let mut items = vec!["*"; n];
            if rest {
                items.push("**");
            }
            let p = ArgsPattern::parse(&items).unwrap();
            let args = vec!["x"; n + extra];
            prop_assert_eq!(p.matches(&args), extra == 0 || rest);
        }
    }
}
