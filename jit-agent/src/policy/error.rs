//! Policy errors: each names the file and, when it is about a piece of the text, the 1-based
//! line and column where that piece starts, so editors and CI annotate the exact spot.
use std::{fmt, ops::Range, path::PathBuf};

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// Line 1, column 1: for errors about a whole file, such as a missing section.
    pub const START: Self = Self { line: 1, column: 1 };

    /// The position of byte `offset` of `text` (clamped to the text, moved back to a character
    /// boundary).
    #[must_use]
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One thing wrong with a policy.
///
/// Displays as `FILE:LINE:COL: message`, or `FILE: message` for problems that concern no
/// particular text (an unreadable file, an empty directory).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub struct PolicyError {
    /// The policy file (or directory) as given to the loader.
    pub file: PathBuf,
    /// Where in the file; `None` when the problem is with the file as a whole.
    pub position: Option<Position>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{}:{p}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every error found in a policy set, sorted by file, then position.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    #[must_use]
    pub fn errors(&self) -> &[PolicyError] {
        &self.0
    }
}

impl fmt::Display for PolicyErrors {
    /// One error per line, without a trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects the errors of one file, turning byte spans into positions.
pub(super) struct FileErrors<'a> {
    pub file: PathBuf,
    pub text: &'a str,
    pub errors: &'a mut Vec<PolicyError>,
    /// Byte offset of the start of each line: every rule records its position, and finding a
    /// line by scanning the text before it would make checking a file quadratic in its size
    /// (100,000 rules took minutes).
    line_starts: Vec<usize>,
}

impl<'a> FileErrors<'a> {
    pub fn new(file: PathBuf, text: &'a str, errors: &'a mut Vec<PolicyError>) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file,
            text,
            errors,
            line_starts,
        }
    }

    /// Reports `message` at the start of `span`.
    pub fn at(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let position = self.position(span);
        self.at_position(position, message);
    }

    pub fn at_position(&mut self, position: Position, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.clone(),
            position: Some(position),
            message: message.into(),
        });
    }

    /// The position of the start of `span`: [`Position::of_offset`], by the line index.
    pub fn position(&self, span: &Range<usize>) -> Position {
        let mut offset = span.start.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // The last line starting at or before `offset`.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        Position {
            line,
            column: self.text[start..offset].chars().count() + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_index_finds_the_same_positions_as_a_scan() {
        let text = "ab\n\u{fc}x = 1\n\n[[rule]]\nname = \"r\u{e9}\"\n";
        let mut errors = Vec::new();
        let errs = FileErrors::new(PathBuf::from("t.toml"), text, &mut errors);
        for offset in 0..=text.len() + 2 {
            assert_eq!(
                errs.position(&(offset..offset)),
                Position::of_offset(text, offset),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "ab\nüx = 1\n";
        assert_eq!(Position::of_offset(text, 0), Position::START);
        assert_eq!(
            Position::of_offset(text, 3),
            Position { line: 2, column: 1 }
        );
        // 'x' follows the two-byte 'ü'.
        assert_eq!(
            Position::of_offset(text, 5),
            Position { line: 2, column: 2 }
        );
        // Inside the 'ü': moved back to its start.
        assert_eq!(
            Position::of_offset(text, 4),
            Position { line: 2, column: 1 }
        );
        assert_eq!(
            Position::of_offset(text, 999),
            Position { line: 3, column: 1 }
        );
    }
}
