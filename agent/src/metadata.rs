//! A finished job's record, `metadata.json` in its log directory (spec §4.5), the job summary
//! appended to `logs.txt`, and the redaction that turns the record into the results the
//! controller may see (spec §1.6).
//!
//! The record is the agent's on-disk contract: written last in finalize, so its presence means
//! the job is finalized (spec §4.2), and read back after a restart to resend the same result.
//! It is a versioned serde struct of its own; readers fill defaults for missing keys.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rap_proto::pb::rap::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// The record's format version; bump when a field changes meaning.
pub const METADATA_VERSION: u32 = 1;

/// An error recorded when a job ended in the ERROR state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordedError {
    /// `true` for errors a new task cannot fix.
    pub fatal: bool,
    /// A message naming no output file.
    pub message: String,
}

/// Per-job resource use (spec §4.9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobMetrics {
    /// Highest CPU use seen, in percent of one CPU.
    pub cpu_peak: f64,
    /// Mean CPU use over the samples.
    pub cpu_mean: f64,
    /// Highest memory use seen, MB.
    pub mem_mb_peak: f64,
    /// Mean memory use over the samples, MB.
    pub mem_mb_mean: f64,
}

/// `metadata.json`. Keys follow the reference where it has one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobMetadata {
    /// [`METADATA_VERSION`] at writing.
    pub version: u32,
    /// Outputs, relative path → privacy level.
    pub outputs: BTreeMap<String, String>,
    /// Patterns that matched no file.
    pub unmatched_patterns: Vec<String>,
    /// Files written during the job that matched no pattern (a hint for the researcher).
    pub unmatched_outputs: Vec<String>,
    /// The executor's message, if any.
    pub status_message: Option<String>,
    /// The "did you mean" hint, if any.
    pub hint: Option<String>,
    /// Finalization time, UNIX ns.
    pub timestamp_ns: i64,
    /// The job id.
    pub job_definition_id: String,
    /// The RAP id.
    pub job_definition_rap_id: String,
    /// The task that finalized the job.
    pub task_id: String,
    /// Job creation, UNIX s.
    pub created_at: i64,
    /// Who asked.
    pub user: String,
    /// Finalization time, UNIX s.
    pub completed_at: i64,
    /// The image the container ran (its id).
    pub docker_image_id: String,
    /// The digest the controller asked for.
    pub expected_image_id: String,
    /// The container's exit code; `None` when no container ran.
    pub exit_code: Option<i64>,
    /// Whether the kernel killed the container for memory.
    pub oom_killed: bool,
    /// `docker inspect` of the container, environment values redacted.
    pub container_metadata: serde_json::Value,
    /// The study commit.
    pub commit: String,
    /// The database used, if any.
    pub database_name: Option<String>,
    /// Image labels (`unknown` when absent).
    pub action_version: String,
    /// `org.opencontainers.image.revision`.
    pub action_revision: String,
    /// `org.opencontainers.image.created`.
    pub action_created: String,
    /// `org.opensafely.base.vcs-ref`.
    pub base_revision: String,
    /// `org.opencontainers.base.build-date`.
    pub base_created: String,
    /// Moderately sensitive outputs kept out of the medium-privacy tree, path → reason.
    pub level4_excluded_files: BTreeMap<String, String>,
    /// Whether the job was cancelled.
    pub cancelled: bool,
    /// Set when the job ended in the ERROR state.
    pub error: Option<RecordedError>,
    /// Resource use.
    pub job_metrics: JobMetrics,
}

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The file system refused.
    #[error("metadata file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid record.
    #[error("metadata file {path} is not valid: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// The file name of the record inside a job's log directory.
pub const METADATA_FILE: &str = "metadata.json";
/// The file name of the log inside a job's log directory.
pub const LOGS_FILE: &str = "logs.txt";

/// Reads a record, `Ok(None)` when there is none.
///
/// # Errors
/// The file exists but cannot be read or parsed.
pub fn read(path: &Path) -> Result<Option<JobMetadata>, MetadataError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| MetadataError::Invalid {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MetadataError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Serialises a record as 2-space JSON (as the reference writes it).
pub fn to_json(metadata: &JobMetadata) -> Vec<u8> {
    // Serialising plain data with string keys cannot fail.
    serde_json::to_vec_pretty(metadata).unwrap_or_default()
}

/// Finds the record of any job (by id) in any month directory: inputs name jobs by id only.
///
/// # Errors
/// The log tree cannot be read, or the record is invalid.
pub fn find_for_job(layout: &Layout, job_id: &str) -> Result<Option<JobMetadata>, MetadataError> {
    let root = layout.job_logs();
    let months = match std::fs::read_dir(&root) {
        Ok(months) => months,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(MetadataError::Io { path: root, source }),
    };
    let mut found = None;
    for month in months.flatten() {
        let candidate = month
            .path()
            .join(format!("os-job-{job_id}"))
            .join(METADATA_FILE);
        if let Some(metadata) = read(&candidate)? {
            // The newest record wins if a job somehow has several.
            let newer = found
                .as_ref()
                .is_none_or(|old: &JobMetadata| metadata.timestamp_ns > old.timestamp_ns);
            if newer {
                found = Some(metadata);
            }
        }
    }
    Ok(found)
}

/// The marker line between the container's log and the summary (spec §4.5).
pub const SUMMARY_MARKER: &str = "\n=============JOB SUMMARY=============\n";

/// The summary appended to the container's log: truthy key fields, the outputs table and the
/// level-4 exclusions (spec §4.5 "Log file format").
pub fn summary(metadata: &JobMetadata) -> String {
    let mut text = String::from(SUMMARY_MARKER);
    let exit_code = metadata.exit_code.map(|code| code.to_string());
    let created_at = metadata.created_at.to_string();
    let completed_at = metadata.completed_at.to_string();
    let fields: [(&str, Option<&str>); 10] = [
        ("job_definition_id", Some(&metadata.job_definition_id)),
        (
            "job_definition_rap_id",
            Some(&metadata.job_definition_rap_id),
        ),
        ("commit", Some(&metadata.commit)),
        ("docker_image_id", Some(&metadata.docker_image_id)),
        ("exit_code", exit_code.as_deref()),
        ("created_at", Some(&created_at)),
        ("completed_at", Some(&completed_at)),
        ("database_name", metadata.database_name.as_deref()),
        ("status_message", metadata.status_message.as_deref()),
        ("hint", metadata.hint.as_deref()),
    ];
    for (key, value) in fields {
        if let Some(value) = value.filter(|value| !value.is_empty() && *value != "0") {
            let _ = writeln!(text, "{key}: {value}");
        }
    }
    text.push_str("\noutputs:\n");
    if metadata.outputs.is_empty() {
        text.push_str("(no outputs)\n");
    } else {
        text.push_str(&table(&metadata.outputs));
    }
    if !metadata.level4_excluded_files.is_empty() {
        text.push_str("\nInvalid moderately_sensitive outputs:\n");
        text.push_str(&table(&metadata.level4_excluded_files));
    }
    text
}

/// Two aligned columns, `path  - value`.
fn table(rows: &BTreeMap<String, String>) -> String {
    let width = rows
        .keys()
        .map(|key| key.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (key, value) in rows {
        let _ = writeln!(text, "{key:<width$}  - {value}");
    }
    text
}

/// The results the controller may see (spec §1.6): no output name or pattern; the message and
/// hint are blanked when they would list files.
pub fn redact(metadata: &JobMetadata) -> pb::RunJobResults {
    let lists_files =
        !metadata.unmatched_patterns.is_empty() || !metadata.unmatched_outputs.is_empty();
    let (status_message, hint) = if lists_files {
        (String::new(), String::new())
    } else {
        (
            metadata.status_message.clone().unwrap_or_default(),
            metadata.hint.clone().unwrap_or_default(),
        )
    };
    pb::RunJobResults {
        exit_code: metadata.exit_code.and_then(|code| i32::try_from(code).ok()),
        oom_killed: metadata.oom_killed,
        docker_image_id: metadata.docker_image_id.clone(),
        status_message,
        hint,
        timestamp_ns: metadata.timestamp_ns,
        action_version: metadata.action_version.clone(),
        action_revision: metadata.action_revision.clone(),
        action_created: metadata.action_created.clone(),
        base_revision: metadata.base_revision.clone(),
        base_created: metadata.base_created.clone(),
        has_unmatched_patterns: !metadata.unmatched_patterns.is_empty(),
        has_level4_excluded_files: !metadata.level4_excluded_files.is_empty(),
        cancelled: metadata.cancelled,
        error: metadata.error.as_ref().map(|error| pb::TaskError {
            kind: if error.fatal {
                pb::ErrorKind::Fatal as i32
            } else {
                pb::ErrorKind::Retryable as i32
            },
            message: error.message.clone(),
        }),
        metrics: Some(pb::JobMetrics {
            cpu_peak: metadata.job_metrics.cpu_peak,
            cpu_mean: metadata.job_metrics.cpu_mean,
            mem_mb_peak: metadata.job_metrics.mem_mb_peak,
            mem_mb_mean: metadata.job_metrics.mem_mb_mean,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished() -> JobMetadata {
        JobMetadata {
            outputs: BTreeMap::from([
                ("output/a.csv".into(), "moderately_sensitive".into()),
                ("output/secret.csv".into(), "highly_sensitive".into()),
            ]),
            status_message: Some("Completed successfully".into()),
            exit_code: Some(0),
            job_definition_id: "job1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn redaction_keeps_no_file_names() {
        let mut metadata = finished();
        metadata.unmatched_patterns = vec!["output/missing_*.csv".into()];
        metadata.status_message =
            Some("\n  No outputs found matching patterns:\n - output/missing_*.csv".into());
        metadata.hint = Some("Did you mean output/missing.txt".into());
        metadata
            .level4_excluded_files
            .insert("output/a.csv".into(), "File has patient_id column".into());
        let results = redact(&metadata);
        let text = format!("{results:?}");
        assert!(!text.contains("output/"), "{text}");
        assert!(results.has_unmatched_patterns);
        assert!(results.has_level4_excluded_files);
        assert_eq!(results.status_message, "");
        assert_eq!(results.hint, "");
    }

    #[test]
    fn redaction_keeps_messages_without_file_names() {
        let results = redact(&finished());
        assert_eq!(results.status_message, "Completed successfully");
        assert_eq!(results.exit_code, Some(0));
        assert!(!results.has_unmatched_patterns);
    }

    #[test]
    fn summary_lists_outputs_and_exclusions() {
        let mut metadata = finished();
        metadata
            .level4_excluded_files
            .insert("output/a.csv".into(), "File has patient_id column".into());
        let text = summary(&metadata);
        assert!(text.starts_with(SUMMARY_MARKER));
        assert!(text.contains("job_definition_id: job1\n"));
        assert!(text.contains("exit_code: 0\n") || !text.contains("exit_code"));
        assert!(
            text.contains("output/a.csv       - moderately_sensitive\n"),
            "{text}"
        );
        assert!(text.contains("\nInvalid moderately_sensitive outputs:\n"));
        assert!(text.contains("output/a.csv  - File has patient_id column\n"));
    }
}
