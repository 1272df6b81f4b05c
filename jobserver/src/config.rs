//! Configuration: a TOML file whose every key can be overridden by an environment variable
//! `RAP_JOBSERVER_<KEY>` (upper case), the listen addresses first. The file form is an edge
//! type (serde); [`Config`] is what the rest of the crate uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rap_proto::config::{ConfigFileError, EnvOverride, ValueKind};
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
    /// The file cannot be read or parsed, or an override is malformed.
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("{key} is required (set it in the file or in {env})")]
    Missing { key: &'static str, env: String },
    #[error("{key}: invalid value {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

#[derive(Deserialize)]
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

/// The environment variable overriding `key`: `RAP_JOBSERVER_<KEY>`, as [`ENV_OVERRIDES`]
/// lists them.
pub fn env_name(key: &str) -> String {
    format!("RAP_JOBSERVER_{}", key.to_uppercase())
}

/// The environment variables that override keys of the file: one per key.
pub const ENV_OVERRIDES: [EnvOverride; 13] = [
    EnvOverride::text("RAP_JOBSERVER_HTTP_LISTEN", "http_listen"),
    EnvOverride::text("RAP_JOBSERVER_GRPC_LISTEN", "grpc_listen"),
    EnvOverride::text("RAP_JOBSERVER_DATA_DIR", "data_dir"),
    EnvOverride::text("RAP_JOBSERVER_BASE_URL", "base_url"),
    EnvOverride::text("RAP_JOBSERVER_CONTROLLER_URL", "controller_url"),
    EnvOverride::text("RAP_JOBSERVER_CONTROLLER_TOKEN", "controller_token"),
    EnvOverride::text("RAP_JOBSERVER_CONTROLLER_CA", "controller_ca"),
    EnvOverride::text("RAP_JOBSERVER_JAEGER_URL", "jaeger_url"),
    EnvOverride::new(
        "RAP_JOBSERVER_SECURE_COOKIES",
        "secure_cookies",
        ValueKind::Boolean,
    ),
    EnvOverride::new(
        "RAP_JOBSERVER_ALLOW_FILE_REPOS",
        "allow_file_repos",
        ValueKind::Boolean,
    ),
    EnvOverride::new(
        "RAP_JOBSERVER_RELEASE_FILE_SIZE_LIMIT",
        "release_file_size_limit",
        ValueKind::Integer,
    ),
    EnvOverride::text("RAP_JOBSERVER_GRPC_TLS_CERT", "grpc_tls_cert"),
    EnvOverride::text("RAP_JOBSERVER_GRPC_TLS_KEY", "grpc_tls_key"),
];

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
        let file: ConfigFile = match path {
            Some(path) => rap_proto::config::load(path, &ENV_OVERRIDES, env)?,
            // Everything from the environment.
            None => rap_proto::config::parse(
                "",
                Path::new("(no configuration file)"),
                &ENV_OVERRIDES,
                env,
            )?,
        };
        let required = |key: &'static str, value: Option<String>| {
            value.ok_or_else(|| ConfigError::Missing {
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
        let http_listen = address("http_listen", required("http_listen", file.http_listen)?)?;
        let grpc_listen = address("grpc_listen", required("grpc_listen", file.grpc_listen)?)?;
        let base_url = file
            .base_url
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
            controller_ca: file.controller_ca.map(PathBuf::from),
            jaeger_url: file.jaeger_url.unwrap_or_default(),
            secure_cookies: file.secure_cookies.unwrap_or(false),
            allow_file_repos: file.allow_file_repos.unwrap_or(false),
            release_file_size_limit: file
                .release_file_size_limit
                .unwrap_or(crate::rpc::release::DEFAULT_SIZE_LIMIT),
            grpc_tls_cert: file.grpc_tls_cert.map(PathBuf::from),
            grpc_tls_key: file.grpc_tls_key.map(PathBuf::from),
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
    fn every_key_has_its_override() {
        for entry in ENV_OVERRIDES {
            assert_eq!(entry.var, env_name(entry.key));
        }
        let error = Config::load(None, &|k| {
            (k == "RAP_JOBSERVER_SECURE_COOKIES").then(|| "maybe".to_owned())
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable RAP_JOBSERVER_SECURE_COOKIES: \"maybe\" is not true or false"
        );
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
