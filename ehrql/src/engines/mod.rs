//! Query engines: run a [`Dataset`] and stream its result rows into a [`RowSink`].
//!
//! Architecture invariant: engines know no front end; they take a validated `Dataset`.
//! [`memory`] is the semantic reference (spec §2.7); [`sqlite`] compiles to SQL through
//! [`crate::sql`]. Both consume the `rewrite_sorts` transform the same way, via
//! [`Dataset::pick_columns`].

pub mod memory;
pub mod postgres;
pub mod sqlite;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::query_model::{Dataset, ScalarType, Value};
use crate::tables::TableSchema;

/// One output column: name, type and what is known of its values (spec §1 step 5).
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSpec {
    /// Column name (`patient_id` first).
    pub name: String,
    /// Value type.
    pub ty: ScalarType,
    /// Whether NULL can occur.
    pub nullable: bool,
    /// Categories in declaration order, for categorical string columns.
    pub categories: Option<Vec<Value>>,
    /// The known integer range, for narrowing Arrow integer types.
    pub range: Option<(i64, i64)>,
}

/// Receives result tables row by row. Engines call `begin_table` once per table (the dataset
/// first, then each event table), then `row` for each row.
pub trait RowSink {
    /// A new table starts.
    ///
    /// # Errors
    /// Whatever the sink's storage reports.
    fn begin_table(&mut self, name: &str, columns: &[ColumnSpec]) -> Result<(), SinkError>;
    /// One row, values in column order.
    ///
    /// # Errors
    /// Whatever the sink's storage reports.
    fn row(&mut self, row: &[Value]) -> Result<(), SinkError>;
}

/// A [`RowSink`] that keeps every row of every table, in arrival order.
#[derive(Debug, Default)]
pub struct CollectRows(pub Vec<Vec<Value>>);

impl RowSink for CollectRows {
    fn begin_table(&mut self, _name: &str, _columns: &[ColumnSpec]) -> Result<(), SinkError> {
        Ok(())
    }

    fn row(&mut self, row: &[Value]) -> Result<(), SinkError> {
        self.0.push(row.to_vec());
        Ok(())
    }
}

/// An error from a [`RowSink`] (usually IO), passed through engines unchanged.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Why running a dataset failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// PostgreSQL reported an error (or the connection failed).
    #[error("postgres error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A stored value does not fit its column's type.
    #[error("table '{table}', column '{column}': {message}")]
    BadData {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// A construct the engine does not support.
    #[error("{0} is not supported by this engine")]
    Unsupported(String),
    /// The sink failed.
    #[error("writing results: {0}")]
    Sink(SinkError),
}

/// What kind of failure a database error is: it decides the exit code (spec §4.2, §6.5) and
/// whether the researcher is told that retrying may help.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseFailure {
    /// The connection was refused or lost, the server is shutting down or has no connection
    /// slots left, or the database is locked by someone else: retrying later may succeed.
    Transient,
    /// A table the query reads does not exist; the name as the database reported it.
    MissingTable(String),
    /// The query went over one of the database's limits (expression depth, columns, memory):
    /// retrying the same definition will fail the same way.
    TooComplex,
    /// Any other database error.
    Other,
}

impl EngineError {
    /// The kind of database failure, or `None` when the error did not come from a database.
    pub fn database_failure(&self) -> Option<DatabaseFailure> {
        match self {
            EngineError::Database(e) => Some(sqlite::database_failure(e)),
            EngineError::Postgres(e) => Some(postgres::database_failure(e)),
            _ => None,
        }
    }
}

/// A query engine.
pub trait Engine {
    /// Runs the dataset, streaming every result table into `sink`.
    ///
    /// # Errors
    /// Database, data or sink errors.
    fn run(&mut self, dataset: &Dataset, sink: &mut dyn RowSink) -> Result<(), EngineError>;

    /// Runs the dataset and sums its variables by grouping sets (measures): one table with
    /// the columns of [`GroupedSum::columns`], one row per group of each grouping set.
    ///
    /// # Errors
    /// Database, data or sink errors.
    fn run_grouped_sum(
        &mut self,
        dataset: &Dataset,
        grouped: &GroupedSum,
        sink: &mut dyn RowSink,
    ) -> Result<(), EngineError>;
}

/// An engine that compiles the dataset to SQL in its dialect and runs the statements: it gets
/// [`Engine`] from this.
pub trait SqlEngine {
    /// The SQL dialect the engine's database speaks.
    fn dialect(&self) -> &'static dyn crate::sql::Dialect;

    /// The string columns compared case-insensitively.
    fn case_insensitive(&self) -> &crate::sql::CaseInsensitiveColumns;

    /// Runs compiled statements, streaming each results query into `sink` as the table
    /// `specs` describes next.
    ///
    /// # Errors
    /// Database, data or sink errors.
    fn run_statements(
        &mut self,
        statements: &[crate::sql::Statement],
        specs: &[(String, Vec<ColumnSpec>)],
        sink: &mut dyn RowSink,
    ) -> Result<(), EngineError>;
}

impl<T: SqlEngine> Engine for T {
    fn run(&mut self, dataset: &Dataset, sink: &mut dyn RowSink) -> Result<(), EngineError> {
        let statements = crate::sql::compile(dataset, self.dialect(), self.case_insensitive())
            .map_err(|e| EngineError::Unsupported(e.to_string()))?;
        self.run_statements(&statements, &table_specs(dataset), sink)
    }

    fn run_grouped_sum(
        &mut self,
        dataset: &Dataset,
        grouped: &GroupedSum,
        sink: &mut dyn RowSink,
    ) -> Result<(), EngineError> {
        let statements = crate::sql::compile_grouped_sum(
            dataset,
            self.dialect(),
            self.case_insensitive(),
            grouped,
        )
        .map_err(|e| EngineError::Unsupported(e.to_string()))?;
        let specs = vec![("measures".to_string(), grouped.columns(dataset))];
        self.run_statements(&statements, &specs, sink)
    }
}

/// Sums of patient-level integer variables by grouping sets (spec §2.3 `GroupedSum`): what
/// one interval of a group of measures sharing a denominator needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupedSum {
    /// The summed variables: the denominator first, then the numerators.
    pub sums: Vec<String>,
    /// Every group-by variable, in output order.
    pub groups: Vec<String>,
    /// The grouping sets, each a subset of `groups` (the empty set: no grouping).
    pub grouping_sets: Vec<Vec<String>>,
}

impl GroupedSum {
    /// The grouping id of a set, as SQL's `GROUPING()` gives it: one bit per group variable,
    /// the first the most significant, set when the variable is *not* grouped on.
    pub fn grouping_id(&self, set: &[String]) -> i64 {
        self.groups
            .iter()
            .fold(0, |id, g| (id << 1) | i64::from(!set.contains(g)))
    }

    /// The result columns: each sum, each group variable (NULL where the row's grouping set
    /// does not group on it), then `grouping_id`.
    pub fn columns(&self, dataset: &Dataset) -> Vec<ColumnSpec> {
        let variables = &table_specs(dataset)[0].1;
        let int = |name: &str| ColumnSpec {
            name: name.to_string(),
            ty: ScalarType::Int,
            nullable: true,
            categories: None,
            range: None,
        };
        let mut out: Vec<ColumnSpec> = self.sums.iter().map(|s| int(s)).collect();
        for group in &self.groups {
            let mut spec = variables
                .iter()
                .find(|c| &c.name == group)
                .cloned()
                .unwrap_or_else(|| int(group));
            spec.nullable = true;
            out.push(spec);
        }
        out.push(int("grouping_id"));
        out
    }
}

/// The output column specs of the dataset table and of each event table.
pub fn table_specs(dataset: &Dataset) -> Vec<(String, Vec<ColumnSpec>)> {
    let graph = dataset.graph();
    let patient_id = ColumnSpec {
        name: "patient_id".into(),
        ty: ScalarType::Int,
        nullable: false,
        categories: None,
        range: None,
    };
    let spec = |name: &str, id| ColumnSpec {
        name: name.to_string(),
        ty: graph.scalar_type(id).unwrap_or(ScalarType::Str),
        nullable: crate::output::is_nullable(graph, id),
        categories: crate::output::categories(graph, id),
        range: crate::output::int_range(graph, id),
    };
    let mut out = Vec::new();
    let mut columns = vec![patient_id.clone()];
    columns.extend(dataset.variables().iter().map(|(n, id)| spec(n, *id)));
    out.push(("dataset".to_string(), columns));
    for (name, frame) in dataset.events() {
        let mut columns = vec![patient_id.clone()];
        if let crate::query_model::Node::SeriesCollectionFrame { members } = graph.node(*frame) {
            columns.extend(members.iter().map(|(n, id)| spec(n, *id)));
        }
        out.push((name.clone(), columns));
    }
    out
}

/// Source data for an engine: rows per table, as typed values in schema column order.
/// Used to feed the in-memory engine and to load SQLite databases in tests and benches.
#[derive(Clone, Debug, Default)]
pub struct Database {
    tables: HashMap<String, TableData>,
}

/// One table's rows.
#[derive(Clone, Debug)]
pub struct TableData {
    /// The schema.
    pub schema: Arc<TableSchema>,
    /// `(patient_id, values in schema column order)`.
    pub rows: Vec<(i64, Vec<Value>)>,
    by_patient: BTreeMap<i64, Vec<usize>>,
}

impl TableData {
    /// Row indices of one patient, in insertion order.
    pub fn patient_rows(&self, patient_id: i64) -> &[usize] {
        self.by_patient.get(&patient_id).map_or(&[], Vec::as_slice)
    }
}

impl Database {
    /// An empty database.
    pub fn new() -> Database {
        Database::default()
    }

    /// Adds (or replaces) a table's rows. Values are checked against the schema.
    ///
    /// # Errors
    /// A row of the wrong length, or a value of the wrong type.
    pub fn insert_table(
        &mut self,
        schema: Arc<TableSchema>,
        rows: Vec<(i64, Vec<Value>)>,
    ) -> Result<(), EngineError> {
        let mut by_patient: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, (patient_id, values)) in rows.iter().enumerate() {
            if values.len() != schema.columns.len() {
                return Err(EngineError::BadData {
                    table: schema.name.clone(),
                    column: "*".into(),
                    message: format!(
                        "expected {} values, got {}",
                        schema.columns.len(),
                        values.len()
                    ),
                });
            }
            for (value, column) in values.iter().zip(&schema.columns) {
                let ok = match (value, column.ty) {
                    (Value::Null, _) => true,
                    (Value::Str(_), ScalarType::MultiCodeString(_)) => true,
                    (v, t) => v.scalar_type() == Some(t),
                };
                if !ok {
                    return Err(EngineError::BadData {
                        table: schema.name.clone(),
                        column: column.name.clone(),
                        message: format!("value {value} is not of type {}", column.ty),
                    });
                }
            }
            by_patient.entry(*patient_id).or_default().push(i);
        }
        self.tables.insert(
            schema.name.clone(),
            TableData {
                schema,
                rows,
                by_patient,
            },
        );
        Ok(())
    }

    /// The table called `name`.
    pub fn table(&self, name: &str) -> Option<&TableData> {
        self.tables.get(name)
    }

    /// All tables.
    pub fn tables(&self) -> impl Iterator<Item = &TableData> {
        self.tables.values()
    }

    /// Every patient id in any table, ascending.
    pub fn patient_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .tables
            .values()
            .flat_map(|t| t.by_patient.keys().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}
