//! The `ehrql` command line (spec §6.1, §6.2, §6.5): flag definitions and glue only; the work
//! lives in the library. `main` calls [`main`], which maps every failure to the reference's
//! exit codes and prints the error chain on stderr.
//!
//! Differences from the reference, on purpose: DEFINITION is a serialized-JSON definition
//! (produced by `ehrql serialize-definition` or any other tool) or a `.py` definition in the
//! ehrQL language, read by [`crate::frontend::language`] without running Python; without a DSN
//! there is no dummy-data generator yet, so `--dsn` is required; a malformed or invalid
//! definition exits with 2 (a usage error: the file handed to us is wrong), while a
//! `DefinitionError` reported by the producer passes its own exit code through.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::engines::memory::MemoryEngine;
use crate::engines::postgres::{self, PostgresEngine};
use crate::engines::sqlite::{self, SqliteEngine};
use crate::engines::{Engine, EngineError};
use crate::frontend::json::{LoadError, load_dataset};
use crate::frontend::language::{self, LanguageError};
use crate::output::{FileSink, StdoutSink};
use crate::query_model::Dataset;
use crate::sql::StatementKind;

/// Exit code: bad arguments or a malformed/invalid definition file.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a database error.
pub const EXIT_DATABASE: u8 = 5;
/// Exit code: an error in the user's definition reported by the producer.
pub const EXIT_DEFINITION: u8 = 10;

#[derive(Parser, Debug)]
#[command(
    name = "ehrql",
    version,
    about = "Run ehrQL dataset definitions",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a dataset definition against a database and write the dataset.
    GenerateDataset {
        /// The serialized dataset definition (JSON).
        definition: PathBuf,
        /// Output file (.csv, .csv.gz or .arrow); CSV on stdout if omitted.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Database URL; `sqlite:///relative.db`, `sqlite:////absolute.db` or
        /// `postgresql://user:password@host:port/database`.
        #[arg(long, env = "DATABASE_URL")]
        dsn: Option<String>,
        /// Query engine.
        #[arg(long, env = "OPENSAFELY_QUERY_ENGINE", value_enum)]
        query_engine: Option<QueryEngine>,
        /// Backend (only the default, table-named-as-ehrQL backend exists here).
        #[arg(long, env = "OPENSAFELY_BACKEND")]
        backend: Option<String>,
        /// User arguments for the definition (after `--`); recorded, not used by JSON input.
        #[arg(last = true)]
        user_args: Vec<String>,
    },
    /// Print the SQL a dataset definition compiles to.
    DumpDatasetSql {
        /// The serialized dataset definition (JSON).
        definition: PathBuf,
        /// Write the SQL here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Query engine whose SQL to print.
        #[arg(long, env = "OPENSAFELY_QUERY_ENGINE", value_enum)]
        query_engine: Option<QueryEngine>,
        /// Backend (only the default exists here).
        #[arg(long, env = "OPENSAFELY_BACKEND")]
        backend: Option<String>,
        /// User arguments (after `--`).
        #[arg(last = true)]
        user_args: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum QueryEngine {
    /// Compile to SQL and run on SQLite.
    Sqlite,
    /// Evaluate in memory (the reference semantics).
    #[value(name = "in_memory", alias = "in-memory")]
    InMemory,
}

/// Stack size of the thread doing the work (virtual: only touched pages cost memory).
const WORKER_STACK_BYTES: usize = 512 * 1024 * 1024;

/// A failure with its exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn fail(code: u8, error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code,
        error: error.into(),
    }
}

/// Runs the CLI with the process arguments.
pub fn main() -> ExitCode {
    run(std::env::args_os())
}

/// Runs the CLI with `args` (the first is the program name) and returns the exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version on stdout (exit 0) and usage errors on stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    // Engines and the compiler recurse over the query graph (at most the loader's nesting
    // limit deep); a generous stack on a worker thread keeps deep but valid definitions safe.
    let worker = std::thread::Builder::new()
        .name("ehrql".into())
        .stack_size(WORKER_STACK_BYTES)
        .spawn(move || dispatch(cli.command));
    let result = match worker {
        Ok(handle) => handle.join().unwrap_or_else(|_| {
            Err(fail(
                1,
                anyhow::anyhow!("internal error: the worker thread panicked"),
            ))
        }),
        Err(e) => Err(fail(
            1,
            anyhow::Error::new(e).context("starting the worker thread"),
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("ehrql: error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

fn check_backend(backend: Option<&str>) -> Result<(), Failure> {
    match backend {
        None | Some("" | "expectations" | "test") => Ok(()),
        Some(other) => Err(fail(
            EXIT_USAGE,
            anyhow::anyhow!("backend '{other}' is not supported (only the default backend is)"),
        )),
    }
}

fn load(definition: &Path) -> Result<Dataset, Failure> {
    if definition.extension().is_some_and(|e| e == "py") {
        // Codelist paths are relative to the current directory (the workspace), as in the
        // reference, which runs from the study's root.
        return language::load_definition(definition).map_err(|e| {
            let code = match &e {
                LanguageError::Definition { .. } => EXIT_DEFINITION,
                _ => EXIT_USAGE,
            };
            fail(code, anyhow::Error::new(e))
        });
    }
    let text = std::fs::read_to_string(definition).map_err(|e| {
        fail(
            EXIT_USAGE,
            anyhow::Error::new(e).context(format!("reading {}", definition.display())),
        )
    })?;
    let workspace = std::env::current_dir().map_err(|e| fail(EXIT_USAGE, e))?;
    load_dataset(&text, &workspace).map_err(|e| {
        let code = match &e {
            LoadError::Definition { exit_code, .. } => {
                u8::try_from(*exit_code).unwrap_or(EXIT_DEFINITION)
            }
            _ => EXIT_USAGE,
        };
        fail(
            code,
            anyhow::Error::new(e).context(format!(
                "invalid dataset definition {}",
                definition.display()
            )),
        )
    })
}

/// The database file named by a `sqlite://` DSN, as SQLAlchemy reads it: `sqlite:///x.db` is
/// relative, `sqlite:////abs/x.db` absolute.
pub fn sqlite_path(dsn: &str) -> Option<PathBuf> {
    let rest = dsn.strip_prefix("sqlite:///")?;
    if rest.is_empty() {
        return None;
    }
    Some(PathBuf::from(rest))
}

fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::GenerateDataset {
            definition,
            output,
            dsn,
            query_engine,
            backend,
            user_args: _,
        } => {
            check_backend(backend.as_deref())?;
            let dataset = load(&definition)?;
            let Some(dsn) = dsn.filter(|d| !d.is_empty()) else {
                return Err(fail(
                    EXIT_USAGE,
                    anyhow::anyhow!("no --dsn given: dummy data generation is not supported yet"),
                ));
            };
            let mut engine: Box<dyn Engine> = if postgres::is_postgres_dsn(&dsn) {
                if query_engine.is_some() {
                    return Err(fail(
                        EXIT_USAGE,
                        anyhow::anyhow!("--query-engine applies to sqlite:// DSNs only"),
                    ));
                }
                Box::new(PostgresEngine::connect(&dsn).map_err(engine_failure)?)
            } else {
                sqlite_engine(&dsn, query_engine)?
            };
            match output {
                Some(output) => {
                    let mut sink = FileSink::create(&output).map_err(|e| fail(EXIT_USAGE, e))?;
                    engine.run(&dataset, &mut sink).map_err(engine_failure)?;
                    sink.finish().map_err(|e| fail(1, e))?;
                }
                None => {
                    let mut sink = StdoutSink::new();
                    engine.run(&dataset, &mut sink).map_err(engine_failure)?;
                    sink.finish().map_err(|e| fail(1, anyhow::anyhow!(e)))?;
                }
            }
            Ok(())
        }
        Command::DumpDatasetSql {
            definition,
            output,
            query_engine,
            backend,
            user_args: _,
        } => {
            check_backend(backend.as_deref())?;
            if query_engine == Some(QueryEngine::InMemory) {
                return Err(fail(
                    EXIT_USAGE,
                    anyhow::anyhow!("the in_memory engine has no SQL to dump"),
                ));
            }
            let dataset = load(&definition)?;
            let statements = sqlite::dataset_sql(&dataset).map_err(|e| fail(EXIT_USAGE, e))?;
            let text = format_sql(&statements);
            match output {
                Some(path) => std::fs::write(&path, text).map_err(|e| {
                    fail(
                        1,
                        anyhow::Error::new(e).context(format!("writing {}", path.display())),
                    )
                }),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
    }
}

/// The SQLite (or in-memory over SQLite) engine for a `sqlite://` DSN.
fn sqlite_engine(dsn: &str, query_engine: Option<QueryEngine>) -> Result<Box<dyn Engine>, Failure> {
    let Some(path) = sqlite_path(dsn) else {
        return Err(fail(
            EXIT_USAGE,
            anyhow::anyhow!(
                "unsupported --dsn '{dsn}': only sqlite:///path and postgresql:// databases are supported"
            ),
        ));
    };
    if !path.is_file() {
        return Err(fail(
            EXIT_DATABASE,
            anyhow::anyhow!("database file {} does not exist", path.display()),
        ));
    }
    let engine: Box<dyn Engine> = match query_engine.unwrap_or(QueryEngine::Sqlite) {
        QueryEngine::Sqlite => Box::new(SqliteEngine::open(&path).map_err(engine_failure)?),
        QueryEngine::InMemory => Box::new(MemoryEngine::new(
            sqlite::read_database(&path).map_err(engine_failure)?,
        )),
    };
    Ok(engine)
}

fn engine_failure(e: EngineError) -> Failure {
    let code = match &e {
        EngineError::Database(_) | EngineError::Postgres(_) => EXIT_DATABASE,
        EngineError::Unsupported(_) => EXIT_USAGE,
        EngineError::BadData { .. } | EngineError::Sink(_) => 1,
    };
    fail(code, e)
}

/// `dump-dataset-sql` text: each statement under a `-- Run query` or `-- Fetch results from
/// query` header, ending with `;`.
pub fn format_sql(statements: &[crate::sql::Statement]) -> String {
    let total = statements.len();
    let mut out = String::new();
    for (i, s) in statements.iter().enumerate() {
        let header = match s.kind {
            StatementKind::Results => "Fetch results from query",
            _ => "Run query",
        };
        out.push_str(&format!(
            "-- {header} {:03} / {total:03}\n{};\n\n",
            i + 1,
            s.sql
        ));
    }
    out
}
