//! Runtime values of the evaluator: the plain Python values a definition computes with, and
//! handles to ehrQL objects (series and frames are query-model node ids in the shared graph).

use std::cell::RefCell;
use std::rc::Rc;

use rustpython_ruff_python_ast::StmtFunctionDef;

use crate::query_model::{CodeSystem, Date, NodeId};

/// A value during evaluation. Lists and dicts are shared and mutable, as in Python.
#[derive(Clone, Debug)]
pub(super) enum Obj<'a> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Date(Date),
    /// A code made with `SNOMEDCTCode("…")` and friends.
    Code(CodeSystem, Rc<str>),
    List(Rc<RefCell<Vec<Obj<'a>>>>),
    Tuple(Rc<[Obj<'a>]>),
    /// Insertion-ordered; keys are plain values.
    Dict(Rc<RefCell<Vec<(Obj<'a>, Obj<'a>)>>>),
    /// Distinct elements in insertion order.
    Set(Rc<[Obj<'a>]>),
    /// An ehrQL series.
    Series(NodeId),
    /// An ehrQL frame (table, filtered or sorted rows, or one picked row per patient).
    Frame(NodeId),
    /// `days(n)`, `weeks(n)`, `months(n)`, `years(n)`; `n` is an int or an int series.
    Duration(DurationUnit, Box<Obj<'a>>),
    /// `end - start` of dates, waiting for `.days`, `.weeks`, `.months` or `.years`.
    DateDifference(Box<(Obj<'a>, Obj<'a>)>),
    /// `when(condition)`, waiting for `.then(value)`.
    When(NodeId),
    /// `when(condition).then(value)`.
    WhenThen(Rc<(NodeId, Obj<'a>)>),
    /// A dataset, by index into the evaluator's datasets.
    Dataset(usize),
    /// A measures collection (`create_measures()`), by index into the evaluator's.
    Measures(usize),
    /// `INTERVAL`: its `start_date` and `end_date` parameters; iterates as the pair.
    Interval(NodeId, NodeId),
    Module(Module),
    Builtin(Builtin),
    /// `receiver.name`, waiting to be called.
    Method(Rc<(Obj<'a>, String)>),
    /// A function defined in the file.
    Function(&'a StmtFunctionDef),
}

/// The unit of a duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DurationUnit {
    Days,
    Weeks,
    Months,
    Years,
}

impl DurationUnit {
    pub(super) fn name(self) -> &'static str {
        match self {
            DurationUnit::Days => "days",
            DurationUnit::Weeks => "weeks",
            DurationUnit::Months => "months",
            DurationUnit::Years => "years",
        }
    }
}

/// An importable module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Module {
    /// `ehrql`
    Ehrql,
    /// `ehrql.codes`
    Codes,
    /// `ehrql.tables` or one of its sub-modules, by dotted path.
    Tables(Rc<str>),
    /// `datetime` (only `date` may be used).
    Datetime,
}

/// Functions provided by ehrQL or by Python itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Builtin {
    // ehrQL.
    CreateDataset,
    CreateMeasures,
    Case,
    When,
    Duration(DurationUnit),
    MaximumOf,
    MinimumOf,
    CodelistFromCsv,
    ClaimPermissions,
    Show,
    CodeType(CodeSystem),
    // datetime.
    DateType,
    // Python builtins.
    Len,
    Range,
    Str,
    Int,
    Float,
    Bool,
    List,
    Tuple,
    Dict,
    Set,
    Sorted,
    Reversed,
    Enumerate,
    Zip,
    Min,
    Max,
    Abs,
    Sum,
    Any,
    All,
    Print,
    Getattr,
}

impl<'a> Obj<'a> {
    pub(super) fn str(s: &str) -> Obj<'a> {
        Obj::Str(s.into())
    }

    pub(super) fn list(items: Vec<Obj<'a>>) -> Obj<'a> {
        Obj::List(Rc::new(RefCell::new(items)))
    }

    /// What the value is, in words, for messages.
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool(_) => "a bool",
            Obj::Int(_) => "an int",
            Obj::Float(_) => "a float",
            Obj::Str(_) => "a string",
            Obj::Date(_) => "a date",
            Obj::Code(..) => "a code",
            Obj::List(_) => "a list",
            Obj::Tuple(_) => "a tuple",
            Obj::Dict(_) => "a dict",
            Obj::Set(_) => "a set",
            Obj::Series(_) => "a series",
            Obj::Frame(_) => "a frame",
            Obj::Duration(..) => "a duration",
            Obj::DateDifference(_) => "a date difference",
            Obj::When(_) => "when(...) without .then(...)",
            Obj::WhenThen(_) => "a when(...).then(...) clause",
            Obj::Dataset(_) => "a dataset",
            Obj::Measures(_) => "a measures collection",
            Obj::Interval(..) => "INTERVAL",
            Obj::Module(_) => "a module",
            Obj::Builtin(_) | Obj::Method(_) | Obj::Function(_) => "a function",
        }
    }

    /// Whether the value is a plain Python value (usable as a dict key or set member).
    pub(super) fn is_plain(&self) -> bool {
        match self {
            Obj::None
            | Obj::Bool(_)
            | Obj::Int(_)
            | Obj::Float(_)
            | Obj::Str(_)
            | Obj::Date(_)
            | Obj::Code(..) => true,
            Obj::Tuple(items) => items.iter().all(Obj::is_plain),
            _ => false,
        }
    }

    /// The items of an iterable plain collection (a dict gives its keys, a string its
    /// characters).
    pub(super) fn items(&self) -> Option<Vec<Obj<'a>>> {
        Some(match self {
            Obj::List(items) => items.borrow().clone(),
            Obj::Tuple(items) | Obj::Set(items) => items.to_vec(),
            Obj::Interval(start, end) => vec![Obj::Series(*start), Obj::Series(*end)],
            Obj::Dict(pairs) => pairs.borrow().iter().map(|(k, _)| k.clone()).collect(),
            Obj::Str(s) => s
                .chars()
                .map(|c| Obj::str(c.encode_utf8(&mut [0; 4])))
                .collect(),
            _ => return None,
        })
    }

    /// Python's `str()` of a plain value, as f-strings and `str()` show it.
    pub(super) fn to_text(&self) -> String {
        self.text_at_depth(0)
    }

    /// `to_text`, stopping at [`MAX_NESTING`] levels: a list can be made to contain itself.
    fn text_at_depth(&self, depth: usize) -> String {
        if depth > MAX_NESTING {
            return "...".into();
        }
        let join_repr = |items: &[Obj<'_>]| -> String {
            items
                .iter()
                .map(|o| o.repr_at_depth(depth + 1))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Obj::None => "None".into(),
            Obj::Bool(true) => "True".into(),
            Obj::Bool(false) => "False".into(),
            Obj::Int(i) => i.to_string(),
            Obj::Float(f) => crate::output::python_float_repr(*f),
            Obj::Str(s) => s.to_string(),
            Obj::Date(d) => d.to_string(),
            Obj::Code(_, c) => c.to_string(),
            Obj::List(items) => format!("[{}]", join_repr(&items.borrow())),
            Obj::Tuple(items) if items.len() == 1 => {
                format!("({},)", items[0].repr_at_depth(depth + 1))
            }
            Obj::Tuple(items) => format!("({})", join_repr(items)),
            Obj::Set(items) => format!("{{{}}}", join_repr(items)),
            Obj::Dict(pairs) => {
                let inner: Vec<String> = pairs
                    .borrow()
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{}: {}",
                            k.repr_at_depth(depth + 1),
                            v.repr_at_depth(depth + 1)
                        )
                    })
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
            other => format!("<{}>", other.describe()),
        }
    }

    /// Python's `repr()` (strings quoted).
    pub(super) fn repr(&self) -> String {
        self.repr_at_depth(0)
    }

    fn repr_at_depth(&self, depth: usize) -> String {
        match self {
            Obj::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            Obj::Date(d) => {
                let (y, m, day) = d.ymd();
                format!("datetime.date({y}, {m}, {day})")
            }
            other => other.text_at_depth(depth),
        }
    }
}

/// Deepest nesting of lists, tuples and dicts that printing and comparison walk into.
const MAX_NESTING: usize = 50;

/// Python equality of plain values (`1 == 1.0 == True`); ehrQL objects are never equal here.
pub(super) fn plain_eq<'a>(a: &Obj<'a>, b: &Obj<'a>) -> bool {
    eq_at_depth(a, b, 0)
}

fn eq_at_depth<'a>(a: &Obj<'a>, b: &Obj<'a>, depth: usize) -> bool {
    if depth > MAX_NESTING {
        return false;
    }
    let plain_eq = |x: &Obj<'a>, y: &Obj<'a>| eq_at_depth(x, y, depth + 1);
    match (a, b) {
        (Obj::None, Obj::None) => true,
        (Obj::Str(x), Obj::Str(y)) => x == y,
        (Obj::Date(x), Obj::Date(y)) => x == y,
        (Obj::Code(s, x), Obj::Code(t, y)) => s == t && x == y,
        (Obj::Tuple(x), Obj::Tuple(y)) | (Obj::Set(x), Obj::Set(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| plain_eq(a, b))
        }
        (Obj::List(x), Obj::List(y)) if Rc::ptr_eq(x, y) => true,
        (Obj::List(x), Obj::List(y)) => {
            let (x, y) = (x.borrow(), y.borrow());
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| plain_eq(a, b))
        }
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// A bool, int or float as a number, for mixed comparisons.
pub(super) fn number(o: &Obj<'_>) -> Option<f64> {
    match o {
        Obj::Bool(b) => Some(f64::from(u8::from(*b))),
        Obj::Int(i) => Some(*i as f64),
        Obj::Float(f) => Some(*f),
        _ => None,
    }
}
