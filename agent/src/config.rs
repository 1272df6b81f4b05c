//! The agent's configuration: a TOML file, every key overridable by an environment variable
//! ([`ENV_OVERRIDES`] lists them), checked once at start-up so a mistake is reported by name.
//!
//! ```toml
//! backend = "tpp"
//! agent_id = "tpp-agent-1"
//! work_dir = "/srv/rap"              # high_privacy/, medium_privacy/, job_logs/, ... under it
//!
//! [controller]
//! endpoint = "https://rap-controller.example.org:8443"
//! ca_cert = "/etc/rap/ca.pem"
//! cert = "/etc/rap/agent.pem"
//! key = "/etc/rap/agent.key"
//!
//! [docker]
//! registry = "ghcr.io/opensafely-core"
//! allowed_images = ["ehrql", "python", "r", "stata-mp", "jupyter", "sqlrunner"]
//! user = "10000:10000"
//! # socket = "/var/run/docker.sock"
//!
//! [jobs]
//! capacity = 2
//! db_capacity = 1
//!
//! [database]
//! network = "jobrunner-db"
//! url_env = "DEFAULT_DATABASE_URL"   # the agent's env var holding the database URL
//!
//! [git]
//! allowed_orgs = ["opensafely", "opensafely-actions"]
//! allow_local_repos = false
//! # proxy = "https://github-proxy.example.org"   # replaces https://github.com when fetching
//! ```

use std::path::{Path, PathBuf};

use rap_proto::config::{ConfigFileError, EnvOverride, ValueKind};
use serde::Deserialize;

/// How a configuration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read, is not valid TOML, has unknown or mistyped keys, or an
    /// environment override has the wrong kind of value.
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// A value breaks a rule.
    #[error("configuration key {key}: {problem}")]
    Invalid {
        /// The key, dotted.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This agent's backend (its certificate must name the same one).
    pub backend: String,
    /// This agent's name within the backend.
    pub agent_id: String,
    /// The root of everything the agent keeps on disk.
    pub work_dir: PathBuf,
    /// The controller link.
    pub controller: ControllerSection,
    /// Docker.
    pub docker: DockerSection,
    /// Capacity.
    #[serde(default)]
    pub jobs: JobsSection,
    /// Database jobs.
    #[serde(default)]
    pub database: DatabaseSection,
    /// Repositories.
    #[serde(default)]
    pub git: GitSection,
}

/// `[controller]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    /// `https://host:port`.
    pub endpoint: String,
    /// The installation's CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This agent's certificate (PEM).
    pub cert: PathBuf,
    /// This agent's private key (PEM).
    pub key: PathBuf,
}

/// `[docker]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSection {
    /// Every image must start with `<registry>/`.
    pub registry: String,
    /// Image names (no registry, no tag) allowed to run.
    pub allowed_images: Vec<String>,
    /// `uid:gid` for containers; never root.
    #[serde(default = "default_user")]
    pub user: String,
    /// The engine's socket; default `DOCKER_HOST` or `/var/run/docker.sock`.
    #[serde(default)]
    pub socket: Option<String>,
}

/// `[jobs]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    /// Non-database jobs at once.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// Database jobs at once.
    #[serde(default = "default_db_capacity")]
    pub db_capacity: u32,
}

/// `[database]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// The Docker network database jobs join.
    #[serde(default = "default_network")]
    pub network: String,
    /// The agent's environment variable that holds the `default` database URL (the URL itself
    /// never appears in the file, in argv or in logs).
    #[serde(default = "default_url_env")]
    pub url_env: String,
}

/// `[git]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSection {
    /// GitHub organisations whose repositories may run.
    #[serde(default = "default_orgs")]
    pub allowed_orgs: Vec<String>,
    /// Allow absolute local paths as repositories (development only).
    #[serde(default)]
    pub allow_local_repos: bool,
    /// Replaces `https://github.com` in fetch URLs: the backend's allow-list proxy
    /// (deploy/proxy). The allow-list check still applies to the URL as the task names it.
    #[serde(default)]
    pub proxy: Option<String>,
}

fn default_user() -> String {
    "10000:10000".into()
}
fn default_capacity() -> u32 {
    2
}
fn default_db_capacity() -> u32 {
    1
}
fn default_network() -> String {
    "jobrunner-db".into()
}
fn default_url_env() -> String {
    "DEFAULT_DATABASE_URL".into()
}
fn default_orgs() -> Vec<String> {
    vec!["opensafely".into(), "opensafely-actions".into()]
}

impl Default for JobsSection {
    fn default() -> JobsSection {
        JobsSection {
            capacity: default_capacity(),
            db_capacity: default_db_capacity(),
        }
    }
}

impl Default for DatabaseSection {
    fn default() -> DatabaseSection {
        DatabaseSection {
            network: default_network(),
            url_env: default_url_env(),
        }
    }
}

impl Default for GitSection {
    fn default() -> GitSection {
        GitSection {
            allowed_orgs: default_orgs(),
            allow_local_repos: false,
            proxy: None,
        }
    }
}

/// Every environment override: variable, dotted key, kind.
pub const ENV_OVERRIDES: [EnvOverride; 18] = [
    EnvOverride::text("RAP_AGENT_BACKEND", "backend"),
    EnvOverride::text("RAP_AGENT_ID", "agent_id"),
    EnvOverride::text("RAP_AGENT_WORK_DIR", "work_dir"),
    EnvOverride::text("RAP_AGENT_CONTROLLER_ENDPOINT", "controller.endpoint"),
    EnvOverride::text("RAP_AGENT_CA_CERT", "controller.ca_cert"),
    EnvOverride::text("RAP_AGENT_CERT", "controller.cert"),
    EnvOverride::text("RAP_AGENT_KEY", "controller.key"),
    EnvOverride::text("RAP_AGENT_DOCKER_REGISTRY", "docker.registry"),
    EnvOverride::new(
        "RAP_AGENT_ALLOWED_IMAGES",
        "docker.allowed_images",
        ValueKind::List,
    ),
    EnvOverride::text("RAP_AGENT_DOCKER_USER", "docker.user"),
    EnvOverride::text("RAP_AGENT_DOCKER_SOCKET", "docker.socket"),
    EnvOverride::new(
        "RAP_AGENT_JOB_CAPACITY",
        "jobs.capacity",
        ValueKind::Integer,
    ),
    EnvOverride::new(
        "RAP_AGENT_DB_JOB_CAPACITY",
        "jobs.db_capacity",
        ValueKind::Integer,
    ),
    EnvOverride::text("RAP_AGENT_DATABASE_NETWORK", "database.network"),
    EnvOverride::text("RAP_AGENT_DATABASE_URL_ENV", "database.url_env"),
    EnvOverride::new(
        "RAP_AGENT_ALLOWED_GITHUB_ORGS",
        "git.allowed_orgs",
        ValueKind::List,
    ),
    EnvOverride::new(
        "RAP_AGENT_ALLOW_LOCAL_GIT_REPOS",
        "git.allow_local_repos",
        ValueKind::Boolean,
    ),
    EnvOverride::text("RAP_AGENT_GIT_PROXY", "git.proxy"),
];

impl Config {
    /// Reads the file, applies environment overrides from the process environment, checks.
    ///
    /// # Errors
    /// The first problem found, naming the file, variable or key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config: Config =
            rap_proto::config::load(path, &ENV_OVERRIDES, &|var| std::env::var(var).ok())?;
        config.check()?;
        Ok(config)
    }

    /// Like [`Config::load`] with the file's text and an environment lookup (for tests).
    ///
    /// # Errors
    /// The first problem found.
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let config: Config = rap_proto::config::parse(text, path, &ENV_OVERRIDES, &env)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| ConfigError::Invalid {
            key,
            problem: problem.to_owned(),
        };
        if self.backend.is_empty() {
            return Err(invalid("backend", "must not be empty"));
        }
        if self.agent_id.is_empty() {
            return Err(invalid("agent_id", "must not be empty"));
        }
        if !self.work_dir.is_absolute() {
            return Err(invalid("work_dir", "must be an absolute path"));
        }
        if !self.controller.endpoint.starts_with("https://") {
            return Err(invalid(
                "controller.endpoint",
                "must be an https:// URL (the link is mTLS)",
            ));
        }
        let user = self
            .docker
            .user
            .split_once(':')
            .and_then(|(uid, gid)| Some((uid.parse::<u32>().ok()?, gid.parse::<u32>().ok()?)));
        match user {
            None => return Err(invalid("docker.user", "must be numeric uid:gid")),
            Some((0, _)) | Some((_, 0)) => {
                return Err(invalid("docker.user", "jobs must not run as root"));
            }
            Some(_) => {}
        }
        if self.docker.registry.is_empty() {
            return Err(invalid("docker.registry", "must not be empty"));
        }
        if self.jobs.capacity == 0 || self.jobs.db_capacity == 0 {
            return Err(invalid("jobs", "capacities must be at least 1"));
        }
        if let Some(proxy) = self.git.proxy.as_deref()
            && !proxy.is_empty()
            && !(proxy.starts_with("https://") || proxy.starts_with("http://"))
        {
            return Err(invalid(
                "git.proxy",
                "must be an https:// (or http://) URL, e.g. https://github-proxy.example.org",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
backend = "test"
agent_id = "a1"
work_dir = "/srv/rap"
[controller]
endpoint = "https://controller:8443"
ca_cert = "/etc/rap/ca.pem"
cert = "/etc/rap/agent.pem"
key = "/etc/rap/agent.key"
[docker]
registry = "ghcr.io/opensafely-core"
allowed_images = ["python"]
"#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse(text, Path::new("agent.toml"), move |var| {
            env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_follow_the_reference_deployment() {
        let config = parse(MINIMAL, &[]).unwrap();
        assert_eq!(config.docker.user, "10000:10000");
        assert_eq!(config.jobs.capacity, 2);
        assert_eq!(config.database.network, "jobrunner-db");
        assert_eq!(config.database.url_env, "DEFAULT_DATABASE_URL");
        assert_eq!(
            config.git.allowed_orgs,
            vec!["opensafely", "opensafely-actions"]
        );
    }

    #[test]
    fn every_key_can_be_overridden_by_environment() {
        let config = parse(
            MINIMAL,
            &[
                ("RAP_AGENT_JOB_CAPACITY", "5"),
                ("RAP_AGENT_ALLOWED_IMAGES", "python, r ,ehrql"),
                ("RAP_AGENT_ALLOW_LOCAL_GIT_REPOS", "true"),
                ("RAP_AGENT_DOCKER_USER", "1000:1000"),
                ("RAP_AGENT_CONTROLLER_ENDPOINT", "https://other:1"),
            ],
        )
        .unwrap();
        assert_eq!(config.jobs.capacity, 5);
        assert_eq!(config.docker.allowed_images, vec!["python", "r", "ehrql"]);
        assert!(config.git.allow_local_repos);
        assert_eq!(config.docker.user, "1000:1000");
        assert_eq!(config.controller.endpoint, "https://other:1");
        // Every override names a key the file format has.
        for EnvOverride { var, .. } in ENV_OVERRIDES {
            let value = match var {
                "RAP_AGENT_JOB_CAPACITY" | "RAP_AGENT_DB_JOB_CAPACITY" => "3",
                "RAP_AGENT_ALLOW_LOCAL_GIT_REPOS" => "false",
                "RAP_AGENT_WORK_DIR" => "/x",
                "RAP_AGENT_CONTROLLER_ENDPOINT" => "https://c:1",
                "RAP_AGENT_DOCKER_USER" => "1:1",
                "RAP_AGENT_GIT_PROXY" => "https://github-proxy.example.org",
                _ => "v",
            };
            assert!(parse(MINIMAL, &[(var, value)]).is_ok(), "{var}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let error = parse(MINIMAL, &[("RAP_AGENT_JOB_CAPACITY", "many")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable RAP_AGENT_JOB_CAPACITY: \"many\" is not a whole number"
        );
        let error = parse(MINIMAL, &[("RAP_AGENT_DOCKER_USER", "0:0")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "configuration key docker.user: jobs must not run as root"
        );
        let error = parse(&format!("{MINIMAL}\nbogus = 1\n"), &[]).unwrap_err();
        assert!(error.to_string().contains("bogus"), "{error}");
        let error = parse(MINIMAL, &[("RAP_AGENT_WORK_DIR", "relative")]).unwrap_err();
        assert!(error.to_string().contains("work_dir"));
        let error = parse(MINIMAL, &[("RAP_AGENT_GIT_PROXY", "github-proxy:8080")]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("configuration key git.proxy: must be an https://")
        );
    }
}
