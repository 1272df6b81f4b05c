//! The controller's configuration: a TOML file, its keys overridable by the environment variables
//! in [`ENV_OVERRIDES`] (`RAP_CONTROLLER_<KEY>`, e.g. `RAP_CONTROLLER_LISTEN`), read and
//! overridden by `rap_proto::config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rap_proto::config::{ConfigFileError, EnvOverride, ValueKind};
use serde::Deserialize;

use crate::jobs::create::RequestRules;

/// Everything the controller needs to run.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the database and git caches live.
    pub data_dir: PathBuf,
    /// The RAP and admin services (TLS, bearer tokens).
    pub listen: String,
    /// The agent service (mutual TLS).
    pub agent_listen: String,
    pub tls: TlsConfig,
    #[serde(default = "default_orgs")]
    pub allowed_github_orgs: Vec<String>,
    /// Accept absolute local paths as repository URLs (development and tests only).
    #[serde(default)]
    pub allow_local_repos: bool,
    /// Replaces `https://github.com` when fetching (an allow-listing proxy).
    #[serde(default)]
    pub git_proxy: Option<String>,
    /// Where reusable actions live: `<actions_url>/<image>`.
    #[serde(default = "default_actions_url")]
    pub actions_url: String,
    /// Prefix of job images: `<docker_registry>/<image>:<tag>`.
    #[serde(default = "default_registry")]
    pub docker_registry: String,
    /// The periodic safety pass of each backend's scheduler (it also runs on every event).
    #[serde(default = "default_interval")]
    pub scheduler_interval_ms: u64,
    /// RUNJOB tasks a job may use before a retryable agent error becomes fatal.
    #[serde(default = "default_attempts")]
    pub max_task_attempts: u32,
    /// Seconds an agent may stay disconnected before its unfinished tasks are offered to
    /// another agent of its backend.
    #[serde(default = "default_lease_grace")]
    pub agent_lease_grace_s: u64,
    /// Seconds the `WatchJobs` change log keeps a change; 0 keeps every change forever.
    #[serde(default = "default_change_log_retention")]
    pub change_log_retention_s: u64,
    /// SHA-256 (hex) of the operators' admin token; empty disables the admin service.
    #[serde(default)]
    pub admin_token_sha256: String,
    #[serde(default)]
    pub projects_with_event_level_access: Vec<String>,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    pub backends: Vec<BackendConfig>,
}

/// PEM files of the controller.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA that signs agent certificates.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A job server (or other client) of the RAP API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    /// SHA-256 (hex) of the client's bearer token; the token itself is never stored here.
    pub token_sha256: String,
    /// The backends this client may act on.
    pub backends: Vec<String>,
}

/// One backend's limits (spec §3.10).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    #[serde(default = "default_workers")]
    pub max_workers: f64,
    /// Defaults to `max_workers`.
    #[serde(default)]
    pub max_db_workers: Option<f64>,
    #[serde(default = "default_cpu")]
    pub cpu_count: f64,
    #[serde(default = "default_memory")]
    pub memory_limit: String,
    /// Job weights: `"<workspace>/<action>"` or `"*/<action>"` → weight (default 1). Exact
    /// names rather than the reference's regular expressions.
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Seconds between DBSTATUS checks; 0 disables them.
    #[serde(default)]
    pub db_status_interval_s: u64,
    /// The database utilities image, for DBSTATUS and DBDATACHECK tasks alike.
    #[serde(default = "default_db_status_image")]
    pub db_status_image: String,
    /// Seconds between DBDATACHECK checks; 0 disables them.
    #[serde(default)]
    pub data_check_interval_s: u64,
    /// The month (`YYYYMM`) the data check expects the HES activity data to reach.
    #[serde(default = "default_hes_expected_activity_month")]
    pub data_check_hes_expected_activity_month: String,
}

impl BackendConfig {
    pub fn max_db_workers(&self) -> f64 {
        self.max_db_workers.unwrap_or(self.max_workers)
    }

    /// The weight of an action in a workspace: a workspace entry first, then a `*` entry.
    pub fn weight(&self, workspace: &str, action: &str) -> f64 {
        self.weights
            .get(&format!("{workspace}/{action}"))
            .or_else(|| self.weights.get(&format!("*/{action}")))
            .copied()
            .unwrap_or(1.0)
    }

    /// A backend with the reference's defaults.
    pub fn with_defaults(name: &str) -> BackendConfig {
        BackendConfig {
            name: name.to_string(),
            max_workers: default_workers(),
            max_db_workers: None,
            cpu_count: default_cpu(),
            memory_limit: default_memory(),
            weights: BTreeMap::new(),
            db_status_interval_s: 0,
            db_status_image: default_db_status_image(),
            data_check_interval_s: 0,
            data_check_hes_expected_activity_month: default_hes_expected_activity_month(),
        }
    }
}

fn default_orgs() -> Vec<String> {
    vec!["opensafely".into(), "opensafely-actions".into()]
}
fn default_actions_url() -> String {
    "https://github.com/opensafely-actions".into()
}
fn default_registry() -> String {
    "ghcr.io/opensafely-core".into()
}
fn default_interval() -> u64 {
    5000
}
fn default_attempts() -> u32 {
    5
}
fn default_change_log_retention() -> u64 {
    30 * 24 * 3600
}
fn default_lease_grace() -> u64 {
    300
}
fn default_workers() -> f64 {
    10.0
}
fn default_cpu() -> f64 {
    2.0
}
fn default_memory() -> String {
    "4G".into()
}
fn default_db_status_image() -> String {
    "ghcr.io/opensafely-core/tpp-database-utils:latest".into()
}
fn default_hes_expected_activity_month() -> String {
    "202304".into()
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read or parsed, or an override is malformed.
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("{0}")]
    Invalid(String),
}

/// The environment variables that override keys of the file, in documentation order.
pub const ENV_OVERRIDES: [EnvOverride; 15] = [
    EnvOverride::text("RAP_CONTROLLER_LISTEN", "listen"),
    EnvOverride::text("RAP_CONTROLLER_AGENT_LISTEN", "agent_listen"),
    EnvOverride::text("RAP_CONTROLLER_DATA_DIR", "data_dir"),
    EnvOverride::text("RAP_CONTROLLER_TLS_CA", "tls.ca"),
    EnvOverride::text("RAP_CONTROLLER_TLS_CERT", "tls.cert"),
    EnvOverride::text("RAP_CONTROLLER_TLS_KEY", "tls.key"),
    EnvOverride::new(
        "RAP_CONTROLLER_ALLOW_LOCAL_REPOS",
        "allow_local_repos",
        ValueKind::Boolean,
    ),
    // Empty means no proxy.
    EnvOverride::new(
        "RAP_CONTROLLER_GIT_PROXY",
        "git_proxy",
        ValueKind::OptionalText,
    ),
    EnvOverride::text("RAP_CONTROLLER_ACTIONS_URL", "actions_url"),
    EnvOverride::text("RAP_CONTROLLER_DOCKER_REGISTRY", "docker_registry"),
    EnvOverride::new(
        "RAP_CONTROLLER_SCHEDULER_INTERVAL_MS",
        "scheduler_interval_ms",
        ValueKind::Integer,
    ),
    EnvOverride::new(
        "RAP_CONTROLLER_MAX_TASK_ATTEMPTS",
        "max_task_attempts",
        ValueKind::Integer,
    ),
    EnvOverride::new(
        "RAP_CONTROLLER_AGENT_LEASE_GRACE_S",
        "agent_lease_grace_s",
        ValueKind::Integer,
    ),
    EnvOverride::new(
        "RAP_CONTROLLER_CHANGE_LOG_RETENTION_S",
        "change_log_retention_s",
        ValueKind::Integer,
    ),
    EnvOverride::text("RAP_CONTROLLER_ADMIN_TOKEN_SHA256", "admin_token_sha256"),
];

impl Config {
    /// Read a TOML file, apply environment overrides ([`ENV_OVERRIDES`]), check the rules.
    ///
    /// # Errors
    /// The file cannot be read or parsed, an override is malformed, or the result is invalid.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config: Config =
            rap_proto::config::load(path, &ENV_OVERRIDES, &|var| std::env::var(var).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Check cross-field rules.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backends.is_empty() {
            return Err(ConfigError::Invalid(
                "at least one backend must be configured".into(),
            ));
        }
        for backend in &self.backends {
            if rap_proto::identity::BackendName::new(&backend.name).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "backend name '{}' must be 1-64 characters of [a-z0-9_-]",
                    backend.name
                )));
            }
            let month = &backend.data_check_hes_expected_activity_month;
            let valid_month = month.len() == 6
                && month.bytes().all(|b| b.is_ascii_digit())
                && matches!(month[4..].parse::<u8>(), Ok(1..=12));
            if !valid_month {
                return Err(ConfigError::Invalid(format!(
                    "backend '{}': data_check_hes_expected_activity_month '{month}' must be a \
                     month as YYYYMM, e.g. 202304",
                    backend.name
                )));
            }
        }
        for client in &self.clients {
            if client.token_sha256.len() != 64 || hex::decode(&client.token_sha256).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "client '{}': token_sha256 must be 64 hex characters",
                    client.name
                )));
            }
        }
        if self.max_task_attempts == 0 {
            return Err(ConfigError::Invalid(
                "max_task_attempts must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The request rules job creation applies.
    pub fn request_rules(&self) -> RequestRules {
        RequestRules {
            backends: self.backends.iter().map(|b| b.name.clone()).collect(),
            allowed_github_orgs: self.allowed_github_orgs.clone(),
            allow_local_repos: self.allow_local_repos,
            projects_with_event_level_access: self.projects_with_event_level_access.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
data_dir = "/var/lib/rap"
listen = "0.0.0.0:8443"
agent_listen = "0.0.0.0:8444"
[tls]
ca = "/etc/rap/ca.crt"
cert = "/etc/rap/controller.crt"
key = "/etc/rap/controller.key"
[[backends]]
name = "tpp"
max_workers = 15
max_db_workers = 6
weights = { "*/big" = 2.5, "ws/big" = 1.5 }
"#;

    fn parse(env: &[(&str, &str)]) -> Result<Config, ConfigFileError> {
        rap_proto::config::parse(
            MINIMAL,
            Path::new("controller.toml"),
            &ENV_OVERRIDES,
            &|var| {
                env.iter()
                    .find(|(name, _)| *name == var)
                    .map(|(_, value)| value.to_string())
            },
        )
    }

    #[test]
    fn defaults_overrides_and_rules() {
        let mut config = parse(&[]).unwrap();
        assert_eq!(config.max_task_attempts, 5);
        assert_eq!(config.agent_lease_grace_s, 300);
        assert_eq!(config.change_log_retention_s, 2_592_000);
        assert_eq!(config.git_proxy, None);
        assert_eq!(config.backends[0].max_db_workers(), 6.0);
        assert_eq!(config.backends[0].weight("ws", "big"), 1.5);
        assert_eq!(config.backends[0].weight("other", "big"), 2.5);
        assert_eq!(config.backends[0].weight("other", "small"), 1.0);
        config.validate().unwrap();
        assert_eq!(config.backends[0].data_check_interval_s, 0);
        config.backends[0].data_check_hes_expected_activity_month = "2023-04".into();
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "backend 'tpp': data_check_hes_expected_activity_month '2023-04' must be a month as \
             YYYYMM, e.g. 202304"
        );
        config.backends[0].data_check_hes_expected_activity_month = "202304".into();
        config.backends[0].name = "Bad Name".into();
        assert!(config.validate().is_err());
        let no_env = |_: &str| None;
        let mistyped = rap_proto::config::parse::<Config>(
            "listen = 1",
            Path::new("controller.toml"),
            &ENV_OVERRIDES,
            &no_env,
        );
        assert!(mistyped.is_err());
    }

    #[test]
    fn every_override_reaches_its_key() {
        let config = parse(&[
            ("RAP_CONTROLLER_LISTEN", "127.0.0.1:1"),
            ("RAP_CONTROLLER_TLS_CA", "/other/ca.crt"),
            ("RAP_CONTROLLER_ALLOW_LOCAL_REPOS", "true"),
            ("RAP_CONTROLLER_AGENT_LEASE_GRACE_S", "30"),
            ("RAP_CONTROLLER_GIT_PROXY", "https://proxy"),
        ])
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:1");
        assert_eq!(config.tls.ca, Path::new("/other/ca.crt"));
        assert!(config.allow_local_repos);
        assert_eq!(config.agent_lease_grace_s, 30);
        assert_eq!(config.git_proxy.as_deref(), Some("https://proxy"));
        let config = parse(&[("RAP_CONTROLLER_GIT_PROXY", "")]).unwrap();
        assert_eq!(config.git_proxy, None, "empty means no proxy");
        // Every override names a key the file format has.
        for entry in ENV_OVERRIDES {
            let value = match entry.kind {
                ValueKind::Integer => "3",
                ValueKind::Boolean => "false",
                _ => "v",
            };
            assert!(parse(&[(entry.var, value)]).is_ok(), "{}", entry.var);
        }
        let error = parse(&[("RAP_CONTROLLER_MAX_TASK_ATTEMPTS", "x")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable RAP_CONTROLLER_MAX_TASK_ATTEMPTS: \"x\" is not a whole number"
        );
    }
}
