//! `codelist_from_csv(path, column=…, category_column=…)` (spec §3.3): reads a codelist CSV
//! from the workspace. Paths are relative to the workspace directory and may not leave it
//! (no absolute paths, no `..` above it, no symbolic link out of it). Cells are stripped and
//! empty codes dropped, as the reference does.

use std::path::Path;

use super::error::ErrorKind;
use crate::frontend::json::path_inside;

/// Largest codelist file read; real codelists are well under a megabyte.
const MAX_CODELIST_BYTES: u64 = 64 << 20;

/// A codelist: codes, or codes with their category.
#[derive(Debug, PartialEq)]
pub(super) enum Codelist {
    Codes(Vec<String>),
    Categories(Vec<(String, String)>),
}

/// Reads a codelist CSV at `path` (as written in the definition) under `workspace`.
pub(super) fn read(
    workspace: &Path,
    path: &str,
    column: &str,
    category_column: Option<&str>,
) -> Result<Codelist, ErrorKind> {
    let fail = |reason: String| ErrorKind::Codelist {
        path: path.to_string(),
        reason,
    };
    let relative = Path::new(path);
    if relative.is_absolute() || !path_inside(workspace, relative) {
        return Err(fail(
            "the path must be relative and stay inside the workspace".into(),
        ));
    }
    let full = workspace.join(relative);
    // The lexical check above cannot see symbolic links; resolve both paths and check again so
    // a link inside the workspace cannot point a codelist read outside it.
    if let (Ok(real_workspace), Ok(real_file)) = (workspace.canonicalize(), full.canonicalize())
        && !real_file.starts_with(&real_workspace)
    {
        return Err(fail(
            "the path must be relative and stay inside the workspace".into(),
        ));
    }
    let metadata = std::fs::metadata(&full).map_err(|_| {
        let hint = if path.contains('\\') {
            " (use '/' rather than '\\' to separate directories)"
        } else {
            ""
        };
        fail(format!("no such file{hint}"))
    })?;
    if !metadata.is_file() {
        return Err(fail("not a file".into()));
    }
    if metadata.len() > MAX_CODELIST_BYTES {
        return Err(fail("the file is too large".into()));
    }
    let bytes = std::fs::read(&full).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| fail("the file is not UTF-8 text".into()))?;
    parse(&text, column, category_column).map_err(fail)
}

/// Parses codelist CSV text.
pub(super) fn parse(
    text: &str,
    column: &str,
    category_column: Option<&str>,
) -> Result<Codelist, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = parse_csv(text)?.into_iter();
    let Some(header) = records.next() else {
        return Err("the file is empty".into());
    };
    let position = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| format!("no column '{name}' (columns: {})", header.join(", ")))
    };
    let code_index = position(column)?;
    let category_index = category_column.map(position).transpose()?;
    let mut codes = Vec::new();
    let mut categories = Vec::new();
    for record in records {
        let code = record.get(code_index).map_or("", |c| c.trim());
        if code.is_empty() {
            continue;
        }
        match category_index {
            Some(i) => {
                let category = record.get(i).map_or("", |c| c.trim());
                categories.push((code.to_string(), category.to_string()));
            }
            None => codes.push(code.to_string()),
        }
    }
    Ok(match category_index {
        Some(_) => Codelist::Categories(categories),
        None => Codelist::Codes(codes),
    })
}

/// RFC 4180 CSV: quoted fields may hold commas, newlines and doubled quotes; CRLF or LF line
/// ends; blank lines are skipped.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut line = 1usize;
    let end_record =
        |record: &mut Vec<String>, field: &mut String, records: &mut Vec<Vec<String>>| {
            record.push(std::mem::take(field));
            let done = std::mem::take(record);
            if !(done.len() == 1 && done[0].is_empty()) {
                records.push(done);
            }
        };
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.trim().is_empty() => {
                field.clear();
                in_quotes = true;
            }
            ',' => record.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                end_record(&mut record, &mut field, &mut records);
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(format!("a quoted field is not closed (line {line})"));
    }
    if !field.is_empty() || !record.is_empty() {
        end_record(&mut record, &mut field, &mut records);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_codes_strips_cells_and_drops_empty_codes() {
        let text =
            "\u{feff}code,term\r\n 123456 ,Asthma\r\n,blank\r\n\"654321\",\"Wheeze, chronic\"\r\n";
        assert_eq!(
            parse(text, "code", None).unwrap(),
            Codelist::Codes(vec!["123456".into(), "654321".into()])
        );
        assert_eq!(
            parse(text, "code", Some("term")).unwrap(),
            Codelist::Categories(vec![
                ("123456".into(), "Asthma".into()),
                ("654321".into(), "Wheeze, chronic".into())
            ])
        );
    }

    #[test]
    fn symbolic_links_out_of_the_workspace_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.csv"), "code\n123456\n").unwrap();
        let workspace = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), workspace.path().join("linked")).unwrap();
        let error = read(workspace.path(), "linked/secret.csv", "code", None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "codelist 'linked/secret.csv': the path must be relative and stay inside the workspace"
        );
        std::fs::write(workspace.path().join("inside.csv"), "code\n123456\n").unwrap();
        assert_eq!(
            read(workspace.path(), "inside.csv", "code", None).unwrap(),
            Codelist::Codes(vec!["123456".into()])
        );
    }

    #[test]
    fn missing_column_and_unclosed_quote_are_errors() {
        assert_eq!(
            parse("a,b\n1,2\n", "code", None).unwrap_err(),
            "no column 'code' (columns: a, b)"
        );
        assert!(parse("code\n\"123\n", "code", None).is_err());
    }
}
