//! A backend for the end-to-end tests: an installation written by `rap-controller init`, the
//! controller on ports the kernel picks, and an agent started once `rap-agent check` passes on
//! its configuration; and study repositories made from the sample study with a test's files.

use std::path::Path;

use rap_integration::service::Service;
use rap_integration::stack::{self, AgentOptions, Controller, Installation};
use rap_integration::study::{self, StudyRepo};

/// A running controller and agent for one backend.
pub struct Backend {
    pub installation: Installation,
    pub controller: Controller,
    pub agent: Service,
}

impl Backend {
    /// Starts backend `name` under `root` (`controller/` for the installation, `logs/` for the
    /// processes' logs) with the agent configured by `options`.
    pub async fn start(root: &Path, name: &str, options: &AgentOptions) -> Backend {
        let installation = Installation::init(&root.join("controller"), name)
            .await
            .unwrap();
        let controller = stack::start_controller(
            &installation,
            "127.0.0.1:0",
            "127.0.0.1:0",
            &root.join("logs/controller.log"),
        )
        .await
        .unwrap();
        let agent = stack::start_checked_agent(
            &installation,
            &controller.agent_endpoint,
            options,
            &root.join("logs/agent.log"),
        )
        .await
        .unwrap();
        Backend {
            installation,
            controller,
            agent,
        }
    }
}

/// Commits the sample study with `files` (path, text) written over it into a fresh repository
/// at `root/<name>` (the files are put together in `root/<name>-source`).
pub async fn sample_study_with(root: &Path, name: &str, files: &[(&str, &str)]) -> StudyRepo {
    let source = root.join(format!("{name}-source"));
    copy_dir(&study::sample_study(), &source);
    for (path, text) in files {
        let path = source.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    study::commit_study(&source, &root.join(name))
        .await
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
