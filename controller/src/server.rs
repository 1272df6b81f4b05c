//! Running the controller: open the store, start one actor per backend, serve the RAP and admin
//! services (TLS, tokens) on one listener and the agent service (mutual TLS) on another, and
//! shut everything down in order when the shutdown future completes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use rap_proto::pb::rap::v1 as pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::backend::BackendHandle;
use crate::config::Config;
use crate::git::{Git, GitConfig};
use crate::requests::Controller;
use crate::rpc::admin::AdminService;
use crate::rpc::agent::AgentService;
use crate::rpc::auth::Tokens;
use crate::rpc::rap::RapService;
use crate::store::Store;
use crate::watch::WatchHub;

/// The two bound listeners.
pub struct Listeners {
    /// RAP API and admin service (TLS, bearer tokens).
    pub rap: TcpListener,
    /// Agent service (mutual TLS).
    pub agent: TcpListener,
}

impl Listeners {
    /// Bind the configured addresses.
    ///
    /// # Errors
    /// An address cannot be bound.
    pub async fn bind(config: &Config) -> Result<Listeners, ServeError> {
        let rap = TcpListener::bind(&config.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.listen.clone(),
                source,
            })?;
        let agent = TcpListener::bind(&config.agent_listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.agent_listen.clone(),
                source,
            })?;
        Ok(Listeners { rap, agent })
    }
}

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("opening the store in {path}: {source}")]
    Store {
        path: String,
        source: crate::store::StoreError,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rap_proto::tls::TlsConfigError),
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Run until `shutdown` completes: serve, then stop the servers, then the actors (each finishes
/// its batch in hand and flushes).
///
/// # Errors
/// [`ServeError`]: the store, the TLS files or the listeners cannot be used.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let db_path = config.data_dir.join("db");
    let store = Arc::new(Store::open(&db_path).map_err(|source| ServeError::Store {
        path: db_path.display().to_string(),
        source,
    })?);
    let hub = WatchHub::default();
    let git = Git::new(GitConfig {
        cache_dir: config.data_dir.join("repos"),
        proxy_prefix: config.git_proxy.clone(),
    });
    let (stop_actors, actors_stopped) = tokio::sync::watch::channel(false);
    let mut backends = BTreeMap::new();
    let mut joins = Vec::new();
    for backend in &config.backends {
        let (handle, join) = BackendHandle::spawn(
            &config,
            backend,
            store.clone(),
            hub.clone(),
            actors_stopped.clone(),
        )
        .map_err(|source| ServeError::Store {
            path: db_path.display().to_string(),
            source,
        })?;
        backends.insert(backend.name.clone(), handle);
        joins.push(join);
    }
    let compaction = (config.change_log_retention_s > 0).then(|| {
        tokio::spawn(crate::watch::compact_change_log(
            store.clone(),
            std::time::Duration::from_secs(config.change_log_retention_s),
            actors_stopped.clone(),
        ))
    });
    let config = Arc::new(config);
    let controller = Controller::new(
        config.clone(),
        store.clone(),
        git,
        hub.clone(),
        backends.clone(),
    );
    let backends = Arc::new(backends);
    let tokens = Tokens::new(
        config
            .clients
            .iter()
            .map(|c| (c.token_sha256.clone(), c.backends.clone())),
    );
    let admin_tokens = Tokens::new((!config.admin_token_sha256.is_empty()).then(|| {
        (
            config.admin_token_sha256.clone(),
            config.backends.iter().map(|b| b.name.clone()).collect(),
        )
    }));

    let rap_tls = rap_proto::tls::tls_server(&config.tls.cert, &config.tls.key)?;
    let agent_tls = rap_proto::tls::mtls_server(&rap_proto::tls::TlsFiles {
        ca: config.tls.ca.clone(),
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
    })?;

    let rap_addr = listeners.rap.local_addr().ok();
    let agent_addr = listeners.agent.local_addr().ok();

    let (stop_rap, rap_stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let rap_server = tonic::transport::Server::builder()
        .tls_config(rap_tls)?
        .add_service(pb::rap_service_server::RapServiceServer::new(RapService {
            controller,
            tokens,
        }))
        .add_service(pb::admin_service_server::AdminServiceServer::new(
            AdminService {
                backends: backends.clone(),
                tokens: admin_tokens,
            },
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listeners.rap), async {
            let _ = rap_stopped.await;
        });
    let agent_server = tonic::transport::Server::builder()
        .tls_config(agent_tls)?
        .add_service(
            pb::agent_service_server::AgentServiceServer::with_interceptor(
                AgentService {
                    backends: backends.clone(),
                },
                rap_proto::identity::require_agent,
            ),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listeners.agent), async {
            let _ = agent_stopped.await;
        });
    if let Some(addr) = rap_addr {
        // Test harnesses and operators wait for this exact line.
        println!("listening on {addr}");
    }
    if let Some(addr) = agent_addr {
        println!("agents connect to {addr}");
    }
    tracing::info!(?rap_addr, ?agent_addr, "rap-controller serving");

    let servers = async move { tokio::try_join!(rap_server, agent_server) };
    tokio::pin!(servers);
    tokio::select! {
        result = &mut servers => {
            result?;
            let _ = stop_actors.send(true);
            for join in joins {
                let _ = join.await;
            }
        }
        () = shutdown => {
            // Actors first: each finishes and flushes its batch, which also ends the agent
            // streams; then the watch streams; then the servers, which now have no open
            // streams to wait for.
            let _ = stop_actors.send(true);
            for join in joins {
                let _ = join.await;
            }
            hub.close();
            let _ = stop_rap.send(());
            let _ = stop_agent.send(());
            match tokio::time::timeout(std::time::Duration::from_secs(5), servers).await {
                Ok(result) => { result?; }
                Err(_) => tracing::warn!("servers did not stop within 5 s; exiting anyway"),
            }
        }
    }
    if let Some(compaction) = compaction {
        // Stopped with the actors; it finishes a compaction in progress first.
        let _ = compaction.await;
    }
    drop(backends);
    store.flush().await.map_err(|source| ServeError::Store {
        path: db_path.display().to_string(),
        source,
    })?;
    Ok(())
}
