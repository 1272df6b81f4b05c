//! Dummy data (spec §6.4): source tables of made-up patients who all satisfy the dataset's
//! population, so a definition can be run with no database (`generate-dataset` without a DSN,
//! `create-dummy-tables`).
//!
//! Rejection sampling: each candidate patient gets rows in every table the dataset reads, with
//! values drawn from constraint-driven pools (a column's categories or range, the literal
//! codes, dates and values the definition compares it with, dates between 1900-01-01 and
//! today, death before today); the in-memory engine then evaluates the population (ANDed with
//! `configure_dummy_data(additional_population_constraint=…)`) and keeps the candidate only if
//! it is True. Each candidate also draws a *profile* (how often NULLs, literals and extra rows
//! appear), a cheap form of the reference's swarm testing that lets rare combinations occur.
//! Generation is seeded, so a definition always gives the same data (on the same day: "today"
//! bounds the dates). A time limit keeps whatever was found and logs a warning.

pub mod query_info;
mod rng;

use std::time::{Duration, Instant};

use crate::engines::memory::evaluate_patient;
use crate::engines::{Database, EngineError};
use crate::frontend::Definition;
use crate::query_model::{
    CodeSystem, Dataset, Date, FunctionOp, MultiCodeSystem, QueryError, ScalarType, Value,
};
use crate::tables::{ColumnSchema, Constraint};
pub use query_info::{TableInfo, tables_used};
use rng::Rng;

/// The reference generator's seed; any fixed string would do.
const SEED: &str = "BwRV3spP";
/// Largest population accepted: beyond this a laptop run is unreasonable anyway.
pub const MAX_POPULATION_SIZE: i64 = 1_000_000;

/// Generated source tables.
#[derive(Debug)]
pub struct DummyData {
    /// Rows of every table the dataset reads, for patients 1..=N.
    pub database: Database,
    /// The tables and the columns the dataset reads (what `create-dummy-tables` writes).
    pub tables: Vec<TableInfo>,
    /// How many patients were generated (fewer than asked if the time limit was reached).
    pub n_patients: usize,
}

/// Why dummy data could not be generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DummyDataError {
    /// `population_size` is out of range.
    #[error("population_size must be between 0 and {MAX_POPULATION_SIZE}, got {0}")]
    PopulationSize(i64),
    /// `timeout` is not positive.
    #[error("timeout must be a positive number of seconds, got {0}")]
    Timeout(i64),
    /// The additional constraint cannot be ANDed with the population.
    #[error("additional_population_constraint: {0}")]
    Constraint(Box<QueryError>),
    /// A generated value did not fit its column (a bug in the generator).
    #[error("generated data: {0}")]
    Data(#[from] EngineError),
}

/// Generates dummy source tables for `definition`, with dates up to `today`.
///
/// # Errors
/// A bad `configure_dummy_data` setting; see [`DummyDataError`].
pub fn generate(definition: &Definition, today: Date) -> Result<DummyData, DummyDataError> {
    let config = &definition.dummy_data_config;
    if !(0..=MAX_POPULATION_SIZE).contains(&config.population_size) {
        return Err(DummyDataError::PopulationSize(config.population_size));
    }
    if config.timeout <= 0 {
        return Err(DummyDataError::Timeout(config.timeout));
    }
    let target = config.population_size as usize;
    let timeout = Duration::from_secs(config.timeout.unsigned_abs());
    let dataset = generation_dataset(definition)?;
    let tables = tables_used(&dataset);
    let mut generator = Generator {
        rng: Rng::from_seed(SEED),
        tables: &tables,
        today,
        earliest: Date::from_ymd(1900, 1, 1).unwrap_or(today),
        int_span: (2 * target as i64).max(100),
        next_id: 0,
    };
    let mut accepted: Vec<Vec<(i64, Vec<Value>)>> = vec![Vec::new(); tables.len()];
    let started = Instant::now();
    let mut n_patients = 0usize;
    let mut n_candidates = 0u64;
    while n_patients < target {
        if started.elapsed() >= timeout {
            tracing::warn!(
                generated = n_patients,
                requested = target,
                candidates = n_candidates,
                "dummy data generation reached its time limit of {}s; keeping the {n_patients} patients found",
                timeout.as_secs()
            );
            break;
        }
        n_candidates += 1;
        let patient_id = n_patients as i64 + 1;
        let rows = generator.patient();
        let mut candidate = Database::new();
        for (info, table_rows) in tables.iter().zip(&rows) {
            let keyed = table_rows.iter().map(|r| (patient_id, r.clone())).collect();
            candidate.insert_table(info.schema.clone(), keyed)?;
        }
        let in_population =
            evaluate_patient(&dataset, &candidate, patient_id, dataset.population());
        if in_population.as_bool() != Some(true) {
            continue;
        }
        for (table_rows, kept) in rows.into_iter().zip(accepted.iter_mut()) {
            kept.extend(table_rows.into_iter().map(|r| (patient_id, r)));
        }
        n_patients += 1;
    }
    tracing::info!(
        patients = n_patients,
        candidates = n_candidates,
        "generated dummy data"
    );
    let mut database = Database::new();
    for (info, rows) in tables.iter().zip(accepted) {
        database.insert_table(info.schema.clone(), rows)?;
    }
    Ok(DummyData {
        database,
        tables,
        n_patients,
    })
}

/// The definition's dataset with the additional population constraint ANDed into its
/// population (the dataset itself when there is none).
///
/// # Errors
/// The constraint cannot be combined with the population.
pub fn generation_dataset(definition: &Definition) -> Result<Dataset, DummyDataError> {
    let dataset = &definition.dataset;
    let Some(constraint) = definition
        .dummy_data_config
        .additional_population_constraint
    else {
        return Ok(dataset.clone());
    };
    let constraint_error = |e: QueryError| DummyDataError::Constraint(Box::new(e));
    let mut graph = dataset.graph().clone();
    let population = graph
        .function(FunctionOp::And, vec![dataset.population(), constraint])
        .map_err(constraint_error)?;
    Dataset::new(
        graph,
        population,
        dataset.variables().to_vec(),
        dataset.events().to_vec(),
    )
    .map_err(constraint_error)
}

/// Today's date (UTC), the upper bound of generated dates.
pub fn today() -> Date {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Date::from_days_since_epoch((seconds / 86_400) as i64)
        .unwrap_or_else(|| Date::from_ymd(2000, 1, 1).expect("a valid date"))
}

/// How one candidate's data is shaped: drawn afresh per candidate so that rare combinations
/// (no rows at all, every value a literal, many NULLs) are tried too.
struct Profile {
    null_chance: f64,
    literal_chance: f64,
    max_event_rows: i64,
    optional_table_chance: f64,
    death_chance: f64,
}

/// A candidate's life span: other dates fall inside it.
struct Life {
    date_of_birth: Date,
    date_of_death: Option<Date>,
}

struct Generator<'a> {
    rng: Rng,
    tables: &'a [TableInfo],
    today: Date,
    earliest: Date,
    int_span: i64,
    /// The last identifier handed out to a join-key column (see [`Generator::representable`]).
    next_id: i64,
}

impl Generator<'_> {
    /// One candidate's rows, per table in `tables` order, values in schema column order.
    fn patient(&mut self) -> Vec<Vec<Vec<Value>>> {
        let profile = Profile {
            null_chance: *self.rng.choose(&[0.0, 0.1, 0.4]).unwrap_or(&0.1),
            literal_chance: *self.rng.choose(&[0.3, 0.7, 0.95]).unwrap_or(&0.7),
            max_event_rows: *self.rng.choose(&[2, 6, 15]).unwrap_or(&6),
            optional_table_chance: *self.rng.choose(&[0.3, 0.8, 1.0]).unwrap_or(&0.8),
            death_chance: *self.rng.choose(&[0.05, 0.2, 0.6]).unwrap_or(&0.2),
        };
        let life = self.life(&profile);
        let tables = self.tables;
        tables
            .iter()
            .map(|info| {
                let n_rows = if info.schema.patient_level {
                    let present = match info.schema.name.as_str() {
                        // Everyone has a demographic record.
                        "patients" => true,
                        // Death registrations exist exactly for the dead.
                        "ons_deaths" => life.date_of_death.is_some(),
                        _ => self.rng.chance(profile.optional_table_chance),
                    };
                    i64::from(present)
                } else {
                    self.rng.range(0, profile.max_event_rows)
                };
                (0..n_rows)
                    .map(|_| self.row(info, &life, &profile))
                    .collect()
            })
            .collect()
    }

    fn life(&mut self, profile: &Profile) -> Life {
        let patients = self.tables.iter().find(|t| t.schema.name == "patients");
        let literal_date = |g: &mut Generator, column: &str| -> Option<Date> {
            let pool = patients?.literals.get(column)?;
            if !g.rng.chance(profile.literal_chance) {
                return None;
            }
            match g.rng.choose(pool)? {
                Value::Date(d) => d
                    .add_days(g.rng.range(-1, 1))
                    .filter(|d| (g.earliest..g.today).contains(d)),
                _ => None,
            }
        };
        let latest = self.today.add_days(-1).unwrap_or(self.today);
        let date_of_birth = literal_date(self, "date_of_birth")
            .unwrap_or_else(|| self.date_between(self.earliest, latest))
            .first_of_month();
        let date_of_death = match literal_date(self, "date_of_death") {
            Some(d) => Some(d.max(date_of_birth).min(latest)),
            None if self.rng.chance(profile.death_chance) => {
                Some(self.date_between(date_of_birth, latest))
            }
            None => None,
        };
        Life {
            date_of_birth,
            date_of_death,
        }
    }

    fn row(&mut self, info: &TableInfo, life: &Life, profile: &Profile) -> Vec<Value> {
        let mut values: Vec<Value> = info
            .schema
            .columns
            .iter()
            .map(|column| self.value(info, column, life, profile))
            .collect();
        // Registrations (and any other span) end after they start.
        let position = |name: &str| info.schema.columns.iter().position(|c| c.name == name);
        if let (Some(start), Some(end)) = (position("start_date"), position("end_date"))
            && let (Value::Date(s), Value::Date(e)) = (&values[start], &values[end])
            && e < s
        {
            values.swap(start, end);
        }
        self.representable(info, &mut values);
        values
    }

    /// Keeps a row within what the TPP backend's raw tables can express, so that dummy tables
    /// written with `create-dummy-tables --backend tpp` map back to the same data: columns
    /// the mapping joins raw tables on are unique identifiers, a practice's attributes are a
    /// function of its id (they live on its one `Organisation` row), flags the mapping
    /// derives from other columns agree with them, values TPP uses to mean "unknown" are NULL,
    /// and an event has a CTV3 or a SNOMED CT code, not both (they come from different raw
    /// tables).
    fn representable(&mut self, info: &TableInfo, values: &mut [Value]) {
        let columns = &info.schema.columns;
        let position = |name: &str| columns.iter().position(|c| c.name == name);
        let read = |name: &str| info.columns.iter().any(|c| c == name);
        let key = match info.schema.name.as_str() {
            "addresses" => Some("address_id"),
            "apcs" => Some("apcs_ident"),
            "emergency_care_attendances" => Some("id"),
            "household_memberships_2020" => Some("household_pseudo_id"),
            _ => None,
        };
        if let Some(i) = key.and_then(position) {
            self.next_id += 1;
            values[i] = Value::Int(self.next_id);
        }
        // TPP writes an unknown household size as 0.
        if let Some(size) = position("household_size")
            && values[size] == Value::Int(0)
        {
            values[size] = Value::Null;
        }
        // TPP records healthcare workers only: the flag is always true.
        if let Some(worker) = position("is_healthcare_worker") {
            values[worker] = Value::Bool(true);
        }
        // Negative SGSS results have no variant details (their raw table has none).
        if let Some(positive) = position("is_positive")
            && values[positive].as_bool() == Some(false)
        {
            for detail in ["sgtf_status", "variant", "variant_detection_method"] {
                if let Some(i) = position(detail) {
                    values[i] = Value::Null;
                }
            }
        }
        if let (Some(msoa), Some(has_postcode)) = (position("msoa_code"), position("has_postcode"))
        {
            values[has_postcode] = Value::Bool(!values[msoa].is_null());
        }
        if let Some(matched) = position("care_home_is_potential_match") {
            let is_match = values[matched].as_bool() == Some(true);
            values[matched] = Value::Bool(is_match);
            for flag in [
                "care_home_requires_nursing",
                "care_home_does_not_require_nursing",
            ] {
                if let Some(i) = position(flag).filter(|_| !is_match) {
                    values[i] = Value::Null;
                }
            }
        }
        if let (Some(snomed), Some(ctv3)) = (position("snomedct_code"), position("ctv3_code"))
            && !values[snomed].is_null()
            && !values[ctv3].is_null()
        {
            let drop = if self.rng.chance(0.5) { snomed } else { ctv3 };
            values[drop] = Value::Null;
        }
        if let Some(Value::Int(practice)) = position("practice_pseudo_id").map(|i| &values[i]) {
            let practice = *practice;
            let attributes = practice_attributes(practice, columns);
            for (name, value) in attributes {
                if let Some(i) = position(name) {
                    values[i] = if read(name) { value } else { Value::Null };
                }
            }
        }
    }

    fn value(
        &mut self,
        info: &TableInfo,
        column: &ColumnSchema,
        life: &Life,
        profile: &Profile,
    ) -> Value {
        match (info.schema.name.as_str(), column.name.as_str()) {
            ("patients", "date_of_birth") => return Value::Date(life.date_of_birth),
            ("patients", "date_of_death") | ("ons_deaths", "date") => {
                return life.date_of_death.map_or(Value::Null, Value::Date);
            }
            _ => {}
        }
        // Columns the dataset never reads stay NULL where allowed: they cannot matter. Rows
        // the TPP backend's activation filter limits are always dated, read or not: it drops
        // undated ones, so real TPP runs never see them.
        let read = info.columns.contains(&column.name);
        let activation_dated = crate::backends::tpp::ACTIVATION_FILTER_FIELDS
            .contains(&(info.schema.name.as_str(), column.name.as_str()));
        if !column.not_null()
            && !activation_dated
            && (!read || self.rng.chance(profile.null_chance))
        {
            return Value::Null;
        }
        if let Some(categories) = column.categories() {
            return self.rng.choose(categories).cloned().unwrap_or(Value::Null);
        }
        if let Some(pool) = info.literals.get(&column.name)
            && self.rng.chance(profile.literal_chance)
            && let Some(literal) = self.rng.choose(pool).cloned()
        {
            match self.near(literal, column) {
                // Dates stay between 1900-01-01 and today, and integers in their column's
                // range, whatever the definition compares them with.
                Value::Date(d) if !(self.earliest..=self.today).contains(&d) => {}
                Value::Int(i) if !in_range(column, i) => {}
                value => return value,
            }
        }
        self.fresh(column, life)
    }

    /// A literal, or a neighbour of it (one day, one unit), so that strict comparisons
    /// (`>`, `<`) are hit as often as equality.
    fn near(&mut self, literal: Value, column: &ColumnSchema) -> Value {
        let step = if self.rng.chance(0.5) {
            0
        } else {
            self.rng.range(-1, 1)
        };
        let value = match literal {
            Value::Date(d) => d.add_days(step).map_or(Value::Date(d), Value::Date),
            Value::Int(i) => Value::Int(i.saturating_add(step)),
            Value::Float(f) => Value::Float(f + step as f64 / 100.0),
            other => other,
        };
        match value {
            Value::Date(d) if column.constraints.contains(&Constraint::FirstOfMonth) => {
                Value::Date(d.first_of_month())
            }
            other => other,
        }
    }

    /// A value from the column's own pool, ignoring the definition's literals.
    fn fresh(&mut self, column: &ColumnSchema, life: &Life) -> Value {
        match column.ty {
            ScalarType::Bool => Value::Bool(self.rng.chance(0.5)),
            ScalarType::Int => {
                let (min, max, step) = column
                    .constraints
                    .iter()
                    .find_map(|c| match c {
                        Constraint::ClosedRange { min, max, step } => Some((*min, *max, *step)),
                        _ => None,
                    })
                    .unwrap_or((0, self.int_span, 1));
                let step = step.max(1);
                Value::Int(min + self.rng.range(0, (max - min) / step) * step)
            }
            ScalarType::Float => {
                Value::Float(self.rng.range(0, 100 * self.int_span) as f64 / 100.0)
            }
            ScalarType::Date => {
                let end = life.date_of_death.unwrap_or(self.today);
                let date = self.date_between(life.date_of_birth, end);
                if column.constraints.contains(&Constraint::FirstOfMonth) {
                    Value::Date(date.first_of_month())
                } else {
                    Value::Date(date)
                }
            }
            ScalarType::Code(system) => Value::Code(system, self.code(system).into()),
            ScalarType::MultiCodeString(system) => {
                let code_system = match system {
                    MultiCodeSystem::Icd10 => CodeSystem::Icd10,
                    MultiCodeSystem::Opcs4 => CodeSystem::Opcs4,
                };
                let codes: Vec<String> = (0..self.rng.range(1, 3))
                    .map(|_| self.code(code_system))
                    .collect();
                Value::Str(codes.join("||").into())
            }
            ScalarType::Str => match column.constraints.iter().find_map(|c| match c {
                Constraint::Regex(pattern) => Some(*pattern),
                _ => None,
            }) {
                Some(pattern) => Value::Str(self.matching(pattern).into()),
                None => Value::Str(self.letters(8).into()),
            },
        }
    }

    /// A string matching `pattern`, in the small regex dialect of the table schemas: literal
    /// characters and `[...]` classes (with `a-z` ranges), each optionally repeated `{n}`
    /// times.
    fn matching(&mut self, pattern: &str) -> String {
        let mut out = String::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let choices: Vec<char> = if c == '[' {
                let mut class = Vec::new();
                let mut previous = None;
                while let Some(c) = chars.next() {
                    match (c, previous) {
                        (']', _) => break,
                        ('-', Some(low)) if chars.peek().is_some_and(|c| *c != ']') => {
                            let high = chars.next().unwrap_or(low);
                            class.extend((low..=high).skip(1));
                            previous = None;
                        }
                        (c, _) => {
                            class.push(c);
                            previous = Some(c);
                        }
                    }
                }
                class
            } else {
                vec![c]
            };
            let mut count = 1;
            if chars.peek() == Some(&'{') {
                chars.next();
                let digits: String = chars.by_ref().take_while(|c| *c != '}').collect();
                count = digits.parse().unwrap_or(1);
            }
            for _ in 0..count {
                let i = self.rng.range(0, choices.len() as i64 - 1) as usize;
                out.extend(choices.get(i));
            }
        }
        out
    }

    fn date_between(&mut self, start: Date, end: Date) -> Date {
        let (lo, hi) = (start.days_since_epoch(), end.days_since_epoch());
        let days = self.rng.range(i64::from(lo), i64::from(hi.max(lo)));
        Date::from_days_since_epoch(days).unwrap_or(start)
    }

    fn letters(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'a' + self.rng.range(0, 25) as u8))
            .collect()
    }

    fn digits(&mut self, n: i64) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.rng.range(0, 9) as u8))
            .collect()
    }

    /// A code of the system's shape (each system's regex, spec §3.3).
    fn code(&mut self, system: CodeSystem) -> String {
        let letter = |g: &mut Generator| char::from(b'A' + g.rng.range(0, 25) as u8);
        match system {
            CodeSystem::SnomedCt | CodeSystem::Dmd => {
                let n = self.rng.range(5, 10);
                format!("{}{}", self.rng.range(1, 9), self.digits(n))
            }
            CodeSystem::Ctv3 => {
                let n = 4;
                format!("{}{}", letter(self), self.digits(n))
            }
            CodeSystem::Icd10 | CodeSystem::Opcs4 => {
                let n = self.rng.range(2, 3);
                format!("{}{}", letter(self), self.digits(n))
            }
            CodeSystem::Bnf => format!("0{}", self.digits(14)),
        }
    }
}

/// Whether `value` fits the column's `ClosedRange` (if it has one), step included.
fn in_range(column: &ColumnSchema, value: i64) -> bool {
    column.constraints.iter().all(|c| match c {
        Constraint::ClosedRange { min, max, step } => {
            (*min..=*max).contains(&value) && (value - min) % (*step).max(1) == 0
        }
        _ => true,
    })
}

/// A practice's STP, region and SystmOne go-live date, derived from its id (some NULL).
fn practice_attributes(practice: i64, columns: &[ColumnSchema]) -> Vec<(&'static str, Value)> {
    let n = practice.unsigned_abs();
    let region = columns
        .iter()
        .find(|c| c.name == "practice_nuts1_region_name")
        .and_then(ColumnSchema::categories)
        .and_then(|regions| regions.get(n as usize % regions.len()).cloned())
        .filter(|_| n % 11 != 5)
        .unwrap_or(Value::Null);
    let stp = if n % 13 == 7 {
        Value::Null
    } else {
        Value::Str(format!("E540000{:02}", n % 100).into())
    };
    let go_live = Date::from_ymd(1995, 1, 1)
        .and_then(|d| d.add_days((n * 97 % 9_000) as i64))
        .filter(|_| n % 17 != 3)
        .map_or(Value::Null, Value::Date);
    vec![
        ("practice_stp", stp),
        ("practice_nuts1_region_name", region),
        ("practice_systmone_go_live_date", go_live),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generator over no tables, for drawing single values.
    fn table_less_generator() -> Generator<'static> {
        Generator {
            rng: Rng::from_seed(SEED),
            tables: &[],
            today: Date::from_ymd(2025, 1, 1).unwrap(),
            earliest: Date::from_ymd(1900, 1, 1).unwrap(),
            int_span: 100,
            next_id: 0,
        }
    }

    #[test]
    fn regex_constrained_strings_match_their_pattern() {
        let mut generator = table_less_generator();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let stp = generator.matching("E540000[0-9]{2}");
            assert_eq!(stp.len(), 9, "{stp}");
            assert!(stp.starts_with("E540000"), "{stp}");
            assert!(stp[7..].bytes().all(|b| b.is_ascii_digit()), "{stp}");
            seen.insert(stp);
            let msoa = generator.matching("E020[0-9]{5}");
            assert!(msoa.starts_with("E020") && msoa.len() == 9, "{msoa}");
        }
        // Every digit is drawn, including 0 and 9.
        assert!(seen.contains("E54000000") || seen.iter().any(|s| s.ends_with('0')));
        assert!(seen.iter().any(|s| s.ends_with('9')));
    }

    #[test]
    fn generated_codes_have_their_systems_shape() {
        let mut generator = table_less_generator();
        for system in CodeSystem::ALL {
            for _ in 0..200 {
                let code = generator.code(system);
                assert!(system.is_valid(&code), "{code} is not a valid {system:?}");
            }
        }
    }
}
