//! The RAP agent: runs jobs in Docker inside the secure environment (spec:
//! rap-controller-and-agent §1.4–§1.6, §4). It dials out to the controller over mTLS, receives
//! tasks on one stream, runs each job in a locked-down container, files the outputs by privacy
//! level, and reports every stage back with results that name no output file.
//!
//! # Layout
//! - [`config`]: the TOML configuration with environment overrides.
//! - [`connection`]: the outbound `AgentService.Connect` stream, reconnects and resends.
//! - [`outbox`]: task updates on disk until the controller acknowledges them.
//! - [`task`]: one runner per task over the pure decisions in [`task::state`] (`ExecutorState`).
//! - [`executor`]: the [`executor::Executor`] trait; [`executor::docker`] is the only module that
//!   sees bollard.
//! - [`workspace`]: git checkouts from bare caches and the repository security re-check.
//! - [`outputs`]: output matching, level-4 checks, filing and the manifest.
//! - [`metadata`]: the finished job's record, the log summary and result redaction.
//! - [`recovery`]: state derived from Docker and the disk after a restart.
//! - [`metrics`]: CPU and memory aggregates from Docker stats.
//! - [`job`], [`layout`], [`clock`]: the checked job definition, the directory tree, time.
//!
//! # Invariants
//! - No output file name or pattern enters a message to the controller: results go through
//!   [`metadata::redact`], errors through [`executor::ExecutorError::public_message`].
//! - Nothing is written outside the work directory: names are checked
//!   ([`job::JobDefinition::check`]), patterns refused if they escape, symbolic links never
//!   followed when collecting or filing outputs.
//! - The agent keeps no task state of its own beyond unacknowledged updates: a job's state is
//!   derived from Docker and the disk, so a restart adopts running containers and reports a
//!   finished job's result again, unchanged.
//! - The agent opens no listening socket.

pub mod clock;
pub mod config;
pub mod connection;
pub mod executor;
pub mod job;
pub mod layout;
pub mod metadata;
pub mod metrics;
pub mod outbox;
pub mod outputs;
pub mod recovery;
pub mod task;
pub mod workspace;

use std::future::Future;
use std::sync::Arc;

use rap_proto::tls::TlsFiles;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::connection::{ConnectionConfig, ControllerEvent};
use crate::executor::docker::{DockerConfig, DockerExecutor};
use crate::layout::Layout;
use crate::outbox::Outbox;
use crate::task::Tasks;
use crate::workspace::RepoPolicy;

/// Why the agent could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A directory could not be created.
    #[error("creating {path}: {source}")]
    Directory {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Docker could not be reached.
    #[error(transparent)]
    Executor(#[from] executor::ExecutorError),
    /// The outbox could not be opened.
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    /// The controller link is misconfigured.
    #[error(transparent)]
    Connection(#[from] connection::ConnectionError),
}

/// The executor's configuration from the agent's.
pub fn docker_config(config: &Config) -> DockerConfig {
    DockerConfig {
        layout: Layout::new(config.work_dir.clone()),
        backend: config.backend.clone(),
        registry: config.docker.registry.clone(),
        allowed_images: config.docker.allowed_images.clone(),
        user: config.docker.user.clone(),
        database_network: config.database.network.clone(),
        database_url: std::env::var(&config.database.url_env)
            .ok()
            .and_then(executor::docker::DatabaseUrl::new),
        repo_policy: RepoPolicy {
            allowed_github_orgs: config.git.allowed_orgs.clone(),
            allow_local_repos: config.git.allow_local_repos,
            github_proxy: config.git.proxy.clone().filter(|proxy| !proxy.is_empty()),
        },
        docker_socket: config.docker.socket.clone(),
    }
}

/// The controller link's configuration from the agent's.
pub fn connection_config(config: &Config) -> ConnectionConfig {
    ConnectionConfig {
        endpoint: config.controller.endpoint.clone(),
        tls: TlsFiles {
            ca: config.controller.ca_cert.clone(),
            cert: config.controller.cert.clone(),
            key: config.controller.key.clone(),
        },
        agent_id: config.agent_id.clone(),
        job_capacity: config.jobs.capacity,
        db_job_capacity: config.jobs.db_capacity,
    }
}

/// Runs the agent until `shutdown` resolves: creates the directory tree, connects to Docker,
/// creates or verifies the database network, opens the outbox, dials the controller and runs its tasks. On shutdown every runner stops at
/// a safe point (running containers keep running, to be adopted after the restart).
///
/// # Errors
/// Start-up failed (directories, Docker, the database network, outbox, TLS configuration).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let layout = Layout::new(config.work_dir.clone());
    for directory in layout.directories() {
        std::fs::create_dir_all(&directory).map_err(|source| AgentError::Directory {
            path: directory.clone(),
            source,
        })?;
    }
    let executor = Arc::new(DockerExecutor::connect(docker_config(&config)).await?);
    let network = executor.ensure_database_network().await?;
    tracing::info!(%network, "database network ready");
    let (outbox, announced) = Outbox::open(&layout.outbox())?;
    let outbox = Arc::new(outbox);
    let connection_config = connection_config(&config);
    // Fail fast on unusable TLS files, before any task runs.
    connection::endpoint(&connection_config)?;
    let mut tasks = Tasks::new(
        executor,
        outbox.clone(),
        config.jobs.capacity as usize,
        config.jobs.db_capacity as usize,
    );
    let (events_sender, mut events) = mpsc::channel(64);
    let (stop, stop_receiver) = watch::channel(false);
    let link = tokio::spawn(connection::run(
        connection_config,
        outbox,
        announced,
        events_sender,
        stop_receiver,
    ));
    tracing::info!(backend = %config.backend, agent = %config.agent_id, "agent running");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            event = events.recv() => match event {
                Some(ControllerEvent::Task(task)) => tasks.start(*task),
                Some(ControllerEvent::Revoke(task_id)) => tasks.revoke(&task_id),
                Some(ControllerEvent::LeaseMoved(task_id)) => tasks.abandon(&task_id),
                None => break,
            },
        }
    }
    tracing::info!("agent stopping");
    let _ = stop.send(true);
    tasks.shutdown().await;
    match link.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.into()),
        Err(error) => {
            tracing::error!(%error, "the connection task failed");
            Ok(())
        }
    }
}

/// One finding of [`check`].
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    /// What was checked.
    pub what: String,
    /// `Ok(detail)` or `Err(what is wrong)`.
    pub outcome: Result<String, String>,
}

/// Verifies what the agent needs, saying precisely what is wrong: the Docker engine, the
/// database network, the allowed images present, the directory tree (creatable and writable),
/// the TLS files, the database URL.
pub async fn check(config: &Config) -> Vec<CheckResult> {
    let mut results = Vec::new();
    let mut push = |what: &str, outcome: Result<String, String>| {
        results.push(CheckResult {
            what: what.to_owned(),
            outcome,
        })
    };
    let layout = Layout::new(config.work_dir.clone());
    for directory in layout.directories() {
        let outcome = std::fs::create_dir_all(&directory)
            .and_then(|()| tempfile::tempfile_in(&directory).map(|_| ()))
            .map(|()| "exists and is writable".to_string())
            .map_err(|error| format!("{}: {error}", directory.display()));
        push(&format!("directory {}", directory.display()), outcome);
    }
    let tls = connection_config(config).tls;
    push(
        "controller TLS files",
        rap_proto::tls::mtls_client(&tls)
            .map(|_| "CA, certificate and key load and match".to_string())
            .map_err(|error| error.to_string()),
    );
    push(
        "certificate backend",
        certificate_backend(&config.controller.cert).and_then(|backend| {
            if backend == config.backend {
                Ok(format!("the certificate names backend {backend}"))
            } else {
                Err(format!(
                    "the certificate names backend {backend} but the configuration says {}",
                    config.backend
                ))
            }
        }),
    );
    match DockerExecutor::connect(docker_config(config)).await {
        Ok(executor) => {
            push(
                "Docker engine",
                executor.ping().await.map_err(|error| error.to_string()),
            );
            let network = match executor.find_database_network().await {
                Ok(Some(network)) => Ok(format!("{network}")),
                Ok(None) => Ok(format!(
                    "{} does not exist yet: rap-agent serve creates it as an internal network",
                    config.database.network
                )),
                Err(error) => Err(error.to_string()),
            };
            push("database network", network);
            for image in &config.docker.allowed_images {
                let present = executor.image_present(image).await;
                push(
                    &format!("image {}/{image}", config.docker.registry),
                    present,
                );
            }
        }
        Err(error) => push("Docker engine", Err(error.to_string())),
    }
    let url_set = std::env::var(&config.database.url_env).is_ok_and(|url| !url.is_empty());
    push(
        "database URL",
        if url_set {
            Ok(format!("{} is set", config.database.url_env))
        } else {
            Err(format!(
                "{} is not set: database jobs will fail",
                config.database.url_env
            ))
        },
    );
    results
}

/// The backend named by the agent's certificate file (its first certificate).
fn certificate_backend(path: &std::path::Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let first = rustls_pemfile::certs(&mut reader)
        .next()
        .ok_or_else(|| format!("{} holds no certificate", path.display()))?
        .map_err(|error| format!("{}: {error}", path.display()))?;
    rap_proto::identity::backend_from_certificate(first.as_ref())
        .map(|backend| backend.as_str().to_string())
        .map_err(|error| format!("{}: {error}", path.display()))
}
