//! Configuration: a TOML file whose every key can be overridden by an environment variable
//! `RAP_JOBSERVER_<KEY>` (upper case), the listen addresses first. The file form is an edge
//! type (serde); [`Config`] is what the rest of the crate uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the web app listens (`http_listen`).
    pub http_listen: SocketAddr,
    /// Where the ReleaseService listens (`grpc_listen`).
    pub grpc_listen: SocketAddr,
    /// The store and released files live here (`data_dir`).
    pub data_dir: PathBuf,
    /// Absolute URL of the web app, for links handed to Airlock (`base_url`).
    pub base_url: String,
    /// The controller's RapService (`controller_url`, `http://` or `https://`).
    pub controller_url: String,
    /// The job server's token on the controller (`controller_token`).
    pub controller_token: String,
    /// CA certificate (PEM) to trust for an `https` controller (`controller_ca`).
    pub controller_ca: Option<PathBuf>,
    /// Jaeger UI base URL for trace links (`jaeger_url`; empty hides them).
    pub jaeger_url: String,
    /// Mark cookies `Secure` (`secure_cookies`; set when served behind TLS).
    pub secure_cookies: bool,
    /// Accept `file:///` repository URLs for workspaces (`allow_file_repos`; off by default,
    /// since they read the job server's own disk).
    pub allow_file_repos: bool,
    /// Largest release file in bytes (`release_file_size_limit`, default 16 MiB).
    pub release_file_size_limit: u64,
    /// Certificate and key (PEM) for the ReleaseService; plaintext gRPC when absent
    /// (`grpc_tls_cert`, `grpc_tls_key`).
    pub grpc_tls_cert: Option<PathBuf>,
    pub grpc_tls_key: Option<PathBuf>,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{key} is required (set it in the file or in {env})")]
    Missing { key: &'static str, env: String },
    #[error("{key}: invalid value {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    http_listen: Option<String>,
    grpc_listen: Option<String>,
    data_dir: Option<String>,
    base_url: Option<String>,
    controller_url: Option<String>,
    controller_token: Option<String>,
    controller_ca: Option<String>,
    jaeger_url: Option<String>,
    secure_cookies: Option<bool>,
    allow_file_repos: Option<bool>,
    release_file_size_limit: Option<u64>,
    grpc_tls_cert: Option<String>,
    grpc_tls_key: Option<String>,
}

/// The environment variable overriding `key`.
pub fn env_name(key: &str) -> String {
    format!("RAP_JOBSERVER_{}", key.to_uppercase())
}

impl Config {
    /// Reads the file (if any), then applies overrides from `env` (a lookup, `std::env::var`
    /// in the binary; a map in tests).
    ///
    /// # Errors
    /// An unreadable or malformed file, a missing required key, or an invalid value.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.display().to_string(),
                    source,
                })?
            }
            None => ConfigFile::default(),
        };
        let text = |key: &'static str, from_file: Option<String>| env(&env_name(key)).or(from_file);
        let required = |key: &'static str, from_file: Option<String>| {
            text(key, from_file).ok_or_else(|| ConfigError::Missing {
                key,
                env: env_name(key),
            })
        };
        let address = |key: &'static str, value: String| {
            value
                .parse::<SocketAddr>()
                .map_err(|e| ConfigError::Invalid {
                    key,
                    value,
                    reason: e.to_string(),
                })
        };
        let boolean = |key: &'static str, from_file: Option<bool>| match env(&env_name(key)) {
            Some(value) => match value.as_str() {
                "1" | "true" | "yes" => Ok(true),
                "0" | "false" | "no" | "" => Ok(false),
                _ => Err(ConfigError::Invalid {
                    key,
                    value,
                    reason: "expected true or false".into(),
                }),
            },
            None => Ok(from_file.unwrap_or(false)),
        };
        let limit = match env(&env_name("release_file_size_limit")) {
            Some(value) => value.parse().map_err(|_| ConfigError::Invalid {
                key: "release_file_size_limit",
                value,
                reason: "expected a number of bytes".into(),
            })?,
            None => file
                .release_file_size_limit
                .unwrap_or(crate::rpc::release::DEFAULT_SIZE_LIMIT),
        };
        let http_listen = address("http_listen", required("http_listen", file.http_listen)?)?;
        let grpc_listen = address("grpc_listen", required("grpc_listen", file.grpc_listen)?)?;
        let base_url = text("base_url", file.base_url)
            .unwrap_or_else(|| format!("http://{http_listen}"))
            .trim_end_matches('/')
            .to_owned();
        Ok(Config {
            http_listen,
            grpc_listen,
            data_dir: PathBuf::from(required("data_dir", file.data_dir)?),
            base_url,
            controller_url: required("controller_url", file.controller_url)?,
            controller_token: required("controller_token", file.controller_token)?,
            controller_ca: text("controller_ca", file.controller_ca).map(PathBuf::from),
            jaeger_url: text("jaeger_url", file.jaeger_url).unwrap_or_default(),
            secure_cookies: boolean("secure_cookies", file.secure_cookies)?,
            allow_file_repos: boolean("allow_file_repos", file.allow_file_repos)?,
            release_file_size_limit: limit,
            grpc_tls_cert: text("grpc_tls_cert", file.grpc_tls_cert).map(PathBuf::from),
            grpc_tls_key: text("grpc_tls_key", file.grpc_tls_key).map(PathBuf::from),
        })
    }

    /// The store's directory.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// The released files' root.
    pub fn release_storage(&self) -> PathBuf {
        self.data_dir.join("releases")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobserver.toml");
        std::fs::write(
            &path,
            "http_listen = \"127.0.0.1:8000\"\ngrpc_listen = \"127.0.0.1:8001\"\ndata_dir = \"/tmp/x\"\ncontroller_url = \"http://c:1\"\ncontroller_token = \"t\"\n",
        )
        .unwrap();
        let env: HashMap<String, String> = [(
            "RAP_JOBSERVER_HTTP_LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        )]
        .into();
        let config = Config::load(Some(&path), &|k| env.get(k).cloned()).unwrap();
        assert_eq!(config.http_listen.port(), 0);
        assert_eq!(config.grpc_listen.port(), 8001);
        assert_eq!(config.release_file_size_limit, 16 * 1024 * 1024);
        assert!(!config.secure_cookies);
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = Config::load(None, &|k| match k {
            "RAP_JOBSERVER_HTTP_LISTEN" => Some("nonsense".into()),
            _ => None,
        })
        .unwrap_err();
        assert!(
            error.to_string().starts_with("http_listen: invalid value"),
            "{error}"
        );
        let error = Config::load(None, &|_| None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "http_listen is required (set it in the file or in RAP_JOBSERVER_HTTP_LISTEN)"
        );
    }
}
