//! The durable outbox of task updates: every update a runner produces is written to disk before
//! it is sent, and removed only when the controller acknowledges it, so neither a dropped
//! connection nor an agent restart loses one. After a reconnect (or a restart) everything still
//! here is resent, oldest first; the controller treats a repeated `update_id` as applied.
//!
//! `update_id`s are UNIX nanoseconds at creation, forced strictly increasing within the process
//! and starting above every id on disk, so they increase per task across restarts too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prost::Message;
use rap_proto::pb::rap::v1 as pb;
use tokio::sync::mpsc;

use crate::clock;
use crate::outputs;

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The file system refused.
    #[error("outbox {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] outputs::OutputsError),
    /// A blocking task could not finish.
    #[error("outbox task failed: {0}")]
    Blocking(String),
}

#[derive(Debug)]
struct Inner {
    last_id: u64,
    /// (update_id, task_id) → the update, in send order.
    pending: BTreeMap<(u64, String), pb::TaskUpdate>,
}

/// The outbox. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Tells the connection that a new update is waiting (bounded; the disk is the queue).
    notify: mpsc::Sender<pb::TaskUpdate>,
}

fn file_name(update: &pb::TaskUpdate) -> String {
    format!(
        "{:020}-{}.pb",
        update.update_id,
        hex::encode(update.task_id.as_bytes())
    )
}

impl Outbox {
    /// Opens (creating) the outbox in `dir`, loading what an earlier run left. Returns the
    /// receiver on which new updates are announced.
    ///
    /// # Errors
    /// The directory cannot be created or read.
    pub fn open(dir: &Path) -> Result<(Outbox, mpsc::Receiver<pb::TaskUpdate>), OutboxError> {
        let io = |source| OutboxError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut pending = BTreeMap::new();
        let mut last_id = 0;
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().and_then(|ext| ext.to_str()) != Some("pb") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            match pb::TaskUpdate::decode(bytes.as_slice()) {
                Ok(update) => {
                    last_id = last_id.max(update.update_id);
                    pending.insert((update.update_id, update.task_id.clone()), update);
                }
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "dropping an unreadable outbox entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let (notify, receiver) = mpsc::channel(256);
        Ok((
            Outbox {
                dir: dir.to_owned(),
                inner: Mutex::new(Inner { last_id, pending }),
                notify,
            },
            receiver,
        ))
    }

    /// Gives the update its id, writes it to disk (synced), then announces it.
    ///
    /// # Errors
    /// The write fails; the update is then not queued.
    pub async fn push(&self, mut update: pb::TaskUpdate) -> Result<pb::TaskUpdate, OutboxError> {
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let now = u64::try_from(clock::now_ns()).unwrap_or(0);
            inner.last_id = now.max(inner.last_id + 1);
            update.update_id = inner.last_id;
        }
        let path = self.dir.join(file_name(&update));
        let bytes = update.encode_to_vec();
        tokio::task::spawn_blocking(move || outputs::atomic_write(&path, &bytes))
            .await
            .map_err(|error| OutboxError::Blocking(error.to_string()))??;
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .insert((update.update_id, update.task_id.clone()), update.clone());
        // If the connection is behind, it will resend from `pending` anyway.
        let _ = self.notify.try_send(update.clone());
        Ok(update)
    }

    /// Forgets an acknowledged update.
    pub fn ack(&self, task_id: &str, update_id: u64) {
        let removed = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .remove(&(update_id, task_id.to_owned()));
        if let Some(update) = removed {
            let _ = std::fs::remove_file(self.dir.join(file_name(&update)));
        }
    }

    /// Every unacknowledged update, oldest first.
    pub fn pending(&self) -> Vec<pb::TaskUpdate> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(task: &str) -> pb::TaskUpdate {
        pb::TaskUpdate {
            task_id: task.into(),
            stage: pb::ExecutorState::Preparing as i32,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn updates_survive_a_restart_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, mut announced) = Outbox::open(dir.path()).unwrap();
        let first = outbox.push(update("t1")).await.unwrap();
        let second = outbox.push(update("t1")).await.unwrap();
        assert!(second.update_id > first.update_id);
        assert_eq!(announced.recv().await.unwrap().update_id, first.update_id);
        outbox.ack("t1", first.update_id);
        drop(outbox);

        let (reopened, _announced) = Outbox::open(dir.path()).unwrap();
        let pending = reopened.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].update_id, second.update_id);
        let third = reopened.push(update("t1")).await.unwrap();
        assert!(third.update_id > second.update_id, "ids keep increasing");
        // An acknowledgement for another task does not remove this one.
        reopened.ack("t2", second.update_id);
        assert_eq!(reopened.pending().len(), 2);
    }
}
