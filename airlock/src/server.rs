//! Running Airlock: [`run`] takes a bound listener and a shutdown future (mini-redis style),
//! opens the store, starts the uploader and serves the web app, over TLS (rustls) when a
//! certificate is configured and plain HTTP otherwise (local use and tests).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::checks::CheckConfig;
use crate::config::Config;
use crate::jobserver::JobServer;
use crate::store::Store;
use crate::upload::{self, UploadConfig};
use crate::web::{self, AppState, WebConfig};
use crate::workspace::Workspaces;

/// Why Airlock could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Link(#[from] crate::jobserver::LinkError),
    #[error("TLS: {0}")]
    Tls(#[from] rap_proto::tls::TlsConfigError),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

fn read(path: &Path) -> Result<String, ServeError> {
    std::fs::read_to_string(path).map_err(|source| ServeError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Builds the app state from the configuration (also used by tests that drive the router
/// without a socket).
///
/// # Errors
/// The store cannot be opened or the job-server link is misconfigured.
pub fn state_from_config(config: &Config) -> Result<AppState, ServeError> {
    let store = Arc::new(Store::open(&config.data_dir)?);
    let tls = match &config.jobserver_ca {
        Some(ca) => Some(rap_proto::tls::tls_client_from_pem(&read(ca)?)?),
        None => None,
    };
    let mut link =
        JobServer::connect_lazy(&config.jobserver_endpoint, tls, &config.jobserver_token)?;
    if let Some(repo) = config.output_checking_repo() {
        link = link.with_output_checking_repo(repo);
    }
    Ok(AppState {
        store,
        workspaces: Workspaces::new(&config.medium_privacy_dir.join("workspaces")),
        link,
        uploader: Arc::new(Notify::new()),
        csv_indexes: Arc::default(),
        config: Arc::new(WebConfig {
            secure_cookies: config.secure_cookies,
            authz_timeout_secs: config.authz_timeout_secs as i64,
            session_age_secs: config.session_age_secs as i64,
            csv_page_size: config.csv_page_size.max(1),
            checks: CheckConfig {
                small_count_max: config.small_count_max,
                max_rows: config.max_csv_check_rows,
            },
        }),
    })
}

/// Serves until `shutdown` resolves, then stops the uploader and waits for it.
///
/// # Errors
/// Start-up failures (store, TLS, link) or a fatal accept error.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = state_from_config(&config)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let upload_config = UploadConfig {
        retry_base: Duration::from_secs(config.upload_retry_base_secs),
        retry_cap: Duration::from_secs(config.upload_retry_cap_secs),
        poll_interval: Duration::from_secs(config.upload_poll_secs.max(1)),
    };
    let mut uploader_stop = stop_rx.clone();
    let uploader = tokio::spawn(upload::run_uploader(
        Arc::clone(&state.store),
        state.link.clone(),
        upload_config,
        Arc::clone(&state.uploader),
        async move {
            let _ = uploader_stop.wait_for(|stopped| *stopped).await;
        },
    ));
    let store = Arc::clone(&state.store);
    let app = web::app(state);
    let result = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let mut tls = rap_proto::tls::rustls_tls_server_config(&read(cert)?, &read(key)?)?;
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            serve_tls(listener, app, Arc::new(tls), shutdown).await
        }
        _ => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Io),
    };
    let _ = stop_tx.send(true);
    let _ = uploader.await;
    store.flush().await?;
    result
}

async fn serve_tls(
    listener: TcpListener,
    app: axum::Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Accept errors (e.g. too many open files) are transient: back off briefly.
                tracing::warn!(%error, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        connections.spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            let served = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended");
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    // In-flight requests are short page loads; stop them rather than wait indefinitely.
    connections.shutdown().await;
    Ok(())
}
