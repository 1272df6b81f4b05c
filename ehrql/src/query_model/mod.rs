//! The query model (spec §2): an arena of immutable, hash-consed nodes with their types and
//! domains, validated as each node is built, and the `Dataset` root.
//!
//! Architecture invariant: this module knows no SQL and no file format. Every rule of §2.5 is
//! checked in [`Graph`]'s constructors, so a `NodeId` always names a well-typed node whose
//! domain rules hold; front ends cannot build anything else.

pub mod date;
pub mod types;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

pub use date::Date;
pub use types::{CodeSystem, MultiCodeSystem, ScalarType, Value};

use crate::tables::TableSchema;

/// Index of a node in its [`Graph`]. Children always have smaller ids than their parents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    /// The arena index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Which row `PickOneRowPerPatient` keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Position {
    /// The first row in sort order.
    First,
    /// The last row in sort order.
    Last,
}

/// `AggregateByPatient.*` nodes except `CountEpisodes` (which carries a gap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggregateKind {
    /// Any rows? Never NULL.
    Exists,
    /// Number of rows. Never NULL.
    Count,
    /// Number of distinct non-NULL values (0 if none).
    CountDistinct,
    /// Smallest non-NULL value.
    Min,
    /// Largest non-NULL value.
    Max,
    /// Sum of non-NULL values.
    Sum,
    /// Mean of non-NULL values, as a float.
    Mean,
    /// The set of non-NULL values.
    CombineAsSet,
}

impl AggregateKind {
    /// The serializer's class name.
    pub fn class_name(self) -> &'static str {
        match self {
            AggregateKind::Exists => "AggregateByPatient.Exists",
            AggregateKind::Count => "AggregateByPatient.Count",
            AggregateKind::CountDistinct => "AggregateByPatient.CountDistinct",
            AggregateKind::Min => "AggregateByPatient.Min",
            AggregateKind::Max => "AggregateByPatient.Max",
            AggregateKind::Sum => "AggregateByPatient.Sum",
            AggregateKind::Mean => "AggregateByPatient.Mean",
            AggregateKind::CombineAsSet => "AggregateByPatient.CombineAsSet",
        }
    }

    /// All kinds.
    pub const ALL: [AggregateKind; 8] = [
        AggregateKind::Exists,
        AggregateKind::Count,
        AggregateKind::CountDistinct,
        AggregateKind::Min,
        AggregateKind::Max,
        AggregateKind::Sum,
        AggregateKind::Mean,
        AggregateKind::CombineAsSet,
    ];
}

/// The `Function.*` nodes (spec §2.4).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FunctionOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Not,
    IsNull,
    Negate,
    Absolute,
    Add,
    Subtract,
    Multiply,
    TrueDivide,
    FloorDivide,
    Power,
    CastToInt,
    CastToFloat,
    DateAddDays,
    DateAddMonths,
    DateAddYears,
    DateDifferenceInDays,
    DateDifferenceInMonths,
    DateDifferenceInYears,
    YearFromDate,
    MonthFromDate,
    DayFromDate,
    ToFirstOfYear,
    ToFirstOfMonth,
    StringContains,
    In,
    MinimumOf,
    MaximumOf,
}

/// How a function's arguments are laid out in the serializer JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// One field, `source`.
    Unary,
    /// Two fields, `lhs` and `rhs`.
    Binary,
    /// One field, `sources`, a tuple of one or more series.
    Variadic,
}

impl FunctionOp {
    /// All functions.
    pub const ALL: [FunctionOp; 35] = {
        use FunctionOp::*;
        [
            Eq,
            Ne,
            Lt,
            Le,
            Gt,
            Ge,
            And,
            Or,
            Not,
            IsNull,
            Negate,
            Absolute,
            Add,
            Subtract,
            Multiply,
            TrueDivide,
            FloorDivide,
            Power,
            CastToInt,
            CastToFloat,
            DateAddDays,
            DateAddMonths,
            DateAddYears,
            DateDifferenceInDays,
            DateDifferenceInMonths,
            DateDifferenceInYears,
            YearFromDate,
            MonthFromDate,
            DayFromDate,
            ToFirstOfYear,
            ToFirstOfMonth,
            StringContains,
            In,
            MinimumOf,
            MaximumOf,
        ]
    };

    /// The name after `Function.` in the serializer JSON.
    pub fn name(self) -> &'static str {
        use FunctionOp::*;
        match self {
            Eq => "EQ",
            Ne => "NE",
            Lt => "LT",
            Le => "LE",
            Gt => "GT",
            Ge => "GE",
            And => "And",
            Or => "Or",
            Not => "Not",
            IsNull => "IsNull",
            Negate => "Negate",
            Absolute => "Absolute",
            Add => "Add",
            Subtract => "Subtract",
            Multiply => "Multiply",
            TrueDivide => "TrueDivide",
            FloorDivide => "FloorDivide",
            Power => "Power",
            CastToInt => "CastToInt",
            CastToFloat => "CastToFloat",
            DateAddDays => "DateAddDays",
            DateAddMonths => "DateAddMonths",
            DateAddYears => "DateAddYears",
            DateDifferenceInDays => "DateDifferenceInDays",
            DateDifferenceInMonths => "DateDifferenceInMonths",
            DateDifferenceInYears => "DateDifferenceInYears",
            YearFromDate => "YearFromDate",
            MonthFromDate => "MonthFromDate",
            DayFromDate => "DayFromDate",
            ToFirstOfYear => "ToFirstOfYear",
            ToFirstOfMonth => "ToFirstOfMonth",
            StringContains => "StringContains",
            In => "In",
            MinimumOf => "MinimumOf",
            MaximumOf => "MaximumOf",
        }
    }

    /// The argument layout.
    pub fn arity(self) -> Arity {
        use FunctionOp::*;
        match self {
            Not | IsNull | Negate | Absolute | CastToInt | CastToFloat | YearFromDate
            | MonthFromDate | DayFromDate | ToFirstOfYear | ToFirstOfMonth => Arity::Unary,
            MinimumOf | MaximumOf => Arity::Variadic,
            _ => Arity::Binary,
        }
    }
}

/// A literal: one value, or a set of values (the right-hand side of `In`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Literal {
    /// One value. NULL literals are not allowed (ehrQL's language never makes them).
    Scalar(Value),
    /// A set, sorted and without duplicates (sets are unordered). `element` is `None` only for
    /// the empty set, which matches any element type.
    Set {
        /// The element type, if the set is non-empty.
        element: Option<ScalarType>,
        /// The elements, sorted, distinct, none NULL.
        values: Vec<Value>,
    },
}

/// A query-model node. Fields hold child ids; see spec §2.3.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// A constant series.
    Value(Literal),
    /// A placeholder replaced before execution (measures). No engine accepts it.
    Parameter {
        /// Its name.
        name: Arc<str>,
        /// Its type.
        ty: ScalarType,
    },
    /// An event (many rows per patient) table.
    SelectTable(Arc<TableSchema>),
    /// A patient (one row per patient) table.
    SelectPatientTable(Arc<TableSchema>),
    /// A column of a frame.
    SelectColumn {
        /// The frame.
        source: NodeId,
        /// The column name.
        name: Arc<str>,
    },
    /// Rows of `source` where `condition` is true.
    Filter {
        /// A many-rows frame.
        source: NodeId,
        /// A bool series.
        condition: NodeId,
    },
    /// `source` sorted by `sort_by` (stable; the outermost sort has the highest priority).
    Sort {
        /// A many-rows frame.
        source: NodeId,
        /// A comparable series.
        sort_by: NodeId,
    },
    /// One row per patient from a sorted frame.
    PickOneRowPerPatient {
        /// A sorted many-rows frame.
        source: NodeId,
        /// First or last.
        position: Position,
    },
    /// An aggregation to one value per patient.
    Aggregate {
        /// Which aggregation.
        kind: AggregateKind,
        /// A frame (Exists, Count) or a many-rows series.
        source: NodeId,
    },
    /// Number of episodes of dates at most `maximum_gap_days` apart.
    CountEpisodes {
        /// A many-rows date series.
        source: NodeId,
        /// The largest gap inside one episode.
        maximum_gap_days: i64,
    },
    /// A function of series.
    Function {
        /// Which function.
        op: FunctionOp,
        /// Its arguments in field order (`lhs`, `rhs`; `source`; or `sources`).
        args: Vec<NodeId>,
    },
    /// First matching condition wins; a NULL condition does not match.
    Case {
        /// (condition, value or NULL) in order.
        cases: Vec<(NodeId, Option<NodeId>)>,
        /// The value when nothing matches, or NULL.
        default: Option<NodeId>,
    },
    /// An event table made of series (dataset `events`).
    SeriesCollectionFrame {
        /// Named member series.
        members: Vec<(Arc<str>, NodeId)>,
    },
}

impl Node {
    /// The serializer's class name of this node, for messages.
    pub fn class_name(&self) -> &'static str {
        match self {
            Node::Value(_) => "Value",
            Node::Parameter { .. } => "Parameter",
            Node::SelectTable(_) => "SelectTable",
            Node::SelectPatientTable(_) => "SelectPatientTable",
            Node::SelectColumn { .. } => "SelectColumn",
            Node::Filter { .. } => "Filter",
            Node::Sort { .. } => "Sort",
            Node::PickOneRowPerPatient { .. } => "PickOneRowPerPatient",
            Node::Aggregate { kind, .. } => kind.class_name(),
            Node::CountEpisodes { .. } => "AggregateByPatient.CountEpisodes",
            Node::Function { op, .. } => function_class_name(*op),
            Node::Case { .. } => "Case",
            Node::SeriesCollectionFrame { .. } => "SeriesCollectionFrame",
        }
    }

    /// Child node ids, in field order.
    pub fn children(&self) -> Vec<NodeId> {
        match self {
            Node::Value(_)
            | Node::Parameter { .. }
            | Node::SelectTable(_)
            | Node::SelectPatientTable(_) => vec![],
            Node::SelectColumn { source, .. }
            | Node::PickOneRowPerPatient { source, .. }
            | Node::Aggregate { source, .. }
            | Node::CountEpisodes { source, .. } => vec![*source],
            Node::Filter { source, condition } => vec![*source, *condition],
            Node::Sort { source, sort_by } => vec![*source, *sort_by],
            Node::Function { args, .. } => args.clone(),
            Node::Case { cases, default } => {
                let mut out = Vec::new();
                for (c, v) in cases {
                    out.push(*c);
                    out.extend(v.iter().copied());
                }
                out.extend(default.iter().copied());
                out
            }
            Node::SeriesCollectionFrame { members } => members.iter().map(|(_, n)| *n).collect(),
        }
    }
}

fn function_class_name(op: FunctionOp) -> &'static str {
    // Leaked once per op would be wasteful; a match keeps these static.
    use FunctionOp::*;
    match op {
        Eq => "Function.EQ",
        Ne => "Function.NE",
        Lt => "Function.LT",
        Le => "Function.LE",
        Gt => "Function.GT",
        Ge => "Function.GE",
        And => "Function.And",
        Or => "Function.Or",
        Not => "Function.Not",
        IsNull => "Function.IsNull",
        Negate => "Function.Negate",
        Absolute => "Function.Absolute",
        Add => "Function.Add",
        Subtract => "Function.Subtract",
        Multiply => "Function.Multiply",
        TrueDivide => "Function.TrueDivide",
        FloorDivide => "Function.FloorDivide",
        Power => "Function.Power",
        CastToInt => "Function.CastToInt",
        CastToFloat => "Function.CastToFloat",
        DateAddDays => "Function.DateAddDays",
        DateAddMonths => "Function.DateAddMonths",
        DateAddYears => "Function.DateAddYears",
        DateDifferenceInDays => "Function.DateDifferenceInDays",
        DateDifferenceInMonths => "Function.DateDifferenceInMonths",
        DateDifferenceInYears => "Function.DateDifferenceInYears",
        YearFromDate => "Function.YearFromDate",
        MonthFromDate => "Function.MonthFromDate",
        DayFromDate => "Function.DayFromDate",
        ToFirstOfYear => "Function.ToFirstOfYear",
        ToFirstOfMonth => "Function.ToFirstOfMonth",
        StringContains => "Function.StringContains",
        In => "Function.In",
        MinimumOf => "Function.MinimumOf",
        MaximumOf => "Function.MaximumOf",
    }
}

/// The type of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeriesType {
    /// One value per row.
    Scalar(ScalarType),
    /// A set of values (`None`: the empty literal set, which matches any element type).
    Set(Option<ScalarType>),
}

impl fmt::Display for SeriesType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeriesType::Scalar(t) => write!(f, "Series[{t}]"),
            SeriesType::Set(Some(t)) => write!(f, "Series[Set[{t}]]"),
            SeriesType::Set(None) => f.write_str("Series[Set[Any]]"),
        }
    }
}

/// One row per patient, or many rows drawn from one table through a chain of filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// One value per patient.
    Patient,
    /// Many rows per patient: the id of the `SelectTable` or `Filter` node that made the domain.
    Many(NodeId),
}

/// What a node is: a series or a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A series of the given type.
    Series(SeriesType),
    /// A frame.
    Frame {
        /// The table whose columns the frame has (`None` for a `SeriesCollectionFrame`).
        table: Option<Arc<TableSchema>>,
        /// Whether a `Sort` is in its Filter/Sort chain (required by `PickOneRowPerPatient`).
        sorted: bool,
    },
}

/// Type and domain of a node, computed when it is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Series or frame.
    pub kind: Kind,
    /// Its domain.
    pub domain: Domain,
}

/// A validation error, in the researcher's terms (spec §2.5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// A field has the wrong type (TypeValidationError).
    #[error("{node}.{field}: Expected type '{expected}' but got '{received}'")]
    TypeMismatch {
        /// The node class.
        node: &'static str,
        /// The field.
        field: &'static str,
        /// What the field accepts.
        expected: String,
        /// What it was given.
        received: String,
    },
    /// Series from different many-row domains combined (DomainMismatchError).
    #[error(
        "{node}: Cannot combine series which are drawn from different tables and both have more than one value per patient"
    )]
    DomainMismatch {
        /// The node class.
        node: &'static str,
    },
    /// A filter or sort whose series is not drawn from the frame or one of its ancestors.
    #[error(
        "{node}: the series must be drawn from the same table as the frame (or have one value per patient)"
    )]
    NotAncestorDomain {
        /// The node class.
        node: &'static str,
    },
    /// Sort by a one-row-per-patient series (InvalidSortError).
    #[error("Sort: Cannot sort by a constant value")]
    InvalidSort,
    /// Aggregation of an already patient-level series, or an event table without event series
    /// (PatientDomainError).
    #[error("{node}: {reason}")]
    PatientDomain {
        /// The node class.
        node: &'static str,
        /// What went wrong.
        reason: &'static str,
    },
    /// Pick from an unsorted frame.
    #[error(
        "PickOneRowPerPatient: Expected type 'SortedFrame' but got an unsorted frame (sort_by must come before first_for_patient/last_for_patient)"
    )]
    NotSorted,
    /// A column the table does not have.
    #[error("SelectColumn: table '{table}' has no column '{column}'")]
    UnknownColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A code that does not fit its system.
    #[error("'{code}' is not a valid {system} code")]
    InvalidCode {
        /// The code.
        code: String,
        /// The class name of the system.
        system: &'static str,
    },
    /// A set literal mixing types.
    #[error("Value: a set must hold values of one type, got '{first}' and '{second}'")]
    MixedSet {
        /// One type.
        first: &'static str,
        /// Another type.
        second: &'static str,
    },
    /// A malformed node shape (e.g. a case with no branches).
    #[error("{node}: {reason}")]
    Invalid {
        /// The node class.
        node: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Population or variable rules of `Dataset`.
    #[error("{0}")]
    Dataset(String),
}

/// A validated, hash-consed arena of nodes.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    infos: Vec<NodeInfo>,
    index: HashMap<Node, NodeId>,
}

fn series_name(t: &SeriesType) -> String {
    t.to_string()
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Type and domain of the node.
    pub fn info(&self, id: NodeId) -> &NodeInfo {
        &self.infos[id.index()]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The scalar type of a series node (`None` for frames and sets).
    pub fn scalar_type(&self, id: NodeId) -> Option<ScalarType> {
        match self.info(id).kind {
            Kind::Series(SeriesType::Scalar(t)) => Some(t),
            _ => None,
        }
    }

    /// The many-rows domain's parent: `Patient` for a table, the source's domain for a filter.
    pub fn domain_parent(&self, domain: Domain) -> Option<Domain> {
        match domain {
            Domain::Patient => None,
            Domain::Many(id) => match self.node(id) {
                Node::Filter { source, .. } => Some(self.info(*source).domain),
                _ => Some(Domain::Patient),
            },
        }
    }

    /// Whether `ancestor` is `domain` or one of its ancestors.
    pub fn is_ancestor_domain(&self, ancestor: Domain, domain: Domain) -> bool {
        let mut current = Some(domain);
        while let Some(d) = current {
            if d == ancestor {
                return true;
            }
            current = self.domain_parent(d);
        }
        false
    }

    /// The table at the root of a frame's Filter/Sort/Pick chain.
    pub fn frame_table(&self, frame: NodeId) -> Option<&Arc<TableSchema>> {
        match &self.info(frame).kind {
            Kind::Frame { table, .. } => table.as_ref(),
            Kind::Series(_) => None,
        }
    }

    fn intern(&mut self, node: Node, info: NodeInfo) -> NodeId {
        if let Some(id) = self.index.get(&node) {
            return *id;
        }
        let id = NodeId(u32::try_from(self.nodes.len()).unwrap_or(u32::MAX));
        self.index.insert(node.clone(), id);
        self.nodes.push(node);
        self.infos.push(info);
        id
    }

    fn series_type(
        &self,
        id: NodeId,
        node: &'static str,
        field: &'static str,
    ) -> Result<SeriesType, QueryError> {
        match self.info(id).kind {
            Kind::Series(t) => Ok(t),
            Kind::Frame { .. } => Err(QueryError::TypeMismatch {
                node,
                field,
                expected: "Series".into(),
                received: "Frame".into(),
            }),
        }
    }

    fn scalar(
        &self,
        id: NodeId,
        node: &'static str,
        field: &'static str,
    ) -> Result<ScalarType, QueryError> {
        match self.series_type(id, node, field)? {
            SeriesType::Scalar(t) => Ok(t),
            other => Err(QueryError::TypeMismatch {
                node,
                field,
                expected: "Series[Any]".into(),
                received: series_name(&other),
            }),
        }
    }

    fn many_frame(&self, id: NodeId, node: &'static str) -> Result<Domain, QueryError> {
        let info = self.info(id);
        match (&info.kind, info.domain) {
            (Kind::Frame { .. }, Domain::Many(_)) => Ok(info.domain),
            (Kind::Frame { .. }, Domain::Patient) => Err(QueryError::TypeMismatch {
                node,
                field: "source",
                expected: "ManyRowsPerPatientFrame".into(),
                received: "OneRowPerPatientFrame".into(),
            }),
            (Kind::Series(t), _) => Err(QueryError::TypeMismatch {
                node,
                field: "source",
                expected: "Frame".into(),
                received: series_name(t),
            }),
        }
    }

    /// The common domain of `ids`: patient unless some are many-rows, which must then agree.
    fn combined_domain(&self, ids: &[NodeId], node: &'static str) -> Result<Domain, QueryError> {
        let mut many = None;
        for id in ids {
            if let Domain::Many(d) = self.info(*id).domain {
                match many {
                    None => many = Some(d),
                    Some(existing) if existing == d => {}
                    Some(_) => return Err(QueryError::DomainMismatch { node }),
                }
            }
        }
        Ok(many.map_or(Domain::Patient, Domain::Many))
    }

    /// A literal series.
    ///
    /// # Errors
    /// A code that does not fit its system, a set of mixed types, or a NULL literal.
    pub fn value(&mut self, literal: Literal) -> Result<NodeId, QueryError> {
        let ty = match &literal {
            Literal::Scalar(v) => {
                check_code(v)?;
                match v.scalar_type() {
                    Some(t) => SeriesType::Scalar(t),
                    None => {
                        return Err(QueryError::Invalid {
                            node: "Value",
                            reason: "a NULL literal is not allowed here".into(),
                        });
                    }
                }
            }
            Literal::Set { values, .. } => {
                let mut element: Option<ScalarType> = None;
                for v in values {
                    check_code(v)?;
                    let Some(t) = v.scalar_type() else {
                        return Err(QueryError::Invalid {
                            node: "Value",
                            reason: "a set cannot contain NULL".into(),
                        });
                    };
                    match element {
                        None => element = Some(t),
                        Some(e) if e == t => {}
                        Some(e) => {
                            return Err(QueryError::MixedSet {
                                first: e.name(),
                                second: t.name(),
                            });
                        }
                    }
                }
                SeriesType::Set(element)
            }
        };
        // Normalise sets: sorted and distinct, so equal sets intern to one node.
        let literal = match literal {
            Literal::Set { values, .. } => {
                let set: BTreeSet<Value> = values.into_iter().collect();
                let element = match ty {
                    SeriesType::Set(e) => e,
                    SeriesType::Scalar(_) => None,
                };
                Literal::Set {
                    element,
                    values: set.into_iter().collect(),
                }
            }
            scalar => scalar,
        };
        Ok(self.intern(
            Node::Value(literal),
            NodeInfo {
                kind: Kind::Series(ty),
                domain: Domain::Patient,
            },
        ))
    }

    /// A parameter placeholder.
    pub fn parameter(&mut self, name: &str, ty: ScalarType) -> NodeId {
        self.intern(
            Node::Parameter {
                name: name.into(),
                ty,
            },
            NodeInfo {
                kind: Kind::Series(SeriesType::Scalar(ty)),
                domain: Domain::Patient,
            },
        )
    }

    /// Selects a table: a patient table or an event table, per its schema.
    pub fn select_table(&mut self, table: Arc<TableSchema>) -> NodeId {
        let patient_level = table.patient_level;
        let kind = Kind::Frame {
            table: Some(table.clone()),
            sorted: false,
        };
        if patient_level {
            return self.intern(
                Node::SelectPatientTable(table),
                NodeInfo {
                    kind,
                    domain: Domain::Patient,
                },
            );
        }
        // An event table's domain is the node itself, so compute the id first.
        let node = Node::SelectTable(table);
        if let Some(id) = self.index.get(&node) {
            return *id;
        }
        let id = NodeId(u32::try_from(self.nodes.len()).unwrap_or(u32::MAX));
        self.intern(
            node,
            NodeInfo {
                kind,
                domain: Domain::Many(id),
            },
        )
    }

    /// A column of a frame; its type is the column's type in the root table.
    ///
    /// # Errors
    /// Not a frame, or no such column.
    pub fn select_column(&mut self, source: NodeId, name: &str) -> Result<NodeId, QueryError> {
        let info = self.info(source).clone();
        let Kind::Frame { table, .. } = &info.kind else {
            return Err(QueryError::TypeMismatch {
                node: "SelectColumn",
                field: "source",
                expected: "Frame".into(),
                received: "Series".into(),
            });
        };
        let Some(table) = table else {
            return Err(QueryError::Invalid {
                node: "SelectColumn",
                reason: "columns cannot be selected from an event table made of series".into(),
            });
        };
        let ty = if name == "patient_id" {
            ScalarType::Int
        } else {
            match table.column(name) {
                Some(c) => c.ty,
                None => {
                    return Err(QueryError::UnknownColumn {
                        table: table.name.clone(),
                        column: name.to_string(),
                    });
                }
            }
        };
        Ok(self.intern(
            Node::SelectColumn {
                source,
                name: name.into(),
            },
            NodeInfo {
                kind: Kind::Series(SeriesType::Scalar(ty)),
                domain: info.domain,
            },
        ))
    }

    /// Rows of a many-rows frame where `condition` is true.
    ///
    /// # Errors
    /// Not a many-rows frame, a non-bool condition, or a condition from an unrelated table.
    pub fn filter(&mut self, source: NodeId, condition: NodeId) -> Result<NodeId, QueryError> {
        let source_domain = self.many_frame(source, "Filter")?;
        let ty = self.scalar(condition, "Filter", "condition")?;
        if ty != ScalarType::Bool {
            return Err(mismatch("Filter", "condition", "Series[bool]", ty));
        }
        if !self.is_ancestor_domain(self.info(condition).domain, source_domain) {
            return Err(QueryError::NotAncestorDomain { node: "Filter" });
        }
        let kind = self.info(source).kind.clone();
        let node = Node::Filter { source, condition };
        if let Some(id) = self.index.get(&node) {
            return Ok(*id);
        }
        let id = NodeId(u32::try_from(self.nodes.len()).unwrap_or(u32::MAX));
        Ok(self.intern(
            node,
            NodeInfo {
                kind,
                domain: Domain::Many(id),
            },
        ))
    }

    /// A many-rows frame sorted by a comparable series.
    ///
    /// # Errors
    /// Not a many-rows frame, a non-comparable or patient-level sort key, or a key from an
    /// unrelated table.
    pub fn sort(&mut self, source: NodeId, sort_by: NodeId) -> Result<NodeId, QueryError> {
        let source_domain = self.many_frame(source, "Sort")?;
        let ty = self.scalar(sort_by, "Sort", "sort_by")?;
        if !ty.is_comparable() {
            return Err(mismatch("Sort", "sort_by", "Series[Comparable]", ty));
        }
        let key_domain = self.info(sort_by).domain;
        if key_domain == Domain::Patient {
            return Err(QueryError::InvalidSort);
        }
        if !self.is_ancestor_domain(key_domain, source_domain) {
            return Err(QueryError::NotAncestorDomain { node: "Sort" });
        }
        let table = match &self.info(source).kind {
            Kind::Frame { table, .. } => table.clone(),
            Kind::Series(_) => None,
        };
        Ok(self.intern(
            Node::Sort { source, sort_by },
            NodeInfo {
                kind: Kind::Frame {
                    table,
                    sorted: true,
                },
                domain: source_domain,
            },
        ))
    }

    /// One row per patient from a sorted frame.
    ///
    /// # Errors
    /// Not a many-rows frame, or not sorted.
    pub fn pick(&mut self, source: NodeId, position: Position) -> Result<NodeId, QueryError> {
        self.many_frame(source, "PickOneRowPerPatient")?;
        let Kind::Frame { table, sorted } = self.info(source).kind.clone() else {
            return Err(QueryError::NotSorted);
        };
        if !sorted {
            return Err(QueryError::NotSorted);
        }
        Ok(self.intern(
            Node::PickOneRowPerPatient { source, position },
            NodeInfo {
                kind: Kind::Frame {
                    table,
                    sorted: false,
                },
                domain: Domain::Patient,
            },
        ))
    }

    /// An aggregation to one value per patient.
    ///
    /// # Errors
    /// A wrong source kind or type, or a series that already has one value per patient.
    pub fn aggregate(&mut self, kind: AggregateKind, source: NodeId) -> Result<NodeId, QueryError> {
        let node = kind.class_name();
        let result = match kind {
            AggregateKind::Exists | AggregateKind::Count => {
                if let Kind::Series(t) = self.info(source).kind {
                    return Err(QueryError::TypeMismatch {
                        node,
                        field: "source",
                        expected: "Frame".into(),
                        received: series_name(&t),
                    });
                }
                if kind == AggregateKind::Exists {
                    ScalarType::Bool
                } else {
                    ScalarType::Int
                }
            }
            _ => {
                let t = self.scalar(source, node, "source")?;
                if self.info(source).domain == Domain::Patient {
                    return Err(QueryError::PatientDomain {
                        node,
                        reason: "cannot aggregate a series which already has only one value per patient",
                    });
                }
                match kind {
                    AggregateKind::CountDistinct => ScalarType::Int,
                    AggregateKind::Min | AggregateKind::Max => {
                        if !t.is_comparable() {
                            return Err(mismatch(node, "source", "Series[Comparable]", t));
                        }
                        t
                    }
                    AggregateKind::Sum => {
                        if !t.is_numeric() {
                            return Err(mismatch(node, "source", "Series[Numeric]", t));
                        }
                        t
                    }
                    AggregateKind::Mean => {
                        if !t.is_numeric() {
                            return Err(mismatch(node, "source", "Series[Numeric]", t));
                        }
                        ScalarType::Float
                    }
                    _ => t,
                }
            }
        };
        let series = if kind == AggregateKind::CombineAsSet {
            SeriesType::Set(Some(result))
        } else {
            SeriesType::Scalar(result)
        };
        Ok(self.intern(
            Node::Aggregate { kind, source },
            NodeInfo {
                kind: Kind::Series(series),
                domain: Domain::Patient,
            },
        ))
    }

    /// Count of date episodes per patient.
    ///
    /// # Errors
    /// A non-date or patient-level source, or a negative gap.
    pub fn count_episodes(
        &mut self,
        source: NodeId,
        maximum_gap_days: i64,
    ) -> Result<NodeId, QueryError> {
        let node = "AggregateByPatient.CountEpisodes";
        let t = self.scalar(source, node, "source")?;
        if t != ScalarType::Date {
            return Err(mismatch(node, "source", "Series[date]", t));
        }
        if self.info(source).domain == Domain::Patient {
            return Err(QueryError::PatientDomain {
                node,
                reason: "cannot aggregate a series which already has only one value per patient",
            });
        }
        if maximum_gap_days < 0 {
            return Err(QueryError::Invalid {
                node,
                reason: "maximum_gap_days must not be negative".into(),
            });
        }
        Ok(self.intern(
            Node::CountEpisodes {
                source,
                maximum_gap_days,
            },
            NodeInfo {
                kind: Kind::Series(SeriesType::Scalar(ScalarType::Int)),
                domain: Domain::Patient,
            },
        ))
    }

    /// A function of series, type-checked by the rules of spec §2.4.
    ///
    /// # Errors
    /// Wrong number of arguments, a type rule broken, or mixed many-rows domains.
    pub fn function(&mut self, op: FunctionOp, args: Vec<NodeId>) -> Result<NodeId, QueryError> {
        let node = function_class_name(op);
        let expected_len = match op.arity() {
            Arity::Unary => Some(1),
            Arity::Binary => Some(2),
            Arity::Variadic => None,
        };
        if let Some(n) = expected_len {
            if args.len() != n {
                return Err(QueryError::Invalid {
                    node,
                    reason: format!("expected {n} arguments, got {}", args.len()),
                });
            }
        } else if args.is_empty() {
            return Err(QueryError::Invalid {
                node,
                reason: "expected at least one series".into(),
            });
        }
        let result = self.function_type(op, &args)?;
        let domain = self.combined_domain(&args, node)?;
        Ok(self.intern(
            Node::Function { op, args },
            NodeInfo {
                kind: Kind::Series(SeriesType::Scalar(result)),
                domain,
            },
        ))
    }

    fn function_type(&self, op: FunctionOp, args: &[NodeId]) -> Result<ScalarType, QueryError> {
        use FunctionOp::*;
        let node = function_class_name(op);
        let (lf, rf) = match op.arity() {
            Arity::Unary => ("source", "source"),
            Arity::Binary => ("lhs", "rhs"),
            Arity::Variadic => ("sources", "sources"),
        };
        let want = |t: ScalarType, ok: bool, field: &'static str, expected: &str| {
            if ok {
                Ok(t)
            } else {
                Err(mismatch(node, field, expected, t))
            }
        };
        if op == In {
            let lhs = self.scalar(args[0], node, "lhs")?;
            let rhs = self.series_type(args[1], node, "rhs")?;
            return match rhs {
                SeriesType::Set(None) => Ok(ScalarType::Bool),
                SeriesType::Set(Some(e)) if e == lhs => Ok(ScalarType::Bool),
                other => Err(QueryError::TypeMismatch {
                    node,
                    field: "rhs",
                    expected: format!("Series[Set[{lhs}]]"),
                    received: series_name(&other),
                }),
            };
        }
        let types: Vec<ScalarType> = args
            .iter()
            .enumerate()
            .map(|(i, a)| self.scalar(*a, node, if i == 0 { lf } else { rf }))
            .collect::<Result<_, _>>()?;
        let first = types[0];
        // A TypeVar binds to the first argument's type; the others must match it exactly.
        let same_as_first = |expected: &str| -> Result<(), QueryError> {
            for t in &types[1..] {
                if *t != first {
                    return Err(QueryError::TypeMismatch {
                        node,
                        field: rf,
                        expected: format!(
                            "Series[{}]",
                            if expected.is_empty() {
                                first.name()
                            } else {
                                expected
                            }
                        ),
                        received: format!("Series[{t}]"),
                    });
                }
            }
            Ok(())
        };
        let is_str = |t: ScalarType| matches!(t, ScalarType::Str | ScalarType::MultiCodeString(_));
        match op {
            Eq | Ne => {
                same_as_first("")?;
                Ok(ScalarType::Bool)
            }
            Lt | Le | Gt | Ge => {
                want(first, first.is_comparable(), lf, "Series[Comparable]")?;
                same_as_first("")?;
                Ok(ScalarType::Bool)
            }
            And | Or | Not => {
                for (i, t) in types.iter().enumerate() {
                    want(
                        *t,
                        *t == ScalarType::Bool,
                        if i == 0 { lf } else { rf },
                        "Series[bool]",
                    )?;
                }
                Ok(ScalarType::Bool)
            }
            IsNull => Ok(ScalarType::Bool),
            Negate | Absolute => want(first, first.is_numeric(), lf, "Series[Numeric]"),
            Add | Subtract | Multiply => {
                want(first, first.is_numeric(), lf, "Series[Numeric]")?;
                same_as_first("")?;
                Ok(first)
            }
            TrueDivide | FloorDivide | Power => {
                want(first, first.is_numeric(), lf, "Series[Numeric]")?;
                same_as_first("")?;
                // TrueDivide always gives a float; FloorDivide and Power keep the operand type.
                Ok(if op == TrueDivide {
                    ScalarType::Float
                } else {
                    first
                })
            }
            CastToInt => {
                want(
                    first,
                    first.is_numeric() || first == ScalarType::Bool,
                    lf,
                    "Series[Numeric | bool]",
                )?;
                Ok(ScalarType::Int)
            }
            CastToFloat => {
                want(
                    first,
                    first.is_numeric() || first == ScalarType::Bool,
                    lf,
                    "Series[Numeric]",
                )?;
                Ok(ScalarType::Float)
            }
            DateAddDays | DateAddMonths | DateAddYears => {
                want(first, first == ScalarType::Date, lf, "Series[date]")?;
                want(types[1], types[1] == ScalarType::Int, rf, "Series[int]")?;
                Ok(ScalarType::Date)
            }
            DateDifferenceInDays | DateDifferenceInMonths | DateDifferenceInYears => {
                want(first, first == ScalarType::Date, lf, "Series[date]")?;
                want(types[1], types[1] == ScalarType::Date, rf, "Series[date]")?;
                Ok(ScalarType::Int)
            }
            YearFromDate | MonthFromDate | DayFromDate => {
                want(first, first == ScalarType::Date, lf, "Series[date]")?;
                Ok(ScalarType::Int)
            }
            ToFirstOfYear | ToFirstOfMonth => {
                want(first, first == ScalarType::Date, lf, "Series[date]")
            }
            StringContains => {
                want(first, is_str(first), lf, "Series[str]")?;
                want(types[1], types[1] == ScalarType::Str, rf, "Series[str]")?;
                Ok(ScalarType::Bool)
            }
            MinimumOf | MaximumOf => {
                want(first, first.is_comparable(), lf, "Series[Comparable]")?;
                same_as_first("")?;
                Ok(first)
            }
            In => Ok(ScalarType::Bool),
        }
    }

    /// A case expression: the first case whose condition is true gives the value.
    ///
    /// # Errors
    /// No cases, non-bool conditions, values of different types, every value NULL, or mixed
    /// many-rows domains.
    pub fn case(
        &mut self,
        cases: Vec<(NodeId, Option<NodeId>)>,
        default: Option<NodeId>,
    ) -> Result<NodeId, QueryError> {
        if cases.is_empty() {
            return Err(QueryError::Invalid {
                node: "Case",
                reason: "at least one case is required".into(),
            });
        }
        let mut value_type: Option<ScalarType> = None;
        let mut inputs = Vec::new();
        for (condition, value) in &cases {
            let t = self.scalar(*condition, "Case", "cases")?;
            if t != ScalarType::Bool {
                return Err(mismatch("Case", "cases", "Series[bool]", t));
            }
            inputs.push(*condition);
            inputs.extend(value.iter().copied());
        }
        inputs.extend(default.iter().copied());
        for v in cases.iter().filter_map(|(_, v)| *v).chain(default) {
            let t = self.scalar(v, "Case", "cases")?;
            match value_type {
                None => value_type = Some(t),
                Some(existing) if existing == t => {}
                Some(existing) => return Err(mismatch_named("Case", "cases", existing, t)),
            }
        }
        let Some(value_type) = value_type else {
            return Err(QueryError::Invalid {
                node: "Case",
                reason: "not every value may be None".into(),
            });
        };
        let domain = self.combined_domain(&inputs, "Case")?;
        Ok(self.intern(
            Node::Case { cases, default },
            NodeInfo {
                kind: Kind::Series(SeriesType::Scalar(value_type)),
                domain,
            },
        ))
    }

    /// A copy of this graph with each bound `Parameter` replaced by its value (measures
    /// evaluate one definition per interval), and where `roots` went. Every node is rebuilt
    /// through its validating constructor, in id order (children come before parents).
    ///
    /// # Errors
    /// A value that does not fit where its parameter was used.
    pub fn substitute_parameters(
        &self,
        roots: &[NodeId],
        bindings: &[(&str, Value)],
    ) -> Result<(Graph, Vec<NodeId>), QueryError> {
        let mut out = Graph::new();
        let mut map: Vec<NodeId> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let m = |id: &NodeId| map[id.index()];
            let id = match node {
                Node::Value(literal) => out.value(literal.clone())?,
                Node::Parameter { name, ty } => {
                    match bindings.iter().find(|(n, _)| *n == &**name) {
                        Some((_, value)) => out.value(Literal::Scalar(value.clone()))?,
                        None => out.parameter(name, *ty),
                    }
                }
                Node::SelectTable(t) | Node::SelectPatientTable(t) => out.select_table(t.clone()),
                Node::SelectColumn { source, name } => out.select_column(m(source), name)?,
                Node::Filter { source, condition } => out.filter(m(source), m(condition))?,
                Node::Sort { source, sort_by } => out.sort(m(source), m(sort_by))?,
                Node::PickOneRowPerPatient { source, position } => {
                    out.pick(m(source), *position)?
                }
                Node::Aggregate { kind, source } => out.aggregate(*kind, m(source))?,
                Node::CountEpisodes {
                    source,
                    maximum_gap_days,
                } => out.count_episodes(m(source), *maximum_gap_days)?,
                Node::Function { op, args } => out.function(*op, args.iter().map(m).collect())?,
                Node::Case { cases, default } => out.case(
                    cases
                        .iter()
                        .map(|(c, v)| (m(c), v.as_ref().map(m)))
                        .collect(),
                    default.as_ref().map(m),
                )?,
                Node::SeriesCollectionFrame { members } => out.series_collection_frame(
                    members.iter().map(|(n, id)| (n.clone(), m(id))).collect(),
                )?,
            };
            map.push(id);
        }
        let roots = roots.iter().map(|r| map[r.index()]).collect();
        Ok((out, roots))
    }

    /// An event table made of series; at least one must have many rows per patient.
    ///
    /// # Errors
    /// No members, a non-series member, mixed domains, or no many-rows member.
    pub fn series_collection_frame(
        &mut self,
        members: Vec<(Arc<str>, NodeId)>,
    ) -> Result<NodeId, QueryError> {
        let node = "SeriesCollectionFrame";
        for (_, m) in &members {
            self.scalar(*m, node, "members")?;
        }
        let ids: Vec<NodeId> = members.iter().map(|(_, m)| *m).collect();
        let domain = self.combined_domain(&ids, node)?;
        if domain == Domain::Patient {
            return Err(QueryError::PatientDomain {
                node,
                reason: "event tables must have columns with more than one value per patient",
            });
        }
        Ok(self.intern(
            Node::SeriesCollectionFrame { members },
            NodeInfo {
                kind: Kind::Frame {
                    table: None,
                    sorted: false,
                },
                domain,
            },
        ))
    }
}

fn mismatch(
    node: &'static str,
    field: &'static str,
    expected: &str,
    received: ScalarType,
) -> QueryError {
    QueryError::TypeMismatch {
        node,
        field,
        expected: expected.into(),
        received: format!("Series[{received}]"),
    }
}

fn mismatch_named(
    node: &'static str,
    field: &'static str,
    expected: ScalarType,
    received: ScalarType,
) -> QueryError {
    QueryError::TypeMismatch {
        node,
        field,
        expected: format!("Series[{expected}]"),
        received: format!("Series[{received}]"),
    }
}

fn check_code(v: &Value) -> Result<(), QueryError> {
    if let Value::Code(system, code) = v
        && !system.is_valid(code)
    {
        return Err(QueryError::InvalidCode {
            code: code.to_string(),
            system: system.class_name(),
        });
    }
    Ok(())
}

/// The root: population, variables and event tables, validated as a whole.
#[derive(Clone, Debug)]
pub struct Dataset {
    graph: Graph,
    population: NodeId,
    variables: Vec<(String, NodeId)>,
    events: Vec<(String, NodeId)>,
    pick_columns: HashMap<NodeId, Vec<Arc<str>>>,
}

/// Names a variable may not have (spec §2.5).
const RESERVED_NAMES: [&str; 3] = ["patient_id", "population", "dummy_data_config"];

/// Whether `name` is a valid variable name: `^[A-Za-z]+[A-Za-z0-9_]*$`.
pub fn is_valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Dataset {
    /// Validates and builds a dataset.
    ///
    /// # Errors
    /// The population is not a one-row-per-patient bool series or is True when every table is
    /// empty; a variable is badly named, duplicated or not one-row-per-patient; an event table
    /// is not a `SeriesCollectionFrame`.
    pub fn new(
        graph: Graph,
        population: NodeId,
        variables: Vec<(String, NodeId)>,
        events: Vec<(String, NodeId)>,
    ) -> Result<Dataset, QueryError> {
        match (&graph.info(population).kind, graph.info(population).domain) {
            (Kind::Series(SeriesType::Scalar(ScalarType::Bool)), Domain::Patient) => {}
            (Kind::Series(SeriesType::Scalar(ScalarType::Bool)), _) => {
                return Err(QueryError::Dataset(
                    "population: Expected a series with only one value per patient".into(),
                ));
            }
            (Kind::Series(t), _) => {
                return Err(QueryError::Dataset(format!(
                    "population: Expected type 'Series[bool]' but got '{t}'"
                )));
            }
            (Kind::Frame { .. }, _) => {
                return Err(QueryError::Dataset(
                    "population: Expected a series, got a frame".into(),
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (name, id) in variables.iter().chain(events.iter()) {
            if !is_valid_variable_name(name) {
                return Err(QueryError::Dataset(format!(
                    "Variable names must start with a letter, and contain only alphanumeric characters and underscores (you defined a variable '{name}')"
                )));
            }
            if RESERVED_NAMES.contains(&name.as_str()) {
                return Err(QueryError::Dataset(format!(
                    "'{name}' is not an allowed variable name"
                )));
            }
            if !seen.insert(name.clone()) {
                return Err(QueryError::Dataset(format!(
                    "'{name}' is already set and cannot be reassigned"
                )));
            }
            let _ = id;
        }
        for (name, id) in &variables {
            match (&graph.info(*id).kind, graph.info(*id).domain) {
                (Kind::Series(SeriesType::Scalar(_)), Domain::Patient) => {}
                (Kind::Series(SeriesType::Scalar(_)), _) => {
                    return Err(QueryError::Dataset(format!(
                        "variable '{name}': Expected a series with only one value per patient"
                    )));
                }
                _ => {
                    return Err(QueryError::Dataset(format!(
                        "variable '{name}': Expected a series of single values"
                    )));
                }
            }
        }
        for (name, id) in &events {
            if !matches!(graph.node(*id), Node::SeriesCollectionFrame { .. }) {
                return Err(QueryError::Dataset(format!(
                    "event table '{name}': Expected a SeriesCollectionFrame"
                )));
            }
        }
        let mut dataset = Dataset {
            graph,
            population,
            variables,
            events,
            pick_columns: HashMap::new(),
        };
        dataset.pick_columns = dataset.collect_pick_columns();
        if crate::engines::memory::population_true_on_empty_tables(&dataset) {
            return Err(QueryError::Dataset(
                "population definition must not evaluate as True for NULL inputs".into(),
            ));
        }
        Ok(dataset)
    }

    /// The node arena.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The population condition.
    pub fn population(&self) -> NodeId {
        self.population
    }

    /// Variables in definition order.
    pub fn variables(&self) -> &[(String, NodeId)] {
        &self.variables
    }

    /// Event tables in definition order.
    pub fn events(&self) -> &[(String, NodeId)] {
        &self.events
    }

    /// Column names read from a `PickOneRowPerPatient` node anywhere in the dataset, in lexical
    /// order: the `rewrite_sorts` transform (spec §2.6) sorts by these beneath the user's keys
    /// so the picked row is deterministic.
    pub fn pick_columns(&self, pick: NodeId) -> &[Arc<str>] {
        self.pick_columns.get(&pick).map_or(&[], Vec::as_slice)
    }

    /// Ids of every node reachable from the roots, in ascending (dependency) order.
    pub fn reachable(&self) -> Vec<NodeId> {
        let mut seen = vec![false; self.graph.len()];
        let mut stack: Vec<NodeId> = vec![self.population];
        stack.extend(self.variables.iter().map(|(_, n)| *n));
        stack.extend(self.events.iter().map(|(_, n)| *n));
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id.index()], true) {
                continue;
            }
            stack.extend(self.graph.node(id).children());
            if let Domain::Many(d) = self.graph.info(id).domain {
                stack.push(d);
            }
        }
        seen.iter()
            .enumerate()
            .filter(|(_, s)| **s)
            .map(|(i, _)| NodeId(i as u32))
            .collect()
    }

    fn collect_pick_columns(&self) -> HashMap<NodeId, Vec<Arc<str>>> {
        let mut out: HashMap<NodeId, BTreeSet<Arc<str>>> = HashMap::new();
        for id in self.reachable() {
            if let Node::SelectColumn { source, name } = self.graph.node(id)
                && matches!(self.graph.node(*source), Node::PickOneRowPerPatient { .. })
            {
                out.entry(*source).or_default().insert(name.clone());
            }
        }
        out.into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect()
    }
}
