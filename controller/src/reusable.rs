//! Reusable actions (spec §3.5 step 8): an action whose image is not on the allow-list names a
//! repository `<actions_url>/<image>`; its tag must be merged into `main`, and its `action.yaml`
//! gives the real command, which must use an allowed image and must not touch the database.

use std::collections::HashSet;

use crate::git::{Git, GitError};
use crate::jobs::create::JobRequest;
use crate::jobs::project::Project;

/// Where reusable actions are looked up.
pub struct ReusableActions<'a> {
    pub git: &'a Git,
    /// e.g. `https://github.com/opensafely-actions`.
    pub actions_url: &'a str,
}

/// Why a reusable action cannot be used, in the reference's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReusableError {
    #[error("'{0}' contains invalid characters")]
    InvalidName(String),
    #[error("could not find a repo at {0}")]
    NoRepo(String),
    #[error("'{tag}' is not a tag listed in {repo}/tags")]
    NoTag { tag: String, repo: String },
    #[error("tag '{0}' has not yet been approved for use (not merged into main branch)")]
    NotApproved(String),
    #[error("No action.yaml file found in {0}")]
    NoActionYaml(String),
    #[error("action.yaml has no `run` command")]
    NoRun,
    #[error("Unrecognised runtime: {0}")]
    UnrecognisedRuntime(String),
    #[error("Re-usable actions cannot run commands which access the database")]
    DatabaseAction,
    #[error("{0}")]
    Git(String),
    /// The wrapper users see, naming the action and where to report the problem.
    #[error(
        "in '{action}: {image_tag}' invalid action, please open an issue on {repo}/issues: {inner}"
    )]
    Invalid {
        action: String,
        image_tag: String,
        repo: String,
        inner: Box<ReusableError>,
    },
}

/// Rewrite the actions this request may create whose image is a reusable action: the command
/// becomes the action's `run` followed by the original arguments, and the action's repository
/// and commit are recorded. Resolved once per (image, tag).
///
/// # Errors
/// The first action that cannot be used, wrapped with its name.
pub async fn resolve_reusable_actions(
    reusable: &ReusableActions<'_>,
    request: &JobRequest,
    project: &mut Project,
) -> Result<(), ReusableError> {
    let wanted = wanted_actions(request, project);
    let mut cache: std::collections::HashMap<(String, String), (String, String, Vec<String>)> =
        std::collections::HashMap::new();
    for action in project.actions.iter_mut() {
        if !wanted.contains(&action.name) {
            continue;
        }
        let words = crate::backend::core::split_command(&action.run_command);
        let Some(first) = words.first() else {
            continue;
        };
        let (image, tag) = first.split_once(':').unwrap_or((first.as_str(), "latest"));
        if rap_pipeline::is_allowed_image(image) {
            continue;
        }
        let repo = format!("{}/{image}", reusable.actions_url.trim_end_matches('/'));
        let key = (image.to_string(), tag.to_string());
        let resolved = match cache.get(&key) {
            Some(resolved) => resolved.clone(),
            None => {
                let resolved = resolve_one(reusable, image, tag, &repo)
                    .await
                    .map_err(|inner| ReusableError::Invalid {
                        action: action.name.clone(),
                        image_tag: first.clone(),
                        repo: repo.clone(),
                        inner: Box::new(inner),
                    })?;
                cache.insert(key, resolved.clone());
                resolved
            }
        };
        let (repo_url, commit, run_words) = resolved;
        let mut command = run_words;
        command.extend(words.into_iter().skip(1));
        action.run_command = join_command(&command);
        action.action_repo = Some((repo_url, commit));
    }
    Ok(())
}

/// The actions a request could create: all for `run_all`, else the requested ones and
/// everything they need.
fn wanted_actions(request: &JobRequest, project: &Project) -> HashSet<String> {
    if request.run_all() {
        return project.actions.iter().map(|a| a.name.clone()).collect();
    }
    let mut wanted = HashSet::new();
    let mut stack: Vec<String> = request.requested_actions.clone();
    while let Some(name) = stack.pop() {
        if !wanted.insert(name.clone()) {
            continue;
        }
        if let Some(action) = project.action(&name) {
            stack.extend(action.needs.iter().cloned());
        }
    }
    wanted
}

async fn resolve_one(
    reusable: &ReusableActions<'_>,
    image: &str,
    tag: &str,
    repo: &str,
) -> Result<(String, String, Vec<String>), ReusableError> {
    if image.is_empty()
        || !image
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ReusableError::InvalidName(image.to_string()));
    }
    let commit = match reusable
        .git
        .ls_remote(repo, &format!("refs/tags/{tag}"))
        .await
    {
        Ok(Some(commit)) => commit,
        Ok(None) => {
            return Err(ReusableError::NoTag {
                tag: tag.into(),
                repo: repo.into(),
            });
        }
        Err(GitError::RepoNotFound { .. }) => return Err(ReusableError::NoRepo(repo.into())),
        Err(e) => return Err(ReusableError::Git(e.to_string())),
    };
    let on_main = reusable
        .git
        .is_on_branch(repo, "main", &commit)
        .await
        .map_err(|e| ReusableError::Git(e.to_string()))?;
    if !on_main {
        return Err(ReusableError::NotApproved(tag.into()));
    }
    let Some(text) = reusable
        .git
        .read_file(repo, &commit, "action.yaml")
        .await
        .map_err(|e| ReusableError::Git(e.to_string()))?
    else {
        return Err(ReusableError::NoActionYaml(repo.into()));
    };
    let run = run_line(&text).ok_or(ReusableError::NoRun)?;
    let words = crate::backend::core::split_command(&run);
    let Some(first) = words.first() else {
        return Err(ReusableError::NoRun);
    };
    let runtime = first
        .split_once(':')
        .map_or(first.as_str(), |(name, _)| name);
    if !rap_pipeline::is_allowed_image(runtime) {
        return Err(ReusableError::UnrecognisedRuntime(runtime.to_string()));
    }
    if rap_pipeline::is_database_command(runtime, words.get(1).map(String::as_str)) {
        return Err(ReusableError::DatabaseAction);
    }
    Ok((repo.to_string(), commit, words))
}

/// The top-level `run:` value of an `action.yaml` (a plain or quoted scalar on one line).
fn run_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix("run:")?.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        (!unquoted.is_empty()).then(|| unquoted.to_string())
    })
}

/// Join words into a shell command, single-quoting those that need it.
pub fn join_command(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            let safe = !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
            if safe {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r#"'"'"'"#))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::GitConfig;
    use crate::jobs::create::{RequestRules, SubmitFields, validate_request};
    use crate::jobs::project::ProjectAction;
    use tokio::process::Command;

    async fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `actions/<name>` with tag v1 on main and tag v2 on a side branch.
    async fn make_action(root: &std::path::Path, name: &str, run: &str) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "--quiet", "--initial-branch", "main"]).await;
        std::fs::write(dir.join("action.yaml"), format!("run: {run}\n")).unwrap();
        git(&dir, &["add", "."]).await;
        git(&dir, &["commit", "--quiet", "-m", "v1"]).await;
        git(&dir, &["tag", "v1"]).await;
        git(&dir, &["checkout", "--quiet", "-b", "side"]).await;
        std::fs::write(dir.join("x"), "x").unwrap();
        git(&dir, &["add", "."]).await;
        git(&dir, &["commit", "--quiet", "-m", "v2"]).await;
        git(&dir, &["tag", "-a", "v2", "-m", "v2"]).await;
        git(&dir, &["checkout", "--quiet", "main"]).await;
    }

    fn request(actions: &[&str]) -> JobRequest {
        validate_request(
            SubmitFields {
                rap_id: "abcdefgh12345678".into(),
                backend: "test".into(),
                workspace: "ws".into(),
                repo_url: "/study".into(),
                branch: "main".into(),
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                database_name: "default".into(),
                requested_actions: actions.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            },
            &RequestRules {
                backends: vec!["test".into()],
                allowed_github_orgs: vec![],
                allow_local_repos: true,
                projects_with_event_level_access: vec![],
            },
        )
        .unwrap()
    }

    fn project(run: &str) -> Project {
        Project {
            actions: vec![ProjectAction {
                name: "act".into(),
                needs: vec![],
                run_command: run.into(),
                requires_db: false,
                outputs: vec![],
                action_repo: None,
            }],
        }
    }

    #[tokio::test]
    async fn reusable_actions_resolve_against_real_repositories() {
        let root = tempfile::tempdir().unwrap();
        make_action(root.path(), "cox", "python:v2 python /action/main.py").await;
        make_action(root.path(), "dbact", "ehrql:v1 generate-dataset x.py").await;
        make_action(root.path(), "badrt", "evil:v1 run").await;
        let cache = tempfile::tempdir().unwrap();
        let git = Git::new(GitConfig {
            cache_dir: cache.path().to_path_buf(),
            proxy_prefix: None,
        });
        let url = root.path().to_string_lossy().into_owned();
        let reusable = ReusableActions {
            git: &git,
            actions_url: &url,
        };

        let mut p = project("cox:v1 --input 'a b.csv'");
        resolve_reusable_actions(&reusable, &request(&["act"]), &mut p)
            .await
            .unwrap();
        assert_eq!(
            p.actions[0].run_command,
            "python:v2 python /action/main.py --input 'a b.csv'"
        );
        let (repo, commit) = p.actions[0].action_repo.clone().unwrap();
        assert_eq!(repo, format!("{url}/cox"));
        assert_eq!(commit.len(), 40);

        let cases = [
            (
                "cox:v2",
                "tag 'v2' has not yet been approved for use (not merged into main branch)",
            ),
            (
                "cox:v9",
                &*format!("'v9' is not a tag listed in {url}/cox/tags"),
            ),
            ("nope:v1", &*format!("could not find a repo at {url}/nope")),
            (
                "dbact:v1",
                "Re-usable actions cannot run commands which access the database",
            ),
            ("badrt:v1", "Unrecognised runtime: evil"),
        ];
        for (run, expected) in cases {
            let mut p = project(run);
            let err = resolve_reusable_actions(&reusable, &request(&["act"]), &mut p)
                .await
                .unwrap_err();
            let image = run.split(':').next().unwrap();
            assert_eq!(
                err.to_string(),
                format!(
                    "in 'act: {run}' invalid action, please open an issue on {url}/{image}/issues: {expected}"
                )
            );
        }
        // Allowed images are untouched; actions not wanted by the request are not resolved.
        let mut p = project("python:v2 x.py");
        resolve_reusable_actions(&reusable, &request(&["act"]), &mut p)
            .await
            .unwrap();
        assert_eq!(p.actions[0].action_repo, None);
        let mut p = project("nope:v1");
        resolve_reusable_actions(&reusable, &request(&["other"]), &mut p)
            .await
            .unwrap();
    }

    #[test]
    fn joins_and_reads_run_lines() {
        assert_eq!(
            join_command(&["a".into(), "b c".into(), "it's".into()]),
            r#"a 'b c' 'it'"'"'s'"#
        );
        assert_eq!(
            run_line("name: x\nrun: \"python:v2 main.py\"\n").unwrap(),
            "python:v2 main.py"
        );
        assert_eq!(run_line("name: x\n"), None);
    }
}
