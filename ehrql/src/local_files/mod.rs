//! Tables in local files (spec §6.2, §6.3 readers): `--dummy-data-file` (a whole dataset),
//! `--dummy-tables DIR` (one file per source table, read back into the in-memory engine) and
//! `create-dummy-tables` (which writes such a directory).
//!
//! Formats are chosen by extension: `.csv`, `.csv.gz` or `.arrow`. Every value is checked
//! against its column: type, code shape, categories and nullability, with the file, line and
//! column of the first bad value. Columns not asked for are ignored; a CSV cannot tell NULL
//! from an empty string, so an empty field is NULL.

mod arrow_reader;
mod csv_reader;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engines::{ColumnSpec, Database, RowSink};
use crate::output::{FileSink, Format, OutputError};
use crate::query_model::{ScalarType, Value};
use crate::tables::TableSchema;

/// A column to read from a file.
#[derive(Clone, Debug)]
pub struct FileColumn {
    /// Name, type, nullability and categories.
    pub spec: ColumnSpec,
    /// Whether the file must have it (otherwise a missing column reads as NULL).
    pub required: bool,
}

/// Why a table file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a format we read.
    #[error("{0}: unsupported file type: use .csv, .csv.gz or .arrow")]
    UnsupportedExtension(PathBuf),
    /// Required columns are absent.
    #[error("{path}: missing columns: {}", columns.join(", "))]
    MissingColumns {
        /// The file.
        path: PathBuf,
        /// The columns, in the order asked for.
        columns: Vec<String>,
    },
    /// The CSV text is malformed.
    #[error("{path}, line {line}: {problem}")]
    MalformedCsv {
        /// The file.
        path: PathBuf,
        /// 1-based line of the record.
        line: usize,
        /// What is wrong.
        problem: &'static str,
    },
    /// A value does not fit its column.
    #[error("{path}, {place}, column '{column}': {problem}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// `line N` (CSV) or `row N` (Arrow).
        place: String,
        /// The column.
        column: String,
        /// What is wrong, with the value.
        problem: String,
    },
    /// An Arrow column has a type that cannot hold the column's values.
    #[error("{path}: column '{column}' has Arrow type {found}, expected one holding {expected}")]
    ArrowType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The Arrow type found.
        found: String,
        /// The column's ehrQL type.
        expected: ScalarType,
    },
    /// The Arrow reader failed.
    #[error("{path}: reading Arrow: {source}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: arrow_schema::ArrowError,
    },
    /// No file for a table in a `--dummy-tables` directory.
    #[error("no file for table '{table}' in {}: expected {table}.csv, {table}.csv.gz or {table}.arrow", dir.display())]
    MissingTable {
        /// The directory.
        dir: PathBuf,
        /// The table.
        table: String,
    },
    /// Several tables asked of a single file, or a directory without exactly one data format.
    #[error("{0}")]
    Tables(String),
    /// The rows do not fit the table (a patient-level table with two rows for one patient).
    #[error("{path}: {source}")]
    Table {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: Box<crate::engines::EngineError>,
    },
}

/// Why table files could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Opening or finishing a file.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Writing a row.
    #[error("{path}: {source}")]
    Sink {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: crate::engines::SinkError,
    },
}

/// Reads several tables (the dataset and its event tables, or one table per measure) from
/// `path`: a single file when there is one table, else a directory holding one
/// `<url-quoted name><extension>` file per table, all in the one data format found there.
///
/// # Errors
/// A missing file or directory, a single file for several tables (with the reference's
/// advice), no or several data formats in the directory, or a file's own errors.
pub fn read_tables(
    path: &Path,
    tables: &[(String, Vec<FileColumn>)],
) -> Result<Vec<Vec<Vec<Value>>>, FileError> {
    if !path.exists() {
        return Err(FileError::Tables(format!(
            "Missing file or directory: {}",
            path.display()
        )));
    }
    if !path.is_dir() {
        if let [(_, columns)] = tables {
            return Ok(vec![read_rows(path, columns)?]);
        }
        let suffix = path
            .extension()
            .map_or_else(String::new, |e| format!(".{}", e.to_string_lossy()));
        let stem = path
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let dir = path.parent().unwrap_or(Path::new("")).join(stem);
        let others: Vec<String> = tables[1..]
            .iter()
            .map(|(name, _)| format!("{name}{suffix}"))
            .collect();
        return Err(FileError::Tables(format!(
            "Attempting to read {} tables, but input only provides a single table\n      \
             Try moving -> {}\n              to -> {}/{}{suffix}\n          adding -> {}\n  \
             and using path -> {}/",
            tables.len(),
            path.display(),
            dir.display(),
            tables.first().map_or("", |(name, _)| name.as_str()),
            others.join(", "),
            dir.display()
        )));
    }
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut formats: BTreeSet<&'static str> = BTreeSet::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let name = entry
            .map_err(io)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        for extension in [".arrow", ".csv.gz", ".csv"] {
            if name.ends_with(extension) {
                formats.insert(extension);
                break;
            }
        }
    }
    let extension = match formats.len() {
        0 => {
            return Err(FileError::Tables(format!(
                "No supported file formats found in: {}",
                path.display()
            )));
        }
        1 => formats.into_iter().next().unwrap_or(".csv"),
        _ => {
            let found: Vec<&str> = formats.into_iter().collect();
            return Err(FileError::Tables(format!(
                "Found multiple file formats ({}) in: {}",
                found.join(", "),
                path.display()
            )));
        }
    };
    let mut out = Vec::with_capacity(tables.len());
    for (name, columns) in tables {
        let file = path.join(crate::output::table_file_name(name, extension));
        if !file.is_file() {
            return Err(FileError::Tables(format!(
                "Missing file: {}",
                file.display()
            )));
        }
        out.push(read_rows(&file, columns)?);
    }
    Ok(out)
}

/// Reads the rows of `path`, values in `columns` order.
///
/// # Errors
/// See [`FileError`].
pub fn read_rows(path: &Path, columns: &[FileColumn]) -> Result<Vec<Vec<Value>>, FileError> {
    match Format::from_path(path) {
        Some(Format::Csv) => csv_reader::read(path, columns, false),
        Some(Format::CsvGz) => csv_reader::read(path, columns, true),
        Some(Format::Arrow) => arrow_reader::read(path, columns),
        None => Err(FileError::UnsupportedExtension(path.to_path_buf())),
    }
}

/// The column specs of a table file: `patient_id`, then `columns` (all of the schema's if
/// `None`) in schema order.
pub fn table_columns(schema: &TableSchema, columns: Option<&BTreeSet<String>>) -> Vec<ColumnSpec> {
    let mut specs = vec![patient_id_spec()];
    specs.extend(
        schema
            .columns
            .iter()
            .filter(|c| columns.is_none_or(|wanted| wanted.contains(&c.name)))
            .map(|c| ColumnSpec {
                name: c.name.clone(),
                ty: c.ty,
                nullable: !c.not_null(),
                categories: c.categories().map(<[Value]>::to_vec),
                range: None,
            }),
    );
    specs
}

fn patient_id_spec() -> ColumnSpec {
    ColumnSpec {
        name: "patient_id".into(),
        ty: ScalarType::Int,
        nullable: false,
        categories: None,
        range: None,
    }
}

/// Reads a `--dummy-tables` directory: for each `(schema, columns read)`, the file
/// `<table>.csv`, `.csv.gz` or `.arrow`, which must hold `patient_id` and the columns read
/// (other schema columns may be absent and read as NULL).
///
/// # Errors
/// A missing file or column, or a bad value; see [`FileError`].
pub fn read_table_dir(
    dir: &Path,
    tables: &[(Arc<TableSchema>, BTreeSet<String>)],
) -> Result<Database, FileError> {
    let mut database = Database::new();
    for (schema, used) in tables {
        let path = ["csv", "csv.gz", "arrow"]
            .iter()
            .map(|ext| dir.join(format!("{}.{ext}", schema.name)))
            .find(|p| p.is_file())
            .ok_or_else(|| FileError::MissingTable {
                dir: dir.to_path_buf(),
                table: schema.name.clone(),
            })?;
        let columns: Vec<FileColumn> = table_columns(schema, None)
            .into_iter()
            .map(|spec| FileColumn {
                required: spec.name == "patient_id" || used.contains(&spec.name),
                spec,
            })
            .collect();
        let rows = read_rows(&path, &columns)?;
        let mut keyed = Vec::with_capacity(rows.len());
        for mut row in rows {
            let Value::Int(patient_id) = row.remove(0) else {
                // patient_id is required and NOT NULL, so the reader never gives anything else.
                continue;
            };
            keyed.push((patient_id, row));
        }
        if schema.patient_level {
            let mut seen = BTreeSet::new();
            if let Some((duplicate, _)) = keyed.iter().find(|(id, _)| !seen.insert(*id)) {
                return Err(FileError::BadValue {
                    path,
                    place: "table".into(),
                    column: "patient_id".into(),
                    problem: format!(
                        "patient {duplicate} has more than one row in a one-row-per-patient table"
                    ),
                });
            }
        }
        database
            .insert_table(schema.clone(), keyed)
            .map_err(|e| FileError::Table {
                path: path.clone(),
                source: Box::new(e),
            })?;
    }
    Ok(database)
}

/// Writes each `(schema, columns)` of `database` to `dir/<table><extension>` (`.csv`,
/// `.csv.gz` or `.arrow`): `patient_id` and the given columns, in patient order.
///
/// # Errors
/// Filesystem errors; see [`WriteError`].
pub fn write_table_dir(
    dir: &Path,
    extension: &str,
    database: &Database,
    tables: &[(Arc<TableSchema>, BTreeSet<String>)],
) -> Result<(), WriteError> {
    for (schema, used) in tables {
        let path = dir.join(format!("{}{extension}", schema.name));
        let specs = table_columns(schema, Some(used));
        let positions: Vec<usize> = specs[1..]
            .iter()
            .filter_map(|s| schema.columns.iter().position(|c| c.name == s.name))
            .collect();
        let mut rows: Vec<Vec<Value>> = database
            .table(&schema.name)
            .map(|data| {
                data.rows
                    .iter()
                    .map(|(patient_id, values)| {
                        let mut row = vec![Value::Int(*patient_id)];
                        row.extend(positions.iter().map(|p| values[*p].clone()));
                        row
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Stable: a patient's rows keep their order.
        rows.sort_by(|a, b| a[0].cmp(&b[0]));
        write_table_file(&path, &schema.name, &specs, &rows)?;
    }
    Ok(())
}

/// Writes one table file (format by extension) with these columns and rows.
///
/// # Errors
/// Filesystem errors; see [`WriteError`].
pub fn write_table_file(
    path: &Path,
    name: &str,
    columns: &[ColumnSpec],
    rows: &[Vec<Value>],
) -> Result<(), WriteError> {
    let sink_error = |source| WriteError::Sink {
        path: path.to_path_buf(),
        source,
    };
    let mut sink = FileSink::create(path)?;
    sink.begin_table(name, columns).map_err(sink_error)?;
    for row in rows {
        sink.row(row).map_err(sink_error)?;
    }
    sink.finish()?;
    Ok(())
}

/// Checks a value already of the column's primitive type against the column, and gives it its
/// ehrQL type (codes become typed codes). The error describes the offending value.
/// Fails naming every required column the file lacks (`positions[i]` is where `columns[i]`
/// was found, if anywhere).
fn check_required_columns(
    path: &Path,
    columns: &[FileColumn],
    positions: &[Option<usize>],
) -> Result<(), FileError> {
    let missing: Vec<String> = columns
        .iter()
        .zip(positions)
        .filter(|(c, p)| c.required && p.is_none())
        .map(|(c, _)| c.spec.name.clone())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(FileError::MissingColumns {
            path: path.to_path_buf(),
            columns: missing,
        })
    }
}

fn typed_value(raw: Value, spec: &ColumnSpec) -> Result<Value, String> {
    if raw.is_null() {
        if spec.nullable {
            return Ok(Value::Null);
        }
        return Err("a value is required (the column is NOT NULL)".into());
    }
    if let Some(categories) = &spec.categories
        && !categories.contains(&raw)
    {
        let allowed: Vec<String> = categories
            .iter()
            .map(|c| format!("'{}'", c.as_str().unwrap_or_default()))
            .collect();
        return Err(format!(
            "'{}' is not one of the categories {}",
            raw.as_str().unwrap_or_default(),
            allowed.join(", ")
        ));
    }
    match (raw, spec.ty) {
        (Value::Str(s), ScalarType::Code(system)) => {
            if system.is_valid(&s) {
                Ok(Value::Code(system, s))
            } else {
                Err(format!("'{s}' is not a valid {}", system.class_name()))
            }
        }
        (v, _) => Ok(v),
    }
}
