//! `project.yaml`: parsing, validation with the reference's exact messages, and the derived data
//! the platform needs (actions in order, the needs graph, run argv and command line, output spec,
//! database-action detection, the image allow-list).
//!
//! ```
//! let text = "version: '5'\nactions:\n  a:\n    run: python:v2 a.py\n    outputs:\n      highly_sensitive:\n        x: output/x.csv\n";
//! let pipeline = rap_pipeline::load_pipeline(text).unwrap();
//! let action = pipeline.action("a").unwrap();
//! assert_eq!(action.run_command(), "python:v2 a.py");
//! assert!(!action.is_database_action());
//! ```
//!
//! # Layout
//! - [`load_pipeline`] (here): the entry point; YAML, then the rules, then the derived data.
//! - `yaml`: text to a position-carrying node tree (`saphyr-parser` events; duplicate keys, merge
//!   keys, alias and depth caps).
//! - `validate`: the rules in the reference's order (spec §1.8), first failure wins.
//! - [`model`]: [`Pipeline`], [`Action`], [`RunCommand`], [`OutputPattern`], [`Privacy`].
//! - [`features`]: the version feature-flag table (spec §1.6), as data.
//! - `command`: shell-style splitting and quoting of `run`, the tag rule, command patterns.
//! - `outputs`: the cohortextractor and ehrQL output rules (§1.8 steps 8–9, §1.10).
//! - `needs`: cycle detection, topological order, dependency closure.
//! - [`glob`]: output-pattern safety rules (§1.9) and `*`-within-a-segment matching.
//! - [`images`]: the allow-list and reusable-action repositories.
//! - `paths`, `pytext`: the Python path, number and JSON conventions the messages depend on.
//!
//! # Invariants
//! - Pure: no async, no IO, no global state. The `rap-pipeline` binary does the only IO.
//! - No input panics: every failure is a [`ValidationError`]. Nesting depth and alias expansion
//!   are capped so no document can exhaust the stack or memory.
//! - Messages are the reference's, word for word, wherever the reference gives one; where it
//!   leaks a raw exception we give our own message at the same point in the order. The crate
//!   README lists every deliberate difference.
//! - A [`Pipeline`] is only built from a file that passed every rule, so its getters cannot fail.

pub mod error;
pub mod features;
pub mod glob;
pub mod images;
pub mod model;

mod command;
mod needs;
mod outputs;
mod paths;
mod pytext;
mod validate;
mod yaml;

pub use error::{ErrorKind, Location, ValidationError};
pub use images::{is_allowed_image, reusable_action_repo};
pub use model::{
    Action, Expectations, OutputPattern, Pipeline, Privacy, RUN_ALL_COMMAND, RunCommand, Version,
    is_database_command,
};

/// The file name messages use when the caller gives none.
pub const DEFAULT_FILENAME: &str = "project.yaml";

/// Parses and validates a `project.yaml` given as text; messages name it `project.yaml`.
///
/// # Errors
/// The first rule the file breaks, as the reference words it (see [`ValidationError`]).
pub fn load_pipeline(yaml: &str) -> Result<Pipeline, ValidationError> {
    load_pipeline_named(yaml, DEFAULT_FILENAME)
}

/// Like [`load_pipeline`], with the file name to show in messages.
///
/// # Errors
/// The first rule the file breaks, as the reference words it (see [`ValidationError`]).
pub fn load_pipeline_named(yaml: &str, filename: &str) -> Result<Pipeline, ValidationError> {
    let root = yaml::parse(yaml).map_err(|failure| failure.into_error(filename))?;
    validate::build(root.as_ref()).map_err(|failure| failure.into_error(filename))
}
