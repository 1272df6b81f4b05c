//! A small streaming CSV record reader (RFC 4180: quoted fields, doubled quotes, newlines
//! inside quotes) and paging over it, so the viewer reads only up to the requested page of a
//! large file.

use std::io::BufRead;

/// Records from a CSV stream, one at a time.
pub struct Records<R> {
    reader: R,
    line: String,
}

impl<R: BufRead> Records<R> {
    pub fn new(reader: R) -> Records<R> {
        Records {
            reader,
            line: String::new(),
        }
    }

    /// The next record, or `None` at the end.
    ///
    /// # Errors
    /// Reading failed or the text is not UTF-8.
    pub fn next_record(&mut self) -> std::io::Result<Option<Vec<String>>> {
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut in_quotes = false;
        let mut read_any = false;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line)? == 0 {
                if !read_any {
                    return Ok(None);
                }
                fields.push(field);
                return Ok(Some(fields));
            }
            read_any = true;
            let mut chars = self.line.chars().peekable();
            while let Some(c) = chars.next() {
                match (in_quotes, c) {
                    (true, '"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    (true, '"') => in_quotes = false,
                    (true, c) => field.push(c),
                    (false, '"') => in_quotes = true,
                    (false, ',') => fields.push(std::mem::take(&mut field)),
                    (false, '\r') => {}
                    (false, '\n') => {
                        fields.push(field);
                        return Ok(Some(fields));
                    }
                    (false, c) => field.push(c),
                }
            }
        }
    }
}

/// One page of a CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Whether more rows follow this page.
    pub more: bool,
}

/// Reads the header and rows `page * page_size .. (page + 1) * page_size`, stopping right
/// after them.
///
/// # Errors
/// Reading failed.
pub fn page(reader: impl BufRead, page: usize, page_size: usize) -> std::io::Result<Page> {
    let mut records = Records::new(reader);
    let header = records.next_record()?.unwrap_or_default();
    let skip = page.saturating_mul(page_size);
    for _ in 0..skip {
        if records.next_record()?.is_none() {
            break;
        }
    }
    let mut rows = Vec::with_capacity(page_size.min(1024));
    while rows.len() < page_size {
        match records.next_record()? {
            Some(record) => rows.push(record),
            None => {
                return Ok(Page {
                    header,
                    rows,
                    more: false,
                });
            }
        }
    }
    let more = records.next_record()?.is_some();
    Ok(Page { header, rows, more })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_and_pages() {
        let text = "a,b\n1,\"x, \"\"y\"\"\"\n2,\"multi\nline\"\r\n3,z\n";
        let first = page(text.as_bytes(), 0, 2).unwrap();
        assert_eq!(first.header, ["a", "b"]);
        assert_eq!(
            first.rows,
            [vec!["1", "x, \"y\""], vec!["2", "multi\nline"]]
        );
        assert!(first.more);
        let second = page(text.as_bytes(), 1, 2).unwrap();
        assert_eq!(second.rows, [vec!["3", "z"]]);
        assert!(!second.more);
        let beyond = page(text.as_bytes(), 9, 2).unwrap();
        assert!(beyond.rows.is_empty());
    }
}
