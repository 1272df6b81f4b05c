//! The executor on the local Docker engine (the reference's `LocalDockerAPI`, spec §4.2–§4.6),
//! over the Engine API with bollard: the only module that sees bollard.
//!
//! The container (`os-job-<id>`) runs with no network (database jobs: the configured database
//! network, DNS blackholed, the URL in the environment only), every capability dropped,
//! `no-new-privileges`, a non-root user, CPU and memory limits (swap disabled, so the memory
//! limit is the limit), an init process, and the job directory bind-mounted at `/workspace`.
//! Images come only from the configured registry prefix and allow-list and must already be on
//! the host: the agent never pulls.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    ContainerStatsResponse, HostConfig, HostConfigLogConfig, Mount, MountType,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StatsOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;

use crate::clock;
use crate::executor::{Executor, ExecutorError, JobStatus};
use crate::job::JobDefinition;
use crate::layout::{Layout, TIMESTAMP_FILE};
use crate::metadata::{self, JobMetadata, LOGS_FILE, METADATA_FILE, RecordedError};
use crate::metrics::{self, Aggregate};
use crate::outputs::{self, FoundOutputs};
use crate::recovery::{self, ContainerFacts, DiskFacts};
use crate::task::state::ExecutorState;
use crate::workspace::{GitCache, RepoPolicy};

/// How long a container inspection may take before the step is retried (spec §4.2: 15 s).
const INSPECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Environment variables whose values are kept when a container's inspection is recorded; all
/// others are replaced by [`REDACTED`] (spec §4.5).
const ENV_SAFELIST: [&str; 16] = [
    "PATH",
    "PYTHON_VERSION",
    "DEBIAN_FRONTEND",
    "DEBCONF_NONINTERACTIVE_SEEN",
    "UBUNTU_VERSION",
    "PYENV_SHELL",
    "PYENV_VERSION",
    "PYTHONUNBUFFERED",
    "OPENSAFELY_BACKEND",
    "TZ",
    "TEMP_DATABASE_NAME",
    "PYTHONPATH",
    "container",
    "LANG",
    "LC_ALL",
    "EHRQL_PERMISSIONS",
];

/// The value recorded in place of a non-safelisted environment value.
pub const REDACTED: &str = "xxxx-REDACTED-xxxx";

/// The label every job container carries, so operators and recovery can find them.
pub const JOB_LABEL: &str = "jobrunner-local";

/// What the Docker executor needs to know.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// The directory tree.
    pub layout: Layout,
    /// This backend's name (messages and `OPENSAFELY_BACKEND`).
    pub backend: String,
    /// The registry prefix every image must start with, e.g. `ghcr.io/opensafely-core`.
    pub registry: String,
    /// Image names (without registry or tag) that may run, e.g. `python`, `ehrql`.
    pub allowed_images: Vec<String>,
    /// `uid:gid` the container runs as (never root).
    pub user: String,
    /// The network database jobs join.
    pub database_network: String,
    /// The `default` database's URL, if this backend has one (read from the environment
    /// variable the configuration names, never from the file).
    pub database_url: Option<DatabaseUrl>,
    /// Which repositories jobs may come from.
    pub repo_policy: RepoPolicy,
    /// The Docker socket; `None` means `DOCKER_HOST` or `/var/run/docker.sock`.
    pub docker_socket: Option<String>,
}

/// The database network as the engine reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseNetwork {
    /// Its name (`database.network`).
    pub name: String,
    /// Its driver, e.g. `bridge`.
    pub driver: String,
    /// Whether it has no route off the host.
    pub internal: bool,
}

impl std::fmt::Display for DatabaseNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reach = if self.internal {
            "internal"
        } else {
            "not internal: restricting where it reaches is the operator's"
        };
        write!(f, "{} ({} driver, {reach})", self.name, self.driver)
    }
}

/// Why the configured database network cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatabaseNetworkError {
    /// The network is the host's (database jobs would share the host's network) or `none` (they
    /// could reach nothing).
    #[error(
        "Docker network {name} uses the {driver} driver, which database jobs must not use: set \
         database.network to a bridge network"
    )]
    WrongDriver {
        /// The network.
        name: String,
        /// Its driver.
        driver: String,
    },
    /// Several networks have the name, so Docker cannot attach a container by it.
    #[error(
        "{count} Docker networks are named {name}, so Docker cannot attach a container to it: \
         remove all but one"
    )]
    Ambiguous {
        /// The name.
        name: String,
        /// How many networks have it.
        count: usize,
    },
}

/// Drivers whose networks database jobs must not join.
const REFUSED_NETWORK_DRIVERS: [&str; 2] = ["host", "null"];

/// The label on a database network the agent created.
pub const NETWORK_LABEL: &str = "rap.agent.database-network";

/// A database URL: a secret. `Debug` does not show it, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL; `None` if it is empty.
    pub fn new(url: String) -> Option<DatabaseUrl> {
        (!url.is_empty()).then_some(DatabaseUrl(url))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}

/// The executor. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct DockerExecutor {
    docker: Docker,
    config: DockerConfig,
    git: GitCache,
    /// Resource use per job id while its container runs; taken by finalize.
    metrics: Mutex<HashMap<String, Aggregate>>,
}

fn docker_error(operation: &'static str) -> impl FnOnce(DockerError) -> ExecutorError {
    move |error| ExecutorError::Docker {
        operation,
        message: error.to_string(),
    }
}

fn is_status(error: &DockerError, codes: &[u16]) -> bool {
    matches!(error, DockerError::DockerResponseServerError { status_code, .. } if codes.contains(status_code))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ExecutorError> + Send + 'static,
) -> Result<T, ExecutorError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ExecutorError::Blocking(error.to_string()))?
}

impl DockerExecutor {
    /// Connects to the Docker engine (negotiating the API version) and sets up the git cache.
    ///
    /// # Errors
    /// The engine cannot be reached.
    pub async fn connect(config: DockerConfig) -> Result<DockerExecutor, ExecutorError> {
        let docker = match &config.docker_socket {
            Some(socket) => Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION),
            None => Docker::connect_with_unix_defaults(),
        }
        .map_err(docker_error("connecting"))?
        .negotiate_version()
        .await
        .map_err(docker_error("negotiating the API version"))?;
        let git = GitCache::new(
            config.layout.repos(),
            config.layout.temp(),
            config.repo_policy.clone(),
        );
        Ok(DockerExecutor {
            docker,
            config,
            git,
            metrics: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// Checks that the engine answers (for `rap-agent check`).
    ///
    /// # Errors
    /// The engine does not answer.
    pub async fn ping(&self) -> Result<String, ExecutorError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(docker_error("asking for its version"))?;
        Ok(format!(
            "Docker {} (API {})",
            version.version.unwrap_or_default(),
            version.api_version.unwrap_or_default()
        ))
    }

    /// Whether any tag of an allowed image name is present locally (for `rap-agent check`).
    pub async fn image_present(&self, name: &str) -> Result<String, String> {
        let reference = format!("{}/{name}", self.config.registry.trim_end_matches('/'));
        let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .filters(&HashMap::from([("reference", vec![reference.as_str()])]))
            .build();
        match self.docker.list_images(Some(options)).await {
            Ok(images) if images.is_empty() => Err(format!("no tag of {reference} is present")),
            Ok(images) => Ok(format!("{} tag(s) present", images.len())),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The configured database network, `None` if it does not exist (for `rap-agent check`).
    ///
    /// # Errors
    /// [`DatabaseNetworkError`] if it exists but cannot be used, or the engine failed.
    pub async fn find_database_network(&self) -> Result<Option<DatabaseNetwork>, ExecutorError> {
        let name = self.config.database_network.as_str();
        let options = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&HashMap::from([("name", vec![name])]))
            .build();
        let listed = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(docker_error("listing networks"))?;
        // The filter matches parts of names: keep exact matches.
        let named: Vec<_> = listed
            .into_iter()
            .filter(|network| network.name.as_deref() == Some(name))
            .collect();
        let network = match named.as_slice() {
            [] => return Ok(None),
            [network] => network,
            several => {
                return Err(DatabaseNetworkError::Ambiguous {
                    name: name.to_owned(),
                    count: several.len(),
                }
                .into());
            }
        };
        let driver = network.driver.clone().unwrap_or_default();
        if REFUSED_NETWORK_DRIVERS.contains(&driver.as_str()) {
            return Err(DatabaseNetworkError::WrongDriver {
                name: name.to_owned(),
                driver,
            }
            .into());
        }
        Ok(Some(DatabaseNetwork {
            name: name.to_owned(),
            driver,
            internal: network.internal.unwrap_or(false),
        }))
    }

    /// Makes sure the database network exists: an existing one is verified
    /// ([`DockerExecutor::find_database_network`]); a missing one is created as an internal
    /// bridge network, labelled [`NETWORK_LABEL`].
    ///
    /// # Errors
    /// The existing network cannot be used, or the engine failed.
    pub async fn ensure_database_network(&self) -> Result<DatabaseNetwork, ExecutorError> {
        // Docker before 25 accepts a second network with a taken name; serialise our creations.
        static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _creating = CREATING.lock().await;
        if let Some(network) = self.find_database_network().await? {
            return Ok(network);
        }
        let request = bollard::models::NetworkCreateRequest {
            name: self.config.database_network.clone(),
            driver: Some("bridge".to_string()),
            internal: Some(true),
            labels: Some(HashMap::from([(NETWORK_LABEL.to_string(), String::new())])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => {}
            // Created by another process meanwhile (newer engines refuse a taken name).
            Err(error) if is_status(&error, &[409]) => {}
            Err(error) => return Err(docker_error("creating the database network")(error)),
        }
        let network = self
            .find_database_network()
            .await?
            .ok_or_else(|| ExecutorError::Docker {
                operation: "creating the database network",
                message: format!(
                    "network {} is absent right after its creation",
                    self.config.database_network
                ),
            })?;
        tracing::info!(network = %network, "created the database network");
        Ok(network)
    }

    /// Checks the image against the registry prefix and allow-list, and that it is present;
    /// returns its local id.
    async fn resolve_image(&self, job: &JobDefinition) -> Result<String, ExecutorError> {
        self.resolve_image_named(&job.image, &job.image_sha).await
    }

    async fn resolve_image_named(
        &self,
        image: &str,
        image_sha: &str,
    ) -> Result<String, ExecutorError> {
        let not_allowed = || ExecutorError::ImageNotAllowed {
            image: image.to_owned(),
        };
        let prefix = format!("{}/", self.config.registry.trim_end_matches('/'));
        let name_and_tag = image.strip_prefix(&prefix).ok_or_else(not_allowed)?;
        let name = name_and_tag.split(':').next().unwrap_or_default();
        if name.is_empty()
            || !self
                .config
                .allowed_images
                .iter()
                .any(|allowed| allowed == name)
        {
            return Err(not_allowed());
        }
        let inspect = match self.docker.inspect_image(image).await {
            Ok(inspect) => inspect,
            Err(error) if is_status(&error, &[404]) => {
                return Err(ExecutorError::ImageNotPresent {
                    image: image.to_owned(),
                });
            }
            Err(error) => return Err(docker_error("inspecting the image")(error)),
        };
        let id = inspect.id.unwrap_or_default();
        if !image_sha.is_empty() {
            let digest_suffix = format!("@{}", image_sha);
            let matches = id == image_sha
                || inspect
                    .repo_digests
                    .unwrap_or_default()
                    .iter()
                    .any(|digest| digest.ends_with(&digest_suffix));
            if !matches {
                return Err(ExecutorError::ImageDigestMismatch {
                    image: image.to_owned(),
                    expected: image_sha.to_owned(),
                });
            }
        }
        Ok(id)
    }

    async fn inspect(
        &self,
        job: &JobDefinition,
    ) -> Result<Option<ContainerInspectResponse>, ExecutorError> {
        let name = job.container_name();
        let inspected =
            tokio::time::timeout(INSPECT_TIMEOUT, self.docker.inspect_container(&name, None))
                .await
                .map_err(|_| ExecutorError::Docker {
                    operation: "inspecting the container",
                    message: format!("docker timed out after 15s inspecting container {name}"),
                })?;
        match inspected {
            Ok(inspect) => Ok(Some(inspect)),
            Err(error) if is_status(&error, &[404]) => Ok(None),
            Err(error) => Err(docker_error("inspecting the container")(error)),
        }
    }

    fn container_facts(inspect: Option<&ContainerInspectResponse>) -> ContainerFacts {
        let Some(state) = inspect.and_then(|inspect| inspect.state.as_ref()) else {
            return ContainerFacts::Absent;
        };
        let time = |text: &Option<String>| text.as_deref().and_then(clock::parse_rfc3339_ns);
        match state.status {
            Some(ContainerStateStatusEnum::CREATED) => ContainerFacts::Created,
            _ if state.running == Some(true) => ContainerFacts::Running {
                started_at_ns: time(&state.started_at),
            },
            _ => ContainerFacts::Exited {
                finished_at_ns: time(&state.finished_at),
            },
        }
    }

    async fn disk_facts(&self, job: &JobDefinition) -> Result<DiskFacts, ExecutorError> {
        let metadata_path = self.config.layout.job_log_dir(job).join(METADATA_FILE);
        let job_dir = self.config.layout.job_dir(job);
        let task_id = job.task_id.clone();
        blocking(move || {
            let metadata = metadata::read(&metadata_path)?.filter(|metadata| {
                // Metadata written under another task does not finish this one (spec §4.2 #2).
                metadata.task_id.is_empty() || task_id.is_empty() || metadata.task_id == task_id
            });
            let prepared_at_ns = std::fs::read_to_string(job_dir.join(TIMESTAMP_FILE))
                .ok()
                .and_then(|text| text.trim().parse().ok());
            Ok(DiskFacts {
                metadata,
                job_dir_exists: job_dir.is_dir(),
                prepared_at_ns,
            })
        })
        .await
    }

    fn numeric_user(&self) -> Option<(u32, u32)> {
        let (uid, gid) = self.config.user.split_once(':')?;
        Some((uid.parse().ok()?, gid.parse().ok()?))
    }

    /// The container's stdout and stderr with timestamps (the last 100000 lines).
    async fn container_logs(&self, job: &JobDefinition) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail("100000")
            .build();
        let mut stream = self.docker.logs(&job.container_name(), Some(options));
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => text.extend_from_slice(&chunk.into_bytes()),
                Err(error) => {
                    tracing::warn!(job = %job.id, %error, "reading container logs failed");
                    break;
                }
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    async fn image_labels(&self, image_id: &str) -> HashMap<String, String> {
        if image_id.is_empty() {
            return HashMap::new();
        }
        match self.docker.inspect_image(image_id).await {
            Ok(inspect) => inspect
                .config
                .and_then(|config| config.labels)
                .unwrap_or_default(),
            Err(_) => HashMap::new(),
        }
    }

    async fn project_actions(&self, job: &JobDefinition) -> Option<BTreeSet<String>> {
        if job.study.git_repo_url.is_empty() || job.study.commit.is_empty() {
            return None;
        }
        let bytes = self
            .git
            .read_file(&job.study.git_repo_url, &job.study.commit, "project.yaml")
            .await?;
        let text = String::from_utf8(bytes).ok()?;
        let pipeline = rap_pipeline::load_pipeline(&text).ok()?;
        Some(
            pipeline
                .action_names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        )
    }

    /// Where a running job's aggregates are saved, so an adopting agent continues them.
    fn metrics_path(&self, job: &JobDefinition) -> PathBuf {
        self.config
            .layout
            .temp()
            .join(format!("metrics-{}.json", job.id))
    }

    /// Collects stats samples until the container stops, saving the aggregates whenever a
    /// peak rises and every few samples. After a restart the saved aggregates of the same container are continued.
    async fn stats_loop(&self, job: &JobDefinition) {
        let container_id = match self.inspect(job).await {
            Ok(Some(inspect)) => inspect.id.unwrap_or_default(),
            _ => return,
        };
        let path = self.metrics_path(job);
        let known = self
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&job.id);
        if !known {
            let saved = tokio::fs::read(&path)
                .await
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Aggregate>(&bytes).ok())
                .filter(|saved| saved.container_id == container_id)
                .unwrap_or_else(|| Aggregate::for_container(container_id.clone()));
            self.metrics
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job.id.clone(), saved);
        }
        let options = StatsOptionsBuilder::default().stream(true).build();
        let mut stream = self.docker.stats(&job.container_name(), Some(options));
        while let Some(Ok(stats)) = stream.next().await {
            let Some(sample) = sample_from_stats(&stats) else {
                continue;
            };
            let snapshot = {
                let mut all = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
                let aggregate = all.entry(job.id.clone()).or_default();
                let peak_rose = aggregate.add(sample);
                // A peak is saved at once, so an adopting agent never reports a lower one;
                // the means can do with a save every few samples.
                (peak_rose || aggregate.samples() % 5 == 1).then(|| aggregate.clone())
            };
            if let Some(snapshot) = snapshot {
                let bytes = serde_json::to_vec(&snapshot).unwrap_or_default();
                let path = path.clone();
                let saved =
                    tokio::task::spawn_blocking(move || outputs::atomic_write(&path, &bytes)).await;
                if let Ok(Err(error)) = saved {
                    tracing::warn!(job = %job.id, %error, "saving metrics failed");
                }
            }
        }
    }
}

/// Turns one Docker stats reading into a sample; `None` for the first reading of a stream,
/// whose "previous" CPU figures are zero.
fn sample_from_stats(stats: &ContainerStatsResponse) -> Option<metrics::Sample> {
    let cpu = stats.cpu_stats.as_ref()?;
    let previous = stats.precpu_stats.as_ref()?;
    let previous_system = previous.system_cpu_usage?;
    let total = cpu.cpu_usage.as_ref()?.total_usage?;
    let previous_total = previous
        .cpu_usage
        .as_ref()
        .and_then(|usage| usage.total_usage)
        .unwrap_or(0);
    let memory = stats.memory_stats.as_ref();
    let usage = memory.and_then(|memory| memory.usage).unwrap_or(0);
    // As `docker stats`: page cache that can be reclaimed is not counted.
    let cache = memory
        .and_then(|memory| memory.stats.as_ref())
        .and_then(|stats| {
            stats
                .get("inactive_file")
                .or_else(|| stats.get("total_inactive_file"))
                .copied()
        })
        .unwrap_or(0);
    Some(metrics::Sample {
        cpu_percent: metrics::cpu_percent(
            total,
            previous_total,
            cpu.system_cpu_usage.unwrap_or(0),
            previous_system,
            cpu.online_cpus.unwrap_or(1),
        ),
        memory_bytes: usage.saturating_sub(cache),
    })
}

/// Replaces every non-safelisted environment value in a recorded inspection.
fn redacted_container_metadata(inspect: &ContainerInspectResponse) -> serde_json::Value {
    let mut inspect = inspect.clone();
    if let Some(env) = inspect
        .config
        .as_mut()
        .and_then(|config| config.env.as_mut())
    {
        for entry in env.iter_mut() {
            let key = entry.split('=').next().unwrap_or_default().to_owned();
            if !ENV_SAFELIST.contains(&key.as_str()) {
                *entry = format!("{key}={REDACTED}");
            }
        }
    }
    serde_json::to_value(&inspect).unwrap_or(serde_json::Value::Null)
}

/// The host name in a database URL (`scheme://user:pass@host:port/db?x`), if it is a name
/// rather than an IP address.
fn database_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host_port.starts_with('[') {
        // A bracketed IPv6 literal needs no pinning.
        return None;
    }
    let host = host_port.split(':').next()?;
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    Some(host)
}

/// The database job's DNS is blackholed, so the agent resolves the database host itself and
/// pins it (`--add-host host:ip`, as the reference does). An unresolvable host pins nothing:
/// the job then fails to connect, which it reports itself.
async fn pinned_database_host(url: &str) -> Option<Vec<String>> {
    let host = database_host(url)?;
    let mut addresses = tokio::net::lookup_host((host, 0)).await.ok()?;
    let address = addresses.next()?;
    Some(vec![format!("{host}:{}", address.ip())])
}

/// The executor's message and hint (spec §4.5 "Message").
fn status_message(
    exit_code: Option<i64>,
    oom_killed: bool,
    memory_limit: Option<i64>,
    cancelled: bool,
    error: bool,
    found: &FoundOutputs,
) -> (Option<String>, Option<String>) {
    let Some(exit_code) = exit_code else {
        return match (cancelled, error) {
            (true, _) => (Some("Job cancelled by system".into()), None),
            (_, true) => (Some("Job errored".into()), None),
            _ => (None, None),
        };
    };
    if exit_code == 0 && !found.unmatched_patterns.is_empty() {
        let (message, hint) = outputs::unmatched_message(found);
        return (Some(message), hint);
    }
    if exit_code == 0 && !found.outputs.is_empty() {
        return (Some("Completed successfully".into()), None);
    }
    if exit_code == 137 && cancelled {
        return (Some("Job cancelled by system".into()), None);
    }
    if exit_code == 137 && oom_killed {
        let limit_gb = memory_limit.unwrap_or(0) as f64 / (1024.0 * 1024.0 * 1024.0);
        return (
            Some(format!("Job ran out of memory (limit was {limit_gb:.2}GB)")),
            None,
        );
    }
    if exit_code == 137 {
        return (
            Some("Job killed by OpenSAFELY admin or memory limits".into()),
            None,
        );
    }
    if cancelled {
        return (Some("Job cancelled by system".into()), None);
    }
    if error {
        return (Some("Job errored".into()), None);
    }
    (None, None)
}

/// Gives the job directory to the container's user, so a non-root job can write its outputs
/// when the agent runs as root. Links are changed themselves (`lchown`), never followed.
fn chown_tree(root: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        if path.symlink_metadata()?.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// The agent's effective uid (the owner of `/proc/self`).
fn effective_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .ok()
        .map(|metadata| metadata.uid())
}

impl Executor for DockerExecutor {
    async fn get_status(
        &self,
        job: &JobDefinition,
        cancelled: bool,
    ) -> Result<JobStatus, ExecutorError> {
        let inspect = self.inspect(job).await?;
        let container = Self::container_facts(inspect.as_ref());
        let disk = self.disk_facts(job).await?;
        let metadata = disk.metadata.clone();
        let derived = recovery::derive_state(&container, &disk, cancelled);
        Ok(JobStatus {
            state: derived.state,
            timestamp_ns: derived.timestamp_ns.unwrap_or_else(clock::now_ns),
            metadata: metadata.filter(|_| derived.state.is_final()),
        })
    }

    async fn prepare(&self, job: &JobDefinition) -> Result<JobStatus, ExecutorError> {
        job.check()?;
        self.resolve_image(job).await?;
        let layout = &self.config.layout;
        let high_workspace = layout.high_workspace(job);
        let archives = layout.archives();
        let workspace = job.workspace.clone();
        let archived = blocking(move || {
            let has_archive = ["tar.gz", "tar.zstd", "tar.xz"]
                .iter()
                .any(|ext| archives.join(format!("{workspace}.{ext}")).exists());
            Ok(!high_workspace.exists() && has_archive)
        })
        .await?;
        if archived {
            return Err(ExecutorError::WorkspaceArchived {
                workspace: job.workspace.clone(),
            });
        }
        let status = self.get_status(job, false).await?;
        if status.state != ExecutorState::Unknown {
            return Ok(status);
        }

        // The security re-check (spec §7.2 #26): never trust the controller's word alone.
        self.git.check_repo(&job.repo_url)?;
        if !job.study.git_repo_url.is_empty() {
            self.git.check_repo(&job.study.git_repo_url)?;
            if !job.study.branch.is_empty() && !job.study.commit.is_empty() {
                self.git
                    .check_commit_on_branch(
                        &job.study.git_repo_url,
                        &job.study.commit,
                        &job.study.branch,
                    )
                    .await?;
            }
        }

        let job_dir = layout.job_dir(job);
        tokio::fs::create_dir_all(&job_dir)
            .await
            .map_err(|source| crate::workspace::WorkspaceError::Io {
                path: job_dir.clone(),
                source,
            })?;
        self.git
            .checkout(&job.repo_url, &job.commit, &job_dir)
            .await?;

        let layout_for_inputs = layout.clone();
        let job_for_inputs = job.clone();
        let job_dir_for_inputs = job_dir.clone();
        let owner = self
            .numeric_user()
            .filter(|(uid, _)| effective_uid().is_some_and(|euid| euid == 0 && euid != *uid));
        blocking(move || {
            copy_inputs(&layout_for_inputs, &job_for_inputs, &job_dir_for_inputs)?;
            if let Some((uid, gid)) = owner {
                chown_tree(&job_dir_for_inputs, uid, gid).map_err(|source| {
                    crate::workspace::WorkspaceError::Io {
                        path: job_dir_for_inputs.clone(),
                        source,
                    }
                })?;
            }
            // Written last: its presence is what marks the job PREPARED.
            outputs::atomic_write(
                &job_dir_for_inputs.join(TIMESTAMP_FILE),
                clock::now_ns().to_string().as_bytes(),
            )?;
            Ok(())
        })
        .await?;
        self.get_status(job, false).await
    }

    async fn execute(&self, job: &JobDefinition) -> Result<JobStatus, ExecutorError> {
        job.check()?;
        let status = self.get_status(job, false).await?;
        if status.state != ExecutorState::Prepared {
            return Ok(status);
        }
        let image_id = self.resolve_image(job).await?;
        let name = job.container_name();
        let created = self.inspect(job).await?.is_some();
        if !created {
            let mut env: Vec<String> = vec!["HOME=/tmp".to_string()];
            env.extend(job.env.iter().map(|(key, value)| format!("{key}={value}")));
            let (network_mode, dns, extra_hosts) = if job.allow_database_access {
                let database = job
                    .database_name
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let url = (database == "default")
                    .then_some(self.config.database_url.as_ref())
                    .flatten()
                    .ok_or_else(|| ExecutorError::DatabaseNotConfigured {
                        name: database.clone(),
                        backend: self.config.backend.clone(),
                    })?;
                // The secret goes only into the container's environment: never argv or logs.
                env.push(format!("DATABASE_URL={}", url.expose()));
                (
                    self.config.database_network.clone(),
                    Some(vec!["192.0.2.0".to_string()]),
                    pinned_database_host(url.expose()).await,
                )
            } else {
                ("none".to_string(), None, None)
            };
            let labels = HashMap::from([
                ("job-runner".to_string(), String::new()),
                (JOB_LABEL.to_string(), String::new()),
                ("workspace".to_string(), job.workspace.clone()),
                ("action".to_string(), job.action.clone()),
                ("rap.job-id".to_string(), job.id.clone()),
                ("rap.task-id".to_string(), job.task_id.clone()),
            ]);
            let job_dir = self.config.layout.job_dir(job);
            let host_config = HostConfig {
                init: Some(true),
                cap_drop: Some(vec!["ALL".to_string()]),
                security_opt: Some(vec!["no-new-privileges".to_string()]),
                nano_cpus: (job.cpu_count > 0.0).then_some((job.cpu_count * 1e9) as i64),
                memory: job.memory_limit,
                memory_swap: job.memory_limit,
                network_mode: Some(network_mode),
                dns,
                extra_hosts,
                mounts: Some(vec![Mount {
                    target: Some("/workspace".to_string()),
                    source: Some(job_dir.to_string_lossy().into_owned()),
                    typ: Some(MountType::BIND),
                    ..Default::default()
                }]),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("local".to_string()),
                    config: Some(HashMap::from([
                        ("max-file".to_string(), "200".to_string()),
                        ("max-size".to_string(), "20m".to_string()),
                        ("compress".to_string(), "true".to_string()),
                    ])),
                }),
                ..Default::default()
            };
            let body = ContainerCreateBody {
                image: Some(image_id),
                cmd: Some(job.args.clone()),
                env: Some(env),
                user: Some(self.config.user.clone()),
                working_dir: Some("/workspace".to_string()),
                labels: Some(labels),
                host_config: Some(host_config),
                ..Default::default()
            };
            let options = CreateContainerOptionsBuilder::default().name(&name).build();
            match self.docker.create_container(Some(options), body).await {
                Ok(_) => {}
                // Created by an earlier attempt that stopped before starting it.
                Err(error) if is_status(&error, &[409]) => {}
                Err(error) => return Err(docker_error("creating the container")(error)),
            }
        }
        match self.docker.start_container(&name, None).await {
            Ok(()) => {}
            // 304: already started.
            Err(error) if is_status(&error, &[304]) => {}
            Err(error) => return Err(docker_error("starting the container")(error)),
        }
        self.get_status(job, false).await
    }

    async fn wait_for_exit(&self, job: &JobDefinition) -> Result<JobStatus, ExecutorError> {
        let name = job.container_name();
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut wait = self.docker.wait_container(&name, Some(options));
        let stats = self.stats_loop(job);
        tokio::pin!(stats);
        let mut stats_done = false;
        let waited = loop {
            tokio::select! {
                result = wait.next() => break result,
                // The stats stream ends when the container stops; keep waiting for `wait`.
                () = &mut stats, if !stats_done => stats_done = true,
            }
        };
        match waited {
            // bollard reports a non-zero exit as an error carrying the code: both mean "stopped".
            Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) | None => {}
            Some(Err(error)) if is_status(&error, &[404]) => {}
            Some(Err(error)) => return Err(docker_error("waiting for the container")(error)),
        }
        self.get_status(job, false).await
    }

    async fn terminate(&self, job: &JobDefinition) -> Result<JobStatus, ExecutorError> {
        let status = self.get_status(job, true).await?;
        if matches!(
            status.state,
            ExecutorState::Unknown
                | ExecutorState::Executed
                | ExecutorState::Finalizing
                | ExecutorState::Finalized
        ) {
            return Ok(status);
        }
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match self
            .docker
            .kill_container(&job.container_name(), Some(options))
            .await
        {
            Ok(()) => {}
            // No such container, or not running: nothing to kill.
            Err(error) if is_status(&error, &[404, 409]) => {}
            Err(error) => return Err(docker_error("killing the container")(error)),
        }
        // Wait for the kill to land so the next state observed is EXECUTED.
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let _ = self
            .docker
            .wait_container(&job.container_name(), Some(options))
            .next()
            .await;
        self.get_status(job, true).await
    }

    async fn finalize(
        &self,
        job: &JobDefinition,
        cancelled: bool,
        error: Option<RecordedError>,
    ) -> Result<JobStatus, ExecutorError> {
        let status = self.get_status(job, cancelled).await?;
        if status.state.is_final() {
            return Ok(status);
        }
        if status.state == ExecutorState::Unknown && !cancelled && error.is_none() {
            return Ok(status);
        }
        let layout = self.config.layout.clone();
        let job_dir = layout.job_dir(job);
        let inspect = self.inspect(job).await?;
        let collect = !cancelled && error.is_none() && job.check().is_ok();
        let found = if collect && job_dir.is_dir() {
            let spec = job.output_spec.clone();
            let dir = job_dir.clone();
            blocking(move || Ok(outputs::find_outputs(&dir, &spec)?)).await?
        } else {
            FoundOutputs::default()
        };

        let state = inspect.as_ref().and_then(|inspect| inspect.state.as_ref());
        let exit_code = state.and_then(|state| state.exit_code);
        let oom_killed = state.and_then(|state| state.oom_killed).unwrap_or(false);
        let memory_limit = inspect
            .as_ref()
            .and_then(|inspect| inspect.host_config.as_ref())
            .and_then(|host| host.memory)
            .filter(|memory| *memory > 0);
        let (status_message, hint) = status_message(
            exit_code,
            oom_killed,
            memory_limit,
            cancelled,
            error.is_some(),
            &found,
        );
        let image_id = inspect
            .as_ref()
            .and_then(|inspect| inspect.image.clone())
            .unwrap_or_default();
        let labels = self.image_labels(&image_id).await;
        let label = |key: &str| labels.get(key).cloned().unwrap_or_else(|| "unknown".into());
        let in_memory = self
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&job.id)
            .map(Aggregate::metrics);
        let job_metrics = match in_memory {
            Some(metrics) => metrics,
            // Adopted after its container stopped: what the previous agent saved, if anything.
            None => tokio::fs::read(self.metrics_path(job))
                .await
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Aggregate>(&bytes).ok())
                .map(|saved| saved.metrics())
                .unwrap_or_default(),
        };
        let now = clock::now_ns();
        let mut record = JobMetadata {
            version: metadata::METADATA_VERSION,
            outputs: found
                .outputs
                .iter()
                .map(|(path, privacy)| (path.clone(), privacy.as_str().to_string()))
                .collect(),
            unmatched_patterns: found.unmatched_patterns.clone(),
            unmatched_outputs: found.unmatched_outputs.clone(),
            status_message,
            hint,
            timestamp_ns: now,
            job_definition_id: job.id.clone(),
            job_definition_rap_id: job.rap_id.clone(),
            task_id: job.task_id.clone(),
            created_at: job.created_at,
            user: job.user.clone(),
            completed_at: now / 1_000_000_000,
            docker_image_id: image_id,
            expected_image_id: job.image_sha.clone(),
            exit_code,
            oom_killed,
            container_metadata: inspect
                .as_ref()
                .map(redacted_container_metadata)
                .unwrap_or(serde_json::Value::Null),
            commit: job.study.commit.clone(),
            database_name: job.database_name.clone(),
            action_version: label("org.opencontainers.image.version"),
            action_revision: label("org.opencontainers.image.revision"),
            action_created: label("org.opencontainers.image.created"),
            base_revision: label("org.opensafely.base.vcs-ref"),
            base_created: label("org.opencontainers.base.build-date"),
            level4_excluded_files: Default::default(),
            cancelled,
            error: error.clone(),
            job_metrics,
        };

        let persist_outputs = collect && exit_code.is_some();
        if persist_outputs && !found.outputs.is_empty() {
            let project_actions = self.project_actions(job).await;
            let job_for_persist = job.clone();
            let dir = job_dir.clone();
            let high = layout.high_workspace(job);
            let medium = layout.medium_workspace(job);
            let outputs_found = found.outputs.clone();
            let persisted = blocking(move || {
                Ok(outputs::persist(
                    &job_for_persist,
                    &dir,
                    &high,
                    &medium,
                    &outputs_found,
                    project_actions.as_ref(),
                )?)
            })
            .await?;
            record.level4_excluded_files = persisted.level4_excluded_files;
        }

        let logs = if inspect.is_some() {
            Some(self.container_logs(job).await + &metadata::summary(&record))
        } else {
            None
        };
        let log_dir = layout.job_log_dir(job);
        let workspace_logs = persist_outputs.then(|| {
            let name = format!("metadata/{}.log", job.action);
            (
                layout.high_workspace(job),
                layout.medium_workspace(job),
                name,
            )
        });
        let json = metadata::to_json(&record);
        blocking(move || {
            std::fs::create_dir_all(&log_dir).map_err(|source| {
                crate::outputs::OutputsError::Io {
                    path: log_dir.clone(),
                    source,
                }
            })?;
            if let Some(logs) = &logs {
                outputs::atomic_write(&log_dir.join(LOGS_FILE), logs.as_bytes())?;
                if let Some((high, medium, name)) = &workspace_logs {
                    for root in [high, medium] {
                        let destination = outputs::safe_destination(root, name)?;
                        outputs::atomic_write(&destination, logs.as_bytes())?;
                    }
                }
            }
            // Written last: its presence is what makes the job FINALIZED (spec §4.2).
            outputs::atomic_write(&log_dir.join(METADATA_FILE), &json)?;
            Ok(())
        })
        .await?;
        tracing::info!(
            job = %job.id,
            task = %job.task_id,
            exit_code = ?exit_code,
            cancelled,
            "job finalized"
        );
        self.get_status(job, cancelled).await
    }

    async fn cleanup(&self, job: &JobDefinition) -> Result<(), ExecutorError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self
            .docker
            .remove_container(&job.container_name(), Some(options))
            .await
        {
            Ok(()) => {}
            Err(error) if is_status(&error, &[404]) => {}
            // A removal already under way (409) finishes on its own.
            Err(error) if is_status(&error, &[409]) => {}
            Err(error) => {
                tracing::error!(job = %job.id, %error, "removing the container failed");
            }
        }
        self.metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job.id);
        let _ = tokio::fs::remove_file(self.metrics_path(job)).await;
        let job_dir: PathBuf = self.config.layout.job_dir(job);
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&job_dir)).await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => {}
            // Never raised (spec §4.6): the job is over; an operator can tidy up.
            Ok(Err(error)) => {
                tracing::error!(job = %job.id, %error, "removing the job directory failed")
            }
            Err(error) => tracing::error!(job = %job.id, %error, "cleanup task failed"),
        }
        Ok(())
    }
}

const DB_STATUS_CHECK: &str = "database status check";
const DB_DATA_CHECK: &str = "database data check";

impl crate::task::DbChecks for DockerExecutor {
    /// `in_maintenance_mode` (spec §1.4 DBSTATUS).
    async fn db_status(
        &self,
        definition: &rap_proto::pb::rap::v1::DbStatusDefinition,
    ) -> Result<String, ExecutorError> {
        let output = self
            .run_db_utility(
                &definition.image,
                &definition.database_name,
                vec!["in_maintenance_mode".to_string()],
                DB_STATUS_CHECK,
            )
            .await?;
        parse_db_status(&output)
    }

    /// `hes_cutoff_date_check <month>` against the default database (spec §1.4 DBDATACHECK).
    async fn db_data_check(
        &self,
        definition: &rap_proto::pb::rap::v1::DbDataCheckDefinition,
    ) -> Result<String, ExecutorError> {
        let output = self
            .run_db_utility(
                &definition.image,
                "default",
                vec![
                    "hes_cutoff_date_check".to_string(),
                    definition.hes_expected_activity_month.clone(),
                ],
                DB_DATA_CHECK,
            )
            .await?;
        parse_data_check(&output)
    }
}

impl DockerExecutor {
    /// Runs the database utilities `image` with `args` on the database network, the URL of
    /// `database_name` in its environment only (never in argv), and returns its stdout. A
    /// non-zero exit is an invalid status of `check`, whose output is not echoed.
    async fn run_db_utility(
        &self,
        image: &str,
        database_name: &str,
        args: Vec<String>,
        check: &'static str,
    ) -> Result<String, ExecutorError> {
        let image_id = self.resolve_image_named(image, "").await?;
        let database = if database_name.is_empty() {
            "default"
        } else {
            database_name
        };
        let url = (database == "default")
            .then_some(self.config.database_url.as_ref())
            .flatten()
            .ok_or_else(|| ExecutorError::DatabaseNotConfigured {
                name: database.to_owned(),
                backend: self.config.backend.clone(),
            })?;
        let name = format!("os-dbcheck-{}", clock::now_ns());
        let body = ContainerCreateBody {
            image: Some(image_id),
            cmd: Some(args),
            env: Some(vec![format!("DATABASE_URL={}", url.expose())]),
            user: Some(self.config.user.clone()),
            labels: Some(HashMap::from([(JOB_LABEL.to_string(), String::new())])),
            host_config: Some(HostConfig {
                network_mode: Some(self.config.database_network.clone()),
                dns: Some(vec!["192.0.2.0".to_string()]),
                cap_drop: Some(vec!["ALL".to_string()]),
                security_opt: Some(vec!["no-new-privileges".to_string()]),
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(docker_error("creating the database utility container"))?;
        let outcome = async {
            self.docker
                .start_container(&name, None)
                .await
                .map_err(docker_error("starting the database utility container"))?;
            let options = WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build();
            let exit = match self
                .docker
                .wait_container(&name, Some(options))
                .next()
                .await
            {
                Some(Ok(response)) => response.status_code,
                Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
                _ => -1,
            };
            let logs = LogsOptionsBuilder::default().stdout(true).build();
            let mut stream = self.docker.logs(&name, Some(logs));
            let mut output = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                output.extend_from_slice(&chunk.into_bytes());
            }
            if exit != 0 {
                return Err(ExecutorError::InvalidDbCheckStatus { check });
            }
            Ok(String::from_utf8_lossy(&output).into_owned())
        }
        .await;
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self.docker.remove_container(&name, Some(remove)).await;
        outcome
    }
}

/// The last line of a database utility's output, trimmed.
fn last_line(output: &str) -> &str {
    output.trim_end().lines().last().unwrap_or("").trim()
}

/// The last line of the database-status output: one of the reference's accepted values, turned
/// into `"db-maintenance"` or `""`. Anything else is an error that does not echo the value.
fn parse_db_status(output: &str) -> Result<String, ExecutorError> {
    match last_line(output) {
        "" | "none;0" | "none;1" | "none;2" => Ok(String::new()),
        "db-maintenance" | "db-maintenance;0" | "db-maintenance;1" | "db-maintenance;2" => {
            Ok("db-maintenance".to_string())
        }
        _ => Err(ExecutorError::InvalidDbCheckStatus {
            check: DB_STATUS_CHECK,
        }),
    }
}

/// The last line of the data-check output: `OK` or `FAILED`. Anything else is an error that
/// does not echo the value.
fn parse_data_check(output: &str) -> Result<String, ExecutorError> {
    match last_line(output) {
        status @ ("OK" | "FAILED") => Ok(status.to_string()),
        _ => Err(ExecutorError::InvalidDbCheckStatus {
            check: DB_DATA_CHECK,
        }),
    }
}

/// Copies the outputs of the jobs this one needs from the high-privacy workspace into the job
/// directory (spec §4.3). A missing file is fatal; it is named only in the agent's log.
fn copy_inputs(layout: &Layout, job: &JobDefinition, job_dir: &Path) -> Result<(), ExecutorError> {
    let high_workspace = layout.high_workspace(job);
    for input_job_id in &job.input_job_ids {
        let Some(input) = metadata::find_for_job(layout, input_job_id)? else {
            continue;
        };
        for file in input.outputs.keys() {
            if !rap_pipeline::glob::is_safe_path(file) {
                // Recorded outputs were checked when written; anything else is not ours to copy.
                // (A path, not a pattern: `check_pattern` would skip names like `a[1].csv`.)
                continue;
            }
            let source = high_workspace.join(file);
            let is_file = source
                .symlink_metadata()
                .map(|metadata| metadata.is_file())
                .unwrap_or(false);
            if !is_file {
                tracing::error!(job = %job.id, input_job = %input_job_id, file = %file,
                    "input file missing from the workspace");
                return Err(ExecutorError::MissingInput {
                    input_job_id: input_job_id.clone(),
                    workspace: job.workspace.clone(),
                    job_id: job.id.clone(),
                });
            }
            let destination = outputs::safe_destination(job_dir, file)?;
            outputs::atomic_copy(&source, &destination)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_the_reference() {
        let none = FoundOutputs::default();
        let with_output = FoundOutputs {
            outputs: [("a.csv".to_string(), crate::job::Privacy::HighlySensitive)].into(),
            ..Default::default()
        };
        let message = |exit, oom, cancelled, found: &FoundOutputs| {
            status_message(exit, oom, Some(6 * 1024 * 1024), cancelled, false, found).0
        };
        assert_eq!(
            message(Some(0), false, false, &with_output).as_deref(),
            Some("Completed successfully")
        );
        assert_eq!(message(Some(0), false, false, &none), None);
        assert_eq!(
            message(Some(137), true, false, &none).as_deref(),
            Some("Job ran out of memory (limit was 0.01GB)")
        );
        assert_eq!(
            message(Some(137), false, false, &none).as_deref(),
            Some("Job killed by OpenSAFELY admin or memory limits")
        );
        assert_eq!(
            message(Some(137), false, true, &none).as_deref(),
            Some("Job cancelled by system")
        );
        assert_eq!(
            message(None, false, true, &none).as_deref(),
            Some("Job cancelled by system")
        );
        assert_eq!(message(Some(1), false, false, &none), None);
    }

    #[test]
    fn database_hosts_are_found_in_urls() {
        assert_eq!(
            database_host("mssql://user:p@ss@db.internal:1433/data?x=1"),
            Some("db.internal")
        );
        assert_eq!(database_host("postgresql://db/data"), Some("db"));
        assert_eq!(database_host("postgresql://u@10.0.0.5:5432/d"), None);
        assert_eq!(database_host("postgresql://[::1]:5432/d"), None);
        assert_eq!(database_host("not a url"), None);
    }

    #[test]
    fn database_status_lines_parse_without_echoing() {
        assert_eq!(parse_db_status("").unwrap(), "");
        assert_eq!(parse_db_status("starting\nnone;1\n").unwrap(), "");
        assert_eq!(
            parse_db_status("db-maintenance;2").unwrap(),
            "db-maintenance"
        );
        assert_eq!(
            parse_db_status("db-maintenance\n").unwrap(),
            "db-maintenance"
        );
        let error = parse_db_status("secret-value").unwrap_err();
        assert!(!error.public_message().contains("secret"));
    }

    #[test]
    fn data_check_lines_parse_without_echoing() {
        assert_eq!(parse_data_check("checking\nOK\n").unwrap(), "OK");
        assert_eq!(parse_data_check(" FAILED ").unwrap(), "FAILED");
        for bad in ["", "ok", "OK\nsecret-value"] {
            let error = parse_data_check(bad).unwrap_err();
            assert_eq!(
                error.public_message(),
                "Invalid status from the database data check"
            );
        }
    }

    #[test]
    fn recorded_environment_is_redacted() {
        let inspect = ContainerInspectResponse {
            config: Some(bollard::models::ContainerConfig {
                env: Some(vec![
                    "PATH=/bin".into(),
                    "DATABASE_URL=mssql://user:secret@db".into(),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = redacted_container_metadata(&inspect).to_string();
        assert!(text.contains("PATH=/bin"));
        assert!(text.contains("DATABASE_URL=xxxx-REDACTED-xxxx"));
        assert!(!text.contains("secret"));
    }
}
