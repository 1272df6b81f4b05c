//! Reading study and action repositories with the `git` command (spec §3.5 steps 1–2 and 8).
//!
//! Each repository has a bare cache under the configured directory; commits are fetched into it
//! from the repository URL, or through a proxy that replaces the `https://github.com` prefix.
//! Fetches into one cache are serialised. Every git call runs through `tokio::process`, so the
//! async threads never block on git.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio::sync::Mutex;

/// Where caches live and how URLs are reached.
#[derive(Clone, Debug)]
pub struct GitConfig {
    /// The directory holding one bare cache per repository.
    pub cache_dir: PathBuf,
    /// Replaces `https://github.com` in fetch URLs (an allow-listing proxy), if set.
    pub proxy_prefix: Option<String>,
}

/// A git failure, with the reference's texts for those users see.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    #[error("Error fetching commit {commit} from {url}")]
    FetchCommit { commit: String, url: String },
    #[error("Could not find branch '{branch}'")]
    BranchNotFound { branch: String },
    #[error("Could not find commit on branch '{branch}': {commit}")]
    CommitNotOnBranch { branch: String, commit: String },
    #[error("could not find a repo at {url}")]
    RepoNotFound { url: String },
    /// The git command itself could not run (not installed, disk full): an operator problem.
    #[error("git failed: {0}")]
    Command(String),
}

/// How long a verified "commit is on branch" answer is reused. Commits rarely leave a branch
/// (only by force-push), and a job server submits many requests for one commit.
const BRANCH_CHECK_TTL: Duration = Duration::from_secs(60);

/// Entries kept in each in-memory cache before it is emptied.
const CACHE_ENTRIES: usize = 4096;

type FileKey = (String, String, String);

/// The git reader: cheap to clone, shares its per-repository locks and caches.
#[derive(Clone)]
pub struct Git {
    config: Arc<GitConfig>,
    locks: Arc<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>>,
    // Std mutexes: held only to read or insert, never across an `.await`.
    /// File contents by (url, commit, path): a commit's content never changes.
    files: Arc<StdMutex<HashMap<FileKey, Option<String>>>>,
    /// When (url, branch, commit) was last verified.
    branch_checks: Arc<StdMutex<HashMap<FileKey, Instant>>>,
}

fn cache_insert<V>(cache: &StdMutex<HashMap<FileKey, V>>, key: FileKey, value: V) {
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CACHE_ENTRIES {
        cache.clear();
    }
    cache.insert(key, value);
}

struct Output {
    success: bool,
    stdout: String,
}

impl Git {
    pub fn new(config: GitConfig) -> Git {
        Git {
            config: Arc::new(config),
            locks: Arc::new(Mutex::new(HashMap::new())),
            files: Arc::new(StdMutex::new(HashMap::new())),
            branch_checks: Arc::new(StdMutex::new(HashMap::new())),
        }
    }

    /// The text of `path` at `commit`, or `None` when the commit has no such file.
    ///
    /// # Errors
    /// The commit cannot be fetched.
    pub async fn read_file(
        &self,
        url: &str,
        commit: &str,
        path: &str,
    ) -> Result<Option<String>, GitError> {
        let key = (url.to_string(), commit.to_string(), path.to_string());
        if let Some(text) = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(text.clone());
        }
        let cache = self.ensure_commit(url, commit).await?;
        let out = run(Some(&cache), &["show", &format!("{commit}:{path}")]).await?;
        let text = out.success.then_some(out.stdout);
        cache_insert(&self.files, key, text.clone());
        Ok(text)
    }

    /// Check that `commit` is the head of `branch` or one of its ancestors (this blocks commits
    /// from pull requests and forks).
    ///
    /// # Errors
    /// The branch does not exist, or the commit is not on it.
    pub async fn check_commit_on_branch(
        &self,
        url: &str,
        branch: &str,
        commit: &str,
    ) -> Result<(), GitError> {
        let key = (url.to_string(), branch.to_string(), commit.to_string());
        let verified = self
            .branch_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .is_some_and(|at| at.elapsed() < BRANCH_CHECK_TTL);
        if verified {
            return Ok(());
        }
        self.check_commit_on_branch_uncached(url, branch, commit)
            .await?;
        cache_insert(&self.branch_checks, key, Instant::now());
        Ok(())
    }

    async fn check_commit_on_branch_uncached(
        &self,
        url: &str,
        branch: &str,
        commit: &str,
    ) -> Result<(), GitError> {
        let Some(head) = self.ls_remote(url, &format!("refs/heads/{branch}")).await? else {
            return Err(GitError::BranchNotFound {
                branch: branch.into(),
            });
        };
        if head == commit {
            return Ok(());
        }
        let cache = self.ensure_commit(url, &head).await?;
        let has_commit = run(
            Some(&cache),
            &["cat-file", "-e", &format!("{commit}^{{commit}}")],
        )
        .await?
        .success;
        if has_commit {
            let out = run(
                Some(&cache),
                &["merge-base", "--is-ancestor", commit, &head],
            )
            .await?;
            if out.success {
                return Ok(());
            }
        }
        Err(GitError::CommitNotOnBranch {
            branch: branch.into(),
            commit: commit.into(),
        })
    }

    /// The commit a ref points to (peeled for annotated tags), `None` if the ref does not exist.
    ///
    /// # Errors
    /// The repository cannot be reached.
    pub async fn ls_remote(&self, url: &str, reference: &str) -> Result<Option<String>, GitError> {
        let fetch_url = self.fetch_url(url);
        let out = run(
            None,
            &[
                "ls-remote",
                &fetch_url,
                reference,
                &format!("{reference}^{{}}"),
            ],
        )
        .await?;
        if !out.success {
            return Err(GitError::RepoNotFound { url: url.into() });
        }
        let mut plain = None;
        let mut peeled = None;
        for line in out.stdout.lines() {
            let mut parts = line.split_whitespace();
            let (Some(sha), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            if name.ends_with("^{}") {
                peeled = Some(sha.to_string());
            } else if name == reference {
                plain = Some(sha.to_string());
            }
        }
        Ok(peeled.or(plain))
    }

    /// Is `commit` the head of `branch` or an ancestor of it? Like
    /// [`Git::check_commit_on_branch`] but as a yes/no answer.
    ///
    /// # Errors
    /// The repository cannot be reached.
    pub async fn is_on_branch(
        &self,
        url: &str,
        branch: &str,
        commit: &str,
    ) -> Result<bool, GitError> {
        match self.check_commit_on_branch(url, branch, commit).await {
            Ok(()) => Ok(true),
            Err(GitError::BranchNotFound { .. } | GitError::CommitNotOnBranch { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn fetch_url(&self, url: &str) -> String {
        match (
            &self.config.proxy_prefix,
            url.strip_prefix("https://github.com"),
        ) {
            (Some(prefix), Some(rest)) => format!("{}{rest}", prefix.trim_end_matches('/')),
            _ => url.to_string(),
        }
    }

    fn cache_path(&self, url: &str) -> PathBuf {
        let name: String = url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("repo")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let digest = hex::encode(&Sha256::digest(url.as_bytes())[..6]);
        self.config.cache_dir.join(format!("{name}-{digest}.git"))
    }

    /// Make sure `commit` is in the repository's cache; returns the cache path.
    async fn ensure_commit(&self, url: &str, commit: &str) -> Result<PathBuf, GitError> {
        let cache = self.cache_path(url);
        let lock = {
            let mut locks = self.locks.lock().await;
            locks.entry(cache.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if !cache.exists() {
            tokio::fs::create_dir_all(&self.config.cache_dir)
                .await
                .map_err(|e| GitError::Command(format!("creating the git cache: {e}")))?;
            let path = cache.to_string_lossy().into_owned();
            let out = run(None, &["init", "--bare", "--quiet", &path]).await?;
            if !out.success {
                return Err(GitError::Command(format!("git init {path} failed")));
            }
        }
        let spec = format!("{commit}^{{commit}}");
        if run(Some(&cache), &["cat-file", "-e", &spec]).await?.success {
            return Ok(cache);
        }
        let fetch_url = self.fetch_url(url);
        // Fetch the commit itself first (cheap; GitHub allows it), else every branch and tag.
        let direct = run(
            Some(&cache),
            &["fetch", "--quiet", "--no-tags", &fetch_url, commit],
        )
        .await?;
        let fetched =
            direct.success && run(Some(&cache), &["cat-file", "-e", &spec]).await?.success;
        if !fetched {
            run(
                Some(&cache),
                &[
                    "fetch",
                    "--quiet",
                    &fetch_url,
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
            )
            .await?;
        }
        if !run(Some(&cache), &["cat-file", "-e", &spec]).await?.success {
            return Err(GitError::FetchCommit {
                commit: commit.into(),
                url: url.into(),
            });
        }
        Ok(cache)
    }
}

async fn run(dir: Option<&Path>, args: &[&str]) -> Result<Output, GitError> {
    let mut command = Command::new("git");
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = command
        .output()
        .await
        .map_err(|e| GitError::Command(format!("running git: {e}")))?;
    if !out.status.success() {
        tracing::debug!(
            ?args,
            stderr = %String::from_utf8_lossy(&out.stderr),
            "git command failed"
        );
    }
    Ok(Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real repository with `main` and a side branch; returns (dir, main head, side commit).
    pub(crate) async fn make_repo(files: &[(&str, &str)]) -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        let git = |args: Vec<&str>| {
            let path = path.to_path_buf();
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            async move {
                let out = Command::new("git")
                    .arg("-C")
                    .arg(&path)
                    .args(&args)
                    .env("GIT_AUTHOR_NAME", "t")
                    .env("GIT_AUTHOR_EMAIL", "t@example.com")
                    .env("GIT_COMMITTER_NAME", "t")
                    .env("GIT_COMMITTER_EMAIL", "t@example.com")
                    .output()
                    .await
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout).unwrap().trim().to_string()
            }
        };
        git(vec!["init", "--quiet", "--initial-branch", "main"]).await;
        for (name, text) in files {
            std::fs::write(path.join(name), text).unwrap();
        }
        std::fs::write(path.join("README"), "study").unwrap();
        git(vec!["add", "."]).await;
        git(vec!["commit", "--quiet", "-m", "first"]).await;
        git(vec!["checkout", "--quiet", "-b", "side"]).await;
        std::fs::write(path.join("side.txt"), "side").unwrap();
        git(vec!["add", "."]).await;
        git(vec!["commit", "--quiet", "-m", "side"]).await;
        let side = git(vec!["rev-parse", "HEAD"]).await;
        git(vec!["checkout", "--quiet", "main"]).await;
        std::fs::write(path.join("more.txt"), "more").unwrap();
        git(vec!["add", "."]).await;
        git(vec!["commit", "--quiet", "-m", "second"]).await;
        let head = git(vec!["rev-parse", "HEAD"]).await;
        (dir, head, side)
    }

    #[tokio::test]
    async fn reads_files_and_checks_branches_against_a_real_repo() {
        let (repo, head, side) = make_repo(&[("project.yaml", "version: '4.0'\n")]).await;
        let cache = tempfile::tempdir().unwrap();
        let git = Git::new(GitConfig {
            cache_dir: cache.path().to_path_buf(),
            proxy_prefix: None,
        });
        let url = repo.path().to_string_lossy().into_owned();

        let text = git.read_file(&url, &head, "project.yaml").await.unwrap();
        assert_eq!(text.as_deref(), Some("version: '4.0'\n"));
        assert_eq!(
            git.read_file(&url, &head, "missing.yaml").await.unwrap(),
            None
        );

        git.check_commit_on_branch(&url, "main", &head)
            .await
            .unwrap();
        let parent = run(Some(repo.path()), &["rev-parse", "HEAD~1"])
            .await
            .unwrap();
        git.check_commit_on_branch(&url, "main", parent.stdout.trim())
            .await
            .unwrap();
        assert_eq!(
            git.check_commit_on_branch(&url, "main", &side)
                .await
                .unwrap_err()
                .to_string(),
            format!("Could not find commit on branch 'main': {side}")
        );
        assert_eq!(
            git.check_commit_on_branch(&url, "nope", &head)
                .await
                .unwrap_err()
                .to_string(),
            "Could not find branch 'nope'"
        );
        let missing = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            git.read_file(&url, missing, "project.yaml")
                .await
                .unwrap_err()
                .to_string(),
            format!("Error fetching commit {missing} from {url}")
        );
        assert_eq!(
            git.ls_remote("/nonexistent/repo", "refs/heads/main")
                .await
                .unwrap_err(),
            GitError::RepoNotFound {
                url: "/nonexistent/repo".into()
            }
        );
    }

    #[test]
    fn proxy_prefix_replaces_github() {
        let git = Git::new(GitConfig {
            cache_dir: PathBuf::from("/tmp"),
            proxy_prefix: Some("https://proxy.example/".into()),
        });
        assert_eq!(
            git.fetch_url("https://github.com/opensafely/study"),
            "https://proxy.example/opensafely/study"
        );
        assert_eq!(git.fetch_url("/local/repo"), "/local/repo");
    }
}
