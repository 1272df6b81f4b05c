//! The job an agent runs, as a checked domain value: [`JobDefinition`] is built from the wire's
//! `rap.v1.JobDefinition` by [`JobDefinition::from_wire`], which refuses anything that could make
//! the agent touch a path outside its own directories (ids, workspace and action names, output
//! patterns). Only this module and `task` see the wire type.

use std::collections::BTreeMap;

use rap_proto::pb::rap::v1 as pb;

/// The privacy level of an output pattern (spec §1.5 `output_spec`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Privacy {
    /// Copied only to the high-privacy workspace.
    HighlySensitive,
    /// Also copied, after the level-4 checks, to the medium-privacy workspace.
    ModeratelySensitive,
}

impl Privacy {
    /// The reference's spelling, used in metadata, logs and the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Privacy::HighlySensitive => "highly_sensitive",
            Privacy::ModeratelySensitive => "moderately_sensitive",
        }
    }
}

/// One output pattern and its privacy level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputPattern {
    /// A relative pattern where `*` stays within one path segment (checked safe).
    pub pattern: String,
    /// Where the matching files may go.
    pub privacy: Privacy,
}

/// The reference's `LEVEL4_MAX_FILESIZE` (16 MiB).
pub const DEFAULT_LEVEL4_MAX_FILESIZE: u64 = 16 * 1024 * 1024;
/// The reference's `LEVEL4_MAX_CSV_ROWS`.
pub const DEFAULT_LEVEL4_MAX_CSV_ROWS: u64 = 5000;

/// The level-4 limits for moderately sensitive outputs (spec §1.5, §4.5).
#[derive(Clone, Debug, PartialEq)]
pub struct Level4Limits {
    /// Largest file in bytes (reference default 16 MiB).
    pub max_filesize: u64,
    /// Most CSV data rows (reference default 5000).
    pub max_csv_rows: u64,
    /// Allowed suffixes, with their dot (`.csv`).
    pub file_types: Vec<String>,
}

/// The study repository a job belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StudyRepo {
    /// Its URL (or, where local repositories are allowed, an absolute path).
    pub git_repo_url: String,
    /// The study commit (the manifest records it).
    pub commit: String,
    /// The branch the commit must be on.
    pub branch: String,
}

/// A RUNJOB or CANCELJOB definition (spec §1.5). Fields are public because the executor and its
/// tests construct them; [`JobDefinition::from_wire`] and [`JobDefinition::check`] hold the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct JobDefinition {
    /// The job id: `[A-Za-z0-9_-]`, names the container `os-job-<id>` and the job directory.
    pub id: String,
    /// The RAP (job request) id.
    pub rap_id: String,
    /// The task this definition came with; metadata written under another task id is ignored.
    pub task_id: String,
    /// The code to check out: the action's repository for reusable actions, else the study's.
    pub repo_url: String,
    /// The commit of `repo_url` to check out.
    pub commit: String,
    /// The study repository.
    pub study: StudyRepo,
    /// The workspace name: names directories, so `[A-Za-z0-9_-]` only.
    pub workspace: String,
    /// The action name: names `metadata/<action>.log`, so `[A-Za-z0-9_.-]` and not `.`/`..`.
    pub action: String,
    /// Creation time, UNIX seconds: its UTC month names the log directory.
    pub created_at: i64,
    /// `<registry>/<name>:<tag>`.
    pub image: String,
    /// The digest the controller resolved, if any.
    pub image_sha: String,
    /// The command's arguments after the image.
    pub args: Vec<String>,
    /// Environment for the container.
    pub env: BTreeMap<String, String>,
    /// Jobs whose outputs are copied in as inputs.
    pub input_job_ids: Vec<String>,
    /// What to collect afterwards.
    pub output_spec: Vec<OutputPattern>,
    /// Database jobs run on the database network with the database URL in their environment.
    pub allow_database_access: bool,
    /// The database to use (only `default` is defined).
    pub database_name: Option<String>,
    /// Who asked for the job.
    pub user: String,
    /// `--cpus`; 0 means no limit.
    pub cpu_count: f64,
    /// `--memory` in bytes; `None` means no limit.
    pub memory_limit: Option<i64>,
    /// The level-4 limits.
    pub level4: Level4Limits,
    /// Actions whose outputs this job reads.
    pub requires_outputs_from: Vec<String>,
}

/// Why a definition is refused. Messages name no output file or pattern: they reach the
/// controller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    /// A field that names a path is empty or has characters outside its allowed set.
    #[error("the job definition's {field} is not a valid name")]
    InvalidName {
        /// Which field.
        field: &'static str,
    },
    /// An output pattern is unsafe (absolute, `..`, backslashes, unsupported wildcards).
    #[error("an output pattern is not a valid path inside the workspace")]
    UnsafeOutputPattern,
    /// An output pattern has no privacy level.
    #[error("an output pattern has no privacy level")]
    MissingPrivacy,
    /// The memory limit is not a Docker size (`4G`, `512m`, `1024`).
    #[error("the memory limit is not a valid size")]
    InvalidMemoryLimit,
    /// The commit is not a hexadecimal object id.
    #[error("the commit is not a valid git object id")]
    InvalidCommit,
}

impl JobDefinition {
    /// Builds the domain value from the wire definition, checking every rule.
    ///
    /// # Errors
    /// The first rule the definition breaks.
    pub fn from_wire(wire: &pb::JobDefinition) -> Result<JobDefinition, DefinitionError> {
        let mut output_spec = Vec::with_capacity(wire.output_spec.len());
        for output in &wire.output_spec {
            let privacy = match pb::Privacy::try_from(output.privacy) {
                Ok(pb::Privacy::HighlySensitive) => Privacy::HighlySensitive,
                Ok(pb::Privacy::ModeratelySensitive) => Privacy::ModeratelySensitive,
                _ => return Err(DefinitionError::MissingPrivacy),
            };
            output_spec.push(OutputPattern {
                pattern: output.pattern.clone(),
                privacy,
            });
        }
        let memory_limit = if wire.memory_limit.is_empty() {
            None
        } else {
            Some(parse_memory_limit(&wire.memory_limit)?)
        };
        let study = wire.study.clone().unwrap_or_default();
        let definition = JobDefinition {
            id: wire.id.clone(),
            rap_id: wire.rap_id.clone(),
            task_id: wire.task_id.clone(),
            repo_url: wire.repo_url.clone(),
            commit: wire.commit.clone(),
            study: StudyRepo {
                git_repo_url: study.git_repo_url,
                commit: study.commit,
                branch: study.branch,
            },
            workspace: wire.workspace.clone(),
            action: wire.action.clone(),
            created_at: wire.created_at,
            image: wire.image.clone(),
            image_sha: wire.image_sha.clone(),
            args: wire.args.clone(),
            env: wire
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            input_job_ids: wire.input_job_ids.clone(),
            output_spec,
            allow_database_access: wire.allow_database_access,
            database_name: Some(wire.database_name.clone()).filter(|name| !name.is_empty()),
            user: wire.user.clone(),
            cpu_count: wire.cpu_count,
            memory_limit,
            // A definition without limits (an older controller) gets the reference's defaults,
            // never "no limit" and never "nothing allowed".
            level4: Level4Limits {
                max_filesize: match wire.level4_max_filesize {
                    0 => DEFAULT_LEVEL4_MAX_FILESIZE,
                    size => size,
                },
                max_csv_rows: match wire.level4_max_csv_rows {
                    0 => DEFAULT_LEVEL4_MAX_CSV_ROWS,
                    rows => rows,
                },
                file_types: if wire.level4_file_types.is_empty() {
                    rap_pipeline::glob::LEVEL4_FILE_TYPES
                        .iter()
                        .map(|suffix| suffix.to_string())
                        .collect()
                } else {
                    wire.level4_file_types.clone()
                },
            },
            requires_outputs_from: wire.requires_outputs_from.clone(),
        };
        definition.check()?;
        Ok(definition)
    }

    /// Checks the rules that keep the agent inside its directories. The executor calls it again
    /// before touching the disk, so a definition built in code gets the same protection.
    ///
    /// # Errors
    /// The first rule the definition breaks.
    pub fn check(&self) -> Result<(), DefinitionError> {
        check_name("id", &self.id)?;
        check_name("workspace", &self.workspace)?;
        check_name("action", &self.action)?;
        for input in &self.input_job_ids {
            check_name("input job id", input)?;
        }
        let is_hex = |text: &str| {
            (4..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !is_hex(&self.commit) {
            return Err(DefinitionError::InvalidCommit);
        }
        for output in &self.output_spec {
            if rap_pipeline::glob::check_pattern(&output.pattern).is_err() {
                return Err(DefinitionError::UnsafeOutputPattern);
            }
        }
        Ok(())
    }

    /// The container's name, `os-job-<id>`, as in the reference.
    pub fn container_name(&self) -> String {
        format!("os-job-{}", self.id)
    }
}

/// Names that become one path component: letters, digits, `_`, `-`, `.`, but not `.` or `..`
/// and not starting with a dot.
fn check_name(field: &'static str, name: &str) -> Result<(), DefinitionError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.';
    if name.is_empty() || name.len() > 200 || name.starts_with('.') || !name.bytes().all(allowed) {
        return Err(DefinitionError::InvalidName { field });
    }
    Ok(())
}

/// Parses a Docker memory size: a number (decimals allowed) with an optional `b`, `k`, `m`, `g`
/// or `t` suffix (binary multiples, either case, an optional trailing `b` as in `4GB`).
///
/// # Errors
/// [`DefinitionError::InvalidMemoryLimit`] if the text is not such a size or is not positive.
pub fn parse_memory_limit(text: &str) -> Result<i64, DefinitionError> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let number: f64 = number
        .parse()
        .map_err(|_| DefinitionError::InvalidMemoryLimit)?;
    let multiplier: f64 = match unit.trim_end_matches('b') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(DefinitionError::InvalidMemoryLimit),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || !(1.0..=9.0e18).contains(&bytes) {
        return Err(DefinitionError::InvalidMemoryLimit);
    }
    // In range by the check above.
    Ok(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_parse_like_docker() {
        assert_eq!(parse_memory_limit("4G"), Ok(4 * 1024 * 1024 * 1024));
        assert_eq!(parse_memory_limit("6M"), Ok(6 * 1024 * 1024));
        assert_eq!(parse_memory_limit("512mb"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_memory_limit("1024"), Ok(1024));
        assert_eq!(parse_memory_limit("1.5k"), Ok(1536));
        assert_eq!(
            parse_memory_limit("lots"),
            Err(DefinitionError::InvalidMemoryLimit)
        );
        assert_eq!(
            parse_memory_limit("4X"),
            Err(DefinitionError::InvalidMemoryLimit)
        );
        assert_eq!(
            parse_memory_limit("0"),
            Err(DefinitionError::InvalidMemoryLimit)
        );
    }

    fn wire() -> pb::JobDefinition {
        pb::JobDefinition {
            id: "abc123".into(),
            task_id: "abc123-001".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            workspace: "ws".into(),
            action: "generate".into(),
            memory_limit: "4G".into(),
            output_spec: vec![pb::OutputPattern {
                pattern: "output/*.csv".into(),
                privacy: pb::Privacy::ModeratelySensitive as i32,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_definition_converts() {
        let job = JobDefinition::from_wire(&wire()).unwrap();
        assert_eq!(job.container_name(), "os-job-abc123");
        assert_eq!(job.output_spec[0].privacy, Privacy::ModeratelySensitive);
        assert_eq!(job.memory_limit, Some(4 * 1024 * 1024 * 1024));
        assert_eq!(job.database_name, None);
        assert_eq!(job.level4.max_filesize, DEFAULT_LEVEL4_MAX_FILESIZE);
        assert_eq!(job.level4.max_csv_rows, DEFAULT_LEVEL4_MAX_CSV_ROWS);
        assert!(job.level4.file_types.contains(&".csv".to_string()));
        let mut explicit = wire();
        explicit.level4_max_csv_rows = 7;
        explicit.level4_file_types = vec![".txt".into()];
        let job = JobDefinition::from_wire(&explicit).unwrap();
        assert_eq!(job.level4.max_csv_rows, 7);
        assert_eq!(job.level4.file_types, vec![".txt"]);
    }

    #[test]
    fn path_escapes_are_refused() {
        for bad_workspace in ["../etc", "a/b", "", ".hidden", ".."] {
            let mut definition = wire();
            definition.workspace = bad_workspace.into();
            assert_eq!(
                JobDefinition::from_wire(&definition),
                Err(DefinitionError::InvalidName { field: "workspace" }),
                "{bad_workspace}"
            );
        }
        for bad_pattern in ["../x.csv", "/etc/passwd.csv", "a/../../b.csv", "a\\b.csv"] {
            let mut definition = wire();
            definition.output_spec[0].pattern = bad_pattern.into();
            assert_eq!(
                JobDefinition::from_wire(&definition),
                Err(DefinitionError::UnsafeOutputPattern),
                "{bad_pattern}"
            );
        }
        let mut definition = wire();
        definition.id = "x/../y".into();
        assert!(JobDefinition::from_wire(&definition).is_err());
        let mut definition = wire();
        definition.commit = "main; rm -rf /".into();
        assert_eq!(
            JobDefinition::from_wire(&definition),
            Err(DefinitionError::InvalidCommit)
        );
    }
}
