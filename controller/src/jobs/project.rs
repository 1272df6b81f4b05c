//! The controller's view of a `project.yaml`: only what job creation needs, built from
//! `rap_pipeline`'s parsed pipeline by [`Project::from_pipeline`].
//!
//! Keeping this small view (rather than passing the pipeline around) lets job creation be tested
//! with hand-made projects and keeps the pipeline crate's API at one place.

use crate::jobs::OutputPattern;

/// One action, as job creation sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectAction {
    pub name: String,
    pub needs: Vec<String>,
    /// The full command, `image:tag` first, with ` --config '<json>'` when configured.
    pub run_command: String,
    pub requires_db: bool,
    pub outputs: Vec<OutputPattern>,
}

/// The actions of a project, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Project {
    pub actions: Vec<ProjectAction>,
}

impl Project {
    pub fn action(&self, name: &str) -> Option<&ProjectAction> {
        self.actions.iter().find(|action| action.name == name)
    }
}
