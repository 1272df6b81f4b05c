//! The job server's domain types (spec A1), plain structs with no serde: the on-disk form lives
//! in `store::records` and is converted by hand, so a field rename here never changes the disk.

use std::fmt;

use crate::roles::Role;
use crate::status::{JobStatus, RequestStatus};

/// A job request's identifier, shared with the controller as `rap_id`: 16 characters of
/// `[a-z0-9]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RapId(String);

/// A string that is not a valid rap id.
#[derive(Debug, thiserror::Error)]
#[error("invalid rap_id {0:?}: expected 16 characters of [a-z0-9]")]
pub struct InvalidRapId(pub String);

impl RapId {
    /// Checks the shape.
    ///
    /// # Errors
    /// When the value is not 16 characters of `[a-z0-9]`.
    pub fn parse(value: &str) -> Result<Self, InvalidRapId> {
        let ok = value.len() == 16
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(RapId(value.to_owned()))
        } else {
            Err(InvalidRapId(value.to_owned()))
        }
    }

    /// A fresh random id.
    pub fn generate() -> Self {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let id = (0..16)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        RapId(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RapId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A single-use Airlock login token, kept only as a hash.
#[derive(Debug, Clone)]
pub struct LoginToken {
    pub hash: String,
    pub expires_at: i64,
}

/// A person who signs in.
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub fullname: String,
    pub email: String,
    /// An argon2 PHC string; empty means the user cannot sign in with a password.
    pub password_hash: String,
    pub roles: Vec<Role>,
    pub login_token: Option<LoginToken>,
    pub date_joined: i64,
}

impl User {
    /// The reference's `display_name`: "fullname (username)".
    pub fn display_name(&self) -> String {
        format!("{} ({})", self.fullname, self.username)
    }
}

/// An organisation.
#[derive(Debug, Clone)]
pub struct Org {
    pub slug: String,
    pub name: String,
}

/// A project: the unit of permission.
#[derive(Debug, Clone)]
pub struct Project {
    pub slug: String,
    pub name: String,
    /// One of the reference's project statuses (`ongoing`, `retired`, …).
    pub status: String,
    /// Org slugs, the lead org first.
    pub orgs: Vec<String>,
    pub copilot: Option<String>,
    /// What the project's database jobs may read, sent with every SubmitJob (A5).
    pub analysis_scope: AnalysisScope,
}

/// A project's analysis scope (spec A5): the datasets, populations and components its
/// database jobs may use. The reference derives it from allow lists in its code; here the
/// operator sets it per project (`rap-jobserver project scope`). Empty grants nothing extra.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnalysisScope {
    pub dataset_permissions: Vec<String>,
    pub population_permissions: Vec<String>,
    pub component_access: Vec<String>,
}

/// The reference's fixed vocabulary for `dataset_permissions`.
pub const DATASET_PERMISSIONS: [&str; 9] = [
    "appointments",
    "icnarc",
    "isaric",
    "open_prompt",
    "ukrr",
    "waiting_list",
    "sgss_covid_all_tests",
    "occupation_on_covid_vaccine_record",
    "covid_therapeutics",
];
/// The reference's fixed vocabulary for `population_permissions`.
pub const POPULATION_PERMISSIONS: [&str; 3] =
    ["include_t1oo", "include_ndoo", "include_gp_unactivated"];
/// The reference's fixed vocabulary for `component_access`.
pub const COMPONENT_ACCESS: [&str; 1] = ["event_level_data"];

impl Project {
    /// "Ongoing" for Airlock: status ongoing or ongoing-and-linked.
    pub fn is_ongoing(&self) -> bool {
        self.status == "ongoing" || self.status == "ongoing-and-linked"
    }
}

/// A user's roles in one project.
#[derive(Debug, Clone)]
pub struct Membership {
    pub project: String,
    pub username: String,
    pub roles: Vec<Role>,
}

/// A backend (one RAP agent installation), with its token kept only as a hash.
#[derive(Debug, Clone)]
pub struct Backend {
    pub slug: String,
    pub name: String,
    pub is_active: bool,
    pub token_hash: String,
    /// From the controller's last GetBackendStatus answer.
    pub last_seen: Option<i64>,
    pub paused: bool,
    pub db_maintenance: bool,
    pub db_maintenance_since: Option<i64>,
}

/// A workspace: a study repository and branch within a project.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub name: String,
    pub project: String,
    pub repo_url: String,
    pub branch: String,
    pub purpose: String,
    pub is_archived: bool,
    pub created_by: String,
    pub created_at: i64,
}

/// A researcher's request to run actions.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub rap_id: RapId,
    pub backend: String,
    pub workspace: String,
    pub project: String,
    pub requested_actions: Vec<String>,
    pub cancelled_actions: Vec<String>,
    pub sha: String,
    pub force_run_dependencies: bool,
    pub created_by: String,
    pub created_at: i64,
    pub status: RequestStatus,
    pub status_message: Option<String>,
    pub project_definition: String,
}

/// Resource use of a job.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metrics {
    pub cpu_peak: f64,
    pub cpu_mean: f64,
    pub mem_mb_peak: f64,
    pub mem_mb_mean: f64,
}

/// A job, written only from controller data.
#[derive(Debug, Clone)]
pub struct Job {
    pub identifier: String,
    pub rap_id: RapId,
    pub action: String,
    pub run_command: String,
    pub status: JobStatus,
    pub status_code: String,
    pub status_message: String,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub metrics: Option<Metrics>,
    pub trace_context: Vec<(String, String)>,
}

/// A release of files from a backend, created by Airlock.
#[derive(Debug, Clone)]
pub struct Release {
    pub id: String,
    pub workspace: String,
    pub backend: String,
    pub created_by: String,
    pub created_at: i64,
}

/// One file of a release; bytes arrive after the release is created.
#[derive(Debug, Clone)]
pub struct ReleaseFile {
    pub id: String,
    pub release_id: String,
    pub workspace: String,
    pub name: String,
    pub sha256: String,
    pub size: u64,
    pub mtime: i64,
    pub created_by: String,
    pub uploaded_at: Option<i64>,
}

/// A signed-in browser session.
#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    pub csrf_token: String,
    pub created_at: i64,
}

/// Seconds since the UNIX epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a UNIX timestamp (the reference's ISO display).
pub fn iso(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `h:mm:ss` for a duration in seconds.
pub fn hms(seconds: i64) -> String {
    let s = seconds.max(0);
    format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rap_ids_are_checked() {
        let id = RapId::generate();
        assert!(RapId::parse(id.as_str()).is_ok());
        assert!(RapId::parse("ABCDEFGHIJKLMNOP").is_err());
        assert!(RapId::parse("short").is_err());
    }

    #[test]
    fn iso_formats_known_instants() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(hms(3723), "1:02:03");
    }
}
