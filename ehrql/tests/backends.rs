//! Backends and the environment (issue #9), through the built binary: the `tpp` backend maps
//! TPP-shaped raw tables to ehrQL's tables and gives the same CSV as the default backend on the
//! equivalent core tables (SQLite and PostgreSQL), applying the opt-out rules and their
//! permissions; `DATABASE_URL`, `OPENSAFELY_BACKEND` and `EHRQL_PERMISSIONS` act as in the
//! reference, with its exit codes.

mod postgres_support;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use ehrql::backends::tpp::{self, SqlFlavour};
use ehrql::dummy_data;
use ehrql::engines::{ColumnSpec, Database};
use ehrql::frontend::language::load_source;
use ehrql::local_files::{self, FileColumn};
use ehrql::query_model::{Date, Value};
use rusqlite::Connection;
use support::{ehrql, ehrql_with_env, stderr};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/language")
}

/// A study directory with the realistic fixture definition, plus core data for it: the
/// definition's own dummy data (200 patients who all satisfy its population, with events,
/// medications, registrations and deaths).
fn study() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["analysis", "codelists"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in fs::read_dir(fixtures().join(sub)).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name())).unwrap();
        }
    }
    let source = fs::read_to_string(fixtures().join("analysis/full_study.py"))
        .unwrap()
        .replace("population_size=50", "population_size=200");
    let definition = load_source(&source, "full_study.py", &fixtures()).unwrap();
    let generated = dummy_data::generate(&definition, Date::from_ymd(2025, 6, 1).unwrap()).unwrap();
    (dir, generated.database)
}

const STUDY: &str = "analysis/full_study.py";

fn sql_literal(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Bool(b) => (if *b { "1" } else { "0" }).into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Date(d) => format!("'{d}'"),
        Value::Str(s) | Value::Code(_, s) => format!("'{}'", s.replace('\'', "''")),
    }
}

/// The raw TPP tables holding `database`'s data, as SQL for `flavour`, in one transaction.
fn tpp_sql(database: &Database, flavour: SqlFlavour) -> String {
    let mut sql = String::from("BEGIN;\n");
    sql.push_str(&tpp::create_raw_tables_sql(flavour).join(";\n"));
    sql.push_str(";\n");
    for (table, rows) in tpp::raw_rows_from_core(database) {
        for row in rows {
            let values: Vec<String> = row.iter().map(sql_literal).collect();
            sql.push_str(&format!(
                "INSERT INTO \"{table}\" VALUES ({});\n",
                values.join(", ")
            ));
        }
    }
    sql.push_str("COMMIT;\n");
    sql
}

fn sqlite_databases(dir: &Path, database: &Database) {
    let mut core = Connection::open(dir.join("core.db")).unwrap();
    ehrql::engines::sqlite::load_database(&mut core, database).unwrap();
    let raw = Connection::open(dir.join("tpp.db")).unwrap();
    raw.execute_batch(&tpp_sql(database, SqlFlavour::Sqlite))
        .unwrap();
}

fn generate(dir: &Path, dsn: &str, output: &str, env: &[(&str, &str)]) -> Vec<u8> {
    let out = ehrql_with_env(
        dir,
        &["generate-dataset", STUDY, "--dsn", dsn, "--output", output],
        env,
    );
    assert!(out.status.success(), "{dsn} {env:?}: {}", stderr(&out));
    fs::read(dir.join(output)).unwrap()
}

/// `generate-dataset def.py` on the TPP backend over `tpp.db` in `dir`, to stdout, with the
/// permissions `permissions` (a JSON list).
fn generate_tpp_def(dir: &Path, permissions: &str) -> Output {
    ehrql_with_env(
        dir,
        &[
            "generate-dataset",
            "def.py",
            "--dsn",
            "sqlite:///tpp.db",
            "--backend",
            "tpp",
        ],
        &[("EHRQL_PERMISSIONS", permissions)],
    )
}

fn patient_ids(csv: &[u8]) -> Vec<i64> {
    String::from_utf8_lossy(csv)
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn tpp_backend_gives_the_core_backends_dataset_on_sqlite() {
    let (dir, database) = study();
    sqlite_databases(dir.path(), &database);
    let core = generate(dir.path(), "sqlite:///core.db", "core.csv", &[]);
    assert_eq!(patient_ids(&core).len(), 200);
    let with_flag = {
        let out = ehrql(
            dir.path(),
            &[
                "generate-dataset",
                STUDY,
                "--dsn",
                "sqlite:///tpp.db",
                "--backend",
                "tpp",
                "--output",
                "tpp.csv",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        fs::read(dir.path().join("tpp.csv")).unwrap()
    };
    assert_eq!(
        String::from_utf8_lossy(&with_flag),
        String::from_utf8_lossy(&core)
    );
    // As in a database job: the backend and the database from the environment.
    let from_env = ehrql_with_env(
        dir.path(),
        &["generate-dataset", STUDY, "--output", "env.csv"],
        &[
            ("OPENSAFELY_BACKEND", "tpp"),
            ("DATABASE_URL", "sqlite:///tpp.db"),
        ],
    );
    assert!(from_env.status.success(), "{}", stderr(&from_env));
    assert_eq!(fs::read(dir.path().join("env.csv")).unwrap(), core);
    // The local job-runner's backend names mean the default backend.
    for backend in ["expectations", "test"] {
        let out = generate(
            dir.path(),
            "sqlite:///core.db",
            "local.csv",
            &[("OPENSAFELY_BACKEND", backend)],
        );
        assert_eq!(out, core, "{backend}");
    }
}

#[test]
fn tpp_opt_outs_are_excluded_unless_permitted() {
    let (dir, database) = study();
    sqlite_databases(dir.path(), &database);
    let core = patient_ids(&generate(dir.path(), "sqlite:///core.db", "core.csv", &[]));
    let (t1oo, ndoo) = (core[0], core[1]);
    let raw = Connection::open(dir.path().join("tpp.db")).unwrap();
    raw.execute_batch(&format!(
        "INSERT INTO \"PatientsWithTypeOneDissent\" VALUES ({t1oo});
         DELETE FROM \"PatientsWithoutNDOO\" WHERE \"Patient_ID\" = {ndoo};"
    ))
    .unwrap();
    let tpp = [("OPENSAFELY_BACKEND", "tpp")];
    let ids = patient_ids(&generate(dir.path(), "sqlite:///tpp.db", "a.csv", &tpp));
    let expected: Vec<i64> = core[2..].to_vec();
    assert_eq!(ids, expected);
    let with = |permissions: &str| {
        let env = [
            ("OPENSAFELY_BACKEND", "tpp"),
            ("EHRQL_PERMISSIONS", permissions),
        ];
        patient_ids(&generate(dir.path(), "sqlite:///tpp.db", "b.csv", &env))
    };
    let mut expected_t1oo = vec![t1oo];
    expected_t1oo.extend(&core[2..]);
    assert_eq!(with(r#"["include_t1oo"]"#), expected_t1oo);
    let mut expected_ndoo = vec![ndoo];
    expected_ndoo.extend(&core[2..]);
    assert_eq!(with(r#"["include_ndoo"]"#), expected_ndoo);
    assert_eq!(with(r#"["include_t1oo", "include_ndoo"]"#), core);
}

#[test]
fn tpp_rules_map_sex_codes_and_sentinel_dates() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("def.py"),
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients, practice_registrations\n\
         dataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\n\
         dataset.sex = patients.sex\ndataset.died = patients.date_of_death\n\
         dataset.left = practice_registrations.sort_by(practice_registrations.start_date).last_for_patient().end_date\n",
    )
    .unwrap();
    let raw = Connection::open(dir.path().join("tpp.db")).unwrap();
    raw.execute_batch(&tpp::create_raw_tables_sql(SqlFlavour::Sqlite).join(";"))
        .unwrap();
    raw.execute_batch(
        "INSERT INTO \"Patient\" VALUES (1, '1980-01-01', 'M', '9999-12-31 00:00:00'),
             (2, '1990-01-01', 'F', '2020-02-03 10:11:12'), (3, '2000-01-01', 'I', NULL),
             (4, '2010-01-01', 'X', NULL), (5, '2010-01-01', 'U', NULL);
         INSERT INTO \"Organisation\" (\"Organisation_ID\") VALUES (7);
         INSERT INTO \"RegistrationHistory\" VALUES (1, '2000-01-01', '9999-12-31', 7),
             (2, '2001-01-01', '2019-05-06 00:00:00', 7), (3, '2001-01-01', '2002-01-01', 8);
         INSERT INTO \"PatientsWithoutNDOO\" VALUES (1), (2), (3), (4), (5);",
    )
    .unwrap();
    // No `DirectionsAcknowledged` rows: the activation filter is not what is tested here.
    let out = generate_tpp_def(dir.path(), r#"["include_gp_unactivated"]"#);
    assert!(out.status.success(), "{}", stderr(&out));
    // Patient 3's registration is at an unknown practice (no Organisation row): not joined.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "patient_id,sex,died,left\r\n1,male,,\r\n2,female,2020-02-03,2019-05-06\r\n\
         3,intersex,,\r\n4,unknown,,\r\n5,unknown,,\r\n"
    );
    // dump-dataset-sql shows the views first.
    let dump = ehrql(
        dir.path(),
        &["dump-dataset-sql", "def.py", "--backend", "tpp"],
    );
    assert!(dump.status.success(), "{}", stderr(&dump));
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        text.starts_with("-- Run query 001 / ") && text.contains("CREATE TEMP VIEW patients AS"),
        "{text}"
    );
}

/// GP activation: without `include_gp_unactivated`, a patient registered only at a practice
/// with no `DirectionsAcknowledged` row is excluded, registrations at such practices are not
/// mapped, and events after the activation end date (the end of the last activated
/// registration, when an unactivated one ends later) are dropped, and so are undated ones
/// (TPP's sentinel date), as the reference's `NULL <= end_date` drops them.
#[test]
fn tpp_gp_activation_is_applied_unless_permitted() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("def.py"),
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients, practice_registrations, clinical_events, medications\n\
         dataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\n\
         dataset.events = clinical_events.count_for_patient()\n\
         dataset.last = clinical_events.sort_by(clinical_events.date).last_for_patient().date\n\
         dataset.meds = medications.count_for_patient()\n\
         dataset.regs = practice_registrations.count_for_patient()\n",
    )
    .unwrap();
    let raw = Connection::open(dir.path().join("tpp.db")).unwrap();
    raw.execute_batch(&tpp::create_raw_tables_sql(SqlFlavour::Sqlite).join(";"))
        .unwrap();
    // 1: activated practice 7 throughout. 2: only unactivated practice 8. 3: practice 7 until
    // 2010-01-01, then practice 8: activation end date 2010-01-01.
    raw.execute_batch(
        "INSERT INTO \"Patient\" VALUES (1, '1980-01-01', 'M', NULL), (2, '1980-01-01', 'F', NULL),
             (3, '1980-01-01', 'F', NULL);
         INSERT INTO \"Organisation\" (\"Organisation_ID\") VALUES (7), (8);
         INSERT INTO \"DirectionsAcknowledged\" VALUES (7);
         INSERT INTO \"RegistrationHistory\" VALUES (1, '2000-01-01', '9999-12-31', 7),
             (2, '2000-01-01', '9999-12-31', 8), (3, '2000-01-01', '2010-01-01', 7),
             (3, '2010-01-01', '9999-12-31', 8);
         INSERT INTO \"CodedEvent_SNOMED\" (\"Patient_ID\", \"ConsultationDate\", \"ConceptID\", \"NumericValue\") VALUES (1, '2020-01-01', '1', NULL),
             (1, '9999-12-31 00:00:00', '1', NULL),
             (2, '2020-01-01', '1', NULL), (3, '2009-06-01', '1', NULL),
             (3, '2015-01-01', '1', NULL);
         INSERT INTO \"MedicationIssue\" (\"Patient_ID\", \"ConsultationDate\", \"MultilexDrug_ID\") VALUES (3, '2010-01-01', 'x'), (3, '2010-01-02', 'x'),
             (1, '9999-12-31', 'x');
         INSERT INTO \"PatientsWithoutNDOO\" VALUES (1), (2), (3);",
    )
    .unwrap();
    let run = |permissions: &str| {
        let out = generate_tpp_def(dir.path(), permissions);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        run("[]"),
        "patient_id,events,last,meds,regs\r\n1,1,2020-01-01,0,1\r\n3,1,2009-06-01,1,1\r\n"
    );
    assert_eq!(
        run(r#"["include_gp_unactivated"]"#),
        "patient_id,events,last,meds,regs\r\n1,2,2020-01-01,1,1\r\n2,1,2020-01-01,0,1\r\n\
         3,2,2015-01-01,2,2\r\n"
    );
}

#[test]
fn environment_errors_have_the_reference_exit_codes() {
    let (dir, database) = study();
    sqlite_databases(dir.path(), &database);
    let run = |env: &[(&str, &str)]| {
        ehrql_with_env(
            dir.path(),
            &["generate-dataset", STUDY, "--output", "out.csv"],
            env,
        )
    };
    let out = run(&[("OPENSAFELY_BACKEND", "emis")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown backend 'emis': use 'tpp', or 'expectations' or 'test'"),
        "{}",
        stderr(&out)
    );
    let out = run(&[
        ("DATABASE_URL", "sqlite:///core.db"),
        ("EHRQL_PERMISSIONS", "include_t1oo"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("EHRQL_PERMISSIONS must be a JSON list of strings"),
        "{}",
        stderr(&out)
    );
    // DATABASE_URL is the DSN: a missing database is a database error, not dummy data.
    let out = run(&[("DATABASE_URL", "sqlite:///missing.db")]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    // The TPP backend on raw tables that are not there: unavailable, naming the table.
    let out = run(&[
        ("DATABASE_URL", "sqlite:///core.db"),
        ("OPENSAFELY_BACKEND", "tpp"),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such table"), "{}", stderr(&out));
    assert!(!dir.path().join("out.csv").exists());
}

/// Serialized definitions name tpp tables by `(module, name)` as the reference's serializer
/// does; `ehrql.tables.tpp.patients` is the core table, so either module finds it.
#[test]
fn json_definitions_name_tpp_tables_by_module() {
    let dir = tempfile::tempdir().unwrap();
    let definition = r#"{
      "value": {"ModuleDetails": {"dataset": {"ref": "1"}, "measures": null,
        "claimed_permissions": {"tuple": []}, "dataset_dummy_data_config": null}},
      "1": {"Dataset": {"population": {"ref": "2"}, "variables": {"dict": [["imd", {"ref": "4"}], ["sex", {"ref": "5"}]]},
        "events": {"dict": []}, "measures": null}},
      "2": {"AggregateByPatient.Exists": {"source": {"external_ref": {"module": "ehrql.tables.tpp", "name": "patients"}}}},
      "3": {"SelectColumn": {"source": {"external_ref": {"module": "ehrql.tables.tpp", "name": "addresses"}}, "name": "imd_rounded"}},
      "4": {"AggregateByPatient.Max": {"source": {"ref": "3"}}},
      "5": {"SelectColumn": {"source": {"external_ref": {"module": "ehrql.tables.core", "name": "patients"}}, "name": "sex"}}
    }"#;
    fs::write(dir.path().join("def.json"), definition).unwrap();
    let out = ehrql(dir.path(), &["generate-dataset", "def.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(csv.starts_with("patient_id,imd,sex\r\n1,"), "{csv}");
    for line in csv.lines().skip(1) {
        let imd = line.split(',').nth(1).unwrap();
        assert!(
            imd.is_empty() || imd.parse::<i64>().unwrap() % 100 == 0,
            "{line}"
        );
    }
}

#[test]
fn event_tables_need_the_event_level_data_permission() {
    let dir = tempfile::tempdir().unwrap();
    let definition = r#"{
      "value": {"ModuleDetails": {"dataset": {"ref": "1"}, "measures": null,
        "claimed_permissions": {"tuple": []}, "dataset_dummy_data_config": null}},
      "1": {"Dataset": {"population": {"ref": "2"}, "variables": {"dict": []},
        "events": {"dict": [["events", {"ref": "4"}]]}, "measures": null}},
      "2": {"AggregateByPatient.Exists": {"source": {"external_ref": {"module": "ehrql.tables.core", "name": "patients"}}}},
      "3": {"SelectColumn": {"source": {"external_ref": {"module": "ehrql.tables.core", "name": "clinical_events"}}, "name": "date"}},
      "4": {"SeriesCollectionFrame": {"members": {"dict": [["date", {"ref": "3"}]]}}}
    }"#;
    fs::write(dir.path().join("def.json"), definition).unwrap();
    let out = ehrql(dir.path(), &["generate-dataset", "def.json"]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "    * event_level_data: required in order to use the `dataset.add_event_table()` method"
        ) && stderr(&out).contains("    claim_permissions(\"event_level_data\")"),
        "{}",
        stderr(&out)
    );
    // A real run reads EHRQL_PERMISSIONS.
    fs::write(dir.path().join("empty.db"), b"").unwrap();
    let real = |permissions: &str| {
        ehrql_with_env(
            dir.path(),
            &["generate-dataset", "def.json", "--output", "real/:csv"],
            &[
                ("DATABASE_URL", "sqlite:///empty.db"),
                ("EHRQL_PERMISSIONS", permissions),
            ],
        )
    };
    let out = real("[]");
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Missing permissions are:\n\n    * event_level_data: required"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("real").exists());
    // Claimed, the dummy run writes both tables.
    fs::write(
        dir.path().join("claimed.json"),
        definition.replace(r#"{"tuple": []}"#, r#"{"tuple": ["event_level_data"]}"#),
    )
    .unwrap();
    let out = ehrql(
        dir.path(),
        &["generate-dataset", "claimed.json", "--output", "out/:csv"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = fs::read_to_string(dir.path().join("out/events.csv")).unwrap();
    assert!(events.starts_with("patient_id,date\r\n"), "{events}");
    assert!(dir.path().join("out/dataset.csv").is_file());
}

#[test]
fn tpp_backend_gives_the_core_backends_dataset_on_postgres() {
    let (dir, database) = study();
    sqlite_databases(dir.path(), &database);
    let core = generate(dir.path(), "sqlite:///core.db", "core.csv", &[]);
    let postgres = postgres_support::TestDatabase::create();
    postgres
        .connect()
        .execute(&tpp_sql(&database, SqlFlavour::Postgres))
        .unwrap();
    let tpp = generate(
        dir.path(),
        &postgres.url,
        "pg.csv",
        &[("OPENSAFELY_BACKEND", "tpp")],
    );
    assert_eq!(
        String::from_utf8_lossy(&tpp),
        String::from_utf8_lossy(&core)
    );
}

/// SQL creating the raw TPP tables and loading the files `create-dummy-tables --backend tpp`
/// wrote to `dir`, in one transaction (SQLite would otherwise sync after every row).
fn raw_files_sql(dir: &Path, flavour: SqlFlavour) -> String {
    let mut sql = String::from("BEGIN;\n");
    sql.push_str(&tpp::create_raw_tables_sql(flavour).join(";\n"));
    sql.push_str(";\n");
    for table in tpp::raw_tables() {
        let columns: Vec<FileColumn> = table
            .columns
            .iter()
            .map(|(name, ty)| FileColumn {
                spec: ColumnSpec {
                    name: name.clone(),
                    ty: *ty,
                    nullable: true,
                    categories: None,
                    range: None,
                },
                required: true,
            })
            .collect();
        let path = dir.join(format!("{}.csv", table.name));
        for row in local_files::read_rows(&path, &columns).unwrap() {
            let values: Vec<String> = row.iter().map(sql_literal).collect();
            sql.push_str(&format!(
                "INSERT INTO \"{}\" VALUES ({});\n",
                table.name,
                values.join(", ")
            ));
        }
    }
    sql.push_str("COMMIT;\n");
    sql
}

/// `create-dummy-tables` writes the generated source tables in ehrQL's shape and, with
/// `--backend tpp`, the same data as raw TPP tables. The dummy run, `--dummy-tables` over the
/// ehrQL-shaped files, and the `tpp` backend over the raw tables loaded into SQLite and into
/// PostgreSQL all give the same CSV, which is returned.
fn assert_dummy_tables_round_trip(
    dir: &Path,
    study: &str,
    patients: usize,
    permissions: &str,
) -> String {
    let create = |args: &[&str]| {
        let mut full = vec!["create-dummy-tables", study];
        full.extend(args);
        let out = ehrql(dir, &full);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    create(&["core"]);
    create(&["raw", "--backend", "tpp"]);
    let run = |args: &[&str]| {
        let mut full = vec!["generate-dataset", study];
        full.extend(args);
        // Real runs are granted what the definition claims for dummy ones.
        let out = ehrql_with_env(dir, &full, &[("EHRQL_PERMISSIONS", permissions)]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let dummy = run(&[]);
    assert_eq!(patient_ids(dummy.as_bytes()).len(), patients);
    assert_eq!(
        run(&["--dummy-tables", "core"]),
        dummy,
        "ehrQL-shaped tables"
    );
    Connection::open(dir.join("tpp.db"))
        .unwrap()
        .execute_batch(&raw_files_sql(&dir.join("raw"), SqlFlavour::Sqlite))
        .unwrap();
    let tpp = ["--backend", "tpp"];
    assert_eq!(
        run(&[&["--dsn", "sqlite:///tpp.db"][..], &tpp].concat()),
        dummy,
        "tpp backend on SQLite"
    );
    let postgres = postgres_support::TestDatabase::create();
    postgres
        .connect()
        .execute(&raw_files_sql(&dir.join("raw"), SqlFlavour::Postgres))
        .unwrap();
    assert_eq!(
        run(&[&["--dsn", postgres.url.as_str()][..], &tpp].concat()),
        dummy,
        "tpp backend on PostgreSQL"
    );
    dummy
}

#[test]
fn dummy_core_study_tables_give_the_dummy_dataset_on_every_backend() {
    let (dir, _) = study();
    assert_dummy_tables_round_trip(dir.path(), STUDY, 50, "[]");
}

/// A study importing from `ehrql.tables.tpp` (addresses, practice attributes, vaccinations,
/// HES with a diagnosis codelist, CTV3 events, ethnicity, households, place of death, frailty
/// index, COVID-19 tests, healthcare workers, renal registry).
#[test]
fn dummy_tpp_study_tables_give_the_dummy_dataset_on_every_backend() {
    let (dir, _) = study();
    let csv = assert_dummy_tables_round_trip(
        dir.path(),
        "analysis/tpp_study.py",
        60,
        r#"["sgss_covid_all_tests", "ukrr", "occupation_on_covid_vaccine_record"]"#,
    );
    // The data exercises the new tables: each of these columns has values.
    let mut lines = csv.split("\r\n").filter(|l| !l.is_empty());
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    for column in [
        "region",
        "stp",
        "systmone_for_a_year",
        "imd",
        "imd_quintile",
        "ethnicity",
        "household_size",
        "last_flu",
        "last_vaccine_product",
        "first_hf_admission",
        "critical_care_days",
        "smoking_code",
        "smoking_consultation",
        "death_place",
        "frailty_index",
        "first_positive_test",
        "first_positive_variant",
        "negative_tests",
        "healthcare_worker",
        "renal_modality",
        "renal_egfr",
    ] {
        let i = header.iter().position(|h| *h == column).unwrap();
        assert!(
            rows.iter()
                .any(|r| !r[i].is_empty() && r[i] != "F" && r[i] != "0"),
            "no values in {column}:\n{csv}"
        );
    }
}

/// The `appointments` table needs the `appointments` permission: claimed in dummy runs,
/// granted through `EHRQL_PERMISSIONS` in real ones (exit 12 otherwise, with the reference's
/// message). Its TPP mapping names status codes, drops duplicate rows and applies GP
/// activation to `booked_date`; HES tables are read from the current table from the archive
/// cut-off month and from `_ARCHIVED` before it.
#[test]
fn tpp_appointments_need_their_permission_and_map_hes_and_appointment_rules() {
    let dir = tempfile::tempdir().unwrap();
    let definition = "from ehrql import create_dataset\n\
         from ehrql.tables.tpp import patients, appointments, apcs\n\
         dataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\n\
         dataset.appointments = appointments.count_for_patient()\n\
         dataset.status = appointments.sort_by(appointments.booked_date).last_for_patient().status\n\
         dataset.admissions = apcs.count_for_patient()\n\
         dataset.first_admission = apcs.sort_by(apcs.admission_date).first_for_patient().admission_date\n";
    fs::write(dir.path().join("def.py"), definition).unwrap();
    let out = ehrql(dir.path(), &["generate-dataset", "def.py"]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "The permissions needed are:\n\n    * appointments: required for access to the \
             `tpp.appointments` table\n\nYou can continue to work on your code using dummy data \
             by \u{201c}claiming\u{201d} the required permisions:\n\n    from ehrql import \
             claim_permissions\n    claim_permissions(\"appointments\")"
        ),
        "{}",
        stderr(&out)
    );
    fs::write(
        dir.path().join("claimed.py"),
        format!(
            "{definition}from ehrql import claim_permissions\nclaim_permissions(\"appointments\")\n"
        ),
    )
    .unwrap();
    let out = ehrql(dir.path(), &["generate-dataset", "claimed.py"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let raw = Connection::open(dir.path().join("tpp.db")).unwrap();
    raw.execute_batch(&tpp::create_raw_tables_sql(SqlFlavour::Sqlite).join(";"))
        .unwrap();
    // 1: activated throughout. 2: activated until 2010-01-01, then at unactivated practice 8.
    raw.execute_batch(
        "INSERT INTO \"Patient\" VALUES (1, '1980-01-01', 'M', NULL), (2, '1980-01-01', 'F', NULL);
         INSERT INTO \"Organisation\" (\"Organisation_ID\") VALUES (7), (8);
         INSERT INTO \"DirectionsAcknowledged\" VALUES (7);
         INSERT INTO \"RegistrationHistory\" VALUES (1, '2000-01-01', '9999-12-31', 7),
             (2, '2000-01-01', '2010-01-01', 7), (2, '2010-01-01', '9999-12-31', 8);
         INSERT INTO \"PatientsWithoutNDOO\" VALUES (1), (2);
         INSERT INTO \"Appointment\" VALUES (10, 1, '2020-01-01 09:00:00', '2020-01-02', '9999-12-31', 2),
             (10, 1, '2020-01-01 09:00:00', '2020-01-02', '9999-12-31', 2),
             (11, 1, '2021-01-01', '2021-01-02', '2021-01-02', 4),
             (12, 2, '2009-01-01', '2009-01-02', NULL, 16), (13, 2, '2015-01-01', NULL, NULL, 0);
         INSERT INTO \"APCS\" (\"Patient_ID\", \"APCS_Ident\", \"Admission_Date\", \"Der_Activity_Month\")
             VALUES (1, 1, '2024-01-01', '202401'), (1, 2, '2022-01-01', '202201');
         INSERT INTO \"APCS_ARCHIVED\" (\"Patient_ID\", \"APCS_Ident\", \"Admission_Date\", \"Der_Activity_Month\")
             VALUES (1, 2, '2022-01-01', '202201'), (1, 1, '2024-01-01', '202401');",
    )
    .unwrap();
    let run = |permissions: &str| generate_tpp_def(dir.path(), permissions);
    let out = run("[]");
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "You do not currently have all the permissions needed for this action.\n\n\
             Missing permissions are:\n\n    * appointments: required for access to the \
             `tpp.appointments` table\n\nIf you think this is a mistake"
        ),
        "{}",
        stderr(&out)
    );
    let out = run(r#"["appointments"]"#);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "patient_id,appointments,status,admissions,first_admission\r\n\
         1,2,Finished,2,2022-01-01\r\n2,1,Patient Walked Out,0,\r\n"
    );
}

/// With `TEMP_DATABASE_NAME`, dm+d codes also come from that database's
/// `CustomMedicationDictionary` (PostgreSQL: a schema; SQLite: the file `<name>.db` beside the
/// main database, attached); without it, only from `MedicationDictionary`. On SQLite a name
/// that could leave the directory, or names no file, is refused with exit code 2.
#[test]
fn tpp_custom_medication_dictionary_comes_from_temp_database_name() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("def.py"),
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients, medications\n\
         dataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\n\
         dataset.dmd = medications.sort_by(medications.date).first_for_patient().dmd_code\n",
    )
    .unwrap();
    let raw_rows = "INSERT INTO \"MedicationDictionary\" VALUES ('known', '39113311000001107');
         INSERT INTO \"Patient\" VALUES (1, '1980-01-01', 'F', '9999-12-31'), (2, '1980-01-01', 'M', '9999-12-31');
         INSERT INTO \"PatientsWithoutNDOO\" VALUES (1), (2);
         INSERT INTO \"Organisation\" (\"Organisation_ID\") VALUES (7);
         INSERT INTO \"DirectionsAcknowledged\" VALUES (7);
         INSERT INTO \"RegistrationHistory\" VALUES (1, '2000-01-01', '9999-12-31', 7), (2, '2000-01-01', '9999-12-31', 7);
         INSERT INTO \"MedicationIssue\" (\"Patient_ID\", \"ConsultationDate\", \"MultilexDrug_ID\") VALUES (1, '2020-01-01', 'known'), (2, '2020-01-01', 'custom');";
    let custom_dictionary = "CREATE TABLE {schema}\"CustomMedicationDictionary\" (\"MultilexDrug_ID\" TEXT, \"DMD_ID\" TEXT);
         INSERT INTO {schema}\"CustomMedicationDictionary\" VALUES ('custom', '39113611000001102');";
    let postgres = postgres_support::TestDatabase::create();
    postgres
        .connect()
        .execute(&format!(
            "{}; CREATE SCHEMA temp_db; {} {raw_rows}",
            tpp::create_raw_tables_sql(SqlFlavour::Postgres).join(";"),
            custom_dictionary.replace("{schema}", "temp_db.")
        ))
        .unwrap();
    let sqlite = Connection::open(dir.path().join("tpp.db")).unwrap();
    sqlite
        .execute_batch(&format!(
            "{}; {raw_rows}",
            tpp::create_raw_tables_sql(SqlFlavour::Sqlite).join(";")
        ))
        .unwrap();
    Connection::open(dir.path().join("temp_db.db"))
        .unwrap()
        .execute_batch(&custom_dictionary.replace("{schema}", ""))
        .unwrap();
    let run = |dsn: &str, env: &[(&str, &str)]| {
        ehrql_with_env(
            dir.path(),
            &[
                "generate-dataset",
                "def.py",
                "--dsn",
                dsn,
                "--backend",
                "tpp",
            ],
            env,
        )
    };
    for dsn in [postgres.url.as_str(), "sqlite:///tpp.db"] {
        let stdout = |env: &[(&str, &str)]| {
            let out = run(dsn, env);
            assert!(out.status.success(), "{dsn}: {}", stderr(&out));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(
            stdout(&[]),
            "patient_id,dmd\r\n1,39113311000001107\r\n2,\r\n",
            "{dsn}"
        );
        assert_eq!(
            stdout(&[("TEMP_DATABASE_NAME", "temp_db")]),
            "patient_id,dmd\r\n1,39113311000001107\r\n2,39113611000001102\r\n",
            "{dsn}"
        );
    }
    for (name, message) in [
        (
            "../temp_db",
            "may contain only letters, digits, '_' and '-'",
        ),
        ("main", "SQLite's own database names"),
        (
            "absent",
            "no database file absent.db beside the main database",
        ),
    ] {
        let out = run("sqlite:///tpp.db", &[("TEMP_DATABASE_NAME", name)]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{name}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{name}");
    }
}

/// TPP's collations (spec §4.2): on the `tpp` backend every string column but CTV3 and
/// SNOMED CT codes compares case-insensitively (equality, `is_in` as a short list, a values
/// table and a code map, `contains`, ordering in picks and aggregates, `count_distinct`),
/// on both engines; the default backend compares the same values binary.
#[test]
fn tpp_strings_compare_case_insensitively_except_ctv3_and_snomed_codes() {
    let dir = tempfile::tempdir().unwrap();
    let long_list: Vec<String> = (0..40)
        .map(|i| format!("r{i}"))
        .chain(["london".to_string()])
        .collect();
    let source = "from ehrql import create_dataset\n\
         from ehrql.tables.tpp import patients, practice_registrations as regs, clinical_events as events\n\
         dataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\n\
         region = regs.sort_by(regs.start_date).last_for_patient().practice_nuts1_region_name\n\
         dataset.eq = region == 'london'\n\
         dataset.in_long = region.is_in(LONG)\n\
         dataset.contains = region.contains('ond')\n\
         dataset.in_map = regs.where(regs.practice_nuts1_region_name.is_in(['london'])).count_for_patient()\n\
         dataset.distinct = regs.practice_nuts1_region_name.count_distinct_for_patient()\n\
         dataset.max_is_b = regs.practice_nuts1_region_name.maximum_for_patient() == 'b'\n\
         dataset.first = regs.sort_by(regs.practice_nuts1_region_name, regs.start_date).first_for_patient().start_date\n\
         dataset.ctv3_lower = events.where(events.ctv3_code.is_in(['xabcd'])).count_for_patient()\n\
         dataset.ctv3_exact = events.where(events.ctv3_code == 'XaBcD').count_for_patient()\n"
        .replace("LONG", &format!("{long_list:?}"));
    fs::write(dir.path().join("def.py"), source).unwrap();
    let (tpp_postgres, core_postgres) = case_variant_databases(dir.path());
    let run = |dsn: &str, backend: &str| {
        let out = ehrql_with_env(
            dir.path(),
            &["generate-dataset", "def.py", "--dsn", dsn],
            &[("OPENSAFELY_BACKEND", backend)],
        );
        assert!(out.status.success(), "{dsn}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let header =
        "patient_id,eq,in_long,contains,in_map,distinct,max_is_b,first,ctv3_lower,ctv3_exact\r\n";
    for dsn in [tpp_postgres.url.as_str(), "sqlite:///tpp.db"] {
        assert_eq!(
            run(dsn, "tpp"),
            format!(
                "{header}1,T,T,T,2,1,F,2000-01-01,0,1\r\n2,F,F,F,0,2,T,2005-01-01,0,0\r\n\
                 3,T,T,T,1,1,F,2000-01-01,0,0\r\n"
            ),
            "{dsn}"
        );
    }
    for dsn in [core_postgres.url.as_str(), "sqlite:///core.db"] {
        assert_eq!(
            run(dsn, "expectations"),
            format!(
                "{header}1,F,F,F,0,2,F,2005-01-01,0,1\r\n2,F,F,F,0,2,F,2000-01-01,0,0\r\n\
                 3,F,F,T,0,1,F,2000-01-01,0,0\r\n"
            ),
            "{dsn}"
        );
    }
}

/// Raw TPP tables (in `dir`/tpp.db and a PostgreSQL database) and the same data as ehrQL
/// tables for the default backend (`dir`/core.db and another): patient 1 moved from a
/// "London" practice to a "LONDON" one, patient 2 from "B" to "a"; patient 3 stayed at the
/// "London" one; patient 1 has a CTV3 event `XaBcD`.
fn case_variant_databases(
    dir: &Path,
) -> (
    postgres_support::TestDatabase,
    postgres_support::TestDatabase,
) {
    let raw = "INSERT INTO \"Patient\" VALUES (1, '1980-01-01', 'F', '9999-12-31'), (2, '1980-01-01', 'M', '9999-12-31'),
             (3, '1980-01-01', 'M', '9999-12-31');
         INSERT INTO \"PatientsWithoutNDOO\" VALUES (1), (2), (3);
         INSERT INTO \"Organisation\" VALUES (1, 'E1', 'London', '2000-01-01'), (2, 'E1', 'LONDON', '2000-01-01'),
             (3, 'E1', 'B', '2000-01-01'), (4, 'E1', 'a', '2000-01-01');
         INSERT INTO \"DirectionsAcknowledged\" VALUES (1), (2), (3), (4);
         INSERT INTO \"RegistrationHistory\" VALUES (1, '2000-01-01', '2005-01-01', 1), (1, '2005-01-01', '9999-12-31', 2),
             (2, '2000-01-01', '2005-01-01', 3), (2, '2005-01-01', '9999-12-31', 4), (3, '2000-01-01', '9999-12-31', 1);
         INSERT INTO \"CodedEvent\" VALUES (1, '2020-01-01', 'XaBcD', NULL, 1);";
    let core = "CREATE TABLE patients (patient_id BIGINT, date_of_birth DATE, sex TEXT, date_of_death DATE);
         CREATE TABLE practice_registrations (patient_id BIGINT, start_date DATE, end_date DATE, practice_pseudo_id BIGINT,
             practice_stp TEXT, practice_nuts1_region_name TEXT, practice_systmone_go_live_date DATE);
         CREATE TABLE clinical_events (patient_id BIGINT, date DATE, snomedct_code TEXT, ctv3_code TEXT,
             numeric_value DOUBLE PRECISION, consultation_id BIGINT);
         INSERT INTO patients VALUES (1, '1980-01-01', 'female', NULL), (2, '1980-01-01', 'male', NULL),
             (3, '1980-01-01', 'male', NULL);
         INSERT INTO practice_registrations VALUES (1, '2000-01-01', '2005-01-01', 1, 'E1', 'London', '2000-01-01'),
             (1, '2005-01-01', NULL, 2, 'E1', 'LONDON', '2000-01-01'), (2, '2000-01-01', '2005-01-01', 3, 'E1', 'B', '2000-01-01'),
             (2, '2005-01-01', NULL, 4, 'E1', 'a', '2000-01-01'), (3, '2000-01-01', NULL, 1, 'E1', 'London', '2000-01-01');
         INSERT INTO clinical_events VALUES (1, '2020-01-01', NULL, 'XaBcD', NULL, 1);";
    let tpp_postgres = postgres_support::TestDatabase::create();
    tpp_postgres
        .connect()
        .execute(&format!(
            "{}; {raw}",
            tpp::create_raw_tables_sql(SqlFlavour::Postgres).join(";")
        ))
        .unwrap();
    let core_postgres = postgres_support::TestDatabase::create();
    core_postgres.connect().execute(core).unwrap();
    Connection::open(dir.join("tpp.db"))
        .unwrap()
        .execute_batch(&format!(
            "{}; {raw}",
            tpp::create_raw_tables_sql(SqlFlavour::Sqlite).join(";")
        ))
        .unwrap();
    Connection::open(dir.join("core.db"))
        .unwrap()
        .execute_batch(core)
        .unwrap();
    (tpp_postgres, core_postgres)
}

/// Measures on the `tpp` backend group a case-insensitive column's case variants together
/// (one "London" group of two patients), on both engines; the default backend keeps them apart.
#[test]
fn tpp_measures_group_case_variants_together() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("measures.py"),
        "from ehrql import create_measures, years\n\
         from ehrql.tables.tpp import patients, practice_registrations as regs\n\
         measures = create_measures()\nmeasures.configure_disclosure_control(enabled=False)\n\
         region = regs.sort_by(regs.start_date).last_for_patient().practice_nuts1_region_name\n\
         measures.define_measure('m', numerator=patients.exists_for_patient(),\n\
             denominator=patients.exists_for_patient(), group_by={'region': region},\n\
             intervals=years(1).starting_on('2020-01-01'))\n",
    )
    .unwrap();
    let (tpp_postgres, core_postgres) = case_variant_databases(dir.path());
    // The denominators of the groups, by lower-cased region.
    let groups = |dsn: &str, backend: &str| {
        let out = ehrql_with_env(
            dir.path(),
            &["generate-measures", "measures.py", "--dsn", dsn],
            &[("OPENSAFELY_BACKEND", backend)],
        );
        assert!(out.status.success(), "{dsn}: {}", stderr(&out));
        let mut groups: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
            .split("\r\n")
            .skip(1)
            .filter(|line| !line.is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                (fields[6].to_lowercase(), fields[5].to_string())
            })
            .collect();
        groups.sort();
        groups
    };
    let pair = |region: &str, denominator: &str| (region.to_string(), denominator.to_string());
    for dsn in [tpp_postgres.url.as_str(), "sqlite:///tpp.db"] {
        assert_eq!(
            groups(dsn, "tpp"),
            [pair("a", "1"), pair("london", "2")],
            "{dsn}"
        );
    }
    for dsn in [core_postgres.url.as_str(), "sqlite:///core.db"] {
        assert_eq!(
            groups(dsn, "expectations"),
            [pair("a", "1"), pair("london", "1"), pair("london", "1")],
            "{dsn}"
        );
    }
}
