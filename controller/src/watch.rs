//! The live side of `WatchJobs`: a hub that fans job changes out to watchers, each through its
//! own bounded channel.
//!
//! Changes are staged in cursor order as they are committed (under the store's write lock) and
//! released only after a flush that began after them, so watchers see only durable changes, in
//! strictly increasing cursor order, even when several backends write at once.
//!
//! A watcher first subscribes (so nothing committed from then on is missed), then replays the
//! change log from its cursor, then forwards live changes newer than the last replayed cursor.
//! A watcher whose channel is full is dropped from the hub: its stream ends with an error telling
//! it where to resume, and the scheduler never waits for a slow client.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::{Change, Store, StoreError};

/// How many live changes a watcher may fall behind before it is cut off.
pub const WATCH_BUFFER: usize = 4096;

/// Changes replayed from the store per read.
const REPLAY_PAGE: usize = 512;

struct Subscriber {
    backends: HashSet<String>,
    tx: mpsc::Sender<Change>,
}

/// The fan-out point for committed job changes.
#[derive(Clone, Default)]
pub struct WatchHub {
    // Std mutexes: held only to move values and `try_send`, never across an `.await`.
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
    staged: Arc<Mutex<Vec<Change>>>,
    closed: Arc<AtomicBool>,
}

/// Why a watch stream ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("watch stream fell behind; resume after cursor {last_cursor}")]
    FellBehind { last_cursor: u64 },
    /// The watcher's cursor is older than the change log keeps.
    #[error(
        "cursor {after} is older than the change log keeps (changes through cursor {compacted_through} were removed): resync with GetJobStatus, then watch after cursor {compacted_through}"
    )]
    Compacted { after: u64, compacted_through: u64 },
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for WatchError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::ChangesCompacted {
                after,
                compacted_through,
            } => WatchError::Compacted {
                after,
                compacted_through,
            },
            other => WatchError::Store(other),
        }
    }
}

/// Keep the change log to `retention`: every `retention / 10` (at least a second, at most an
/// hour) note the last cursor and remove the changes older than `retention`, until `stop` turns
/// true. Watchers with an older cursor are then told to resync ([`WatchError::Compacted`]).
pub async fn compact_change_log(
    store: Arc<Store>,
    retention: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let period = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let store = store.clone();
        let compacted = tokio::task::spawn_blocking(move || {
            let now_s = crate::backend::core::now_s();
            store.mark_changes(now_s)?;
            let retention_s = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
            store.compact_changes(now_s.saturating_sub(retention_s))
        })
        .await;
        match compacted {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "change log compacted"),
            Ok(Err(error)) => tracing::error!(%error, "change log compaction failed"),
            Err(error) => tracing::error!(%error, "change log compaction task failed"),
        }
    }
}

impl WatchHub {
    /// End every watch stream (at shutdown); streams end cleanly, without an error.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// Stage committed (not yet durable) changes; call under the store's write lock.
    pub fn stage(&self, changes: &[Change]) {
        self.staged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(changes);
    }

    /// Publish every staged change up to `cursor`: call after a flush that began after the
    /// change with that cursor was committed (a flush makes everything written before it
    /// durable, whoever wrote it).
    pub fn release(&self, cursor: u64) {
        // The staged lock is held while publishing, so two releases cannot interleave and
        // every watcher receives changes in cursor order.
        let mut staged = self
            .staged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let n = staged.partition_point(|change| change.cursor <= cursor);
        let ready: Vec<Change> = staged.drain(..n).collect();
        self.publish(&ready);
    }

    /// Send changes to every watcher of their backend.
    fn publish(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        subscribers.retain(|subscriber| {
            for change in changes {
                if !subscriber.backends.contains(&change.job.backend) {
                    continue;
                }
                if subscriber.tx.try_send(change.clone()).is_err() {
                    // Full or closed: cut this watcher off rather than wait for it.
                    return false;
                }
            }
            true
        });
    }

    /// Watch the given backends from `after_cursor`: replayed history, then live changes.
    /// The returned receiver yields changes in strictly increasing cursor order.
    pub fn watch(
        &self,
        store: Arc<Store>,
        backends: HashSet<String>,
        after_cursor: u64,
    ) -> mpsc::Receiver<Result<Change, WatchError>> {
        let (live_tx, mut live_rx) = mpsc::channel(WATCH_BUFFER);
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Subscriber {
                backends: backends.clone(),
                tx: live_tx,
            });
        let (out_tx, out_rx) = mpsc::channel(256);
        let closed = self.closed.clone();
        // The forwarder ends when the client goes (a send fails) or the hub drops it.
        tokio::spawn(async move {
            let mut last = after_cursor;
            loop {
                let page = match store.changes_after(last, REPLAY_PAGE) {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = out_tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let done = page.len() < REPLAY_PAGE;
                for change in page {
                    last = change.cursor;
                    if backends.contains(&change.job.backend)
                        && out_tx.send(Ok(change)).await.is_err()
                    {
                        return;
                    }
                }
                if done {
                    break;
                }
            }
            while let Some(change) = live_rx.recv().await {
                if change.cursor <= last {
                    continue;
                }
                last = change.cursor;
                if out_tx.send(Ok(change)).await.is_err() {
                    return;
                }
            }
            if !closed.load(Ordering::SeqCst) {
                let _ = out_tx
                    .send(Err(WatchError::FellBehind { last_cursor: last }))
                    .await;
            }
        });
        out_rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::create::{
        CreateOutcome, RequestRules, SubmitFields, create_jobs, validate_request,
    };
    use crate::jobs::project::{Project, ProjectAction};
    use crate::store::WriteBatch;

    fn job(rap_id: &str, backend: &str) -> crate::jobs::Job {
        let rules = RequestRules {
            backends: vec![backend.into()],
            allowed_github_orgs: vec![],
            allow_local_repos: true,
            projects_with_event_level_access: vec![],
        };
        let request = validate_request(
            SubmitFields {
                rap_id: rap_id.into(),
                backend: backend.into(),
                workspace: "ws".into(),
                repo_url: "/r".into(),
                branch: "main".into(),
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                database_name: "default".into(),
                requested_actions: vec!["a".into()],
                ..Default::default()
            },
            &rules,
        )
        .unwrap();
        let project = Project {
            actions: vec![ProjectAction {
                name: "a".into(),
                needs: vec![],
                run_command: "python:v2 a.py".into(),
                requires_db: false,
                outputs: vec![],
                action_repo: None,
            }],
        };
        match create_jobs(&request, &project, &Default::default(), &rules, 0).unwrap() {
            CreateOutcome::Created(mut jobs) => jobs.remove(0),
            other => panic!("{other:?}"),
        }
    }

    fn write(store: &Store, hub: &WatchHub, rap_id: &str, backend: &str) -> u64 {
        let batch = WriteBatch {
            jobs: vec![job(rap_id, backend)],
            ..Default::default()
        };
        store
            .write_then(&batch, &mut |changes| hub.stage(changes))
            .unwrap()[0]
            .cursor
    }

    async fn next(rx: &mut mpsc::Receiver<Result<Change, WatchError>>) -> Change {
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn replays_then_follows_only_durable_changes_of_visible_backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let hub = WatchHub::default();
        let first = write(&store, &hub, "aaaaaaaaaaaaaaaa", "test");
        write(&store, &hub, "bbbbbbbbbbbbbbbb", "tpp");
        hub.release(store.last_cursor());

        let mut rx = hub.watch(store.clone(), ["test".to_string()].into(), 0);
        assert_eq!(next(&mut rx).await.cursor, first);
        // Resuming after a cursor skips what was seen.
        let mut resumed = hub.watch(store.clone(), ["test".to_string()].into(), first);

        let live = write(&store, &hub, "cccccccccccccccc", "test");
        // Staged but not released: not yet visible.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv())
                .await
                .is_err()
        );
        hub.release(live);
        assert_eq!(next(&mut rx).await.cursor, live);
        assert_eq!(next(&mut resumed).await.cursor, live);
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_cut_off_with_its_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let hub = WatchHub::default();
        let mut rx = hub.watch(store.clone(), ["test".to_string()].into(), 0);
        // Read one live change, so the watcher has finished replaying and follows live.
        let first = write(&store, &hub, "zzzzzzzzzzzzzzzz", "test");
        hub.release(first);
        assert_eq!(next(&mut rx).await.cursor, first);
        // Now nobody reads `rx`: the live buffer and the output channel fill up.
        let mut last = 0;
        for i in 0..(WATCH_BUFFER + 400) {
            last = write(&store, &hub, &format!("{i:016}"), "test");
            hub.release(last);
        }
        let mut seen = 0u64;
        let end = loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
            {
                Some(Ok(change)) => seen = change.cursor,
                Some(Err(error)) => break error,
                None => panic!("stream ended without saying why"),
            }
        };
        match end {
            WatchError::FellBehind { last_cursor } => assert_eq!(last_cursor, seen),
            other => panic!("{other}"),
        }
        assert!(seen < last, "the slow watcher did not get everything");
        // The scheduler side never blocked: every write above returned.
    }
}
