//! Compiles a [`Dataset`] to SQL statements (spec §5.2), through a [`Dialect`].
//!
//! Plan, aiming at one pass per table:
//! 1. Every node that needs its own query (aggregations over many rows, sort-and-pick, episode
//!    counts, sets) is *materialized* into a temporary table keyed by `patient_id`.
//! 2. Materialized nodes are grouped by (phase, level, root table): all aggregations and picks
//!    over one table at one dependency level share a single `GROUP BY patient_id` scan, each
//!    aggregation filtered by its own conditions (`COUNT(*) FILTER (WHERE <filters>)`) and
//!    each pick computed by the dialect's pick aggregate (SQLite: functions registered by the
//!    engine). A dialect without one (PostgreSQL) gives each pick a `ROW_NUMBER()` window,
//!    over a staging table when a table has several picks. The level of a node is one more
//!    than the deepest materialized node its inputs read.
//! 3. Phase A holds what the population needs; then the population table, read from the
//!    universe (union of the patient ids of the tables the population reads, valid because of
//!    the "not True on NULL inputs" rule); phase B scans are restricted to population patients.
//! 4. The results query LEFT JOINs everything to the population, ordered by patient.
//!
//! The `rewrite_sorts` transform (spec §2.6) is applied when picking: the columns read from a
//! pick, in lexical order, are appended as the lowest-priority sort keys.

pub mod dialect;
pub mod postgres;

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use dialect::{DatePart, Dialect, IntOp, SqliteDialect};
pub use postgres::PostgresDialect;

use crate::engines::GroupedSum;
use crate::query_model::{
    AggregateKind, Dataset, Domain, FunctionOp, Graph, Literal, Node, NodeId, Position, ScalarType,
    Value,
};

/// Why a dataset cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// A construct the SQL compiler does not support.
    #[error("{0} is not supported by the SQL engines")]
    Unsupported(String),
}

/// What a statement is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementKind {
    /// Creates or fills a temporary table.
    Setup,
    /// Returns a result table's rows.
    Results,
    /// Drops a temporary table.
    Cleanup,
}

/// One SQL statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// Its role.
    pub kind: StatementKind,
    /// The SQL text, with literal values inlined.
    pub sql: String,
}

/// The (table, column) pairs whose strings compare case-insensitively: a backend's
/// collations (spec §4.2). Empty for the default backend, where every comparison is binary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaseInsensitiveColumns(BTreeSet<(String, String)>);

impl CaseInsensitiveColumns {
    /// These (table, column) pairs.
    pub fn new(columns: impl IntoIterator<Item = (String, String)>) -> CaseInsensitiveColumns {
        CaseInsensitiveColumns(columns.into_iter().collect())
    }

    /// Whether `table.column` compares case-insensitively.
    pub fn contains(&self, table: &str, column: &str) -> bool {
        self.0.contains(&(table.to_string(), column.to_string()))
    }

    /// Whether every column compares binary.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Compiles `dataset` to statements in execution order: the results queries are the
/// dataset's, then one per event table, in definition order. Comparisons involving a column
/// of `case_insensitive` ignore case.
///
/// # Errors
/// Measures parameters, or anything else not yet supported.
pub fn compile(
    dataset: &Dataset,
    dialect: &dyn Dialect,
    case_insensitive: &CaseInsensitiveColumns,
) -> Result<Vec<Statement>, CompileError> {
    let mut compiler = Compiler::new(dataset, dialect, case_insensitive)?;
    compiler.compile()
}

/// Compiles `dataset` with its one results query replaced by sums of its variables by
/// grouping sets (measures): the patient rows go to a temporary table, then one query gives
/// the columns of [`GroupedSum::columns`], through `GROUPING SETS` where the dialect has
/// them, else a `UNION ALL` of one `GROUP BY` per set.
///
/// # Errors
/// As [`compile`]; event tables cannot be summed.
pub fn compile_grouped_sum(
    dataset: &Dataset,
    dialect: &dyn Dialect,
    case_insensitive: &CaseInsensitiveColumns,
    grouped: &GroupedSum,
) -> Result<Vec<Statement>, CompileError> {
    if !dataset.events().is_empty() {
        return Err(CompileError::Unsupported("event tables in measures".into()));
    }
    let mut compiler = Compiler::new(dataset, dialect, case_insensitive)?;
    compiler.grouped = Some(grouped);
    compiler.compile()
}

/// Where a materialized node's values live: (temporary table, column).
#[derive(Clone, Debug)]
struct Location {
    table: String,
    column: String,
}

/// Per-query compilation state: the patient-id expression joins attach to, the many-rows base
/// table (aliased `base`), and the LEFT JOINs needed so far.
struct Scope {
    patient_id: String,
    base_root: Option<NodeId>,
    joins: Vec<(String, String)>,
    memo: HashMap<NodeId, String>,
    code_maps: Vec<CodeMap>,
}

/// Membership of one base-table column in several literal sets, as a temporary table
/// `(value, mask)` LEFT JOINed on the column: one lookup per row answers every `is_in` on
/// that column (bit `k` of `mask` is membership of set `k`), instead of one per codelist.
struct CodeMap {
    alias: String,
    column: String,
    case_insensitive: bool,
    sets: Vec<(NodeId, Vec<Value>)>,
}

/// How a sort-and-pick orders its rows (see [`Compiler::pick_sort`]).
struct PickSort {
    keys: Vec<String>,
    columns: Vec<String>,
    descending: bool,
}

/// Sets per code map (bits of a non-negative 64-bit mask).
const MAX_SETS_PER_CODE_MAP: usize = 62;

impl Scope {
    fn new(patient_id: String, base_root: Option<NodeId>) -> Scope {
        Scope {
            patient_id,
            base_root,
            joins: Vec::new(),
            memo: HashMap::new(),
            code_maps: Vec::new(),
        }
    }

    fn join(&mut self, alias: &str, table_sql: &str) {
        if !self.joins.iter().any(|(a, _)| a == alias) {
            self.joins.push((alias.to_string(), table_sql.to_string()));
        }
    }

    fn join_sql(&self, dialect: &dyn Dialect) -> String {
        let mut out = String::new();
        for (alias, table) in &self.joins {
            let alias_q = dialect.ident(alias);
            out.push_str(&format!(
                " LEFT JOIN {table} AS {alias_q} ON {alias_q}.patient_id = {}",
                self.patient_id
            ));
        }
        for map in &self.code_maps {
            let alias_q = dialect.ident(&map.alias);
            let column = if map.case_insensitive {
                dialect.case_insensitive(&map.column)
            } else {
                map.column.clone()
            };
            out.push_str(&format!(
                " LEFT JOIN {alias_q} ON {alias_q}.value = {column}"
            ));
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Population,
    Results,
}

/// What one statement computes: aggregations and picks over one root table, or a node with a
/// query of its own (CountEpisodes, CombineAsSet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Batch {
    Scan(NodeId),
    Own(NodeId),
}

struct Compiler<'a> {
    dataset: &'a Dataset,
    graph: &'a Graph,
    dialect: &'a dyn Dialect,
    statements: Vec<Statement>,
    cleanup: Vec<String>,
    /// Where an aggregation's value, or whether a pick found a row, is stored.
    locations: HashMap<NodeId, Location>,
    /// Where each column a pick reads is stored, in `Dataset::pick_columns` order.
    pick_values: HashMap<NodeId, Vec<Location>>,
    /// Picks whose presence is read (`exists_for_patient` of a picked row).
    presence_read: BTreeSet<NodeId>,
    /// Values tables by (set, whether case-insensitive).
    values_tables: HashMap<(NodeId, bool), String>,
    counter: usize,
    case_insensitive: &'a CaseInsensitiveColumns,
    population_table: Option<String>,
    /// Measures: the results query sums the variables by these grouping sets.
    grouped: Option<&'a GroupedSum>,
}

impl<'a> Compiler<'a> {
    fn new(
        dataset: &'a Dataset,
        dialect: &'a dyn Dialect,
        case_insensitive: &'a CaseInsensitiveColumns,
    ) -> Result<Compiler<'a>, CompileError> {
        let mut presence_read = BTreeSet::new();
        for id in dataset.reachable() {
            match dataset.graph().node(id) {
                Node::Parameter { name, .. } => {
                    return Err(CompileError::Unsupported(format!("Parameter '{name}'")));
                }
                Node::Aggregate { source, .. }
                    if matches!(
                        dataset.graph().node(*source),
                        Node::PickOneRowPerPatient { .. }
                    ) =>
                {
                    presence_read.insert(*source);
                }
                _ => {}
            }
        }
        Ok(Compiler {
            dataset,
            graph: dataset.graph(),
            dialect,
            statements: Vec::new(),
            cleanup: Vec::new(),
            locations: HashMap::new(),
            pick_values: HashMap::new(),
            presence_read,
            values_tables: HashMap::new(),
            counter: 0,
            case_insensitive,
            population_table: None,
            grouped: None,
        })
    }

    fn temp_name(&mut self) -> String {
        self.counter += 1;
        format!("tmp_{}", self.counter)
    }

    fn setup(&mut self, sqls: Vec<String>) {
        self.statements
            .extend(sqls.into_iter().map(|sql| Statement {
                kind: StatementKind::Setup,
                sql,
            }));
    }

    fn is_materialized(&self, id: NodeId) -> bool {
        match self.graph.node(id) {
            Node::PickOneRowPerPatient { .. } | Node::CountEpisodes { .. } => true,
            Node::Aggregate { source, .. } => self.graph.info(*source).domain != Domain::Patient,
            _ => false,
        }
    }

    /// Materialized nodes read by `id`'s inputs (not looking inside materialized nodes).
    fn direct_deps(&self, id: NodeId) -> BTreeSet<NodeId> {
        let mut out = BTreeSet::new();
        let mut stack = self.graph.node(id).children();
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            if self.is_materialized(n) {
                out.insert(n);
                continue;
            }
            stack.extend(self.graph.node(n).children());
        }
        out
    }

    /// The root `SelectTable` of a many-rows domain.
    fn domain_root(&self, domain: Domain) -> Option<NodeId> {
        let mut current = domain;
        loop {
            let Domain::Many(id) = current else {
                return None;
            };
            match self.graph.node(id) {
                Node::Filter { source, .. } => current = self.graph.info(*source).domain,
                _ => return Some(id),
            }
        }
    }

    /// The filter conditions of a many-rows domain, innermost last.
    fn domain_conditions(&self, domain: Domain) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut current = domain;
        while let Domain::Many(id) = current {
            match self.graph.node(id) {
                Node::Filter { source, condition } => {
                    out.push(*condition);
                    current = self.graph.info(*source).domain;
                }
                _ => break,
            }
        }
        out
    }

    /// The many-rows domain a materialized node reads.
    fn source_domain(&self, id: NodeId) -> Domain {
        match self.graph.node(id) {
            Node::PickOneRowPerPatient { source, .. }
            | Node::Aggregate { source, .. }
            | Node::CountEpisodes { source, .. } => self.graph.info(*source).domain,
            _ => Domain::Patient,
        }
    }

    fn compile(&mut self) -> Result<Vec<Statement>, CompileError> {
        // Levels and phases of every materialized node (ids ascend in dependency order).
        let reachable = self.dataset.reachable();
        let mut level: HashMap<NodeId, usize> = HashMap::new();
        for id in &reachable {
            if self.is_materialized(*id) {
                let l = self
                    .direct_deps(*id)
                    .iter()
                    .map(|d| level.get(d).copied().unwrap_or(0))
                    .max()
                    .unwrap_or(0);
                level.insert(*id, l + 1);
            }
        }
        let mut population_needs: BTreeSet<NodeId> = BTreeSet::new();
        let mut stack: Vec<NodeId> = if self.is_materialized(self.dataset.population()) {
            vec![self.dataset.population()]
        } else {
            vec![]
        };
        stack.extend(self.direct_deps_of_expr(self.dataset.population()));
        while let Some(n) = stack.pop() {
            if population_needs.insert(n) {
                stack.extend(self.direct_deps(n));
            }
        }
        let mut batches: BTreeMap<(Phase, usize, Batch), Vec<NodeId>> = BTreeMap::new();
        for (id, l) in &level {
            let phase = if population_needs.contains(id) {
                Phase::Population
            } else {
                Phase::Results
            };
            let own = matches!(self.graph.node(*id), Node::CountEpisodes { .. })
                || matches!(
                    self.graph.node(*id),
                    Node::Aggregate {
                        kind: AggregateKind::CombineAsSet,
                        ..
                    }
                );
            let key = if own {
                (phase, *l, Batch::Own(*id))
            } else {
                let root = self.domain_root(self.source_domain(*id)).ok_or_else(|| {
                    CompileError::Unsupported("an aggregation without a table".into())
                })?;
                (phase, *l, Batch::Scan(root))
            };
            batches.entry(key).or_default().push(*id);
        }
        let mut population_done = false;
        for ((phase, _, batch), mut nodes) in batches {
            if phase == Phase::Results && !population_done {
                self.compile_population()?;
                population_done = true;
            }
            nodes.sort();
            match batch {
                Batch::Scan(root) => self.compile_scan(root, &nodes)?,
                Batch::Own(node) => self.compile_own(node)?,
            }
        }
        if !population_done {
            self.compile_population()?;
        }
        self.compile_results()?;
        for (_, frame) in self.dataset.events() {
            self.compile_event_table(*frame)?;
        }
        let mut statements: Vec<Statement> = if self.case_insensitive.is_empty() {
            Vec::new()
        } else {
            self.dialect
                .case_insensitive_setup()
                .into_iter()
                .map(|sql| Statement {
                    kind: StatementKind::Setup,
                    sql,
                })
                .collect()
        };
        statements.append(&mut self.statements);
        statements.extend(self.cleanup.iter().rev().map(|t| Statement {
            kind: StatementKind::Cleanup,
            sql: self.dialect.drop_temp_table(t),
        }));
        Ok(statements)
    }

    /// Whether a string series compares case-insensitively: it is (or its value is, through
    /// `MIN`/`MAX`, `minimum_of`/`maximum_of` or a `case`) a column of [`CaseInsensitiveColumns`].
    /// A comparison is case-insensitive when one of its operands is.
    fn is_case_insensitive(&self, id: NodeId) -> bool {
        if self.case_insensitive.is_empty() {
            return false;
        }
        match self.graph.node(id) {
            Node::SelectColumn { source, name } => self
                .frame_table(*source)
                .is_some_and(|table| self.case_insensitive.contains(table, name)),
            Node::Aggregate {
                kind: AggregateKind::Min | AggregateKind::Max | AggregateKind::CombineAsSet,
                source,
            } => self.is_case_insensitive(*source),
            Node::Function {
                op: FunctionOp::MinimumOf | FunctionOp::MaximumOf,
                args,
            } => args.iter().any(|a| self.is_case_insensitive(*a)),
            Node::Case { cases, default } => cases
                .iter()
                .filter_map(|(_, value)| *value)
                .chain(*default)
                .any(|v| self.is_case_insensitive(v)),
            _ => false,
        }
    }

    /// The name of the table a frame reads.
    fn frame_table(&self, frame: NodeId) -> Option<&str> {
        match self.graph.node(frame) {
            Node::SelectTable(t) | Node::SelectPatientTable(t) => Some(&t.name),
            Node::Filter { source, .. }
            | Node::Sort { source, .. }
            | Node::PickOneRowPerPatient { source, .. } => self.frame_table(*source),
            _ => None,
        }
    }

    /// Materialized nodes an expression reads (including itself if materialized).
    fn direct_deps_of_expr(&self, id: NodeId) -> BTreeSet<NodeId> {
        if self.is_materialized(id) {
            return BTreeSet::from([id]);
        }
        self.direct_deps(id)
    }

    fn semi_join(&self) -> Option<String> {
        self.population_table.as_ref().map(|p| {
            format!(
                "base.patient_id IN (SELECT patient_id FROM {})",
                self.dialect.ident(p)
            )
        })
    }

    fn table_sql(&self, root: NodeId) -> Result<String, CompileError> {
        match self.graph.node(root) {
            Node::SelectTable(t) | Node::SelectPatientTable(t) => Ok(self.dialect.ident(&t.name)),
            _ => Err(CompileError::Unsupported(
                "a frame that is not a table".into(),
            )),
        }
    }

    fn conditions_sql(
        &mut self,
        domain: Domain,
        scope: &mut Scope,
    ) -> Result<Option<String>, CompileError> {
        let conditions = self.domain_conditions(domain);
        if conditions.is_empty() {
            return Ok(None);
        }
        let mut parts = Vec::new();
        for c in conditions.iter().rev() {
            parts.push(self.condition(*c, scope)?);
        }
        Ok(Some(parts.join(" AND ")))
    }

    /// Every aggregation and pick in `nodes` over table `root`, at one dependency level.
    fn compile_scan(&mut self, root: NodeId, nodes: &[NodeId]) -> Result<(), CompileError> {
        if self.dialect.pick_aggregate().is_some() {
            return self.compile_grouped(root, nodes);
        }
        let (picks, aggregates): (Vec<NodeId>, Vec<NodeId>) = nodes
            .iter()
            .partition(|id| matches!(self.graph.node(**id), Node::PickOneRowPerPatient { .. }));
        if !aggregates.is_empty() {
            self.compile_grouped(root, &aggregates)?;
        }
        if !picks.is_empty() {
            self.compile_picks(root, &picks)?;
        }
        Ok(())
    }

    /// One `GROUP BY` scan of `root` computing every node in `nodes`: aggregations as
    /// `AGG(x) FILTER (WHERE <filters>)`, sort-and-picks through the dialect's pick aggregate.
    /// Rows no node can use are dropped before grouping: by one bit test on the code maps
    /// when every node's filters require a codelist match, else by the OR of the filters
    /// (when every node has some). Identical aggregates are computed once, and a `FILTER`
    /// that only repeats the `WHERE` is left out.
    fn compile_grouped(&mut self, root: NodeId, nodes: &[NodeId]) -> Result<(), CompileError> {
        let d = self.dialect;
        let mut scope = Scope::new("base.patient_id".into(), Some(root));
        // Each distinct (aggregate call, its filters, the pick key it unpacks) is computed once,
        // into column `v<index>`; SQLite also evaluates an aggregate call that appears twice
        // only once, so a pick's columns share one aggregate.
        let mut aggregates: Vec<(String, Option<String>, Option<usize>)> = Vec::new();
        let mut column_of = |call: String, condition: &Option<String>, key: Option<usize>| {
            let entry = (call, condition.clone(), key);
            let index = match aggregates.iter().position(|a| *a == entry) {
                Some(index) => index,
                None => {
                    aggregates.push(entry);
                    aggregates.len() - 1
                }
            };
            format!("v{index}")
        };
        let mut every_condition: Option<Vec<String>> = Some(Vec::new());
        let mut required_bits: Option<Vec<(String, usize)>> = Some(Vec::new());
        let table = self.temp_name();
        for id in nodes {
            let domain = self.source_domain(*id);
            let condition = self.conditions_sql(domain, &mut scope)?;
            match (&condition, &mut every_condition) {
                (Some(c), Some(all)) if !all.contains(c) => all.push(c.clone()),
                (None, _) => every_condition = None,
                _ => {}
            }
            match (self.required_code_bit(domain, &scope), &mut required_bits) {
                (Some(bit), Some(all)) => all.push(bit),
                (None, _) => required_bits = None,
                _ => {}
            }
            match self.graph.node(*id).clone() {
                Node::Aggregate { kind, source } => {
                    let aggregate = match kind {
                        AggregateKind::Exists => "MAX(1)".to_string(),
                        AggregateKind::Count => "COUNT(*)".to_string(),
                        other => {
                            let mut value = self.expr(source, &mut scope)?;
                            if self.is_case_insensitive(source) {
                                value = d.case_insensitive(&value);
                            }
                            let function = match other {
                                AggregateKind::CountDistinct => "COUNT(DISTINCT ",
                                AggregateKind::Min => "MIN(",
                                AggregateKind::Max => "MAX(",
                                AggregateKind::Sum => "SUM(",
                                AggregateKind::Mean => "AVG(",
                                _ => {
                                    return Err(CompileError::Unsupported(format!(
                                        "{other:?} in a scan"
                                    )));
                                }
                            };
                            format!("{function}{value})")
                        }
                    };
                    let column = column_of(aggregate, &condition, None);
                    self.locations.insert(
                        *id,
                        Location {
                            table: table.clone(),
                            column,
                        },
                    );
                }
                Node::PickOneRowPerPatient { .. } => {
                    let sort = self.pick_sort(*id, &mut scope)?;
                    let pick = d.pick_aggregate().ok_or_else(|| {
                        CompileError::Unsupported("sort-and-pick in a grouped scan".into())
                    })?;
                    let function = if sort.descending {
                        pick.last
                    } else {
                        pick.first
                    };
                    let call = format!("{function}({})", sort.keys.join(", "));
                    let mut values = Vec::new();
                    for value in &sort.columns {
                        let key = sort.keys.iter().position(|k| k == value).ok_or_else(|| {
                            CompileError::Unsupported("a picked column that is not a key".into())
                        })?;
                        values.push(Location {
                            table: table.clone(),
                            column: column_of(call.clone(), &condition, Some(key)),
                        });
                    }
                    self.pick_values.insert(*id, values);
                    // Whether the pick found a row is computed only if something asks.
                    if self.presence_read.contains(id) {
                        let column = column_of("MAX(1)".into(), &condition, None);
                        self.locations.insert(
                            *id,
                            Location {
                                table: table.clone(),
                                column,
                            },
                        );
                    }
                }
                other => {
                    return Err(CompileError::Unsupported(format!(
                        "{} in a grouped scan",
                        other.class_name()
                    )));
                }
            }
        }
        let mut prefilter: Option<String> = None;
        if let Some(bits) = required_bits.filter(|b| !b.is_empty()) {
            let mut masks: BTreeMap<String, i64> = BTreeMap::new();
            for (alias, bit) in bits {
                *masks.entry(alias).or_insert(0) |= 1 << bit;
            }
            let tests: Vec<String> = masks
                .into_iter()
                .map(|(alias, mask)| format!("(({alias}.mask & {mask}) <> 0)"))
                .collect();
            prefilter = Some(tests.join(" OR "));
        } else if let Some(all) = every_condition {
            // A single condition stays as written, so the FILTERs equal to it are dropped.
            prefilter = match all.as_slice() {
                [] => None,
                [only] => Some(only.clone()),
                several => Some(format!("({})", several.join(") OR ("))),
            };
        }
        let mut select: Vec<String> = vec!["base.patient_id AS patient_id".into()];
        let mut columns: Vec<String> = Vec::new();
        let unpack = d.pick_aggregate().map(|pick| pick.value);
        for (index, (call, condition, key)) in aggregates.iter().enumerate() {
            let mut sql = match condition {
                Some(c) if Some(c) != prefilter.as_ref() => format!("{call} FILTER (WHERE {c})"),
                _ => call.clone(),
            };
            if let (Some(key), Some(unpack)) = (key, unpack) {
                sql = format!("{unpack}({sql}, {key})");
            }
            select.push(format!("{sql} AS v{index}"));
            columns.push(format!("v{index}"));
        }
        let mut filters: Vec<String> = prefilter.map(|p| format!("({p})")).into_iter().collect();
        filters.extend(self.semi_join());
        let mut sql = format!(
            "SELECT {} FROM {} AS base{}",
            select.join(", "),
            self.table_sql(root)?,
            self.scan_joins(&scope)
        );
        if !filters.is_empty() {
            sql.push_str(&format!(" WHERE {}", filters.join(" AND ")));
        }
        sql.push_str(" GROUP BY base.patient_id");
        self.setup(d.create_patient_temp_table(&table, &columns, &sql));
        self.cleanup.push(table);
        Ok(())
    }

    /// A pick's sort keys (outermost `Sort` first, then the `rewrite_sorts` columns), the
    /// columns it reads, and its direction, as SQL over the scan's base table.
    fn pick_sort(&mut self, id: NodeId, scope: &mut Scope) -> Result<PickSort, CompileError> {
        let Node::PickOneRowPerPatient { source, position } = self.graph.node(id).clone() else {
            return Err(CompileError::Unsupported(
                "a non-pick in a pick scan".into(),
            ));
        };
        let mut keys = Vec::new();
        let mut current = source;
        loop {
            match self.graph.node(current).clone() {
                Node::Sort { source, sort_by } => {
                    let mut key = self.expr(sort_by, scope)?;
                    if self.is_case_insensitive(sort_by) {
                        key = self.dialect.case_insensitive_sort_key(&key);
                    }
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                    current = source;
                }
                Node::Filter { source, .. } => current = source,
                _ => break,
            }
        }
        let columns: Vec<String> = self
            .dataset
            .pick_columns(id)
            .iter()
            .map(|c| format!("base.{}", self.dialect.ident(c)))
            .collect();
        // A key repeating an earlier one never breaks a tie (the sort column is often also a
        // picked column), so it is left out.
        for column in &columns {
            if !keys.contains(column) {
                keys.push(column.clone());
            }
        }
        Ok(PickSort {
            keys,
            columns,
            descending: position == Position::Last,
        })
    }

    /// Sort-and-pick: one `ROW_NUMBER()` window per pick over only the rows passing its
    /// filters. With several picks on one table, one scan first copies the rows any of them
    /// needs (with their flags, sort keys and columns) into a staging table, so the source is
    /// read once and each window sorts only its own rows.
    fn compile_picks(&mut self, root: NodeId, nodes: &[NodeId]) -> Result<(), CompileError> {
        let d = self.dialect;
        let mut scope = Scope::new("base.patient_id".into(), Some(root));
        struct Pick {
            id: NodeId,
            condition: Option<String>,
            keys: Vec<String>,
            columns: Vec<String>,
            descending: bool,
        }
        let mut picks = Vec::new();
        for id in nodes {
            let condition = self.conditions_sql(self.source_domain(*id), &mut scope)?;
            let sort = self.pick_sort(*id, &mut scope)?;
            picks.push(Pick {
                id: *id,
                condition,
                keys: sort.keys,
                columns: sort.columns,
                descending: sort.descending,
            });
        }
        let semi = self.semi_join();
        // Where each pick reads from: the table itself (one pick) or a staging table.
        let staged = picks.len() > 1;
        let mut source_sql = format!(
            "{} AS base{}",
            self.table_sql(root)?,
            self.scan_joins(&scope)
        );
        if staged {
            let stage = self.temp_name();
            let mut select = vec!["base.patient_id AS patient_id".to_string()];
            let mut any: Option<Vec<String>> = Some(Vec::new());
            for (i, pick) in picks.iter_mut().enumerate() {
                match (&pick.condition, &mut any) {
                    (Some(c), Some(all)) => all.push(format!("({c})")),
                    (None, _) => any = None,
                    _ => {}
                }
                let flag = match &pick.condition {
                    Some(c) => format!("CASE WHEN {c} THEN 1 ELSE 0 END"),
                    None => "1".into(),
                };
                select.push(format!("{flag} AS f{i}"));
                pick.condition = Some(format!("stage.f{i} = 1"));
                for (m, key) in pick.keys.iter_mut().enumerate() {
                    select.push(format!("{key} AS k{i}_{m}"));
                    *key = format!("stage.k{i}_{m}");
                }
                for (j, column) in pick.columns.iter_mut().enumerate() {
                    select.push(format!("{column} AS c{i}_{j}"));
                    *column = format!("stage.c{i}_{j}");
                }
            }
            let mut filters: Vec<String> = Vec::new();
            if let Some(all) = any.filter(|a| !a.is_empty()) {
                filters.push(format!("({})", all.join(" OR ")));
            }
            filters.extend(semi.clone());
            let mut sql = format!("SELECT {} FROM {source_sql}", select.join(", "));
            if !filters.is_empty() {
                sql.push_str(&format!(" WHERE {}", filters.join(" AND ")));
            }
            self.setup(d.create_temp_table(&stage, &sql, &["patient_id"]));
            self.cleanup.push(stage.clone());
            source_sql = format!("{} AS stage", d.ident(&stage));
        }
        let patient_id = if staged {
            "stage.patient_id"
        } else {
            "base.patient_id"
        };
        for pick in picks {
            let table = self.temp_name();
            let order: Vec<String> = pick
                .keys
                .iter()
                .map(|k| d.order_key(k, pick.descending))
                .collect();
            let mut inner = vec![format!("{patient_id} AS patient_id")];
            inner.extend(
                pick.columns
                    .iter()
                    .enumerate()
                    .map(|(j, c)| format!("{c} AS c{j}")),
            );
            inner.push(format!(
                "ROW_NUMBER() OVER (PARTITION BY {patient_id} ORDER BY {}) AS rn",
                order.join(", ")
            ));
            let mut filters: Vec<String> = pick.condition.into_iter().collect();
            if !staged {
                filters.extend(semi.clone());
            }
            let mut sql = format!("SELECT {} FROM {source_sql}", inner.join(", "));
            if !filters.is_empty() {
                sql.push_str(&format!(" WHERE {}", filters.join(" AND ")));
            }
            let mut outer = vec!["1 AS p_exists".to_string()];
            let mut columns = vec!["p_exists".to_string()];
            for j in 0..pick.columns.len() {
                outer.push(format!("c{j} AS p_{j}"));
                columns.push(format!("p_{j}"));
            }
            let select = format!(
                "SELECT patient_id, {} FROM ({sql}) AS ranked WHERE rn = 1",
                outer.join(", ")
            );
            self.setup(d.create_patient_temp_table(&table, &columns, &select));
            self.cleanup.push(table.clone());
            let values = (0..pick.columns.len())
                .map(|j| Location {
                    table: table.clone(),
                    column: format!("p_{j}"),
                })
                .collect();
            self.pick_values.insert(pick.id, values);
            self.locations.insert(
                pick.id,
                Location {
                    table,
                    column: "p_exists".into(),
                },
            );
        }
        Ok(())
    }

    /// A node with a query of its own: episode counts (a `LAG` window) and sets.
    fn compile_own(&mut self, id: NodeId) -> Result<(), CompileError> {
        let d = self.dialect;
        let domain = self.source_domain(id);
        let root = self
            .domain_root(domain)
            .ok_or_else(|| CompileError::Unsupported("a set without a table".into()))?;
        let mut scope = Scope::new("base.patient_id".into(), Some(root));
        let mut conditions = Vec::new();
        if let Some(c) = self.conditions_sql(domain, &mut scope)? {
            conditions.push(c);
        }
        if let Some(semi) = self.semi_join() {
            conditions.push(semi);
        }
        let table = self.temp_name();
        match self.graph.node(id).clone() {
            Node::CountEpisodes {
                source,
                maximum_gap_days,
            } => {
                let date = self.expr(source, &mut scope)?;
                conditions.push(format!("{date} IS NOT NULL"));
                let inner = format!(
                    "SELECT base.patient_id AS patient_id, {date} AS d, LAG({date}) OVER (PARTITION BY base.patient_id ORDER BY {date}) AS prev FROM {} AS base{} WHERE {}",
                    self.table_sql(root)?,
                    self.scan_joins(&scope),
                    conditions.join(" AND ")
                );
                let select = format!(
                    "SELECT patient_id, SUM(CASE WHEN prev IS NULL OR {} > {maximum_gap_days} THEN 1 ELSE 0 END) AS value FROM ({inner}) AS episodes GROUP BY patient_id",
                    d.date_diff_days("d", "prev")
                );
                self.setup(d.create_patient_temp_table(&table, &["value".to_string()], &select));
            }
            Node::Aggregate {
                kind: AggregateKind::CombineAsSet,
                source,
            } => {
                let value = self.expr(source, &mut scope)?;
                conditions.push(format!("{value} IS NOT NULL"));
                let select = format!(
                    "SELECT DISTINCT base.patient_id AS patient_id, {value} AS value FROM {} AS base{} WHERE {}",
                    self.table_sql(root)?,
                    self.scan_joins(&scope),
                    conditions.join(" AND ")
                );
                self.setup(d.create_temp_table(&table, &select, &["patient_id", "value"]));
            }
            other => {
                return Err(CompileError::Unsupported(format!(
                    "{} on its own",
                    other.class_name()
                )));
            }
        }
        self.cleanup.push(table.clone());
        self.locations.insert(
            id,
            Location {
                table,
                column: "value".into(),
            },
        );
        Ok(())
    }

    fn compile_population(&mut self) -> Result<(), CompileError> {
        let d = self.dialect;
        let universe = self.temp_name();
        let mut scope = Scope::new(format!("{}.patient_id", d.ident(&universe)), None);
        let condition = self.expr(self.dataset.population(), &mut scope)?;
        let sources: Vec<String> = scope
            .joins
            .iter()
            .map(|(_, t)| format!("SELECT patient_id FROM {t}"))
            .collect();
        let universe_select = if sources.is_empty() {
            // No table is read: the population can only be a constant, and (not True on NULL
            // inputs) it is not True, so nobody qualifies.
            "SELECT 0 AS patient_id WHERE 0 = 1".to_string()
        } else {
            sources.join(" UNION ")
        };
        // The universe is a subquery, not a table of its own: it is read once, right here.
        let population = self.temp_name();
        let select = format!(
            "SELECT {u}.patient_id FROM ({universe_select}) AS {u}{} WHERE {}",
            self.scan_joins(&scope),
            d.bool_test(&condition),
            u = d.ident(&universe)
        );
        self.setup(d.create_patient_temp_table(&population, &[], &select));
        self.cleanup.push(population.clone());
        self.population_table = Some(population);
        Ok(())
    }

    fn compile_results(&mut self) -> Result<(), CompileError> {
        let d = self.dialect;
        let population = self
            .population_table
            .clone()
            .ok_or_else(|| CompileError::Unsupported("no population".into()))?;
        let p = d.ident(&population);
        let mut scope = Scope::new(format!("{p}.patient_id"), None);
        let mut columns = vec![format!("{p}.patient_id")];
        for (name, id) in self.dataset.variables() {
            let sql = self.expr(*id, &mut scope)?;
            let sql = if self.graph.scalar_type(*id) == Some(ScalarType::Bool) {
                d.bool_value(&sql)
            } else if self.grouped.is_some() && self.is_case_insensitive(*id) {
                // Measures group case variants together. PostgreSQL's temporary table keeps
                // the collation; SQLite's does not, so its GROUP BY says it again.
                d.case_insensitive(&sql)
            } else {
                sql
            };
            columns.push(format!("{sql} AS {}", d.ident(name)));
        }
        let rows = format!(
            "SELECT {} FROM {p}{}",
            columns.join(", "),
            self.scan_joins(&scope)
        );
        let sql = match self.grouped {
            Some(grouped) => self.grouped_sum_sql(&rows, grouped),
            None => format!("{rows} ORDER BY {p}.patient_id"),
        };
        self.statements.push(Statement {
            kind: StatementKind::Results,
            sql,
        });
        Ok(())
    }

    /// The measures results query over the patient rows `rows`, which go to a temporary
    /// table first (each grouping set reads them).
    fn grouped_sum_sql(&mut self, rows: &str, grouped: &GroupedSum) -> String {
        let d = self.dialect;
        let table = self.temp_name();
        self.setup(d.create_temp_table(&table, rows, &["patient_id"]));
        self.cleanup.push(table.clone());
        let sums: Vec<String> = grouped
            .sums
            .iter()
            .map(|s| format!("CAST(SUM({q}) AS BIGINT) AS {q}", q = d.ident(s)))
            .collect();
        let from = format!("FROM {} AS measure_rows", d.ident(&table));
        let groups: Vec<String> = grouped.groups.iter().map(|g| d.ident(g)).collect();
        let case_insensitive: BTreeSet<&str> = self
            .dataset
            .variables()
            .iter()
            .filter(|(_, id)| self.is_case_insensitive(*id))
            .map(|(name, _)| name.as_str())
            .collect();
        if groups.is_empty() {
            return format!("SELECT {}, 0 AS grouping_id {from}", sums.join(", "));
        }
        if d.has_grouping_sets() {
            let sets: Vec<String> = grouped
                .grouping_sets
                .iter()
                .map(|set| {
                    let columns: Vec<String> = set.iter().map(|g| d.ident(g)).collect();
                    format!("({})", columns.join(", "))
                })
                .collect();
            return format!(
                "SELECT {}, {}, GROUPING({}) AS grouping_id {from} GROUP BY GROUPING SETS ({})",
                sums.join(", "),
                groups.join(", "),
                groups.join(", "),
                sets.join(", ")
            );
        }
        let selects: Vec<String> = grouped
            .grouping_sets
            .iter()
            .map(|set| {
                let values: Vec<String> = grouped
                    .groups
                    .iter()
                    .map(|g| {
                        if set.contains(g) {
                            d.ident(g)
                        } else {
                            format!("NULL AS {}", d.ident(g))
                        }
                    })
                    .collect();
                let mut sql = format!(
                    "SELECT {}, {}, {} AS grouping_id {from}",
                    sums.join(", "),
                    values.join(", "),
                    grouped.grouping_id(set)
                );
                if !set.is_empty() {
                    let by: Vec<String> = set
                        .iter()
                        .map(|g| {
                            if case_insensitive.contains(g.as_str()) {
                                d.case_insensitive(&d.ident(g))
                            } else {
                                d.ident(g)
                            }
                        })
                        .collect();
                    sql.push_str(&format!(" GROUP BY {}", by.join(", ")));
                }
                sql
            })
            .collect();
        selects.join(" UNION ALL ")
    }

    /// An event table's results query: its members over the rows of their domain, for
    /// population patients; patient-level members are joined on the row's patient.
    fn compile_event_table(&mut self, frame: NodeId) -> Result<(), CompileError> {
        let d = self.dialect;
        let Node::SeriesCollectionFrame { members } = self.graph.node(frame).clone() else {
            return Err(CompileError::Unsupported(
                "an event table that is not a SeriesCollectionFrame".into(),
            ));
        };
        let domain = self.graph.info(frame).domain;
        let root = self
            .domain_root(domain)
            .ok_or_else(|| CompileError::Unsupported("an event table without a table".into()))?;
        let mut scope = Scope::new("base.patient_id".into(), Some(root));
        let mut columns = vec!["base.patient_id AS patient_id".to_string()];
        for (name, id) in &members {
            let sql = self.expr(*id, &mut scope)?;
            let sql = if self.graph.scalar_type(*id) == Some(ScalarType::Bool) {
                d.bool_value(&sql)
            } else {
                sql
            };
            columns.push(format!("{sql} AS {}", d.ident(name)));
        }
        let mut filters: Vec<String> = self
            .conditions_sql(domain, &mut scope)?
            .into_iter()
            .collect();
        filters.extend(self.semi_join());
        let mut sql = format!(
            "SELECT {} FROM {} AS base{}",
            columns.join(", "),
            self.table_sql(root)?,
            self.scan_joins(&scope)
        );
        if !filters.is_empty() {
            sql.push_str(&format!(" WHERE {}", filters.join(" AND ")));
        }
        sql.push_str(" ORDER BY base.patient_id");
        self.statements.push(Statement {
            kind: StatementKind::Results,
            sql,
        });
        Ok(())
    }

    /// The joins of a scan's scope, after emitting the statements that create its code maps.
    fn scan_joins(&mut self, scope: &Scope) -> String {
        let d = self.dialect;
        for map in &scope.code_maps {
            if self.cleanup.contains(&map.alias) {
                continue;
            }
            let mut masks: BTreeMap<&Value, i64> = BTreeMap::new();
            for (bit, (_, values)) in map.sets.iter().enumerate() {
                for v in values {
                    *masks.entry(v).or_insert(0) |= 1 << bit;
                }
            }
            let rows: Vec<(String, i64)> =
                masks.into_iter().map(|(v, m)| (d.literal(v), m)).collect();
            let sqls = d.create_code_map(&map.alias, &rows, map.case_insensitive);
            self.setup(sqls);
            self.cleanup.push(map.alias.clone());
        }
        scope.join_sql(d)
    }

    /// A code-map test of `column IN set`, if `lhs` is a column of the scan's base table.
    fn code_map_test(
        &mut self,
        lhs: NodeId,
        set: NodeId,
        values: &[Value],
        scope: &mut Scope,
    ) -> Option<String> {
        let (alias, bit) = self.code_map_bit(lhs, set, values, scope)?;
        let column = self.base_column(lhs, scope)?;
        // NULL stays NULL; a value in no set has no map row, hence the COALESCE.
        Some(self.dialect.bool_value(&format!(
            "(CASE WHEN {column} IS NULL THEN NULL ELSE ((COALESCE({alias}.mask, 0) >> {bit}) & 1) = 1 END)"
        )))
    }

    /// `base.<column>` if `id` selects a column of the scan's base table.
    fn base_column(&self, id: NodeId, scope: &Scope) -> Option<String> {
        let root = scope.base_root?;
        let Node::SelectColumn { source, name } = self.graph.node(id) else {
            return None;
        };
        if self.domain_root(self.graph.info(*source).domain) != Some(root) {
            return None;
        }
        Some(format!("base.{}", self.dialect.ident(name)))
    }

    /// The quoted code map alias and bit answering `lhs IN set`, registering the set in a
    /// code map of `scope` if it is not there yet; `None` if `lhs` is not a base column.
    fn code_map_bit(
        &mut self,
        lhs: NodeId,
        set: NodeId,
        values: &[Value],
        scope: &mut Scope,
    ) -> Option<(String, usize)> {
        let column = self.base_column(lhs, scope)?;
        if let Some(found) = self.find_code_map_bit(&column, set, scope) {
            return Some(found);
        }
        let index = match scope
            .code_maps
            .iter()
            .position(|m| m.column == column && m.sets.len() < MAX_SETS_PER_CODE_MAP)
        {
            Some(i) => i,
            None => {
                self.counter += 1;
                let alias = format!("codes_{}", self.counter);
                scope.code_maps.push(CodeMap {
                    alias,
                    column: column.clone(),
                    case_insensitive: self.is_case_insensitive(lhs),
                    sets: Vec::new(),
                });
                scope.code_maps.len() - 1
            }
        };
        let map = &mut scope.code_maps[index];
        map.sets.push((set, values.to_vec()));
        Some((self.dialect.ident(&map.alias), map.sets.len() - 1))
    }

    /// The code map alias and bit already answering `column IN set` in `scope`.
    fn find_code_map_bit(
        &self,
        column: &str,
        set: NodeId,
        scope: &Scope,
    ) -> Option<(String, usize)> {
        scope.code_maps.iter().find_map(|map| {
            let bit = map.sets.iter().position(|(id, _)| *id == set)?;
            (map.column == column).then(|| (self.dialect.ident(&map.alias), bit))
        })
    }

    /// A code-map bit that must be set for every row of `domain` (one of its filters is a
    /// conjunction containing `base column IN set`, already compiled in `scope`).
    fn required_code_bit(&self, domain: Domain, scope: &Scope) -> Option<(String, usize)> {
        let mut conjuncts = self.domain_conditions(domain);
        while let Some(id) = conjuncts.pop() {
            let Node::Function { op, args } = self.graph.node(id) else {
                continue;
            };
            match op {
                FunctionOp::And => conjuncts.extend(args.iter().copied()),
                FunctionOp::In => {
                    let found = self
                        .base_column(args[0], scope)
                        .and_then(|column| self.find_code_map_bit(&column, args[1], scope));
                    if found.is_some() {
                        return found;
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// SQL that is true exactly when the boolean series `id` is True, but may be NULL where
    /// the series is False. That freedom makes `is_in` on a code map a single bit test; it is
    /// sound only where NULL and False act alike (filters, `FILTER (WHERE …)`), and AND/OR
    /// keep it for their operands.
    fn condition(&mut self, id: NodeId, scope: &mut Scope) -> Result<String, CompileError> {
        if self.constant(id).is_none()
            && let Node::Function { op, args } = self.graph.node(id).clone()
        {
            match op {
                FunctionOp::And | FunctionOp::Or => {
                    let lhs = self.condition(args[0], scope)?;
                    let rhs = self.condition(args[1], scope)?;
                    let word = if op == FunctionOp::And { "AND" } else { "OR" };
                    return Ok(format!("({lhs} {word} {rhs})"));
                }
                FunctionOp::In => {
                    if let Node::Value(Literal::Set { values, .. }) = self.graph.node(args[1])
                        && !values.is_empty()
                        && let Some((alias, bit)) =
                            self.code_map_bit(args[0], args[1], &values.clone(), scope)
                    {
                        return Ok(format!("(({alias}.mask & {}) <> 0)", 1_i64 << bit));
                    }
                }
                _ => {}
            }
        }
        let sql = self.expr(id, scope)?;
        Ok(self.dialect.bool_test(&sql))
    }

    fn location(&self, id: NodeId) -> Result<Location, CompileError> {
        self.locations.get(&id).cloned().ok_or_else(|| {
            CompileError::Unsupported(format!("node {} used before it was computed", id.index()))
        })
    }

    fn joined_column(&self, loc: &Location, scope: &mut Scope) -> String {
        let alias = loc.table.clone();
        scope.join(&alias, &self.dialect.ident(&loc.table));
        format!(
            "{}.{}",
            self.dialect.ident(&alias),
            self.dialect.ident(&loc.column)
        )
    }

    /// The SQL of a series in `scope`.
    fn expr(&mut self, id: NodeId, scope: &mut Scope) -> Result<String, CompileError> {
        if let Some(sql) = scope.memo.get(&id) {
            return Ok(sql.clone());
        }
        let sql = self.expr_uncached(id, scope)?;
        scope.memo.insert(id, sql.clone());
        Ok(sql)
    }

    fn expr_uncached(&mut self, id: NodeId, scope: &mut Scope) -> Result<String, CompileError> {
        let d = self.dialect;
        let node = self.graph.node(id).clone();
        match node {
            Node::Value(Literal::Scalar(v)) => Ok(d.literal(&v)),
            Node::Value(Literal::Set { .. }) => {
                Err(CompileError::Unsupported("a set outside 'In'".into()))
            }
            Node::Parameter { name, .. } => {
                Err(CompileError::Unsupported(format!("Parameter '{name}'")))
            }
            Node::SelectColumn { source, name } => self.column(source, &name, scope),
            Node::Aggregate { kind, source }
                if self.graph.info(source).domain == Domain::Patient =>
            {
                // Exists/Count of a one-row-per-patient frame.
                let present = self.frame_present(source, scope)?;
                Ok(match kind {
                    AggregateKind::Exists => d.bool_value(&present),
                    _ => format!("(CASE WHEN {present} THEN 1 ELSE 0 END)"),
                })
            }
            Node::Aggregate { kind, .. } => {
                let loc = self.location(id)?;
                let column = self.joined_column(&loc, scope);
                Ok(match kind {
                    AggregateKind::Exists => d.bool_value(&format!("(COALESCE({column}, 0) = 1)")),
                    AggregateKind::Count | AggregateKind::CountDistinct => {
                        format!("COALESCE({column}, 0)")
                    }
                    _ => column,
                })
            }
            Node::CountEpisodes { .. } => {
                let loc = self.location(id)?;
                Ok(format!("COALESCE({}, 0)", self.joined_column(&loc, scope)))
            }
            Node::Function { op, args } => match self.constant(id) {
                // Literal arithmetic (e.g. `index_date - years(1)`) is folded here, with the
                // reference semantics, rather than evaluated for every row.
                Some(value) => Ok(d.literal(&value)),
                None => self.function(op, &args, scope),
            },
            Node::Case { cases, default } => {
                let mut sql = String::from("(CASE");
                for (condition, value) in cases {
                    let c = self.expr(condition, scope)?;
                    let v = match value {
                        Some(v) => self.expr(v, scope)?,
                        None => "NULL".into(),
                    };
                    sql.push_str(&format!(" WHEN {} THEN {v}", d.bool_test(&c)));
                }
                if let Some(default) = default {
                    sql.push_str(&format!(" ELSE {}", self.expr(default, scope)?));
                }
                sql.push_str(" END)");
                Ok(sql)
            }
            other => Err(CompileError::Unsupported(format!(
                "{} as a series",
                other.class_name()
            ))),
        }
    }

    /// The value of a series built only from literals, if it is one.
    fn constant(&self, id: NodeId) -> Option<Value> {
        match self.graph.node(id) {
            Node::Value(Literal::Scalar(v)) => Some(v.clone()),
            Node::Function { op, args } if *op != FunctionOp::In => {
                let values: Vec<Value> = args
                    .iter()
                    .map(|a| self.constant(*a))
                    .collect::<Option<_>>()?;
                let refs: Vec<&Value> = values.iter().collect();
                Some(crate::engines::memory::apply(*op, &refs))
            }
            _ => None,
        }
    }

    /// SQL true when a one-row-per-patient frame has a row for the patient.
    fn frame_present(&mut self, frame: NodeId, scope: &mut Scope) -> Result<String, CompileError> {
        match self.graph.node(frame).clone() {
            Node::SelectPatientTable(t) => {
                scope.join(&t.name, &self.dialect.ident(&t.name));
                Ok(format!(
                    "({}.patient_id IS NOT NULL)",
                    self.dialect.ident(&t.name)
                ))
            }
            Node::PickOneRowPerPatient { .. } => {
                let loc = self.location(frame)?;
                Ok(format!(
                    "(COALESCE({}, 0) = 1)",
                    self.joined_column(&loc, scope)
                ))
            }
            other => Err(CompileError::Unsupported(format!(
                "{} as a patient frame",
                other.class_name()
            ))),
        }
    }

    fn column(
        &mut self,
        source: NodeId,
        name: &str,
        scope: &mut Scope,
    ) -> Result<String, CompileError> {
        let d = self.dialect;
        match self.graph.node(source).clone() {
            Node::SelectPatientTable(t) => {
                scope.join(&t.name, &d.ident(&t.name));
                Ok(format!("{}.{}", d.ident(&t.name), d.ident(name)))
            }
            Node::PickOneRowPerPatient { .. } => {
                if name == "patient_id" {
                    return Ok(scope.patient_id.clone());
                }
                let index = self
                    .dataset
                    .pick_columns(source)
                    .iter()
                    .position(|c| &**c == name)
                    .ok_or_else(|| {
                        CompileError::Unsupported(format!("column '{name}' of a pick"))
                    })?;
                let loc = self
                    .pick_values
                    .get(&source)
                    .and_then(|values| values.get(index))
                    .cloned()
                    .ok_or_else(|| {
                        CompileError::Unsupported(format!(
                            "node {} used before it was computed",
                            source.index()
                        ))
                    })?;
                Ok(self.joined_column(&loc, scope))
            }
            _ => {
                // A many-rows frame: the column of the scan's base table.
                let root = self.domain_root(self.graph.info(source).domain);
                if root.is_none() || root != scope.base_root {
                    return Err(CompileError::Unsupported(
                        "a many-rows column outside its table's scan".into(),
                    ));
                }
                Ok(format!("base.{}", d.ident(name)))
            }
        }
    }

    fn function(
        &mut self,
        op: FunctionOp,
        args: &[NodeId],
        scope: &mut Scope,
    ) -> Result<String, CompileError> {
        use FunctionOp::*;
        let d = self.dialect;
        if op == In {
            return self.in_set(args[0], args[1], scope);
        }
        let mut a = Vec::with_capacity(args.len());
        for arg in args {
            a.push(self.expr(*arg, scope)?);
        }
        let compares = matches!(op, Eq | Ne | Lt | Le | Gt | Ge | MinimumOf | MaximumOf);
        if compares && args.iter().any(|arg| self.is_case_insensitive(*arg)) {
            // Every operand, so a literal's own collation cannot conflict.
            a = a.iter().map(|x| d.case_insensitive(x)).collect();
        }
        let first_type = self.graph.scalar_type(args[0]);
        let binary = |sym: &str| format!("({} {sym} {})", a[0], a[1]);
        // A part of a literal date (`index_date` in an age) is folded, not parsed per row.
        let part = |i: usize, part: DatePart| match self.constant(args[i]) {
            Some(Value::Date(date)) => {
                let (year, month, day) = date.ymd();
                match part {
                    DatePart::Year => year.to_string(),
                    DatePart::Month => month.to_string(),
                    DatePart::Day => day.to_string(),
                }
            }
            _ => d.date_part(&a[i], part),
        };
        Ok(match op {
            Eq => binary("="),
            Ne => binary("!="),
            Lt => binary("<"),
            Le => binary("<="),
            Gt => binary(">"),
            Ge => binary(">="),
            And => d.bool_value(&format!(
                "({} AND {})",
                d.bool_test(&a[0]),
                d.bool_test(&a[1])
            )),
            Or => d.bool_value(&format!(
                "({} OR {})",
                d.bool_test(&a[0]),
                d.bool_test(&a[1])
            )),
            Not => d.bool_value(&format!("(NOT {})", d.bool_test(&a[0]))),
            IsNull => d.bool_value(&format!("({} IS NULL)", a[0])),
            Negate => format!("(-{})", a[0]),
            Absolute => format!("abs({})", a[0]),
            Add | Subtract | Multiply if first_type == Some(ScalarType::Int) => {
                let int_op = match op {
                    Add => IntOp::Add,
                    Subtract => IntOp::Subtract,
                    _ => IntOp::Multiply,
                };
                d.int_arithmetic(&a[0], int_op, &a[1])
            }
            Add => binary("+"),
            Subtract => binary("-"),
            Multiply => binary("*"),
            TrueDivide => d.true_divide(&a[0], &a[1]),
            FloorDivide => d.floor_divide(&a[0], &a[1], first_type == Some(ScalarType::Int)),
            Power => d.power(&a[0], &a[1]),
            CastToInt => d.cast_to_int(&a[0]),
            CastToFloat => d.cast_to_float(&a[0]),
            DateAddDays => d.date_add_days(&a[0], &a[1]),
            DateAddMonths => d.date_add_months(&a[0], &a[1]),
            DateAddYears => d.date_add_years(&a[0], &a[1]),
            DateDifferenceInDays => d.date_diff_days(&a[0], &a[1]),
            DateDifferenceInMonths => {
                format!(
                    "(({} - {}) * 12 + ({} - {}) - (CASE WHEN {} < {} THEN 1 ELSE 0 END))",
                    part(0, DatePart::Year),
                    part(1, DatePart::Year),
                    part(0, DatePart::Month),
                    part(1, DatePart::Month),
                    part(0, DatePart::Day),
                    part(1, DatePart::Day)
                )
            }
            DateDifferenceInYears => {
                // "Birthday not reached yet": (month, day) of end before those of start.
                format!(
                    "(({} - {}) - (CASE WHEN ({} - {}) * -31 > ({} - {}) THEN 1 ELSE 0 END))",
                    part(0, DatePart::Year),
                    part(1, DatePart::Year),
                    part(0, DatePart::Month),
                    part(1, DatePart::Month),
                    part(0, DatePart::Day),
                    part(1, DatePart::Day)
                )
            }
            YearFromDate => part(0, DatePart::Year),
            MonthFromDate => part(0, DatePart::Month),
            DayFromDate => part(0, DatePart::Day),
            ToFirstOfYear => d.first_of_year(&a[0]),
            ToFirstOfMonth => d.first_of_month(&a[0]),
            StringContains if self.is_case_insensitive(args[0]) => {
                d.bool_value(&d.string_contains_case_insensitive(&a[0], &a[1]))
            }
            StringContains => d.bool_value(&d.string_contains(&a[0], &a[1])),
            MinimumOf => d.greatest(&a, false),
            MaximumOf => d.greatest(&a, true),
            In => unreachable_in(),
        })
    }

    fn in_set(
        &mut self,
        lhs: NodeId,
        rhs: NodeId,
        scope: &mut Scope,
    ) -> Result<String, CompileError> {
        let d = self.dialect;
        let case_insensitive = self.is_case_insensitive(lhs) || self.is_case_insensitive(rhs);
        let mut x = self.expr(lhs, scope)?;
        if case_insensitive {
            x = d.case_insensitive(&x);
        }
        match self.graph.node(rhs).clone() {
            Node::Value(Literal::Set { values, .. }) => {
                if values.is_empty() {
                    // Empty set: False even for NULL.
                    return Ok(d.literal(&Value::Bool(false)));
                }
                if let Some(test) = self.code_map_test(lhs, rhs, &values, scope) {
                    return Ok(test);
                }
                let literals: Vec<String> = values.iter().map(|v| d.literal(v)).collect();
                if literals.len() <= d.max_in_list_len() {
                    let listed: Vec<String> = if case_insensitive {
                        literals.iter().map(|l| d.case_insensitive(l)).collect()
                    } else {
                        literals
                    };
                    return Ok(d.bool_value(&format!("({x} IN ({}))", listed.join(", "))));
                }
                let table = match self.values_tables.get(&(rhs, case_insensitive)) {
                    Some(t) => t.clone(),
                    None => {
                        self.counter += 1;
                        let t = format!("inline_data_{}", self.counter);
                        let sqls = d.create_values_table(&t, &literals, case_insensitive);
                        // Values tables depend on nothing: create them first.
                        for (i, sql) in sqls.into_iter().enumerate() {
                            self.statements.insert(
                                i,
                                Statement {
                                    kind: StatementKind::Setup,
                                    sql,
                                },
                            );
                        }
                        self.cleanup.push(t.clone());
                        self.values_tables
                            .insert((rhs, case_insensitive), t.clone());
                        t
                    }
                };
                Ok(d.bool_value(&format!("({x} IN (SELECT value FROM {}))", d.ident(&table))))
            }
            Node::Aggregate {
                kind: AggregateKind::CombineAsSet,
                ..
            } => {
                let loc = self.location(rhs)?;
                let t = d.ident(&loc.table);
                Ok(d.bool_value(&format!(
                    "({x} IN (SELECT value FROM {t} WHERE {t}.patient_id = {}))",
                    scope.patient_id
                )))
            }
            other => Err(CompileError::Unsupported(format!(
                "'In' with {}",
                other.class_name()
            ))),
        }
    }
}

fn unreachable_in() -> String {
    // `In` is handled before the generic path; keep a harmless value rather than panicking.
    "NULL".into()
}
