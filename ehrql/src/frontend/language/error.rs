//! Errors of the language front end, and turning parser byte offsets into the `file:line:column`
//! a researcher's editor understands (both 1-based; columns count characters).

use std::path::PathBuf;

use rustpython_ruff_text_size::TextSize;

use crate::query_model::QueryError;

/// Why a definition file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LanguageError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The definition file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The definition file.
        path: PathBuf,
    },
    /// A bug in the evaluator (reported, never a crash).
    #[error("internal error in the ehrQL language front end: {0}")]
    Internal(String),
    /// Something in the definition is wrong or not allowed, at a known place.
    #[error("{file}:{line}:{column}: {kind}")]
    Definition {
        /// The file name as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What is wrong.
        kind: ErrorKind,
    },
}

impl LanguageError {
    /// What is wrong, for definition errors.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            LanguageError::Definition { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

/// What is wrong with a definition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not valid Python.
    #[error("invalid syntax: {0}")]
    Syntax(String),
    /// An import of anything but ehrQL.
    #[error("importing '{0}' is not allowed: only 'ehrql' and 'ehrql.tables…' can be imported")]
    ImportNotAllowed(String),
    /// A Python construct or ehrQL feature this front end does not evaluate.
    #[error("{0} is not supported in a dataset definition")]
    NotSupported(String),
    /// A name that was never defined or imported.
    #[error("name '{0}' is not defined")]
    UnknownName(String),
    /// An attribute the object does not have.
    #[error("{on} has no attribute '{name}'")]
    NoAttribute {
        /// What the object is, in words.
        on: String,
        /// The attribute.
        name: String,
    },
    /// A value of the wrong kind (Python-level type errors).
    #[error("{0}")]
    Type(String),
    /// An invalid value or call.
    #[error("{0}")]
    Invalid(String),
    /// A query-model rule (type or domain) was broken.
    #[error("{0}")]
    Query(#[from] QueryError),
    /// A codelist file could not be used.
    #[error("codelist '{path}': {reason}")]
    Codelist {
        /// The path as written.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A dataset rule (population, variable names) was broken.
    #[error("{0}")]
    Dataset(String),
    /// An evaluation limit was reached (the definition is too big, deep or slow).
    #[error("{0}")]
    Limit(String),
}

/// An error with the byte offset where it happened; converted to a [`LanguageError`] at the top.
#[derive(Debug)]
pub(super) struct Fail {
    pub(super) at: TextSize,
    pub(super) kind: ErrorKind,
}

/// Offsets of line starts, to turn byte offsets into line and column.
pub(super) struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(super) fn new(source: &'a str) -> LineIndex<'a> {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { source, starts }
    }

    pub(super) fn error(&self, file: &str, at: TextSize, kind: ErrorKind) -> LanguageError {
        let offset = (u32::from(at) as usize).min(self.source.len());
        let line = self.starts.partition_point(|s| *s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self
            .source
            .get(start..offset)
            .map_or(0, |text| text.chars().count())
            + 1;
        LanguageError::Definition {
            file: file.to_string(),
            line,
            column,
            kind,
        }
    }
}

/// Deepest bracket nesting accepted before parsing, so neither the parser nor the evaluator can
/// exhaust the stack. Real definitions nest a handful of levels.
const MAX_BRACKET_DEPTH: usize = 100;

/// The offset of the first bracket nested deeper than [`MAX_BRACKET_DEPTH`]. Brackets inside
/// strings are counted too: that can only refuse absurd input, never accept it.
pub(super) fn too_deeply_bracketed(source: &str) -> Option<TextSize> {
    let mut depth = 0usize;
    for (i, b) in source.bytes().enumerate() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_BRACKET_DEPTH {
                    return Some(TextSize::new(u32::try_from(i).unwrap_or(u32::MAX)));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}
