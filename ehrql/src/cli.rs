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

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backends::tpp::{self, SqlFlavour, TppOptions};
use crate::backends::{self, Backend, Permissions};
use crate::dummy_data;
use crate::engines::memory::MemoryEngine;
use crate::engines::postgres::{self, PostgresEngine};
use crate::engines::sqlite::{self, SqliteEngine};
use crate::engines::{DatabaseFailure, Engine, EngineError};
use crate::engines::{RowSink, table_specs};
use crate::frontend::Definition;
use crate::frontend::json::{LoadError, load_definition};
use crate::frontend::language::{self, LanguageError};
use crate::local_files::{self, FileColumn};
use crate::output::{OutputError, OutputTarget};
use crate::sql::CaseInsensitiveColumns;
use crate::sql::{Statement, StatementKind};

/// Exit code: bad arguments or a malformed/invalid definition file.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a transient database error (connection lost or refused, database busy).
pub const EXIT_TRANSIENT_DATABASE: u8 = 3;
/// Exit code: a TPP raw table is missing, as while new data is being imported.
pub const EXIT_TABLE_UNAVAILABLE: u8 = 4;
/// Exit code: any other database error.
pub const EXIT_DATABASE: u8 = 5;
/// Exit code: the generated SQL went over one of the database's limits.
pub const EXIT_TOO_COMPLEX: u8 = 6;
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

/// The database flags `generate-dataset` and `generate-measures` share.
#[derive(Args, Debug)]
struct DatabaseArgs {
    /// Database URL; `sqlite:///relative.db`, `sqlite:////absolute.db` or
    /// `postgresql://user:password@host:port/database`.
    #[arg(long, env = "DATABASE_URL")]
    dsn: Option<String>,
    /// Query engine.
    #[arg(long, env = "OPENSAFELY_QUERY_ENGINE", value_enum)]
    query_engine: Option<QueryEngine>,
    /// Backend: the default (tables named as ehrQL's) or `tpp`.
    #[arg(long, env = "OPENSAFELY_BACKEND")]
    backend: Option<String>,
}

/// The flags after `--dummy-data-file` that `generate-dataset` and `generate-measures` share.
#[derive(Args, Debug)]
struct DummyTablesAndUserArgs {
    /// Without a database: run the definition in memory over the table files in this
    /// directory (`<table>.csv`, `.csv.gz` or `.arrow`, as `create-dummy-tables` writes).
    #[arg(long)]
    dummy_tables: Option<PathBuf>,
    /// User arguments for the definition (after `--`); recorded, not used by JSON input.
    #[arg(last = true)]
    user_args: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a dataset definition against a database and write the dataset.
    GenerateDataset {
        /// The dataset definition: a `.py` file in the ehrQL language, or serialized `.json`.
        definition: PathBuf,
        /// Output file (.csv, .csv.gz or .arrow); CSV on stdout if omitted.
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Without a database: use this file (.csv, .csv.gz or .arrow) as the dataset, after
        /// checking its columns, types and categories against the definition.
        #[arg(long)]
        dummy_data_file: Option<PathBuf>,
        #[command(flatten)]
        rest: DummyTablesAndUserArgs,
    },
    /// Run a measures definition and write the measures.
    GenerateMeasures {
        /// The measures definition (.py).
        definition: PathBuf,
        /// Output file (.csv, .csv.gz or .arrow), or `DIR/:csv` (or `:csv.gz`, `:arrow`) for
        /// one file per measure; CSV on stdout if omitted.
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Without a database: the measures from this file (all measures), or this directory
        /// (one file per measure), checked against the definition.
        #[arg(long)]
        dummy_data_file: Option<PathBuf>,
        #[command(flatten)]
        rest: DummyTablesAndUserArgs,
    },
    /// Generate dummy source tables for a definition and write one file per table.
    CreateDummyTables {
        /// The dataset definition (.py or serializer JSON).
        definition: PathBuf,
        /// Output directory, optionally suffixed with the format: `DIR`, `DIR:csv`,
        /// `DIR:csv.gz` or `DIR:arrow` (CSV by default).
        output_dir: String,
        /// Write the backend's raw tables instead of ehrQL's (`tpp`), e.g. to load a test
        /// database.
        #[arg(long)]
        backend: Option<String>,
        /// User arguments (after `--`).
        #[arg(last = true)]
        user_args: Vec<String>,
    },
    /// Print the SQL a dataset definition compiles to.
    DumpDatasetSql {
        /// The dataset definition: a `.py` file in the ehrQL language, or serialized `.json`.
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

fn backend_from_flag(backend: Option<&str>) -> Result<Option<Backend>, Failure> {
    backends::parse_backend(backend).map_err(|e| fail(EXIT_USAGE, e))
}

/// `EHRQL_PERMISSIONS`, as the controller passes it to database jobs.
fn permissions_from_env() -> Result<Permissions, Failure> {
    let permissions = std::env::var("EHRQL_PERMISSIONS").ok();
    Permissions::from_env_value(permissions.as_deref()).map_err(|e| fail(EXIT_USAGE, e))
}

/// The permissions from [`permissions_from_env`], checked to cover what `dataset` reads.
fn checked_permissions(dataset: &crate::query_model::Dataset) -> Result<Permissions, Failure> {
    let permissions = permissions_from_env()?;
    backends::check_permissions(dataset, &permissions).map_err(|e| fail(EXIT_PERMISSIONS, e))?;
    Ok(permissions)
}

/// The statements mapping the dataset's tables onto the backend's raw tables (none without a
/// backend). `TEMP_DATABASE_NAME` and the opt-out permissions configure TPP's.
fn backend_views(
    backend: Option<Backend>,
    flavour: SqlFlavour,
    dataset: &crate::query_model::Dataset,
    permissions: &Permissions,
) -> Result<Vec<String>, Failure> {
    let Some(Backend::Tpp) = backend else {
        return Ok(Vec::new());
    };
    let options = TppOptions::new(permissions, std::env::var("TEMP_DATABASE_NAME").ok());
    let tables: Vec<String> = dummy_data::tables_used(dataset)
        .into_iter()
        .map(|t| t.schema.name.clone())
        .collect();
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    tpp::view_statements(flavour, &options, &names).map_err(|e| fail(EXIT_USAGE, e))
}

/// The string columns the backend compares case-insensitively (none without a backend).
fn backend_case_insensitive(
    backend: Option<Backend>,
    dataset: &crate::query_model::Dataset,
) -> CaseInsensitiveColumns {
    match backend {
        Some(Backend::Tpp) => tpp::case_insensitive_columns(dataset),
        None => CaseInsensitiveColumns::default(),
    }
}

fn load(definition: &Path) -> Result<Definition, Failure> {
    if definition.extension().is_some_and(|e| e == "py") {
        // Codelist paths are relative to the current directory (the workspace), as in the
        // reference, which runs from the study's root.
        return language::load_definition_file(definition).map_err(|e| {
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
    load_definition(&text, &workspace).map_err(|e| {
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
            database:
                DatabaseArgs {
                    dsn,
                    query_engine,
                    backend,
                },
            dummy_data_file,
            rest: DummyTablesAndUserArgs { dummy_tables, .. },
        } => {
            let backend = backend_from_flag(backend.as_deref())?;
            let definition = load(&definition)?;
            let dataset = &definition.dataset;
            let table_count = 1 + dataset.events().len();
            let Some(dsn) = dsn.filter(|d| !d.is_empty()) else {
                // Without a database, the definition's own claims stand in for the
                // permissions a real run would be granted.
                backends::check_claimed_permissions(dataset, &definition.claimed_permissions)
                    .map_err(|e| fail(EXIT_PERMISSIONS, e))?;
                return write_output(output.as_deref(), table_count, |sink| {
                    if let Some(path) = &dummy_data_file {
                        return copy_dummy_data_file(path, dataset, sink);
                    }
                    let database = match &dummy_tables {
                        Some(dir) => read_dummy_tables(dir, dataset)?,
                        None => generate_dummy_data(&definition)?.database,
                    };
                    MemoryEngine::new(database)
                        .run(dataset, sink)
                        .map_err(engine_failure)
                });
            };
            let permissions = checked_permissions(dataset)?;
            if dummy_data_file.is_some() || dummy_tables.is_some() {
                tracing::warn!(
                    "--dummy-data-file and --dummy-tables are ignored when a database is given"
                );
            }
            let mut engine = database_engine(&dsn, query_engine, backend, dataset, &permissions)?;
            write_output(output.as_deref(), table_count, |sink| {
                engine.run(dataset, sink).map_err(engine_failure)
            })
        }
        Command::GenerateMeasures {
            definition,
            output,
            database,
            dummy_data_file,
            rest: DummyTablesAndUserArgs { dummy_tables, .. },
        } => generate_measures(
            &definition,
            output.as_deref(),
            database,
            dummy_data_file.as_deref(),
            dummy_tables.as_deref(),
        ),
        Command::CreateDummyTables {
            definition,
            output_dir,
            backend,
            user_args: _,
        } => {
            let backend = backend_from_flag(backend.as_deref())?;
            let (dir, extension) = match output_dir.rsplit_once(':') {
                Some((dir, "csv")) => (dir, ".csv"),
                Some((dir, "csv.gz")) => (dir, ".csv.gz"),
                Some((dir, "arrow")) => (dir, ".arrow"),
                Some((_, other)) => {
                    return Err(fail(
                        EXIT_USAGE,
                        anyhow::anyhow!(
                            "unknown table format ':{other}' in '{output_dir}': use DIR, DIR:csv, DIR:csv.gz or DIR:arrow"
                        ),
                    ));
                }
                None => (output_dir.as_str(), ".csv"),
            };
            let definition = load(&definition)?;
            let generated = generate_dummy_data(&definition)?;
            if backend == Some(Backend::Tpp) {
                return write_tpp_tables(Path::new(dir), extension, &generated.database);
            }
            let tables: Vec<_> = generated
                .tables
                .iter()
                .map(|t| (t.schema.clone(), t.columns.clone()))
                .collect();
            local_files::write_table_dir(Path::new(dir), extension, &generated.database, &tables)
                .map_err(|e| fail(1, e))
        }
        Command::DumpDatasetSql {
            definition,
            output,
            query_engine,
            backend,
            user_args: _,
        } => {
            let backend = backend_from_flag(backend.as_deref())?;
            if query_engine == Some(QueryEngine::InMemory) {
                return Err(fail(
                    EXIT_USAGE,
                    anyhow::anyhow!("the in_memory engine has no SQL to dump"),
                ));
            }
            let dataset = load(&definition)?.dataset;
            let mut statements: Vec<Statement> = backend_views(
                backend,
                SqlFlavour::Sqlite,
                &dataset,
                &permissions_from_env()?,
            )?
            .into_iter()
            .map(|sql| Statement {
                kind: StatementKind::Setup,
                sql,
            })
            .collect();
            statements.extend(
                sqlite::dataset_sql(&dataset, &backend_case_insensitive(backend, &dataset))
                    .map_err(|e| fail(EXIT_USAGE, e))?,
            );
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

/// Exit code: a dummy data file or table file that does not fit the definition.
pub const EXIT_FILE_VALIDATION: u8 = 11;
/// Exit code: the dataset reads data it has no permission for.
pub const EXIT_PERMISSIONS: u8 = 12;

/// Streams `table_count` result tables into `--output` (a file, or a `DIR/:format` directory
/// of one file per table; written atomically) or, without one, CSV on stdout.
fn write_output(
    output: Option<&Path>,
    table_count: usize,
    produce: impl FnOnce(&mut dyn RowSink) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let target = OutputTarget::parse(output).map_err(|e| fail(EXIT_USAGE, e))?;
    let mut sink = target.open(table_count).map_err(|e| {
        let code = match e {
            OutputError::SingleFileForTables { .. } => EXIT_FILE_VALIDATION,
            _ => EXIT_USAGE,
        };
        fail(code, e)
    })?;
    produce(&mut sink)?;
    sink.finish().map_err(|e| fail(1, e))
}

/// `--dummy-data-file`: the file's rows (a directory of files with event tables), checked
/// against the dataset's columns, become the output (in the output's format).
fn copy_dummy_data_file(
    path: &Path,
    dataset: &crate::query_model::Dataset,
    sink: &mut dyn RowSink,
) -> Result<(), Failure> {
    let specs = table_specs(dataset);
    let tables: Vec<(String, Vec<FileColumn>)> = specs
        .iter()
        .map(|(name, columns)| (name.clone(), required_columns(columns)))
        .collect();
    let contents = local_files::read_tables(path, &tables).map_err(file_failure)?;
    let sink_failure = |e| fail(1, EngineError::Sink(e));
    for ((name, columns), rows) in specs.iter().zip(contents) {
        sink.begin_table(name, columns).map_err(sink_failure)?;
        for row in rows {
            sink.row(&row).map_err(sink_failure)?;
        }
    }
    Ok(())
}

/// Every column required, as a dummy data file must have them.
fn required_columns(columns: &[crate::engines::ColumnSpec]) -> Vec<FileColumn> {
    columns
        .iter()
        .map(|spec| FileColumn {
            spec: spec.clone(),
            required: true,
        })
        .collect()
}

/// `--dummy-tables DIR`: the tables the dataset reads, from their files.
fn read_dummy_tables(
    dir: &Path,
    dataset: &crate::query_model::Dataset,
) -> Result<crate::engines::Database, Failure> {
    let tables: Vec<_> = dummy_data::tables_used(dataset)
        .into_iter()
        .map(|t| (t.schema, t.columns))
        .collect();
    local_files::read_table_dir(dir, &tables).map_err(file_failure)
}

/// Every raw TPP table holding `database`'s core tables, one file each.
fn write_tpp_tables(
    dir: &Path,
    extension: &str,
    database: &crate::engines::Database,
) -> Result<(), Failure> {
    let mut rows = tpp::raw_rows_from_core(database);
    for table in tpp::raw_tables() {
        let columns: Vec<crate::engines::ColumnSpec> = table
            .columns
            .iter()
            .map(|(name, ty)| crate::engines::ColumnSpec {
                name: name.clone(),
                ty: *ty,
                nullable: true,
                categories: None,
                range: None,
            })
            .collect();
        let path = dir.join(format!("{}{extension}", table.name));
        let table_rows = rows.remove(table.name).unwrap_or_default();
        local_files::write_table_file(&path, table.name, &columns, &table_rows)
            .map_err(|e| fail(1, e))?;
    }
    Ok(())
}

fn generate_dummy_data(definition: &Definition) -> Result<dummy_data::DummyData, Failure> {
    dummy_data::generate(definition, dummy_data::today()).map_err(|e| {
        let code = match e {
            dummy_data::DummyDataError::Data(_) => 1,
            _ => EXIT_DEFINITION,
        };
        fail(code, anyhow::Error::new(e).context("generating dummy data"))
    })
}

fn file_failure(e: local_files::FileError) -> Failure {
    let code = match &e {
        local_files::FileError::Io { .. } => EXIT_USAGE,
        _ => EXIT_FILE_VALIDATION,
    };
    fail(code, e)
}

/// The engine for `--dsn`: PostgreSQL, or SQLite (or in-memory over SQLite), with the
/// backend's views over the tables `dataset` reads.
fn database_engine(
    dsn: &str,
    query_engine: Option<QueryEngine>,
    backend: Option<Backend>,
    dataset: &crate::query_model::Dataset,
    permissions: &Permissions,
) -> Result<Box<dyn Engine>, Failure> {
    if postgres::is_postgres_dsn(dsn) {
        if query_engine.is_some() {
            return Err(fail(
                EXIT_USAGE,
                anyhow::anyhow!("--query-engine applies to sqlite:// DSNs only"),
            ));
        }
        let views = backend_views(backend, SqlFlavour::Postgres, dataset, permissions)?;
        let engine = PostgresEngine::connect(dsn).map_err(engine_failure)?;
        return Ok(Box::new(
            engine
                .with_table_views(views)
                .with_case_insensitive_columns(backend_case_insensitive(backend, dataset)),
        ));
    }
    let views = backend_views(backend, SqlFlavour::Sqlite, dataset, permissions)?;
    let temp_database = match backend {
        Some(Backend::Tpp) => std::env::var("TEMP_DATABASE_NAME")
            .ok()
            .filter(|name| !name.is_empty()),
        None => None,
    };
    sqlite_engine(
        dsn,
        query_engine,
        &views,
        temp_database.as_deref(),
        backend_case_insensitive(backend, dataset),
    )
}

/// `generate-measures`: every measure at every interval, on the database or on dummy data,
/// suppressed unless the definition turns disclosure control off, to one file (all measures)
/// or a `DIR/:format` directory (one file per measure).
fn generate_measures(
    definition: &Path,
    output: Option<&Path>,
    database: DatabaseArgs,
    dummy_data_file: Option<&Path>,
    dummy_tables: Option<&Path>,
) -> Result<(), Failure> {
    let DatabaseArgs {
        dsn,
        query_engine,
        backend,
    } = database;
    let backend = backend_from_flag(backend.as_deref())?;
    if definition.extension().is_none_or(|e| e != "py") {
        return Err(fail(
            EXIT_USAGE,
            anyhow::anyhow!("measures definitions must be .py files in the ehrQL language"),
        ));
    }
    let measures = language::load_measures_file(definition).map_err(|e| {
        let code = match &e {
            LanguageError::Definition { .. } => EXIT_DEFINITION,
            _ => EXIT_USAGE,
        };
        fail(code, anyhow::Error::new(e))
    })?;
    // The dataset dummy data would be generated for: it reads every table the measures read.
    let dataset = measures
        .dummy_data_dataset()
        .map_err(|e| fail(EXIT_DEFINITION, e))?;
    let target = OutputTarget::parse(output).map_err(|e| fail(EXIT_USAGE, e))?;
    let per_measure = matches!(target, OutputTarget::Directory { .. });
    let rows = match dsn.filter(|d| !d.is_empty()) {
        Some(dsn) => {
            let permissions = checked_permissions(&dataset)?;
            let mut engine = database_engine(&dsn, query_engine, backend, &dataset, &permissions)?;
            crate::measures::calculate(&measures, engine.as_mut()).map_err(measures_failure)?
        }
        None => {
            backends::check_claimed_permissions(&dataset, &measures.claimed_permissions)
                .map_err(|e| fail(EXIT_PERMISSIONS, e))?;
            if let Some(path) = dummy_data_file {
                crate::measures::read_results(&measures, path).map_err(file_failure)?
            } else {
                let database = match dummy_tables {
                    Some(dir) => read_dummy_tables(dir, &dataset)?,
                    None => {
                        let mut config = measures.dummy_data_config.clone();
                        config.population_size = measures.dummy_population_size();
                        generate_dummy_data(&Definition {
                            dataset: dataset.clone(),
                            dummy_data_config: config,
                            claimed_permissions: measures.claimed_permissions.clone(),
                        })?
                        .database
                    }
                };
                crate::measures::calculate(&measures, &mut MemoryEngine::new(database))
                    .map_err(measures_failure)?
            }
        }
    };
    let table_count = if per_measure {
        measures.measures.len()
    } else {
        1
    };
    let mut sink = target.open(table_count).map_err(|e| fail(EXIT_USAGE, e))?;
    crate::measures::write(&measures, &rows, per_measure, &mut sink)
        .map_err(|e| fail(1, EngineError::Sink(e)))?;
    sink.finish().map_err(|e| fail(1, e))
}

fn measures_failure(e: crate::measures::MeasuresError) -> Failure {
    match e {
        crate::measures::MeasuresError::Engine(e) => engine_failure(e),
        other => fail(EXIT_DEFINITION, other),
    }
}

/// The SQLite (or in-memory over SQLite) engine for a `sqlite://` DSN, with the TPP
/// backend's `TEMP_DATABASE_NAME` database attached and the backend's `views` installed.
fn sqlite_engine(
    dsn: &str,
    query_engine: Option<QueryEngine>,
    views: &[String],
    temp_database: Option<&str>,
    case_insensitive: CaseInsensitiveColumns,
) -> Result<Box<dyn Engine>, Failure> {
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
        QueryEngine::Sqlite => {
            let engine = SqliteEngine::open(&path)
                .map_err(engine_failure)?
                .with_case_insensitive_columns(case_insensitive);
            if let Some(name) = temp_database {
                let temp_path =
                    tpp::sqlite_temp_database_path(&path, name).map_err(|e| fail(EXIT_USAGE, e))?;
                engine.attach(name, &temp_path).map_err(engine_failure)?;
            }
            for view in views {
                engine.execute(view).map_err(engine_failure)?;
            }
            Box::new(engine)
        }
        QueryEngine::InMemory if !views.is_empty() => {
            return Err(fail(
                EXIT_USAGE,
                anyhow::anyhow!("the in_memory query engine cannot run with a backend"),
            ));
        }
        QueryEngine::InMemory => Box::new(MemoryEngine::new(
            sqlite::read_database(&path).map_err(engine_failure)?,
        )),
    };
    Ok(engine)
}

fn engine_failure(e: EngineError) -> Failure {
    if let Some(failure) = e.database_failure() {
        return database_failure(failure, e);
    }
    let code = match &e {
        EngineError::Unsupported(_) => EXIT_USAGE,
        _ => 1,
    };
    fail(code, e)
}

/// A database error with the reference's exit code for its kind (spec §4.2) and a first line
/// saying what happened and whether running the job again can help. A missing table counts
/// as unavailable (exit 4) only when it is one of the TPP raw tables, which are rebuilt while
/// new data is imported; any other missing table is a plain database error.
fn database_failure(failure: DatabaseFailure, e: EngineError) -> Failure {
    let (code, advice) = match failure {
        DatabaseFailure::Transient => (
            EXIT_TRANSIENT_DATABASE,
            "intermittent database error (the connection was lost or refused, or the database \
             was busy); running the job again later is likely to succeed"
                .to_string(),
        ),
        DatabaseFailure::MissingTable(table) if tpp::is_raw_table(&table) => (
            EXIT_TABLE_UNAVAILABLE,
            format!(
                "database table '{table}' is not available, most likely because new data is \
                 being imported (regular maintenance); run the job again in a few hours"
            ),
        ),
        DatabaseFailure::TooComplex => (
            EXIT_TOO_COMPLEX,
            "the SQL generated for this dataset definition is too complex for the database (it \
             went over one of the database's limits); running it again will not help: simplify \
             the definition, e.g. fewer variables or less deeply nested expressions"
                .to_string(),
        ),
        _ => (
            EXIT_DATABASE,
            "database error; running the job again is unlikely to help: contact tech support \
             if it persists"
                .to_string(),
        ),
    };
    fail(code, anyhow::Error::new(e).context(advice))
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
