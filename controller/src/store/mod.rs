//! Persistence: jobs, tasks, flags, their indexes, and the change log behind `WatchJobs`. The
//! only module that sees sled.
//!
//! Trees (keys are bytes; `\0` separates parts):
//! - `jobs`: job id → job record; `by_rap`: rap id `\0` job id;
//! - `by_workspace`: backend `\0` workspace `\0` action `\0` created_at (8 bytes BE) `\0` job id;
//! - `latest`: backend `\0` workspace `\0` action → id of its latest non-cancelled job;
//! - `active_jobs`: backend `\0` job id, for pending and running jobs;
//! - `tasks`: task id → task record; `active_tasks`: backend `\0` task id;
//! - `flags`: backend `\0` flag id → flag record;
//! - `changes`: cursor (8 bytes BE) → job record as it was written (the change log);
//! - `change_marks`: UNIX seconds (8 bytes BE) → the last cursor written by then, so compaction
//!   can tell which changes are older than the retention window;
//! - `meta`: `schema_version`, `changes_compacted_through` (the highest cursor compaction
//!   removed).
//!
//! Invariants: every [`Store::write`] is one sled transaction over all trees, so a job, its
//! indexes, its tasks and its change-log entry change together or not at all. Writes are
//! serialised by one lock, so change-log cursors are committed in increasing order (a watcher
//! that has seen cursor N has seen every change up to N). Durability is [`Store::flush`]: call it
//! before acknowledging anything. Compaction records how far it removed changes before removing
//! any, so a reader can always tell a gap from an empty log.

mod records;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

pub use records::CorruptRecord;
use records::{FlagRecordV1, JobRecordV1, TaskRecordV1};

use crate::jobs::create::ExistingJob;
use crate::jobs::{Job, JobId};
use crate::tasks::Task;

/// The current on-disk schema version.
pub const SCHEMA_VERSION: u32 = 1;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: {0}")]
    Corrupt(#[from] CorruptRecord),
    #[error("store: cannot encode or decode a record: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("store: schema version {found} is newer than this controller's {supported}")]
    TooNew { found: u32, supported: u32 },
    /// Changes after `after` were removed from the change log by compaction.
    #[error(
        "store: the change log no longer holds the changes after cursor {after} (compacted through cursor {compacted_through})"
    )]
    ChangesCompacted { after: u64, compacted_through: u64 },
}

/// The `meta` key of the highest cursor compaction removed.
const COMPACTED_THROUGH: &str = "changes_compacted_through";

/// A flag's value and the time (UNIX seconds) the value last changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flag {
    pub value: Option<String>,
    pub timestamp: i64,
}

/// One entry of the change log.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub cursor: u64,
    pub job: Job,
}

/// Everything one state transition writes.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub jobs: Vec<Job>,
    pub tasks: Vec<Task>,
    /// (backend, flag id, flag).
    pub flags: Vec<(String, String, Flag)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.tasks.is_empty() && self.flags.is_empty()
    }
}

/// The controller's database.
pub struct Store {
    db: sled::Db,
    jobs: sled::Tree,
    by_rap: sled::Tree,
    by_workspace: sled::Tree,
    latest: sled::Tree,
    active_jobs: sled::Tree,
    tasks: sled::Tree,
    active_tasks: sled::Tree,
    flags: sled::Tree,
    changes: sled::Tree,
    change_marks: sled::Tree,
    meta: sled::Tree,
    /// The highest cursor removed by compaction (0: none).
    compacted_through: AtomicU64,
    /// The last cursor written. Held for the whole of a write, so cursors commit in order.
    /// A std mutex: it is never held across an `.await`.
    last_cursor: Mutex<u64>,
}

// Indexes of the trees in a transaction.
const T_JOBS: usize = 0;
const T_BY_RAP: usize = 1;
const T_BY_WORKSPACE: usize = 2;
const T_LATEST: usize = 3;
const T_ACTIVE_JOBS: usize = 4;
const T_TASKS: usize = 5;
const T_ACTIVE_TASKS: usize = 6;
const T_FLAGS: usize = 7;
const T_CHANGES: usize = 8;

fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
}

fn workspace_key(job: &Job) -> Vec<u8> {
    // Offset to unsigned so that byte order is time order for any i64.
    let created = (job.created_at as u64) ^ (1 << 63);
    key(&[
        job.backend.as_bytes(),
        job.workspace.as_bytes(),
        job.action.as_bytes(),
        &created.to_be_bytes(),
        job.id.as_str().as_bytes(),
    ])
}

fn latest_key(backend: &str, workspace: &str, action: &str) -> Vec<u8> {
    key(&[backend.as_bytes(), workspace.as_bytes(), action.as_bytes()])
}

fn decode_job(bytes: &[u8]) -> Result<Job, StoreError> {
    let record: JobRecordV1 = serde_json::from_slice(bytes)?;
    Ok(Job::try_from(record)?)
}

fn decode_task(bytes: &[u8]) -> Result<Task, StoreError> {
    let record: TaskRecordV1 = serde_json::from_slice(bytes)?;
    Ok(Task::try_from(record)?)
}

impl Store {
    /// Open (or create) the database in `path`, migrating older schemas.
    ///
    /// # Errors
    /// The directory cannot be opened, or holds a newer schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        // No background flusher: every acknowledged write is flushed explicitly (each actor
        // iteration ends with one flush), and without the flusher thread a closed store
        // releases its directory lock at once, so a restart can reopen it immediately.
        let db = open_db(path)?;
        let meta = db.open_tree("meta")?;
        let found = match meta.get("schema_version")? {
            Some(bytes) => {
                let mut buf = [0u8; 4];
                if bytes.len() != 4 {
                    return Err(CorruptRecord {
                        kind: "meta",
                        reason: "schema_version".into(),
                    }
                    .into());
                }
                buf.copy_from_slice(&bytes);
                u32::from_be_bytes(buf)
            }
            None => 0,
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        migrate(&db, found)?;
        meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
        let changes = db.open_tree("changes")?;
        let compacted_through = match meta.get(COMPACTED_THROUGH)? {
            Some(bytes) => cursor_from_key(&bytes),
            None => 0,
        };
        // Compaction may have emptied the log: cursors never go back below what it removed.
        let last_cursor = match changes.last()? {
            Some((k, _)) => cursor_from_key(&k),
            None => 0,
        }
        .max(compacted_through);
        Ok(Store {
            jobs: db.open_tree("jobs")?,
            by_rap: db.open_tree("by_rap")?,
            by_workspace: db.open_tree("by_workspace")?,
            latest: db.open_tree("latest")?,
            active_jobs: db.open_tree("active_jobs")?,
            tasks: db.open_tree("tasks")?,
            active_tasks: db.open_tree("active_tasks")?,
            flags: db.open_tree("flags")?,
            changes,
            change_marks: db.open_tree("change_marks")?,
            meta,
            compacted_through: AtomicU64::new(compacted_through),
            db,
            last_cursor: Mutex::new(last_cursor),
        })
    }

    /// Write a state transition atomically; returns the change-log entries of its jobs.
    /// Not durable until [`Store::flush`].
    ///
    /// # Errors
    /// A storage or encoding failure; nothing is written then.
    pub fn write(&self, batch: &WriteBatch) -> Result<Vec<Change>, StoreError> {
        self.write_then(batch, &mut |_| {})
    }

    /// [`Store::write`], calling `on_commit` with the new changes while still holding the write
    /// lock, so that callers see changes in cursor order (the watch hub stages them this way).
    ///
    /// # Errors
    /// A storage or encoding failure; nothing is written then and `on_commit` is not called.
    pub fn write_then(
        &self,
        batch: &WriteBatch,
        on_commit: &mut dyn FnMut(&[Change]),
    ) -> Result<Vec<Change>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // A poisoned lock only means another writer panicked; the cursor value is still valid.
        let mut last_cursor = self
            .last_cursor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());

        // Cancelled jobs that are the latest of their action hand "latest" to the previous
        // non-cancelled job. Found before the transaction (sled transactions cannot scan); the
        // write lock keeps this consistent.
        let mut latest_updates: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for job in &batch.jobs {
            let lkey = latest_key(&job.backend, &job.workspace, &job.action);
            let current = self.latest.get(&lkey)?;
            if job.cancelled {
                if current.as_deref() == Some(job.id.as_str().as_bytes()) {
                    let replacement = self.previous_non_cancelled(job, batch)?;
                    latest_updates.push((lkey, replacement.map(|id| id.into_bytes())));
                }
            } else {
                let newer = match &current {
                    Some(id) if id.as_ref() != job.id.as_str().as_bytes() => {
                        match self.jobs.get(id)? {
                            Some(bytes) => decode_job(&bytes)?.created_at <= job.created_at,
                            None => true,
                        }
                    }
                    _ => true,
                };
                if newer {
                    latest_updates.push((lkey, Some(job.id.as_str().as_bytes().to_vec())));
                }
            }
        }

        let mut encoded_jobs = Vec::with_capacity(batch.jobs.len());
        let mut changes = Vec::with_capacity(batch.jobs.len());
        let mut cursor = *last_cursor;
        for job in &batch.jobs {
            cursor += 1;
            encoded_jobs.push((cursor, serde_json::to_vec(&JobRecordV1::from(job))?));
            changes.push(Change {
                cursor,
                job: job.clone(),
            });
        }
        let mut encoded_tasks = Vec::with_capacity(batch.tasks.len());
        for task in &batch.tasks {
            encoded_tasks.push(serde_json::to_vec(&TaskRecordV1::from(task))?);
        }
        let mut encoded_flags = Vec::with_capacity(batch.flags.len());
        for (backend, id, flag) in &batch.flags {
            let record = FlagRecordV1 {
                value: flag.value.clone(),
                timestamp: flag.timestamp,
            };
            encoded_flags.push((
                key(&[backend.as_bytes(), id.as_bytes()]),
                serde_json::to_vec(&record)?,
            ));
        }

        let trees = [
            &self.jobs,
            &self.by_rap,
            &self.by_workspace,
            &self.latest,
            &self.active_jobs,
            &self.tasks,
            &self.active_tasks,
            &self.flags,
            &self.changes,
        ];
        let result: Result<(), TransactionError<()>> =
            trees[..].transaction(|t: &Vec<TransactionalTree>| {
                for (job, (cursor, bytes)) in batch.jobs.iter().zip(&encoded_jobs) {
                    let id = job.id.as_str().as_bytes();
                    t[T_JOBS].insert(id, bytes.as_slice())?;
                    t[T_BY_RAP].insert(key(&[job.rap_id.as_str().as_bytes(), id]), &[])?;
                    t[T_BY_WORKSPACE].insert(workspace_key(job), &[])?;
                    let active_key = key(&[job.backend.as_bytes(), id]);
                    if job.state().is_active() {
                        t[T_ACTIVE_JOBS].insert(active_key, &[])?;
                    } else {
                        t[T_ACTIVE_JOBS].remove(active_key)?;
                    }
                    t[T_CHANGES].insert(&cursor.to_be_bytes(), bytes.as_slice())?;
                }
                for (lkey, value) in &latest_updates {
                    match value {
                        Some(id) => t[T_LATEST].insert(lkey.as_slice(), id.as_slice())?,
                        None => t[T_LATEST].remove(lkey.as_slice())?,
                    };
                }
                for (task, bytes) in batch.tasks.iter().zip(&encoded_tasks) {
                    t[T_TASKS].insert(task.id.as_bytes(), bytes.as_slice())?;
                    let active_key = key(&[task.backend.as_bytes(), task.id.as_bytes()]);
                    if task.active {
                        t[T_ACTIVE_TASKS].insert(active_key, &[])?;
                    } else {
                        t[T_ACTIVE_TASKS].remove(active_key)?;
                    }
                }
                for (fkey, bytes) in &encoded_flags {
                    t[T_FLAGS].insert(fkey.as_slice(), bytes.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match result {
            Ok(()) => {}
            Err(TransactionError::Storage(e)) => return Err(e.into()),
            // Our closure never aborts.
            Err(TransactionError::Abort(())) => {}
        }
        *last_cursor = cursor;
        on_commit(&changes);
        Ok(changes)
    }

    /// Make every write so far durable.
    ///
    /// # Errors
    /// The disk write failed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// The last change-log cursor written.
    pub fn last_cursor(&self) -> u64 {
        *self
            .last_cursor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Change-log entries after `cursor`, at most `limit`.
    ///
    /// # Errors
    /// [`StoreError::ChangesCompacted`] when some of them were removed by compaction; a storage
    /// or decoding failure.
    pub fn changes_after(&self, cursor: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let start = cursor.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for entry in self.changes.range(start..).take(limit) {
            let (k, v) = entry?;
            out.push(Change {
                cursor: cursor_from_key(&k),
                job: decode_job(&v)?,
            });
        }
        // Checked after reading: compaction publishes how far it goes before removing
        // anything, so a page that lost entries to a compaction running meanwhile is refused.
        let compacted_through = self.compacted_through();
        if cursor < compacted_through {
            return Err(StoreError::ChangesCompacted {
                after: cursor,
                compacted_through,
            });
        }
        Ok(out)
    }

    /// The highest cursor removed from the change log by compaction (0: none).
    pub fn compacted_through(&self) -> u64 {
        self.compacted_through.load(Ordering::SeqCst)
    }

    /// Note the last cursor written as of `now_s` (UNIX seconds), for [`Store::compact_changes`].
    ///
    /// # Errors
    /// A storage failure.
    pub fn mark_changes(&self, now_s: i64) -> Result<(), StoreError> {
        let cursor = self.last_cursor();
        self.change_marks
            .insert(time_key(now_s), &cursor.to_be_bytes())?;
        Ok(())
    }

    /// Remove the change-log entries written before `before_s` (UNIX seconds), as far as the
    /// marks tell (entries up to the newest mark at or before that time); returns how many were
    /// removed. The new bound is made durable before anything is removed. Blocking: run it off
    /// the async threads.
    ///
    /// # Errors
    /// A storage failure.
    pub fn compact_changes(&self, before_s: i64) -> Result<usize, StoreError> {
        let Some(mark) = self.change_marks.range(..=time_key(before_s)).next_back() else {
            return Ok(0);
        };
        let (mark_key, cursor) = mark?;
        let through = cursor_from_key(&cursor);
        if through > self.compacted_through() {
            self.meta
                .insert(COMPACTED_THROUGH, &through.to_be_bytes())?;
            self.db.flush()?;
            self.compacted_through.store(through, Ordering::SeqCst);
        }
        let mut removed = 0;
        loop {
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            for entry in self.changes.range(..=through.to_be_bytes()).take(4096) {
                batch.remove(entry?.0);
                in_batch += 1;
            }
            if in_batch == 0 {
                break;
            }
            self.changes.apply_batch(batch)?;
            removed += in_batch;
        }
        for entry in self.change_marks.range(..=mark_key) {
            self.change_marks.remove(entry?.0)?;
        }
        Ok(removed)
    }

    /// One job.
    ///
    /// # Errors
    /// A storage or decoding failure.
    pub fn job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        match self.jobs.get(id.as_str())? {
            Some(bytes) => Ok(Some(decode_job(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every job of a request, in id order.
    ///
    /// # Errors
    /// A storage or decoding failure.
    pub fn jobs_for_rap(&self, rap_id: &str) -> Result<Vec<Job>, StoreError> {
        let prefix = key(&[rap_id.as_bytes(), b""]);
        let mut out = Vec::new();
        for entry in self.by_rap.scan_prefix(prefix) {
            let (k, _) = entry?;
            let id = &k[rap_id.len() + 1..];
            if let Some(bytes) = self.jobs.get(id)? {
                out.push(decode_job(&bytes)?);
            }
        }
        Ok(out)
    }

    /// The pending and running jobs of a backend.
    ///
    /// # Errors
    /// A storage or decoding failure.
    pub fn active_jobs(&self, backend: &str) -> Result<Vec<Job>, StoreError> {
        let prefix = key(&[backend.as_bytes(), b""]);
        let mut out = Vec::new();
        for entry in self.active_jobs.scan_prefix(prefix) {
            let (k, _) = entry?;
            let id = &k[backend.len() + 1..];
            if let Some(bytes) = self.jobs.get(id)? {
                out.push(decode_job(&bytes)?);
            }
        }
        Ok(out)
    }

    /// The latest non-cancelled job of each action in a backend's workspace (§3.5 step 4).
    ///
    /// # Errors
    /// A storage or decoding failure.
    pub fn workspace_state(
        &self,
        backend: &str,
        workspace: &str,
    ) -> Result<HashMap<String, Job>, StoreError> {
        let prefix = key(&[backend.as_bytes(), workspace.as_bytes(), b""]);
        let mut out = HashMap::new();
        for entry in self.latest.scan_prefix(prefix) {
            let (_, id) = entry?;
            if let Some(bytes) = self.jobs.get(&id)? {
                let job = decode_job(&bytes)?;
                out.insert(job.action.clone(), job);
            }
        }
        Ok(out)
    }

    /// [`Store::workspace_state`] reduced to what job creation needs.
    ///
    /// # Errors
    /// A storage or decoding failure.
    pub fn existing_jobs(
        &self,
        backend: &str,
        workspace: &str,
    ) -> Result<HashMap<String, ExistingJob>, StoreError> {
        Ok(self
            .workspace_state(backend, workspace)?
            .into_iter()
            .map(|(action, job)| {
                (
                    action,
                    ExistingJob {
                        state: job.state(),
                        id: job.id,
                    },
                )
            })
            .collect())
    }

    /// One task.
    ///
    /// # Errors
    /// A storage or decoding failure.
    pub fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        match self.tasks.get(id)? {
            Some(bytes) => Ok(Some(decode_task(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every task of a job (RUNJOB and CANCELJOB), in id order.
    ///
    /// # Errors
    /// A storage or decoding failure.
    pub fn tasks_for_job(&self, job_id: &JobId) -> Result<Vec<Task>, StoreError> {
        let prefix = format!("{job_id}-");
        self.tasks
            .scan_prefix(prefix)
            .map(|entry| decode_task(&entry?.1))
            .collect()
    }

    /// The active tasks of a backend.
    ///
    /// # Errors
    /// A storage or decoding failure.
    pub fn active_tasks(&self, backend: &str) -> Result<Vec<Task>, StoreError> {
        let prefix = key(&[backend.as_bytes(), b""]);
        let mut out = Vec::new();
        for entry in self.active_tasks.scan_prefix(prefix) {
            let (k, _) = entry?;
            if let Some(bytes) = self.tasks.get(&k[backend.len() + 1..])? {
                out.push(decode_task(&bytes)?);
            }
        }
        Ok(out)
    }

    /// Every task of a backend (for operators), in id order.
    ///
    /// # Errors
    /// A storage or decoding failure.
    pub fn all_tasks(&self, backend: &str) -> Result<Vec<Task>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tasks.iter() {
            let task = decode_task(&entry?.1)?;
            if task.backend == backend {
                out.push(task);
            }
        }
        Ok(out)
    }

    /// The flags of a backend.
    ///
    /// # Errors
    /// A storage or decoding failure.
    pub fn flags(&self, backend: &str) -> Result<BTreeMap<String, Flag>, StoreError> {
        let prefix = key(&[backend.as_bytes(), b""]);
        let mut out = BTreeMap::new();
        for entry in self.flags.scan_prefix(prefix) {
            let (k, v) = entry?;
            let record: FlagRecordV1 = serde_json::from_slice(&v)?;
            let id = String::from_utf8_lossy(&k[backend.len() + 1..]).into_owned();
            out.insert(
                id,
                Flag {
                    value: record.value,
                    timestamp: record.timestamp,
                },
            );
        }
        Ok(out)
    }

    /// How many jobs are stored (for operators and benches).
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// The newest non-cancelled job of `job`'s action other than the ones this batch cancels.
    fn previous_non_cancelled(
        &self,
        job: &Job,
        batch: &WriteBatch,
    ) -> Result<Option<String>, StoreError> {
        let prefix = key(&[
            job.backend.as_bytes(),
            job.workspace.as_bytes(),
            job.action.as_bytes(),
            b"",
        ]);
        for entry in self.by_workspace.scan_prefix(prefix).rev() {
            let (k, _) = entry?;
            let id = &k[k.len() - job.id.as_str().len()..];
            if batch
                .jobs
                .iter()
                .any(|b| b.cancelled && b.id.as_str().as_bytes() == id)
            {
                continue;
            }
            if let Some(bytes) = self.jobs.get(id)? {
                let other = decode_job(&bytes)?;
                if !other.cancelled {
                    return Ok(Some(other.id.to_string()));
                }
            }
        }
        Ok(None)
    }
}

/// Open sled, waiting up to two seconds for the directory lock: sled's flush helpers run on its
/// own thread pool and can hold a just-closed database for a moment, which matters when a
/// controller restarts in the same process (tests, benches). A second live controller on the
/// same directory still fails, after the wait.
fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new().path(path).flush_every_ms(None);
    let mut attempts = 0;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if attempts < 100 && e.to_string().contains("could not acquire lock") =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn time_key(unix_s: i64) -> [u8; 8] {
    // Offset to unsigned so that byte order is time order for any i64.
    ((unix_s as u64) ^ (1 << 63)).to_be_bytes()
}

fn cursor_from_key(k: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    if k.len() == 8 {
        buf.copy_from_slice(k);
    }
    u64::from_be_bytes(buf)
}

/// Bring an older schema up to [`SCHEMA_VERSION`]. Version 0 is an empty database; future
/// versions add a step here, each rewriting records in place.
fn migrate(_db: &sled::Db, from: u32) -> Result<(), StoreError> {
    if from < SCHEMA_VERSION {
        tracing::info!(from, to = SCHEMA_VERSION, "store schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
