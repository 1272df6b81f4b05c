//! Table schemas (spec §3.4): the trusted registry that serialized definitions refer to by
//! `(module, name)`. Definitions can never bring their own table definitions (trust boundary:
//! permissions and constraints live here).
//!
//! Provided: `ehrql.tables.core` (`patients`, `practice_registrations`, `clinical_events`,
//! `medications`, `ons_deaths`) and the conformance suite's `tests.spec.tables`
//! (`patient_level_table`, `event_level_table`).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::query_model::{CodeSystem, MultiCodeSystem, ScalarType, Value};

/// A column constraint (spec §3.4). Categories become output metadata (Arrow dictionaries);
/// ranges narrow Arrow integer types.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// Never NULL.
    NotNull,
    /// Unique per table.
    Unique,
    /// Dates are the 1st of a month.
    FirstOfMonth,
    /// One of these values, in declaration order.
    Categorical(Vec<Value>),
    /// An integer range with a step.
    ClosedRange {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
        /// Step.
        step: i64,
    },
}

/// One column of a table.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSchema {
    /// The ehrQL column name.
    pub name: String,
    /// Its type.
    pub ty: ScalarType,
    /// Its constraints.
    pub constraints: Vec<Constraint>,
}

impl ColumnSchema {
    /// The categories, if the column is categorical.
    pub fn categories(&self) -> Option<&[Value]> {
        self.constraints.iter().find_map(|c| match c {
            Constraint::Categorical(v) => Some(v.as_slice()),
            _ => None,
        })
    }

    /// Whether the column is declared NOT NULL.
    pub fn not_null(&self) -> bool {
        self.constraints.contains(&Constraint::NotNull)
    }
}

/// A table's schema. Identity is `(module, name)`.
#[derive(Clone, Debug)]
pub struct TableSchema {
    /// The Python module that defines it (`ehrql.tables.core`).
    pub module: String,
    /// The table name; also the physical table name under the default backend.
    pub name: String,
    /// One row per patient?
    pub patient_level: bool,
    /// Columns (without the implicit `patient_id`).
    pub columns: Vec<ColumnSchema>,
    /// A permission needed to read it, besides `event_level_data` for event tables.
    pub required_permission: Option<String>,
}

impl TableSchema {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }
}

impl PartialEq for TableSchema {
    fn eq(&self, other: &TableSchema) -> bool {
        self.module == other.module && self.name == other.name
    }
}

impl Eq for TableSchema {}

impl Hash for TableSchema {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.module.hash(state);
        self.name.hash(state);
    }
}

fn col(name: &str, ty: ScalarType, constraints: Vec<Constraint>) -> ColumnSchema {
    ColumnSchema {
        name: name.to_string(),
        ty,
        constraints,
    }
}

fn table(
    module: &str,
    name: &str,
    patient_level: bool,
    columns: Vec<ColumnSchema>,
) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        module: module.to_string(),
        name: name.to_string(),
        patient_level,
        columns,
        required_permission: None,
    })
}

/// The trusted table named by a serialized `external_ref`.
pub fn lookup(module: &str, name: &str) -> Option<Arc<TableSchema>> {
    all_tables()
        .into_iter()
        .find(|t| t.module == module && t.name == name)
}

/// Every table in the registry.
pub fn all_tables() -> Vec<Arc<TableSchema>> {
    use Constraint::*;
    use ScalarType::*;
    const CORE: &str = "ehrql.tables.core";
    const SPEC: &str = "tests.spec.tables";
    let sex = Categorical(
        ["female", "male", "intersex", "unknown"]
            .iter()
            .map(|s| Value::Str((*s).into()))
            .collect(),
    );
    let mut ons_columns = vec![
        col("date", Date, vec![]),
        col("underlying_cause_of_death", Code(CodeSystem::Icd10), vec![]),
    ];
    for i in 1..=15 {
        ons_columns.push(col(
            &format!("cause_of_death_{i:02}"),
            Code(CodeSystem::Icd10),
            vec![],
        ));
    }
    let spec_columns = |patient_level: bool| {
        let mut columns = vec![col("i1", Int, vec![]), col("i2", Int, vec![])];
        if !patient_level {
            columns.push(col("i3", Int, vec![]));
        }
        columns.extend([
            col("b1", Bool, vec![]),
            col("b2", Bool, vec![]),
            col("c1", Code(CodeSystem::SnomedCt), vec![]),
        ]);
        if patient_level {
            columns.push(col("m1", MultiCodeString(MultiCodeSystem::Icd10), vec![]));
            columns.push(col("m2", MultiCodeString(MultiCodeSystem::Opcs4), vec![]));
        }
        columns.extend([
            col("d1", Date, vec![]),
            col("d2", Date, vec![]),
            col("s1", Str, vec![]),
            col("s2", Str, vec![]),
            col("f1", Float, vec![]),
            col("f2", Float, vec![]),
        ]);
        columns
    };
    vec![
        table(
            CORE,
            "patients",
            true,
            vec![
                col("date_of_birth", Date, vec![NotNull, FirstOfMonth]),
                col("sex", Str, vec![NotNull, sex]),
                col("date_of_death", Date, vec![]),
            ],
        ),
        table(
            CORE,
            "practice_registrations",
            false,
            vec![
                col("start_date", Date, vec![NotNull]),
                col("end_date", Date, vec![]),
                col("practice_pseudo_id", Int, vec![NotNull]),
            ],
        ),
        table(CORE, "ons_deaths", true, ons_columns),
        table(
            CORE,
            "clinical_events",
            false,
            vec![
                col("date", Date, vec![]),
                col("snomedct_code", Code(CodeSystem::SnomedCt), vec![]),
                col("numeric_value", Float, vec![]),
            ],
        ),
        table(
            CORE,
            "medications",
            false,
            vec![
                col("date", Date, vec![]),
                col("dmd_code", Code(CodeSystem::Dmd), vec![]),
            ],
        ),
        table(SPEC, "patient_level_table", true, spec_columns(true)),
        table(SPEC, "event_level_table", false, spec_columns(false)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_tables_are_registered_with_their_columns() {
        let patients = lookup("ehrql.tables.core", "patients").unwrap();
        assert!(patients.patient_level);
        let sex = patients.column("sex").unwrap();
        assert_eq!(sex.categories().unwrap().len(), 4);
        assert!(sex.not_null());
        let events = lookup("ehrql.tables.core", "clinical_events").unwrap();
        assert!(!events.patient_level);
        assert_eq!(
            events.column("snomedct_code").unwrap().ty,
            ScalarType::Code(CodeSystem::SnomedCt)
        );
        assert!(lookup("ehrql.tables.core", "nonexistent").is_none());
        assert!(lookup("ehrql.tables.tpp", "patients").is_none());
    }
}
