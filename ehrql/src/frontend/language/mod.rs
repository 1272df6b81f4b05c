//! The ehrQL language front end: reads a researcher's `dataset_definition.py` without running
//! Python. The file is parsed with ruff's Python parser, then walked by our own small evaluator
//! that knows only the ehrQL surface (spec §3): imports from `ehrql`, `ehrql.codes` and
//! `ehrql.tables.*`, `create_dataset`, frames, series and their methods, `case`/`when`,
//! durations, `codelist_from_csv`, plus the plain Python a definition needs around them
//! (variables, lists, dicts, loops and comprehensions, f-strings, `if`, functions).
//!
//! The result is the same query-model [`Dataset`] the serializer-JSON loader
//! ([`crate::frontend::json`]) produces, built through the same validating [`Graph`]
//! constructors, so every engine runs it unchanged. Anything outside that surface (other
//! imports, file or network access, classes, `while`, `try`, …) is refused with the file, line
//! and column of the construct. Evaluation is bounded (call depth, loop steps, collection
//! sizes) so no input can hang or crash the process.
//!
//! [`Graph`]: crate::query_model::Graph

mod builtins;
mod codelist;
mod error;
mod interp;
mod ops;
mod value;

use std::path::Path;

pub use error::{ErrorKind, LanguageError};

pub use super::{Definition, DummyDataConfig};
use crate::measures::MeasuresDefinition;
use crate::query_model::Dataset;

/// Largest definition file accepted; real definitions are a few kilobytes.
const MAX_SOURCE_BYTES: usize = 1 << 20;

/// Reads and evaluates an ehrQL dataset definition file.
///
/// Codelist paths are relative to the current directory, the workspace root, as in the
/// reference (the RAP runs `ehrql generate-dataset analysis/dataset_definition.py` from the
/// workspace, and studies write `codelist_from_csv("codelists/….csv")`); they may not leave it.
///
/// # Errors
/// The file cannot be read, is not valid Python, uses something outside the ehrQL surface, or
/// builds an invalid dataset; see [`LanguageError`].
pub fn load_definition(path: &Path) -> Result<Dataset, LanguageError> {
    load_definition_file(path).map(|definition| definition.dataset)
}

/// Like [`load_definition`], also returning the dummy-data settings and claimed permissions.
///
/// # Errors
/// As [`load_definition`].
pub fn load_definition_file(path: &Path) -> Result<Definition, LanguageError> {
    let (source, file_name) = read_source(path)?;
    load_source(&source, &file_name, Path::new("."))
}

/// The text of a definition file, and the name messages give it: the path as the researcher
/// gave it (`analysis/dataset_definition.py:3:1`).
fn read_source(path: &Path) -> Result<(String, String), LanguageError> {
    let source = std::fs::read(path).map_err(|source| LanguageError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let source = String::from_utf8(source).map_err(|_| LanguageError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    Ok((source, path.display().to_string()))
}

/// Evaluates definition source text. `file_name` is used in messages; `workspace` is the
/// directory codelist paths are relative to (and confined to).
///
/// # Errors
/// As [`load_definition`].
pub fn load_definition_source(
    source: &str,
    file_name: &str,
    workspace: &Path,
) -> Result<Dataset, LanguageError> {
    load_source(source, file_name, workspace).map(|definition| definition.dataset)
}

/// Like [`load_definition_source`], also returning the dummy-data settings and claimed
/// permissions.
///
/// # Errors
/// As [`load_definition`].
pub fn load_source(
    source: &str,
    file_name: &str,
    workspace: &Path,
) -> Result<Definition, LanguageError> {
    evaluate_on_own_thread(source, file_name, workspace, interp::run)
}

/// [`evaluate_with`] on a thread of its own. Parsing and evaluation recurse over the syntax
/// tree; a thread with a generous stack keeps the depth limits (brackets, expressions, calls)
/// well clear of the caller's stack size, whatever thread the caller runs on.
fn evaluate_on_own_thread<T: Send>(
    source: &str,
    file_name: &str,
    workspace: &Path,
    finish: for<'a> fn(&'a [rustpython_ruff_python_ast::Stmt], &'a Path) -> Result<T, error::Fail>,
) -> Result<T, LanguageError> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("ehrql-language".into())
            .stack_size(EVALUATION_STACK_BYTES)
            .spawn_scoped(scope, || {
                evaluate_with(source, file_name, workspace, finish)
            })
            .map_err(|e| LanguageError::Internal(format!("cannot start the evaluator: {e}")))?;
        worker
            .join()
            .map_err(|_| LanguageError::Internal("the evaluator failed unexpectedly".into()))?
    })
}

/// Stack for the parser and evaluator thread (reserved, not committed, memory).
const EVALUATION_STACK_BYTES: usize = 256 << 20;

/// Reads and evaluates a measures definition file (`measures = create_measures()` …); paths
/// as for [`load_definition`].
///
/// # Errors
/// As [`load_definition`], or no `measures` collection with at least one measure.
pub fn load_measures_file(path: &Path) -> Result<MeasuresDefinition, LanguageError> {
    let (source, file_name) = read_source(path)?;
    load_measures_source(&source, &file_name, Path::new("."))
}

/// [`load_measures_file`] over source text.
///
/// # Errors
/// As [`load_measures_file`].
pub fn load_measures_source(
    source: &str,
    file_name: &str,
    workspace: &Path,
) -> Result<MeasuresDefinition, LanguageError> {
    evaluate_on_own_thread(source, file_name, workspace, interp::run_measures)
}

/// Parses `source` and runs `finish` (which evaluates the module and picks out its result).
fn evaluate_with<T>(
    source: &str,
    file_name: &str,
    workspace: &Path,
    finish: for<'a> fn(&'a [rustpython_ruff_python_ast::Stmt], &'a Path) -> Result<T, error::Fail>,
) -> Result<T, LanguageError> {
    let lines = error::LineIndex::new(source);
    if source.len() > MAX_SOURCE_BYTES {
        return Err(lines.error(
            file_name,
            0.into(),
            ErrorKind::Limit(format!(
                "the definition is larger than {} bytes",
                MAX_SOURCE_BYTES
            )),
        ));
    }
    if let Some(offset) = error::too_deeply_bracketed(source) {
        return Err(lines.error(
            file_name,
            offset,
            ErrorKind::Limit("brackets are nested too deeply".into()),
        ));
    }
    let parsed = rustpython_ruff_python_parser::parse_module(source).map_err(|e| {
        lines.error(
            file_name,
            e.location.start(),
            ErrorKind::Syntax(e.error.to_string()),
        )
    })?;
    let module = parsed.into_syntax();
    finish(&module.body, workspace).map_err(|fail| lines.error(file_name, fail.at, fail.kind))
}
