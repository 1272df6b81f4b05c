//! The signed-in user as the job server describes them (the Level 4 user, spec B2), and the
//! permission predicates over it (B3). Plain data and pure functions: no IO.

use std::collections::BTreeMap;

use crate::request::ReleaseRequest;
use crate::request::status::Actor;

/// What the job server says about one workspace a user can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceAccess {
    pub project: String,
    pub ongoing: bool,
    pub orgs: Vec<String>,
    pub archived: bool,
}

/// A user of Airlock, refreshed from the job server (Authenticate, then Authorise every
/// 15 minutes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub fullname: String,
    /// Workspaces of projects where the user has a role (may author requests).
    pub workspaces: BTreeMap<String, WorkspaceAccess>,
    /// Workspaces of projects the user co-pilots (view only).
    pub copiloted_workspaces: BTreeMap<String, WorkspaceAccess>,
    pub output_checker: bool,
    pub readonly_access: bool,
}

impl User {
    /// The user as a transition actor.
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            username: &self.username,
            output_checker: self.output_checker,
        }
    }

    /// Can see the workspace and all its requests.
    pub fn can_view_workspace(&self, workspace: &str) -> bool {
        self.output_checker
            || self.readonly_access
            || self.workspaces.contains_key(workspace)
            || self.copiloted_workspaces.contains_key(workspace)
    }

    /// Has a project role on the workspace (co-pilots and pure checkers do not).
    pub fn has_role_on_workspace(&self, workspace: &str) -> bool {
        self.workspaces.contains_key(workspace)
    }

    /// May create and change requests for the workspace: a role, the workspace not archived
    /// and the project ongoing.
    pub fn can_action_requests(&self, workspace: &str) -> bool {
        self.workspaces
            .get(workspace)
            .is_some_and(|access| !access.archived && access.ongoing)
    }

    /// May review requests in general.
    pub fn can_review(&self) -> bool {
        self.output_checker
    }

    /// May review this request: an output checker who is not its author.
    pub fn can_review_request(&self, request: &ReleaseRequest) -> bool {
        self.output_checker && self.username != request.author
    }

    /// May review this request now: as above, and the request is under review.
    pub fn can_currently_review(&self, request: &ReleaseRequest) -> bool {
        self.can_review_request(request) && request.status.is_under_review()
    }

    /// May edit this request: its author, allowed to action requests for the workspace, and
    /// the request is editable (PENDING or RETURNED).
    pub fn can_edit_request(&self, request: &ReleaseRequest) -> bool {
        self.username == request.author
            && self.can_action_requests(&request.workspace)
            && request.status.is_editable()
    }

    /// May download a request file: an output checker who is not its author. Workspace files
    /// are never downloadable.
    pub fn can_download(&self, request: &ReleaseRequest) -> bool {
        self.output_checker && self.username != request.author
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn access() -> WorkspaceAccess {
        WorkspaceAccess {
            project: "project".to_string(),
            ongoing: true,
            orgs: vec!["org".to_string()],
            archived: false,
        }
    }

    /// A researcher with a role on `workspace`.
    pub fn researcher(name: &str, workspace: &str) -> User {
        User {
            username: name.to_string(),
            fullname: name.to_string(),
            workspaces: BTreeMap::from([(workspace.to_string(), access())]),
            copiloted_workspaces: BTreeMap::new(),
            output_checker: false,
            readonly_access: false,
        }
    }

    /// An output checker with no role on any workspace.
    pub fn checker(name: &str) -> User {
        User {
            username: name.to_string(),
            fullname: name.to_string(),
            workspaces: BTreeMap::new(),
            copiloted_workspaces: BTreeMap::new(),
            output_checker: true,
            readonly_access: false,
        }
    }

    #[test]
    fn workspace_predicates() {
        let mut user = researcher("r", "ws");
        assert!(user.can_view_workspace("ws"));
        assert!(!user.can_view_workspace("other"));
        assert!(user.has_role_on_workspace("ws"));
        assert!(user.can_action_requests("ws"));
        user.workspaces.get_mut("ws").unwrap().archived = true;
        assert!(!user.can_action_requests("ws"));
        user.workspaces.get_mut("ws").unwrap().archived = false;
        user.workspaces.get_mut("ws").unwrap().ongoing = false;
        assert!(!user.can_action_requests("ws"));

        let copilot = User {
            copiloted_workspaces: BTreeMap::from([("cw".to_string(), access())]),
            ..researcher("c", "ws")
        };
        assert!(copilot.can_view_workspace("cw"));
        assert!(!copilot.has_role_on_workspace("cw"));

        let checker = checker("oc");
        assert!(checker.can_view_workspace("anything"));
        assert!(!checker.has_role_on_workspace("anything"));
        assert!(!checker.can_action_requests("anything"));
    }
}
