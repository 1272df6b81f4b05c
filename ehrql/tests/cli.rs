//! End-to-end tests of the built `ehrql` binary: output bytes (CSV, CSV.gz, Arrow read back
//! with the arrow crates), engine agreement on generated data, and bad input (exit codes,
//! messages naming the node and rule, no output left behind).

mod support;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int8Type, UInt16Type};
use arrow_array::{Array, BooleanArray, Date32Array, Float64Array, Int64Array};
use arrow_schema::DataType;
use rusqlite::{Connection, params};
use serde_json::json;
use support::DefBuilder;
use support::{ehrql, stderr};

/// A tiny database: three patients, events for two.
fn tiny_database(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE patients (patient_id INTEGER PRIMARY KEY, date_of_birth TEXT, sex TEXT, date_of_death TEXT);
         CREATE TABLE clinical_events (patient_id INTEGER, date TEXT, snomedct_code TEXT, numeric_value REAL);",
    )
    .unwrap();
    for (id, dob, sex) in [
        (1, "1980-01-01", "male"),
        (2, "1990-06-01", "female"),
        (3, "2000-12-01", "unknown"),
    ] {
        conn.execute(
            "INSERT INTO patients VALUES (?1, ?2, ?3, NULL)",
            params![id, dob, sex],
        )
        .unwrap();
    }
    for (id, date, value) in [
        (1, "2020-01-01", Some(1.5)),
        (1, "2021-03-04", Some(0.1)),
        (2, "2019-05-05", None),
    ] {
        conn.execute(
            "INSERT INTO clinical_events VALUES (?1, ?2, '123456', ?3)",
            params![id, date, value],
        )
        .unwrap();
    }
    path
}

/// Population: in `patients`. Variables of every output type.
fn tiny_definition() -> String {
    let mut b = DefBuilder::new();
    let patients = b.table("patients");
    let events = b.table("clinical_events");
    let population = b.agg("Exists", &patients);
    let sex = b.col(&patients, "sex");
    let dob = b.col(&patients, "date_of_birth");
    let has_event = b.agg("Exists", &events);
    let n = b.agg("Count", &events);
    let date = b.col(&events, "date");
    let sorted = b.sort(&events, &date);
    let last = b.pick(&sorted, true);
    let value = b.col(&last, "numeric_value");
    let gt = b.f2("GT", &n, &json!({"Value": 1}));
    let label = b.case(vec![(gt, json!({"Value": "many, \"lots\""}))], json!(null));
    b.finish(
        &population,
        &[
            ("sex".into(), sex),
            ("dob".into(), dob),
            ("has_event".into(), has_event),
            ("n".into(), n),
            ("value".into(), value),
            ("label".into(), label),
        ],
    )
}

const TINY_CSV: &str = "patient_id,sex,dob,has_event,n,value,label\r\n\
1,male,1980-01-01,T,2,0.1,\"many, \"\"lots\"\"\"\r\n\
2,female,1990-06-01,T,1,,\r\n\
3,unknown,2000-12-01,F,0,,\r\n";

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    tiny_database(dir.path());
    fs::write(dir.path().join("def.json"), tiny_definition()).unwrap();
    let root = dir.path().to_path_buf();
    (dir, root)
}

#[test]
fn csv_output_follows_the_reference_byte_rules_on_both_engines() {
    let (_dir, root) = setup();
    for engine in ["sqlite", "in_memory"] {
        let out = ehrql(
            &root,
            &[
                "generate-dataset",
                "def.json",
                "--dsn",
                "sqlite:///tiny.db",
                "--query-engine",
                engine,
                "--output",
                "out/d.csv",
            ],
        );
        assert!(out.status.success(), "{engine}: {}", stderr(&out));
        assert_eq!(
            fs::read_to_string(root.join("out/d.csv")).unwrap(),
            TINY_CSV,
            "{engine}"
        );
    }
}

#[test]
fn csv_goes_to_stdout_without_output() {
    let (_dir, root) = setup();
    let out = ehrql(
        &root,
        &["generate-dataset", "def.json", "--dsn", "sqlite:///tiny.db"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), TINY_CSV);
}

#[test]
fn csv_gz_output_is_gzip_of_the_csv_bytes() {
    let (_dir, root) = setup();
    let out = ehrql(
        &root,
        &[
            "generate-dataset",
            "def.json",
            "--dsn",
            "sqlite:///tiny.db",
            "--output",
            "d.csv.gz",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut text = String::new();
    flate2::read::GzDecoder::new(fs::File::open(root.join("d.csv.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, TINY_CSV);
}

#[test]
fn arrow_output_has_narrowed_types_ordered_dictionaries_and_nulls() {
    let (_dir, root) = setup();
    let out = ehrql(
        &root,
        &[
            "generate-dataset",
            "def.json",
            "--dsn",
            "sqlite:///tiny.db",
            "--output",
            "d.arrow",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let reader =
        arrow_ipc::reader::FileReader::try_new(fs::File::open(root.join("d.arrow")).unwrap(), None)
            .unwrap();
    let schema = reader.schema();
    let field = |name: &str| schema.field_with_name(name).unwrap().clone();
    assert_eq!(field("patient_id").data_type(), &DataType::Int64);
    assert!(!field("patient_id").is_nullable());
    assert_eq!(
        field("sex").data_type(),
        &DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8))
    );
    assert_eq!(field("sex").dict_is_ordered(), Some(true));
    assert_eq!(field("dob").data_type(), &DataType::Date32);
    assert_eq!(field("has_event").data_type(), &DataType::Boolean);
    assert_eq!(field("n").data_type(), &DataType::UInt16);
    assert_eq!(field("value").data_type(), &DataType::Float64);
    assert_eq!(
        field("label").data_type(),
        &DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8))
    );
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert_eq!(batch.num_rows(), 3);
    let ids = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(ids.values(), &[1, 2, 3]);
    let sex = batch.column(1).as_dictionary::<Int8Type>();
    let categories = sex.values().as_string::<i32>();
    assert_eq!(
        categories.iter().flatten().collect::<Vec<_>>(),
        vec!["female", "male", "intersex", "unknown"]
    );
    assert_eq!(sex.keys().values(), &[1, 0, 3]);
    let dob = batch
        .column(2)
        .as_any()
        .downcast_ref::<Date32Array>()
        .unwrap();
    assert_eq!(dob.value(0), 3652); // 1980-01-01
    let has_event = batch
        .column(3)
        .as_any()
        .downcast_ref::<BooleanArray>()
        .unwrap();
    assert_eq!((has_event.value(0), has_event.value(2)), (true, false));
    let n = batch.column(4).as_primitive::<UInt16Type>();
    assert_eq!(n.values(), &[2, 1, 0]);
    let value = batch
        .column(5)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(value.value(0), 0.1);
    assert!(value.is_null(1) && value.is_null(2));
    let label = batch.column(6).as_dictionary::<Int8Type>();
    assert!(label.is_valid(0) && label.is_null(1));
}

#[test]
fn engines_agree_on_generated_data_for_the_benchmark_definitions() {
    let dir = tempfile::tempdir().unwrap();
    support::generate_database(&dir.path().join("gen.db"), 400, 7).unwrap();
    for (name, def) in [
        ("simple", support::simple_definition()),
        ("typical", support::typical_definition()),
        ("heavy", support::heavy_definition()),
    ] {
        fs::write(dir.path().join(format!("{name}.json")), def).unwrap();
        let mut outputs = Vec::new();
        for engine in ["sqlite", "in_memory"] {
            let output = format!("{name}-{engine}.csv");
            let out = ehrql(
                dir.path(),
                &[
                    "generate-dataset",
                    &format!("{name}.json"),
                    "--dsn",
                    "sqlite:///gen.db",
                    "--query-engine",
                    engine,
                    "--output",
                    &output,
                ],
            );
            assert!(out.status.success(), "{name} {engine}: {}", stderr(&out));
            outputs.push(fs::read_to_string(dir.path().join(output)).unwrap());
        }
        let rows = outputs[0].lines().count();
        assert!(rows > 200, "{name}: only {rows} rows");
        assert_eq!(outputs[0], outputs[1], "{name}: engines disagree");
    }
}

#[test]
fn dump_dataset_sql_prints_numbered_statements() {
    let (_dir, root) = setup();
    let out = ehrql(&root, &["dump-dataset-sql", "def.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("-- Run query 001 / "), "{text}");
    assert_eq!(text.matches("-- Fetch results from query").count(), 1);
    // Sort-and-pick is the engine's pick aggregate inside the grouped scan, not a window.
    assert!(text.contains("ehrql_pick_"), "{text}");
    assert!(!text.contains("ROW_NUMBER()"), "{text}");
}

/// Runs a definition expected to be refused; checks exit code, message and that no output
/// (nor any temporary file) is left behind.
fn check_refused(definition: &str, code: i32, message_parts: &[&str]) {
    let (_dir, root) = setup();
    fs::write(root.join("bad.json"), definition).unwrap();
    let before: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let out = ehrql(
        &root,
        &[
            "generate-dataset",
            "bad.json",
            "--dsn",
            "sqlite:///tiny.db",
            "--output",
            "d.csv",
        ],
    );
    assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    let err = stderr(&out);
    for part in message_parts {
        assert!(err.contains(part), "expected {part:?} in {err:?}");
    }
    let after: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "files were left behind");
}

fn dataset(
    population: serde_json::Value,
    variables: serde_json::Value,
    nodes: serde_json::Value,
) -> String {
    let mut defs = nodes.as_object().unwrap().clone();
    defs.insert("value".into(), json!({"ref": "1"}));
    defs.insert(
        "1".into(),
        json!({"Dataset": {"population": population, "variables": {"dict": variables}, "events": {"dict": []}, "measures": null}}),
    );
    serde_json::Value::Object(defs).to_string()
}

fn patients() -> serde_json::Value {
    json!({"external_ref": {"module": "ehrql.tables.core", "name": "patients"}})
}

#[test]
fn malformed_json_exits_2() {
    check_refused("{not json", 2, &["not valid JSON"]);
}

#[test]
fn type_error_names_the_node_and_the_rule() {
    let def = dataset(
        json!({"ref": "2"}),
        json!([["v", {"ref": "3"}]]),
        json!({
            "2": {"AggregateByPatient.Exists": {"source": patients()}},
            "3": {"Function.Add": {"lhs": {"ref": "4"}, "rhs": {"Value": 1}}},
            "4": {"SelectColumn": {"source": patients(), "name": "date_of_birth"}}
        }),
    );
    check_refused(
        &def,
        2,
        &[
            "node 3 (Function.Add)",
            "Expected type 'Series[Numeric]' but got 'Series[date]'",
        ],
    );
}

#[test]
fn inline_tables_are_refused() {
    let def = dataset(
        json!({"ref": "2"}),
        json!([]),
        json!({
            "2": {"AggregateByPatient.Exists": {"source": {"ref": "3"}}},
            "3": {"SelectPatientTable": {"name": "patients", "schema": {}}}
        }),
    );
    check_refused(&def, 2, &["node 3", "inline SelectPatientTable"]);
}

#[test]
fn unknown_tables_and_columns_are_refused() {
    let def = dataset(
        json!({"AggregateByPatient.Exists": {"source": {"external_ref": {"module": "ehrql.tables.core", "name": "secret"}}}}),
        json!([]),
        json!({}),
    );
    check_refused(&def, 2, &["unknown table 'ehrql.tables.core.secret'"]);
    let def = dataset(
        json!({"ref": "2"}),
        json!([["v", {"SelectColumn": {"source": patients(), "name": "nhs_number"}}]]),
        json!({"2": {"AggregateByPatient.Exists": {"source": patients()}}}),
    );
    check_refused(&def, 2, &["has no column 'nhs_number'"]);
}

#[test]
fn population_true_on_null_inputs_is_refused() {
    let def = dataset(
        json!({"ref": "2"}),
        json!([]),
        json!({"2": {"Function.Not": {"source": {"AggregateByPatient.Exists": {"source": patients()}}}}}),
    );
    check_refused(
        &def,
        2,
        &["population definition must not evaluate as True for NULL inputs"],
    );
}

#[test]
fn reference_cycles_are_refused() {
    let def = dataset(
        json!({"ref": "2"}),
        json!([]),
        json!({"2": {"Function.Not": {"source": {"ref": "2"}}}}),
    );
    check_refused(&def, 2, &["reference cycle"]);
}

#[test]
fn definition_errors_pass_their_exit_code_through() {
    check_refused(
        r#"{"value": {"DefinitionError": {"message": "NameError: name 'x' is not defined", "exit_code": 10}}}"#,
        10,
        &["NameError"],
    );
}

#[test]
fn database_errors_exit_5_and_leave_no_output() {
    let (_dir, root) = setup();
    let mut b = DefBuilder::new();
    let meds = b.table("medications");
    let patients = b.table("patients");
    let population = b.agg("Exists", &patients);
    let n = b.agg("Count", &meds);
    fs::write(
        root.join("meds.json"),
        b.finish(&population, &[("n".into(), n)]),
    )
    .unwrap();
    let out = ehrql(
        &root,
        &[
            "generate-dataset",
            "meds.json",
            "--dsn",
            "sqlite:///tiny.db",
            "--output",
            "o/d.csv",
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such table"), "{}", stderr(&out));
    assert!(
        fs::read_dir(root.join("o")).unwrap().next().is_none(),
        "output left behind"
    );
}

#[test]
fn usage_errors_exit_2() {
    let (_dir, root) = setup();
    assert_eq!(ehrql(&root, &["generate-dataset"]).status.code(), Some(2));
    assert_eq!(
        ehrql(&root, &["generate-dataset", "def.json", "--bogus"])
            .status
            .code(),
        Some(2)
    );
    let out = ehrql(
        &root,
        &["generate-dataset", "def.json", "--dsn", "mssql://x"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("only sqlite:///path"));
    let out = ehrql(
        &root,
        &[
            "generate-dataset",
            "def.json",
            "--dsn",
            "sqlite:///tiny.db",
            "--output",
            "d.parquet",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unsupported file type"));
    let version = ehrql(&root, &["--version"]);
    assert_eq!(
        String::from_utf8(version.stdout).unwrap().trim(),
        format!("ehrql {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn heavy_definition_scans_each_source_table_once() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("heavy.json"), support::heavy_definition()).unwrap();
    let out = ehrql(dir.path(), &["dump-dataset-sql", "heavy.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sql = String::from_utf8(out.stdout).unwrap();
    let scans = |table: &str| sql.matches(&format!("FROM \"{table}\" AS base")).count();
    // One grouped scan per table computes every aggregation and pick over it.
    assert_eq!(scans("practice_registrations"), 1);
    assert_eq!(scans("clinical_events"), 1);
    assert_eq!(scans("medications"), 1);
    // Every is_in on a scanned column is a code-map lookup, not an IN list.
    assert!(sql.contains("LEFT JOIN \"codes_"), "no code map");
    assert!(
        !sql.contains("\"snomedct_code\" IN ("),
        "an IN list survived in a scan"
    );
}

#[test]
fn long_literal_sets_outside_scans_use_a_values_table_and_agree_with_memory() {
    let (_dir, root) = setup();
    let mut b = DefBuilder::new();
    let patients = b.table("patients");
    let population = b.agg("Exists", &patients);
    let dob = b.col(&patients, "date_of_birth");
    let mut dates: Vec<serde_json::Value> = (0..40)
        .map(|y| json!({"date": format!("{}-01-01", 1970 + y)}))
        .collect();
    dates.push(json!({"date": "2000-12-01"}));
    let listed = b.f2("In", &dob, &json!({"Value": {"frozenset": dates}}));
    fs::write(
        root.join("long.json"),
        b.finish(&population, &[("listed".into(), listed)]),
    )
    .unwrap();
    let dump = ehrql(&root, &["dump-dataset-sql", "long.json"]);
    assert!(String::from_utf8_lossy(&dump.stdout).contains("inline_data_"));
    let mut outputs = Vec::new();
    for engine in ["sqlite", "in_memory"] {
        let out = ehrql(
            &root,
            &[
                "generate-dataset",
                "long.json",
                "--dsn",
                "sqlite:///tiny.db",
                "--query-engine",
                engine,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        outputs.push(String::from_utf8(out.stdout).unwrap());
    }
    assert_eq!(outputs[0], "patient_id,listed\r\n1,T\r\n2,F\r\n3,T\r\n");
    assert_eq!(outputs[0], outputs[1]);
}

/// A chain of `n` `Not`s over "is in patients".
fn not_chain(n: usize) -> String {
    let mut nodes = serde_json::Map::new();
    nodes.insert(
        "2".into(),
        json!({"AggregateByPatient.Exists": {"source": patients()}}),
    );
    let mut previous = json!({"ref": "2"});
    for i in 0..n {
        nodes.insert(
            (10 + i).to_string(),
            json!({"Function.Not": {"source": previous}}),
        );
        previous = json!({"ref": (10 + i).to_string()});
    }
    dataset(
        json!({"ref": "2"}),
        json!([["v", previous]]),
        serde_json::Value::Object(nodes),
    )
}

#[test]
fn deep_definitions_run_and_absurdly_deep_ones_are_refused_without_crashing() {
    let (_dir, root) = setup();
    fs::write(root.join("deep.json"), not_chain(481)).unwrap();
    for engine in ["sqlite", "in_memory"] {
        let out = ehrql(
            &root,
            &[
                "generate-dataset",
                "deep.json",
                "--dsn",
                "sqlite:///tiny.db",
                "--query-engine",
                engine,
            ],
        );
        assert!(out.status.success(), "{engine}: {}", stderr(&out));
        // An odd number of negations of True.
        assert!(
            String::from_utf8(out.stdout)
                .unwrap()
                .starts_with("patient_id,v\r\n1,F\r\n")
        );
    }
    check_refused(&not_chain(5_000), 2, &["nested too deeply"]);
}

/// A `.py` definition in the ehrQL language runs through `generate-dataset` like a JSON one, with
/// codelists read relative to the workspace; a refused construct exits with the definition-error
/// code, names the line and column, and leaves no output behind.
#[test]
fn python_definitions_run_and_refusals_name_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = tiny_database(dir.path());
    fs::create_dir_all(dir.path().join("analysis")).unwrap();
    fs::create_dir_all(dir.path().join("codelists")).unwrap();
    fs::write(
        dir.path().join("codelists/codes.csv"),
        "code,term\n123456,thing\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("analysis/dataset_definition.py"),
        "from ehrql import create_dataset, codelist_from_csv\n\
         from ehrql.tables.core import patients, clinical_events\n\
         codes = codelist_from_csv(\"codelists/codes.csv\", column=\"code\")\n\
         dataset = create_dataset()\n\
         dataset.define_population(patients.exists_for_patient())\n\
         dataset.sex = patients.sex\n\
         dataset.n = clinical_events.where(clinical_events.snomedct_code.is_in(codes)).count_for_patient()\n",
    )
    .unwrap();
    let dsn = format!("sqlite:///{}", db.display());
    let out = ehrql(
        dir.path(),
        &[
            "generate-dataset",
            "analysis/dataset_definition.py",
            "--output",
            "out.csv",
            "--dsn",
            &dsn,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(dir.path().join("out.csv")).unwrap(),
        "patient_id,sex,n\r\n1,male,2\r\n2,female,1\r\n3,unknown,0\r\n"
    );

    fs::write(dir.path().join("analysis/bad.py"), "import os\n").unwrap();
    let out = ehrql(
        dir.path(),
        &[
            "generate-dataset",
            "analysis/bad.py",
            "--output",
            "bad.csv",
            "--dsn",
            &dsn,
        ],
    );
    assert_eq!(out.status.code(), Some(10));
    assert!(
        stderr(&out).contains("analysis/bad.py:1:"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("importing 'os' is not allowed"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("bad.csv").exists());
}
