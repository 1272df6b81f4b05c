//! Permission checks against the store: A2's `has_permission(user, perm, project)`, with the
//! user's global roles and their roles in that project's membership.

use crate::model::User;
use crate::roles::{Permission, has_permission};
use crate::store::{Store, StoreError};

/// Whether `user` (None = anonymous, never permitted) holds `permission` on `project` (None =
/// global roles only).
///
/// # Errors
/// On storage failure.
pub fn allowed(
    store: &Store,
    user: Option<&User>,
    project: Option<&str>,
    permission: Permission,
) -> Result<bool, StoreError> {
    let Some(user) = user else {
        return Ok(false);
    };
    let project_roles = match project {
        Some(project) => store
            .membership(project, &user.username)?
            .map(|m| m.roles)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(has_permission(&user.roles, &project_roles, permission))
}

/// The backends a user may run jobs on: their memberships, active backends only (A4 step 4).
///
/// # Errors
/// On storage failure.
pub fn runnable_backends(store: &Store, username: &str) -> Result<Vec<String>, StoreError> {
    let mut slugs = Vec::new();
    for slug in store.backends_of_user(username)? {
        if store.backend(&slug)?.is_some_and(|b| b.is_active) {
            slugs.push(slug);
        }
    }
    Ok(slugs)
}
