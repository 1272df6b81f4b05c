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
    /// `TEMP_DATABASE_NAME` cannot be used.
    #[error("TEMP_DATABASE_NAME '{name}': {reason}")]
    TempDatabase {
        /// The name given.
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
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

/// The dataset reads something it has no permission for (spec §3.5). Displayed as the
/// reference words it: for a real run, the missing permissions; for a dummy run, also the
/// `claim_permissions(...)` call that would allow it.
#[derive(Debug, thiserror::Error)]
pub struct PermissionError {
    /// Each missing permission and what needs it.
    pub missing: Vec<(String, String)>,
    /// For dummy runs, the permissions the definition claimed.
    pub claimed: Option<Vec<String>>,
}

impl std::fmt::Display for PermissionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self
            .missing
            .iter()
            .map(|(name, why)| format!("    * {name}: {why}"))
            .collect();
        let list = list.join("\n");
        match &self.claimed {
            None => write!(
                f,
                "You do not currently have all the permissions needed for this action.\n\n\
                 Missing permissions are:\n\n{list}\n\n\
                 If you think this is a mistake and that you should have these permissions \
                 please contact OpenSAFELY support."
            ),
            Some(claimed) => {
                let claim_list: Vec<String> = claimed
                    .iter()
                    .chain(self.missing.iter().map(|(name, _)| name))
                    .map(|p| format!("\"{p}\""))
                    .collect();
                write!(
                    f,
                    "Some of the tables or features you are using require special permission to use with real\n\
                     patient data. The permissions needed are:\n\n{list}\n\n\
                     You can continue to work on your code using dummy data by \u{201c}claiming\u{201d} \
                     the required permisions:\n\n    from ehrql import claim_permissions\n    \
                     claim_permissions({})\n\n\
                     Note that you will only be able to run your code against real data if you actually have these\n\
                     permissions assigned by the OpenSAFELY team. For more information see:\n\
                     https://docs.opensafely.org/ehrql/reference/language/#permissions",
                    claim_list.join(", ")
                )
            }
        }
    }
}

/// Checks that every table the dataset reads, and its event tables, are permitted
/// (`EHRQL_PERMISSIONS` of a real run).
///
/// # Errors
/// Every missing permission: tables' in permission order, then `event_level_data`.
pub fn check_permissions(
    dataset: &Dataset,
    permissions: &Permissions,
) -> Result<(), PermissionError> {
    let missing = missing_permissions(dataset, permissions);
    if missing.is_empty() {
        return Ok(());
    }
    Err(PermissionError {
        missing,
        claimed: None,
    })
}

/// [`check_permissions`] for a dummy-data run, against the definition's
/// `claim_permissions(...)`.
///
/// # Errors
/// As [`check_permissions`], with the claim that would allow the run.
pub fn check_claimed_permissions(
    dataset: &Dataset,
    claimed: &[String],
) -> Result<(), PermissionError> {
    let missing = missing_permissions(dataset, &Permissions::new(claimed.iter().cloned()));
    if missing.is_empty() {
        return Ok(());
    }
    let mut unique: Vec<String> = Vec::new();
    for permission in claimed {
        if !unique.contains(permission) {
            unique.push(permission.clone());
        }
    }
    Err(PermissionError {
        missing,
        claimed: Some(unique),
    })
}

/// Missing permissions and why each is needed, as the reference describes them.
fn missing_permissions(dataset: &Dataset, permissions: &Permissions) -> Vec<(String, String)> {
    let mut tables_by_permission: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for table in crate::dummy_data::tables_used(dataset) {
        if let Some(permission) = &table.schema.required_permission {
            let module = table.schema.module.trim_start_matches("ehrql.tables.");
            tables_by_permission
                .entry(permission.clone())
                .or_default()
                .push(format!("`{module}.{}`", table.schema.name));
        }
    }
    let mut missing = Vec::new();
    for (permission, names) in tables_by_permission {
        if permissions.contains(&permission) {
            continue;
        }
        let tables = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => {
                format!("{} and {last} tables", rest.join(", "))
            }
            _ => format!("{} table", names.join("")),
        };
        missing.push((permission, format!("required for access to the {tables}")));
    }
    if !dataset.events().is_empty() && !permissions.contains("event_level_data") {
        missing.push((
            "event_level_data".to_string(),
            "required in order to use the `dataset.add_event_table()` method".to_string(),
        ));
    }
    missing
}
