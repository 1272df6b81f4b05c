//! CSV writing with Python `csv.writer`'s rules (spec §6.3): CRLF line endings, NULL as an
//! empty field, booleans as `T`/`F`, floats as Python `repr`, quoting only when needed.

use std::fs::File;
use std::io::{BufWriter, Stdout, Write};

use flate2::write::GzEncoder;

use super::{TableWriter, python_float_repr};
use crate::engines::{ColumnSpec, SinkError};
use crate::query_model::Value;

/// Where CSV bytes go.
pub enum CsvOut {
    /// A plain file.
    File(BufWriter<File>),
    /// A gzip stream (level 6, as Python's default) into a file.
    Gzip(GzEncoder<BufWriter<File>>),
    /// Standard output.
    Stdout(BufWriter<Stdout>),
}

impl CsvOut {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            CsvOut::File(w) => w,
            CsvOut::Gzip(w) => w,
            CsvOut::Stdout(w) => w,
        }
    }
}

/// Writes one CSV table.
pub struct CsvWriter {
    out: CsvOut,
    line: String,
}

impl CsvWriter {
    /// A writer over `out`.
    pub fn new(out: CsvOut) -> CsvWriter {
        CsvWriter {
            out,
            line: String::new(),
        }
    }
}

/// Appends one field, quoted if it holds a comma, quote, CR or LF (Python's QUOTE_MINIMAL).
pub fn push_field(line: &mut String, text: &str) {
    if text.contains([',', '"', '\r', '\n']) {
        line.push('"');
        line.push_str(&text.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(text);
    }
}

/// The CSV text of one value.
pub fn format_value(line: &mut String, value: &Value) {
    use std::fmt::Write as _;
    match value {
        Value::Null => {}
        Value::Bool(true) => line.push('T'),
        Value::Bool(false) => line.push('F'),
        Value::Int(i) => {
            let _ = write!(line, "{i}");
        }
        Value::Float(f) => line.push_str(&python_float_repr(*f)),
        Value::Str(s) | Value::Code(_, s) => push_field(line, s),
        Value::Date(d) => {
            let _ = write!(line, "{d}");
        }
    }
}

impl TableWriter for CsvWriter {
    fn begin(&mut self, columns: &[ColumnSpec]) -> Result<(), SinkError> {
        self.line.clear();
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                self.line.push(',');
            }
            push_field(&mut self.line, &c.name);
        }
        self.line.push_str("\r\n");
        self.out.writer().write_all(self.line.as_bytes())?;
        Ok(())
    }

    fn row(&mut self, row: &[Value]) -> Result<(), SinkError> {
        self.line.clear();
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                self.line.push(',');
            }
            format_value(&mut self.line, v);
        }
        self.line.push_str("\r\n");
        self.out.writer().write_all(self.line.as_bytes())?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        match self.out {
            CsvOut::File(mut w) => w.flush()?,
            // `finish` writes the gzip trailer; `flush` alone would not end the stream.
            CsvOut::Gzip(w) => w.finish()?.flush()?,
            CsvOut::Stdout(mut w) => w.flush()?,
        }
        Ok(())
    }
}
