//! CSV (and gzipped CSV) table files: a header row, then one record per line; fields may be
//! quoted with `"` (doubled inside), as Python's `csv` module writes them; CRLF or LF.

use std::io::Read;
use std::path::Path;

use super::{FileColumn, FileError, check_required_columns, typed_value};
use crate::query_model::{Date, ScalarType, Value};

pub(super) fn read(
    path: &Path,
    columns: &[FileColumn],
    gzipped: bool,
) -> Result<Vec<Vec<Value>>, FileError> {
    let io_error = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut text = String::new();
    if gzipped {
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .map_err(io_error)?;
    } else {
        std::io::BufReader::new(file)
            .read_to_string(&mut text)
            .map_err(io_error)?;
    }
    let mut records = Records {
        text: text.strip_prefix('\u{feff}').unwrap_or(&text),
        line: 1,
    };
    let malformed = |line, problem| FileError::MalformedCsv {
        path: path.to_path_buf(),
        line,
        problem,
    };
    let Some(header) = records
        .next_record()
        .map_err(|(line, p)| malformed(line, p))?
    else {
        return Err(FileError::MissingColumns {
            path: path.to_path_buf(),
            columns: columns.iter().map(|c| c.spec.name.clone()).collect(),
        });
    };
    let header = header.1;
    let positions: Vec<Option<usize>> = columns
        .iter()
        .map(|c| header.iter().position(|h| h.trim() == c.spec.name))
        .collect();
    check_required_columns(path, columns, &positions)?;
    let mut rows = Vec::new();
    while let Some((line, fields)) = records
        .next_record()
        .map_err(|(line, p)| malformed(line, p))?
    {
        // A blank line (a trailing newline, say) is no record.
        if fields.len() == 1 && fields[0].is_empty() {
            continue;
        }
        if fields.len() != header.len() {
            return Err(malformed(
                line,
                "the record does not have as many fields as the header",
            ));
        }
        let mut row = Vec::with_capacity(columns.len());
        for (column, position) in columns.iter().zip(&positions) {
            // A column the file may omit reads as NULL, even where the schema forbids NULL:
            // nothing reads it.
            let Some(position) = position else {
                row.push(Value::Null);
                continue;
            };
            let value = parse(fields[*position].as_str(), column.spec.ty)
                .and_then(|raw| typed_value(raw, &column.spec))
                .map_err(|problem| FileError::BadValue {
                    path: path.to_path_buf(),
                    place: format!("line {line}"),
                    column: column.spec.name.clone(),
                    problem,
                })?;
            row.push(value);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The value of a CSV field for a column of type `ty` (codes stay strings here).
fn parse(text: &str, ty: ScalarType) -> Result<Value, String> {
    if text.is_empty() {
        return Ok(Value::Null);
    }
    let bad = |what: &str| format!("'{text}' is not a valid {what}");
    Ok(match ty.primitive() {
        ScalarType::Int => Value::Int(text.trim().parse().map_err(|_| bad("int"))?),
        ScalarType::Float => Value::Float(text.trim().parse().map_err(|_| bad("float"))?),
        ScalarType::Bool => match text.trim() {
            "T" | "t" | "true" | "True" | "1" => Value::Bool(true),
            "F" | "f" | "false" | "False" | "0" => Value::Bool(false),
            _ => return Err(bad("bool (use T or F)")),
        },
        ScalarType::Date => {
            Value::Date(Date::parse_iso(text.trim()).ok_or_else(|| bad("date (YYYY-MM-DD)"))?)
        }
        _ => Value::Str(text.into()),
    })
}

/// Splits CSV text into records of fields.
struct Records<'a> {
    text: &'a str,
    line: usize,
}

impl Records<'_> {
    /// The next record and the line it starts on, or `None` at the end.
    #[allow(clippy::type_complexity)]
    fn next_record(&mut self) -> Result<Option<(usize, Vec<String>)>, (usize, &'static str)> {
        if self.text.is_empty() {
            return Ok(None);
        }
        let start_line = self.line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = self.text.char_indices().peekable();
        let mut in_quotes = false;
        let mut consumed = self.text.len();
        while let Some((i, c)) = chars.next() {
            if in_quotes {
                match c {
                    '"' if chars.peek().is_some_and(|(_, n)| *n == '"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => in_quotes = false,
                    '\n' => {
                        self.line += 1;
                        field.push(c);
                    }
                    _ => field.push(c),
                }
                continue;
            }
            match c {
                '"' if field.is_empty() => in_quotes = true,
                ',' => fields.push(std::mem::take(&mut field)),
                '\r' if chars.peek().is_some_and(|(_, n)| *n == '\n') => {}
                '\n' => {
                    self.line += 1;
                    consumed = i + 1;
                    break;
                }
                _ => field.push(c),
            }
        }
        if in_quotes {
            return Err((start_line, "a quoted field is not closed"));
        }
        fields.push(field);
        self.text = &self.text[consumed..];
        Ok(Some((start_line, fields)))
    }
}

#[cfg(test)]
mod tests {
    use super::Records;

    #[test]
    fn records_split_quoted_fields_and_crlf() {
        let mut records = Records {
            text: "a,b\r\n\"x,\"\"y\"\"\",2\r\n\"multi\nline\",3\n",
            line: 1,
        };
        assert_eq!(
            records.next_record().unwrap().unwrap(),
            (1, vec!["a".into(), "b".into()])
        );
        assert_eq!(
            records.next_record().unwrap().unwrap(),
            (2, vec!["x,\"y\"".into(), "2".into()])
        );
        assert_eq!(
            records.next_record().unwrap().unwrap(),
            (3, vec!["multi\nline".into(), "3".into()])
        );
        assert!(records.next_record().unwrap().is_none());
        let mut open = Records {
            text: "\"never closed,1\n",
            line: 1,
        };
        assert_eq!(open.next_record().unwrap_err().0, 1);
    }
}
