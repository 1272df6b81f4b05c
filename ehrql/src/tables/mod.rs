//! Table schemas (spec §3.4): the trusted registry that serialized definitions refer to by
//! `(module, name)`. Definitions can never bring their own table definitions (trust boundary:
//! permissions and constraints live here).
//!
//! Provided: `ehrql.tables.core` (`patients`, `practice_registrations`, `clinical_events`,
//! `medications`, `ons_deaths`), the tables of `ehrql.tables.tpp` that typical studies use
//! (see [`TPP_TABLES`]; its `patients` *is* the core table, as in the reference, so it is keyed
//! `ehrql.tables.core`), and the conformance suite's `tests.spec.tables`
//! (`patient_level_table`, `event_level_table`).

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

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
    /// Strings matching this regular expression (literals, `[..]` classes, `{n}` counts).
    Regex(&'static str),
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

const CORE: &str = "ehrql.tables.core";
const TPP: &str = "ehrql.tables.tpp";

/// The tables `ehrql.tables.tpp` provides here (a subset of the reference's 29).
pub const TPP_TABLES: [&str; 16] = [
    "addresses",
    "apcs",
    "appointments",
    "clinical_events",
    "decision_support_values",
    "emergency_care_attendances",
    "ethnicity_from_sus",
    "household_memberships_2020",
    "medications",
    "occupation_on_covid_vaccine_record",
    "ons_deaths",
    "patients",
    "practice_registrations",
    "sgss_covid_all_tests",
    "ukrr",
    "vaccinations",
];

/// The UK Renal Registry's cohort codes (TPP's `UKRR.dataset`) and their ehrQL names.
pub const UKRR_DATASETS: [(&str, &str); 5] = [
    ("2019prev", "2019_prevalence"),
    ("2020prev", "2020_prevalence"),
    ("2021prev", "2021_prevalence"),
    ("2020inc", "2020_incidence"),
    ("2020ckd", "2020_ckd"),
];

/// The trusted table named by a serialized `external_ref`, or imported by a definition.
/// `ehrql.tables.tpp.patients` is the core table (the reference's tpp module re-exports it).
pub fn lookup(module: &str, name: &str) -> Option<Arc<TableSchema>> {
    let module = if module == TPP && name == "patients" {
        CORE
    } else {
        module
    };
    all_tables()
        .into_iter()
        .find(|t| t.module == module && t.name == name)
}

/// Every table in the registry.
pub fn all_tables() -> Vec<Arc<TableSchema>> {
    static REGISTRY: OnceLock<Vec<Arc<TableSchema>>> = OnceLock::new();
    REGISTRY.get_or_init(build_registry).clone()
}

fn build_registry() -> Vec<Arc<TableSchema>> {
    use Constraint::*;
    use ScalarType::*;
    const SPEC: &str = "tests.spec.tables";
    let sex = strings(&["female", "male", "intersex", "unknown"]);
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
    let registration_columns = vec![
        col("start_date", Date, vec![NotNull]),
        col("end_date", Date, vec![]),
        col("practice_pseudo_id", Int, vec![NotNull]),
    ];
    let mut tables = vec![
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
            registration_columns.clone(),
        ),
        table(CORE, "ons_deaths", true, ons_columns.clone()),
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
    ];
    tables.extend(tpp_tables(registration_columns, ons_columns));
    tables
}

fn strings(values: &[&str]) -> Constraint {
    Constraint::Categorical(values.iter().map(|s| Value::Str((*s).into())).collect())
}

/// `ehrql.tables.tpp` (spec §3.4): names, types, constraints and permissions as in the
/// reference. The core tables it extends come first in their columns, as Python's subclassing
/// orders them.
fn tpp_tables(
    mut registration_columns: Vec<ColumnSchema>,
    mut ons_columns: Vec<ColumnSchema>,
) -> Vec<Arc<TableSchema>> {
    use Constraint::*;
    use ScalarType::*;
    registration_columns.extend([
        col("practice_stp", Str, vec![Regex("E540000[0-9]{2}")]),
        col(
            "practice_nuts1_region_name",
            Str,
            vec![strings(&[
                "North East",
                "North West",
                "Yorkshire and The Humber",
                "East Midlands",
                "West Midlands",
                "East",
                "London",
                "South East",
                "South West",
            ])],
        ),
        col("practice_systmone_go_live_date", Date, vec![]),
    ]);
    ons_columns.push(col(
        "place",
        Str,
        vec![strings(&[
            "Care Home",
            "Elsewhere",
            "Home",
            "Hospice",
            "Hospital",
            "Other communal establishment",
        ])],
    ));
    let mut ec_columns = vec![
        col("id", Int, vec![NotNull]),
        col("arrival_date", Date, vec![]),
        col("discharge_destination", Code(CodeSystem::SnomedCt), vec![]),
    ];
    ec_columns.extend((1..=24).map(|i| {
        col(
            &format!("diagnosis_{i:02}"),
            Code(CodeSystem::SnomedCt),
            vec![],
        )
    }));
    let appointment_statuses = [
        "Booked",
        "Arrived",
        "Did Not Attend",
        "In Progress",
        "Finished",
        "Requested",
        "Blocked",
        "Visit",
        "Waiting",
        "Cancelled by Patient",
        "Cancelled by Unit",
        "Cancelled by Other Service",
        "No Access Visit",
        "Cancelled Due To Death",
        "Patient Walked Out",
    ];
    let ethnicity_codes: Vec<String> = "ABCDEFGHJKLMNPRS".chars().map(String::from).collect();
    let ethnicity_codes: Vec<&str> = ethnicity_codes.iter().map(String::as_str).collect();
    let mut appointments = table(
        TPP,
        "appointments",
        false,
        vec![
            col("booked_date", Date, vec![]),
            col("start_date", Date, vec![]),
            col("seen_date", Date, vec![]),
            col("status", Str, vec![strings(&appointment_statuses)]),
        ],
    );
    Arc::make_mut(&mut appointments).required_permission = Some("appointments".into());
    let mut sgss = table(
        TPP,
        "sgss_covid_all_tests",
        false,
        vec![
            col("specimen_taken_date", Date, vec![NotNull]),
            col("is_positive", Bool, vec![NotNull]),
            col("lab_report_date", Date, vec![NotNull]),
            col("was_symptomatic", Bool, vec![]),
            col(
                "sgtf_status",
                Int,
                vec![ClosedRange {
                    min: 0,
                    max: 9,
                    step: 1,
                }],
            ),
            col("variant", Str, vec![]),
            col(
                "variant_detection_method",
                Str,
                vec![strings(&[
                    "Private Lab Sequencing",
                    "Reflex Assay",
                    "Sanger Provisional Result",
                ])],
            ),
        ],
    );
    Arc::make_mut(&mut sgss).required_permission = Some("sgss_covid_all_tests".into());
    let mut occupation = table(
        TPP,
        "occupation_on_covid_vaccine_record",
        false,
        vec![col("is_healthcare_worker", Bool, vec![])],
    );
    Arc::make_mut(&mut occupation).required_permission =
        Some("occupation_on_covid_vaccine_record".into());
    let mut ukrr = table(
        TPP,
        "ukrr",
        false,
        vec![
            col(
                "dataset",
                Str,
                vec![strings(&UKRR_DATASETS.map(|(_, name)| name))],
            ),
            col("renal_centre", Str, vec![]),
            col("rrt_start_date", Date, vec![]),
            col("latest_creatinine", Float, vec![]),
            col("latest_egfr", Float, vec![]),
            col("treatment_modality_start", Str, vec![]),
            col("treatment_modality_prevalence", Str, vec![]),
        ],
    );
    Arc::make_mut(&mut ukrr).required_permission = Some("ukrr".into());
    vec![
        table(
            TPP,
            "addresses",
            false,
            vec![
                col("address_id", Int, vec![]),
                col("start_date", Date, vec![]),
                col("end_date", Date, vec![]),
                col(
                    "address_type",
                    Int,
                    vec![Categorical(vec![
                        Value::Int(0),
                        Value::Int(1),
                        Value::Int(3),
                    ])],
                ),
                col(
                    "rural_urban_classification",
                    Int,
                    vec![ClosedRange {
                        min: 1,
                        max: 8,
                        step: 1,
                    }],
                ),
                col(
                    "imd_rounded",
                    Int,
                    vec![ClosedRange {
                        min: 0,
                        max: 32_800,
                        step: 100,
                    }],
                ),
                col("msoa_code", Str, vec![Regex("E020[0-9]{5}")]),
                col("has_postcode", Bool, vec![]),
                col("care_home_is_potential_match", Bool, vec![]),
                col("care_home_requires_nursing", Bool, vec![]),
                col("care_home_does_not_require_nursing", Bool, vec![]),
            ],
        ),
        table(
            TPP,
            "apcs",
            false,
            vec![
                col("apcs_ident", Int, vec![NotNull]),
                col("admission_date", Date, vec![]),
                col("discharge_date", Date, vec![]),
                col("discharge_destination", Str, vec![]),
                col("discharge_method", Str, vec![]),
                col("spell_core_hrg_sus", Str, vec![]),
                col("admission_method", Str, vec![]),
                col("primary_diagnosis", Code(CodeSystem::Icd10), vec![]),
                col("secondary_diagnosis", Code(CodeSystem::Icd10), vec![]),
                col(
                    "all_diagnoses",
                    MultiCodeString(MultiCodeSystem::Icd10),
                    vec![],
                ),
                col(
                    "all_procedures",
                    MultiCodeString(MultiCodeSystem::Opcs4),
                    vec![],
                ),
                col("days_in_critical_care", Int, vec![]),
                col("patient_classification", Str, vec![]),
            ],
        ),
        appointments,
        table(
            TPP,
            "clinical_events",
            false,
            vec![
                col("date", Date, vec![]),
                col("snomedct_code", Code(CodeSystem::SnomedCt), vec![]),
                col("ctv3_code", Code(CodeSystem::Ctv3), vec![]),
                col("numeric_value", Float, vec![]),
                col("consultation_id", Int, vec![]),
            ],
        ),
        table(
            TPP,
            "decision_support_values",
            false,
            vec![
                col("calculation_date", Date, vec![]),
                col("numeric_value", Float, vec![]),
                col("algorithm_description", Str, vec![]),
                col("algorithm_version", Str, vec![]),
            ],
        ),
        table(TPP, "emergency_care_attendances", false, ec_columns),
        table(
            TPP,
            "ethnicity_from_sus",
            true,
            vec![col("code", Str, vec![strings(&ethnicity_codes)])],
        ),
        table(
            TPP,
            "household_memberships_2020",
            true,
            vec![
                col("household_pseudo_id", Int, vec![]),
                col("household_size", Int, vec![]),
            ],
        ),
        table(
            TPP,
            "medications",
            false,
            vec![
                col("date", Date, vec![]),
                col("dmd_code", Code(CodeSystem::Dmd), vec![]),
                col("consultation_id", Int, vec![]),
            ],
        ),
        occupation,
        table(TPP, "ons_deaths", true, ons_columns),
        table(TPP, "practice_registrations", false, registration_columns),
        sgss,
        ukrr,
        table(
            TPP,
            "vaccinations",
            false,
            vec![
                col("vaccination_id", Int, vec![]),
                col("date", Date, vec![]),
                col("target_disease", Str, vec![]),
                col("product_name", Str, vec![]),
            ],
        ),
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
        // The tpp module's patients is the core table.
        assert_eq!(lookup("ehrql.tables.tpp", "patients").unwrap().module, CORE);
    }

    #[test]
    fn every_tpp_table_is_registered() {
        for name in TPP_TABLES {
            assert!(lookup(TPP, name).is_some(), "{name}");
        }
        let events = lookup(TPP, "clinical_events").unwrap();
        assert_eq!(events.columns[2].name, "ctv3_code");
        let appointments = lookup(TPP, "appointments").unwrap();
        assert_eq!(
            appointments.required_permission.as_deref(),
            Some("appointments")
        );
        let registrations = lookup(TPP, "practice_registrations").unwrap();
        assert_eq!(
            registrations.column("practice_stp").unwrap().constraints,
            vec![Constraint::Regex("E540000[0-9]{2}")]
        );
    }
}
