//! Configuration: a TOML file whose every key can be overridden by an environment variable
//! (`AIRLOCK_<KEY>` upper-cased), read once at start-up into [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
}

/// Every key, for the environment overrides.
const KEYS: [&str; 19] = [
    "listen",
    "medium_privacy_dir",
    "data_dir",
    "jobserver_endpoint",
    "jobserver_ca",
    "jobserver_token",
    "tls_cert",
    "tls_key",
    "authz_timeout_secs",
    "session_age_secs",
    "upload_retry_base_secs",
    "upload_retry_cap_secs",
    "upload_poll_secs",
    "small_count_max",
    "csv_page_size",
    "secure_cookies",
    "max_csv_check_rows",
    "output_checking_org",
    "output_checking_repo",
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
    /// Reads `path` and applies `AIRLOCK_*` environment overrides from `env`.
    ///
    /// # Errors
    /// The file is unreadable, not TOML, has unknown keys or misses required ones.
    pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path, env)
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
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        for key in KEYS {
            let name = format!("AIRLOCK_{}", key.to_ascii_uppercase());
            let Some(value) = env(&name) else { continue };
            let parsed = if key.ends_with("_secs")
                || key.ends_with("_max")
                || key.ends_with("_size")
                || key.ends_with("_rows")
            {
                let number: i64 = value.parse().map_err(|_| ConfigError::Env {
                    name: name.clone(),
                    message: format!("{value:?} is not a whole number"),
                })?;
                toml::Value::Integer(number)
            } else if key == "secure_cookies" {
                let flag: bool = value.parse().map_err(|_| ConfigError::Env {
                    name: name.clone(),
                    message: format!("{value:?} is not true or false"),
                })?;
                toml::Value::Boolean(flag)
            } else {
                toml::Value::String(value)
            };
            table.insert(key.to_string(), parsed);
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        if config.output_checking_org.is_some() != config.output_checking_repo.is_some() {
            return Err(parse_error(
                "set both output_checking_org and output_checking_repo, or neither".to_string(),
            ));
        }
        Ok(config)
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
        assert!(error.to_string().starts_with("a.toml: "), "{error}");
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
