//! The one error this crate returns: [`ValidationError`], the full text a researcher sees plus,
//! where the YAML parser knows it, the line and column of the offending node.

use std::fmt;

/// A position in `project.yaml`, both numbers counted from 1 (as editors show them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number in characters, starting at 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a `project.yaml` was rejected.
///
/// [`ValidationError::message`] is the complete text shown to researchers. For schema errors it is
/// exactly the reference's: `Invalid project: <filename>\n<reason>`. YAML syntax errors use the
/// same first line (the reference shows the bare parser message instead; see the crate README),
/// followed by the parser's reason and `  in "<filename>", line L, column C`.
///
/// [`ValidationError::location`] gives the position separately, so callers can point at it without
/// parsing the message; schema messages do not embed it, to keep the reference's wording exact.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    message: String,
    location: Option<Location>,
    kind: ErrorKind,
}

/// Which stage rejected the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text is not well-formed YAML, or uses YAML we refuse (duplicate keys, unknown tags,
    /// several documents, alias bombs, nesting too deep).
    Yaml,
    /// The YAML is well formed but breaks a `project.yaml` rule.
    Schema,
}

impl ValidationError {
    /// The full message, starting `Invalid project: <filename>`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where in the file the problem is, when known.
    pub fn location(&self) -> Option<Location> {
        self.location
    }

    /// Whether the YAML itself or a `project.yaml` rule failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The reason alone: the message without its `Invalid project: <filename>` first line.
    pub fn reason(&self) -> &str {
        match self.message.split_once('\n') {
            Some((_, reason)) => reason,
            None => &self.message,
        }
    }

    pub(crate) fn new(
        filename: &str,
        reason: &str,
        location: Option<Location>,
        kind: ErrorKind,
    ) -> Self {
        let message = format!("Invalid project: {filename}\n{reason}");
        Self {
            message,
            location,
            kind,
        }
    }
}

/// A rule failure inside the crate, before the filename is known to the code that found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) reason: String,
    pub(crate) location: Option<Location>,
    pub(crate) kind: ErrorKind,
}

impl Failure {
    pub(crate) fn schema(reason: impl Into<String>, location: Option<Location>) -> Self {
        Self {
            reason: reason.into(),
            location,
            kind: ErrorKind::Schema,
        }
    }

    pub(crate) fn yaml(reason: impl Into<String>, location: Option<Location>) -> Self {
        Self {
            reason: reason.into(),
            location,
            kind: ErrorKind::Yaml,
        }
    }

    pub(crate) fn into_error(self, filename: &str) -> ValidationError {
        let reason = match (self.kind, self.location) {
            // YAML errors carry their position in the text, as the reference's YAML parser's do.
            (ErrorKind::Yaml, Some(location)) => format!(
                "{}\n  in \"{filename}\", line {}, column {}",
                self.reason, location.line, location.column
            ),
            _ => self.reason,
        };
        ValidationError::new(filename, &reason, self.location, self.kind)
    }
}
