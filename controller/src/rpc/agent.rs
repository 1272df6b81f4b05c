//! `AgentService.Connect`: the agent link (spec §1.3), over mutual TLS. The backend comes from
//! the client certificate (checked by `rap_proto::identity::require_agent` before this runs).
//!
//! Per connection, one task moves messages both ways and holds no state: tasks from the
//! backend's actor go out as they come; each update goes to the actor, and is acknowledged only
//! after the actor reports it durable. A stream that ends unregisters the connection.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use rap_proto::pb::rap::v1 as pb;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::rap::async_stream;
use crate::backend::{BackendError, BackendHandle};

/// The agent service.
#[derive(Clone)]
pub struct AgentService {
    pub backends: Arc<BTreeMap<String, BackendHandle>>,
}

type ConnectStream = Pin<Box<dyn Stream<Item = Result<pb::ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentService {
    type ConnectStream = ConnectStream;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let backend = rap_proto::identity::authenticated_backend(&request)?.clone();
        let Some(handle) = self.backends.get(backend.as_str()).cloned() else {
            return Err(Status::permission_denied(format!(
                "Backend '{backend}' not found"
            )));
        };
        let mut inbound = request.into_inner();
        let agent_id = match inbound.message().await? {
            Some(pb::AgentMessage {
                message: Some(pb::agent_message::Message::Hello(hello)),
            }) => {
                if hello.agent_id.is_empty() {
                    "default".to_string()
                } else {
                    hello.agent_id
                }
            }
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        let (connection, mut tasks) = handle
            .connect(&agent_id)
            .await
            .map_err(super::status_from_backend_error)?;
        let stream = async_stream(move |tx| async move {
            loop {
                tokio::select! {
                    command = tasks.recv() => {
                        // None: the actor dropped this connection (replaced or too slow).
                        let Some(command) = command else { break };
                        if tx.send(Ok(convert::agent_command(command))).await.is_err() {
                            break;
                        }
                    }
                    message = inbound.message() => {
                        let update = match message {
                            Ok(Some(pb::AgentMessage {
                                message: Some(pb::agent_message::Message::Update(update)),
                            })) => update,
                            Ok(Some(_)) => continue,
                            Ok(None) | Err(_) => break,
                        };
                        let (task_id, update_id) = (update.task_id.clone(), update.update_id);
                        match handle.update(&agent_id, convert::task_update(update)).await {
                            Ok(()) => {}
                            // Nothing to apply: acknowledge so the agent stops resending.
                            Err(BackendError::UnknownTask(_)) => {
                                tracing::warn!(%task_id, %agent_id, "update for an unknown task");
                            }
                            Err(error) => {
                                let _ = tx.send(Err(super::status_from_backend_error(error))).await;
                                break;
                            }
                        }
                        if tx.send(Ok(convert::ack(task_id, update_id))).await.is_err() {
                            break;
                        }
                    }
                }
            }
            handle.disconnect(connection).await;
        });
        Ok(Response::new(stream))
    }
}
