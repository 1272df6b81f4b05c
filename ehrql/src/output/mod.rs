//! Output files (spec §6.3): CSV, gzipped CSV and Arrow IPC, with the reference's byte rules,
//! plus the column metadata (nullability, categories, integer ranges) they need.
//!
//! Files are written to a temporary file beside the target and renamed into place only when
//! every row has been written, so a failed run never leaves a partial output behind.

pub mod arrow;
pub mod csv;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::engines::{ColumnSpec, RowSink, SinkError};
use crate::query_model::{AggregateKind, Graph, Kind, Literal, Node, NodeId, ScalarType, Value};
use crate::tables::Constraint;

/// The output format, chosen by file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.csv`
    Csv,
    /// `.csv.gz`
    CsvGz,
    /// `.arrow` (Arrow IPC file)
    Arrow,
}

impl Format {
    /// The format for `path`'s extension, if supported.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?;
        if name.ends_with(".csv.gz") {
            Some(Format::CsvGz)
        } else if name.ends_with(".csv") {
            Some(Format::Csv)
        } else if name.ends_with(".arrow") {
            Some(Format::Arrow)
        } else {
            None
        }
    }
}

/// Errors opening or finishing an output file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The extension is not one we write.
    #[error("unsupported file type for '{0}': use .csv, .csv.gz or .arrow")]
    UnsupportedExtension(PathBuf),
    /// Filesystem trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The Arrow writer failed.
    #[error("writing Arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// `DIR/:ext` with an extension we do not write.
    #[error("':{0}' is not a supported format, must be one of: `:arrow`, `:csv`, `:csv.gz`")]
    UnsupportedDirectoryFormat(String),
    /// Several tables (event tables) for a single-file output.
    #[error(
        "Attempting to write {count} tables, but output only supports a single table\n  \
         Instead of -> {path}\n         try -> {suggestion}"
    )]
    SingleFileForTables {
        /// How many tables there are.
        count: usize,
        /// The file given.
        path: String,
        /// The directory form to use instead.
        suggestion: String,
    },
}

/// Where result tables go (spec §6.3): CSV on the console, one file, or a directory holding
/// one file per table (`DIR/:csv`, `DIR:csv.gz`, `DIR/:arrow`), named by the url-quoted table
/// name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputTarget {
    /// CSV on stdout; with several tables, each is preceded by its name.
    Console,
    /// One file, format by extension: only one table fits.
    File(PathBuf),
    /// A directory of `<quoted table name><extension>` files.
    Directory {
        /// The directory.
        dir: PathBuf,
        /// `.csv`, `.csv.gz` or `.arrow`.
        extension: &'static str,
    },
}

impl OutputTarget {
    /// Reads `--output`: no path is the console; a last component `NAME:ext` (or `:ext`) is a
    /// directory `NAME` (or the parent) of `.ext` files; anything else a file.
    ///
    /// # Errors
    /// A directory format or file extension we do not write.
    pub fn parse(path: Option<&Path>) -> Result<OutputTarget, OutputError> {
        let Some(path) = path else {
            return Ok(OutputTarget::Console);
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some((stem, format)) = name.rsplit_once(':') else {
            Format::from_path(path)
                .ok_or_else(|| OutputError::UnsupportedExtension(path.to_path_buf()))?;
            return Ok(OutputTarget::File(path.to_path_buf()));
        };
        let extension = match format {
            "csv" => ".csv",
            "csv.gz" => ".csv.gz",
            "arrow" => ".arrow",
            other => return Err(OutputError::UnsupportedDirectoryFormat(other.to_string())),
        };
        let dir = if stem.is_empty() {
            path.parent().map_or_else(PathBuf::new, Path::to_path_buf)
        } else {
            path.with_file_name(stem)
        };
        Ok(OutputTarget::Directory { dir, extension })
    }

    /// Checks that the target can hold `count` tables, before anything runs: a single file
    /// takes one, and the error says which directory to use instead.
    ///
    /// # Errors
    /// [`OutputError::SingleFileForTables`].
    pub fn check_table_count(&self, count: usize) -> Result<(), OutputError> {
        match self {
            OutputTarget::File(path) if count > 1 => {
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
                let parent = path.parent().unwrap_or(Path::new(""));
                let extension = path
                    .extension()
                    .map_or_else(String::new, |e| e.to_string_lossy().into_owned());
                Err(OutputError::SingleFileForTables {
                    count,
                    path: path.display().to_string(),
                    suggestion: format!(
                        "{}/:{extension}",
                        parent.join(stem.unwrap_or_default()).display()
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// A sink writing `table_count` tables to this target.
    ///
    /// # Errors
    /// An unsupported extension, or the file cannot be created.
    pub fn open(&self, table_count: usize) -> Result<TablesSink, OutputError> {
        self.check_table_count(table_count)?;
        Ok(match self {
            OutputTarget::Console => TablesSink::Console(StdoutSink::new(table_count)),
            OutputTarget::File(path) => TablesSink::File(FileSink::create(path)?),
            OutputTarget::Directory { dir, extension } => TablesSink::Directory {
                dir: dir.clone(),
                extension,
                files: Vec::new(),
            },
        })
    }
}

/// The file of table `name` in an output directory: its url-quoted name (every byte but
/// ASCII letters, digits and `_.-~` percent-encoded, as Python's `quote(name, safe="")`) and
/// the extension.
pub fn table_file_name(name: &str, extension: &str) -> String {
    let mut out = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"_.-~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out.push_str(extension);
    out
}

/// Writes result tables to an [`OutputTarget`]. Files appear only when [`TablesSink::finish`]
/// succeeds.
pub enum TablesSink {
    /// CSV on stdout.
    Console(StdoutSink),
    /// One file.
    File(FileSink),
    /// One file per table, all renamed into place at the end.
    Directory {
        /// The directory.
        dir: PathBuf,
        /// The files' extension.
        extension: &'static str,
        /// The tables begun so far (the last one is being written).
        files: Vec<FileSink>,
    },
}

impl TablesSink {
    /// Finishes every file (or flushes stdout).
    ///
    /// # Errors
    /// IO errors.
    pub fn finish(self) -> Result<(), OutputError> {
        match self {
            TablesSink::Console(sink) => sink.finish().map_err(|e| OutputError::Io {
                path: PathBuf::from("<stdout>"),
                source: io::Error::other(e.to_string()),
            }),
            TablesSink::File(sink) => sink.finish(),
            TablesSink::Directory { files, .. } => {
                for file in files {
                    file.finish()?;
                }
                Ok(())
            }
        }
    }
}

impl RowSink for TablesSink {
    fn begin_table(&mut self, name: &str, columns: &[ColumnSpec]) -> Result<(), SinkError> {
        match self {
            TablesSink::Console(sink) => sink.begin_table(name, columns),
            TablesSink::File(sink) => sink.begin_table(name, columns),
            TablesSink::Directory {
                dir,
                extension,
                files,
            } => {
                let mut file = FileSink::create(&dir.join(table_file_name(name, extension)))?;
                file.begin_table(name, columns)?;
                files.push(file);
                Ok(())
            }
        }
    }

    fn row(&mut self, row: &[Value]) -> Result<(), SinkError> {
        match self {
            TablesSink::Console(sink) => sink.row(row),
            TablesSink::File(sink) => sink.row(row),
            TablesSink::Directory { files, .. } => match files.last_mut() {
                Some(file) => file.row(row),
                None => Err("row before table".into()),
            },
        }
    }
}

/// A sink that writes one table to a file, atomically on [`FileSink::finish`].
pub struct FileSink {
    target: PathBuf,
    temp: Option<tempfile::NamedTempFile>,
    writer: Option<Box<dyn TableWriter>>,
    format: Format,
    tables: usize,
}

/// A format writer over an open file.
pub trait TableWriter {
    /// Starts the table.
    ///
    /// # Errors
    /// IO errors.
    fn begin(&mut self, columns: &[ColumnSpec]) -> Result<(), SinkError>;
    /// One row.
    ///
    /// # Errors
    /// IO errors, or a value not fitting its column.
    fn row(&mut self, row: &[Value]) -> Result<(), SinkError>;
    /// Flushes everything (footer, compression trailer).
    ///
    /// # Errors
    /// IO errors.
    fn finish(self: Box<Self>) -> Result<(), SinkError>;
}

impl FileSink {
    /// Prepares to write `path` (creating its parent directories), choosing the format by
    /// extension.
    ///
    /// # Errors
    /// An unsupported extension or a filesystem error.
    pub fn create(path: &Path) -> Result<FileSink, OutputError> {
        let format = Format::from_path(path)
            .ok_or_else(|| OutputError::UnsupportedExtension(path.to_path_buf()))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|source| OutputError::Io {
            path: parent.clone(),
            source,
        })?;
        let temp = tempfile::Builder::new()
            .prefix(".ehrql-output-")
            .tempfile_in(&parent)
            .map_err(|source| OutputError::Io {
                path: parent.clone(),
                source,
            })?;
        Ok(FileSink {
            target: path.to_path_buf(),
            temp: Some(temp),
            writer: None,
            format,
            tables: 0,
        })
    }

    /// Finishes the file and renames it into place. Dropping a `FileSink` without finishing
    /// removes the temporary file.
    ///
    /// # Errors
    /// IO errors.
    pub fn finish(mut self) -> Result<(), OutputError> {
        let io_err = |source: io::Error| OutputError::Io {
            path: self.target.clone(),
            source,
        };
        if let Some(writer) = self.writer.take() {
            writer
                .finish()
                .map_err(|e| io_err(io::Error::other(e.to_string())))?;
        }
        if let Some(temp) = self.temp.take() {
            // Temporary files are created 0600; outputs get ordinary permissions.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o644))
                    .map_err(io_err)?;
            }
            temp.persist(&self.target).map_err(|e| io_err(e.error))?;
        }
        Ok(())
    }
}

impl RowSink for FileSink {
    fn begin_table(&mut self, _name: &str, columns: &[ColumnSpec]) -> Result<(), SinkError> {
        self.tables += 1;
        if self.tables > 1 {
            return Err(
                "several result tables need a directory output, which is not supported yet".into(),
            );
        }
        let temp = self.temp.as_ref().ok_or("output already finished")?;
        let file = temp.reopen()?;
        let mut writer: Box<dyn TableWriter> = match self.format {
            Format::Csv => Box::new(csv::CsvWriter::new(csv::CsvOut::File(io::BufWriter::new(
                file,
            )))),
            Format::CsvGz => Box::new(csv::CsvWriter::new(csv::CsvOut::Gzip(
                flate2::write::GzEncoder::new(
                    io::BufWriter::new(file),
                    flate2::Compression::new(6),
                ),
            ))),
            Format::Arrow => Box::new(arrow::ArrowWriter::new(file)),
        };
        writer.begin(columns)?;
        self.writer = Some(writer);
        Ok(())
    }

    fn row(&mut self, row: &[Value]) -> Result<(), SinkError> {
        match &mut self.writer {
            Some(w) => w.row(row),
            None => Err("row before table".into()),
        }
    }
}

/// A sink writing CSV to stdout (no `--output`). With several tables (event tables), each is
/// preceded by its name, and tables are separated by a blank line, as the reference's console
/// output does.
pub struct StdoutSink {
    writer: Option<csv::CsvWriter>,
    tables: usize,
    print_names: bool,
}

impl StdoutSink {
    /// A sink on stdout for `table_count` tables.
    pub fn new(table_count: usize) -> StdoutSink {
        StdoutSink {
            writer: None,
            tables: 0,
            print_names: table_count > 1,
        }
    }

    /// Flushes.
    ///
    /// # Errors
    /// IO errors.
    pub fn finish(self) -> Result<(), SinkError> {
        match self.writer {
            Some(w) => Box::new(w).finish(),
            None => Ok(()),
        }
    }
}

impl RowSink for StdoutSink {
    fn begin_table(&mut self, name: &str, columns: &[ColumnSpec]) -> Result<(), SinkError> {
        use std::io::Write;
        if let Some(previous) = self.writer.take() {
            Box::new(previous).finish()?;
        }
        let mut out = io::BufWriter::new(io::stdout());
        if self.tables > 0 {
            out.write_all(b"\n\n")?;
        }
        self.tables += 1;
        if self.print_names {
            writeln!(out, "{name}")?;
        }
        let mut w = csv::CsvWriter::new(csv::CsvOut::Stdout(out));
        w.begin(columns)?;
        self.writer = Some(w);
        Ok(())
    }

    fn row(&mut self, row: &[Value]) -> Result<(), SinkError> {
        match &mut self.writer {
            Some(w) => w.row(row),
            None => Err("row before table".into()),
        }
    }
}

/// Python's `repr(float)`: shortest round-trip digits, scientific notation outside
/// `1e-4 <= |x| < 1e16`, always a `.0` on integral values.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.2345e-5".
    let sci = format!("{x:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let n = digits.len() as i32;
        if exponent >= 0 {
            let int_len = exponent + 1;
            if n <= int_len {
                let zeros = "0".repeat((int_len - n) as usize);
                format!("{sign}{digits}{zeros}.0")
            } else {
                let (a, b) = digits.split_at(int_len as usize);
                format!("{sign}{a}.{b}")
            }
        } else {
            let zeros = "0".repeat((-exponent - 1) as usize);
            format!("{sign}0.{zeros}{digits}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let esign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{esign}{:02}", exponent.abs())
    }
}

/// Whether a variable can be NULL (Exists/Count-like aggregations never are).
pub fn is_nullable(graph: &Graph, id: NodeId) -> bool {
    !matches!(
        graph.node(id),
        Node::Aggregate {
            kind: AggregateKind::Exists | AggregateKind::Count | AggregateKind::CountDistinct,
            ..
        } | Node::CountEpisodes { .. }
            | Node::Value(_)
    )
}

/// Categories of a string variable: a categorical column, or a case whose values are all
/// literals.
pub fn categories(graph: &Graph, id: NodeId) -> Option<Vec<Value>> {
    if graph.scalar_type(id) != Some(ScalarType::Str) {
        return None;
    }
    match graph.node(id) {
        Node::SelectColumn { source, name } => {
            let table = graph.frame_table(*source)?;
            table.column(name)?.categories().map(<[Value]>::to_vec)
        }
        Node::Case { cases, default } => {
            let mut out: Vec<Value> = Vec::new();
            for v in cases.iter().filter_map(|(_, v)| *v).chain(*default) {
                match graph.node(v) {
                    Node::Value(Literal::Scalar(value)) => {
                        if !out.contains(value) {
                            out.push(value.clone());
                        }
                    }
                    _ => return None,
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// The known range of an integer variable (for narrowing Arrow types): `Count` (0–65535, as
/// the reference declares) and `ClosedRange` columns.
pub fn int_range(graph: &Graph, id: NodeId) -> Option<(i64, i64)> {
    match graph.node(id) {
        Node::Aggregate {
            kind: AggregateKind::Count,
            ..
        } => Some((0, 65_535)),
        Node::SelectColumn { source, name } => {
            let table = graph.frame_table(*source)?;
            table
                .column(name)?
                .constraints
                .iter()
                .find_map(|c| match c {
                    Constraint::ClosedRange { min, max, .. } => Some((*min, *max)),
                    _ => None,
                })
        }
        _ => {
            let _ = matches!(graph.info(id).kind, Kind::Series(_));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::python_float_repr as r;

    #[test]
    fn floats_format_like_python_repr() {
        assert_eq!(r(1.0), "1.0");
        assert_eq!(r(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(r(1e16), "1e+16");
        assert_eq!(r(123456789012345.6), "123456789012345.6");
        assert_eq!(r(1.5e-5), "1.5e-05");
        assert_eq!(r(0.0001), "0.0001");
        assert_eq!(r(-2.5), "-2.5");
        assert_eq!(r(2f64.powi(111)), "2.596148429267414e+33");
        assert_eq!(r(100.0), "100.0");
        assert_eq!(r(1e15), "1000000000000000.0");
    }
}
