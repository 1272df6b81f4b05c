//! The agent's one link to the controller: it dials out (the agent never listens) over mTLS with
//! its client certificate, keeps a single `AgentService.Connect` stream, says `Hello` with its
//! capacity, forwards tasks and revocations to the main loop, sends task updates from the
//! outbox, and forgets an update only when the controller acknowledges it. When the stream
//! breaks it reconnects with capped exponential backoff and jitter, and resends every
//! unacknowledged update first.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use rap_proto::pb::rap::v1 as pb;
use rap_proto::pb::rap::v1::agent_service_client::AgentServiceClient;
use rap_proto::tls::{TlsConfigError, TlsFiles};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::outbox::Outbox;

/// The first reconnect delay.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How to reach the controller and what to tell it.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// `https://host:port` of the controller's agent service.
    pub endpoint: String,
    /// CA, certificate and key of this agent.
    pub tls: TlsFiles,
    /// This agent's name within its backend.
    pub agent_id: String,
    /// Non-database jobs at once.
    pub job_capacity: u32,
    /// Database jobs at once.
    pub db_job_capacity: u32,
}

/// What the controller asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum ControllerEvent {
    /// A task to run (possibly one already running: the controller resends on connect).
    Task(Box<pb::Task>),
    /// Stop a task without reporting.
    Revoke(String),
    /// The task's lease moved to another agent: stop it and discard its work.
    LeaseMoved(String),
}

/// Why the link could not be set up at all (a broken stream is not an error: it reconnects).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The endpoint is not a valid URI.
    #[error("controller endpoint {endpoint} is not valid: {source}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// Why.
        source: tonic::transport::Error,
    },
}

/// Builds the endpoint with the agent's client certificate.
///
/// # Errors
/// The endpoint or TLS files are invalid.
pub fn endpoint(config: &ConnectionConfig) -> Result<Endpoint, ConnectionError> {
    let tls = rap_proto::tls::mtls_client(&config.tls)?;
    let invalid = |source| ConnectionError::Endpoint {
        endpoint: config.endpoint.clone(),
        source,
    };
    Endpoint::from_shared(config.endpoint.clone())
        .map_err(invalid)?
        .tls_config(tls)
        .map_err(invalid)
        .map(|endpoint| {
            endpoint
                .connect_timeout(Duration::from_secs(10))
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20))
        })
}

/// Keeps the link up until `shutdown` turns true.
///
/// # Errors
/// The configuration is unusable (checked once, before the first dial).
pub async fn run(
    config: ConnectionConfig,
    outbox: Arc<Outbox>,
    mut announced: mpsc::Receiver<pb::TaskUpdate>,
    events: mpsc::Sender<ControllerEvent>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    let endpoint = endpoint(&config)?;
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let mut established = false;
        match session(
            &config,
            &endpoint,
            &outbox,
            &mut announced,
            &events,
            &mut shutdown,
            &mut established,
        )
        .await
        {
            Ok(Session::Shutdown) => return Ok(()),
            Ok(Session::Ended) => {
                tracing::warn!("the controller closed the stream; reconnecting");
                failures = 0;
            }
            Err(error) => {
                tracing::warn!(error = %error, failures, "controller link failed");
                failures = failures_after_error(failures, established);
            }
        }
        let delay = backoff(failures);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut shutdown) => return Ok(()),
        }
    }
}

/// The failure count after a session that ended in an error. A stream that was established
/// starts the count again: a controller killed after a long healthy session is one failure,
/// not the latest of every failure since the agent started.
fn failures_after_error(failures: u32, established: bool) -> u32 {
    if established {
        0
    } else {
        failures.saturating_add(1)
    }
}

/// The reconnect delay after `failures` failures in a row: exponential, capped, with "equal
/// jitter" (half fixed, half random) so many agents do not reconnect in step.
pub fn backoff(failures: u32) -> Duration {
    let exponential = FIRST_BACKOFF.saturating_mul(1 << failures.min(16));
    let capped = exponential.min(MAX_BACKOFF);
    let half = capped / 2;
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    half + half.mul_f64((random % 1000) as f64 / 1000.0)
}

enum Session {
    Shutdown,
    Ended,
}

async fn session(
    config: &ConnectionConfig,
    endpoint: &Endpoint,
    outbox: &Outbox,
    announced: &mut mpsc::Receiver<pb::TaskUpdate>,
    events: &mpsc::Sender<ControllerEvent>,
    shutdown: &mut watch::Receiver<bool>,
    established: &mut bool,
) -> Result<Session, tonic::Status> {
    let channel: Channel = endpoint
        .connect()
        .await
        .map_err(|error| tonic::Status::unavailable(format!("connecting: {error}")))?;
    let mut client = AgentServiceClient::new(channel);
    let (sender, receiver) = mpsc::channel::<pb::AgentMessage>(64);
    let hello = pb::AgentMessage {
        message: Some(pb::agent_message::Message::Hello(pb::Hello {
            agent_id: config.agent_id.clone(),
            job_capacity: config.job_capacity,
            db_job_capacity: config.db_job_capacity,
            version: env!("CARGO_PKG_VERSION").to_string(),
        })),
    };
    // Room for one message is guaranteed: the channel is new.
    let _ = sender.try_send(hello);
    let response = client.connect(ReceiverStream::new(receiver)).await?;
    let mut inbound = response.into_inner();
    *established = true;
    tracing::info!(endpoint = %config.endpoint, "connected to the controller");

    // Everything announced so far is also in the outbox's pending list: send that list (oldest
    // first) and drop the stale announcements.
    while announced.try_recv().is_ok() {}
    for update in outbox.pending() {
        send_update(&sender, update).await?;
    }
    loop {
        tokio::select! {
            () = stopped(shutdown) => return Ok(Session::Shutdown),
            message = inbound.message() => match message? {
                None => return Ok(Session::Ended),
                Some(pb::ControllerMessage { message: Some(message) }) => match message {
                    pb::controller_message::Message::Task(task) => {
                        if events.send(ControllerEvent::Task(Box::new(task))).await.is_err() {
                            return Ok(Session::Shutdown);
                        }
                    }
                    pb::controller_message::Message::Ack(ack) => {
                        outbox.ack(&ack.task_id, ack.update_id);
                    }
                    pb::controller_message::Message::Revoke(revoke) => {
                        let event = if revoke.reason == pb::RevokeReason::LeaseMoved as i32 {
                            ControllerEvent::LeaseMoved(revoke.task_id)
                        } else {
                            ControllerEvent::Revoke(revoke.task_id)
                        };
                        if events.send(event).await.is_err() {
                            return Ok(Session::Shutdown);
                        }
                    }
                },
                Some(pb::ControllerMessage { message: None }) => {}
            },
            Some(update) = announced.recv() => send_update(&sender, update).await?,
        }
    }
}

/// Resolves when the stop signal is raised (the guard is dropped here, so callers stay `Send`).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn send_update(
    sender: &mpsc::Sender<pb::AgentMessage>,
    update: pb::TaskUpdate,
) -> Result<(), tonic::Status> {
    let message = pb::AgentMessage {
        message: Some(pb::agent_message::Message::Update(update)),
    };
    sender
        .send(message)
        .await
        .map_err(|_| tonic::Status::unavailable("the request stream closed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_established_stream_starts_the_failure_count_again() {
        assert_eq!(failures_after_error(0, false), 1);
        assert_eq!(failures_after_error(7, false), 8);
        assert_eq!(failures_after_error(7, true), 0);
        assert_eq!(failures_after_error(u32::MAX, false), u32::MAX);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for failures in 0..40 {
            let delay = backoff(failures);
            assert!(delay <= MAX_BACKOFF, "{failures}: {delay:?}");
            assert!(delay >= FIRST_BACKOFF / 2, "{failures}: {delay:?}");
        }
        assert!(backoff(20) >= MAX_BACKOFF / 2);
        assert!(backoff(0) <= FIRST_BACKOFF);
    }
}
