//! The TPP backend (spec §4.2) on SQLite and PostgreSQL: TPP-shaped raw tables mapped to
//! `ehrql.tables.core` and the implemented `ehrql.tables.tpp` tables by SQL, installed as
//! temporary views named after the ehrQL tables (each view has the tpp schema's columns, a
//! superset of core's).
//!
//! Raw tables (a subset of TPP's schema: the columns the mappings read; see [`raw_tables`]):
//!
//! | raw table | feeds |
//! |---|---|
//! | `Patient` | `patients` |
//! | `RegistrationHistory` ⋈ `Organisation` (`STPCode`, `Region`, `GoLiveDate`) | `practice_registrations` |
//! | `CodedEvent` (CTV3) ∪ `CodedEvent_SNOMED` | `clinical_events` |
//! | `MedicationIssue` ⟕ `MedicationDictionary` | `medications` |
//! | `ONS_Deaths` | `ons_deaths` (first per patient) |
//! | `PatientAddress` ⟕ `PotentialCareHomeAddress` | `addresses` |
//! | `APCS` ⟕ `APCS_Der` (and `_ARCHIVED`) | `apcs` |
//! | `EC` ⟕ `EC_Diagnosis` (and `_ARCHIVED`) | `emergency_care_attendances` |
//! | `APCS`, `EC`, `OPA` (and `_ARCHIVED`) ethnicity codes | `ethnicity_from_sus` |
//! | `HouseholdMember` ⟕ `Household` | `household_memberships_2020` |
//! | `Appointment` | `appointments` (DISTINCT) |
//! | `Vaccination` ⟕ `VaccinationReference` | `vaccinations` |
//! | `DecisionSupportValue` ⟕ `DecisionSupportValueReference` | `decision_support_values` |
//! | `SGSS_AllTests_Positive` ∪ `SGSS_AllTests_Negative` | `sgss_covid_all_tests` |
//! | `HealthCareWorker` | `occupation_on_covid_vaccine_record` |
//! | `UKRR` | `ukrr` |
//! | `PatientsWithTypeOneDissent` | type 1 opt-outs, excluded unless `include_t1oo` |
//! | `PatientsWithoutNDOO` | patients without a national data opt-out; only they are included unless `include_ndoo` |
//! | `DirectionsAcknowledged` | activated practices; applied unless `include_gp_unactivated` |
//!
//! Rules applied: dates are the date part of TPP's datetimes, and the sentinel `9999-12-31`
//! means NULL; sex `M`/`F`/`I` is `male`/`female`/`intersex`, anything else `unknown`; an empty
//! dm+d id is NULL; with `TEMP_DATABASE_NAME` set, the dm+d dictionary also includes
//! `<TEMP_DATABASE_NAME>.CustomMedicationDictionary` (on SQLite the file `<TEMP_DATABASE_NAME>.db`
//! beside the main database, attached: [`sqlite_temp_database_path`]; a schema on PostgreSQL).
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
//! with an activation filter field (`date` of `clinical_events`, `medications` and
//! `vaccinations`, `appointments.booked_date`) keep only rows
//! whose date is on or before the patient's activation end date. An undated row (TPP's
//! sentinel date, NULL in ehrQL) is dropped, as the reference's `NULL <= end_date` drops it:
//! under the activation filter no undated event reaches a study, so the dummy data generator
//! dates every row of these tables ([`ACTIVATION_FILTER_FIELDS`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{BackendError, Permissions};
use crate::engines::{Database, TableData};
use crate::query_model::{CodeSystem, Dataset, ScalarType, Value};
use crate::sql::CaseInsensitiveColumns;

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

/// The ehrQL tables this backend provides: `ehrql.tables.core`'s and those of
/// `ehrql.tables.tpp` implemented here (each view has the columns of the larger, tpp, schema).
pub const TABLES: [&str; 16] = crate::tables::TPP_TABLES;

/// HES tables are split between the current table and a static `_ARCHIVED` copy around this
/// `Der_Activity_Month` (the two overlap; each row is taken from one side of the cut).
const HES_ARCHIVE_CUTOFF: &str = "202304";

/// TPP's collations (spec §4.2): CTV3 and SNOMED CT code columns are `Latin1_General_BIN`,
/// every other string column (dm+d codes, multi-code strings and text included)
/// `Latin1_General_CI_AS`, comparing case-insensitively. The columns of the tables `dataset`
/// reads that do.
pub fn case_insensitive_columns(dataset: &Dataset) -> CaseInsensitiveColumns {
    let mut columns = Vec::new();
    for table in crate::dummy_data::tables_used(dataset) {
        for column in &table.schema.columns {
            let case_insensitive = match column.ty {
                ScalarType::Code(CodeSystem::Ctv3 | CodeSystem::SnomedCt) => false,
                ScalarType::Str | ScalarType::Code(_) | ScalarType::MultiCodeString(_) => true,
                _ => false,
            };
            if case_insensitive {
                columns.push((table.schema.name.clone(), column.name.clone()));
            }
        }
    }
    CaseInsensitiveColumns::new(columns)
}

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
    // TPP's "no date" sentinel, which is also the ceiling of an activation end date.
    let ceiling = match flavour {
        SqlFlavour::Sqlite => "'9999-12-31'",
        SqlFlavour::Postgres => "DATE '9999-12-31'",
    };
    // Columns TPP stores as dates (or datetimes) with no sentinel.
    let plain_date = |column: &str| match flavour {
        SqlFlavour::Sqlite => format!("date({column})"),
        SqlFlavour::Postgres => format!("CAST({column} AS DATE)"),
    };
    let date = |column: &str| format!("NULLIF({}, {ceiling})", plain_date(column));
    let int = match flavour {
        SqlFlavour::Sqlite => "INTEGER",
        SqlFlavour::Postgres => "BIGINT",
    };
    // A HES query over the current table (rows from the cut-off month on) and the archive
    // (rows before it): `query(suffix)` is the query for one table, ending in a WHERE that is
    // extended with the cut on `alias`'s `Der_Activity_Month`.
    let hes_union = |alias: &str, query: &dyn Fn(&str) -> String| {
        [("", ">="), ("_ARCHIVED", "<")]
            .iter()
            .map(|(suffix, op)| {
                format!(
                    "{} AND {alias}.\"Der_Activity_Month\" {op} '{HES_ARCHIVE_CUTOFF}'",
                    query(suffix)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
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
    let raw_end = |alias: &str| plain_date(&format!("{alias}.\"EndDate\""));
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
                " AND {date_sql} <= (SELECT act.end_date FROM ({activated}) AS act \
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
             o.\"Organisation_ID\" AS practice_pseudo_id, NULLIF(o.\"STPCode\", '') AS practice_stp, \
             NULLIF(o.\"Region\", '') AS practice_nuts1_region_name, \
             {} AS practice_systmone_go_live_date FROM {raw_registrationhistory} AS r \
             JOIN {raw_organisation} AS o ON o.\"Organisation_ID\" = r.\"Organisation_ID\" WHERE {}{}",
            date("r.\"StartDate\""),
            date("r.\"EndDate\""),
            plain_date("o.\"GoLiveDate\""),
            keep("r"),
            if options.include_gp_unactivated {
                String::new()
            } else {
                format!(" AND {}", activated_org("r"))
            }
        ),
        "clinical_events" => format!(
            "SELECT e.\"Patient_ID\" AS patient_id, {} AS date, CAST(NULL AS TEXT) AS snomedct_code, \
             e.\"CTV3Code\" AS ctv3_code, e.\"NumericValue\" AS numeric_value, \
             e.\"Consultation_ID\" AS consultation_id FROM {raw_codedevent} AS e WHERE {}{} \
             UNION ALL \
             SELECT s.\"Patient_ID\" AS patient_id, {} AS date, s.\"ConceptID\" AS snomedct_code, \
             CAST(NULL AS TEXT) AS ctv3_code, s.\"NumericValue\" AS numeric_value, \
             s.\"Consultation_ID\" AS consultation_id FROM {raw_codedevent_snomed} AS s WHERE {}{}",
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
                "SELECT m.\"Patient_ID\" AS patient_id, {} AS date, NULLIF(d.\"DMD_ID\", '') AS dmd_code, \
                 m.\"Consultation_ID\" AS consultation_id \
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
                "SELECT patient_id, date, underlying_cause_of_death, {}, place FROM (\
                 SELECT o.\"Patient_ID\" AS patient_id, {} AS date, o.\"icd10u\" AS underlying_cause_of_death, {}, \
                 o.\"Place_of_occurrence\" AS place, \
                 ROW_NUMBER() OVER (PARTITION BY o.\"Patient_ID\" ORDER BY o.\"dod\", o.\"icd10u\") AS death_rank \
                 FROM {raw_ons_deaths} AS o WHERE {}) AS ranked WHERE death_rank = 1",
                cause_names.join(", "),
                date("o.\"dod\""),
                causes.join(", "),
                keep("o")
            )
        }
        "addresses" => format!(
            "SELECT a.\"Patient_ID\" AS patient_id, a.\"PatientAddress_ID\" AS address_id, \
             {} AS start_date, {} AS end_date, a.\"AddressType\" AS address_type, \
             NULLIF(a.\"RuralUrbanClassificationCode\", -1) AS rural_urban_classification, \
             NULLIF(a.\"ImdRankRounded\", -1) AS imd_rounded, \
             CASE WHEN a.\"MSOACode\" NOT IN ('NPC', '') THEN a.\"MSOACode\" END AS msoa_code, \
             CASE WHEN a.\"MSOACode\" NOT IN ('NPC', '') THEN TRUE ELSE FALSE END AS has_postcode, \
             CASE WHEN c.\"PatientAddress_ID\" IS NOT NULL THEN TRUE ELSE FALSE END AS care_home_is_potential_match, \
             CASE c.\"LocationRequiresNursing\" WHEN 'Y' THEN TRUE WHEN 'N' THEN FALSE END AS care_home_requires_nursing, \
             CASE c.\"LocationDoesNotRequireNursing\" WHEN 'Y' THEN TRUE WHEN 'N' THEN FALSE END AS care_home_does_not_require_nursing \
             FROM {} AS a LEFT JOIN {} AS c ON c.\"PatientAddress_ID\" = a.\"PatientAddress_ID\" WHERE {}",
            date("a.\"StartDate\""),
            date("a.\"EndDate\""),
            raw("PatientAddress"),
            raw("PotentialCareHomeAddress"),
            keep("a")
        ),
        "apcs" => hes_union("a", &|suffix: &str| {
            format!(
                "SELECT a.\"Patient_ID\" AS patient_id, a.\"APCS_Ident\" AS apcs_ident, \
                 {} AS admission_date, {} AS discharge_date, \
                 a.\"Discharge_Destination\" AS discharge_destination, a.\"Discharge_Method\" AS discharge_method, \
                 a.\"Spell_Core_HRG_SUS\" AS spell_core_hrg_sus, a.\"Admission_Method\" AS admission_method, \
                 d.\"Spell_Primary_Diagnosis\" AS primary_diagnosis, d.\"Spell_Secondary_Diagnosis\" AS secondary_diagnosis, \
                 a.\"Der_Diagnosis_All\" AS all_diagnoses, a.\"Der_Procedure_All\" AS all_procedures, \
                 CAST(d.\"Spell_PbR_CC_Day\" AS {int}) AS days_in_critical_care, \
                 a.\"Patient_Classification\" AS patient_classification \
                 FROM {} AS a LEFT JOIN {} AS d ON d.\"APCS_Ident\" = a.\"APCS_Ident\" WHERE {}",
                plain_date("a.\"Admission_Date\""),
                plain_date("a.\"Discharge_Date\""),
                raw(&format!("APCS{suffix}")),
                raw(&format!("APCS_Der{suffix}")),
                keep("a")
            )
        }),
        "emergency_care_attendances" => hes_union("e", &|suffix: &str| {
            let diagnoses: Vec<String> = (1..=24)
                .map(|i| format!("d.\"EC_Diagnosis_{i:02}\" AS diagnosis_{i:02}"))
                .collect();
            format!(
                "SELECT e.\"Patient_ID\" AS patient_id, e.\"EC_Ident\" AS id, {} AS arrival_date, \
                 e.\"Discharge_Destination_SNOMED_CT\" AS discharge_destination, {} \
                 FROM {} AS e LEFT JOIN {} AS d ON d.\"EC_Ident\" = e.\"EC_Ident\" WHERE {}",
                plain_date("e.\"Arrival_Date\""),
                diagnoses.join(", "),
                raw(&format!("EC{suffix}")),
                raw(&format!("EC_Diagnosis{suffix}")),
                keep("e")
            )
        }),
        "ethnicity_from_sus" => {
            // Each patient's most frequent national ethnicity code over the SUS tables, the
            // alphabetically last on a tie; "not stated" and "not known" codes are skipped.
            let codes = [
                ("APCS", "Ethnic_Group"),
                ("EC", "Ethnic_Category"),
                ("OPA", "Ethnic_Category"),
            ]
            .iter()
            .map(|(table, column)| {
                hes_union("s", &|suffix: &str| {
                    format!(
                        "SELECT s.\"Patient_ID\" AS pid, substr(s.\"{column}\", 1, 1) AS code \
                             FROM {} AS s WHERE {}",
                        raw(&format!("{table}{suffix}")),
                        keep("s")
                    )
                })
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
            format!(
                "SELECT pid AS patient_id, code FROM (SELECT pid, code, ROW_NUMBER() OVER \
                 (PARTITION BY pid ORDER BY COUNT(code) DESC, code DESC) AS code_rank \
                 FROM ({codes}) AS codes WHERE code IS NOT NULL AND code NOT IN ('', '9', 'Z') \
                 GROUP BY pid, code) AS ranked WHERE code_rank = 1"
            )
        }
        "household_memberships_2020" => format!(
            "SELECT m.\"Patient_ID\" AS patient_id, NULLIF(h.\"Household_ID\", 0) AS household_pseudo_id, \
             NULLIF(h.\"HouseholdSize\", 0) AS household_size FROM {} AS m \
             LEFT JOIN {} AS h ON h.\"Household_ID\" = m.\"Household_ID\" WHERE {}",
            raw("HouseholdMember"),
            raw("Household"),
            keep("m")
        ),
        "appointments" => {
            let statuses: Vec<String> = APPOINTMENT_STATUSES
                .iter()
                .map(|(code, name)| format!("WHEN {code} THEN '{name}'"))
                .collect();
            // The raw table has duplicate rows: DISTINCT, as in the reference.
            format!(
                "SELECT DISTINCT a.\"Appointment_ID\" AS appointment_id, a.\"Patient_ID\" AS patient_id, \
                 {} AS booked_date, {} AS start_date, {} AS seen_date, \
                 CASE a.\"Status\" {} END AS status FROM {} AS a WHERE {}{}",
                plain_date("a.\"BookedDate\""),
                plain_date("a.\"StartDate\""),
                date("a.\"SeenDate\""),
                statuses.join(" "),
                raw("Appointment"),
                keep("a"),
                on_or_before_activation("a", plain_date("a.\"BookedDate\""))
            )
        }
        "vaccinations" => format!(
            "SELECT v.\"Patient_ID\" AS patient_id, v.\"Vaccination_ID\" AS vaccination_id, \
             {} AS date, r.\"VaccinationContent\" AS target_disease, v.\"VaccinationName\" AS product_name \
             FROM {} AS v LEFT JOIN {} AS r ON r.\"VaccinationName_ID\" = v.\"VaccinationName_ID\" WHERE {}{}",
            plain_date("v.\"VaccinationDate\""),
            raw("Vaccination"),
            raw("VaccinationReference"),
            keep("v"),
            on_or_before_activation("v", plain_date("v.\"VaccinationDate\""))
        ),
        "decision_support_values" => format!(
            "SELECT v.\"Patient_ID\" AS patient_id, {} AS calculation_date, \
             v.\"NumericValue\" AS numeric_value, r.\"AlgorithmDescription\" AS algorithm_description, \
             r.\"AlgorithmVersion\" AS algorithm_version FROM {} AS v \
             LEFT JOIN {} AS r ON r.\"AlgorithmType\" = v.\"AlgorithmType\" WHERE {}",
            date("v.\"CalculationDateTime\""),
            raw("DecisionSupportValue"),
            raw("DecisionSupportValueReference"),
            keep("v")
        ),
        // `Symptomatic` is Y/N in the positive results and true/false in the negative ones.
        "sgss_covid_all_tests" => format!(
            "SELECT p.\"Patient_ID\" AS patient_id, {} AS specimen_taken_date, TRUE AS is_positive, \
             {} AS lab_report_date, CASE p.\"Symptomatic\" WHEN 'Y' THEN TRUE WHEN 'N' THEN FALSE END AS was_symptomatic, \
             CAST(NULLIF(p.\"SGTF\", '') AS {int}) AS sgtf_status, NULLIF(p.\"Variant\", '') AS variant, \
             NULLIF(p.\"VariantDetectionMethod\", '') AS variant_detection_method FROM {} AS p WHERE {} \
             UNION ALL \
             SELECT n.\"Patient_ID\" AS patient_id, {} AS specimen_taken_date, FALSE AS is_positive, \
             {} AS lab_report_date, CASE n.\"Symptomatic\" WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END AS was_symptomatic, \
             CAST(NULL AS {int}) AS sgtf_status, CAST(NULL AS TEXT) AS variant, \
             CAST(NULL AS TEXT) AS variant_detection_method FROM {} AS n WHERE {}",
            plain_date("p.\"Specimen_Date\""),
            plain_date("p.\"Lab_Report_Date\""),
            raw("SGSS_AllTests_Positive"),
            keep("p"),
            plain_date("n.\"Specimen_Date\""),
            plain_date("n.\"Lab_Report_Date\""),
            raw("SGSS_AllTests_Negative"),
            keep("n")
        ),
        "occupation_on_covid_vaccine_record" => format!(
            "SELECT h.\"Patient_ID\" AS patient_id, TRUE AS is_healthcare_worker FROM {} AS h WHERE {}",
            raw("HealthCareWorker"),
            keep("h")
        ),
        "ukrr" => {
            let datasets: Vec<String> = crate::tables::UKRR_DATASETS
                .iter()
                .map(|(code, name)| format!("WHEN '{code}' THEN '{name}'"))
                .collect();
            format!(
                "SELECT u.\"Patient_ID\" AS patient_id, CASE u.\"dataset\" {} END AS dataset, \
                 u.\"renal_centre\" AS renal_centre, {} AS rrt_start_date, u.\"creat\" AS latest_creatinine, \
                 u.\"eGFR_ckdepi\" AS latest_egfr, u.\"mod_start\" AS treatment_modality_start, \
                 u.\"mod_prev\" AS treatment_modality_prevalence FROM {} AS u WHERE {}",
                datasets.join(" "),
                plain_date("u.\"rrt_start\""),
                raw("UKRR"),
                keep("u")
            )
        }
        _ => return None,
    })
}

/// `Appointment.Status` codes and their names.
const APPOINTMENT_STATUSES: [(i64, &str); 15] = [
    (0, "Booked"),
    (1, "Arrived"),
    (2, "Did Not Attend"),
    (3, "In Progress"),
    (4, "Finished"),
    (5, "Requested"),
    (6, "Blocked"),
    (8, "Visit"),
    (9, "Waiting"),
    (10, "Cancelled by Patient"),
    (11, "Cancelled by Unit"),
    (12, "Cancelled by Other Service"),
    (14, "No Access Visit"),
    (15, "Cancelled Due To Death"),
    (16, "Patient Walked Out"),
];

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
    ons.push(("Place_of_occurrence".to_string(), Str));
    let apcs: &[(&str, ScalarType)] = &[
        ("Patient_ID", Int),
        ("APCS_Ident", Int),
        ("Admission_Date", Date),
        ("Discharge_Date", Date),
        ("Discharge_Destination", Str),
        ("Discharge_Method", Str),
        ("Spell_Core_HRG_SUS", Str),
        ("Admission_Method", Str),
        ("Der_Diagnosis_All", Str),
        ("Der_Procedure_All", Str),
        ("Patient_Classification", Str),
        ("Ethnic_Group", Str),
        ("Der_Activity_Month", Str),
    ];
    let apcs_der: &[(&str, ScalarType)] = &[
        ("APCS_Ident", Int),
        ("Spell_PbR_CC_Day", Str),
        ("Spell_Primary_Diagnosis", Str),
        ("Spell_Secondary_Diagnosis", Str),
    ];
    let ec: &[(&str, ScalarType)] = &[
        ("Patient_ID", Int),
        ("EC_Ident", Int),
        ("Arrival_Date", Date),
        ("Discharge_Destination_SNOMED_CT", Str),
        ("Ethnic_Category", Str),
        ("Der_Activity_Month", Str),
    ];
    let mut ec_diagnosis = vec![("EC_Ident".to_string(), Int)];
    ec_diagnosis.extend((1..=24).map(|i| (format!("EC_Diagnosis_{i:02}"), Str)));
    let opa: &[(&str, ScalarType)] = &[
        ("Patient_ID", Int),
        ("Ethnic_Category", Str),
        ("Der_Activity_Month", Str),
    ];
    let mut tables = vec![
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
        table(
            "Organisation",
            &[
                ("Organisation_ID", Int),
                ("STPCode", Str),
                ("Region", Str),
                ("GoLiveDate", Date),
            ],
        ),
        table(
            "CodedEvent",
            &[
                ("Patient_ID", Int),
                ("ConsultationDate", Date),
                ("CTV3Code", Str),
                ("NumericValue", Float),
                ("Consultation_ID", Int),
            ],
        ),
        table(
            "CodedEvent_SNOMED",
            &[
                ("Patient_ID", Int),
                ("ConsultationDate", Date),
                ("ConceptID", Str),
                ("NumericValue", Float),
                ("Consultation_ID", Int),
            ],
        ),
        table(
            "MedicationIssue",
            &[
                ("Patient_ID", Int),
                ("ConsultationDate", Date),
                ("MultilexDrug_ID", Str),
                ("Consultation_ID", Int),
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
        table(
            "PatientAddress",
            &[
                ("Patient_ID", Int),
                ("PatientAddress_ID", Int),
                ("StartDate", Date),
                ("EndDate", Date),
                ("AddressType", Int),
                ("RuralUrbanClassificationCode", Int),
                ("ImdRankRounded", Int),
                ("MSOACode", Str),
            ],
        ),
        table(
            "PotentialCareHomeAddress",
            &[
                ("PatientAddress_ID", Int),
                ("LocationRequiresNursing", Str),
                ("LocationDoesNotRequireNursing", Str),
            ],
        ),
        table("APCS", apcs),
        table("APCS_ARCHIVED", apcs),
        table("APCS_Der", apcs_der),
        table("APCS_Der_ARCHIVED", apcs_der),
        table("EC", ec),
        table("EC_ARCHIVED", ec),
        table("OPA", opa),
        table("OPA_ARCHIVED", opa),
        table(
            "Appointment",
            &[
                ("Appointment_ID", Int),
                ("Patient_ID", Int),
                ("BookedDate", Date),
                ("StartDate", Date),
                ("SeenDate", Date),
                ("Status", Int),
            ],
        ),
        table(
            "HouseholdMember",
            &[("Patient_ID", Int), ("Household_ID", Int)],
        ),
        table(
            "Household",
            &[("Household_ID", Int), ("HouseholdSize", Int)],
        ),
        table(
            "Vaccination",
            &[
                ("Patient_ID", Int),
                ("Vaccination_ID", Int),
                ("VaccinationDate", Date),
                ("VaccinationName", Str),
                ("VaccinationName_ID", Int),
            ],
        ),
        table(
            "VaccinationReference",
            &[("VaccinationName_ID", Int), ("VaccinationContent", Str)],
        ),
    ];
    tables.extend([
        table(
            "DecisionSupportValue",
            &[
                ("Patient_ID", Int),
                ("CalculationDateTime", Date),
                ("NumericValue", Float),
                ("AlgorithmType", Int),
            ],
        ),
        table(
            "DecisionSupportValueReference",
            &[
                ("AlgorithmType", Int),
                ("AlgorithmDescription", Str),
                ("AlgorithmVersion", Str),
            ],
        ),
        table(
            "SGSS_AllTests_Positive",
            &[
                ("Patient_ID", Int),
                ("Specimen_Date", Date),
                ("Lab_Report_Date", Date),
                ("Symptomatic", Str),
                ("SGTF", Str),
                ("Variant", Str),
                ("VariantDetectionMethod", Str),
            ],
        ),
        table(
            "SGSS_AllTests_Negative",
            &[
                ("Patient_ID", Int),
                ("Specimen_Date", Date),
                ("Lab_Report_Date", Date),
                ("Symptomatic", Str),
            ],
        ),
    ]);
    tables.extend([
        table("HealthCareWorker", &[("Patient_ID", Int)]),
        table(
            "UKRR",
            &[
                ("Patient_ID", Int),
                ("dataset", Str),
                ("renal_centre", Str),
                ("creat", Float),
                ("eGFR_ckdepi", Float),
                ("rrt_start", Date),
                ("mod_start", Str),
                ("mod_prev", Str),
            ],
        ),
    ]);
    for name in ["EC_Diagnosis", "EC_Diagnosis_ARCHIVED"] {
        tables.push(RawTable {
            name,
            columns: ec_diagnosis.clone(),
        });
    }
    tables
}

/// On SQLite, the database file `TEMP_DATABASE_NAME` names: `<name>.db` in the directory of
/// the main database file, attached under the schema name `name` so the mapping's
/// `"<name>"."CustomMedicationDictionary"` finds it (on MSSQL it names a database on the same
/// server, on PostgreSQL a schema). The name may hold only ASCII letters, digits, `_` and `-`,
/// so it can never point outside that directory, and may not be SQLite's own `main` or
/// `temp`.
///
/// # Errors
/// A name outside those rules, or no such file.
pub fn sqlite_temp_database_path(main: &Path, name: &str) -> Result<PathBuf, BackendError> {
    let refuse = |reason: String| BackendError::TempDatabase {
        name: name.to_string(),
        reason,
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !name.chars().all(allowed) {
        return Err(refuse(
            "on SQLite it names a database file <name>.db beside the main database, so it may \
             contain only letters, digits, '_' and '-'"
                .into(),
        ));
    }
    if name.eq_ignore_ascii_case("main") || name.eq_ignore_ascii_case("temp") {
        return Err(refuse(
            "'main' and 'temp' are SQLite's own database names".into(),
        ));
    }
    let path = main.with_file_name(format!("{name}.db"));
    if !path.is_file() {
        return Err(refuse(format!(
            "there is no database file {} beside the main database",
            path.display()
        )));
    }
    Ok(path)
}

/// The ehrQL tables whose rows the activation filter limits, and the date it compares with
/// the patient's activation end date (the reference's `activation_filter_field`).
pub const ACTIVATION_FILTER_FIELDS: [(&str, &str); 4] = [
    ("clinical_events", "date"),
    ("medications", "date"),
    ("vaccinations", "date"),
    ("appointments", "booked_date"),
];

/// Whether `name` is one of the raw tables the mapping reads (SQLite reports names as
/// written in the query, PostgreSQL as stored: both match exactly).
pub fn is_raw_table(name: &str) -> bool {
    raw_tables().iter().any(|table| table.name == name)
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

/// The raw TPP rows equivalent to `database`'s ehrQL tables (the inverse of the mapping):
/// NULL dates become the sentinel where the mapping reads one, NULL numbers `-1` or `0` where
/// it maps those to NULL, sexes and appointment statuses become codes, events without a
/// SNOMED code go to `CodedEvent`, dm+d codes get Multilex ids through `MedicationDictionary`,
/// vaccination target diseases come through `VaccinationReference`, HES rows go to the current
/// tables (after the archive cut-off), each `ethnicity_from_sus` code becomes one `OPA` row,
/// every practice gets an `Organisation` row (its attributes from its first registration) and
/// every patient a `PatientsWithoutNDOO` row (nobody opted out).
/// Every practice is activated (a `DirectionsAcknowledged` row); a patient with no registration
/// gets an open-ended one at an activated practice with no `Organisation` row, so they count as
/// activated (activation end date the ceiling) while `practice_registrations` stays unchanged.
/// Data the raw tables cannot express (two rows sharing a join key with different details, an
/// event with both a CTV3 and a SNOMED CT code) does not round-trip; the dummy data generator
/// never makes it.
/// Rows are keyed by raw table name, values in [`raw_tables`] column order.
pub fn raw_rows_from_core(database: &Database) -> BTreeMap<&'static str, Vec<Vec<Value>>> {
    let sentinel = || Value::Date(crate::query_model::Date::from_ymd(9999, 12, 31).expect("valid"));
    let or_sentinel = |v: Value| if v.is_null() { sentinel() } else { v };
    let or_int = |v: Value, null: i64| if v.is_null() { Value::Int(null) } else { v };
    let text = |v: Value| match v.as_str() {
        Some(s) => Value::Str(s.into()),
        None => Value::Null,
    };
    let flag = |v: Value| match v.as_bool() {
        Some(true) => Value::Str("Y".into()),
        Some(false) => Value::Str("N".into()),
        None => Value::Null,
    };
    // A HES month after the archive cut-off: rows go to the current tables.
    let current_month = || Value::Str("202401".into());
    let mut out: BTreeMap<&'static str, Vec<Vec<Value>>> = BTreeMap::new();
    for table in raw_tables() {
        out.insert(table.name, Vec::new());
    }
    let mut patients = BTreeSet::new();
    let mut push = |table: &'static str, row: Vec<Value>| {
        out.entry(table).or_default().push(row);
    };
    let mut rows = |name: &str| {
        let rows = core_rows(database, name);
        patients.extend(rows.iter().map(|(id, _)| *id));
        rows
    };
    for (id, r) in rows("patients") {
        let sex = match r.get("sex").as_str() {
            Some("male") => "M",
            Some("female") => "F",
            Some("intersex") => "I",
            _ => "U",
        };
        push(
            "Patient",
            vec![
                Value::Int(id),
                r.get("date_of_birth"),
                Value::Str(sex.into()),
                or_sentinel(r.get("date_of_death")),
            ],
        );
    }
    let mut practices: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    let mut registered = BTreeSet::new();
    for (id, r) in rows("practice_registrations") {
        registered.insert(id);
        if let Value::Int(practice) = r.get("practice_pseudo_id") {
            practices.entry(practice).or_insert_with(|| {
                vec![
                    Value::Int(practice),
                    r.get("practice_stp"),
                    r.get("practice_nuts1_region_name"),
                    r.get("practice_systmone_go_live_date"),
                ]
            });
        }
        push(
            "RegistrationHistory",
            vec![
                Value::Int(id),
                or_sentinel(r.get("start_date")),
                or_sentinel(r.get("end_date")),
                r.get("practice_pseudo_id"),
            ],
        );
    }
    // A practice id no real practice uses, for the activation-only registrations.
    let hidden_practice = practices
        .keys()
        .next()
        .map_or(-1, |first| first.min(&0) - 1);
    for (practice, organisation) in practices {
        push("Organisation", organisation);
        push("DirectionsAcknowledged", vec![Value::Int(practice)]);
    }
    for (id, r) in rows("clinical_events") {
        let snomed = text(r.get("snomedct_code"));
        let (table, code) = if snomed.is_null() {
            ("CodedEvent", text(r.get("ctv3_code")))
        } else {
            ("CodedEvent_SNOMED", snomed)
        };
        push(
            table,
            vec![
                Value::Int(id),
                or_sentinel(r.get("date")),
                code,
                r.get("numeric_value"),
                r.get("consultation_id"),
            ],
        );
    }
    let mut multilex: BTreeMap<String, String> = BTreeMap::new();
    for (id, r) in rows("medications") {
        let drug = match r.get("dmd_code").as_str() {
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
        push(
            "MedicationIssue",
            vec![
                Value::Int(id),
                or_sentinel(r.get("date")),
                drug,
                r.get("consultation_id"),
            ],
        );
    }
    for (dmd, drug) in multilex {
        push(
            "MedicationDictionary",
            vec![Value::Str(drug.into()), Value::Str(dmd.into())],
        );
    }
    for (id, r) in rows("ons_deaths") {
        let mut row = vec![
            Value::Int(id),
            or_sentinel(r.get("date")),
            text(r.get("underlying_cause_of_death")),
        ];
        row.extend((1..=15).map(|i| text(r.get(&format!("cause_of_death_{i:02}")))));
        row.push(r.get("place"));
        push("ONS_Deaths", row);
    }
    for (id, r) in rows("addresses") {
        push(
            "PatientAddress",
            vec![
                Value::Int(id),
                r.get("address_id"),
                or_sentinel(r.get("start_date")),
                or_sentinel(r.get("end_date")),
                r.get("address_type"),
                or_int(r.get("rural_urban_classification"), -1),
                or_int(r.get("imd_rounded"), -1),
                r.get("msoa_code"),
            ],
        );
        if r.get("care_home_is_potential_match").as_bool() == Some(true) {
            push(
                "PotentialCareHomeAddress",
                vec![
                    r.get("address_id"),
                    flag(r.get("care_home_requires_nursing")),
                    flag(r.get("care_home_does_not_require_nursing")),
                ],
            );
        }
    }
    for (id, r) in rows("apcs") {
        push(
            "APCS",
            vec![
                Value::Int(id),
                r.get("apcs_ident"),
                r.get("admission_date"),
                r.get("discharge_date"),
                r.get("discharge_destination"),
                r.get("discharge_method"),
                r.get("spell_core_hrg_sus"),
                r.get("admission_method"),
                r.get("all_diagnoses"),
                r.get("all_procedures"),
                r.get("patient_classification"),
                Value::Null,
                current_month(),
            ],
        );
        let critical_care = match r.get("days_in_critical_care") {
            Value::Int(days) => Value::Str(days.to_string().into()),
            _ => Value::Null,
        };
        push(
            "APCS_Der",
            vec![
                r.get("apcs_ident"),
                critical_care,
                text(r.get("primary_diagnosis")),
                text(r.get("secondary_diagnosis")),
            ],
        );
    }
    for (id, r) in rows("emergency_care_attendances") {
        push(
            "EC",
            vec![
                Value::Int(id),
                r.get("id"),
                r.get("arrival_date"),
                text(r.get("discharge_destination")),
                Value::Null,
                current_month(),
            ],
        );
        let mut diagnoses = vec![r.get("id")];
        diagnoses.extend((1..=24).map(|i| text(r.get(&format!("diagnosis_{i:02}")))));
        push("EC_Diagnosis", diagnoses);
    }
    for (id, r) in rows("ethnicity_from_sus") {
        push("OPA", vec![Value::Int(id), r.get("code"), current_month()]);
    }
    let mut households = BTreeMap::new();
    for (id, r) in rows("household_memberships_2020") {
        let household = r.get("household_pseudo_id");
        if let Value::Int(household) = household {
            households
                .entry(household)
                .or_insert_with(|| or_int(r.get("household_size"), 0));
        }
        push("HouseholdMember", vec![Value::Int(id), household]);
    }
    for (household, size) in households {
        push("Household", vec![Value::Int(household), size]);
    }
    for (appointment, (id, r)) in rows("appointments").into_iter().enumerate() {
        let status = r.get("status");
        let code = APPOINTMENT_STATUSES
            .iter()
            .find(|(_, name)| status.as_str() == Some(name))
            .map_or(Value::Null, |(code, _)| Value::Int(*code));
        push(
            "Appointment",
            vec![
                Value::Int(appointment as i64 + 1),
                Value::Int(id),
                r.get("booked_date"),
                r.get("start_date"),
                or_sentinel(r.get("seen_date")),
                code,
            ],
        );
    }
    // One vaccine name id per (product, target disease): the reference table gives the
    // target disease (none for a NULL one).
    let mut vaccine_names: BTreeMap<(Option<String>, Option<String>), i64> = BTreeMap::new();
    for (id, r) in rows("vaccinations") {
        let product = r.get("product_name");
        let target = r.get("target_disease").as_str().map(String::from);
        let next = vaccine_names.len() as i64 + 1;
        let name_id = *vaccine_names
            .entry((product.as_str().map(String::from), target))
            .or_insert(next);
        push(
            "Vaccination",
            vec![
                Value::Int(id),
                r.get("vaccination_id"),
                r.get("date"),
                product,
                Value::Int(name_id),
            ],
        );
    }
    for ((_, target), name_id) in vaccine_names {
        if let Some(target) = target {
            push(
                "VaccinationReference",
                vec![Value::Int(name_id), Value::Str(target.into())],
            );
        }
    }
    // One algorithm type per (description, version); the reference table names it (a type
    // with neither has no reference row).
    let mut algorithms: BTreeMap<(Option<String>, Option<String>), i64> = BTreeMap::new();
    for (id, r) in rows("decision_support_values") {
        let key = (
            r.get("algorithm_description").as_str().map(String::from),
            r.get("algorithm_version").as_str().map(String::from),
        );
        let next = algorithms.len() as i64 + 1;
        let algorithm = *algorithms.entry(key).or_insert(next);
        push(
            "DecisionSupportValue",
            vec![
                Value::Int(id),
                or_sentinel(r.get("calculation_date")),
                r.get("numeric_value"),
                Value::Int(algorithm),
            ],
        );
    }
    for ((description, version), algorithm) in algorithms {
        if description.is_some() || version.is_some() {
            let text = |v: Option<String>| v.map_or(Value::Null, |s| Value::Str(s.into()));
            push(
                "DecisionSupportValueReference",
                vec![Value::Int(algorithm), text(description), text(version)],
            );
        }
    }
    for (id, r) in rows("sgss_covid_all_tests") {
        let symptomatic = r.get("was_symptomatic").as_bool();
        if r.get("is_positive").as_bool() == Some(false) {
            let symptomatic = symptomatic.map_or(Value::Null, |s| Value::Str(s.to_string().into()));
            push(
                "SGSS_AllTests_Negative",
                vec![
                    Value::Int(id),
                    r.get("specimen_taken_date"),
                    r.get("lab_report_date"),
                    symptomatic,
                ],
            );
        } else {
            let sgtf = match r.get("sgtf_status") {
                Value::Int(status) => Value::Str(status.to_string().into()),
                _ => Value::Null,
            };
            push(
                "SGSS_AllTests_Positive",
                vec![
                    Value::Int(id),
                    r.get("specimen_taken_date"),
                    r.get("lab_report_date"),
                    flag(r.get("was_symptomatic")),
                    sgtf,
                    r.get("variant"),
                    r.get("variant_detection_method"),
                ],
            );
        }
    }
    for (id, _) in rows("occupation_on_covid_vaccine_record") {
        push("HealthCareWorker", vec![Value::Int(id)]);
    }
    for (id, r) in rows("ukrr") {
        let dataset = r.get("dataset");
        let code = crate::tables::UKRR_DATASETS
            .iter()
            .find(|(_, name)| dataset.as_str() == Some(name))
            .map_or(Value::Null, |(code, _)| Value::Str((*code).into()));
        push(
            "UKRR",
            vec![
                Value::Int(id),
                code,
                r.get("renal_centre"),
                r.get("latest_creatinine"),
                r.get("latest_egfr"),
                r.get("rrt_start_date"),
                r.get("treatment_modality_start"),
                r.get("treatment_modality_prevalence"),
            ],
        );
    }
    let mut hidden_used = false;
    for id in &patients {
        if !registered.contains(id) {
            hidden_used = true;
            push(
                "RegistrationHistory",
                vec![
                    Value::Int(*id),
                    sentinel(),
                    sentinel(),
                    Value::Int(hidden_practice),
                ],
            );
        }
    }
    if hidden_used {
        push("DirectionsAcknowledged", vec![Value::Int(hidden_practice)]);
    }
    for id in patients {
        push("PatientsWithoutNDOO", vec![Value::Int(id)]);
    }
    out
}

/// The rows of ehrQL table `name` in `database` (none if it is absent).
fn core_rows<'d>(database: &'d Database, name: &str) -> Vec<(i64, CoreRow<'d>)> {
    database
        .table(name)
        .map(|t| {
            t.rows
                .iter()
                .map(|(id, values)| (*id, CoreRow { table: t, values }))
                .collect()
        })
        .unwrap_or_default()
}

/// One row of an ehrQL table, read by column name (NULL for a column its schema lacks, as
/// when core-shaped data is written as TPP tables).
struct CoreRow<'a> {
    table: &'a TableData,
    values: &'a [Value],
}

impl CoreRow<'_> {
    fn get(&self, column: &str) -> Value {
        self.table
            .schema
            .columns
            .iter()
            .position(|c| c.name == column)
            .map_or(Value::Null, |i| self.values[i].clone())
    }
}
