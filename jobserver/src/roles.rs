//! Roles and permissions (spec: jobserver-and-airlock A2).
//!
//! Roles are fixed bundles of permissions. A role is global (held on the user) or project-scoped
//! (held on a project membership); [`has_permission`] is the union of both, as in the reference.
//! The stored names are the reference's class names, so `as_str`/`FromStr` are the storage form.

use std::fmt;
use std::str::FromStr;

/// A role, stored by the reference's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    ProjectDeveloper,
    ProjectCollaborator,
    OutputChecker,
    OutputPublisher,
    DeploymentAdministrator,
    StaffAreaAdministrator,
    TechSupport,
    ServiceAdministrator,
    SignOffRepoWithOutputs,
}

/// A permission: the reference's lower snake case strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    JobCancel,
    JobRun,
    ProjectManage,
    ReleaseFileView,
    ReleaseFileDelete,
    ReleaseFileUpload,
    SnapshotCreate,
    SnapshotPublish,
    UnreleasedOutputsView,
    WorkspaceArchive,
    WorkspaceCreate,
    WorkspaceToggleNotifications,
    AirlockReadonlyAccess,
    ApplicationManage,
    BackendManage,
    OrgCreate,
    UserManage,
    StaffAreaAccess,
    UserEditProjectRoles,
    ProjectCreate,
    ProjectLinkToApplication,
    RepoSignOffWithOutputs,
}

/// Where a role may be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Project,
    Both,
}

/// Every role, for listings and round-trip tests.
pub const ALL_ROLES: [Role; 9] = [
    Role::ProjectDeveloper,
    Role::ProjectCollaborator,
    Role::OutputChecker,
    Role::OutputPublisher,
    Role::DeploymentAdministrator,
    Role::StaffAreaAdministrator,
    Role::TechSupport,
    Role::ServiceAdministrator,
    Role::SignOffRepoWithOutputs,
];

impl Role {
    /// The stored name (the reference's).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ProjectDeveloper => "ProjectDeveloper",
            Role::ProjectCollaborator => "ProjectCollaborator",
            Role::OutputChecker => "OutputChecker",
            Role::OutputPublisher => "OutputPublisher",
            Role::DeploymentAdministrator => "DeploymentAdministrator",
            Role::StaffAreaAdministrator => "StaffAreaAdministrator",
            Role::TechSupport => "TechSupport",
            Role::ServiceAdministrator => "ServiceAdministrator",
            Role::SignOffRepoWithOutputs => "SignOffRepoWithOutputs",
        }
    }

    /// Where this role may be held (A2's scope column).
    pub fn scope(self) -> Scope {
        match self {
            Role::ProjectDeveloper => Scope::Project,
            Role::ProjectCollaborator => Scope::Both,
            _ => Scope::Global,
        }
    }

    /// The role's permission bundle (A2's table).
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::ProjectDeveloper => &[
                JobCancel,
                JobRun,
                ProjectManage,
                ReleaseFileView,
                SnapshotCreate,
                UnreleasedOutputsView,
                WorkspaceArchive,
                WorkspaceCreate,
                WorkspaceToggleNotifications,
            ],
            Role::ProjectCollaborator => &[ReleaseFileView],
            Role::OutputChecker => &[
                ReleaseFileDelete,
                ReleaseFileUpload,
                ReleaseFileView,
                UnreleasedOutputsView,
            ],
            Role::OutputPublisher => &[SnapshotPublish],
            Role::DeploymentAdministrator => &[JobCancel, JobRun, AirlockReadonlyAccess],
            Role::StaffAreaAdministrator => &[
                ApplicationManage,
                BackendManage,
                OrgCreate,
                UserManage,
                StaffAreaAccess,
            ],
            Role::TechSupport => &[ReleaseFileView, UserEditProjectRoles, ProjectCreate],
            Role::ServiceAdministrator => &[
                UserEditProjectRoles,
                OrgCreate,
                ProjectCreate,
                ProjectLinkToApplication,
            ],
            Role::SignOffRepoWithOutputs => &[RepoSignOffWithOutputs],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of the reference's.
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ALL_ROLES
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or_else(|| UnknownRole(name.to_owned()))
    }
}

/// The reference's `has_permission(user, perm, project=P)`: the union of the user's global roles
/// and their roles in P's membership (when a project is given).
pub fn has_permission(
    global_roles: &[Role],
    project_roles: &[Role],
    permission: Permission,
) -> bool {
    global_roles
        .iter()
        .chain(project_roles)
        .any(|role| role.permissions().contains(&permission))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in ALL_ROLES {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("Developer".parse::<Role>().is_err());
    }

    #[test]
    fn developer_may_run_and_cancel_collaborator_may_not() {
        use Permission::*;
        let dev = [Role::ProjectDeveloper];
        let collab = [Role::ProjectCollaborator];
        assert!(has_permission(&[], &dev, JobRun));
        assert!(has_permission(&[], &dev, JobCancel));
        assert!(!has_permission(&[], &collab, JobRun));
        assert!(!has_permission(&[], &collab, JobCancel));
        assert!(has_permission(
            &[Role::DeploymentAdministrator],
            &[],
            JobRun
        ));
        assert!(has_permission(
            &[Role::OutputChecker],
            &[],
            ReleaseFileUpload
        ));
        assert!(!has_permission(&[], &dev, ReleaseFileUpload));
        assert!(!has_permission(&[], &[], ReleaseFileView));
    }
}
