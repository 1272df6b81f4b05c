//! The project's code as a git commit, so the agent's executor can check it out into each job
//! directory exactly as it checks out a study on a backend.
//!
//! The commit holds every file of the project directory except `metadata/` and every file that
//! matches an output pattern of any action (spec project-yaml-cli-deploy §2.2 step 9: an
//! undeclared dependency on another action's output then fails locally as it would in
//! production). `.gitignore` files are not honoured: the reference copies ignored files too.
//! The commit lives in a bare repository in the run's state directory, on branch `main`; a
//! project whose files did not change gets the same commit again.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::process::Command;

/// The branch the snapshots are committed on.
pub const BRANCH: &str = "main";

/// A snapshot of the project's code.
#[derive(Clone, Debug)]
pub struct CodeSnapshot {
    /// The bare repository (an absolute path, which the executor accepts as a local repository).
    pub repo: PathBuf,
    /// The commit on [`BRANCH`].
    pub commit: String,
}

/// Commits the code of `project_dir` into `<state_dir>/code.git`, leaving out `metadata/` and
/// the files matching `output_patterns`.
///
/// # Errors
/// `git` cannot be run or one of its commands fails (its stderr is in the message).
pub async fn snapshot(
    project_dir: &Path,
    state_dir: &Path,
    output_patterns: &[String],
) -> anyhow::Result<CodeSnapshot> {
    let repo = state_dir.join("code.git");
    if !repo.join("HEAD").is_file() {
        let output = Command::new("git")
            .args(["init", "--bare", "--quiet", "--initial-branch", BRANCH])
            .arg(&repo)
            .output()
            .await
            .context("running git (is it installed?)")?;
        if !output.status.success() {
            bail!(
                "git init {} failed: {}",
                repo.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    // A fresh index each time: files deleted from the project must leave the snapshot too.
    let index = state_dir.join("code.index");
    if let Err(error) = std::fs::remove_file(&index)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        return Err(error).with_context(|| format!("removing {}", index.display()));
    }
    let mut add: Vec<String> = ["add", "--all", "--force", "--", ".", ":(exclude)metadata"]
        .map(str::to_owned)
        .to_vec();
    // `glob` magic: `*` stays within one path segment, as in project.yaml's patterns.
    add.extend(
        output_patterns
            .iter()
            .map(|pattern| format!(":(exclude,glob){pattern}")),
    );
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    git(&repo, project_dir, &add, Some(&index)).await?;
    let tree = git(&repo, project_dir, &["write-tree"], Some(&index)).await?;
    let parent = git(
        &repo,
        project_dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{BRANCH}"),
        ],
        None,
    )
    .await
    .ok();
    if let Some(parent) = &parent {
        let parent_tree = git(
            &repo,
            project_dir,
            &["rev-parse", &format!("{parent}^{{tree}}")],
            None,
        )
        .await?;
        if parent_tree == tree {
            return Ok(CodeSnapshot {
                repo,
                commit: parent.clone(),
            });
        }
    }
    let mut commit_tree = vec!["commit-tree", tree.as_str(), "-m", "rap run"];
    if let Some(parent) = &parent {
        commit_tree.extend(["-p", parent.as_str()]);
    }
    let commit = git(&repo, project_dir, &commit_tree, None).await?;
    git(
        &repo,
        project_dir,
        &["update-ref", &format!("refs/heads/{BRANCH}"), &commit],
        None,
    )
    .await?;
    Ok(CodeSnapshot { repo, commit })
}

/// Runs `git` on the bare repository `repo` with `work_tree` as its work tree (and as the
/// current directory, so pathspecs are relative to it); returns stdout, trimmed.
async fn git(
    repo: &Path,
    work_tree: &Path,
    args: &[&str],
    index: Option<&Path>,
) -> anyhow::Result<String> {
    let mut command = Command::new("git");
    command
        .arg("--git-dir")
        .arg(repo)
        .arg("--work-tree")
        .arg(work_tree)
        .args(args)
        .current_dir(work_tree)
        // The snapshot's author is fixed: the researcher's git configuration may have none.
        .env("GIT_AUTHOR_NAME", "rap run")
        .env("GIT_AUTHOR_EMAIL", "rap-run@localhost")
        .env("GIT_COMMITTER_NAME", "rap run")
        .env("GIT_COMMITTER_EMAIL", "rap-run@localhost");
    if let Some(index) = index {
        command.env("GIT_INDEX_FILE", index);
    }
    let output = command
        .output()
        .await
        .context("running git (is it installed?)")?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
