//! A zip archive of files on disk, produced as a stream of chunks while the files are read, so
//! a release of any size downloads in constant memory (spec A10 step 3, the release zip).
//!
//! Entries are stored (not compressed: released outputs are small tables and images, and
//! storing keeps the server's cost to one read per file). Each file's CRC-32 is only known once
//! it has been read, so every local header sets general-purpose bit 3 and the CRC and sizes
//! follow the data in a data descriptor; the central directory at the end repeats them, which
//! is where unzip tools read them from. Names are UTF-8 (bit 11). No ZIP64: an archive must
//! stay under 4 GiB and 65,535 entries, checked before streaming starts.

use std::collections::VecDeque;
use std::path::PathBuf;

use axum::body::Bytes;
use futures_util::Stream;
use tokio::io::AsyncReadExt;

/// One file to put in the archive.
#[derive(Debug, Clone)]
pub struct ZipEntry {
    /// The path inside the archive (`/`-separated).
    pub name: String,
    /// Where the bytes are.
    pub path: PathBuf,
    /// The expected size, for the up-front limit check (the archive records what is read).
    pub size: u64,
    /// Modification time, UNIX seconds (stored in DOS form, UTC).
    pub mtime: i64,
}

/// Why an archive cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    #[error("the archive would hold {entries} files; a zip without ZIP64 holds at most 65535")]
    TooManyEntries { entries: usize },
    #[error("the archive would be {bytes} bytes; a zip without ZIP64 must stay under 4 GiB")]
    TooLarge { bytes: u64 },
    #[error("the file name {name:?} is longer than zip's 65535 bytes")]
    NameTooLong { name: String },
}

/// Size of the chunks file data is read and sent in.
const CHUNK: usize = 64 * 1024;
const LOCAL_HEADER_LEN: u64 = 30;
const DESCRIPTOR_LEN: u64 = 16;
const CENTRAL_HEADER_LEN: u64 = 46;
const END_LEN: u64 = 22;
/// Bit 3 (sizes and CRC in a data descriptor) and bit 11 (UTF-8 names).
const FLAGS: u16 = 0x0008 | 0x0800;
/// Version 2.0: the minimum for stored entries with data descriptors.
const VERSION: u16 = 20;

/// The archive of `entries`, in order, as a stream of chunks. A file that cannot be read ends
/// the stream with its error (the client sees a truncated download).
///
/// # Errors
/// Too many entries, or an archive too large for a zip without ZIP64.
pub fn zip_stream(
    entries: Vec<ZipEntry>,
) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, ZipError> {
    if let Some(entry) = entries
        .iter()
        .find(|e| e.name.len() > usize::from(u16::MAX))
    {
        return Err(ZipError::NameTooLong {
            name: entry.name.clone(),
        });
    }
    if entries.len() > usize::from(u16::MAX) {
        return Err(ZipError::TooManyEntries {
            entries: entries.len(),
        });
    }
    let total: u64 = entries
        .iter()
        .map(|e| {
            let name = e.name.len() as u64;
            LOCAL_HEADER_LEN + name + e.size + DESCRIPTOR_LEN + CENTRAL_HEADER_LEN + name
        })
        .sum::<u64>()
        + END_LEN;
    if total > u64::from(u32::MAX) {
        return Err(ZipError::TooLarge { bytes: total });
    }
    let state = Writer {
        pending: entries.into(),
        current: None,
        offset: 0,
        central: Vec::new(),
        n_entries: 0,
        finished: false,
    };
    Ok(futures_util::stream::try_unfold(state, Writer::next_chunk))
}

/// The entry being read: its file, where its header started, and the running CRC and size.
struct Open {
    file: tokio::fs::File,
    entry: ZipEntry,
    header_offset: u64,
    crc: crc32fast::Hasher,
    size: u64,
}

struct Writer {
    pending: VecDeque<ZipEntry>,
    current: Option<Open>,
    /// Bytes sent so far: the offset of whatever comes next.
    offset: u64,
    /// Central-directory records of the entries finished so far.
    central: Vec<u8>,
    n_entries: u16,
    finished: bool,
}

impl Writer {
    /// The next chunk: a local header, file data, a data descriptor, or the central directory
    /// with the end record; `None` once all is sent.
    async fn next_chunk(mut self) -> std::io::Result<Option<(Bytes, Writer)>> {
        let chunk = if let Some(mut open) = self.current.take() {
            let mut buffer = vec![0; CHUNK];
            let n = open.file.read(&mut buffer).await?;
            if n > 0 {
                buffer.truncate(n);
                open.crc.update(&buffer);
                open.size += n as u64;
                self.current = Some(open);
                buffer
            } else {
                self.finish_entry(open)?
            }
        } else if let Some(entry) = self.pending.pop_front() {
            let file = tokio::fs::File::open(&entry.path).await?;
            let header = local_header(&entry);
            self.current = Some(Open {
                file,
                header_offset: self.offset,
                entry,
                crc: crc32fast::Hasher::new(),
                size: 0,
            });
            header
        } else if !self.finished {
            self.finished = true;
            let mut tail = std::mem::take(&mut self.central);
            let central_len = tail.len() as u64;
            tail.extend(end_record(self.n_entries, central_len, self.offset)?);
            tail
        } else {
            return Ok(None);
        };
        self.offset += chunk.len() as u64;
        Ok(Some((Bytes::from(chunk), self)))
    }

    /// The data descriptor of a fully read entry; records it for the central directory.
    fn finish_entry(&mut self, open: Open) -> std::io::Result<Vec<u8>> {
        let crc = open.crc.finalize();
        let size = fits_u32(open.size)?;
        let offset = fits_u32(open.header_offset)?;
        let (time, date) = dos_time(open.entry.mtime);
        let name = open.entry.name.as_bytes();
        let central = &mut self.central;
        put_u32(central, 0x0201_4b50);
        put_u16(central, VERSION);
        put_u16(central, VERSION);
        put_u16(central, FLAGS);
        put_u16(central, 0); // stored
        put_u16(central, time);
        put_u16(central, date);
        put_u32(central, crc);
        put_u32(central, size);
        put_u32(central, size);
        put_u16(central, name.len() as u16); // checked in `zip_stream`
        put_u16(central, 0); // extra field
        put_u16(central, 0); // comment
        put_u16(central, 0); // disk
        put_u16(central, 0); // internal attributes
        put_u32(central, 0); // external attributes
        put_u32(central, offset);
        central.extend_from_slice(name);
        self.n_entries += 1;

        let mut descriptor = Vec::with_capacity(DESCRIPTOR_LEN as usize);
        put_u32(&mut descriptor, 0x0807_4b50);
        put_u32(&mut descriptor, crc);
        put_u32(&mut descriptor, size);
        put_u32(&mut descriptor, size);
        Ok(descriptor)
    }
}

fn local_header(entry: &ZipEntry) -> Vec<u8> {
    let name = entry.name.as_bytes();
    let (time, date) = dos_time(entry.mtime);
    let mut header = Vec::with_capacity(LOCAL_HEADER_LEN as usize + name.len());
    put_u32(&mut header, 0x0403_4b50);
    put_u16(&mut header, VERSION);
    put_u16(&mut header, FLAGS);
    put_u16(&mut header, 0); // stored
    put_u16(&mut header, time);
    put_u16(&mut header, date);
    // CRC and sizes follow the data (bit 3).
    put_u32(&mut header, 0);
    put_u32(&mut header, 0);
    put_u32(&mut header, 0);
    // Fits: `zip_stream` refused longer names before streaming.
    put_u16(&mut header, name.len() as u16);
    put_u16(&mut header, 0);
    header.extend_from_slice(name);
    header
}

fn end_record(n_entries: u16, central_len: u64, central_offset: u64) -> std::io::Result<Vec<u8>> {
    let mut end = Vec::with_capacity(END_LEN as usize);
    put_u32(&mut end, 0x0605_4b50);
    put_u16(&mut end, 0);
    put_u16(&mut end, 0);
    put_u16(&mut end, n_entries);
    put_u16(&mut end, n_entries);
    put_u32(&mut end, fits_u32(central_len)?);
    put_u32(&mut end, fits_u32(central_offset)?);
    put_u16(&mut end, 0);
    Ok(end)
}

/// A size or offset in its 32-bit field; files that grew after the up-front check fail here.
fn fits_u32(value: u64) -> std::io::Result<u32> {
    u32::try_from(value).map_err(|_| std::io::Error::other("the archive grew past 4 GiB"))
}

/// MS-DOS time and date (2-second resolution, from 1980) of a UNIX time, in UTC.
fn dos_time(unix: i64) -> (u16, u16) {
    const DOS_EPOCH: i64 = 315_532_800; // 1980-01-01T00:00:00Z
    let unix = unix.max(DOS_EPOCH);
    let days = unix.div_euclid(86_400);
    let seconds = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let time = ((seconds / 3600) << 11) | ((seconds % 3600 / 60) << 5) | ((seconds % 60) / 2);
    let date = ((year.clamp(1980, 2107) - 1980) << 9) | (month << 5) | day;
    (time as u16, date as u16)
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_times_are_utc_fields() {
        // 2023-11-14T22:13:20Z
        let (time, date) = dos_time(1_700_000_000);
        assert_eq!(
            (time >> 11, (time >> 5) & 0x3f, (time & 0x1f) * 2),
            (22, 13, 20)
        );
        assert_eq!(
            (1980 + (date >> 9), (date >> 5) & 0xf, date & 0x1f),
            (2023, 11, 14)
        );
        // Before 1980 is 1980-01-01.
        assert_eq!(dos_time(0), (0, (1 << 5) | 1));
    }

    #[test]
    fn archives_past_the_zip32_limits_are_refused_up_front() {
        let entry = |size| ZipEntry {
            name: "a".into(),
            path: "/nonexistent".into(),
            size,
            mtime: 0,
        };
        assert!(matches!(
            zip_stream(vec![entry(u64::from(u32::MAX))]),
            Err(ZipError::TooLarge { .. })
        ));
        assert!(matches!(
            zip_stream(vec![entry(1); 70_000]),
            Err(ZipError::TooManyEntries { entries: 70_000 })
        ));
    }
}
