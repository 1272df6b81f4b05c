//! Preparing a job directory (spec §4.3): the code at the job's commit, checked out with the
//! `git` CLI from a bare cache per repository, and the job's inputs copied from the
//! high-privacy workspace. Also the agent's security re-check of the repository (spec §7.2 #26):
//! the repository must be allowed and the study commit must be on the study branch.
//!
//! Checkouts never touch the cache's `HEAD` or index: each uses its own index file in the temp
//! directory, so jobs of the same repository can be prepared at once. Fetches into one cache are
//! serialised by a per-cache lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::process::Command;

/// Which repositories jobs may come from.
#[derive(Clone, Debug)]
pub struct RepoPolicy {
    /// GitHub organisations whose repositories are allowed (`https://github.com/<org>/<repo>`).
    pub allowed_github_orgs: Vec<String>,
    /// Whether absolute local paths and `file://` URLs are allowed (development and tests).
    pub allow_local_repos: bool,
}

/// Why preparation of the code failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    /// The repository is not in an allowed organisation (or is local where that is not allowed).
    #[error("repository {url} is not allowed on this backend")]
    RepoNotAllowed {
        /// The URL as given.
        url: String,
    },
    /// The commit is not on the study branch.
    #[error("commit {commit} is not on branch {branch} of {url}")]
    CommitNotOnBranch {
        /// The commit.
        commit: String,
        /// The branch.
        branch: String,
        /// The repository.
        url: String,
    },
    /// The commit could not be fetched or checked out.
    #[error("Could not checkout commit {commit} from {url}")]
    Checkout {
        /// The commit.
        commit: String,
        /// The repository.
        url: String,
        /// What git said.
        detail: String,
    },
    /// `git` could not be run at all.
    #[error("running git: {0}")]
    GitUnavailable(std::io::Error),
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The bare repository caches, one per repository URL.
#[derive(Debug)]
pub struct GitCache {
    repos_dir: PathBuf,
    temp_dir: PathBuf,
    policy: RepoPolicy,
    /// One lock per cache directory: fetches into one bare repository must not overlap.
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl GitCache {
    /// A cache keeping bare repositories in `repos_dir` and index files in `temp_dir`.
    pub fn new(repos_dir: PathBuf, temp_dir: PathBuf, policy: RepoPolicy) -> GitCache {
        GitCache {
            repos_dir,
            temp_dir,
            policy,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a repository URL against the policy.
    ///
    /// # Errors
    /// [`WorkspaceError::RepoNotAllowed`].
    pub fn check_repo(&self, url: &str) -> Result<(), WorkspaceError> {
        let not_allowed = || WorkspaceError::RepoNotAllowed {
            url: url.to_owned(),
        };
        if let Some(rest) = url.strip_prefix("https://github.com/") {
            let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
            let valid_part = |part: &str| {
                !part.is_empty()
                    && !part.starts_with('.')
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            };
            if parts.len() == 2
                && parts.iter().all(|part| valid_part(part))
                && self
                    .policy
                    .allowed_github_orgs
                    .iter()
                    .any(|org| org.eq_ignore_ascii_case(parts[0]))
            {
                return Ok(());
            }
            return Err(not_allowed());
        }
        let local = url.strip_prefix("file://").unwrap_or(url);
        if self.policy.allow_local_repos && local.starts_with('/') && !local.contains("/../") {
            return Ok(());
        }
        Err(not_allowed())
    }

    /// The bare cache directory of a repository: a readable name plus a hash of the URL.
    fn cache_dir(&self, url: &str) -> PathBuf {
        let readable: String = url
            .rsplit('/')
            .next()
            .unwrap_or("repo")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let hash = hex::encode(&Sha256::digest(url.as_bytes())[..8]);
        self.repos_dir.join(format!("{readable}-{hash}.git"))
    }

    fn lock_for(&self, dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
        // A poisoned lock only means another thread panicked while inserting; the map is fine.
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(dir.to_owned()).or_default().clone()
    }

    /// Makes sure the cache of `url` holds `commit` (fetching if needed) and returns the cache.
    async fn ensure_commit(&self, url: &str, commit: &str) -> Result<PathBuf, WorkspaceError> {
        self.check_repo(url)?;
        let dir = self.cache_dir(url);
        let lock = self.lock_for(&dir);
        let _guard = lock.lock().await;
        if !dir.join("HEAD").exists() {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|source| WorkspaceError::Io {
                    path: dir.clone(),
                    source,
                })?;
            git(&dir, &["init", "--bare", "--quiet"]).await?;
        }
        let object = format!("{commit}^{{commit}}");
        if git(&dir, &["cat-file", "-e", &object]).await.is_ok() {
            return Ok(dir);
        }
        // By id first (cheap); servers that refuse unadvertised ids get a fetch of all heads.
        let by_id = git(&dir, &["fetch", "--quiet", "--no-tags", url, commit]).await;
        if by_id.is_err() {
            let _ = git(
                &dir,
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    url,
                    "+refs/heads/*:refs/remotes/origin/*",
                ],
            )
            .await;
        }
        match git(&dir, &["cat-file", "-e", &object]).await {
            Ok(_) => Ok(dir),
            Err(error) => Err(WorkspaceError::Checkout {
                commit: commit.to_owned(),
                url: url.to_owned(),
                detail: error.to_string(),
            }),
        }
    }

    /// Checks that `commit` is on `branch` of `url` (fetching the branch).
    ///
    /// # Errors
    /// [`WorkspaceError::CommitNotOnBranch`], or the repository is not allowed or unreachable.
    pub async fn check_commit_on_branch(
        &self,
        url: &str,
        commit: &str,
        branch: &str,
    ) -> Result<(), WorkspaceError> {
        let not_on_branch = || WorkspaceError::CommitNotOnBranch {
            commit: commit.to_owned(),
            branch: branch.to_owned(),
            url: url.to_owned(),
        };
        let valid_branch = !branch.is_empty()
            && !branch.starts_with('-')
            && !branch.contains("..")
            && branch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        if !valid_branch {
            return Err(not_on_branch());
        }
        let dir = self.ensure_commit(url, commit).await?;
        let lock = self.lock_for(&dir);
        let _guard = lock.lock().await;
        let local_ref = format!("refs/rap-branches/{branch}");
        git(
            &dir,
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                url,
                &format!("+refs/heads/{branch}:{local_ref}"),
            ],
        )
        .await
        .map_err(|_| not_on_branch())?;
        git(&dir, &["merge-base", "--is-ancestor", commit, &local_ref])
            .await
            .map_err(|_| not_on_branch())?;
        Ok(())
    }

    /// Checks out `commit` of `url` into `destination` (no `.git` directory is created).
    ///
    /// # Errors
    /// [`WorkspaceError::Checkout`] if the commit cannot be fetched or written out.
    pub async fn checkout(
        &self,
        url: &str,
        commit: &str,
        destination: &Path,
    ) -> Result<(), WorkspaceError> {
        let dir = self.ensure_commit(url, commit).await?;
        tokio::fs::create_dir_all(&self.temp_dir)
            .await
            .map_err(|source| WorkspaceError::Io {
                path: self.temp_dir.clone(),
                source,
            })?;
        let index = tempfile::Builder::new()
            .prefix("index-")
            .tempfile_in(&self.temp_dir)
            .map_err(|source| WorkspaceError::Io {
                path: self.temp_dir.clone(),
                source,
            })?;
        // git wants to create the index itself.
        let index_path = index.path().to_owned();
        drop(index);
        let checkout_error = |detail: String| WorkspaceError::Checkout {
            commit: commit.to_owned(),
            url: url.to_owned(),
            detail,
        };
        let work_tree = destination.to_string_lossy().into_owned();
        let result = async {
            git_with_index(&dir, &index_path, &work_tree, &["read-tree", commit]).await?;
            git_with_index(
                &dir,
                &index_path,
                &work_tree,
                &["checkout-index", "--all", "--force"],
            )
            .await
        }
        .await;
        let _ = tokio::fs::remove_file(&index_path).await;
        result
            .map(|_| ())
            .map_err(|error| checkout_error(error.to_string()))
    }

    /// Reads one file at a commit (for `project.yaml`), `None` on any git failure.
    pub async fn read_file(&self, url: &str, commit: &str, path: &str) -> Option<Vec<u8>> {
        let dir = self.ensure_commit(url, commit).await.ok()?;
        git(&dir, &["show", &format!("{commit}:{path}")]).await.ok()
    }
}

/// Runs `git --git-dir <dir> <args>`, returning stdout.
async fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, WorkspaceError> {
    run_git(dir, None, args).await
}

async fn git_with_index(
    dir: &Path,
    index: &Path,
    work_tree: &str,
    args: &[&str],
) -> Result<Vec<u8>, WorkspaceError> {
    let mut full = vec!["--work-tree", work_tree];
    full.extend_from_slice(args);
    run_git(dir, Some(index), &full).await
}

async fn run_git(
    dir: &Path,
    index: Option<&Path>,
    args: &[&str],
) -> Result<Vec<u8>, WorkspaceError> {
    let mut command = Command::new("git");
    command
        .arg("--git-dir")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(index) = index {
        command.env("GIT_INDEX_FILE", index);
    }
    let output = command
        .output()
        .await
        .map_err(WorkspaceError::GitUnavailable)?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(WorkspaceError::Checkout {
        commit: String::new(),
        url: String::new(),
        detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_cache(allow_local: bool) -> GitCache {
        GitCache::new(
            PathBuf::from("/nonexistent/repos"),
            PathBuf::from("/nonexistent/temp"),
            RepoPolicy {
                allowed_github_orgs: vec!["opensafely".into(), "opensafely-actions".into()],
                allow_local_repos: allow_local,
            },
        )
    }

    #[test]
    fn repositories_outside_allowed_orgs_are_refused() {
        let cache = new_cache(false);
        assert!(
            cache
                .check_repo("https://github.com/opensafely/study")
                .is_ok()
        );
        assert!(
            cache
                .check_repo("https://github.com/opensafely-actions/cohort-joiner")
                .is_ok()
        );
        for bad in [
            "https://github.com/evil/study",
            "https://github.com/opensafely/study/../../evil/x",
            "https://gitlab.com/opensafely/study",
            "http://github.com/opensafely/study",
            "/srv/repos/study",
            "file:///srv/repos/study",
        ] {
            assert!(cache.check_repo(bad).is_err(), "{bad}");
        }
        let local = new_cache(true);
        assert!(local.check_repo("/srv/repos/study").is_ok());
        assert!(local.check_repo("file:///srv/repos/study").is_ok());
        assert!(local.check_repo("relative/path").is_err());
    }
}
