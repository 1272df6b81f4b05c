//! A small streaming CSV record reader (RFC 4180: quoted fields, doubled quotes, newlines
//! inside quotes) and paging over it, so the viewer reads only up to the requested page of a
//! large file. Deep pages go through a [`RowIndex`] (the byte offset of every
//! [`INDEX_STRIDE`]-th row, from one fast byte scan), kept per file in an [`IndexCache`], so
//! any page costs a seek and at most [`INDEX_STRIDE`] rows of parsing.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::workspace::FileStamp;

/// Rows between two offsets in a [`RowIndex`].
pub const INDEX_STRIDE: usize = 256;

/// Pages starting before this row are read by scanning from the top (a few milliseconds);
/// deeper ones use the index.
pub const SCAN_ROWS_LIMIT: usize = 10_000;

/// Files whose indexes are kept (least recently used first out).
const CACHED_INDEXES: usize = 32;

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

/// Where the data rows of a CSV file start: the byte offset of every [`INDEX_STRIDE`]-th
/// row (row 0 is the first after the header), and how many rows there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowIndex {
    offsets: Vec<u64>,
    n_rows: usize,
}

impl RowIndex {
    /// Scans the bytes once. Record boundaries are the newlines outside quotes, found the way
    /// [`Records`] finds them: every `"` toggles quoting (a doubled quote toggles twice), and a
    /// last line without a newline is a record.
    ///
    /// # Errors
    /// Reading failed.
    pub fn build(mut reader: impl Read) -> std::io::Result<RowIndex> {
        let mut buffer = vec![0u8; 256 * 1024];
        let mut offsets = Vec::new();
        let mut in_quotes = false;
        // Records seen so far, counting the header; the next one starts at `record_start`.
        let mut n_records = 0usize;
        let mut record_start = 0u64;
        let mut position = 0u64;
        loop {
            let n = reader.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            for &byte in &buffer[..n] {
                position += 1;
                match byte {
                    b'"' => in_quotes = !in_quotes,
                    b'\n' if !in_quotes => {
                        if is_indexed(n_records) {
                            offsets.push(record_start);
                        }
                        n_records += 1;
                        record_start = position;
                    }
                    _ => {}
                }
            }
        }
        if position > record_start {
            // The last record has no newline.
            if is_indexed(n_records) {
                offsets.push(record_start);
            }
            n_records += 1;
        }
        Ok(RowIndex {
            offsets,
            n_rows: n_records.saturating_sub(1),
        })
    }

    /// Data rows in the file (the header excluded).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// [`page`] through the index: the header from the top, then a seek to the nearest
    /// indexed row before the page.
    ///
    /// # Errors
    /// Reading failed.
    pub fn page<R: Read + Seek>(
        &self,
        mut file: R,
        page: usize,
        page_size: usize,
    ) -> std::io::Result<Page> {
        file.seek(SeekFrom::Start(0))?;
        let header = Records::new(BufReader::new(&mut file))
            .next_record()?
            .unwrap_or_default();
        let first = page.saturating_mul(page_size);
        if first >= self.n_rows {
            return Ok(Page {
                header,
                rows: Vec::new(),
                more: false,
            });
        }
        file.seek(SeekFrom::Start(self.offsets[first / INDEX_STRIDE]))?;
        let mut records = Records::new(BufReader::new(file));
        for _ in 0..first % INDEX_STRIDE {
            records.next_record()?;
        }
        let wanted = page_size.min(self.n_rows - first);
        let mut rows = Vec::with_capacity(wanted.min(1024));
        while rows.len() < wanted {
            match records.next_record()? {
                Some(record) => rows.push(record),
                None => break,
            }
        }
        Ok(Page {
            header,
            more: first + rows.len() < self.n_rows,
            rows,
        })
    }
}

/// Whether record `n_records` (0 is the header) is a data row whose offset the index keeps.
fn is_indexed(n_records: usize) -> bool {
    n_records >= 1 && (n_records - 1).is_multiple_of(INDEX_STRIDE)
}

/// The row indexes of recently paged files, each valid while the file keeps its
/// [`FileStamp`] (request copies never change; a workspace output may be rewritten by a new
/// run, and then its index is rebuilt; a file modified in the last second is not cached).
#[derive(Default)]
pub struct IndexCache {
    entries: Mutex<VecDeque<(IndexKey, Arc<RowIndex>)>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexKey {
    path: PathBuf,
    stamp: FileStamp,
}

impl IndexCache {
    /// One page of the CSV file at `path`: shallow pages by scanning from the top, deeper
    /// ones through the file's index (built on first use). Blocking: call it off the async
    /// threads.
    ///
    /// # Errors
    /// Reading failed.
    pub fn page(&self, path: &Path, page: usize, page_size: usize) -> std::io::Result<Page> {
        let mut file = std::fs::File::open(path)?;
        if page.saturating_mul(page_size) < SCAN_ROWS_LIMIT {
            return self::page(BufReader::new(file), page, page_size);
        }
        let key = IndexKey {
            path: path.to_path_buf(),
            stamp: FileStamp::of(&file.metadata()?),
        };
        let index = match self.cached(&key) {
            Some(index) => index,
            None => {
                let index = Arc::new(RowIndex::build(&mut file)?);
                if key.stamp.is_settled() {
                    self.insert(key, Arc::clone(&index));
                }
                index
            }
        };
        index.page(file, page, page_size)
    }

    fn cached(&self, key: &IndexKey) -> Option<Arc<RowIndex>> {
        // A poisoned lock only means another thread panicked mid-update; the cache is
        // rebuilt from files, so start it afresh.
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| {
            let mut entries = poisoned.into_inner();
            entries.clear();
            entries
        });
        let position = entries.iter().position(|(cached, _)| cached == key)?;
        let entry = entries.remove(position)?;
        let index = Arc::clone(&entry.1);
        entries.push_back(entry);
        Some(index)
    }

    fn insert(&self, key: IndexKey, index: Arc<RowIndex>) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| {
            let mut entries = poisoned.into_inner();
            entries.clear();
            entries
        });
        entries.retain(|(cached, _)| cached.path != key.path);
        if entries.len() >= CACHED_INDEXES {
            entries.pop_front();
        }
        entries.push_back((key, index));
    }
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

    /// Every page read through the index equals the page read by scanning, for files with
    /// quoted newlines and commas, doubled quotes, blank lines, CRLF endings and no final
    /// newline, across stride boundaries and past the end.
    #[test]
    fn indexed_pages_equal_scanned_pages() {
        let mut text = String::from("id,\"note, quoted\"\r\n");
        for idx in 0..1_000 {
            match idx % 5 {
                0 => text.push_str(&format!("{idx},\"two\nlines\"\n")),
                1 => text.push_str(&format!("{idx},\"say \"\"hi\"\"\"\r\n")),
                2 => text.push('\n'),
                _ => text.push_str(&format!("{idx},plain\n")),
            }
        }
        for ending in ["", "last,row"] {
            let text = format!("{text}{ending}");
            let index = RowIndex::build(text.as_bytes()).unwrap();
            let scanned_rows = {
                let mut records = Records::new(text.as_bytes());
                let mut n = 0;
                while records.next_record().unwrap().is_some() {
                    n += 1;
                }
                n - 1
            };
            assert_eq!(index.n_rows(), scanned_rows);
            for page_size in [1, 7, 100, 256, 300] {
                for page_idx in 0..=(scanned_rows / page_size + 1) {
                    let scanned = page(text.as_bytes(), page_idx, page_size).unwrap();
                    let indexed = index
                        .page(std::io::Cursor::new(text.as_bytes()), page_idx, page_size)
                        .unwrap();
                    assert_eq!(indexed, scanned, "page {page_idx} of {page_size}");
                }
            }
        }
    }

    #[test]
    fn the_cache_rebuilds_an_index_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let rows = |n: usize, tag: &str| {
            let mut text = String::from("n,tag\n");
            for idx in 0..n {
                text.push_str(&format!("{idx},{tag}\n"));
            }
            text
        };
        std::fs::write(&path, rows(30_000, "old")).unwrap();
        let cache = IndexCache::default();
        let n_cached = || cache.entries.lock().unwrap().len();
        // Just written: not cached, in case it is rewritten within the same clock tick.
        cache.page(&path, 250, 100).unwrap();
        assert_eq!(n_cached(), 0);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            .unwrap();
        let deep = cache.page(&path, 250, 100).unwrap();
        assert_eq!(deep.rows[0], ["25000", "old"]);
        assert!(deep.more);
        assert_eq!(n_cached(), 1);
        std::fs::write(&path, rows(25_050, "new")).unwrap();
        let deep = cache.page(&path, 250, 100).unwrap();
        assert_eq!(deep.rows.len(), 50);
        assert_eq!(deep.rows[0], ["25000", "new"]);
        assert!(!deep.more);
    }
}
