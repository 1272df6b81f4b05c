//! Collecting a finished job's outputs (spec §4.5): matching the output patterns against the job
//! directory, the unmatched-output hint, the level-4 checks, filing every output into the
//! high-privacy workspace and the moderately sensitive ones that pass into the medium-privacy
//! workspace, and the manifest Airlock reads.
//!
//! Everything here is synchronous file-system work: callers run it on a blocking thread.
//!
//! Invariants:
//! - Only regular files are outputs. Symbolic links are never followed, as files or as
//!   directories, so a job cannot make the agent read or write outside its directories.
//! - Every destination path is a checked relative path (no `..`, not absolute) under a workspace
//!   directory, and no existing component of it may be a symbolic link.
//! - Copies are atomic (a temporary file in the destination directory, then a rename) and stream
//!   through the kernel (`std::fs::copy`), never through memory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::job::{JobDefinition, Level4Limits, OutputPattern, Privacy};
use crate::layout::TIMESTAMP_FILE;

/// Why outputs could not be collected or filed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputsError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A destination would pass through a symbolic link or leave its root.
    #[error("refusing to write {path}: it is not a plain path inside {root}")]
    UnsafePath {
        /// The relative path.
        path: String,
        /// The directory it had to stay in.
        root: PathBuf,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OutputsError + '_ {
    move |source| OutputsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What the patterns found in a job directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FoundOutputs {
    /// Relative path → privacy. A file matched at both levels is highly sensitive.
    pub outputs: BTreeMap<String, Privacy>,
    /// Patterns with no match, in spec order.
    pub unmatched_patterns: Vec<String>,
    /// Files newer than the preparation time that no pattern matched (the "did you mean" hint).
    pub unmatched_outputs: Vec<String>,
}

/// Lists every regular file under `root` as a `/`-separated relative path, without following
/// symbolic links; `metadata/` at the top is skipped (logs live there, never outputs).
///
/// # Errors
/// A directory cannot be read.
pub fn list_files(root: &Path) -> Result<Vec<(String, fs::Metadata)>, OutputsError> {
    let mut files = Vec::new();
    let mut pending = vec![(root.to_owned(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                // A name that is not UTF-8 cannot match a pattern; skip it.
                continue;
            };
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            // `symlink_metadata` does not follow links: a link is neither a file nor a dir here.
            let metadata = entry.path().symlink_metadata().map_err(io_error(&dir))?;
            if metadata.is_dir() {
                if relative != "metadata" {
                    pending.push((entry.path(), relative));
                }
            } else if metadata.is_file() {
                files.push((relative, metadata));
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// Matches the job's output patterns against its directory.
///
/// # Errors
/// The directory cannot be read.
pub fn find_outputs(
    job_dir: &Path,
    output_spec: &[OutputPattern],
) -> Result<FoundOutputs, OutputsError> {
    let files = list_files(job_dir)?;
    let prepared_at = fs::read_to_string(job_dir.join(TIMESTAMP_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<i128>().ok());
    let mut found = FoundOutputs::default();
    for spec in output_spec {
        let mut matched = false;
        for (path, _) in &files {
            if rap_pipeline::glob::matches(&spec.pattern, path) {
                matched = true;
                let privacy = found.outputs.entry(path.clone()).or_insert(spec.privacy);
                // Safer wins: a file matched at both levels never reaches medium privacy.
                if spec.privacy == Privacy::HighlySensitive {
                    *privacy = Privacy::HighlySensitive;
                }
            }
        }
        if !matched {
            found.unmatched_patterns.push(spec.pattern.clone());
        }
    }
    if let Some(prepared_at) = prepared_at {
        for (path, metadata) in &files {
            let modified_ns = metadata
                .modified()
                .ok()
                .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
                .map(|elapsed| i128::try_from(elapsed.as_nanos()).unwrap_or(i128::MAX));
            let is_new = modified_ns.is_some_and(|modified| modified > prepared_at);
            if is_new && path != TIMESTAMP_FILE && !found.outputs.contains_key(path) {
                found.unmatched_outputs.push(path.clone());
            }
        }
    }
    Ok(found)
}

/// The message for unmatched patterns and its hint (spec §4.5), exactly as the reference words
/// them. They name files, so they stay on the backend (redaction blanks them).
pub fn unmatched_message(found: &FoundOutputs) -> (String, Option<String>) {
    let message = format!(
        "\n  No outputs found matching patterns:\n - {}",
        found.unmatched_patterns.join("\n   - ")
    );
    let hint = (!found.unmatched_outputs.is_empty()).then(|| {
        format!(
            "\n  Did you mean to match one of these files instead?\n - {}",
            found.unmatched_outputs.join("\n   - ")
        )
    });
    (message, hint)
}

/// What the level-4 checks learnt about one moderately sensitive output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Level4Check {
    /// Why the file may not go to medium privacy; `None` if it may.
    pub excluded: Option<String>,
    /// CSV data rows, if the file is a CSV that was read.
    pub row_count: Option<u64>,
    /// CSV columns, if the file is a CSV that was read.
    pub col_count: Option<u64>,
}

/// Runs the level-4 checks on one file, in the reference's order: size, then type, then (CSV
/// only) a `patient_id` column and the row count, whose two messages are joined with `,`.
///
/// # Errors
/// The file cannot be read.
pub fn check_level4(
    path: &Path,
    relative: &str,
    size: u64,
    limits: &Level4Limits,
) -> Result<Level4Check, OutputsError> {
    const MB: f64 = 1024.0 * 1024.0;
    if size > limits.max_filesize {
        return Ok(Level4Check {
            excluded: Some(format!(
                "File size of {:.2}Mb is larger that limit of {:.2}Mb.",
                size as f64 / MB,
                limits.max_filesize as f64 / MB
            )),
            ..Default::default()
        });
    }
    let suffix = suffix(relative);
    if !limits.file_types.contains(&suffix) {
        return Ok(Level4Check {
            excluded: Some(format!("File type of {suffix} is not valid level 4 file")),
            ..Default::default()
        });
    }
    if suffix != ".csv" {
        return Ok(Level4Check::default());
    }
    let file = fs::File::open(path).map_err(io_error(path))?;
    let (header, rows) = count_csv(BufReader::new(file)).map_err(io_error(path))?;
    let mut reasons = Vec::new();
    if header.iter().any(|column| column == "patient_id") {
        reasons.push("File has patient_id column".to_string());
    }
    if rows > limits.max_csv_rows {
        reasons.push(format!(
            "File row count ({rows}) exceeds maximum allowed rows ({})",
            limits.max_csv_rows
        ));
    }
    Ok(Level4Check {
        excluded: (!reasons.is_empty()).then(|| reasons.join(",")),
        row_count: Some(rows),
        col_count: Some(header.len() as u64),
    })
}

/// The suffix of the last path component, with its dot (`""` if none), as Python's
/// `PurePath.suffix` gives it.
fn suffix(relative: &str) -> String {
    let name = relative.rsplit('/').next().unwrap_or(relative);
    match name.rfind('.') {
        Some(0) | None => String::new(),
        Some(index) if index + 1 == name.len() => String::new(),
        Some(index) => name[index..].to_string(),
    }
}

/// Reads a CSV stream: the header's fields and the number of non-empty data records. Quoted
/// fields may hold commas, doubled quotes and newlines (RFC 4180); blank lines are skipped, as
/// Python's `csv.DictReader` skips them. Streams: memory use is one record.
fn count_csv(mut reader: impl BufRead) -> io::Result<(Vec<String>, u64)> {
    let mut header: Option<Vec<String>> = None;
    let mut rows: u64 = 0;
    let mut field: Vec<u8> = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut record_has_content = false;
    let mut in_quotes = false;
    let mut quote_pending = false;
    let mut finish_record =
        |record: &mut Vec<String>, has_content: &mut bool, header: &mut Option<Vec<String>>| {
            if *has_content {
                if header.is_none() {
                    *header = Some(std::mem::take(record));
                } else {
                    rows += 1;
                }
            }
            record.clear();
            *has_content = false;
        };
    let mut buffer = Vec::with_capacity(64 * 1024);
    loop {
        buffer.clear();
        let read = reader.by_ref().take(64 * 1024).read_to_end(&mut buffer)?;
        if read == 0 {
            break;
        }
        for &byte in &buffer {
            if in_quotes {
                if quote_pending {
                    quote_pending = false;
                    if byte == b'"' {
                        field.push(b'"');
                        continue;
                    }
                    in_quotes = false;
                } else if byte == b'"' {
                    quote_pending = true;
                    continue;
                } else {
                    field.push(byte);
                    continue;
                }
            }
            match byte {
                b'"' => {
                    in_quotes = true;
                    record_has_content = true;
                }
                b',' => {
                    record.push(String::from_utf8_lossy(&field).into_owned());
                    field.clear();
                    record_has_content = true;
                }
                b'\n' => {
                    if !field.is_empty() {
                        record_has_content = true;
                    }
                    record.push(String::from_utf8_lossy(&field).into_owned());
                    field.clear();
                    finish_record(&mut record, &mut record_has_content, &mut header);
                }
                b'\r' => {}
                _ => {
                    field.push(byte);
                    record_has_content = true;
                }
            }
        }
    }
    if !field.is_empty() || record_has_content {
        record.push(String::from_utf8_lossy(&field).into_owned());
        record_has_content = true;
        finish_record(&mut record, &mut record_has_content, &mut header);
    }
    let header = header.unwrap_or_default();
    // Header fields may carry a UTF-8 byte-order mark on the first column.
    let header = header
        .into_iter()
        .map(|column| column.trim_start_matches('\u{feff}').to_string())
        .collect();
    Ok((header, rows))
}

/// Joins a checked relative path onto `root`, creating its parent directories, refusing any
/// `..`, absolute component or existing symbolic link on the way.
///
/// # Errors
/// The path is unsafe, or a directory cannot be created.
pub fn safe_destination(root: &Path, relative: &str) -> Result<PathBuf, OutputsError> {
    let unsafe_path = || OutputsError::UnsafePath {
        path: relative.to_owned(),
        root: root.to_owned(),
    };
    let relative_path = Path::new(relative);
    let components: Vec<_> = relative_path.components().collect();
    if components.is_empty()
        || !components
            .iter()
            .all(|component| matches!(component, Component::Normal(_)))
    {
        return Err(unsafe_path());
    }
    fs::create_dir_all(root).map_err(io_error(root))?;
    let mut current = root.to_owned();
    for component in &components[..components.len() - 1] {
        current.push(component);
        match current.symlink_metadata() {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => return Err(unsafe_path()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&current).map_err(io_error(&current))?;
            }
            Err(source) => {
                return Err(OutputsError::Io {
                    path: current,
                    source,
                });
            }
        }
    }
    let destination = root.join(relative_path);
    if let Ok(metadata) = destination.symlink_metadata()
        && metadata.is_dir()
    {
        return Err(unsafe_path());
    }
    Ok(destination)
}

/// Copies `source` to `destination` atomically: into a temporary file beside it, then renamed
/// over it (a symbolic link at the destination is replaced, never followed).
///
/// # Errors
/// The copy or the rename fails.
pub fn atomic_copy(source: &Path, destination: &Path) -> Result<u64, OutputsError> {
    let temporary = temporary_beside(destination);
    let copied = fs::copy(source, &temporary).map_err(io_error(source));
    let copied = match copied {
        Ok(copied) => copied,
        Err(error) => {
            let _ = fs::remove_file(&temporary);
            return Err(error);
        }
    };
    if let Err(source) = fs::rename(&temporary, destination) {
        let _ = fs::remove_file(&temporary);
        return Err(OutputsError::Io {
            path: destination.to_owned(),
            source,
        });
    }
    Ok(copied)
}

/// Writes `contents` to `destination` atomically.
///
/// # Errors
/// The write or the rename fails.
pub fn atomic_write(destination: &Path, contents: &[u8]) -> Result<(), OutputsError> {
    let temporary = temporary_beside(destination);
    let written = fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .map_err(io_error(&temporary));
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    fs::rename(&temporary, destination).map_err(|source| {
        let _ = fs::remove_file(&temporary);
        OutputsError::Io {
            path: destination.to_owned(),
            source,
        }
    })
}

fn temporary_beside(destination: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = destination
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    destination.with_file_name(format!(".{name}.{}.{unique}.tmp", std::process::id()))
}

/// The SHA-256 of a file, streamed.
///
/// # Errors
/// The file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String, OutputsError> {
    let mut file = fs::File::open(path).map_err(io_error(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).map_err(io_error(path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The explanation left in the medium-privacy workspace in place of an excluded file.
pub fn exclusion_explanation(relative: &str, reason: &str) -> String {
    format!(
        "This file ({relative}) was marked as moderately_sensitive but has not been copied to \
         the moderately sensitive (level 4) workspace because it failed the checks for level 4 \
         files:\n\n    {reason}\n\nLevel 4 files must be under the size limit, of an allowed \
         file type, and CSV files must have no patient_id column and no more rows than the \
         limit. The file is still available in the highly sensitive workspace. Change the \
         action to produce a smaller or aggregated output, or mark it highly_sensitive.\n"
    )
}

/// One manifest entry (spec §4.5 "Manifest").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// `highly_sensitive` or `moderately_sensitive`.
    pub level: String,
    /// The job that produced it.
    pub job_id: String,
    /// The RAP id.
    pub job_request: String,
    /// The action.
    pub action: String,
    /// Who asked.
    pub user: String,
    /// The study repository.
    pub repo: String,
    /// The study commit.
    pub commit: String,
    /// Bytes.
    pub size: u64,
    /// Modification time, UNIX seconds (float).
    pub timestamp: f64,
    /// SHA-256, hex.
    pub content_hash: String,
    /// Kept out of medium privacy by the level-4 checks.
    pub excluded: bool,
    /// Why, if excluded.
    pub message: Option<String>,
    /// CSV data rows, if read.
    pub row_count: Option<u64>,
    /// CSV columns, if read.
    pub col_count: Option<u64>,
    /// The action is no longer in the project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_date_action: Option<bool>,
    /// The action ran again and did not produce this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_date_output: Option<bool>,
}

/// `metadata/manifest.json` in the medium-privacy workspace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The workspace name.
    pub workspace: String,
    /// Always null, as in the reference.
    pub repo: Option<String>,
    /// Every output ever filed here, path → entry.
    pub outputs: BTreeMap<String, ManifestEntry>,
}

/// What filing a job's outputs produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Persisted {
    /// Moderately sensitive outputs kept out of medium privacy, path → reason.
    pub level4_excluded_files: BTreeMap<String, String>,
}

/// Files every output into the high-privacy workspace, the moderately sensitive ones that pass
/// the level-4 checks into the medium-privacy workspace (with `<file>.txt` in place of the ones
/// that fail), and updates the manifest. Re-running it after a crash gives the same result.
///
/// `project_actions` is the action names of the study's `project.yaml` at the study commit, if
/// it could be read: it sets the manifest's `out_of_date_action` flags.
///
/// # Errors
/// A copy, a check or the manifest write fails.
pub fn persist(
    job: &JobDefinition,
    job_dir: &Path,
    high_workspace: &Path,
    medium_workspace: &Path,
    outputs: &BTreeMap<String, Privacy>,
    project_actions: Option<&BTreeSet<String>>,
) -> Result<Persisted, OutputsError> {
    let mut persisted = Persisted::default();
    let mut entries = BTreeMap::new();
    for (relative, privacy) in outputs {
        let source = job_dir.join(relative);
        let metadata = source.symlink_metadata().map_err(io_error(&source))?;
        if !metadata.is_file() {
            return Err(OutputsError::UnsafePath {
                path: relative.clone(),
                root: job_dir.to_owned(),
            });
        }
        let high_destination = safe_destination(high_workspace, relative)?;
        let size = atomic_copy(&source, &high_destination)?;
        let content_hash = sha256_file(&high_destination)?;
        let timestamp = fs::metadata(&high_destination)
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map(|elapsed| elapsed.as_secs_f64())
            .unwrap_or(0.0);
        let mut entry = ManifestEntry {
            level: privacy.as_str().to_string(),
            job_id: job.id.clone(),
            job_request: job.rap_id.clone(),
            action: job.action.clone(),
            user: job.user.clone(),
            repo: job.study.git_repo_url.clone(),
            commit: job.study.commit.clone(),
            size,
            timestamp,
            content_hash,
            ..Default::default()
        };
        if *privacy == Privacy::ModeratelySensitive {
            let check = check_level4(&high_destination, relative, size, &job.level4)?;
            entry.row_count = check.row_count;
            entry.col_count = check.col_count;
            let medium_destination = safe_destination(medium_workspace, relative)?;
            let explanation = safe_destination(medium_workspace, &format!("{relative}.txt"))?;
            match check.excluded {
                Some(reason) => {
                    atomic_write(
                        &explanation,
                        exclusion_explanation(relative, &reason).as_bytes(),
                    )?;
                    remove_if_present(&medium_destination)?;
                    entry.excluded = true;
                    entry.message = Some(reason.clone());
                    persisted
                        .level4_excluded_files
                        .insert(relative.clone(), reason);
                }
                None => {
                    atomic_copy(&high_destination, &medium_destination)?;
                    remove_if_present(&explanation)?;
                }
            }
        }
        entries.insert(relative.clone(), entry);
    }
    update_manifest(job, medium_workspace, entries, project_actions)?;
    Ok(persisted)
}

fn remove_if_present(path: &Path) -> Result<(), OutputsError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(OutputsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads the manifest (an empty one if absent or unreadable), applies the update rules and
/// writes it back atomically.
fn update_manifest(
    job: &JobDefinition,
    medium_workspace: &Path,
    new_entries: BTreeMap<String, ManifestEntry>,
    project_actions: Option<&BTreeSet<String>>,
) -> Result<(), OutputsError> {
    let path = safe_destination(medium_workspace, "metadata/manifest.json")?;
    let mut manifest: Manifest = fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    manifest.workspace = job.workspace.clone();
    manifest.repo = None;
    if let Some(actions) = project_actions {
        for entry in manifest.outputs.values_mut() {
            entry.out_of_date_action = Some(!actions.contains(&entry.action));
        }
    }
    for (path, entry) in manifest.outputs.iter_mut() {
        if entry.action == job.action && !new_entries.contains_key(path) {
            entry.out_of_date_output = Some(true);
        }
    }
    manifest.outputs.extend(new_entries);
    // Plain data with string keys: serialisation cannot fail.
    let bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    atomic_write(&path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_counting_handles_quotes_and_blank_lines() {
        let text = "patient_id,\"a,b\"\n1,\"x\ny\"\n\n2,\"say \"\"hi\"\"\"\r\n3,z";
        let (header, rows) = count_csv(text.as_bytes()).unwrap();
        assert_eq!(header, vec!["patient_id", "a,b"]);
        assert_eq!(rows, 3);
        let (header, rows) = count_csv("".as_bytes()).unwrap();
        assert!(header.is_empty());
        assert_eq!(rows, 0);
        let (header, rows) = count_csv("a,b\n".as_bytes()).unwrap();
        assert_eq!(header, vec!["a", "b"]);
        assert_eq!(rows, 0);
    }

    #[test]
    fn suffix_is_pythons() {
        assert_eq!(suffix("output/a.csv"), ".csv");
        assert_eq!(suffix("output/a.tar.gz"), ".gz");
        assert_eq!(suffix("output/.hidden"), "");
        assert_eq!(suffix("output/noext"), "");
    }

    #[test]
    fn destinations_never_pass_through_links_or_leave_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        assert!(matches!(
            safe_destination(root.path(), "link/a.csv"),
            Err(OutputsError::UnsafePath { .. })
        ));
        assert!(matches!(
            safe_destination(root.path(), "../a.csv"),
            Err(OutputsError::UnsafePath { .. })
        ));
        assert!(matches!(
            safe_destination(root.path(), "/etc/a.csv"),
            Err(OutputsError::UnsafePath { .. })
        ));
        let ok = safe_destination(root.path(), "out/sub/a.csv").unwrap();
        assert_eq!(ok, root.path().join("out/sub/a.csv"));
        assert!(root.path().join("out/sub").is_dir());
    }

    #[test]
    fn listing_skips_links_and_metadata() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.csv"), "x").unwrap();
        fs::create_dir_all(root.path().join("output")).unwrap();
        fs::create_dir_all(root.path().join("metadata")).unwrap();
        fs::write(root.path().join("output/a.csv"), "a").unwrap();
        fs::write(root.path().join("metadata/x.log"), "l").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("output/dir")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.csv"),
            root.path().join("output/b.csv"),
        )
        .unwrap();
        let names: Vec<String> = list_files(root.path())
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, vec!["output/a.csv"]);
    }

    #[test]
    fn level4_checks_in_order_with_exact_messages() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Level4Limits {
            max_filesize: 100,
            max_csv_rows: 2,
            file_types: vec![".csv".into(), ".txt".into()],
        };
        let check = |name: &str, contents: &str| {
            let path = dir.path().join(name);
            fs::write(&path, contents).unwrap();
            check_level4(&path, name, contents.len() as u64, &limits).unwrap()
        };
        assert_eq!(
            check("big.csv", &"x".repeat(200)).excluded.as_deref(),
            Some("File size of 0.00Mb is larger that limit of 0.00Mb.")
        );
        assert_eq!(
            check("a.rds", "x").excluded.as_deref(),
            Some("File type of .rds is not valid level 4 file")
        );
        assert_eq!(
            check("p.csv", "patient_id,x\n1,2\n").excluded.as_deref(),
            Some("File has patient_id column")
        );
        let both = check("b.csv", "patient_id\n1\n2\n3\n");
        assert_eq!(
            both.excluded.as_deref(),
            Some("File has patient_id column,File row count (3) exceeds maximum allowed rows (2)")
        );
        let fine = check("f.csv", "a,b,c\n1,2,3\n");
        assert_eq!(fine.excluded, None);
        assert_eq!((fine.row_count, fine.col_count), (Some(1), Some(3)));
        assert_eq!(check("n.txt", "hello").excluded, None);
    }
}
