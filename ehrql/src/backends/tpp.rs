//! The TPP backend (spec §4.2) on SQLite and PostgreSQL: TPP-shaped raw tables mapped to
//! `ehrql.tables.core` by SQL, installed as temporary views named after the ehrQL tables.
//!
//! Raw tables (a subset of TPP's schema, enough for the core tables):
//!
//! | raw table | columns | feeds |
//! |---|---|---|
//! | `Patient` | `Patient_ID`, `DateOfBirth`, `Sex` (`M`/`F`/`I`/other), `DateOfDeath` | `patients` |
//! | `RegistrationHistory` | `Patient_ID`, `StartDate`, `EndDate`, `Organisation_ID` | `practice_registrations` |
//! | `Organisation` | `Organisation_ID` | `practice_registrations` (inner join) |
//! | `CodedEvent` | `Patient_ID`, `ConsultationDate`, `CTV3Code`, `NumericValue` | `clinical_events` (no SNOMED code) |
//! | `CodedEvent_SNOMED` | `Patient_ID`, `ConsultationDate`, `ConceptID`, `NumericValue` | `clinical_events` |
//! | `MedicationIssue` | `Patient_ID`, `ConsultationDate`, `MultilexDrug_ID` | `medications` |
//! | `MedicationDictionary` | `MultilexDrug_ID`, `DMD_ID` | `medications` (left join) |
//! | `ONS_Deaths` | `Patient_ID`, `dod`, `icd10u`, `ICD10001`…`ICD10015` | `ons_deaths` (first per patient) |
//! | `PatientsWithTypeOneDissent` | `Patient_ID` | type 1 opt-outs, excluded unless `include_t1oo` |
//! | `PatientsWithoutNDOO` | `Patient_ID` | patients without a national data opt-out; only they are included unless `include_ndoo` |
//!
//! Rules applied: dates are the date part of TPP's datetimes, and the sentinel `9999-12-31`
//! means NULL; sex `M`/`F`/`I` is `male`/`female`/`intersex`, anything else `unknown`; an empty
//! dm+d id is NULL; with `TEMP_DATABASE_NAME` set, the dm+d dictionary also includes
//! `<TEMP_DATABASE_NAME>.CustomMedicationDictionary` (an attached database on SQLite, a schema
//! on PostgreSQL).
//!
//! Opt-outs: the reference ANDs `NOT t1oo` and `patients_without_ndoo` into the population. We
//! remove the opted-out patients from every mapped table instead. That gives the same dataset:
//! a population may not be True for a patient with no rows in any table (spec §2.5), so an
//! opted-out patient can never enter it, and variables are only output for the population.

use std::collections::{BTreeMap, BTreeSet};

use super::{BackendError, Permissions};
use crate::engines::Database;
use crate::query_model::{ScalarType, Value};

/// Where the views will run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlFlavour {
    /// SQLite (dates are ISO text).
    Sqlite,
    /// PostgreSQL (dates are `date` / `timestamp`).
    Postgres,
}

/// Settings from the environment.
#[derive(Clone, Debug, Default)]
pub struct TppOptions {
    /// `include_t1oo` permission: keep type 1 opt-outs.
    pub include_t1oo: bool,
    /// `include_ndoo` permission: keep national data opt-outs.
    pub include_ndoo: bool,
    /// `TEMP_DATABASE_NAME`: where `CustomMedicationDictionary` lives.
    pub temp_database_name: Option<String>,
}

impl TppOptions {
    /// Options from the granted permissions and `TEMP_DATABASE_NAME`.
    pub fn new(permissions: &Permissions, temp_database_name: Option<String>) -> TppOptions {
        TppOptions {
            include_t1oo: permissions.contains("include_t1oo"),
            include_ndoo: permissions.contains("include_ndoo"),
            temp_database_name: temp_database_name.filter(|n| !n.is_empty()),
        }
    }
}

/// The `ehrql.tables.core` tables this backend provides.
pub const TABLES: [&str; 5] = [
    "patients",
    "practice_registrations",
    "clinical_events",
    "medications",
    "ons_deaths",
];

/// `CREATE TEMP VIEW` statements mapping each ehrQL table in `tables` onto the raw tables.
///
/// # Errors
/// A table this backend does not provide.
pub fn view_statements(
    flavour: SqlFlavour,
    options: &TppOptions,
    tables: &[&str],
) -> Result<Vec<String>, BackendError> {
    let mut statements = Vec::new();
    for table in tables {
        let sql = table_sql(flavour, options, table)
            .ok_or_else(|| BackendError::TableNotAvailable(table.to_string(), "tpp"))?;
        statements.push(format!("CREATE TEMP VIEW {table} AS {sql}"));
    }
    Ok(statements)
}

/// The SELECT giving ehrQL table `table` (columns `patient_id` and the schema's, by name).
fn table_sql(flavour: SqlFlavour, options: &TppOptions, table: &str) -> Option<String> {
    let date = |column: &str| match flavour {
        SqlFlavour::Sqlite => format!("NULLIF(date({column}), '9999-12-31')"),
        SqlFlavour::Postgres => {
            format!("NULLIF(CAST({column} AS DATE), DATE '9999-12-31')")
        }
    };
    // SQLite compares names case-insensitively, so `"ONS_Deaths"` would find the temporary
    // view `ons_deaths` itself: raw tables are named with their schema there.
    let raw = |name: &str| match flavour {
        SqlFlavour::Sqlite => format!("main.\"{name}\""),
        SqlFlavour::Postgres => format!("\"{name}\""),
    };
    let raw_patient = raw("Patient");
    let raw_registrationhistory = raw("RegistrationHistory");
    let raw_organisation = raw("Organisation");
    let raw_codedevent_snomed = raw("CodedEvent_SNOMED");
    let raw_codedevent = raw("CodedEvent");
    let raw_medicationissue = raw("MedicationIssue");
    let raw_medicationdictionary = raw("MedicationDictionary");
    let raw_ons_deaths = raw("ONS_Deaths");
    let raw_patientswithtypeonedissent = raw("PatientsWithTypeOneDissent");
    let raw_patientswithoutndoo = raw("PatientsWithoutNDOO");
    let keep = |alias: &str| {
        let mut conditions = vec!["1 = 1".to_string()];
        if !options.include_t1oo {
            conditions.push(format!(
                "{alias}.\"Patient_ID\" NOT IN (SELECT \"Patient_ID\" FROM {raw_patientswithtypeonedissent})"
            ));
        }
        if !options.include_ndoo {
            conditions.push(format!(
                "{alias}.\"Patient_ID\" IN (SELECT \"Patient_ID\" FROM {raw_patientswithoutndoo})"
            ));
        }
        conditions.join(" AND ")
    };
    Some(match table {
        "patients" => format!(
            "SELECT p.\"Patient_ID\" AS patient_id, {} AS date_of_birth, \
             CASE p.\"Sex\" WHEN 'M' THEN 'male' WHEN 'F' THEN 'female' WHEN 'I' THEN 'intersex' ELSE 'unknown' END AS sex, \
             {} AS date_of_death FROM {raw_patient} AS p WHERE {}",
            date("p.\"DateOfBirth\""),
            date("p.\"DateOfDeath\""),
            keep("p")
        ),
        "practice_registrations" => format!(
            "SELECT r.\"Patient_ID\" AS patient_id, {} AS start_date, {} AS end_date, \
             o.\"Organisation_ID\" AS practice_pseudo_id FROM {raw_registrationhistory} AS r \
             JOIN {raw_organisation} AS o ON o.\"Organisation_ID\" = r.\"Organisation_ID\" WHERE {}",
            date("r.\"StartDate\""),
            date("r.\"EndDate\""),
            keep("r")
        ),
        "clinical_events" => format!(
            "SELECT e.\"Patient_ID\" AS patient_id, {} AS date, CAST(NULL AS TEXT) AS snomedct_code, \
             e.\"NumericValue\" AS numeric_value FROM {raw_codedevent} AS e WHERE {} \
             UNION ALL \
             SELECT s.\"Patient_ID\" AS patient_id, {} AS date, s.\"ConceptID\" AS snomedct_code, \
             s.\"NumericValue\" AS numeric_value FROM {raw_codedevent_snomed} AS s WHERE {}",
            date("e.\"ConsultationDate\""),
            keep("e"),
            date("s.\"ConsultationDate\""),
            keep("s")
        ),
        "medications" => {
            let mut dictionary =
                format!("SELECT \"MultilexDrug_ID\", \"DMD_ID\" FROM {raw_medicationdictionary}");
            if let Some(database) = &options.temp_database_name {
                dictionary.push_str(&format!(
                    " UNION SELECT \"MultilexDrug_ID\", \"DMD_ID\" FROM \"{}\".\"CustomMedicationDictionary\"",
                    database.replace('"', "\"\"")
                ));
            }
            format!(
                "SELECT m.\"Patient_ID\" AS patient_id, {} AS date, NULLIF(d.\"DMD_ID\", '') AS dmd_code \
                 FROM {raw_medicationissue} AS m LEFT JOIN ({dictionary}) AS d \
                 ON d.\"MultilexDrug_ID\" = m.\"MultilexDrug_ID\" WHERE {}",
                date("m.\"ConsultationDate\""),
                keep("m")
            )
        }
        "ons_deaths" => {
            let causes: Vec<String> = (1..=15)
                .map(|i| format!("o.\"ICD10{i:03}\" AS cause_of_death_{i:02}"))
                .collect();
            let cause_names: Vec<String> =
                (1..=15).map(|i| format!("cause_of_death_{i:02}")).collect();
            format!(
                "SELECT patient_id, date, underlying_cause_of_death, {} FROM (\
                 SELECT o.\"Patient_ID\" AS patient_id, {} AS date, o.\"icd10u\" AS underlying_cause_of_death, {}, \
                 ROW_NUMBER() OVER (PARTITION BY o.\"Patient_ID\" ORDER BY o.\"dod\", o.\"icd10u\") AS death_rank \
                 FROM {raw_ons_deaths} AS o WHERE {}) AS ranked WHERE death_rank = 1",
                cause_names.join(", "),
                date("o.\"dod\""),
                causes.join(", "),
                keep("o")
            )
        }
        _ => return None,
    })
}

/// A raw TPP table: its name and typed columns.
#[derive(Clone, Debug)]
pub struct RawTable {
    /// The table name.
    pub name: &'static str,
    /// Column names and types (dates are written as `YYYY-MM-DD`).
    pub columns: Vec<(String, ScalarType)>,
}

/// Every raw table the mapping reads.
pub fn raw_tables() -> Vec<RawTable> {
    use ScalarType::{Date, Float, Int, Str};
    let table = |name, columns: &[(&str, ScalarType)]| RawTable {
        name,
        columns: columns.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
    };
    let mut ons = vec![
        ("Patient_ID".to_string(), Int),
        ("dod".to_string(), Date),
        ("icd10u".to_string(), Str),
    ];
    ons.extend((1..=15).map(|i| (format!("ICD10{i:03}"), Str)));
    vec![
        table(
            "Patient",
            &[
                ("Patient_ID", Int),
                ("DateOfBirth", Date),
                ("Sex", Str),
                ("DateOfDeath", Date),
            ],
        ),
        table(
            "RegistrationHistory",
            &[
                ("Patient_ID", Int),
                ("StartDate", Date),
                ("EndDate", Date),
                ("Organisation_ID", Int),
            ],
        ),
        table("Organisation", &[("Organisation_ID", Int)]),
        table(
            "CodedEvent",
            &[
                ("Patient_ID", Int),
                ("ConsultationDate", Date),
                ("CTV3Code", Str),
                ("NumericValue", Float),
            ],
        ),
        table(
            "CodedEvent_SNOMED",
            &[
                ("Patient_ID", Int),
                ("ConsultationDate", Date),
                ("ConceptID", Str),
                ("NumericValue", Float),
            ],
        ),
        table(
            "MedicationIssue",
            &[
                ("Patient_ID", Int),
                ("ConsultationDate", Date),
                ("MultilexDrug_ID", Str),
            ],
        ),
        table(
            "MedicationDictionary",
            &[("MultilexDrug_ID", Str), ("DMD_ID", Str)],
        ),
        RawTable {
            name: "ONS_Deaths",
            columns: ons,
        },
        table("PatientsWithTypeOneDissent", &[("Patient_ID", Int)]),
        table("PatientsWithoutNDOO", &[("Patient_ID", Int)]),
    ]
}

/// `CREATE TABLE` statements for the raw tables.
pub fn create_raw_tables_sql(flavour: SqlFlavour) -> Vec<String> {
    raw_tables()
        .iter()
        .map(|table| {
            let columns: Vec<String> = table
                .columns
                .iter()
                .map(|(name, ty)| {
                    let sql_type = match (flavour, ty) {
                        (_, ScalarType::Int) => "BIGINT",
                        (_, ScalarType::Float) => "DOUBLE PRECISION",
                        (SqlFlavour::Postgres, ScalarType::Date) => "DATE",
                        _ => "TEXT",
                    };
                    format!("\"{name}\" {sql_type}")
                })
                .collect();
            format!("CREATE TABLE \"{}\" ({})", table.name, columns.join(", "))
        })
        .collect()
}

/// The raw TPP rows equivalent to `database`'s core tables (the inverse of the mapping):
/// NULL dates become the sentinel, sexes become codes, events without a SNOMED code go to
/// `CodedEvent`, dm+d codes get Multilex ids through `MedicationDictionary`, every practice gets
/// an `Organisation` row and every patient a `PatientsWithoutNDOO` row (nobody opted out).
/// Rows are keyed by raw table name, values in [`raw_tables`] column order.
pub fn raw_rows_from_core(database: &Database) -> BTreeMap<&'static str, Vec<Vec<Value>>> {
    let sentinel = || Value::Date(crate::query_model::Date::from_ymd(9999, 12, 31).expect("valid"));
    let or_sentinel = |v: &Value| if v.is_null() { sentinel() } else { v.clone() };
    let as_text = |v: &Value| match v.as_str() {
        Some(s) => Value::Str(s.into()),
        None => Value::Null,
    };
    let mut out: BTreeMap<&'static str, Vec<Vec<Value>>> = BTreeMap::new();
    for table in raw_tables() {
        out.insert(table.name, Vec::new());
    }
    let rows = |name: &str| {
        database
            .table(name)
            .map(|t| t.rows.clone())
            .unwrap_or_default()
    };
    let mut patients = BTreeSet::new();
    for (id, v) in rows("patients") {
        patients.insert(id);
        let sex = match v[1].as_str() {
            Some("male") => "M",
            Some("female") => "F",
            Some("intersex") => "I",
            _ => "U",
        };
        out.entry("Patient").or_default().push(vec![
            Value::Int(id),
            v[0].clone(),
            Value::Str(sex.into()),
            or_sentinel(&v[2]),
        ]);
    }
    let mut practices = BTreeSet::new();
    for (id, v) in rows("practice_registrations") {
        patients.insert(id);
        if let Value::Int(practice) = v[2] {
            practices.insert(practice);
        }
        out.entry("RegistrationHistory").or_default().push(vec![
            Value::Int(id),
            or_sentinel(&v[0]),
            or_sentinel(&v[1]),
            v[2].clone(),
        ]);
    }
    for practice in practices {
        out.entry("Organisation")
            .or_default()
            .push(vec![Value::Int(practice)]);
    }
    for (id, v) in rows("clinical_events") {
        patients.insert(id);
        let (table, code) = if v[1].is_null() {
            ("CodedEvent", Value::Null)
        } else {
            ("CodedEvent_SNOMED", as_text(&v[1]))
        };
        out.entry(table).or_default().push(vec![
            Value::Int(id),
            or_sentinel(&v[0]),
            code,
            v[2].clone(),
        ]);
    }
    let mut multilex: BTreeMap<String, String> = BTreeMap::new();
    for (id, v) in rows("medications") {
        patients.insert(id);
        let drug = match v[1].as_str() {
            Some(dmd) => {
                let next = format!("{}", multilex.len() + 1);
                Value::Str(
                    multilex
                        .entry(dmd.to_string())
                        .or_insert(next)
                        .as_str()
                        .into(),
                )
            }
            // A drug the dictionary does not know: the left join gives no dm+d code.
            None => Value::Str("unknown".into()),
        };
        out.entry("MedicationIssue").or_default().push(vec![
            Value::Int(id),
            or_sentinel(&v[0]),
            drug,
        ]);
    }
    for (dmd, drug) in multilex {
        out.entry("MedicationDictionary")
            .or_default()
            .push(vec![Value::Str(drug.into()), Value::Str(dmd.into())]);
    }
    for (id, v) in rows("ons_deaths") {
        patients.insert(id);
        let mut row = vec![Value::Int(id), or_sentinel(&v[0])];
        row.extend(v[1..].iter().map(as_text));
        out.entry("ONS_Deaths").or_default().push(row);
    }
    for id in patients {
        out.entry("PatientsWithoutNDOO")
            .or_default()
            .push(vec![Value::Int(id)]);
    }
    out
}
