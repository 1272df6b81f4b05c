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
    /// Fetch `https://github.com/...` repositories from here instead (the backend's allow-list
    /// proxy). Which repositories are allowed is still decided on the URL the task names.
    pub github_proxy: Option<String>,
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
    /// The repository could not be reached: the connection was refused or timed out, its
    /// name did not resolve, or a proxy answered with a server error. A later task may succeed.
    #[error("Could not reach repository {url}")]
    Unreachable {
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

impl WorkspaceError {
    /// Whether the failure may pass on its own (the network, a missing `git`), so a new task
    /// could succeed. A missing commit, a refused repository or one that is not a repository
    /// is permanent.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            WorkspaceError::Unreachable { .. } | WorkspaceError::GitUnavailable(_)
        )
    }
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

    /// Where `url` is fetched from: through the proxy when one is configured.
    fn fetch_url(&self, url: &str) -> String {
        match (
            &self.policy.github_proxy,
            url.strip_prefix("https://github.com/"),
        ) {
            (Some(proxy), Some(path)) => format!("{}/{path}", proxy.trim_end_matches('/')),
            _ => url.to_owned(),
        }
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
        fetch_commit(&dir, url, &self.fetch_url(url), commit).await?;
        Ok(dir)
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
                &self.fetch_url(url),
                &format!("+refs/heads/{branch}:{local_ref}"),
            ],
        )
        .await
        .map_err(|error| match unreachable(url, &error) {
            Some(unreachable) => unreachable,
            None => not_on_branch(),
        })?;
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

/// Makes sure the bare repository `dir` holds `commit`, fetching it from `fetch_url` (`url`
/// itself or its proxied form) if needed. Errors name `url`, as the task did.
///
/// # Errors
/// [`WorkspaceError::Unreachable`] if the repository could not be reached,
/// [`WorkspaceError::Checkout`] if it was reached but does not have the commit (or is not a
/// repository).
async fn fetch_commit(
    dir: &Path,
    url: &str,
    fetch_url: &str,
    commit: &str,
) -> Result<(), WorkspaceError> {
    let object = format!("{commit}^{{commit}}");
    if git(dir, &["cat-file", "-e", &object]).await.is_ok() {
        return Ok(());
    }
    // By id first (cheap); servers that refuse unadvertised ids get a fetch of all heads, which
    // also tells a repository that cannot be reached from one without the commit.
    let by_id = git(dir, &["fetch", "--quiet", "--no-tags", fetch_url, commit]).await;
    let mut detail = by_id.as_ref().err().map(git_detail).unwrap_or_default();
    if by_id.is_err() {
        let all_heads = git(
            dir,
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                fetch_url,
                "+refs/heads/*:refs/remotes/origin/*",
            ],
        )
        .await;
        if let Err(error) = all_heads {
            if let Some(unreachable) = unreachable(url, &error) {
                tracing::warn!(%url, detail = %git_detail(&error), "repository unreachable");
                return Err(unreachable);
            }
            detail = format!("{detail}\n{}", git_detail(&error));
        }
    }
    match git(dir, &["cat-file", "-e", &object]).await {
        Ok(_) => Ok(()),
        Err(_) => Err(WorkspaceError::Checkout {
            commit: commit.to_owned(),
            url: url.to_owned(),
            detail,
        }),
    }
}

/// What a failed git command said.
fn git_detail(error: &WorkspaceError) -> String {
    match error {
        WorkspaceError::Checkout { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

/// The failure as [`WorkspaceError::Unreachable`] if the network caused it; `None` otherwise.
fn unreachable(url: &str, error: &WorkspaceError) -> Option<WorkspaceError> {
    let detail = git_detail(error);
    is_network_failure(&detail).then(|| WorkspaceError::Unreachable {
        url: url.to_owned(),
        detail,
    })
}

/// Whether git's error output says the remote could not be reached (curl's and git's own
/// wording): refused or timed-out connections, names that do not resolve, dropped connections,
/// and server errors (5xx, 429) from the server or a proxy. A 404 or 403, "not our ref" or "not
/// a git repository" come from a reachable remote and are not network failures.
fn is_network_failure(stderr: &str) -> bool {
    const SIGNS: [&str; 17] = [
        "could not resolve host",
        "could not resolve proxy",
        "temporary failure in name resolution",
        "name or service not known",
        "failed to connect to",
        "couldn't connect to server",
        "connection refused",
        "connection timed out",
        "operation timed out",
        "connection reset",
        "network is unreachable",
        "no route to host",
        "early eof",
        "rpc failed",
        // A 5xx or 429 from the server or a reverse proxy in front of it ("… error: 503"),
        // or from a forward proxy ("Received HTTP code 502 from proxy after CONNECT").
        "the requested url returned error: 5",
        "the requested url returned error: 429",
        "received http code 5",
    ];
    let stderr = stderr.to_ascii_lowercase();
    SIGNS.iter().any(|sign| stderr.contains(sign))
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const ABSENT_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn run(dir: &Path, args: &[&str]) -> String {
        let output = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// An HTTP server on a local port that answers every request with `status`; returns a
    /// repository URL on it.
    async fn remote_answering(status: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        format!("http://{address}/opensafely/study")
    }

    #[tokio::test]
    async fn github_repositories_are_fetched_through_the_proxy() {
        let dir = tempfile::tempdir().unwrap();
        // The proxy serves GitHub's paths: <proxy>/<org>/<repo>.
        let study = dir.path().join("proxy/opensafely/study");
        std::fs::create_dir_all(&study).unwrap();
        run(&study, &["init", "--quiet", "--initial-branch=main"]);
        std::fs::write(study.join("project.yaml"), "version: '4.0'\n").unwrap();
        run(&study, &["add", "--all"]);
        run(&study, &["commit", "--quiet", "-m", "study"]);
        let head = run(&study, &["rev-parse", "HEAD"]);
        let cache = GitCache::new(
            dir.path().join("repos"),
            dir.path().join("temp"),
            RepoPolicy {
                allowed_github_orgs: vec!["opensafely".into()],
                allow_local_repos: false,
                github_proxy: Some(format!("file://{}/", dir.path().join("proxy").display())),
            },
        );

        // The commit exists only behind the proxy: reaching it proves the fetch went there.
        let url = "https://github.com/opensafely/study";
        cache
            .check_commit_on_branch(url, &head, "main")
            .await
            .unwrap();
        let checkout = dir.path().join("checkout");
        std::fs::create_dir_all(&checkout).unwrap();
        cache.checkout(url, &head, &checkout).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(checkout.join("project.yaml")).unwrap(),
            "version: '4.0'\n"
        );
        // The allow-list is still decided on the URL the task names.
        assert!(matches!(
            cache.check_repo("https://github.com/evil/study"),
            Err(WorkspaceError::RepoNotAllowed { .. })
        ));
    }

    #[tokio::test]
    async fn an_unreachable_remote_is_transient_and_a_missing_commit_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.git");
        std::fs::create_dir_all(&cache).unwrap();
        run(&cache, &["init", "--bare", "--quiet"]);

        // Nothing listens on a port just released.
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut unreachable = vec![format!("http://127.0.0.1:{closed_port}/opensafely/study")];
        for status in [
            "502 Bad Gateway",
            "503 Service Unavailable",
            "504 Gateway Timeout",
        ] {
            unreachable.push(remote_answering(status).await);
        }
        for url in &unreachable {
            let error = fetch_commit(&cache, url, url, ABSENT_COMMIT)
                .await
                .unwrap_err();
            assert!(
                matches!(&error, WorkspaceError::Unreachable { url: reported, .. } if reported == url),
                "{url}: {error:?}"
            );
            assert!(error.is_transient());
            assert_eq!(
                error.to_string(),
                format!("Could not reach repository {url}")
            );
        }

        // Reachable, but refusing or without the repository: permanent.
        let study = dir.path().join("study");
        std::fs::create_dir_all(&study).unwrap();
        run(&study, &["init", "--quiet", "--initial-branch=main"]);
        std::fs::write(study.join("project.yaml"), "version: '4.0'\n").unwrap();
        run(&study, &["add", "--all"]);
        run(&study, &["commit", "--quiet", "-m", "study"]);
        let head = run(&study, &["rev-parse", "HEAD"]);
        let not_a_repository = dir.path().join("empty");
        std::fs::create_dir_all(&not_a_repository).unwrap();
        let mut permanent = vec![
            study.to_string_lossy().into_owned(),
            not_a_repository.to_string_lossy().into_owned(),
        ];
        for status in ["404 Not Found", "403 Forbidden"] {
            permanent.push(remote_answering(status).await);
        }
        for url in &permanent {
            let error = fetch_commit(&cache, url, url, ABSENT_COMMIT)
                .await
                .unwrap_err();
            assert!(
                matches!(&error, WorkspaceError::Checkout { commit, .. } if commit == ABSENT_COMMIT),
                "{url}: {error:?}"
            );
            assert!(!error.is_transient(), "{url}");
        }
        // The repository's own commit is fetched.
        let study_url = study.to_string_lossy();
        fetch_commit(&cache, &study_url, &study_url, &head)
            .await
            .unwrap();
        assert!(
            run(&cache, &["cat-file", "-t", &head]).contains("commit"),
            "the commit is in the cache"
        );
    }

    #[test]
    fn network_failures_are_told_from_answers() {
        for network in [
            "fatal: unable to access 'https://github.com/o/r/': Could not resolve host: github.com",
            "fatal: unable to access 'https://x/': Failed to connect to x port 443 after 3 ms: \
             Connection refused",
            "fatal: unable to access 'https://x/': Connection timed out after 300000 milliseconds",
            "fatal: unable to access 'https://x/': Received HTTP code 503 from proxy after CONNECT",
            "fatal: unable to access 'https://x/': The requested URL returned error: 502",
            "error: RPC failed; curl 56 Recv failure: Connection reset by peer\nfatal: early EOF",
        ] {
            assert!(is_network_failure(network), "{network}");
        }
        for answer in [
            "remote: Repository not found.\nfatal: repository 'https://github.com/o/r/' not found",
            "fatal: unable to access 'https://x/': The requested URL returned error: 403",
            "fatal: unable to access 'https://x/': Received HTTP code 403 from proxy after CONNECT",
            "fatal: remote error: upload-pack: not our ref 0123456789abcdef",
            "fatal: '/srv/x' does not appear to be a git repository",
        ] {
            assert!(!is_network_failure(answer), "{answer}");
        }
    }

    fn new_cache(allow_local: bool) -> GitCache {
        GitCache::new(
            PathBuf::from("/nonexistent/repos"),
            PathBuf::from("/nonexistent/temp"),
            RepoPolicy {
                allowed_github_orgs: vec!["opensafely".into(), "opensafely-actions".into()],
                allow_local_repos: allow_local,
                github_proxy: None,
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
