//! The on-disk record formats (JSON in sled values). Each record is an enum tagged with its
//! version, so a future `V2` can be read beside `V1`; conversion to and from the domain types in
//! `model` is by hand. This file is an on-disk contract: never change a `V1` field.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum UserRecord {
    V1 {
        username: String,
        fullname: String,
        email: String,
        password_hash: String,
        roles: Vec<String>,
        login_token_hash: Option<String>,
        login_token_expires_at: Option<i64>,
        date_joined: i64,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum OrgRecord {
    V1 { slug: String, name: String },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum ProjectRecord {
    V1 {
        slug: String,
        name: String,
        status: String,
        orgs: Vec<String>,
        copilot: Option<String>,
    },
    /// V1 plus the analysis scope (a V1 record reads as an empty scope).
    V2 {
        slug: String,
        name: String,
        status: String,
        orgs: Vec<String>,
        copilot: Option<String>,
        dataset_permissions: Vec<String>,
        population_permissions: Vec<String>,
        component_access: Vec<String>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum MembershipRecord {
    V1 {
        project: String,
        username: String,
        roles: Vec<String>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum BackendRecord {
    V1 {
        slug: String,
        name: String,
        is_active: bool,
        token_hash: String,
        last_seen: Option<i64>,
        paused: bool,
        db_maintenance: bool,
        db_maintenance_since: Option<i64>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum WorkspaceRecord {
    V1 {
        name: String,
        project: String,
        repo_url: String,
        branch: String,
        purpose: String,
        is_archived: bool,
        created_by: String,
        created_at: i64,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum JobRequestRecord {
    V1 {
        rap_id: String,
        backend: String,
        workspace: String,
        project: String,
        requested_actions: Vec<String>,
        cancelled_actions: Vec<String>,
        sha: String,
        force_run_dependencies: bool,
        created_by: String,
        created_at: i64,
        status: String,
        status_message: Option<String>,
        project_definition: String,
    },
}

#[derive(Serialize, Deserialize)]
pub struct MetricsV1 {
    pub cpu_peak: f64,
    pub cpu_mean: f64,
    pub mem_mb_peak: f64,
    pub mem_mb_mean: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum JobRecord {
    V1 {
        identifier: String,
        rap_id: String,
        action: String,
        run_command: String,
        status: String,
        status_code: String,
        status_message: String,
        created_at: Option<i64>,
        updated_at: Option<i64>,
        started_at: Option<i64>,
        completed_at: Option<i64>,
        metrics: Option<MetricsV1>,
        trace_context: Vec<(String, String)>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum ReleaseRecord {
    V1 {
        id: String,
        workspace: String,
        backend: String,
        created_by: String,
        created_at: i64,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum ReleaseFileRecord {
    V1 {
        id: String,
        release_id: String,
        workspace: String,
        name: String,
        sha256: String,
        size: u64,
        mtime: i64,
        created_by: String,
        uploaded_at: Option<i64>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum SessionRecord {
    V1 {
        username: String,
        csrf_token: String,
        created_at: i64,
    },
}
