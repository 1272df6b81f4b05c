//! Shared by the CLI tests and the bench: a builder for serializer-JSON definitions over the
//! core tables, the three benchmark definitions, and a deterministic generator of SQLite
//! databases shaped like `ehrql.tables.core`.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use rusqlite::{Connection, params};
use serde_json::{Value as Json, json};

/// The built `ehrql` binary run in `dir` with `args`, without the environment variables it
/// reads (so that a developer's own settings do not leak into a test).
pub fn ehrql_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ehrql"));
    command.current_dir(dir).args(args);
    for name in [
        "DATABASE_URL",
        "OPENSAFELY_BACKEND",
        "OPENSAFELY_QUERY_ENGINE",
        "EHRQL_PERMISSIONS",
        "TEMP_DATABASE_NAME",
    ] {
        command.env_remove(name);
    }
    command
}

/// Runs [`ehrql_command`] to completion.
pub fn ehrql(dir: &Path, args: &[&str]) -> Output {
    ehrql_command(dir, args).output().unwrap()
}

/// Runs [`ehrql_command`] to completion with the environment variables `env` set.
pub fn ehrql_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    ehrql_command(dir, args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// A run's stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Builds ehrQL serializer JSON: every node gets an id, references are `{"ref": id}`.
pub struct DefBuilder {
    defs: serde_json::Map<String, Json>,
    next: usize,
}

impl Default for DefBuilder {
    fn default() -> Self {
        DefBuilder::new()
    }
}

impl DefBuilder {
    pub fn new() -> DefBuilder {
        DefBuilder {
            defs: serde_json::Map::new(),
            next: 2,
        }
    }

    pub fn node(&mut self, tag: &str, body: Json) -> Json {
        let id = self.next.to_string();
        self.next += 1;
        self.defs.insert(id.clone(), json!({ tag: body }));
        json!({ "ref": id })
    }

    pub fn table(&self, name: &str) -> Json {
        json!({"external_ref": {"module": "ehrql.tables.core", "name": name}})
    }

    pub fn col(&mut self, frame: &Json, name: &str) -> Json {
        self.node("SelectColumn", json!({"source": frame, "name": name}))
    }

    pub fn value(&self, v: Json) -> Json {
        json!({ "Value": v })
    }

    pub fn date(&self, d: &str) -> Json {
        json!({ "Value": {"date": d} })
    }

    pub fn f2(&mut self, op: &str, lhs: &Json, rhs: &Json) -> Json {
        self.node(&format!("Function.{op}"), json!({"lhs": lhs, "rhs": rhs}))
    }

    pub fn f1(&mut self, op: &str, source: &Json) -> Json {
        self.node(&format!("Function.{op}"), json!({ "source": source }))
    }

    pub fn agg(&mut self, kind: &str, source: &Json) -> Json {
        self.node(
            &format!("AggregateByPatient.{kind}"),
            json!({ "source": source }),
        )
    }

    pub fn filter(&mut self, source: &Json, condition: &Json) -> Json {
        self.node("Filter", json!({"source": source, "condition": condition}))
    }

    pub fn sort(&mut self, source: &Json, sort_by: &Json) -> Json {
        self.node("Sort", json!({"source": source, "sort_by": sort_by}))
    }

    pub fn pick(&mut self, source: &Json, last: bool) -> Json {
        let position = if last { "last" } else { "first" };
        self.node(
            "PickOneRowPerPatient",
            json!({"source": source, "position": {"Position": position}}),
        )
    }

    pub fn codes_in(&mut self, series: &Json, class: &str, codes: &[String]) -> Json {
        let set: Vec<Json> = codes.iter().map(|c| json!({ class: c })).collect();
        let rhs = json!({"Value": {"frozenset": set}});
        self.f2("In", series, &rhs)
    }

    pub fn case(&mut self, cases: Vec<(Json, Json)>, default: Json) -> Json {
        let pairs: Vec<Json> = cases.into_iter().map(|(c, v)| json!([c, v])).collect();
        self.node(
            "Case",
            json!({"cases": {"dict": pairs}, "default": default}),
        )
    }

    pub fn finish(mut self, population: &Json, variables: &[(String, Json)]) -> String {
        let vars: Vec<Json> = variables.iter().map(|(n, v)| json!([n, v])).collect();
        self.defs.insert(
            "1".into(),
            json!({"Dataset": {"population": population, "variables": {"dict": vars}, "events": {"dict": []}, "measures": null}}),
        );
        self.defs.insert("value".into(), json!({"ref": "1"}));
        Json::Object(self.defs).to_string()
    }
}

pub const INDEX_DATE: &str = "2023-01-01";

/// SNOMED code number `i` of the generated pool.
pub fn snomed(i: usize) -> String {
    format!("{}", 100_000 + i)
}

/// dm+d code number `i` of the generated pool.
pub fn dmd(i: usize) -> String {
    format!("{}", 300_000_000 + i)
}

/// Number of distinct SNOMED codes in generated events.
pub const SNOMED_POOL: usize = 400;
/// Number of distinct dm+d codes in generated medications.
pub const DMD_POOL: usize = 200;

/// Population: registered on the index date and alive; plus age and sex.
fn base(b: &mut DefBuilder) -> (Json, Vec<(String, Json)>) {
    let regs = b.table("practice_registrations");
    let patients = b.table("patients");
    let idx = b.date(INDEX_DATE);
    let start = b.col(&regs, "start_date");
    let end = b.col(&regs, "end_date");
    let started = b.f2("LE", &start, &idx);
    let end_null = b.f1("IsNull", &end);
    let end_after = b.f2("GT", &end, &idx);
    let not_ended = b.f2("Or", &end_null, &end_after);
    let spanning = b.f2("And", &started, &not_ended);
    let registered_frame = b.filter(&regs, &spanning);
    let registered = b.agg("Exists", &registered_frame);
    let dod = b.col(&patients, "date_of_death");
    let dod_null = b.f1("IsNull", &dod);
    let dod_after = b.f2("GT", &dod, &idx);
    let alive = b.f2("Or", &dod_null, &dod_after);
    let population = b.f2("And", &registered, &alive);
    let dob = b.col(&patients, "date_of_birth");
    let age = b.f2("DateDifferenceInYears", &idx, &dob);
    let sex = b.col(&patients, "sex");
    (population, vec![("age".into(), age), ("sex".into(), sex)])
}

/// The simple benchmark definition.
pub fn simple_definition() -> String {
    let mut b = DefBuilder::new();
    let (population, variables) = base(&mut b);
    b.finish(&population, &variables)
}

/// Adds the variables of one event codelist: exists, latest date, count in the last year,
/// latest numeric value.
fn event_variables(
    b: &mut DefBuilder,
    prefix: &str,
    codes: &[String],
    out: &mut Vec<(String, Json)>,
) {
    let events = b.table("clinical_events");
    let code = b.col(&events, "snomedct_code");
    let matches = b.codes_in(&code, "SNOMEDCTCode", codes);
    let filtered = b.filter(&events, &matches);
    let date = b.col(&events, "date");
    let exists = b.agg("Exists", &filtered);
    let sorted = b.sort(&filtered, &date);
    let latest = b.pick(&sorted, true);
    let latest_date = b.col(&latest, "date");
    let latest_value = b.col(&latest, "numeric_value");
    let idx = b.date(INDEX_DATE);
    let minus_one = b.value(json!(-1));
    let year_ago = b.f2("DateAddYears", &idx, &minus_one);
    let after = b.f2("GT", &date, &year_ago);
    let before = b.f2("LE", &date, &idx);
    let in_year = b.f2("And", &after, &before);
    let last_year = b.filter(&filtered, &in_year);
    let count = b.agg("Count", &last_year);
    out.push((format!("{prefix}_exists"), exists));
    out.push((format!("{prefix}_latest_date"), latest_date));
    out.push((format!("{prefix}_count_last_year"), count));
    out.push((format!("{prefix}_latest_value"), latest_value));
}

fn first_medication(
    b: &mut DefBuilder,
    name: &str,
    codes: &[String],
    out: &mut Vec<(String, Json)>,
) {
    let meds = b.table("medications");
    let code = b.col(&meds, "dmd_code");
    let matches = b.codes_in(&code, "DMDCode", codes);
    let filtered = b.filter(&meds, &matches);
    let date = b.col(&meds, "date");
    let sorted = b.sort(&filtered, &date);
    let first = b.pick(&sorted, false);
    out.push((format!("{name}_date"), b.col(&first, "date")));
    out.push((format!("{name}_code"), b.col(&first, "dmd_code")));
}

/// The typical benchmark definition.
pub fn typical_definition() -> String {
    let mut b = DefBuilder::new();
    let (population, mut variables) = base(&mut b);
    let codes: Vec<String> = (0..20).map(|i| snomed(i * 7)).collect();
    event_variables(&mut b, "asthma", &codes, &mut variables);
    let meds: Vec<String> = (0..10).map(|i| dmd(i * 3)).collect();
    first_medication(&mut b, "first_inhaler", &meds, &mut variables);
    b.finish(&population, &variables)
}

/// The heavy benchmark definition: ten codelists (two longer than 32 codes), ~30 variables,
/// case expressions and several sort-and-pick variables.
pub fn heavy_definition() -> String {
    let mut b = DefBuilder::new();
    let (population, mut variables) = base(&mut b);
    let sizes = [20, 8, 40, 12, 60, 5, 15, 25, 10, 30];
    let mut offset = 0;
    for (k, size) in sizes.iter().enumerate() {
        let codes: Vec<String> = (0..*size)
            .map(|i| snomed((offset + i * 3) % SNOMED_POOL))
            .collect();
        offset += 17;
        if k < 5 {
            event_variables(&mut b, &format!("c{k}"), &codes, &mut variables);
        } else {
            let events = b.table("clinical_events");
            let code = b.col(&events, "snomedct_code");
            let matches = b.codes_in(&code, "SNOMEDCTCode", &codes);
            let filtered = b.filter(&events, &matches);
            variables.push((format!("c{k}_count"), b.agg("Count", &filtered)));
        }
    }
    let meds: Vec<String> = (0..10).map(|i| dmd(i * 3)).collect();
    first_medication(&mut b, "first_med_a", &meds, &mut variables);
    let meds_b: Vec<String> = (0..40).map(|i| dmd(i * 2 + 1)).collect();
    first_medication(&mut b, "first_med_b", &meds_b, &mut variables);
    // Case expressions: an age band and a band of the latest value of codelist 0.
    let age = variables[0].1.clone();
    let mut bands = Vec::new();
    for (limit, label) in [(18, "0-17"), (40, "18-39"), (65, "40-64")] {
        let lt = b.f2("LT", &age, &json!({"Value": limit}));
        bands.push((lt, json!({"Value": label})));
    }
    let age_band = b.case(bands, json!({"Value": "65+"}));
    variables.push(("age_band".into(), age_band));
    let value = variables
        .iter()
        .find(|(n, _)| n == "c0_latest_value")
        .map(|(_, v)| v.clone())
        .unwrap_or(Json::Null);
    let low = b.f2("LT", &value, &json!({"Value": 18.5}));
    let mid = b.f2("LT", &value, &json!({"Value": 25.0}));
    let value_band = b.case(
        vec![
            (low, json!({"Value": "low"})),
            (mid, json!({"Value": "normal"})),
        ],
        json!({"Value": "high"}),
    );
    variables.push(("value_band".into(), value_band));
    b.finish(&population, &variables)
}

/// A small deterministic PRNG (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn iso(days_since_epoch: i64) -> String {
    ehrql::query_model::Date::from_days_since_epoch(days_since_epoch)
        .map(|d| d.to_string())
        .unwrap_or_default()
}

/// Writes a SQLite database of `n_patients` patients with about 1.5 registrations, 20 clinical
/// events and 10 medications each, deterministically from `seed`.
pub fn generate_database(path: &Path, n_patients: u64, seed: u64) -> rusqlite::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
         CREATE TABLE patients (patient_id INTEGER PRIMARY KEY, date_of_birth TEXT, sex TEXT, date_of_death TEXT);
         CREATE TABLE practice_registrations (patient_id INTEGER NOT NULL, start_date TEXT, end_date TEXT, practice_pseudo_id INTEGER);
         CREATE TABLE clinical_events (patient_id INTEGER NOT NULL, date TEXT, snomedct_code TEXT, numeric_value REAL);
         CREATE TABLE medications (patient_id INTEGER NOT NULL, date TEXT, dmd_code TEXT);
         CREATE TABLE ons_deaths (patient_id INTEGER PRIMARY KEY, date TEXT, underlying_cause_of_death TEXT);",
    )?;
    let mut rng = Rng::new(seed);
    let tx = conn.transaction()?;
    {
        let mut p = tx.prepare("INSERT INTO patients VALUES (?1, ?2, ?3, ?4)")?;
        let mut r = tx.prepare("INSERT INTO practice_registrations VALUES (?1, ?2, ?3, ?4)")?;
        let mut e = tx.prepare("INSERT INTO clinical_events VALUES (?1, ?2, ?3, ?4)")?;
        let mut m = tx.prepare("INSERT INTO medications VALUES (?1, ?2, ?3)")?;
        let mut d = tx.prepare("INSERT INTO ons_deaths VALUES (?1, ?2, ?3)")?;
        let sexes = ["female", "male", "intersex", "unknown"];
        // Days since 1970: 1920-01-01 is -18262, 2023-01-01 is 19358.
        for patient_id in 1..=n_patients as i64 {
            let dob_days = -18_262 + rng.below(37_000) as i64;
            let dob = ehrql::query_model::Date::from_days_since_epoch(dob_days)
                .map(|d| d.first_of_month().to_string())
                .unwrap_or_default();
            let sex = sexes[(rng.below(100) / 49).min(3) as usize];
            let dead = rng.below(20) == 0;
            let dod = if dead {
                Some(iso(dob_days + 365 * 20 + rng.below(20_000) as i64))
            } else {
                None
            };
            p.execute(params![patient_id, dob, sex, dod])?;
            if let Some(dod) = &dod {
                d.execute(params![patient_id, dod, "I219"])?;
            }
            let n_regs = 1 + u64::from(rng.below(2) == 0);
            let mut start = 10_000 + rng.below(8_000) as i64;
            for k in 0..n_regs {
                let end = if k + 1 == n_regs && rng.below(10) < 8 {
                    None
                } else {
                    Some(start + 365 + rng.below(3_000) as i64)
                };
                r.execute(params![
                    patient_id,
                    iso(start),
                    end.map(iso),
                    rng.below(1000) as i64
                ])?;
                start = end.unwrap_or(start) + 1;
            }
            for _ in 0..(10 + rng.below(21)) {
                let date = iso(15_000 + rng.below(4_400) as i64);
                let code = snomed(rng.below(SNOMED_POOL as u64) as usize);
                let value = if rng.below(3) == 0 {
                    Some(10.0 + rng.below(300) as f64 / 10.0)
                } else {
                    None
                };
                e.execute(params![patient_id, date, code, value])?;
            }
            for _ in 0..(5 + rng.below(11)) {
                let date = iso(15_000 + rng.below(4_400) as i64);
                let code = dmd(rng.below(DMD_POOL as u64) as usize);
                m.execute(params![patient_id, date, code])?;
            }
        }
    }
    tx.commit()?;
    conn.execute_batch(
        "CREATE INDEX ix_regs ON practice_registrations (patient_id);
         CREATE INDEX ix_events ON clinical_events (patient_id);
         CREATE INDEX ix_meds ON medications (patient_id);
         ANALYZE;",
    )?;
    Ok(())
}
