//! Backends (spec §4): how ehrQL's tables are found in one provider's database.
//!
//! Without a backend (`expectations`, `test`, or none), every ehrQL table is a physical table
//! of the same name and columns: the reference's default backend. The [`tpp`] backend maps
//! TPP-shaped raw tables (`Patient`, `CodedEvent`, …) to ehrQL's tables by SQL. The mapping is
//! installed as temporary views named after the ehrQL tables before the dataset's queries run:
//! SQLite and PostgreSQL both look temporary objects up first, so the compiled SQL is the same
//! with or without a backend, and the query engines need know nothing about backends.
//!
//! Also here: the environment that configures a backend (`EHRQL_PERMISSIONS`,
//! `TEMP_DATABASE_NAME`), parsed once and checked.

pub mod tpp;

use std::collections::BTreeSet;

use crate::query_model::Dataset;

/// A named backend (`--backend` or `OPENSAFELY_BACKEND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// TPP's SystmOne-derived database (`tpp`).
    Tpp,
}

/// Why a backend setting was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// An unknown backend name.
    #[error("unknown backend '{0}': use 'tpp', or 'expectations' or 'test' for no backend")]
    Unknown(String),
    /// `EHRQL_PERMISSIONS` is not a JSON list of strings.
    #[error("EHRQL_PERMISSIONS must be a JSON list of strings, like [\"include_t1oo\"]; got {0}")]
    Permissions(String),
    /// A table the backend does not provide.
    #[error("table '{0}' is not available on the {1} backend")]
    TableNotAvailable(String, &'static str),
}

/// Parses a backend name: `None` means no backend (the default, table-named-as-ehrQL one).
/// `expectations` and `test` are what job-runners set locally and mean no backend; the
/// reference's dotted class path is accepted as an alias.
///
/// # Errors
/// An unknown name.
pub fn parse_backend(name: Option<&str>) -> Result<Option<Backend>, BackendError> {
    match name.map(str::trim) {
        None | Some("" | "expectations" | "test") => Ok(None),
        Some("tpp" | "ehrql.backends.tpp.TPPBackend") => Ok(Some(Backend::Tpp)),
        Some(other) => Err(BackendError::Unknown(other.to_string())),
    }
}

/// Permissions granted to a run (spec §3.5): `EHRQL_PERMISSIONS` with a database, the
/// definition's `claim_permissions(...)` without one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions(BTreeSet<String>);

impl Permissions {
    /// Permissions from `EHRQL_PERMISSIONS` (absent or empty means none).
    ///
    /// # Errors
    /// The value is not a JSON list of strings.
    pub fn from_env_value(value: Option<&str>) -> Result<Permissions, BackendError> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Permissions::default());
        };
        let parsed: serde_json::Value = serde_json::from_str(value)
            .map_err(|_| BackendError::Permissions(format!("'{value}'")))?;
        let Some(items) = parsed.as_array() else {
            return Err(BackendError::Permissions(format!("'{value}'")));
        };
        let mut permissions = BTreeSet::new();
        for item in items {
            let Some(permission) = item.as_str() else {
                return Err(BackendError::Permissions(format!("'{value}'")));
            };
            permissions.insert(permission.to_string());
        }
        Ok(Permissions(permissions))
    }

    /// These permissions.
    pub fn new(permissions: impl IntoIterator<Item = String>) -> Permissions {
        Permissions(permissions.into_iter().collect())
    }

    /// Whether `permission` is granted.
    pub fn contains(&self, permission: &str) -> bool {
        self.0.contains(permission)
    }
}

/// The dataset reads something it has no permission for (spec §3.5).
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} requires the '{permission}' permission, which this run does not have (real runs: \
     EHRQL_PERMISSIONS from the project's analysis scope; dummy runs: claim_permissions(...))"
)]
pub struct PermissionError {
    /// What needs it: a table, or event-level output.
    pub what: String,
    /// The missing permission.
    pub permission: String,
}

/// Checks that every table the dataset reads, and its event tables, are permitted.
///
/// # Errors
/// The first missing permission, in table-name order.
pub fn check_permissions(
    dataset: &Dataset,
    permissions: &Permissions,
) -> Result<(), PermissionError> {
    if !dataset.events().is_empty() && !permissions.contains("event_level_data") {
        return Err(PermissionError {
            what: "an event table (add_event_table)".into(),
            permission: "event_level_data".into(),
        });
    }
    for table in crate::dummy_data::tables_used(dataset) {
        if let Some(permission) = &table.schema.required_permission
            && !permissions.contains(permission)
        {
            return Err(PermissionError {
                what: format!("table '{}'", table.schema.name),
                permission: permission.clone(),
            });
        }
    }
    Ok(())
}
