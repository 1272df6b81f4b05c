//! A study folder turned into a git repository (branch `main`) that the controller and the
//! agent read by absolute path (`allow_local_repos`). Re-running on the same destination
//! commits only what changed, so the repository's history grows with the folder's edits.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::process::Command;

/// The sample study shipped with this crate (`integration/sample-study`).
pub fn sample_study() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-study")
}

/// A study repository and the commit to run.
pub struct StudyRepo {
    /// Absolute path of the (non-bare) repository.
    pub path: PathBuf,
    /// The head of `main`.
    pub commit: String,
}

/// Copies the files of `source` into the repository at `dest` (created if missing) and commits
/// them on `main` if anything changed.
///
/// # Errors
/// Copying failed, or a `git` command failed (its stderr is in the message).
pub async fn commit_study(source: &Path, dest: &Path) -> anyhow::Result<StudyRepo> {
    let (source_owned, dest_owned) = (source.to_owned(), dest.to_owned());
    tokio::task::spawn_blocking(move || copy_tree(&source_owned, &dest_owned))
        .await
        .context("copying the study")??;
    let dest = dest
        .canonicalize()
        .with_context(|| format!("resolving {}", dest.display()))?;
    if !dest.join(".git").exists() {
        git(&dest, &["init", "--quiet", "--initial-branch=main"]).await?;
    }
    git(&dest, &["add", "--all"]).await?;
    let status = git(&dest, &["status", "--porcelain"]).await?;
    if !status.trim().is_empty() {
        git(
            &dest,
            &[
                "-c",
                "user.name=rap up",
                "-c",
                "user.email=rap-up@localhost",
                "commit",
                "--quiet",
                "-m",
                "Study files",
            ],
        )
        .await?;
    }
    let commit = git(&dest, &["rev-parse", "HEAD"]).await?.trim().to_owned();
    Ok(StudyRepo { path: dest, commit })
}

/// Runs `git` in `dir`, returning stdout.
async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .await
        .context("running git")?;
    if !output.status.success() {
        bail!(
            "git {} in {} failed: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Copies regular files and folders (keeping the executable bit); symbolic links are refused.
fn copy_tree(source: &Path, dest: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let entries =
        std::fs::read_dir(source).with_context(|| format!("reading {}", source.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", source.display()))?;
        let kind = entry.file_type()?;
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_file() {
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        } else {
            bail!("{} is not a regular file or folder", from.display());
        }
    }
    Ok(())
}
