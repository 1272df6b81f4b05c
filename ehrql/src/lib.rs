//! ehrQL: turns a dataset definition into patient-level results.
//!
//! A definition arrives as ehrQL's serializer JSON (the process boundary ehrQL itself uses
//! between the sandboxed user code and the engine), is rebuilt and re-validated as a query-model
//! graph, then run by a query engine whose rows stream into an output file.
//!
//! # Layout
//! - [`query_model`]: node arena, types, domains, every validation rule; the `Dataset` root.
//! - [`frontend::json`]: the serializer JSON loader (trust boundary).
//! - [`tables`]: trusted table schemas (`ehrql.tables.core`, the conformance suite's tables).
//! - [`engines`]: the `Engine` trait; [`engines::memory`] (the semantic reference) and
//!   [`engines::sqlite`].
//! - [`sql`]: the SQL compiler and its dialect abstraction.
//! - [`output`]: CSV, CSV.gz and Arrow writers with the reference's byte rules.
//! - [`backends`]: where ehrQL's tables are in a provider's database (`tpp`), as SQL views.
//! - [`dummy_data`]: generated source tables satisfying the population (no database needed).
//! - [`local_files`]: table files (CSV, CSV.gz, Arrow) read and written for dummy data.
//! - [`cli`]: the `ehrql` command line (`generate-dataset`, `dump-dataset-sql`).
//!
//! # Invariants
//! - The query model knows no SQL; engines know no front end.
//! - A `NodeId` always names a node that passed every type and domain rule.
//! - No input (definition, data, flags) can make the library panic.

pub mod backends;
pub mod cli;
pub mod dummy_data;
pub mod engines;
pub mod frontend;
pub mod local_files;
pub mod measures;
pub mod output;
pub mod query_model;
pub mod sql;
pub mod tables;
