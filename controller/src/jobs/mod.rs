//! The job model: ids, the job record, job requests, and the rules that create and move jobs.
//!
//! Layout:
//! - [`state`]: `State`, `StatusCode`, `ExecutorStage` and [`state::set_code`] (§3.2–§3.3);
//! - [`create`]: request validation and job creation from a request (§2.3, §3.5);
//! - [`project`]: the controller's view of a `project.yaml` (built from `rap_pipeline`).
//!
//! Invariant: nothing here does IO; these are plain values and pure functions.

pub mod create;
pub mod project;
pub mod state;

use std::collections::BTreeMap;
use std::fmt;

use sha1::{Digest, Sha1};

use state::{JobStatus, State, StatusCode};

/// A validated RAP (job request) id: 16 characters of `[a-z0-9]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RapId(String);

impl RapId {
    /// Check the reference's pattern `^[a-z0-9]{16}$`.
    pub fn parse(value: &str) -> Option<RapId> {
        let ok = value.len() == 16
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        ok.then(|| RapId(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RapId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job id: deterministic from the request and the action (§0), so re-creating a request
/// recreates the same ids.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// The reference's algorithm: the first 10 bytes of SHA-1 of `"{rap_id}\n{action}"`, as 16
    /// characters of lowercase base32 (10 bytes are exactly 80 bits, so there is no padding).
    pub fn derive(rap_id: &RapId, action: &str) -> JobId {
        let digest = Sha1::digest(format!("{rap_id}\n{action}").as_bytes());
        JobId(base32_lower(&digest[..10]))
    }

    /// Wrap a stored id (the store only holds ids it derived).
    pub fn from_stored(value: String) -> JobId {
        JobId(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 4648 base32 in lower case, without padding.
fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The privacy level of an output pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Privacy {
    HighlySensitive,
    ModeratelySensitive,
}

impl Privacy {
    pub fn as_str(self) -> &'static str {
        match self {
            Privacy::HighlySensitive => "highly_sensitive",
            Privacy::ModeratelySensitive => "moderately_sensitive",
        }
    }
}

/// One named output pattern of an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputPattern {
    pub name: String,
    pub pattern: String,
    pub privacy: Privacy,
}

/// The optional data-access scope of a request (the reference's `analysis_scope`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnalysisScope {
    pub dataset_permissions: Vec<String>,
    pub population_permissions: Vec<String>,
    pub component_access: Vec<String>,
}

impl AnalysisScope {
    pub fn is_empty(&self) -> bool {
        self.dataset_permissions.is_empty()
            && self.population_permissions.is_empty()
            && self.component_access.is_empty()
    }
}

/// A job: one action of one request, on one backend (§3.1).
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub rap_id: RapId,
    pub backend: String,
    pub workspace: String,
    pub action: String,
    pub repo_url: String,
    pub commit: String,
    pub branch: String,
    pub database_name: String,
    /// The full command, `image:tag` first.
    pub run_command: String,
    /// Set for reusable actions only, together with `action_commit`.
    pub action_repo_url: Option<String>,
    pub action_commit: Option<String>,
    pub requires_outputs_from: Vec<String>,
    /// The needs whose jobs were pending or running when this job was created.
    pub wait_for_job_ids: Vec<JobId>,
    pub output_spec: Vec<OutputPattern>,
    pub requires_db: bool,
    pub cancelled: bool,
    /// UNIX seconds.
    pub created_at: i64,
    pub status: JobStatus,
    /// W3C trace context of the job's trace (`traceparent`).
    pub trace_context: BTreeMap<String, String>,
    pub user: String,
    pub project: String,
    pub orgs: Vec<String>,
    pub analysis_scope: AnalysisScope,
    /// Metrics from the latest finished task, if any.
    pub metrics: Option<JobMetrics>,
}

impl Job {
    pub fn state(&self) -> State {
        self.status.state
    }

    pub fn status_code(&self) -> StatusCode {
        self.status.status_code
    }

    /// The image name, the first token of the command before `:` (used for reusable actions and
    /// the weight rules).
    pub fn image_and_tag(&self) -> (&str, &str) {
        let first = self.run_command.split_whitespace().next().unwrap_or("");
        first.split_once(':').unwrap_or((first, "latest"))
    }
}

/// Resource use measured by the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JobMetrics {
    pub cpu_peak: f64,
    pub cpu_mean: f64,
    pub mem_mb_peak: f64,
    pub mem_mb_mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_sha1_base32() {
        let rap_id = RapId::parse("abcdefgh12345678").unwrap();
        let id = JobId::derive(&rap_id, "generate_dataset");
        assert_eq!(id.as_str().len(), 16);
        // Computed independently: sha1("abcdefgh12345678\ngenerate_dataset")[..10] in base32.
        let digest = Sha1::digest(b"abcdefgh12345678\ngenerate_dataset");
        let mut bits = String::new();
        for byte in &digest[..10] {
            bits.push_str(&format!("{byte:08b}"));
        }
        let expected: String = bits
            .as_bytes()
            .chunks(5)
            .map(|chunk| {
                let value = u8::from_str_radix(std::str::from_utf8(chunk).unwrap(), 2).unwrap();
                char::from(b"abcdefghijklmnopqrstuvwxyz234567"[value as usize])
            })
            .collect();
        assert_eq!(id.as_str(), expected);
        assert_ne!(id, JobId::derive(&rap_id, "other"));
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32_lower(b"fooba"), "mzxw6ytb");
    }

    #[test]
    fn rap_ids_are_checked() {
        assert!(RapId::parse("abcdefgh12345678").is_some());
        assert!(RapId::parse("ABCDEFGH12345678").is_none());
        assert!(RapId::parse("abcdefgh1234567").is_none());
        assert!(RapId::parse("abcdefgh1234567-").is_none());
    }
}
