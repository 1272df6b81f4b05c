//! Where the agent keeps things on disk (spec §4.10, in the project's layout): everything lives
//! under one work directory, and every path the agent writes is built here from checked names
//! ([`crate::job::JobDefinition::check`]), so no other module joins user-supplied text onto a
//! path by hand.
//!
//! ```text
//! <work>/high_privacy/workspaces/<ws>/...                every output, metadata/<action>.log
//! <work>/high_privacy/volumes/<job id>/                  the job directory, mounted at /workspace
//! <work>/high_privacy/archives/<ws>.tar.{gz,zstd,xz}     archived workspaces
//! <work>/medium_privacy/workspaces/<ws>/...              level-4 outputs, <file>.txt explanations,
//!                                                        metadata/<action>.log, metadata/manifest.json
//! <work>/job_logs/<YYYY-MM>/os-job-<id>/                 logs.txt, metadata.json
//! <work>/repos/<name>-<hash>.git                         bare git cache, one per repository
//! <work>/temp/                                           scratch (git index files)
//! <work>/outbox/                                         task updates not yet acknowledged
//! ```

use std::path::{Path, PathBuf};

use crate::clock;
use crate::job::JobDefinition;

/// The agent's directory tree, rooted at the configured work directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

/// The name of the file whose presence marks a job directory as prepared; it holds the
/// preparation time in UNIX nanoseconds (the reference's `.opensafely-timestamp`).
pub const TIMESTAMP_FILE: &str = ".opensafely-timestamp";

impl Layout {
    /// A layout rooted at `root` (which should be absolute).
    pub fn new(root: PathBuf) -> Layout {
        Layout { root }
    }

    /// The work directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<work>/high_privacy/workspaces`.
    pub fn high_privacy_workspaces(&self) -> PathBuf {
        self.root.join("high_privacy").join("workspaces")
    }

    /// `<work>/medium_privacy/workspaces`.
    pub fn medium_privacy_workspaces(&self) -> PathBuf {
        self.root.join("medium_privacy").join("workspaces")
    }

    /// `<work>/high_privacy/volumes`.
    pub fn volumes(&self) -> PathBuf {
        self.root.join("high_privacy").join("volumes")
    }

    /// `<work>/high_privacy/archives`.
    pub fn archives(&self) -> PathBuf {
        self.root.join("high_privacy").join("archives")
    }

    /// `<work>/job_logs`.
    pub fn job_logs(&self) -> PathBuf {
        self.root.join("job_logs")
    }

    /// `<work>/repos`.
    pub fn repos(&self) -> PathBuf {
        self.root.join("repos")
    }

    /// `<work>/temp`.
    pub fn temp(&self) -> PathBuf {
        self.root.join("temp")
    }

    /// `<work>/outbox`.
    pub fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }

    /// Every directory the agent needs, in the order to create them.
    pub fn directories(&self) -> Vec<PathBuf> {
        vec![
            self.high_privacy_workspaces(),
            self.medium_privacy_workspaces(),
            self.volumes(),
            self.archives(),
            self.job_logs(),
            self.repos(),
            self.temp(),
            self.outbox(),
        ]
    }

    /// The job directory mounted at `/workspace`.
    pub fn job_dir(&self, job: &JobDefinition) -> PathBuf {
        self.volumes().join(&job.id)
    }

    /// The job's high-privacy workspace.
    pub fn high_workspace(&self, job: &JobDefinition) -> PathBuf {
        self.high_privacy_workspaces().join(&job.workspace)
    }

    /// The job's medium-privacy workspace.
    pub fn medium_workspace(&self, job: &JobDefinition) -> PathBuf {
        self.medium_privacy_workspaces().join(&job.workspace)
    }

    /// `<work>/job_logs/<YYYY-MM of created_at, UTC>/os-job-<id>`.
    pub fn job_log_dir(&self, job: &JobDefinition) -> PathBuf {
        self.job_log_dir_for(&job.id, job.created_at)
    }

    /// The log directory of any job id (inputs are found through their jobs' metadata).
    pub fn job_log_dir_for(&self, job_id: &str, created_at: i64) -> PathBuf {
        self.job_logs()
            .join(clock::year_month(created_at))
            .join(format!("os-job-{job_id}"))
    }
}
