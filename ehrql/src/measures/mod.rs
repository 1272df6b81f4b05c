//! Measures (spec §3.6): ratios of patient counts (or sums) per interval and group.
//!
//! Measures sharing a denominator and intervals are computed together: for each interval, the
//! `INTERVAL` parameters are replaced by the interval's dates
//! ([`Graph::substitute_parameters`]), the population is the denominator as a bool, and the
//! engine sums the denominator and every numerator by the measures' grouping sets in one query
//! ([`Engine::run_grouped_sum`]). Rows then go out in a fixed order (per denominator group,
//! interval, grouping set, group values, measure), with the reference's columns, and small
//! numbers suppressed as the reference does unless disclosure control is switched off.

use std::collections::BTreeMap;

use crate::engines::{
    CollectRows, ColumnSpec, Engine, EngineError, GroupedSum, RowSink, SinkError,
};
use crate::frontend::DummyDataConfig;
use crate::local_files::{self, FileColumn, FileError};
use crate::query_model::{
    Dataset, Date, FunctionOp, Graph, Literal, NodeId, QueryError, ScalarType, Value,
};

/// The parameter `INTERVAL.start_date` stands for.
pub const INTERVAL_START: &str = "interval_start_date";
/// The parameter `INTERVAL.end_date` stands for.
pub const INTERVAL_END: &str = "interval_end_date";

/// Counts at or below this are suppressed (written as 0).
const SUPPRESSION_THRESHOLD: i64 = 7;
/// Counts are then rounded to the nearest multiple of this.
const ROUNDING_MULTIPLE: i64 = 5;

/// One measure.
#[derive(Clone, Debug)]
pub struct Measure {
    /// Its name (a valid identifier).
    pub name: String,
    /// A patient-level bool or int series.
    pub numerator: NodeId,
    /// A patient-level bool or int series.
    pub denominator: NodeId,
    /// Output column name and patient-level series.
    pub group_by: Vec<(String, NodeId)>,
    /// `(start, end)` dates, sorted and distinct.
    pub intervals: Vec<(Date, Date)>,
}

/// A measures definition file: the measures over one graph, and its settings.
#[derive(Clone, Debug)]
pub struct MeasuresDefinition {
    /// The graph the measures' series live in.
    pub graph: Graph,
    /// The measures in definition order.
    pub measures: Vec<Measure>,
    /// `measures.configure_dummy_data(...)`; `population_size` 0 means "guess".
    pub dummy_data_config: DummyDataConfig,
    /// `configure_disclosure_control(enabled=...)`: on unless switched off.
    pub disclosure_control: bool,
    /// `claim_permissions(...)`.
    pub claimed_permissions: Vec<String>,
}

/// One result row: a measure at an interval for one group.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasureRow {
    /// Index of the measure in the definition.
    pub measure: usize,
    /// The interval.
    pub interval: (Date, Date),
    /// The numerator sum.
    pub numerator: i64,
    /// The denominator sum (never 0).
    pub denominator: i64,
    /// The value of every group-by column of the definition ([`MeasuresDefinition::groups`]
    /// order); NULL where this measure does not group by it.
    pub groups: Vec<Value>,
}

/// Why measures could not be computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeasuresError {
    /// Building an interval's query failed.
    #[error("measures: {0}")]
    Query(#[from] QueryError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl MeasuresDefinition {
    /// Every group-by column of every measure, in order of first appearance.
    pub fn groups(&self) -> Vec<(String, NodeId)> {
        let mut out: Vec<(String, NodeId)> = Vec::new();
        for measure in &self.measures {
            for (name, id) in &measure.group_by {
                if !out.iter().any(|(n, _)| n == name) {
                    out.push((name.clone(), *id));
                }
            }
        }
        out
    }

    /// The columns of the combined output: `measure`, `interval_start`, `interval_end`,
    /// `ratio`, `numerator`, `denominator`, then every group-by column.
    pub fn columns(&self) -> Vec<ColumnSpec> {
        let mut columns = vec![ColumnSpec {
            name: "measure".into(),
            ty: ScalarType::Str,
            nullable: false,
            categories: Some(
                self.measures
                    .iter()
                    .map(|m| Value::Str(m.name.as_str().into()))
                    .collect(),
            ),
            range: None,
        }];
        columns.extend(self.value_columns(&self.groups()));
        columns
    }

    /// The columns of one measure's own file (`DIR/:csv` output): the combined columns
    /// without `measure`, and only its own group-by columns.
    pub fn measure_columns(&self, measure: &Measure) -> Vec<ColumnSpec> {
        self.value_columns(&measure.group_by)
    }

    fn value_columns(&self, groups: &[(String, NodeId)]) -> Vec<ColumnSpec> {
        let spec = |name: &str, ty: ScalarType, nullable: bool| ColumnSpec {
            name: name.into(),
            ty,
            nullable,
            categories: None,
            range: None,
        };
        let mut columns = vec![
            spec("interval_start", ScalarType::Date, false),
            spec("interval_end", ScalarType::Date, false),
            spec("ratio", ScalarType::Float, true),
            spec("numerator", ScalarType::Int, true),
            spec("denominator", ScalarType::Int, true),
        ];
        for (name, id) in groups {
            columns.push(ColumnSpec {
                name: name.clone(),
                ty: self.graph.scalar_type(*id).unwrap_or(ScalarType::Str),
                nullable: true,
                categories: crate::output::categories(&self.graph, *id),
                range: crate::output::int_range(&self.graph, *id),
            });
        }
        columns
    }

    /// A dataset for generating dummy data: the population is any denominator being true
    /// (or positive), the variables every numerator and group, over the span of all intervals
    /// (as the reference does).
    ///
    /// # Errors
    /// The series do not combine.
    pub fn dummy_data_dataset(&self) -> Result<Dataset, QueryError> {
        let mut graph = self.graph.clone();
        let mut population: Option<NodeId> = None;
        let mut variables: Vec<(String, NodeId)> = Vec::new();
        for measure in &self.measures {
            let denominator = as_bool(&mut graph, measure.denominator)?;
            population = Some(match population {
                None => denominator,
                Some(p) if p == denominator => p,
                Some(p) => graph.function(FunctionOp::Or, vec![p, denominator])?,
            });
            let numerator = measure.numerator;
            if !variables.iter().any(|(_, id)| *id == numerator) {
                variables.push((format!("value_{}", variables.len()), numerator));
            }
        }
        for (name, id) in self.groups() {
            variables.push((format!("g_{name}"), id));
        }
        let population = population.ok_or_else(|| QueryError::Dataset("no measures".into()))?;
        let start = self
            .measures
            .iter()
            .flat_map(|m| &m.intervals)
            .map(|i| i.0)
            .min();
        let end = self
            .measures
            .iter()
            .flat_map(|m| &m.intervals)
            .map(|i| i.1)
            .max();
        let (Some(start), Some(end)) = (start, end) else {
            return Err(QueryError::Dataset("no intervals".into()));
        };
        substituted_dataset(&graph, population, &variables, (start, end))
    }

    /// The configured dummy population size, or the reference's guess: 10 per denominator,
    /// interval and group column.
    pub fn dummy_population_size(&self) -> i64 {
        if self.dummy_data_config.population_size > 0 {
            return self.dummy_data_config.population_size;
        }
        let mut denominators: Vec<NodeId> = self.measures.iter().map(|m| m.denominator).collect();
        denominators.sort();
        denominators.dedup();
        let mut intervals: Vec<(Date, Date)> = self
            .measures
            .iter()
            .flat_map(|m| m.intervals.clone())
            .collect();
        intervals.sort();
        intervals.dedup();
        10 * denominators.len() as i64 * intervals.len() as i64 * self.groups().len().max(1) as i64
    }
}

/// `series > 0` for an int series, the series itself for a bool one.
fn as_bool(graph: &mut Graph, series: NodeId) -> Result<NodeId, QueryError> {
    if graph.scalar_type(series) == Some(ScalarType::Bool) {
        return Ok(series);
    }
    let zero = graph.value(Literal::Scalar(Value::Int(0)))?;
    graph.function(FunctionOp::Gt, vec![series, zero])
}

/// The series as an int (bools as 0/1).
fn as_int(graph: &mut Graph, series: NodeId) -> Result<NodeId, QueryError> {
    if graph.scalar_type(series) == Some(ScalarType::Bool) {
        return graph.function(FunctionOp::CastToInt, vec![series]);
    }
    Ok(series)
}

/// The dataset with `INTERVAL` bound to `interval`.
fn substituted_dataset(
    graph: &Graph,
    population: NodeId,
    variables: &[(String, NodeId)],
    interval: (Date, Date),
) -> Result<Dataset, QueryError> {
    let mut roots = vec![population];
    roots.extend(variables.iter().map(|(_, id)| *id));
    let (graph, roots) = graph.substitute_parameters(
        &roots,
        &[
            (INTERVAL_START, Value::Date(interval.0)),
            (INTERVAL_END, Value::Date(interval.1)),
        ],
    )?;
    let variables = variables
        .iter()
        .zip(&roots[1..])
        .map(|((name, _), id)| (name.clone(), *id))
        .collect();
    Dataset::new(graph, roots[0], variables, vec![])
}

/// The measures sharing one denominator and set of intervals, as one grouped sum.
struct MeasureGroup {
    graph: Graph,
    population: NodeId,
    /// `value_0` is the denominator, then numerators; `g_<name>` the group columns.
    variables: Vec<(String, NodeId)>,
    grouped: GroupedSum,
    intervals: Vec<(Date, Date)>,
    /// (measure index, index of its numerator among the sums, its grouping id).
    fetchers: Vec<(usize, usize, i64)>,
}

fn measure_groups(definition: &MeasuresDefinition) -> Result<Vec<MeasureGroup>, QueryError> {
    let mut keys: Vec<(NodeId, Vec<(Date, Date)>)> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (index, measure) in definition.measures.iter().enumerate() {
        let key = (measure.denominator, measure.intervals.clone());
        match keys.iter().position(|k| *k == key) {
            Some(i) => members[i].push(index),
            None => {
                keys.push(key);
                members.push(vec![index]);
            }
        }
    }
    let mut out = Vec::new();
    for ((denominator, intervals), members) in keys.into_iter().zip(members) {
        let mut graph = definition.graph.clone();
        let population = as_bool(&mut graph, denominator)?;
        let mut sums: Vec<NodeId> = vec![as_int(&mut graph, denominator)?];
        let mut group_names: Vec<(String, NodeId)> = Vec::new();
        for index in &members {
            for (name, id) in &definition.measures[*index].group_by {
                if !group_names.iter().any(|(n, _)| n == name) {
                    group_names.push((name.clone(), *id));
                }
            }
        }
        let groups: Vec<String> = group_names.iter().map(|(n, _)| format!("g_{n}")).collect();
        let mut grouped = GroupedSum {
            sums: Vec::new(),
            groups: groups.clone(),
            grouping_sets: Vec::new(),
        };
        let mut fetchers = Vec::new();
        for index in &members {
            let measure = &definition.measures[*index];
            let numerator = as_int(&mut graph, measure.numerator)?;
            let position = match sums.iter().skip(1).position(|id| *id == numerator) {
                Some(p) => p,
                None => {
                    sums.push(numerator);
                    sums.len() - 2
                }
            };
            let set: Vec<String> = group_names
                .iter()
                .filter(|(n, _)| measure.group_by.iter().any(|(g, _)| g == n))
                .map(|(n, _)| format!("g_{n}"))
                .collect();
            let grouping_id = grouped.grouping_id(&set);
            if !grouped.grouping_sets.contains(&set) {
                grouped.grouping_sets.push(set);
            }
            fetchers.push((*index, position, grouping_id));
        }
        let mut variables: Vec<(String, NodeId)> = sums
            .iter()
            .enumerate()
            .map(|(i, id)| (format!("value_{i}"), *id))
            .collect();
        grouped.sums = variables.iter().map(|(n, _)| n.clone()).collect();
        variables.extend(
            groups
                .into_iter()
                .zip(group_names.iter().map(|(_, id)| *id)),
        );
        out.push(MeasureGroup {
            graph,
            population,
            variables,
            grouped,
            intervals,
            fetchers,
        });
    }
    Ok(out)
}

/// Computes every measure at every interval on `engine`, in the fixed output order; groups
/// with no denominator give no row (as in the reference).
///
/// # Errors
/// Query building or engine errors.
pub fn calculate(
    definition: &MeasuresDefinition,
    engine: &mut dyn Engine,
) -> Result<Vec<MeasureRow>, MeasuresError> {
    let all_groups: Vec<String> = definition.groups().into_iter().map(|(n, _)| n).collect();
    let mut out = Vec::new();
    for group in measure_groups(definition)? {
        let n_sums = group.grouped.sums.len();
        for interval in &group.intervals {
            let dataset =
                substituted_dataset(&group.graph, group.population, &group.variables, *interval)?;
            let mut rows = CollectRows::default();
            engine.run_grouped_sum(&dataset, &group.grouped, &mut rows)?;
            // Engines return groups in any order: grouping sets in definition order, then
            // group values ascending (NULL first).
            let set_order: BTreeMap<i64, usize> = group
                .grouped
                .grouping_sets
                .iter()
                .enumerate()
                .map(|(i, set)| (group.grouped.grouping_id(set), i))
                .collect();
            let mut rows = rows.0;
            rows.sort_by(|a, b| {
                let key = |r: &Vec<Value>| match r.last() {
                    Some(Value::Int(id)) => set_order.get(id).copied().unwrap_or(usize::MAX),
                    _ => usize::MAX,
                };
                key(a)
                    .cmp(&key(b))
                    .then_with(|| a[n_sums..].cmp(&b[n_sums..]))
            });
            for row in rows {
                let denominator = match row.first() {
                    Some(Value::Int(d)) if *d != 0 => *d,
                    _ => continue,
                };
                let Some(Value::Int(grouping_id)) = row.last() else {
                    continue;
                };
                let values = &row[n_sums..row.len() - 1];
                for (measure, numerator, level) in &group.fetchers {
                    if level != grouping_id {
                        continue;
                    }
                    let numerator = match row.get(1 + numerator) {
                        Some(Value::Int(n)) => *n,
                        _ => 0,
                    };
                    let groups = all_groups
                        .iter()
                        .map(|name| {
                            let own = definition.measures[*measure]
                                .group_by
                                .iter()
                                .any(|(g, _)| g == name);
                            let position = group
                                .grouped
                                .groups
                                .iter()
                                .position(|g| g == &format!("g_{name}"));
                            match (own, position) {
                                (true, Some(p)) => values[p].clone(),
                                _ => Value::Null,
                            }
                        })
                        .collect();
                    out.push(MeasureRow {
                        measure: *measure,
                        interval: *interval,
                        numerator,
                        denominator,
                        groups,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Measure results read from `--dummy-data-file`: one file in the combined layout, or a
/// directory with one file per measure (as `generate-measures` writes them). The ratio is
/// recomputed from the counts on output; a missing count reads as 0.
///
/// # Errors
/// The file(s) do not fit the measures; see [`FileError`].
pub fn read_results(
    definition: &MeasuresDefinition,
    path: &std::path::Path,
) -> Result<Vec<MeasureRow>, FileError> {
    let required = |columns: Vec<ColumnSpec>| -> Vec<FileColumn> {
        columns
            .into_iter()
            .map(|spec| FileColumn {
                spec,
                required: true,
            })
            .collect()
    };
    let count = |v: &Value| match v {
        Value::Int(i) => *i,
        _ => 0,
    };
    let mut out = Vec::new();
    if !path.is_dir() {
        let rows = local_files::read_rows(path, &required(definition.columns()))?;
        for row in rows {
            let Some(measure) = definition
                .measures
                .iter()
                .position(|m| matches!(&row[0], Value::Str(s) if **s == *m.name))
            else {
                continue;
            };
            // Interval dates are NOT NULL, so the reader gives dates.
            let (Value::Date(start), Value::Date(end)) = (&row[1], &row[2]) else {
                continue;
            };
            out.push(MeasureRow {
                measure,
                interval: (*start, *end),
                numerator: count(&row[4]),
                denominator: count(&row[5]),
                groups: row[6..].to_vec(),
            });
        }
        return Ok(out);
    }
    let tables: Vec<(String, Vec<FileColumn>)> = definition
        .measures
        .iter()
        .map(|m| (m.name.clone(), required(definition.measure_columns(m))))
        .collect();
    let all_groups: Vec<String> = definition.groups().into_iter().map(|(n, _)| n).collect();
    for (measure, rows) in local_files::read_tables(path, &tables)?
        .into_iter()
        .enumerate()
    {
        let own: Vec<&String> = definition.measures[measure]
            .group_by
            .iter()
            .map(|(n, _)| n)
            .collect();
        for row in rows {
            let (Value::Date(start), Value::Date(end)) = (&row[0], &row[1]) else {
                continue;
            };
            let groups = all_groups
                .iter()
                .map(|g| match own.iter().position(|o| *o == g) {
                    Some(i) => row[5 + i].clone(),
                    None => Value::Null,
                })
                .collect();
            out.push(MeasureRow {
                measure,
                interval: (*start, *end),
                numerator: count(&row[3]),
                denominator: count(&row[4]),
                groups,
            });
        }
    }
    Ok(out)
}

/// The reference's disclosure control of one count: at most 7 becomes 0, then the count is
/// rounded to the nearest multiple of 5.
pub fn suppress(count: i64) -> i64 {
    let count = if count <= SUPPRESSION_THRESHOLD {
        0
    } else {
        count
    };
    // Counts are integers, so a value halfway between two multiples cannot occur.
    (count + ROUNDING_MULTIPLE / 2).div_euclid(ROUNDING_MULTIPLE) * ROUNDING_MULTIPLE
}

/// A result row as output values (combined layout: `measure` first, every group column),
/// with disclosure control applied if `suppressed`.
pub fn output_row(
    definition: &MeasuresDefinition,
    row: &MeasureRow,
    suppressed: bool,
) -> Vec<Value> {
    let (numerator, denominator) = if suppressed {
        (suppress(row.numerator), suppress(row.denominator))
    } else {
        (row.numerator, row.denominator)
    };
    let ratio = if denominator == 0 {
        Value::Null
    } else {
        Value::Float(numerator as f64 / denominator as f64)
    };
    let mut out = vec![
        Value::Str(definition.measures[row.measure].name.as_str().into()),
        Value::Date(row.interval.0),
        Value::Date(row.interval.1),
        ratio,
        Value::Int(numerator),
        Value::Int(denominator),
    ];
    out.extend(row.groups.iter().cloned());
    out
}

/// Writes measure results: one combined table (`measures`), or with `per_measure` one table
/// per measure named after it, holding only its own group columns.
///
/// # Errors
/// Whatever the sink reports.
pub fn write(
    definition: &MeasuresDefinition,
    rows: &[MeasureRow],
    per_measure: bool,
    sink: &mut dyn RowSink,
) -> Result<(), SinkError> {
    let suppressed = definition.disclosure_control;
    if !per_measure {
        sink.begin_table("measures", &definition.columns())?;
        for row in rows {
            sink.row(&output_row(definition, row, suppressed))?;
        }
        return Ok(());
    }
    let all_groups: Vec<String> = definition.groups().into_iter().map(|(n, _)| n).collect();
    for (index, measure) in definition.measures.iter().enumerate() {
        sink.begin_table(&measure.name, &definition.measure_columns(measure))?;
        let own: Vec<usize> = measure
            .group_by
            .iter()
            .filter_map(|(name, _)| all_groups.iter().position(|g| g == name))
            .collect();
        for row in rows.iter().filter(|r| r.measure == index) {
            let values = output_row(definition, row, suppressed);
            let mut out: Vec<Value> = values[1..6].to_vec();
            out.extend(own.iter().map(|g| values[6 + g].clone()));
            sink.row(&out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::suppress;

    #[test]
    fn small_counts_are_suppressed_and_the_rest_rounded_to_fives() {
        let cases = [
            (0, 0),
            (5, 0),
            (7, 0),
            (8, 10),
            (12, 10),
            (13, 15),
            (17, 15),
            (18, 20),
            (102, 100),
            (103, 105),
        ];
        for (count, expected) in cases {
            assert_eq!(suppress(count), expected, "{count}");
        }
    }
}
