//! Errors and warnings about files (policies, case files) as `FILE:LINE:COL: message`, and on a
//! terminal with the offending line and a caret under the column, as compilers show them.
use std::{collections::HashMap, fmt::Write as _, fs, path::PathBuf};

use serde::Serialize;

use crate::{
    policy::{PolicyError, Position},
    text::escape,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; `None` for the whole file.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    #[must_use]
    pub fn error(file: PathBuf, position: Option<Position>, message: String) -> Self {
        Self::new(Severity::Error, file, position, message)
    }

    #[must_use]
    pub fn warning(file: PathBuf, position: Option<Position>, message: String) -> Self {
        Self::new(Severity::Warning, file, position, message)
    }

    fn new(severity: Severity, file: PathBuf, position: Option<Position>, message: String) -> Self {
        Self {
            file,
            line: position.map(|p| p.line),
            column: position.map(|p| p.column),
            severity,
            message,
        }
    }

    /// The one-line form, `FILE:LINE:COL: [warning: ]message`.
    #[must_use]
    pub fn line(&self) -> String {
        let kind = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        match (self.line, self.column) {
            (Some(l), Some(c)) => {
                format!("{}:{l}:{c}: {kind}{}", self.file.display(), self.message)
            }
            _ => format!("{}: {kind}{}", self.file.display(), self.message),
        }
    }
}

impl From<&PolicyError> for Diagnostic {
    fn from(e: &PolicyError) -> Self {
        Self::error(e.file.clone(), e.position, e.message.clone())
    }
}

/// The diagnostics as text: one line each, and with `carets` the source line and a caret under
/// the column after each that has a position (the file is read again for it; a file that
/// cannot be read, or a line it no longer has, is shown without).
#[must_use]
pub fn render(diagnostics: &[Diagnostic], carets: bool) -> String {
    let mut sources: HashMap<&PathBuf, Option<String>> = HashMap::new();
    let mut out = String::new();
    for d in diagnostics {
        let _ = writeln!(out, "{}", d.line());
        if !carets {
            continue;
        }
        let (Some(line), Some(column)) = (d.line, d.column) else {
            continue;
        };
        let text = sources
            .entry(&d.file)
            .or_insert_with(|| fs::read_to_string(&d.file).ok());
        let Some(source) = text.as_deref().and_then(|t| t.lines().nth(line - 1)) else {
            continue;
        };
        let number = line.to_string();
        let gutter = " ".repeat(number.len());
        // Tabs stay tabs under the caret so the caret lines up in any tab width; every other
        // character before the column is one space. The line is escaped like any text from a
        // file someone else wrote.
        let pad: String = source
            .chars()
            .take(column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let shown: Vec<String> = source.split('\t').map(|s| escape(s).into_owned()).collect();
        let shown = shown.join("\t");
        let _ = writeln!(out, "{gutter} |");
        let _ = writeln!(out, "{number} | {shown}");
        let _ = writeln!(out, "{gutter} | {pad}^");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn carets_point_at_the_column_of_the_line() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "[agent]\nname = \"x\"\n\tdefualt = 1\n").unwrap();
        let d = [
            Diagnostic::error(
                file.path().to_owned(),
                Some(Position { line: 3, column: 2 }),
                "unknown field `defualt`".to_owned(),
            ),
            Diagnostic::warning(file.path().to_owned(), None, "whole file".to_owned()),
        ];
        let shown = render(&d, true);
        let lines: Vec<&str> = shown.lines().collect();
        assert!(
            lines[0].ends_with(":3:2: unknown field `defualt`"),
            "{shown}"
        );
        assert_eq!(lines[1], "  |");
        assert_eq!(lines[2], "3 | \tdefualt = 1");
        assert_eq!(lines[3], "  | \t^");
        assert!(lines[4].ends_with(": warning: whole file"), "{shown}");
        assert_eq!(lines.len(), 5);
        assert_eq!(render(&d, false).lines().count(), 2);
    }
}
