//! The operator's commands (the reference's staff area, as a CLI): users, orgs, projects,
//! memberships, backends and their tokens. Each is a plain function over the store, so tests
//! and the binary call the same code. sled allows one process per store: run these while the
//! server is stopped.

use crate::accounts;
use crate::model::{
    AnalysisScope, Backend, COMPONENT_ACCESS, DATASET_PERMISSIONS, Membership, Org,
    POPULATION_PERMISSIONS, Project, User, now,
};
use crate::roles::{Role, Scope};
use crate::store::{Store, StoreError, hash_secret};

/// A refused admin command.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Hash(#[from] accounts::HashError),
    #[error("{kind} {name:?} already exists")]
    Exists { kind: &'static str, name: String },
    #[error("no {kind} {name:?}")]
    Missing { kind: &'static str, name: String },
    #[error("{role} is a project role; give it with `member add`")]
    ProjectRole { role: Role },
    #[error("{role} is a global role; give it with `user roles`")]
    GlobalRole { role: Role },
    #[error("unknown {what} {value:?}; allowed are: {allowed}")]
    NotInVocabulary {
        what: &'static str,
        value: String,
        allowed: String,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
}

fn check_slug(what: &'static str, value: &str) -> Result<(), AdminError> {
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(AdminError::Invalid {
            what,
            value: value.to_owned(),
            reason: "use letters, digits, - and _",
        });
    }
    Ok(())
}

/// Creates a user with a password (hashed here).
///
/// # Errors
/// A taken or invalid username, an empty password, a project-only role, or storage failure.
pub fn add_user(
    store: &Store,
    username: &str,
    fullname: &str,
    email: &str,
    password: &str,
    roles: &[Role],
) -> Result<(), AdminError> {
    check_slug("username", username)?;
    if password.is_empty() {
        return Err(AdminError::Invalid {
            what: "password",
            value: String::new(),
            reason: "must not be empty",
        });
    }
    if store.user(username)?.is_some() {
        return Err(AdminError::Exists {
            kind: "user",
            name: username.to_owned(),
        });
    }
    check_global(roles)?;
    store.put_user(&User {
        username: username.to_owned(),
        fullname: fullname.to_owned(),
        email: email.to_lowercase(),
        password_hash: accounts::hash_password(password)?,
        roles: roles.to_vec(),
        login_token: None,
        date_joined: now(),
    })?;
    Ok(())
}

fn check_global(roles: &[Role]) -> Result<(), AdminError> {
    match roles.iter().find(|r| r.scope() == Scope::Project) {
        Some(&role) => Err(AdminError::ProjectRole { role }),
        None => Ok(()),
    }
}

/// Replaces a user's global roles.
///
/// # Errors
/// An unknown user, a project-only role, or storage failure.
pub fn set_user_roles(store: &Store, username: &str, roles: &[Role]) -> Result<(), AdminError> {
    check_global(roles)?;
    let mut user = store.user(username)?.ok_or_else(|| AdminError::Missing {
        kind: "user",
        name: username.to_owned(),
    })?;
    user.roles = roles.to_vec();
    store.put_user(&user)?;
    Ok(())
}

/// Creates an org.
///
/// # Errors
/// A taken or invalid slug, or storage failure.
pub fn add_org(store: &Store, slug: &str, name: &str) -> Result<(), AdminError> {
    check_slug("org slug", slug)?;
    if store.org(slug)?.is_some() {
        return Err(AdminError::Exists {
            kind: "org",
            name: slug.to_owned(),
        });
    }
    store.put_org(&Org {
        slug: slug.to_owned(),
        name: name.to_owned(),
    })?;
    Ok(())
}

/// Creates a project; `orgs` lists org slugs, the lead first.
///
/// # Errors
/// A taken or invalid slug, an unknown org or copilot, or storage failure.
pub fn add_project(
    store: &Store,
    slug: &str,
    name: &str,
    orgs: &[String],
    status: &str,
    copilot: Option<&str>,
) -> Result<(), AdminError> {
    check_slug("project slug", slug)?;
    if store.project(slug)?.is_some() {
        return Err(AdminError::Exists {
            kind: "project",
            name: slug.to_owned(),
        });
    }
    for org in orgs {
        if store.org(org)?.is_none() {
            return Err(AdminError::Missing {
                kind: "org",
                name: org.clone(),
            });
        }
    }
    if let Some(copilot) = copilot
        && store.user(copilot)?.is_none()
    {
        return Err(AdminError::Missing {
            kind: "user",
            name: copilot.to_owned(),
        });
    }
    const STATUSES: [&str; 6] = [
        "ongoing",
        "postponed",
        "retired",
        "ongoing-and-linked",
        "completed-and-linked",
        "completed-and-awaiting",
    ];
    if !STATUSES.contains(&status) {
        return Err(AdminError::Invalid {
            what: "project status",
            value: status.to_owned(),
            reason: "not one of the reference's statuses",
        });
    }
    store.put_project(&Project {
        slug: slug.to_owned(),
        name: name.to_owned(),
        status: status.to_owned(),
        orgs: orgs.to_vec(),
        copilot: copilot.map(str::to_owned),
        analysis_scope: AnalysisScope::default(),
    })?;
    Ok(())
}

/// Replaces a project's analysis scope, sent with each of its job requests. Every value must be
/// one of the reference's (`DATASET_PERMISSIONS`, `POPULATION_PERMISSIONS`, `COMPONENT_ACCESS`);
/// lists are stored sorted and without repeats.
///
/// # Errors
/// An unknown project, a value outside the vocabulary (nothing is changed), or storage failure.
pub fn set_analysis_scope(
    store: &Store,
    slug: &str,
    scope: &AnalysisScope,
) -> Result<(), AdminError> {
    let Some(mut project) = store.project(slug)? else {
        return Err(AdminError::Missing {
            kind: "project",
            name: slug.to_owned(),
        });
    };
    let checked = |what: &'static str, values: &[String], allowed: &[&str]| {
        let mut values = values.to_vec();
        if let Some(bad) = values.iter().find(|v| !allowed.contains(&v.as_str())) {
            return Err(AdminError::NotInVocabulary {
                what,
                value: bad.clone(),
                allowed: allowed.join(", "),
            });
        }
        values.sort();
        values.dedup();
        Ok(values)
    };
    project.analysis_scope = AnalysisScope {
        dataset_permissions: checked(
            "dataset permission",
            &scope.dataset_permissions,
            &DATASET_PERMISSIONS,
        )?,
        population_permissions: checked(
            "population permission",
            &scope.population_permissions,
            &POPULATION_PERMISSIONS,
        )?,
        component_access: checked(
            "component access",
            &scope.component_access,
            &COMPONENT_ACCESS,
        )?,
    };
    store.put_project(&project)?;
    Ok(())
}

/// Sets a user's roles in a project (creating the membership).
///
/// # Errors
/// An unknown project or user, a global-only role, or storage failure.
pub fn set_membership(
    store: &Store,
    project: &str,
    username: &str,
    roles: &[Role],
) -> Result<(), AdminError> {
    if store.project(project)?.is_none() {
        return Err(AdminError::Missing {
            kind: "project",
            name: project.to_owned(),
        });
    }
    if store.user(username)?.is_none() {
        return Err(AdminError::Missing {
            kind: "user",
            name: username.to_owned(),
        });
    }
    if let Some(&role) = roles.iter().find(|r| r.scope() == Scope::Global) {
        return Err(AdminError::GlobalRole { role });
    }
    store.put_membership(&Membership {
        project: project.to_owned(),
        username: username.to_owned(),
        roles: roles.to_vec(),
    })?;
    Ok(())
}

/// A fresh backend token: 20 random bytes as 40 hex characters, as the reference makes them.
pub fn new_backend_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Creates an active backend and returns its token (shown once; only its hash is kept).
///
/// # Errors
/// A taken or invalid slug, or storage failure.
pub fn add_backend(store: &Store, slug: &str, name: &str) -> Result<String, AdminError> {
    check_slug("backend slug", slug)?;
    if store.backend(slug)?.is_some() {
        return Err(AdminError::Exists {
            kind: "backend",
            name: slug.to_owned(),
        });
    }
    let token = new_backend_token();
    store.put_backend(&Backend {
        slug: slug.to_owned(),
        name: name.to_owned(),
        is_active: true,
        token_hash: hash_secret(&token),
        last_seen: None,
        paused: false,
        db_maintenance: false,
        db_maintenance_since: None,
    })?;
    Ok(token)
}

/// Replaces a backend's token; the old one stops working at once.
///
/// # Errors
/// An unknown backend, or storage failure.
pub fn rotate_backend_token(store: &Store, slug: &str) -> Result<String, AdminError> {
    let mut backend = store.backend(slug)?.ok_or_else(|| AdminError::Missing {
        kind: "backend",
        name: slug.to_owned(),
    })?;
    let token = new_backend_token();
    backend.token_hash = hash_secret(&token);
    store.put_backend(&backend)?;
    Ok(token)
}

/// Makes a user a member of a backend.
///
/// # Errors
/// An unknown backend or user, or storage failure.
pub fn add_backend_member(store: &Store, backend: &str, username: &str) -> Result<(), AdminError> {
    if store.backend(backend)?.is_none() {
        return Err(AdminError::Missing {
            kind: "backend",
            name: backend.to_owned(),
        });
    }
    if store.user(username)?.is_none() {
        return Err(AdminError::Missing {
            kind: "user",
            name: username.to_owned(),
        });
    }
    store.add_backend_membership(backend, username)?;
    Ok(())
}
