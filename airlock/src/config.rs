//! Configuration: a TOML file whose every key can be overridden by an environment variable
//! (`AIRLOCK_<KEY>` upper-cased, [`ENV_OVERRIDES`]), read once at start-up into [`Config`] by
//! `rap_proto::config`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rap_proto::config::{ConfigFileError, EnvOverride, ValueKind};
use serde::Deserialize;

use crate::jobserver::OutputCheckingRepo;

/// Airlock's configuration (keys documented in airlock/README.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on, e.g. `0.0.0.0:8443`.
    pub listen: String,
    /// The medium-privacy directory (holding `workspaces/`).
    pub medium_privacy_dir: PathBuf,
    /// Airlock's own data: the sled store and request file copies.
    pub data_dir: PathBuf,
    /// The job server's ReleaseService endpoint, e.g. `https://jobs.example:9443`.
    pub jobserver_endpoint: String,
    /// CA certificate (PEM) that signed the job server's certificate; plain HTTP/2 if absent.
    #[serde(default)]
    pub jobserver_ca: Option<PathBuf>,
    /// This backend's token on the job server.
    pub jobserver_token: String,
    /// The web app's TLS certificate and key (PEM); plain HTTP when absent (local/tests only).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Seconds between re-authorisations of a signed-in user (reference: 15 minutes).
    #[serde(default = "default_authz_timeout")]
    pub authz_timeout_secs: u64,
    /// Session lifetime in seconds, sliding (reference: 8 weeks).
    #[serde(default = "default_session_age")]
    pub session_age_secs: u64,
    /// First retry delay of a failed upload, seconds.
    #[serde(default = "default_retry_base")]
    pub upload_retry_base_secs: u64,
    /// Longest delay between upload retries, seconds (reference: a fixed 60).
    #[serde(default = "default_retry_cap")]
    pub upload_retry_cap_secs: u64,
    /// Backstop poll of the uploader, seconds (reference: 1).
    #[serde(default = "default_poll")]
    pub upload_poll_secs: u64,
    /// Counts in 1..=this are flagged in CSV outputs.
    #[serde(default = "default_small_count")]
    pub small_count_max: u64,
    /// Rows per page of the CSV viewer.
    #[serde(default = "default_page_size")]
    pub csv_page_size: usize,
    /// CSV rows scanned for disclosure-check flags.
    #[serde(default = "default_check_rows")]
    pub max_csv_check_rows: usize,
    /// Send the `Secure` cookie attribute (turn off only for plain-HTTP local use).
    #[serde(default = "default_true")]
    pub secure_cookies: bool,
    /// GitHub organisation of the output-checking repository, named in every event sent to
    /// the job server; set together with `output_checking_repo`.
    #[serde(default)]
    pub output_checking_org: Option<String>,
    /// GitHub repository (in `output_checking_org`) where output checking is tracked.
    #[serde(default)]
    pub output_checking_repo: Option<String>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read or parsed, or an override is malformed.
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// The keys break a rule.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The environment variables that override keys of the file: `AIRLOCK_<KEY>` for every key.
pub const ENV_OVERRIDES: [EnvOverride; 19] = [
    EnvOverride::text("AIRLOCK_LISTEN", "listen"),
    EnvOverride::text("AIRLOCK_MEDIUM_PRIVACY_DIR", "medium_privacy_dir"),
    EnvOverride::text("AIRLOCK_DATA_DIR", "data_dir"),
    EnvOverride::text("AIRLOCK_JOBSERVER_ENDPOINT", "jobserver_endpoint"),
    EnvOverride::text("AIRLOCK_JOBSERVER_CA", "jobserver_ca"),
    EnvOverride::text("AIRLOCK_JOBSERVER_TOKEN", "jobserver_token"),
    EnvOverride::text("AIRLOCK_TLS_CERT", "tls_cert"),
    EnvOverride::text("AIRLOCK_TLS_KEY", "tls_key"),
    EnvOverride::new(
        "AIRLOCK_AUTHZ_TIMEOUT_SECS",
        "authz_timeout_secs",
        ValueKind::Integer,
    ),
    EnvOverride::new(
        "AIRLOCK_SESSION_AGE_SECS",
        "session_age_secs",
        ValueKind::Integer,
    ),
    EnvOverride::new(
        "AIRLOCK_UPLOAD_RETRY_BASE_SECS",
        "upload_retry_base_secs",
        ValueKind::Integer,
    ),
    EnvOverride::new(
        "AIRLOCK_UPLOAD_RETRY_CAP_SECS",
        "upload_retry_cap_secs",
        ValueKind::Integer,
    ),
    EnvOverride::new(
        "AIRLOCK_UPLOAD_POLL_SECS",
        "upload_poll_secs",
        ValueKind::Integer,
    ),
    EnvOverride::new(
        "AIRLOCK_SMALL_COUNT_MAX",
        "small_count_max",
        ValueKind::Integer,
    ),
    EnvOverride::new("AIRLOCK_CSV_PAGE_SIZE", "csv_page_size", ValueKind::Integer),
    EnvOverride::new(
        "AIRLOCK_SECURE_COOKIES",
        "secure_cookies",
        ValueKind::Boolean,
    ),
    EnvOverride::new(
        "AIRLOCK_MAX_CSV_CHECK_ROWS",
        "max_csv_check_rows",
        ValueKind::Integer,
    ),
    EnvOverride::text("AIRLOCK_OUTPUT_CHECKING_ORG", "output_checking_org"),
    EnvOverride::text("AIRLOCK_OUTPUT_CHECKING_REPO", "output_checking_repo"),
];

fn default_authz_timeout() -> u64 {
    15 * 60
}
fn default_session_age() -> u64 {
    8 * 7 * 24 * 60 * 60
}
fn default_retry_base() -> u64 {
    1
}
fn default_retry_cap() -> u64 {
    60
}
fn default_poll() -> u64 {
    1
}
fn default_small_count() -> u64 {
    7
}
fn default_page_size() -> usize {
    100
}
fn default_check_rows() -> usize {
    100_000
}
fn default_true() -> bool {
    true
}

impl Config {
    /// Reads `path` and applies `AIRLOCK_*` environment overrides ([`ENV_OVERRIDES`]) from
    /// `env`.
    ///
    /// # Errors
    /// The file is unreadable, not TOML, has unknown keys or misses required ones.
    pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let config: Config = rap_proto::config::load(path, &ENV_OVERRIDES, &env)?;
        config.check(path)?;
        Ok(config)
    }

    /// [`Config::load`] from text.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let config: Config = rap_proto::config::parse(text, path, &ENV_OVERRIDES, &env)?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        if self.output_checking_org.is_some() != self.output_checking_repo.is_some() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: "set both output_checking_org and output_checking_repo, or neither"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// The output-checking repository named in events, when configured.
    pub fn output_checking_repo(&self) -> Option<OutputCheckingRepo> {
        match (&self.output_checking_org, &self.output_checking_repo) {
            (Some(org), Some(repo)) => Some(OutputCheckingRepo {
                org: org.clone(),
                repo: repo.clone(),
            }),
            _ => None,
        }
    }

    pub fn authz_timeout(&self) -> Duration {
        Duration::from_secs(self.authz_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:0"
medium_privacy_dir = "/srv/medium"
data_dir = "/srv/airlock"
jobserver_endpoint = "https://jobs.example:9443"
jobserver_token = "t"
"#;

    #[test]
    fn defaults_and_env_overrides() {
        let config = Config::parse(MINIMAL, Path::new("a.toml"), |_| None).unwrap();
        assert_eq!(config.authz_timeout_secs, 900);
        assert_eq!(config.small_count_max, 7);
        assert!(config.secure_cookies);
        let config = Config::parse(MINIMAL, Path::new("a.toml"), |name| match name {
            "AIRLOCK_LISTEN" => Some("0.0.0.0:8443".to_string()),
            "AIRLOCK_SMALL_COUNT_MAX" => Some("10".to_string()),
            "AIRLOCK_SECURE_COOKIES" => Some("false".to_string()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:8443");
        assert_eq!(config.small_count_max, 10);
        assert!(!config.secure_cookies);
    }

    #[test]
    fn bad_configs_say_why() {
        let error = Config::parse("listen = 1", Path::new("a.toml"), |_| None).unwrap_err();
        assert!(error.to_string().starts_with("parsing a.toml: "), "{error}");
        let error = Config::parse(MINIMAL, Path::new("a.toml"), |name| {
            (name == "AIRLOCK_CSV_PAGE_SIZE").then(|| "many".to_string())
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable AIRLOCK_CSV_PAGE_SIZE: \"many\" is not a whole number"
        );
        let error = Config::parse(
            &format!("{MINIMAL}\nbogus = 1"),
            Path::new("a.toml"),
            |_| None,
        )
        .unwrap_err();
        assert!(error.to_string().contains("bogus"), "{error}");
        let error = Config::parse(MINIMAL, Path::new("a.toml"), |name| {
            (name == "AIRLOCK_OUTPUT_CHECKING_ORG").then(|| "opensafely".to_string())
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "a.toml: set both output_checking_org and output_checking_repo, or neither"
        );
    }

    #[test]
    fn every_key_has_its_override() {
        // `AIRLOCK_<KEY>` for every key, so the README's rule holds.
        for entry in ENV_OVERRIDES {
            assert_eq!(
                entry.var,
                format!("AIRLOCK_{}", entry.key.to_ascii_uppercase())
            );
            let value = match entry.kind {
                ValueKind::Integer => "3",
                ValueKind::Boolean => "false",
                _ => "v",
            };
            let env = |name: &str| (name == entry.var).then(|| value.to_owned());
            let result = Config::parse(MINIMAL, Path::new("a.toml"), env);
            // The output-checking keys go in pairs; one alone is refused by that rule only.
            match result {
                Ok(_) => {}
                Err(ConfigError::Invalid { .. }) if entry.key.starts_with("output_checking") => {}
                Err(error) => panic!("{}: {error}", entry.var),
            }
        }
    }

    #[test]
    fn output_checking_repo_from_both_keys() {
        let config = Config::parse(MINIMAL, Path::new("a.toml"), |_| None).unwrap();
        assert_eq!(config.output_checking_repo(), None);
        let config = Config::parse(
            &format!("{MINIMAL}\noutput_checking_org = \"o\"\noutput_checking_repo = \"r\""),
            Path::new("a.toml"),
            |_| None,
        )
        .unwrap();
        assert_eq!(
            config.output_checking_repo(),
            Some(OutputCheckingRepo {
                org: "o".to_string(),
                repo: "r".to_string()
            })
        );
    }
}
