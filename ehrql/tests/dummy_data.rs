//! Dummy data (issue #9): `generate-dataset` without a database generates patients who satisfy
//! the population, deterministically; `create-dummy-tables` writes the source tables, which
//! `--dummy-tables` reads back; `--dummy-data-file` is checked against the dataset's columns.
//! Through the built binary, in a fresh directory per test, plus library checks that run the
//! generated tables through the SQLite engine (an independent judge of the population).

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use ehrql::dummy_data;
use ehrql::engines::sqlite::SqliteEngine;
use ehrql::engines::{CollectRows, Engine};
use ehrql::frontend::language::load_source;
use ehrql::query_model::{Date, Value};
use support::{ehrql, stderr};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/language")
}

/// A fresh study directory holding the realistic fixture study and its codelists.
fn study() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["analysis", "codelists"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in fs::read_dir(fixtures().join(sub)).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name())).unwrap();
        }
    }
    dir
}

const STUDY: &str = "analysis/full_study.py";

/// CSV output as a header and rows of fields (the outputs here have no quoted fields).
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = fs::read_to_string(path).unwrap();
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

fn column(header: &[String], name: &str) -> usize {
    header.iter().position(|h| h == name).unwrap()
}

#[test]
fn generated_rows_satisfy_the_population_and_column_types() {
    let dir = study();
    let out = ehrql(
        dir.path(),
        &["generate-dataset", STUDY, "--output", "output/dataset.csv"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (header, rows) = read_csv(&dir.path().join("output/dataset.csv"));
    // configure_dummy_data(population_size=50)
    assert_eq!(rows.len(), 50);
    let ids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(ids, (1..=50).collect::<Vec<i64>>());
    let (age, sex, practice, band) = (
        column(&header, "age"),
        column(&header, "sex"),
        column(&header, "practice"),
        column(&header, "age_band"),
    );
    for row in &rows {
        // Population: registered on the index date, aged 18 or over, alive.
        let age: i64 = row[age].parse().unwrap();
        assert!((18..=123).contains(&age), "age {age}");
        assert!(["female", "male", "intersex", "unknown"].contains(&row[sex].as_str()));
        // Registered, so the practice of the registration is never NULL.
        row[practice].parse::<i64>().unwrap();
        assert!(["18-39", "40-64", "65+"].contains(&row[band].as_str()));
        for (i, name) in header.iter().enumerate() {
            let field = &row[i];
            if field.is_empty() {
                continue;
            }
            match name.as_str() {
                "has_asthma" | "has_diabetes" | "died_of_asthma" => {
                    assert!(field == "T" || field == "F", "{name}={field}")
                }
                "latest_asthma_date" | "first_inhaler" | "latest_contact" | "review_due" => {
                    assert!(Date::parse_iso(field).is_some(), "{name}={field}")
                }
                "latest_value" => {
                    field.parse::<f64>().unwrap();
                }
                _ => {}
            }
        }
    }
    // The codelists' codes are used, so some patients have the events the dataset counts.
    let asthma = column(&header, "has_asthma");
    assert!(rows.iter().any(|r| r[asthma] == "T"));
    let inhalers = column(&header, "inhaler_count");
    assert!(rows.iter().any(|r| r[inhalers] != "0"));
}

#[test]
fn generation_is_deterministic() {
    let dir = study();
    for output in ["first.csv", "second.csv"] {
        let out = ehrql(dir.path(), &["generate-dataset", STUDY, "--output", output]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let first = fs::read(dir.path().join("first.csv")).unwrap();
    assert_eq!(first, fs::read(dir.path().join("second.csv")).unwrap());
    assert!(first.len() > 1000);
}

/// The SQLite engine, run over the generated source tables, finds every generated patient in
/// the population (the generator's own in-memory check is not the only judge), and the
/// additional population constraint holds for all of them.
#[test]
fn sqlite_engine_agrees_that_every_generated_patient_is_in_the_population() {
    let source = fs::read_to_string(fixtures().join("analysis/full_study.py"))
        .unwrap()
        .replace(
            "dataset.configure_dummy_data(population_size=50)",
            "dataset.configure_dummy_data(population_size=30, additional_population_constraint=patients.sex == \"female\")",
        );
    let definition = load_source(&source, "full_study.py", &fixtures()).unwrap();
    let generated = dummy_data::generate(&definition, Date::from_ymd(2025, 6, 1).unwrap()).unwrap();
    assert_eq!(generated.n_patients, 30);
    let mut engine = SqliteEngine::from_database(&generated.database).unwrap();
    let mut rows = CollectRows::default();
    engine.run(&definition.dataset, &mut rows).unwrap();
    let ids: Vec<Value> = rows.0.iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, (1..=30).map(Value::Int).collect::<Vec<_>>());
    let sex = 1 + definition
        .dataset
        .variables()
        .iter()
        .position(|(n, _)| n == "sex")
        .unwrap();
    assert!(rows.0.iter().all(|r| r[sex] == Value::Str("female".into())));
    // Every date lies between 1900-01-01 and "today".
    for table in generated.database.tables() {
        for (_, values) in &table.rows {
            for value in values {
                if let Value::Date(d) = value {
                    assert!(*d >= Date::from_ymd(1900, 1, 1).unwrap());
                    assert!(
                        *d <= Date::from_ymd(2025, 6, 1).unwrap(),
                        "{d} in {}",
                        table.schema.name
                    );
                }
            }
        }
    }
}

#[test]
fn dummy_tables_round_trip_gives_the_generated_dataset() {
    let dir = study();
    for format in ["", ":csv.gz", ":arrow"] {
        let tables = format!("tables{format}");
        let out = ehrql(dir.path(), &["create-dummy-tables", STUDY, &tables]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let mut files: Vec<String> = fs::read_dir(dir.path().join("tables"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = [
        "clinical_events",
        "medications",
        "ons_deaths",
        "patients",
        "practice_registrations",
    ]
    .iter()
    .flat_map(|t| [".arrow", ".csv", ".csv.gz"].map(|ext| format!("{t}{ext}")))
    .collect();
    expected.sort();
    assert_eq!(files, expected);
    // Only the columns the dataset reads are written.
    let events = fs::read_to_string(dir.path().join("tables/clinical_events.csv")).unwrap();
    assert!(
        events.starts_with("patient_id,date,snomedct_code,numeric_value\r\n"),
        "{events}"
    );
    let registrations =
        fs::read_to_string(dir.path().join("tables/practice_registrations.csv")).unwrap();
    assert!(
        registrations.starts_with("patient_id,start_date,end_date,practice_pseudo_id\r\n"),
        "{registrations}"
    );
    let patients = fs::read_to_string(dir.path().join("tables/patients.csv")).unwrap();
    assert!(patients.starts_with("patient_id,date_of_birth,sex,date_of_death\r\n"));

    let out = ehrql(
        dir.path(),
        &["generate-dataset", STUDY, "--output", "generated.csv"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let generated = fs::read(dir.path().join("generated.csv")).unwrap();
    // The tables were written and read in every format: same dataset each time.
    fs::create_dir_all(dir.path().join("gz")).unwrap();
    fs::create_dir_all(dir.path().join("arrow")).unwrap();
    for entry in fs::read_dir(dir.path().join("tables")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".csv.gz") {
            fs::rename(&path, dir.path().join("gz").join(&name)).unwrap();
        } else if name.ends_with(".arrow") {
            fs::rename(&path, dir.path().join("arrow").join(&name)).unwrap();
        }
    }
    for tables in ["tables", "gz", "arrow"] {
        let out = ehrql(
            dir.path(),
            &[
                "generate-dataset",
                STUDY,
                "--dummy-tables",
                tables,
                "--output",
                "read_back.csv",
            ],
        );
        assert!(out.status.success(), "{tables}: {}", stderr(&out));
        assert_eq!(
            fs::read(dir.path().join("read_back.csv")).unwrap(),
            generated,
            "{tables}"
        );
    }
}

/// The dataset of a small definition: population = has a `patients` row, sex and a count.
const SMALL: &str = "\
from ehrql import create_dataset
from ehrql.tables.core import patients, clinical_events
dataset = create_dataset()
dataset.define_population(patients.exists_for_patient())
dataset.sex = patients.sex
dataset.n_events = clinical_events.count_for_patient()
dataset.born = patients.date_of_birth
";

fn small_study() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("def.py"), SMALL).unwrap();
    dir
}

#[test]
fn dummy_data_file_is_checked_against_the_dataset_and_rewritten() {
    let dir = small_study();
    let good = "patient_id,born,sex,n_events,extra\n1,1980-01-01,female,2,x\n2,,male,0,y\n";
    fs::write(dir.path().join("dummy.csv"), good).unwrap();
    let out = ehrql(
        dir.path(),
        &[
            "generate-dataset",
            "def.py",
            "--dummy-data-file",
            "dummy.csv",
            "--output",
            "out.csv",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Columns in the dataset's order, unknown columns dropped, CSV rules of the output.
    assert_eq!(
        fs::read_to_string(dir.path().join("out.csv")).unwrap(),
        "patient_id,sex,n_events,born\r\n1,female,2,1980-01-01\r\n2,male,0,\r\n"
    );

    let cases = [
        (
            "patient_id,sex,born\n1,female,1980-01-01\n",
            "missing columns: n_events",
        ),
        (
            "patient_id,sex,n_events,born\n1,woman,2,1980-01-01\n",
            "line 2, column 'sex': 'woman' is not one of the categories 'female', 'male', 'intersex', 'unknown'",
        ),
        (
            "patient_id,sex,n_events,born\n1,female,two,1980-01-01\n",
            "line 2, column 'n_events': 'two' is not a valid int",
        ),
        (
            "patient_id,sex,n_events,born\n1,female,2,01/01/1980\n",
            "line 2, column 'born': '01/01/1980' is not a valid date (YYYY-MM-DD)",
        ),
        (
            "patient_id,sex,n_events,born\n1,female,,1980-01-01\n",
            "line 2, column 'n_events': a value is required (the column is NOT NULL)",
        ),
        (
            "patient_id,sex,n_events,born\n1,\"female,2,1980-01-01\n",
            "line 2: a quoted field is not closed",
        ),
    ];
    for (content, message) in cases {
        fs::write(dir.path().join("bad.csv"), content).unwrap();
        let out = ehrql(
            dir.path(),
            &[
                "generate-dataset",
                "def.py",
                "--dummy-data-file",
                "bad.csv",
                "--output",
                "bad_out.csv",
            ],
        );
        assert_eq!(out.status.code(), Some(11), "{content}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(message),
            "{content}: {}",
            stderr(&out)
        );
        assert!(
            !dir.path().join("bad_out.csv").exists(),
            "no output on failure"
        );
    }
}

#[test]
fn dummy_data_file_may_be_arrow() {
    let dir = small_study();
    // Our own Arrow output (dictionary-encoded sex, uint16 count, date32) is a valid input.
    let out = ehrql(
        dir.path(),
        &["generate-dataset", "def.py", "--output", "gen.arrow"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ehrql(
        dir.path(),
        &["generate-dataset", "def.py", "--output", "gen.csv"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ehrql(
        dir.path(),
        &[
            "generate-dataset",
            "def.py",
            "--dummy-data-file",
            "gen.arrow",
            "--output",
            "copy.csv",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read(dir.path().join("copy.csv")).unwrap(),
        fs::read(dir.path().join("gen.csv")).unwrap()
    );
}

#[test]
fn dummy_tables_errors_name_the_missing_table_or_bad_value() {
    let dir = small_study();
    fs::create_dir_all(dir.path().join("tables")).unwrap();
    fs::write(
        dir.path().join("tables/patients.csv"),
        "patient_id,date_of_birth,sex\n1,1980-01-01,female\n",
    )
    .unwrap();
    let out = ehrql(
        dir.path(),
        &["generate-dataset", "def.py", "--dummy-tables", "tables"],
    );
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no file for table 'clinical_events' in tables"),
        "{}",
        stderr(&out)
    );
    fs::write(
        dir.path().join("tables/clinical_events.csv"),
        "patient_id,snomedct_code\n1,123\n",
    )
    .unwrap();
    let out = ehrql(
        dir.path(),
        &["generate-dataset", "def.py", "--dummy-tables", "tables"],
    );
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("column 'snomedct_code': '123' is not a valid SNOMEDCTCode"),
        "{}",
        stderr(&out)
    );
    fs::write(
        dir.path().join("tables/clinical_events.csv"),
        "patient_id,snomedct_code\n1,123456\n1,\n",
    )
    .unwrap();
    let out = ehrql(
        dir.path(),
        &["generate-dataset", "def.py", "--dummy-tables", "tables"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "patient_id,sex,n_events,born\r\n1,female,2,1980-01-01\r\n"
    );
}

#[test]
fn json_definition_without_a_database_gets_dummy_data() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../integration/sample-study/analysis/dataset_definition.json");
    fs::copy(sample, dir.path().join("def.json")).unwrap();
    let out = ehrql(
        dir.path(),
        &["generate-dataset", "def.json", "--output", "out/d.csv"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (header, rows) = read_csv(&dir.path().join("out/d.csv"));
    assert_eq!(header, ["patient_id", "sex", "n_events"]);
    assert_eq!(rows.len(), 10, "the default population size");

    // A ModuleDetails root carries the dummy-data settings, including the extra constraint.
    let definition = r#"{
      "value": {"ModuleDetails": {"dataset": {"ref": "1"}, "measures": null,
        "claimed_permissions": {"tuple": []},
        "dataset_dummy_data_config": {"DummyDataConfig": {"population_size": 4, "legacy": false,
          "timeout": 60, "additional_population_constraint": {"ref": "5"}}}}},
      "1": {"Dataset": {"population": {"ref": "2"}, "variables": {"dict": [["sex", {"ref": "3"}]]},
        "events": {"dict": []}, "measures": null}},
      "2": {"AggregateByPatient.Exists": {"source": {"external_ref": {"module": "ehrql.tables.core", "name": "patients"}}}},
      "3": {"SelectColumn": {"source": {"external_ref": {"module": "ehrql.tables.core", "name": "patients"}}, "name": "sex"}},
      "5": {"Function.EQ": {"lhs": {"ref": "3"}, "rhs": {"Value": "intersex"}}}
    }"#;
    fs::write(dir.path().join("details.json"), definition).unwrap();
    let out = ehrql(dir.path(), &["generate-dataset", "details.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "patient_id,sex\r\n1,intersex\r\n2,intersex\r\n3,intersex\r\n4,intersex\r\n"
    );
}

#[test]
fn an_unsatisfiable_population_stops_at_the_time_limit_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let source = "\
from ehrql import create_dataset
from ehrql.tables.core import patients
dataset = create_dataset()
dataset.configure_dummy_data(population_size=5, timeout=1)
dataset.define_population(patients.date_of_birth > \"2999-01-01\")
";
    fs::write(dir.path().join("def.py"), source).unwrap();
    let out = ehrql(
        dir.path(),
        &["generate-dataset", "def.py", "--output", "out.csv"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("time limit"), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(dir.path().join("out.csv")).unwrap(),
        "patient_id\r\n"
    );
}

/// Generated values keep their columns' constraints even where the definition compares them
/// with values outside them: `imd_rounded` stays a multiple of 100 in 0..=32800 (the
/// quintile boundaries are not), `practice_stp` matches its regex, categories hold.
#[test]
fn generated_tpp_values_keep_ranges_regexes_and_categories() {
    let source = "from ehrql import create_dataset\n\
        from ehrql.tables.tpp import addresses, practice_registrations, patients\n\
        dataset = create_dataset()\ndataset.configure_dummy_data(population_size=100)\n\
        dataset.define_population(patients.exists_for_patient())\n\
        address = addresses.sort_by(addresses.start_date).last_for_patient()\n\
        dataset.imd = address.imd_rounded\ndataset.quintile = address.imd_quintile\n\
        dataset.rural = address.rural_urban_classification\n\
        dataset.poorest = addresses.where(addresses.imd_rounded < 6569).exists_for_patient()\n\
        registration = practice_registrations.sort_by(practice_registrations.start_date).last_for_patient()\n\
        dataset.stp = registration.practice_stp\n\
        dataset.region = registration.practice_nuts1_region_name\n";
    let definition = load_source(source, "def.py", &fixtures()).unwrap();
    let generated = dummy_data::generate(&definition, Date::from_ymd(2025, 6, 1).unwrap()).unwrap();
    let addresses = generated.database.table("addresses").unwrap();
    let position = |name: &str| {
        addresses
            .schema
            .columns
            .iter()
            .position(|c| c.name == name)
            .unwrap()
    };
    let (imd, rural) = (
        position("imd_rounded"),
        position("rural_urban_classification"),
    );
    let mut seen = 0;
    for (_, row) in &addresses.rows {
        if let Value::Int(i) = row[imd] {
            assert!((0..=32_800).contains(&i) && i % 100 == 0, "imd_rounded {i}");
            seen += 1;
        }
        if let Value::Int(r) = row[rural] {
            assert!((1..=8).contains(&r), "rural_urban_classification {r}");
        }
    }
    assert!(seen > 20, "only {seen} IMD values");
    let registrations = generated.database.table("practice_registrations").unwrap();
    let stp = registrations
        .schema
        .columns
        .iter()
        .position(|c| c.name == "practice_stp")
        .unwrap();
    for (_, row) in &registrations.rows {
        if let Some(code) = row[stp].as_str() {
            assert!(
                code.len() == 9
                    && code.starts_with("E540000")
                    && code[7..].bytes().all(|b| b.is_ascii_digit()),
                "practice_stp {code}"
            );
        }
    }
}
