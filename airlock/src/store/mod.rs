//! Airlock's own storage (spec B1): release requests (one aggregate record each), the
//! append-only audit log, sessions, and the copies of request files.
//!
//! Only this module sees sled. Trees: `requests` (id → [`records::RequestRecord`]),
//! `audit` (`<request id or ~workspace>/` + big-endian sequence → [`records::AuditRecord`]),
//! `sessions` (session token → [`SessionRecord`]). A request change and its audit events
//! are written in one sled transaction. Request files live at
//! `<data>/requests/<workspace>/<request id>/<sha256>`, written through a temporary file and
//! renamed, so a reviewed file never changes even if the workspace copy does.

pub mod records;

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::audit::AuditEvent;
use crate::request::workflow::{Outcome, RequestError};
use crate::request::{ReleaseRequest, RequestId};
use records::{AuditRecord, CorruptRecord, RequestRecord};

#[cfg(test)]
mod tests;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store record: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    #[error("copying {path}: {source}")]
    Copy { path: PathBuf, source: io::Error },
    #[error("file {path} changed: sha256 {actual} is not the manifest's {expected}")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("store lock poisoned")]
    Poisoned,
}

/// Why an update of a request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("request {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A signed-in session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub version: u32,
    pub username: String,
    /// The Level 4 user JSON as the job server last described it.
    pub user_json: String,
    pub csrf_token: String,
    /// UNIX seconds of the last Authenticate/Authorise.
    pub last_refresh: i64,
    /// UNIX seconds after which the session is gone (sliding).
    pub expires_at: i64,
    /// A one-shot message shown on the next page.
    #[serde(default)]
    pub flash: Option<String>,
}

/// The store handle. Cheap to share behind an `Arc`.
pub struct Store {
    db: sled::Db,
    requests: sled::Tree,
    audit: sled::Tree,
    sessions: sled::Tree,
    files_dir: PathBuf,
    /// Serialises read-modify-write of request records. A std mutex: it is never held across
    /// an `.await` (sled calls are synchronous).
    lock: Mutex<()>,
}

impl Store {
    /// Opens (or creates) the store under `data_dir`.
    ///
    /// # Errors
    /// sled cannot open the database.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let db_path = data_dir.join("db");
        let db = sled::open(&db_path).map_err(|source| StoreError::Open {
            path: db_path.clone(),
            source,
        })?;
        Ok(Store {
            requests: db.open_tree("requests")?,
            audit: db.open_tree("audit")?,
            sessions: db.open_tree("sessions")?,
            db,
            files_dir: data_dir.join("requests"),
            lock: Mutex::new(()),
        })
    }

    /// Waits until everything written is on disk.
    ///
    /// # Errors
    /// sled's flush failed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// One request.
    ///
    /// # Errors
    /// Storage or a corrupt record.
    pub fn get(&self, id: &RequestId) -> Result<Option<ReleaseRequest>, StoreError> {
        let Some(bytes) = self.requests.get(id.as_str())? else {
            return Ok(None);
        };
        let record: RequestRecord = serde_json::from_slice(&bytes)?;
        Ok(Some(record.into_domain()?))
    }

    /// Every request, oldest first (ids are time-ordered ULIDs).
    ///
    /// # Errors
    /// Storage or a corrupt record.
    pub fn list(&self) -> Result<Vec<ReleaseRequest>, StoreError> {
        let mut requests = Vec::new();
        for item in self.requests.iter() {
            let (_, bytes) = item?;
            let record: RequestRecord = serde_json::from_slice(&bytes)?;
            requests.push(record.into_domain()?);
        }
        Ok(requests)
    }

    /// The author's active request for a workspace (at most one exists, B4).
    ///
    /// # Errors
    /// Storage or a corrupt record.
    pub fn current_request(
        &self,
        workspace: &str,
        author: &str,
    ) -> Result<Option<ReleaseRequest>, StoreError> {
        Ok(self.list()?.into_iter().find(|request| {
            request.workspace == workspace && request.author == author && request.status.is_active()
        }))
    }

    /// Gets the author's active request for the workspace or creates one with `create`,
    /// atomically (so two concurrent first adds cannot make two requests).
    ///
    /// # Errors
    /// `create` refused, or storage.
    pub fn get_or_create_current(
        &self,
        workspace: &str,
        author: &str,
        create: impl FnOnce() -> Result<(ReleaseRequest, Outcome), RequestError>,
    ) -> Result<ReleaseRequest, UpdateError> {
        let _guard = self.lock.lock().map_err(|_| StoreError::Poisoned)?;
        if let Some(request) = self.current_request(workspace, author)? {
            return Ok(request);
        }
        let (request, outcome) = create()?;
        self.save(&request, &outcome)?;
        Ok(request)
    }

    /// Applies `operation` to a copy of the request and saves the result with its audit
    /// events; on error nothing is written.
    ///
    /// # Errors
    /// Unknown request, the operation's refusal, or storage.
    pub fn update(
        &self,
        id: &RequestId,
        operation: impl FnOnce(&mut ReleaseRequest) -> Result<Outcome, RequestError>,
    ) -> Result<(ReleaseRequest, ReleaseRequest, Outcome), UpdateError> {
        let _guard = self.lock.lock().map_err(|_| StoreError::Poisoned)?;
        let Some(before) = self.get(id)? else {
            return Err(UpdateError::NotFound(id.to_string()));
        };
        let mut after = before.clone();
        let outcome = operation(&mut after)?;
        self.save(&after, &outcome)?;
        Ok((before, after, outcome))
    }

    fn save(&self, request: &ReleaseRequest, outcome: &Outcome) -> Result<(), StoreError> {
        let record = serde_json::to_vec(&RequestRecord::from_domain(request))?;
        let id = request.id.to_string();
        let prefix = format!("{id}/");
        // Early return hides the turn's earlier events: find them before the transaction.
        let mut to_hide = Vec::new();
        if let Some(turn) = outcome.hide_turn {
            for item in self.audit.scan_prefix(prefix.as_bytes()) {
                let (key, bytes) = item?;
                let AuditRecord::V1(mut stored) = serde_json::from_slice(&bytes)?;
                if stored.review_turn == turn && !stored.hidden {
                    stored.hidden = true;
                    to_hide.push((key, serde_json::to_vec(&AuditRecord::V1(stored))?));
                }
            }
        }
        let mut new_events = Vec::new();
        for event in &outcome.events {
            new_events.push(serde_json::to_vec(&AuditRecord::from_domain(event))?);
        }
        let result: Result<(), TransactionError<()>> =
            (&self.requests, &self.audit).transaction(|(requests, audit)| {
                requests.insert(id.as_bytes(), record.as_slice())?;
                for (key, bytes) in &to_hide {
                    audit.insert(key, bytes.as_slice())?;
                }
                for bytes in &new_events {
                    let seq = audit.generate_id()?;
                    let mut key = prefix.as_bytes().to_vec();
                    key.extend_from_slice(&seq.to_be_bytes());
                    audit.insert(key, bytes.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(error)) => Err(StoreError::Sled(error)),
            Err(TransactionError::Abort(())) => Err(StoreError::Poisoned),
        }
    }

    /// Appends a read-only event (a file view) outside any request change.
    ///
    /// # Errors
    /// Storage.
    pub fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let prefix = match &event.request {
            Some(id) => format!("{id}/"),
            None => format!("~{}/", event.workspace),
        };
        let seq = self.db.generate_id()?;
        let mut key = prefix.into_bytes();
        key.extend_from_slice(&seq.to_be_bytes());
        self.audit
            .insert(key, serde_json::to_vec(&AuditRecord::from_domain(event))?)?;
        Ok(())
    }

    /// A request's audit log, oldest first (hidden events included; filter for display).
    ///
    /// # Errors
    /// Storage or a corrupt record.
    pub fn audit_for(&self, id: &RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        let prefix = format!("{id}/");
        let mut events = Vec::new();
        for item in self.audit.scan_prefix(prefix.as_bytes()) {
            let (_, bytes) = item?;
            let record: AuditRecord = serde_json::from_slice(&bytes)?;
            events.push(record.into_domain()?);
        }
        Ok(events)
    }

    /// Content hashes of files released from a workspace by any request.
    ///
    /// # Errors
    /// Storage or a corrupt record.
    pub fn released_hashes(&self, workspace: &str) -> Result<HashSet<String>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|request| request.workspace == workspace)
            .flat_map(|request| request.files.into_values())
            .filter(|file| file.released_at.is_some())
            .map(|file| file.file_id)
            .collect())
    }

    /// Where a request file's stored copy lives.
    pub fn file_path(&self, request: &ReleaseRequest, file_id: &str) -> PathBuf {
        self.files_dir
            .join(&request.workspace)
            .join(request.id.as_str())
            .join(file_id)
    }

    /// Copies `source` into the request's directory, content-addressed: copy to a temporary
    /// file while hashing, check the digest against the manifest's, rename to the digest.
    /// Blocking: call from `spawn_blocking`.
    ///
    /// # Errors
    /// IO, or the content does not match `expected_sha256`.
    pub fn copy_in(
        &self,
        workspace: &str,
        id: &RequestId,
        source: &Path,
        expected_sha256: &str,
    ) -> Result<(String, u64), StoreError> {
        let dir = self.files_dir.join(workspace).join(id.as_str());
        let io_error = |source_error: io::Error| StoreError::Copy {
            path: source.to_path_buf(),
            source: source_error,
        };
        std::fs::create_dir_all(&dir).map_err(io_error)?;
        let mut input = std::fs::File::open(source).map_err(io_error)?;
        let mut temp = tempfile::NamedTempFile::new_in(&dir).map_err(io_error)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buffer).map_err(io_error)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            temp.write_all(&buffer[..n]).map_err(io_error)?;
            size += n as u64;
        }
        let digest = hex::encode(hasher.finalize());
        if !expected_sha256.is_empty() && digest != expected_sha256 {
            return Err(StoreError::HashMismatch {
                path: source.to_path_buf(),
                expected: expected_sha256.to_string(),
                actual: digest,
            });
        }
        temp.as_file().sync_all().map_err(io_error)?;
        temp.persist(dir.join(&digest))
            .map_err(|error| io_error(error.error))?;
        Ok((digest, size))
    }

    /// A session by token.
    ///
    /// # Errors
    /// Storage or a corrupt record.
    pub fn session(&self, token: &str) -> Result<Option<SessionRecord>, StoreError> {
        let Some(bytes) = self.sessions.get(token)? else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_slice(&bytes)?))
    }

    /// Saves a session.
    ///
    /// # Errors
    /// Storage.
    pub fn put_session(&self, token: &str, session: &SessionRecord) -> Result<(), StoreError> {
        self.sessions.insert(token, serde_json::to_vec(session)?)?;
        Ok(())
    }

    /// Removes a session (sign out).
    ///
    /// # Errors
    /// Storage.
    pub fn delete_session(&self, token: &str) -> Result<(), StoreError> {
        self.sessions.remove(token)?;
        Ok(())
    }
}
