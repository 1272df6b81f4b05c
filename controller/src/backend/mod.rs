//! One actor per backend: the single writer of that backend's jobs, tasks and flags.
//!
//! Callers hold a [`BackendHandle`] (a cloneable wrapper around the actor's bounded mailbox).
//! The actor wakes on a message (a new request, a cancel, an agent update or connection, an
//! operator command), on its periodic safety pass, or when a flush ends. It drains what is
//! queued, applies each message as its own atomic store write and runs one scheduling pass
//! (spec §3.4). Replies, agent acknowledgements, watch changes and task pushes wait for a flush
//! that began after the writes: persist, then reply. One flush runs at a time and covers every
//! batch applied while the previous one ran (group commit), so the actor keeps applying
//! messages while the disk works.
//!
//! The shell is a tokio task with an mpsc mailbox rather than actix: see controller/README.md.
//! The decisions live in [`core`], which the tests drive with a temporary store.

pub mod core;
mod spans;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::{BackendConfig, Config};
use crate::jobs::RapId;
use crate::jobs::create::JobRequest;
use crate::jobs::project::Project;
use crate::store::{Store, StoreError};
use crate::tasks::{Task, TaskUpdate};
use crate::watch::WatchHub;

pub use self::core::{
    AgentCommand, BackendError, CancelOutcome, Core, Effects, SubmitOutcome, TaskSummary,
};

/// Messages queued before the actor applies back-pressure to callers.
const MAILBOX: usize = 1024;

/// Messages applied per wake-up before one pass and one flush.
const BATCH: usize = 512;

/// What a reply carries: the domain result of the request.
type Reply<T> = oneshot::Sender<Result<T, BackendError>>;

enum Message {
    Submit {
        request: Box<JobRequest>,
        project: Project,
        reply: Reply<SubmitOutcome>,
    },
    Cancel {
        rap_id: RapId,
        actions: Vec<String>,
        reply: Reply<CancelOutcome>,
    },
    Update {
        agent_id: String,
        update: Box<TaskUpdate>,
        reply: Reply<()>,
    },
    Connect {
        agent_id: String,
        reply: Reply<(u64, mpsc::Receiver<AgentCommand>)>,
    },
    Disconnect {
        connection: u64,
    },
    SetPaused {
        paused: bool,
        reply: Reply<String>,
    },
    SetDbMaintenance {
        on: bool,
        reply: Reply<String>,
    },
    PrepareForReboot {
        reply: Reply<String>,
    },
    KillTask {
        task_id: String,
        reply: Reply<String>,
    },
    ListTasks {
        include_inactive: bool,
        reply: Reply<Vec<TaskSummary>>,
    },
}

/// The handle other code holds to talk to a backend's actor.
#[derive(Clone)]
pub struct BackendHandle {
    name: Arc<str>,
    tx: mpsc::Sender<Message>,
}

impl BackendHandle {
    /// Start the actor; it stops when every handle is dropped (or `shutdown` fires), after
    /// finishing the batch in hand.
    ///
    /// # Errors
    /// The backend's state cannot be read from the store.
    pub fn spawn(
        config: &Config,
        backend: &BackendConfig,
        store: Arc<Store>,
        hub: WatchHub,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(BackendHandle, tokio::task::JoinHandle<()>), StoreError> {
        let core = Core::new(config, backend, store.clone(), hub)?;
        let (tx, rx) = mpsc::channel(MAILBOX);
        let interval = Duration::from_millis(config.scheduler_interval_ms.max(10));
        let join = tokio::spawn(run(core, store, rx, interval, shutdown));
        Ok((
            BackendHandle {
                name: backend.name.as_str().into(),
                tx,
            },
            join,
        ))
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Message) -> Result<T, BackendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| BackendError::Stopped)?;
        rx.await.map_err(|_| BackendError::Stopped)?
    }

    /// Create the jobs of a validated request whose project has been read (§3.5 steps 4–10).
    ///
    /// # Errors
    /// [`BackendError`]: inconsistent data, creation rules, storage.
    pub async fn submit(
        &self,
        request: JobRequest,
        project: Project,
    ) -> Result<SubmitOutcome, BackendError> {
        self.ask(|reply| Message::Submit {
            request: Box::new(request),
            project,
            reply,
        })
        .await
    }

    /// Mark the named actions of a request cancelled (§2.4); the scheduler does the rest.
    ///
    /// # Errors
    /// [`BackendError::JobsNotFound`] and friends.
    pub async fn cancel(
        &self,
        rap_id: RapId,
        actions: Vec<String>,
    ) -> Result<CancelOutcome, BackendError> {
        self.ask(|reply| Message::Cancel {
            rap_id,
            actions,
            reply,
        })
        .await
    }

    /// Apply an agent's update; returns once it is durable (then the agent may be acked).
    ///
    /// # Errors
    /// [`BackendError::UnknownTask`] for a task not of this backend.
    pub async fn update(&self, agent_id: &str, update: TaskUpdate) -> Result<(), BackendError> {
        self.ask(|reply| Message::Update {
            agent_id: agent_id.to_string(),
            update: Box::new(update),
            reply,
        })
        .await
    }

    /// Register an agent connection: returns its id and the stream of tasks for it, starting
    /// with every active task leased to it. A second connection of the same agent replaces the
    /// first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn connect(
        &self,
        agent_id: &str,
    ) -> Result<(u64, mpsc::Receiver<AgentCommand>), BackendError> {
        self.ask(|reply| Message::Connect {
            agent_id: agent_id.to_string(),
            reply,
        })
        .await
    }

    /// Forget a connection (its stream ended).
    pub async fn disconnect(&self, connection: u64) {
        let _ = self.tx.send(Message::Disconnect { connection }).await;
    }

    /// Pause or unpause the backend (§3.9).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn set_paused(&self, paused: bool) -> Result<String, BackendError> {
        self.ask(|reply| Message::SetPaused { paused, reply }).await
    }

    /// Manual database maintenance on or off (§3.9).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn set_db_maintenance(&self, on: bool) -> Result<String, BackendError> {
        self.ask(|reply| Message::SetDbMaintenance { on, reply })
            .await
    }

    /// Pause, and send running jobs back to pending with their tasks cancelled (§3.9).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn prepare_for_reboot(&self) -> Result<String, BackendError> {
        self.ask(|reply| Message::PrepareForReboot { reply }).await
    }

    /// Deactivate a task and fail its job with KILLED_BY_ADMIN.
    ///
    /// # Errors
    /// [`BackendError::UnknownTask`].
    pub async fn kill_task(&self, task_id: &str) -> Result<String, BackendError> {
        self.ask(|reply| Message::KillTask {
            task_id: task_id.to_string(),
            reply,
        })
        .await
    }

    /// The backend's tasks, for operators.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list_tasks(
        &self,
        include_inactive: bool,
    ) -> Result<Vec<TaskSummary>, BackendError> {
        self.ask(|reply| Message::ListTasks {
            include_inactive,
            reply,
        })
        .await
    }
}

/// A reply to send once the batch is durable.
type Deferred = Box<dyn FnOnce(Option<&BackendError>) + Send>;

fn defer<T: Send + 'static>(reply: Reply<T>, result: Result<T, BackendError>) -> Deferred {
    Box::new(move |flush_error| {
        let result = match flush_error {
            // Nothing is acknowledged unless it is durable.
            Some(error) => Err(error.clone()),
            None => result,
        };
        let _ = reply.send(result);
    })
}

/// What applied messages are owed once a flush covers them: replies and effects.
#[derive(Default)]
struct Owed {
    replies: Vec<Deferred>,
    effects: Effects,
}

impl Owed {
    fn is_empty(&self) -> bool {
        self.replies.is_empty() && self.effects.is_empty()
    }
}

type Flush = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// Starts a flush covering every write made before this call: the future is lazy, so sled's
/// flush begins at its first poll, after all of them.
fn start_flush(store: &Arc<Store>) -> Flush {
    let store = store.clone();
    Box::pin(async move { store.flush().await })
}

/// The actor loop, with group commit: while one flush is in progress, messages keep being
/// applied and their replies and effects wait; when the flush ends, what it covered is
/// answered and performed, and one flush starts for everything that waited. So concurrent
/// requests share a flush, and the actor never idles on the disk while messages are queued.
async fn run(
    mut core: Core,
    store: Arc<Store>,
    mut rx: mpsc::Receiver<Message>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flushing: Option<(Flush, Owed)> = None;
    let mut waiting = Owed::default();
    loop {
        if flushing.is_none() && !waiting.is_empty() {
            flushing = Some((start_flush(&store), std::mem::take(&mut waiting)));
        }
        let mut messages = Vec::new();
        tokio::select! {
            result = async { flushing.as_mut().map(|(flush, _)| flush.as_mut()).expect("guarded").await },
                if flushing.is_some() =>
            {
                let (_, owed) = flushing.take().expect("guarded");
                settle(&mut core, owed, result, &mut waiting);
                continue;
            }
            message = rx.recv() => match message {
                Some(message) => messages.push(message),
                None => break,
            },
            _ = ticker.tick() => core.want_full_pass(),
            _ = shutdown.changed() => break,
        }
        while messages.len() < BATCH {
            match rx.try_recv() {
                Ok(message) => messages.push(message),
                Err(_) => break,
            }
        }
        for message in messages {
            waiting.replies.push(apply(&mut core, message));
        }
        if let Err(error) = core.pass() {
            tracing::error!(backend = core.name(), %error, "scheduling pass failed");
        }
        waiting.effects.merge(core.take_effects());
    }
    // Stopping: answer what was applied, once it is durable.
    if let Some((flush, owed)) = flushing.take() {
        let result = flush.await;
        settle(&mut core, owed, result, &mut waiting);
    }
    if !waiting.is_empty() {
        let owed = std::mem::take(&mut waiting);
        let result = store.flush().await;
        settle(&mut core, owed, result, &mut Owed::default());
    }
}

/// A flush ended: answer the replies it covered and perform their effects. After a failed
/// flush the replies carry the error and the effects go back to wait for the next flush (the
/// writes are still applied, and the next successful flush makes them durable).
fn settle(core: &mut Core, owed: Owed, result: Result<(), StoreError>, waiting: &mut Owed) {
    let flush_error = result.err().map(BackendError::from);
    if let Some(error) = &flush_error {
        tracing::error!(backend = core.name(), %error, "flush failed");
    }
    for reply in owed.replies {
        reply(flush_error.as_ref());
    }
    if flush_error.is_some() {
        let mut effects = owed.effects;
        effects.merge(std::mem::take(&mut waiting.effects));
        waiting.effects = effects;
    } else {
        core.perform(owed.effects);
    }
}

fn apply(core: &mut Core, message: Message) -> Deferred {
    match message {
        Message::Submit {
            request,
            project,
            reply,
        } => defer(reply, core.submit(&request, &project)),
        Message::Cancel {
            rap_id,
            actions,
            reply,
        } => defer(reply, core.cancel(&rap_id, &actions)),
        Message::Update {
            agent_id,
            update,
            reply,
        } => defer(reply, core.update(&agent_id, &update)),
        Message::Connect { agent_id, reply } => defer(reply, core.connect(&agent_id)),
        Message::Disconnect { connection } => {
            core.disconnect(connection);
            Box::new(|_| {})
        }
        Message::SetPaused { paused, reply } => defer(reply, core.set_paused(paused)),
        Message::SetDbMaintenance { on, reply } => defer(reply, core.set_db_maintenance(on)),
        Message::PrepareForReboot { reply } => defer(reply, core.prepare_for_reboot()),
        Message::KillTask { task_id, reply } => defer(reply, core.kill_task(&task_id)),
        Message::ListTasks {
            include_inactive,
            reply,
        } => defer(reply, core.list_tasks(include_inactive)),
    }
}

/// Keep `Task` in the public vocabulary of this module for agent streams.
pub type AgentTask = Task;
