//! The study repository, read through the `git` command (as the reference reads GitHub): the
//! head commit of a branch and `project.yaml` at it. Runs under `tokio::process`, never on an
//! async thread; the URL always follows `--` so it cannot be read as an option.

use std::process::Stdio;

use tokio::process::Command;

/// A git command that failed; `stderr` is git's own words, safe to show to the researcher.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("could not run git: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("{stderr}")]
    Failed { stderr: String },
    #[error("Branch {0} not found in the repository")]
    NoBranch(String),
    #[error("Could not find project.yaml at the head of {0}")]
    NoProjectYaml(String),
    #[error("could not create a temporary directory: {0}")]
    TempDir(std::io::Error),
}

async fn git(args: &[&str], dir: Option<&std::path::Path>) -> Result<String, GitError> {
    let mut command = Command::new("git");
    command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command.output().await?;
    if !output.status.success() {
        return Err(GitError::Failed {
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The commit at the head of `branch` in the repository at `url`.
///
/// # Errors
/// When git fails or the branch does not exist.
pub async fn branch_head(url: &str, branch: &str) -> Result<String, GitError> {
    let reference = format!("refs/heads/{branch}");
    let out = git(&["ls-remote", "--heads", "--", url, &reference], None).await?;
    out.lines()
        .find_map(|line| {
            let (sha, name) = line.split_once('\t')?;
            (name == reference).then(|| sha.to_owned())
        })
        .ok_or_else(|| GitError::NoBranch(branch.to_owned()))
}

/// The head commit of `branch` and the text of `project.yaml` there, fetched shallowly into a
/// throw-away repository.
///
/// # Errors
/// When git fails, the branch does not exist, or the commit has no `project.yaml`.
pub async fn project_yaml_at_head(url: &str, branch: &str) -> Result<(String, String), GitError> {
    let dir = tempfile::tempdir().map_err(GitError::TempDir)?;
    git(&["init", "--bare", "-q", "."], Some(dir.path())).await?;
    let reference = format!("refs/heads/{branch}");
    git(
        &["fetch", "-q", "--depth", "1", "--", url, &reference],
        Some(dir.path()),
    )
    .await
    .map_err(|error| match error {
        GitError::Failed { stderr } if stderr.contains("couldn't find remote ref") => {
            GitError::NoBranch(branch.to_owned())
        }
        other => other,
    })?;
    let sha = git(&["rev-parse", "FETCH_HEAD"], Some(dir.path()))
        .await?
        .trim()
        .to_owned();
    let text = git(&["show", "FETCH_HEAD:project.yaml"], Some(dir.path()))
        .await
        .map_err(|_| GitError::NoProjectYaml(branch.to_owned()))?;
    Ok((sha, text))
}
