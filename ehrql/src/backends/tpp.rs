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
//! | `DirectionsAcknowledged` | `Organisation_ID` | activated practices; applied unless `include_gp_unactivated` |
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
//!
//! Activation (unless `include_gp_unactivated`): a practice is activated when it has a
//! `DirectionsAcknowledged` row. A patient's activation end date is the latest `EndDate` of
//! their registrations at activated practices when a registration at an unactivated practice
//! ends later, and the ceiling `9999-12-31` otherwise. Patients with no activated registration are removed like opt-outs;
//! `practice_registrations` keeps only registrations at activated practices; and the tables
//! with an activation filter field (`clinical_events.date`, `medications.date`) keep only rows
//! whose date is on or before the patient's activation end date. Deviation: a NULL date
//! counts as the ceiling, so it is kept while the activation end date is the ceiling (the
//! reference's `NULL <= end_date` drops it); this keeps core data with undated events
//! expressible in raw TPP tables.

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
    /// `include_gp_unactivated` permission: skip the GP activation filter.
    pub include_gp_unactivated: bool,
    /// `TEMP_DATABASE_NAME`: where `CustomMedicationDictionary` lives.
    pub temp_database_name: Option<String>,
}

impl TppOptions {
    /// Options from the granted permissions and `TEMP_DATABASE_NAME`.
    pub fn new(permissions: &Permissions, temp_database_name: Option<String>) -> TppOptions {
        TppOptions {
            include_t1oo: permissions.contains("include_t1oo"),
            include_ndoo: permissions.contains("include_ndoo"),
            include_gp_unactivated: permissions.contains("include_gp_unactivated"),
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
    let raw_directionsacknowledged = raw("DirectionsAcknowledged");
    let activated_org = |alias: &str| {
        format!(
            "EXISTS (SELECT 1 FROM {raw_directionsacknowledged} AS da WHERE da.\"Organisation_ID\" = {alias}.\"Organisation_ID\")"
        )
    };
    let raw_end = |alias: &str| match flavour {
        SqlFlavour::Sqlite => format!("date({alias}.\"EndDate\")"),
        SqlFlavour::Postgres => format!("CAST({alias}.\"EndDate\" AS DATE)"),
    };
    let ceiling = match flavour {
        SqlFlavour::Sqlite => "'9999-12-31'",
        SqlFlavour::Postgres => "DATE '9999-12-31'",
    };
    // Each activated patient's activation end date (see the module documentation).
    let activated = format!(
        "SELECT acked.pid AS patient_id, CASE WHEN unacked.last_end IS NOT NULL \
         AND unacked.last_end > acked.last_end THEN acked.last_end ELSE {ceiling} END AS end_date \
         FROM (SELECT ra.\"Patient_ID\" AS pid, MAX({}) AS last_end FROM {raw_registrationhistory} AS ra \
         WHERE {} GROUP BY ra.\"Patient_ID\") AS acked \
         LEFT JOIN (SELECT ru.\"Patient_ID\" AS pid, MAX({}) AS last_end FROM {raw_registrationhistory} AS ru \
         WHERE NOT {} GROUP BY ru.\"Patient_ID\") AS unacked ON unacked.pid = acked.pid",
        raw_end("ra"),
        activated_org("ra"),
        raw_end("ru"),
        activated_org("ru"),
    );
    // Rows dated after the patient's activation end date are dropped.
    let on_or_before_activation = |alias: &str, date_sql: String| {
        if options.include_gp_unactivated {
            String::new()
        } else {
            format!(
                " AND COALESCE({date_sql}, {ceiling}) <= (SELECT act.end_date FROM ({activated}) AS act \
                 WHERE act.patient_id = {alias}.\"Patient_ID\")"
            )
        }
    };
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
        if !options.include_gp_unactivated {
            conditions.push(format!(
                "{alias}.\"Patient_ID\" IN (SELECT act.patient_id FROM ({activated}) AS act)"
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
             JOIN {raw_organisation} AS o ON o.\"Organisation_ID\" = r.\"Organisation_ID\" WHERE {}{}",
            date("r.\"StartDate\""),
            date("r.\"EndDate\""),
            keep("r"),
            if options.include_gp_unactivated {
                String::new()
            } else {
                format!(" AND {}", activated_org("r"))
            }
        ),
        "clinical_events" => format!(
            "SELECT e.\"Patient_ID\" AS patient_id, {} AS date, CAST(NULL AS TEXT) AS snomedct_code, \
             e.\"NumericValue\" AS numeric_value FROM {raw_codedevent} AS e WHERE {}{} \
             UNION ALL \
             SELECT s.\"Patient_ID\" AS patient_id, {} AS date, s.\"ConceptID\" AS snomedct_code, \
             s.\"NumericValue\" AS numeric_value FROM {raw_codedevent_snomed} AS s WHERE {}{}",
            date("e.\"ConsultationDate\""),
            keep("e"),
            on_or_before_activation("e", date("e.\"ConsultationDate\"")),
            date("s.\"ConsultationDate\""),
            keep("s"),
            on_or_before_activation("s", date("s.\"ConsultationDate\""))
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
                 ON d.\"MultilexDrug_ID\" = m.\"MultilexDrug_ID\" WHERE {}{}",
                date("m.\"ConsultationDate\""),
                keep("m"),
                on_or_before_activation("m", date("m.\"ConsultationDate\""))
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
        table("DirectionsAcknowledged", &[("Organisation_ID", Int)]),
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
/// Every practice is activated (a `DirectionsAcknowledged` row); a patient with no registration
/// gets an open-ended one at an activated practice with no `Organisation` row, so they count as
/// activated (activation end date the ceiling) while `practice_registrations` stays unchanged.
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
    let mut registered = BTreeSet::new();
    for (id, v) in rows("practice_registrations") {
        patients.insert(id);
        registered.insert(id);
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
    // A practice id no real practice uses, for the activation-only registrations.
    let hidden_practice = practices.first().map_or(-1, |first| first.min(&0) - 1);
    for practice in &practices {
        out.entry("Organisation")
            .or_default()
            .push(vec![Value::Int(*practice)]);
        out.entry("DirectionsAcknowledged")
            .or_default()
            .push(vec![Value::Int(*practice)]);
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
    let mut hidden_used = false;
    for id in &patients {
        if !registered.contains(id) {
            hidden_used = true;
            out.entry("RegistrationHistory").or_default().push(vec![
                Value::Int(*id),
                sentinel(),
                sentinel(),
                Value::Int(hidden_practice),
            ]);
        }
    }
    if hidden_used {
        out.entry("DirectionsAcknowledged")
            .or_default()
            .push(vec![Value::Int(hidden_practice)]);
    }
    for id in patients {
        out.entry("PatientsWithoutNDOO")
            .or_default()
            .push(vec![Value::Int(id)]);
    }
    out
}
