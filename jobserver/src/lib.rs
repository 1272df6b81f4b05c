//! The job server: the researchers' web app, the controller's client, and the
//! `ReleaseService` that Airlock calls (spec: jobserver-and-airlock, part A).
//!
//! Researchers sign in, create workspaces for their study repositories, and ask for actions to
//! run on a backend. The job server submits each job request to the controller (gRPC
//! `SubmitJob`), follows its jobs through the controller's `WatchJobs` stream, and shows their
//! state live. Airlock, inside a backend, signs researchers in with single-use tokens and
//! uploads released files through `ReleaseService`.
//!
//! # Layout
//! - [`run`] (here): binds nothing, serves on the listeners it is given until shutdown.
//! - [`config`]: the TOML file and its environment overrides.
//! - [`model`]: domain types; [`roles`]: roles and permissions (A2); [`status`]: the
//!   create-result mapping (A5) and status aggregation (A6); [`access`]: permission checks.
//! - [`store`]: sled, versioned records; the only module that sees sled.
//! - [`controller_link`]: the handle over the generated `RapService` client; [`watch`]: the
//!   task consuming `WatchJobs` with a persisted cursor.
//! - [`web`]: axum routes and askama pages, one module per area.
//! - [`rpc`] holds `jobserver.v1.ReleaseService`.
//! - [`zip_stream`]: a release's files as a zip, streamed while read.
//! - [`git`]: the study repository through the `git` command; [`accounts`]: passwords and
//!   Airlock login tokens; [`admin`]: the operator's commands.
//!
//! # Invariants
//! - Pages read our store only; controller news arrives through `watch`, never by polling.
//! - Secrets (passwords, session ids, backend and login tokens) are stored only as hashes.
//! - Private pages answer 404 to users without permission, as the reference does.
//! - Only `controller_link` and `watch` see `rap.v1` types; only `rpc` sees `jobserver.v1`.

pub mod access;
pub mod accounts;
pub mod admin;
pub mod config;
pub mod controller_link;
pub mod git;
pub mod model;
pub mod roles;
pub mod rpc;
pub mod status;
pub mod store;
pub mod watch;
pub mod web;
pub mod zip_stream;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch as watch_channel};

use crate::config::Config;
use crate::controller_link::ControllerLink;
use crate::store::Store;

/// The bound sockets `run` serves on.
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("opening the store: {0}")]
    Store(#[from] store::StoreError),
    #[error("controller link: {0}")]
    Link(#[from] controller_link::LinkError),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, RunError> {
    std::fs::read(path).map_err(|source| RunError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The state the web app shares, built from a config (tests build their own).
///
/// # Errors
/// When the controller URL, token or CA is unusable.
pub fn app_state(
    config: &Config,
    store: Store,
    shutdown: watch_channel::Receiver<bool>,
) -> Result<web::AppState, RunError> {
    let link = ControllerLink::new(
        &config.controller_url,
        &config.controller_token,
        config.controller_ca.as_deref(),
    )?;
    let (events, _) = broadcast::channel(256);
    Ok(web::AppState {
        store,
        link,
        config: Arc::new(web::WebConfig {
            base_url: config.base_url.clone(),
            jaeger_url: config.jaeger_url.clone(),
            secure_cookies: config.secure_cookies,
            allow_file_repos: config.allow_file_repos,
            release_storage: config.release_storage(),
        }),
        events,
        shutdown,
    })
}

/// Serves the web app and the ReleaseService on `listeners` and runs the watch task, until
/// `shutdown` completes; then stops accepting, ends event streams, and waits for all three.
///
/// # Errors
/// A store that cannot be opened, an unusable controller setting or TLS file, or a server
/// failure.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let store = Store::open(&config.store_dir())?;
    let (stop_tx, stop_rx) = watch_channel::channel(false);
    let state = app_state(&config, store.clone(), stop_rx.clone())?;

    let release_api = rpc::release::ReleaseApi {
        store: store.clone(),
        release_storage: config.release_storage(),
        base_url: config.base_url.clone(),
        size_limit: config.release_file_size_limit,
    };
    let mut grpc = tonic::transport::Server::builder();
    if let (Some(cert), Some(key)) = (&config.grpc_tls_cert, &config.grpc_tls_key) {
        let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        grpc = grpc.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let grpc = grpc.add_service(
        rap_proto::pb::jobserver::v1::release_service_server::ReleaseServiceServer::new(
            release_api,
        ),
    );

    let stopped = |mut rx: watch_channel::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let grpc_task = tokio::spawn(grpc.serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listeners.grpc),
        stopped(stop_rx.clone()),
    ));
    let watch_task = tokio::spawn(watch::run(
        state.link.clone(),
        store.clone(),
        state.events.clone(),
        stopped(stop_rx.clone()),
    ));
    let http_task = tokio::spawn(
        axum::serve(listeners.http, web::app(state))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let (grpc_result, watch_result, http_result) = tokio::join!(grpc_task, watch_task, http_task);
    if let Err(error) = watch_result {
        tracing::error!("watch task: {error}");
    }
    match grpc_result {
        Ok(result) => result?,
        Err(error) => tracing::error!("gRPC task: {error}"),
    }
    match http_result {
        Ok(result) => result.map_err(RunError::Http)?,
        Err(error) => tracing::error!("HTTP task: {error}"),
    }
    store.flush().await?;
    Ok(())
}
