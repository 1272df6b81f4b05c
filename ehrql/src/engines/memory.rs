//! The in-memory engine: the semantic reference (spec §2.7, §5.5). It evaluates the whole
//! dataset one patient at a time, with a per-patient memo over the node arena.
//!
//! Representation, per patient: a many-rows series is a vector over *all* of the patient's
//! rows in its root table (rows outside the series' domain are computed too, harmlessly, since
//! every function is total); a many-rows frame is the set of row positions in its domain.
//! Sorting matters only when picking, so `PickOneRowPerPatient` sorts by the composite key
//! (outermost sort first, then the `rewrite_sorts` columns in lexical order), which equals
//! ehrQL's sequence of stable sorts.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use super::{Database, Engine, EngineError, GroupedSum, RowSink, table_specs};
use crate::query_model::{
    AggregateKind, Dataset, Date, Domain, FunctionOp, Graph, Literal, Node, NodeId, Position, Value,
};
use crate::tables::TableSchema;

/// Runs datasets over an in-memory [`Database`].
#[derive(Debug)]
pub struct MemoryEngine {
    database: Database,
}

impl MemoryEngine {
    /// An engine over `database`.
    pub fn new(database: Database) -> MemoryEngine {
        MemoryEngine { database }
    }
}

impl Engine for MemoryEngine {
    fn run(&mut self, dataset: &Dataset, sink: &mut dyn RowSink) -> Result<(), EngineError> {
        check_supported(dataset)?;
        let specs = table_specs(dataset);
        sink.begin_table(&specs[0].0, &specs[0].1)
            .map_err(EngineError::Sink)?;
        let mut population = Vec::new();
        let mut row = Vec::with_capacity(dataset.variables().len() + 1);
        for patient_id in self.database.patient_ids() {
            let mut eval = PatientEval::new(dataset, &self.database, patient_id);
            if eval.scalar(dataset.population()).as_bool() != Some(true) {
                continue;
            }
            population.push(patient_id);
            row.clear();
            row.push(Value::Int(patient_id));
            for (_, id) in dataset.variables() {
                row.push(eval.scalar(*id));
            }
            sink.row(&row).map_err(EngineError::Sink)?;
        }
        // Event tables: each population patient's rows of the table's domain, in row order.
        for ((_, frame), (name, columns)) in dataset.events().iter().zip(&specs[1..]) {
            sink.begin_table(name, columns).map_err(EngineError::Sink)?;
            for patient_id in &population {
                let mut eval = PatientEval::new(dataset, &self.database, *patient_id);
                for values in eval.event_rows(*frame) {
                    row.clear();
                    row.push(Value::Int(*patient_id));
                    row.extend(values);
                    sink.row(&row).map_err(EngineError::Sink)?;
                }
            }
        }
        Ok(())
    }

    fn run_grouped_sum(
        &mut self,
        dataset: &Dataset,
        grouped: &GroupedSum,
        sink: &mut dyn RowSink,
    ) -> Result<(), EngineError> {
        check_supported(dataset)?;
        let variables = dataset.variables();
        let index = |name: &String| {
            variables
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| {
                    EngineError::Unsupported(format!("grouping by unknown variable '{name}'"))
                })
        };
        let sums: Vec<usize> = grouped.sums.iter().map(index).collect::<Result<_, _>>()?;
        let groups: Vec<usize> = grouped.groups.iter().map(index).collect::<Result<_, _>>()?;
        // Per grouping set: group values -> sums (NULL until a non-NULL value is added).
        let mut totals: Vec<BTreeMap<Vec<Value>, Vec<Option<i64>>>> =
            vec![BTreeMap::new(); grouped.grouping_sets.len()];
        for patient_id in self.database.patient_ids() {
            let mut eval = PatientEval::new(dataset, &self.database, patient_id);
            if eval.scalar(dataset.population()).as_bool() != Some(true) {
                continue;
            }
            let values: Vec<Value> = variables.iter().map(|(_, id)| eval.scalar(*id)).collect();
            for (set, totals) in grouped.grouping_sets.iter().zip(&mut totals) {
                let key: Vec<Value> = grouped
                    .groups
                    .iter()
                    .zip(&groups)
                    .map(|(name, i)| {
                        if set.contains(name) {
                            values[*i].clone()
                        } else {
                            Value::Null
                        }
                    })
                    .collect();
                let entry = totals.entry(key).or_insert_with(|| vec![None; sums.len()]);
                for (total, i) in entry.iter_mut().zip(&sums) {
                    if let Value::Int(v) = values[*i] {
                        *total = Some(total.unwrap_or(0).saturating_add(v));
                    }
                }
            }
        }
        sink.begin_table("measures", &grouped.columns(dataset))
            .map_err(EngineError::Sink)?;
        for (set, totals) in grouped.grouping_sets.iter().zip(totals) {
            let grouping_id = Value::Int(grouped.grouping_id(set));
            for (key, sums) in totals {
                let mut row: Vec<Value> = sums
                    .into_iter()
                    .map(|s| s.map_or(Value::Null, Value::Int))
                    .collect();
                row.extend(key);
                row.push(grouping_id.clone());
                sink.row(&row).map_err(EngineError::Sink)?;
            }
        }
        Ok(())
    }
}

fn check_supported(dataset: &Dataset) -> Result<(), EngineError> {
    for id in dataset.reachable() {
        if let Node::Parameter { name, .. } = dataset.graph().node(id) {
            return Err(EngineError::Unsupported(format!(
                "Parameter '{name}' (measures)"
            )));
        }
    }
    Ok(())
}

/// Whether the population is True for a patient when every table is empty (the rule that lets
/// SQL engines take the universe from the population's tables only).
pub fn population_true_on_empty_tables(dataset: &Dataset) -> bool {
    if check_supported(dataset).is_err() {
        return false;
    }
    let empty = Database::new();
    let mut eval = PatientEval::new(dataset, &empty, 0);
    eval.scalar(dataset.population()).as_bool() == Some(true)
}

/// Evaluates one patient's values in the given database.
pub fn evaluate_patient(
    dataset: &Dataset,
    database: &Database,
    patient_id: i64,
    node: NodeId,
) -> Value {
    PatientEval::new(dataset, database, patient_id).scalar(node)
}

#[derive(Clone, Debug)]
enum Ev {
    /// A patient-level value.
    Scalar(Value),
    /// A patient-level set.
    Set(Rc<BTreeSet<Value>>),
    /// A many-rows series: one value per row of the patient in the root table.
    Column(Rc<Vec<Value>>),
    /// A many-rows frame: positions (into the patient's rows of the root table) in the domain.
    Rows(Rc<Vec<usize>>),
    /// A patient frame: the position of its row, if any.
    Row(Option<usize>),
}

struct PatientEval<'a> {
    dataset: &'a Dataset,
    graph: &'a Graph,
    database: &'a Database,
    patient_id: i64,
    memo: Vec<Option<Ev>>,
}

impl<'a> PatientEval<'a> {
    fn new(dataset: &'a Dataset, database: &'a Database, patient_id: i64) -> PatientEval<'a> {
        PatientEval {
            dataset,
            graph: dataset.graph(),
            database,
            patient_id,
            memo: vec![None; dataset.graph().len()],
        }
    }

    fn scalar(&mut self, id: NodeId) -> Value {
        match self.eval(id) {
            Ev::Scalar(v) => v,
            _ => Value::Null,
        }
    }

    /// The patient's rows (global indices) of a table, and the table's schema.
    fn table_rows(&self, table: &TableSchema) -> (&'a [usize], Option<&'a super::TableData>) {
        match self.database.table(&table.name) {
            Some(t) => (t.patient_rows(self.patient_id), Some(t)),
            None => (&[], None),
        }
    }

    fn n_rows(&self, frame: NodeId) -> usize {
        match self.graph.frame_table(frame) {
            Some(t) => self.table_rows(t).0.len(),
            None => 0,
        }
    }

    fn eval(&mut self, id: NodeId) -> Ev {
        if let Some(ev) = &self.memo[id.index()] {
            return ev.clone();
        }
        let ev = self.compute(id);
        self.memo[id.index()] = Some(ev.clone());
        ev
    }

    fn column_value(&self, table: &TableSchema, position: usize, name: &str) -> Value {
        let (rows, data) = self.table_rows(table);
        let (Some(data), Some(global)) = (data, rows.get(position)) else {
            return Value::Null;
        };
        if name == "patient_id" {
            return Value::Int(self.patient_id);
        }
        let Some(index) = data.schema.columns.iter().position(|c| c.name == name) else {
            return Value::Null;
        };
        let value = data.rows[*global].1[index].clone();
        // Codes are stored as strings in the spec fixtures; type them by the schema.
        match (value, table.column(name).map(|c| c.ty)) {
            (Value::Str(s), Some(crate::query_model::ScalarType::Code(system))) => {
                Value::Code(system, s)
            }
            (v, _) => v,
        }
    }

    fn compute(&mut self, id: NodeId) -> Ev {
        let graph = self.graph;
        match graph.node(id) {
            Node::Value(Literal::Scalar(v)) => Ev::Scalar(v.clone()),
            Node::Value(Literal::Set { values, .. }) => {
                Ev::Set(Rc::new(values.iter().cloned().collect()))
            }
            Node::Parameter { .. } => Ev::Scalar(Value::Null),
            Node::SelectTable(table) => {
                let n = self.table_rows(table).0.len();
                Ev::Rows(Rc::new((0..n).collect()))
            }
            Node::SelectPatientTable(table) => {
                let n = self.table_rows(table).0.len();
                Ev::Row(if n > 0 { Some(0) } else { None })
            }
            Node::SelectColumn { source, name } => {
                let Some(table) = graph.frame_table(*source).cloned() else {
                    return Ev::Scalar(Value::Null);
                };
                match self.eval(*source) {
                    Ev::Row(position) => Ev::Scalar(match position {
                        Some(p) => self.column_value(&table, p, name),
                        None => Value::Null,
                    }),
                    _ => {
                        let n = self.table_rows(&table).0.len();
                        Ev::Column(Rc::new(
                            (0..n).map(|p| self.column_value(&table, p, name)).collect(),
                        ))
                    }
                }
            }
            Node::Filter { source, condition } => {
                let Ev::Rows(rows) = self.eval(*source) else {
                    return Ev::Rows(Rc::new(vec![]));
                };
                let n = self.n_rows(*source);
                let keep = self.column(*condition, n);
                Ev::Rows(Rc::new(
                    rows.iter()
                        .copied()
                        .filter(|p| keep[*p].as_bool() == Some(true))
                        .collect(),
                ))
            }
            // Order only matters when picking, which reads the sort keys itself.
            Node::Sort { source, .. } => self.eval(*source),
            Node::PickOneRowPerPatient { source, position } => self.pick(id, *source, *position),
            Node::Aggregate { kind, source } => self.aggregate(*kind, *source),
            Node::CountEpisodes {
                source,
                maximum_gap_days,
            } => {
                let mut dates: Vec<Date> = self
                    .domain_values(*source)
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Date(d) => Some(d),
                        _ => None,
                    })
                    .collect();
                dates.sort_unstable();
                let mut episodes = 0i64;
                let mut previous: Option<Date> = None;
                for d in dates {
                    if previous.is_none_or(|p| d.days_since(p) > *maximum_gap_days) {
                        episodes += 1;
                    }
                    previous = Some(d);
                }
                Ev::Scalar(Value::Int(episodes))
            }
            Node::Function { op, args } => {
                if graph.info(id).domain == Domain::Patient {
                    let values: Vec<Ev> = args.iter().map(|a| self.eval(*a)).collect();
                    Ev::Scalar(apply_patient(*op, &values))
                } else {
                    let n = self.domain_len(graph.info(id).domain);
                    let columns: Vec<Ev> = args.iter().map(|a| self.eval(*a)).collect();
                    let mut out = Vec::with_capacity(n);
                    let mut row_args: Vec<Ev> = Vec::with_capacity(args.len());
                    for i in 0..n {
                        row_args.clear();
                        for c in &columns {
                            row_args.push(match c {
                                Ev::Column(values) => {
                                    Ev::Scalar(values.get(i).cloned().unwrap_or(Value::Null))
                                }
                                other => other.clone(),
                            });
                        }
                        out.push(apply_patient(*op, &row_args));
                    }
                    Ev::Column(Rc::new(out))
                }
            }
            Node::Case { cases, default } => {
                let domain = graph.info(id).domain;
                if domain == Domain::Patient {
                    for (condition, value) in cases {
                        if self.scalar(*condition).as_bool() == Some(true) {
                            return Ev::Scalar(value.map_or(Value::Null, |v| self.scalar(v)));
                        }
                    }
                    Ev::Scalar(default.map_or(Value::Null, |v| self.scalar(v)))
                } else {
                    let n = self.domain_len(domain);
                    let conditions: Vec<Rc<Vec<Value>>> =
                        cases.iter().map(|(c, _)| self.column(*c, n)).collect();
                    let values: Vec<Option<Rc<Vec<Value>>>> = cases
                        .iter()
                        .map(|(_, v)| v.map(|v| self.column(v, n)))
                        .collect();
                    let default = default.map(|d| self.column(d, n));
                    let out = (0..n)
                        .map(|i| {
                            for (c, v) in conditions.iter().zip(&values) {
                                if c[i].as_bool() == Some(true) {
                                    return v.as_ref().map_or(Value::Null, |v| v[i].clone());
                                }
                            }
                            default.as_ref().map_or(Value::Null, |d| d[i].clone())
                        })
                        .collect();
                    Ev::Column(Rc::new(out))
                }
            }
            Node::SeriesCollectionFrame { .. } => Ev::Rows(Rc::new(vec![])),
        }
    }

    /// The rows of an event table (`SeriesCollectionFrame`): its members' values at each row
    /// of its domain (patient-level members repeated on every row).
    fn event_rows(&mut self, frame: NodeId) -> Vec<Vec<Value>> {
        let graph = self.graph;
        let Node::SeriesCollectionFrame { members } = graph.node(frame) else {
            return Vec::new();
        };
        let Domain::Many(domain) = graph.info(frame).domain else {
            return Vec::new();
        };
        let Ev::Rows(rows) = self.eval(domain) else {
            return Vec::new();
        };
        let n = self.n_rows(domain);
        let columns: Vec<Rc<Vec<Value>>> =
            members.iter().map(|(_, m)| self.column(*m, n)).collect();
        rows.iter()
            .map(|p| columns.iter().map(|c| c[*p].clone()).collect())
            .collect()
    }

    /// Number of the patient's rows in the root table of a many-rows domain.
    fn domain_len(&self, domain: Domain) -> usize {
        match domain {
            Domain::Patient => 1,
            Domain::Many(frame) => self.n_rows(frame),
        }
    }

    /// A series as one value per root-table row (patient values broadcast).
    fn column(&mut self, id: NodeId, n: usize) -> Rc<Vec<Value>> {
        match self.eval(id) {
            Ev::Column(values) => values,
            Ev::Scalar(v) => Rc::new(vec![v; n]),
            _ => Rc::new(vec![Value::Null; n]),
        }
    }

    /// The values of a many-rows series over the rows of its domain.
    fn domain_values(&mut self, series: NodeId) -> Vec<Value> {
        let Domain::Many(frame) = self.graph.info(series).domain else {
            return vec![self.scalar(series)];
        };
        let Ev::Rows(rows) = self.eval(frame) else {
            return vec![];
        };
        let n = self.n_rows(frame);
        let values = self.column(series, n);
        rows.iter().map(|p| values[*p].clone()).collect()
    }

    fn aggregate(&mut self, kind: AggregateKind, source: NodeId) -> Ev {
        if matches!(kind, AggregateKind::Exists | AggregateKind::Count) {
            let n = match self.eval(source) {
                Ev::Rows(rows) => rows.len(),
                Ev::Row(row) => usize::from(row.is_some()),
                _ => 0,
            };
            return Ev::Scalar(if kind == AggregateKind::Exists {
                Value::Bool(n > 0)
            } else {
                Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
            });
        }
        let values: Vec<Value> = self
            .domain_values(source)
            .into_iter()
            .filter(|v| !v.is_null())
            .collect();
        Ev::Scalar(match kind {
            AggregateKind::CountDistinct => {
                let distinct: BTreeSet<&Value> = values.iter().collect();
                Value::Int(i64::try_from(distinct.len()).unwrap_or(i64::MAX))
            }
            AggregateKind::Min => values
                .into_iter()
                .min_by(compare_values)
                .unwrap_or(Value::Null),
            AggregateKind::Max => values
                .into_iter()
                .max_by(compare_values)
                .unwrap_or(Value::Null),
            AggregateKind::Sum => sum(&values),
            AggregateKind::Mean => {
                if values.is_empty() {
                    Value::Null
                } else {
                    let total = match sum(&values) {
                        Value::Int(i) => i as f64,
                        Value::Float(f) => f,
                        _ => return Ev::Scalar(Value::Null),
                    };
                    Value::Float(total / values.len() as f64)
                }
            }
            AggregateKind::CombineAsSet => return Ev::Set(Rc::new(values.into_iter().collect())),
            AggregateKind::Exists | AggregateKind::Count => Value::Null,
        })
    }

    fn pick(&mut self, pick: NodeId, source: NodeId, position: Position) -> Ev {
        let Ev::Rows(rows) = self.eval(source) else {
            return Ev::Row(None);
        };
        let Some(table) = self.graph.frame_table(source).cloned() else {
            return Ev::Row(None);
        };
        let n = self.table_rows(&table).0.len();
        // Sort keys by priority: the outermost Sort first, then (rewrite_sorts) every column
        // read from this pick, in lexical order.
        let mut keys: Vec<Rc<Vec<Value>>> = Vec::new();
        let mut current = source;
        loop {
            match self.graph.node(current) {
                Node::Sort { source, sort_by } => {
                    keys.push(self.column(*sort_by, n));
                    current = *source;
                }
                Node::Filter { source, .. } => current = *source,
                _ => break,
            }
        }
        for name in self.dataset.pick_columns(pick) {
            keys.push(Rc::new(
                (0..n).map(|p| self.column_value(&table, p, name)).collect(),
            ));
        }
        let mut sorted: Vec<usize> = rows.to_vec();
        sorted.sort_by(|a, b| {
            for k in &keys {
                let o = compare_values(&k[*a], &k[*b]);
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
        Ev::Row(match position {
            Position::First => sorted.first().copied(),
            Position::Last => sorted.last().copied(),
        })
    }
}

/// NULL first, then natural order; floats numerically (so -0.0 equals 0.0).
fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y).unwrap_or_else(|| x.total_cmp(y)),
        _ => a.cmp(b),
    }
}

fn sum(values: &[Value]) -> Value {
    let mut int_total: Option<i64> = None;
    let mut float_total: Option<f64> = None;
    for v in values {
        match v {
            Value::Int(i) => match int_total.unwrap_or(0).checked_add(*i) {
                Some(t) => int_total = Some(t),
                None => return Value::Null,
            },
            Value::Float(f) => float_total = Some(float_total.unwrap_or(0.0) + f),
            _ => {}
        }
    }
    match (int_total, float_total) {
        (Some(i), None) => Value::Int(i),
        (None, Some(f)) => Value::Float(f),
        _ => Value::Null,
    }
}

fn apply_patient(op: FunctionOp, args: &[Ev]) -> Value {
    if op == FunctionOp::In {
        let lhs = match &args[0] {
            Ev::Scalar(v) => v,
            _ => return Value::Null,
        };
        let Ev::Set(set) = &args[1] else {
            return Value::Null;
        };
        // An empty set gives False even for NULL (spec §2.4).
        if set.is_empty() {
            return Value::Bool(false);
        }
        if lhs.is_null() {
            return Value::Null;
        }
        return Value::Bool(set.contains(lhs));
    }
    let values: Vec<&Value> = args
        .iter()
        .map(|a| match a {
            Ev::Scalar(v) => v,
            _ => &Value::Null,
        })
        .collect();
    apply(op, &values)
}

/// The scalar semantics of every function (spec §2.4, §2.7).
pub fn apply(op: FunctionOp, args: &[&Value]) -> Value {
    use FunctionOp::*;
    use Value::{Bool, Float, Int, Null};
    match op {
        And => {
            return match (args[0], args[1]) {
                (Bool(false), _) | (_, Bool(false)) => Bool(false),
                (Bool(true), Bool(true)) => Bool(true),
                _ => Null,
            };
        }
        Or => {
            return match (args[0], args[1]) {
                (Bool(true), _) | (_, Bool(true)) => Bool(true),
                (Bool(false), Bool(false)) => Bool(false),
                _ => Null,
            };
        }
        IsNull => return Bool(args[0].is_null()),
        MinimumOf | MaximumOf => {
            let present = args.iter().copied().filter(|v| !v.is_null());
            let chosen = if op == MinimumOf {
                present.min_by(|a, b| compare_values(a, b))
            } else {
                present.max_by(|a, b| compare_values(a, b))
            };
            return chosen.cloned().unwrap_or(Null);
        }
        _ => {}
    }
    if args.iter().any(|v| v.is_null()) {
        return Null;
    }
    let date = |v: &Value| match v {
        Value::Date(d) => Some(*d),
        _ => None,
    };
    let int = |v: &Value| match v {
        Int(i) => Some(*i),
        _ => None,
    };
    let float = |v: &Value| match v {
        Float(f) => Some(*f),
        Int(i) => Some(*i as f64),
        Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    let from_date = |d: Option<Date>| d.map_or(Null, Value::Date);
    match op {
        Eq | Ne | Lt | Le | Gt | Ge => {
            let ordering = match (args[0], args[1]) {
                (Float(a), Float(b)) => match a.partial_cmp(b) {
                    Some(o) => o,
                    None => return Null,
                },
                (a, b) => a.cmp(b),
            };
            Bool(match op {
                Eq => ordering == Ordering::Equal,
                Ne => ordering != Ordering::Equal,
                Lt => ordering == Ordering::Less,
                Le => ordering != Ordering::Greater,
                Gt => ordering == Ordering::Greater,
                _ => ordering != Ordering::Less,
            })
        }
        Not => match args[0] {
            Bool(b) => Bool(!b),
            _ => Null,
        },
        Negate => match args[0] {
            Int(i) => i.checked_neg().map_or(Null, Int),
            Float(f) => Float(-f),
            _ => Null,
        },
        Absolute => match args[0] {
            Int(i) => i.checked_abs().map_or(Null, Int),
            Float(f) => Float(f.abs()),
            _ => Null,
        },
        Add | Subtract | Multiply => match (args[0], args[1]) {
            (Int(a), Int(b)) => {
                let r = match op {
                    Add => a.checked_add(*b),
                    Subtract => a.checked_sub(*b),
                    _ => a.checked_mul(*b),
                };
                r.map_or(Null, Int)
            }
            (Float(a), Float(b)) => Float(match op {
                Add => a + b,
                Subtract => a - b,
                _ => a * b,
            }),
            _ => Null,
        },
        TrueDivide => match (float(args[0]), float(args[1])) {
            (Some(_), Some(0.0)) => Null,
            (Some(a), Some(b)) => Float(a / b),
            _ => Null,
        },
        FloorDivide => match (args[0], args[1]) {
            (Int(_), Int(0)) => Null,
            (Int(a), Int(b)) => {
                let q = a.wrapping_div(*b);
                let adjust = (a % b != 0) && ((*a < 0) != (*b < 0));
                Int(q - i64::from(adjust))
            }
            (Float(a), Float(b)) => {
                if *b == 0.0 {
                    Null
                } else {
                    Float((a / b).floor())
                }
            }
            _ => Null,
        },
        Power => match (args[0], args[1]) {
            // Integer powers stay integers (Python semantics); a negative exponent or a result
            // beyond 64 bits gives NULL rather than a silently wrong type.
            (Int(a), Int(b)) => match u32::try_from(*b) {
                Ok(e) => a.checked_pow(e).map_or(Null, Int),
                Err(_) if *a == 0 => Null,
                Err(_) => Null,
            },
            (Float(a), Float(b)) => {
                if (*a == 0.0 && *b < 0.0) || (*a < 0.0 && b.fract() != 0.0) {
                    Null
                } else {
                    let r = a.powf(*b);
                    if r.is_finite() { Float(r) } else { Null }
                }
            }
            _ => Null,
        },
        CastToInt => match args[0] {
            Int(i) => Int(*i),
            Bool(b) => Int(i64::from(*b)),
            Float(f) => float_to_int(f.trunc()),
            _ => Null,
        },
        CastToFloat => float(args[0]).map_or(Null, Float),
        DateAddDays | DateAddMonths | DateAddYears => match (date(args[0]), int(args[1])) {
            (Some(d), Some(n)) => from_date(match op {
                DateAddDays => d.add_days(n),
                DateAddMonths => d.add_months(n),
                _ => d.add_years(n),
            }),
            _ => Null,
        },
        DateDifferenceInDays | DateDifferenceInMonths | DateDifferenceInYears => {
            match (date(args[0]), date(args[1])) {
                (Some(end), Some(start)) => Int(match op {
                    DateDifferenceInDays => end.days_since(start),
                    DateDifferenceInMonths => end.months_since(start),
                    _ => end.years_since(start),
                }),
                _ => Null,
            }
        }
        YearFromDate | MonthFromDate | DayFromDate => match date(args[0]) {
            Some(d) => {
                let (y, m, day) = d.ymd();
                Int(match op {
                    YearFromDate => i64::from(y),
                    MonthFromDate => i64::from(m),
                    _ => i64::from(day),
                })
            }
            None => Null,
        },
        ToFirstOfYear => from_date(date(args[0]).map(Date::first_of_year)),
        ToFirstOfMonth => from_date(date(args[0]).map(Date::first_of_month)),
        StringContains => match (args[0].as_str(), args[1].as_str()) {
            (Some(h), Some(n)) => Bool(h.contains(n)),
            _ => Null,
        },
        And | Or | IsNull | MinimumOf | MaximumOf | In => Null,
    }
}

fn float_to_int(f: f64) -> Value {
    if f.is_finite() && f >= i64::MIN as f64 && f < i64::MAX as f64 {
        Value::Int(f as i64)
    } else {
        Value::Null
    }
}
