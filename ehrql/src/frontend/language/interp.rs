//! The evaluator: walks the parsed module statement by statement, keeps variables, runs the
//! functions defined in the file, and hands every ehrQL operation to [`super::ops`]. Only the
//! statements and expressions a dataset definition needs are evaluated; everything else is
//! refused where it appears.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use rustpython_ruff_python_ast::{self as ast, BoolOp, Expr, Number, Stmt, UnaryOp};
use rustpython_ruff_text_size::{Ranged, TextSize};

use super::error::{ErrorKind, Fail};
use super::value::{Builtin, Module, Obj, number, plain_eq};
use super::{Definition, DummyDataConfig};
use crate::measures::MeasuresDefinition;
use crate::query_model::{Dataset, Graph, NodeId};

/// Result of evaluation, with the offset of any error.
pub(super) type R<T> = Result<T, Fail>;

/// Attaches a location to an error without one.
pub(super) trait At<T> {
    fn at(self, at: TextSize) -> R<T>;
}

impl<T> At<T> for Result<T, ErrorKind> {
    fn at(self, at: TextSize) -> R<T> {
        self.map_err(|kind| Fail { at, kind })
    }
}

/// Most statements executed (loop iterations included) before giving up: a definition that
/// runs longer is a mistake, and the job must not hang.
const MAX_STEPS: u64 = 1_000_000;
/// Deepest chain of calls to functions defined in the file.
const MAX_CALL_DEPTH: usize = 100;
/// Deepest expression nesting evaluated (long operator chains nest too).
const MAX_EXPR_DEPTH: usize = 400;
/// Most values put into lists, tuples, dicts and strings by operators and builtins over the
/// whole run, so repeated copying cannot exhaust memory.
const MAX_ITEMS_CREATED: u64 = 5_000_000;

/// Per-dataset state built by `create_dataset()` and its methods.
#[derive(Debug, Default)]
pub(super) struct DatasetState {
    pub(super) population: Option<(NodeId, TextSize)>,
    pub(super) variables: Vec<(String, NodeId)>,
    /// Event tables (`add_event_table`): name and `SeriesCollectionFrame`.
    pub(super) events: Vec<(String, NodeId)>,
    pub(super) dummy_data_config: DummyDataConfig,
}

/// Arguments of `define_measure` / `define_defaults`, each possibly absent.
#[derive(Clone, Debug, Default)]
pub(super) struct MeasureArgs {
    pub(super) numerator: Option<NodeId>,
    pub(super) denominator: Option<NodeId>,
    pub(super) group_by: Option<Vec<(String, NodeId)>>,
    pub(super) intervals: Option<Vec<(crate::query_model::Date, crate::query_model::Date)>>,
}

/// Per-collection state built by `create_measures()` and its methods.
#[derive(Debug)]
pub(super) struct MeasuresState {
    pub(super) measures: Vec<crate::measures::Measure>,
    pub(super) defaults: Option<MeasureArgs>,
    pub(super) dummy_data_config: DummyDataConfig,
    pub(super) disclosure_control: bool,
}

impl Default for MeasuresState {
    fn default() -> MeasuresState {
        MeasuresState {
            measures: Vec::new(),
            defaults: None,
            // Population size 0: not configured, so guessed from the measures.
            dummy_data_config: DummyDataConfig {
                population_size: 0,
                ..DummyDataConfig::default()
            },
            disclosure_control: true,
        }
    }
}

/// Positional and keyword arguments of a call.
#[derive(Debug, Default)]
pub(super) struct Args<'a> {
    pub(super) positional: Vec<Obj<'a>>,
    pub(super) keywords: Vec<(String, Obj<'a>)>,
}

impl<'a> Args<'a> {
    /// Matches arguments to parameter names (positional first, then by keyword). The first
    /// `required` parameters must be given.
    pub(super) fn bind(
        self,
        function: &str,
        params: &[&str],
        required: usize,
    ) -> Result<Vec<Option<Obj<'a>>>, ErrorKind> {
        if self.positional.len() > params.len() {
            return Err(ErrorKind::Type(format!(
                "{function}() takes {} positional arguments but {} were given",
                params.len(),
                self.positional.len()
            )));
        }
        let mut out: Vec<Option<Obj<'a>>> = vec![None; params.len()];
        for (i, v) in self.positional.into_iter().enumerate() {
            out[i] = Some(v);
        }
        for (name, v) in self.keywords {
            let Some(i) = params.iter().position(|p| *p == name) else {
                return Err(ErrorKind::Type(format!(
                    "{function}() got an unexpected keyword argument '{name}'"
                )));
            };
            if out[i].is_some() {
                return Err(ErrorKind::Type(format!(
                    "{function}() got multiple values for argument '{name}'"
                )));
            }
            out[i] = Some(v);
        }
        for (i, p) in params.iter().enumerate().take(required) {
            if out[i].is_none() {
                return Err(ErrorKind::Type(format!(
                    "{function}() missing required argument '{p}'"
                )));
            }
        }
        Ok(out)
    }

    /// For functions taking no keywords: the positional arguments.
    pub(super) fn only_positional(self, function: &str) -> Result<Vec<Obj<'a>>, ErrorKind> {
        if let Some((name, _)) = self.keywords.first() {
            return Err(ErrorKind::Type(format!(
                "{function}() got an unexpected keyword argument '{name}'"
            )));
        }
        Ok(self.positional)
    }
}

enum Flow<'a> {
    Normal,
    Return(Obj<'a>),
    Break,
    Continue,
}

/// The evaluator's state.
pub(super) struct Interp<'a> {
    pub(super) base_dir: &'a Path,
    pub(super) graph: Graph,
    globals: HashMap<String, Obj<'a>>,
    /// Local scopes of running functions and comprehensions (innermost last).
    frames: Vec<HashMap<String, Obj<'a>>>,
    pub(super) datasets: Vec<DatasetState>,
    pub(super) measures: Vec<MeasuresState>,
    pub(super) claimed_permissions: Vec<String>,
    /// Where the call being evaluated starts (for errors found later, such as population
    /// rules checked when the dataset is complete).
    pub(super) call_at: TextSize,
    steps: u64,
    items_created: u64,
    call_depth: usize,
    expr_depth: usize,
}

/// Evaluates a module's statements.
fn execute<'a>(body: &'a [Stmt], base_dir: &'a Path) -> R<Interp<'a>> {
    let mut interp = Interp {
        base_dir,
        graph: Graph::new(),
        globals: HashMap::new(),
        frames: Vec::new(),
        datasets: Vec::new(),
        measures: Vec::new(),
        claimed_permissions: Vec::new(),
        call_at: TextSize::new(0),
        steps: 0,
        items_created: 0,
        call_depth: 0,
        expr_depth: 0,
    };
    match interp.exec_block(body)? {
        Flow::Normal => {}
        Flow::Return(_) => unreachable_flow(body, "'return' outside function")?,
        Flow::Break | Flow::Continue => {
            unreachable_flow(body, "'break' or 'continue' outside a loop")?
        }
    }
    Ok(interp)
}

/// Evaluates a module and builds its dataset.
pub(super) fn run<'a>(body: &'a [Stmt], base_dir: &'a Path) -> R<Definition> {
    let mut interp = execute(body, base_dir)?;
    let end = body.last().map_or(TextSize::new(0), |s| s.start());
    let Some(Obj::Dataset(index)) = interp.globals.get("dataset").cloned() else {
        return Err(Fail {
            at: end,
            kind: ErrorKind::Dataset(
                "Did not find a variable called 'dataset' in dataset definition file".into(),
            ),
        });
    };
    let state = std::mem::take(&mut interp.datasets[index]);
    let Some((population, population_at)) = state.population else {
        return Err(Fail {
            at: end,
            kind: ErrorKind::Dataset(
                "A population has not been defined; define one with define_population()".into(),
            ),
        });
    };
    let dataset =
        Dataset::new(interp.graph, population, state.variables, state.events).map_err(|e| {
            Fail {
                at: population_at,
                kind: ErrorKind::Query(e),
            }
        })?;
    Ok(Definition {
        dataset,
        dummy_data_config: state.dummy_data_config,
        claimed_permissions: interp.claimed_permissions,
    })
}

/// Evaluates a measures definition module and returns its `measures` collection.
pub(super) fn run_measures<'a>(body: &'a [Stmt], base_dir: &'a Path) -> R<MeasuresDefinition> {
    let mut interp = execute(body, base_dir)?;
    let end = body.last().map_or(TextSize::new(0), |s| s.start());
    let index = match interp.globals.get("measures") {
        Some(Obj::Measures(index)) => *index,
        Some(_) => {
            return Err(Fail {
                at: end,
                kind: ErrorKind::Dataset("'measures' must be an instance of ehrql.Measures".into()),
            });
        }
        None => {
            return Err(Fail {
                at: end,
                kind: ErrorKind::Dataset(
                    "Did not find a variable called 'measures' in measures definition file".into(),
                ),
            });
        }
    };
    let state = std::mem::take(&mut interp.measures[index]);
    if state.measures.is_empty() {
        return Err(Fail {
            at: end,
            kind: ErrorKind::Dataset("No measures defined".into()),
        });
    }
    Ok(MeasuresDefinition {
        graph: interp.graph,
        measures: state.measures,
        dummy_data_config: state.dummy_data_config,
        disclosure_control: state.disclosure_control,
        claimed_permissions: interp.claimed_permissions,
    })
}

fn unreachable_flow(body: &[Stmt], message: &str) -> R<()> {
    Err(Fail {
        at: body.first().map_or(TextSize::new(0), |s| s.start()),
        kind: ErrorKind::Invalid(message.into()),
    })
}

fn not_supported<T>(at: TextSize, what: &str) -> R<T> {
    Err(Fail {
        at,
        kind: ErrorKind::NotSupported(what.into()),
    })
}

/// Names Python provides without an import that a definition may use.
fn python_builtin(name: &str) -> Option<Builtin> {
    Some(match name {
        "len" => Builtin::Len,
        "range" => Builtin::Range,
        "str" => Builtin::Str,
        "int" => Builtin::Int,
        "float" => Builtin::Float,
        "bool" => Builtin::Bool,
        "list" => Builtin::List,
        "tuple" => Builtin::Tuple,
        "dict" => Builtin::Dict,
        "set" | "frozenset" => Builtin::Set,
        "sorted" => Builtin::Sorted,
        "reversed" => Builtin::Reversed,
        "enumerate" => Builtin::Enumerate,
        "zip" => Builtin::Zip,
        "min" => Builtin::Min,
        "max" => Builtin::Max,
        "abs" => Builtin::Abs,
        "sum" => Builtin::Sum,
        "any" => Builtin::Any,
        "all" => Builtin::All,
        "print" => Builtin::Print,
        "getattr" => Builtin::Getattr,
        _ => return None,
    })
}

/// Python builtins that reach outside the definition; named in the refusal so the researcher
/// knows why.
const FORBIDDEN_BUILTINS: &[&str] = &[
    "open",
    "exec",
    "eval",
    "compile",
    "__import__",
    "input",
    "globals",
    "locals",
    "vars",
    "setattr",
    "delattr",
    "breakpoint",
    "exit",
    "quit",
    "type",
    "object",
    "super",
    "memoryview",
    "help",
    "dir",
    "id",
    "hash",
];

impl<'a> Interp<'a> {
    fn step(&mut self, at: TextSize) -> R<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(Fail {
                at,
                kind: ErrorKind::Limit(format!(
                    "the definition runs too long (more than {MAX_STEPS} steps)"
                )),
            });
        }
        Ok(())
    }

    /// Counts the values a new collection holds against [`MAX_ITEMS_CREATED`].
    fn charge(&mut self, value: &Obj<'a>, at: TextSize) -> R<()> {
        let n = match value {
            Obj::List(items) => items.borrow().len(),
            Obj::Tuple(items) | Obj::Set(items) => items.len(),
            Obj::Dict(pairs) => pairs.borrow().len(),
            Obj::Str(s) => s.len() / 16,
            _ => 0,
        };
        self.items_created = self.items_created.saturating_add(n as u64);
        if self.items_created > MAX_ITEMS_CREATED {
            return Err(Fail {
                at,
                kind: ErrorKind::Limit(format!(
                    "the definition builds too much data (more than {MAX_ITEMS_CREATED} values)"
                )),
            });
        }
        Ok(())
    }

    fn exec_block(&mut self, body: &'a [Stmt]) -> R<Flow<'a>> {
        for stmt in body {
            match self.exec(stmt)? {
                Flow::Normal => {}
                other => return Ok(other),
            }
        }
        Ok(Flow::Normal)
    }

    fn exec(&mut self, stmt: &'a Stmt) -> R<Flow<'a>> {
        let at = stmt.start();
        self.step(at)?;
        match stmt {
            Stmt::Import(s) => {
                for alias in &s.names {
                    let name = alias.name.id.as_str();
                    let module = import_module(name).at(alias.start())?;
                    match &alias.asname {
                        Some(asname) => self.assign_name(asname.id.as_str(), Obj::Module(module)),
                        None => {
                            // `import ehrql.tables.core` binds `ehrql`, as in Python.
                            let first = name.split('.').next().unwrap_or(name);
                            let top = import_module(first).at(alias.start())?;
                            self.assign_name(first, Obj::Module(top));
                        }
                    }
                }
            }
            Stmt::ImportFrom(s) => {
                if s.level > 0 {
                    return not_supported(at, "a relative import");
                }
                let Some(module_name) = &s.module else {
                    return not_supported(at, "this import");
                };
                let module = import_module(module_name.id.as_str()).at(module_name.start())?;
                for alias in &s.names {
                    let name = alias.name.id.as_str();
                    if name == "*" {
                        return not_supported(
                            alias.start(),
                            "'import *' (name each thing you import)",
                        );
                    }
                    let value = self.module_attr(&module, name).at(alias.start())?;
                    let bound = alias.asname.as_ref().map_or(name, |a| a.id.as_str());
                    self.assign_name(bound, value);
                }
            }
            Stmt::Assign(s) => {
                let value = self.eval(&s.value)?;
                for target in &s.targets {
                    self.assign(target, value.clone())?;
                }
            }
            Stmt::AnnAssign(s) => {
                if let Some(value) = &s.value {
                    let value = self.eval(value)?;
                    self.assign(&s.target, value)?;
                }
            }
            Stmt::AugAssign(s) => {
                let current = self.eval(&s.target)?;
                let value = self.eval(&s.value)?;
                let result = self.binop(s.op, current, value).at(s.start())?;
                self.charge(&result, at)?;
                self.assign(&s.target, result)?;
            }
            Stmt::Expr(s) => {
                self.eval(&s.value)?;
            }
            Stmt::If(s) => {
                let test = self.eval(&s.test)?;
                if truthy(&test).at(s.test.start())? {
                    return self.exec_block(&s.body);
                }
                for clause in &s.elif_else_clauses {
                    let taken = match &clause.test {
                        Some(test) => {
                            let value = self.eval(test)?;
                            truthy(&value).at(test.start())?
                        }
                        None => true,
                    };
                    if taken {
                        return self.exec_block(&clause.body);
                    }
                }
            }
            Stmt::For(s) => {
                if s.is_async {
                    return not_supported(at, "'async for'");
                }
                let iterable = self.eval(&s.iter)?;
                let items = iterate(&iterable).at(s.iter.start())?;
                let mut broke = false;
                for item in items {
                    self.step(at)?;
                    self.assign(&s.target, item)?;
                    match self.exec_block(&s.body)? {
                        Flow::Normal | Flow::Continue => {}
                        Flow::Break => {
                            broke = true;
                            break;
                        }
                        ret @ Flow::Return(_) => return Ok(ret),
                    }
                }
                if !broke {
                    return self.exec_block(&s.orelse);
                }
            }
            Stmt::FunctionDef(s) => {
                if s.is_async {
                    return not_supported(at, "'async def'");
                }
                if !s.decorator_list.is_empty() {
                    return not_supported(at, "a decorator");
                }
                let p = &s.parameters;
                if p.vararg.is_some() || p.kwarg.is_some() || !p.posonlyargs.is_empty() {
                    return not_supported(
                        s.parameters.start(),
                        "'*args', '**kwargs' or '/' in a function definition",
                    );
                }
                self.assign_name(s.name.id.as_str(), Obj::Function(s));
            }
            Stmt::Return(s) => {
                if self.call_depth == 0 {
                    return Err(Fail {
                        at,
                        kind: ErrorKind::Invalid("'return' outside function".into()),
                    });
                }
                let value = match &s.value {
                    Some(v) => self.eval(v)?,
                    None => Obj::None,
                };
                return Ok(Flow::Return(value));
            }
            Stmt::Pass(_) => {}
            Stmt::Break(_) => return Ok(Flow::Break),
            Stmt::Continue(_) => return Ok(Flow::Continue),
            Stmt::Assert(s) => {
                let test = self.eval(&s.test)?;
                if !truthy(&test).at(s.test.start())? {
                    let message = match &s.msg {
                        Some(m) => format!("assertion failed: {}", self.eval(m)?.to_text()),
                        None => "assertion failed".into(),
                    };
                    return Err(Fail {
                        at,
                        kind: ErrorKind::Invalid(message),
                    });
                }
            }
            Stmt::ClassDef(_) => return not_supported(at, "defining a class"),
            Stmt::While(_) => {
                return not_supported(at, "a 'while' loop (use 'for' over a list or range())");
            }
            Stmt::With(_) => return not_supported(at, "a 'with' statement"),
            Stmt::Try(_) => return not_supported(at, "'try'"),
            Stmt::Raise(_) => return not_supported(at, "'raise'"),
            Stmt::Delete(_) => return not_supported(at, "'del'"),
            Stmt::Global(_) | Stmt::Nonlocal(_) => {
                return not_supported(at, "'global' or 'nonlocal'");
            }
            Stmt::Match(_) => return not_supported(at, "'match'"),
            Stmt::TypeAlias(_) => return not_supported(at, "a type alias"),
            Stmt::IpyEscapeCommand(_) => return not_supported(at, "an IPython command"),
        }
        Ok(Flow::Normal)
    }

    pub(super) fn assign_name(&mut self, name: &str, value: Obj<'a>) {
        match self.frames.last_mut() {
            Some(frame) => frame.insert(name.to_string(), value),
            None => self.globals.insert(name.to_string(), value),
        };
    }

    fn assign(&mut self, target: &'a Expr, value: Obj<'a>) -> R<()> {
        match target {
            Expr::Name(n) => {
                self.assign_name(n.id.as_str(), value);
                Ok(())
            }
            Expr::Attribute(a) => {
                let object = self.eval(&a.value)?;
                match object {
                    Obj::Dataset(index) => self
                        .add_variable(index, a.attr.id.as_str(), value)
                        .at(target.start()),
                    other => Err(Fail {
                        at: target.start(),
                        kind: ErrorKind::Type(format!(
                            "cannot set attributes on {}",
                            other.describe()
                        )),
                    }),
                }
            }
            Expr::Tuple(ast::ExprTuple { elts, .. }) | Expr::List(ast::ExprList { elts, .. }) => {
                let items = iterate(&value).at(target.start())?;
                if items.len() != elts.len() {
                    return Err(Fail {
                        at: target.start(),
                        kind: ErrorKind::Invalid(format!(
                            "cannot unpack {} values into {} names",
                            items.len(),
                            elts.len()
                        )),
                    });
                }
                for (t, v) in elts.iter().zip(items) {
                    self.assign(t, v)?;
                }
                Ok(())
            }
            Expr::Subscript(s) => {
                let container = self.eval(&s.value)?;
                let key = self.eval(&s.slice)?;
                super::builtins::set_item(&container, key, value).at(target.start())
            }
            _ => not_supported(target.start(), "this assignment target"),
        }
    }

    fn lookup(&self, name: &str, at: TextSize) -> R<Obj<'a>> {
        if let Some(v) = self.frames.last().and_then(|f| f.get(name)) {
            return Ok(v.clone());
        }
        if let Some(v) = self.globals.get(name) {
            return Ok(v.clone());
        }
        if let Some(b) = python_builtin(name) {
            return Ok(Obj::Builtin(b));
        }
        if FORBIDDEN_BUILTINS.contains(&name) {
            return not_supported(at, &format!("'{name}'"));
        }
        Err(Fail {
            at,
            kind: ErrorKind::UnknownName(name.to_string()),
        })
    }

    pub(super) fn eval(&mut self, expr: &'a Expr) -> R<Obj<'a>> {
        self.expr_depth += 1;
        let result = if self.expr_depth > MAX_EXPR_DEPTH {
            Err(Fail {
                at: expr.start(),
                kind: ErrorKind::Limit("the expression is nested too deeply".into()),
            })
        } else {
            self.eval_inner(expr)
        };
        self.expr_depth -= 1;
        result
    }

    fn eval_inner(&mut self, expr: &'a Expr) -> R<Obj<'a>> {
        let at = expr.start();
        match expr {
            Expr::NoneLiteral(_) => Ok(Obj::None),
            Expr::BooleanLiteral(b) => Ok(Obj::Bool(b.value)),
            Expr::NumberLiteral(n) => match &n.value {
                Number::Int(i) => match i.as_i64() {
                    Some(i) => Ok(Obj::Int(i)),
                    None => Err(Fail {
                        at,
                        kind: ErrorKind::Limit("the integer is too large".into()),
                    }),
                },
                Number::Float(f) => Ok(Obj::Float(*f)),
                Number::Complex { .. } => not_supported(at, "a complex number"),
            },
            Expr::StringLiteral(s) => Ok(Obj::str(s.value.to_str())),
            Expr::FString(f) => self.fstring(f).map(|s| Obj::str(&s)),
            Expr::Name(n) => self.lookup(n.id.as_str(), at),
            Expr::List(l) => {
                let items = self.eval_elements(&l.elts)?;
                Ok(Obj::list(items))
            }
            Expr::Tuple(t) => {
                let items = self.eval_elements(&t.elts)?;
                Ok(Obj::Tuple(items.into()))
            }
            Expr::Set(s) => {
                let items = self.eval_elements(&s.elts)?;
                super::builtins::make_set(items).at(at)
            }
            Expr::Dict(d) => {
                let mut pairs = Vec::new();
                for item in &d.items {
                    let value = self.eval(&item.value)?;
                    match &item.key {
                        Some(k) => {
                            let key = self.eval(k)?;
                            super::builtins::dict_insert(&mut pairs, key, value).at(k.start())?;
                        }
                        None => {
                            let Obj::Dict(other) = value else {
                                return Err(Fail {
                                    at: item.value.start(),
                                    kind: ErrorKind::Type("'**' needs a dict".into()),
                                });
                            };
                            for (k, v) in other.borrow().iter() {
                                super::builtins::dict_insert(&mut pairs, k.clone(), v.clone())
                                    .at(at)?;
                            }
                        }
                    }
                }
                Ok(Obj::Dict(Rc::new(std::cell::RefCell::new(pairs))))
            }
            Expr::ListComp(c) => {
                let mut out = Vec::new();
                self.comprehension(&c.generators, &mut |me| {
                    out.push(me.eval(&c.elt)?);
                    Ok(())
                })?;
                Ok(Obj::list(out))
            }
            Expr::Generator(c) => {
                let mut out = Vec::new();
                self.comprehension(&c.generators, &mut |me| {
                    out.push(me.eval(&c.elt)?);
                    Ok(())
                })?;
                Ok(Obj::list(out))
            }
            Expr::SetComp(c) => {
                let mut out = Vec::new();
                self.comprehension(&c.generators, &mut |me| {
                    out.push(me.eval(&c.elt)?);
                    Ok(())
                })?;
                super::builtins::make_set(out).at(at)
            }
            Expr::DictComp(c) => {
                let mut pairs = Vec::new();
                self.comprehension(&c.generators, &mut |me| {
                    let key = me.eval(&c.key)?;
                    let value = me.eval(&c.value)?;
                    super::builtins::dict_insert(&mut pairs, key, value).at(c.key.start())
                })?;
                Ok(Obj::Dict(Rc::new(std::cell::RefCell::new(pairs))))
            }
            Expr::If(e) => {
                let test = self.eval(&e.test)?;
                if truthy(&test).at(e.test.start())? {
                    self.eval(&e.body)
                } else {
                    self.eval(&e.orelse)
                }
            }
            Expr::BoolOp(b) => {
                let mut result = Obj::None;
                for (i, v) in b.values.iter().enumerate() {
                    result = self.eval(v)?;
                    let is_true = truthy(&result).map_err(|_| Fail {
                        at: v.start(),
                        kind: ErrorKind::Type(format!(
                            "'{}' cannot be used with ehrQL series: use '{}' instead",
                            if b.op == BoolOp::And { "and" } else { "or" },
                            if b.op == BoolOp::And { "&" } else { "|" },
                        )),
                    })?;
                    let last = i + 1 == b.values.len();
                    if last {
                        break;
                    }
                    if (b.op == BoolOp::And) != is_true {
                        break;
                    }
                }
                Ok(result)
            }
            Expr::UnaryOp(u) => {
                let operand = self.eval(&u.operand)?;
                if u.op == UnaryOp::Not {
                    let is_true = truthy(&operand).map_err(|_| Fail {
                        at,
                        kind: ErrorKind::Type(
                            "'not' cannot be used with ehrQL series: use '~' instead".into(),
                        ),
                    })?;
                    return Ok(Obj::Bool(!is_true));
                }
                self.unary(u.op, operand).at(at)
            }
            Expr::BinOp(b) => {
                let left = self.eval(&b.left)?;
                let right = self.eval(&b.right)?;
                let result = self.binop(b.op, left, right).at(at)?;
                self.charge(&result, at)?;
                Ok(result)
            }
            Expr::Compare(c) => {
                let mut left = self.eval(&c.left)?;
                if c.ops.len() == 1 {
                    let right = self.eval(&c.comparators[0])?;
                    return self.compare(c.ops[0], left, right).at(at);
                }
                // A chain `a < b < c` is `a < b and b < c`: plain values only.
                for (op, right) in c.ops.iter().zip(c.comparators.iter()) {
                    let right_value = self.eval(right)?;
                    let result = self.compare(*op, left, right_value.clone()).at(at)?;
                    let is_true = truthy(&result).map_err(|_| Fail {
                        at,
                        kind: ErrorKind::Type(
                            "chained comparisons cannot be used with ehrQL series: combine two comparisons with '&'".into(),
                        ),
                    })?;
                    if !is_true {
                        return Ok(Obj::Bool(false));
                    }
                    left = right_value;
                }
                Ok(Obj::Bool(true))
            }
            Expr::Attribute(a) => {
                let object = self.eval(&a.value)?;
                self.get_attr(object, a.attr.id.as_str()).at(a.attr.start())
            }
            Expr::Subscript(s) => {
                if let Expr::Slice(slice) = &*s.slice {
                    let container = self.eval(&s.value)?;
                    let mut bound = |e: &'a Option<Box<Expr>>| -> R<Option<i64>> {
                        match e {
                            None => Ok(None),
                            Some(e) => match self.eval(e)? {
                                Obj::Int(i) => Ok(Some(i)),
                                Obj::None => Ok(None),
                                other => Err(Fail {
                                    at: e.start(),
                                    kind: ErrorKind::Type(format!(
                                        "slice bounds must be ints, not {}",
                                        other.describe()
                                    )),
                                }),
                            },
                        }
                    };
                    let lower = bound(&slice.lower)?;
                    let upper = bound(&slice.upper)?;
                    if slice.step.is_some() {
                        return not_supported(at, "a slice step");
                    }
                    return super::builtins::slice(&container, lower, upper).at(at);
                }
                let container = self.eval(&s.value)?;
                let key = self.eval(&s.slice)?;
                super::builtins::get_item(&container, &key).at(at)
            }
            Expr::Call(c) => {
                let func = self.eval(&c.func)?;
                let mut args = Args::default();
                for arg in &c.arguments.args {
                    if let Expr::Starred(s) = arg {
                        let value = self.eval(&s.value)?;
                        args.positional.extend(iterate(&value).at(s.start())?);
                    } else {
                        args.positional.push(self.eval(arg)?);
                    }
                }
                for keyword in &c.arguments.keywords {
                    let value = self.eval(&keyword.value)?;
                    match &keyword.arg {
                        Some(name) => args.keywords.push((name.id.to_string(), value)),
                        None => {
                            let Obj::Dict(pairs) = value else {
                                return Err(Fail {
                                    at: keyword.start(),
                                    kind: ErrorKind::Type("'**' needs a dict".into()),
                                });
                            };
                            for (k, v) in pairs.borrow().iter() {
                                let Obj::Str(k) = k else {
                                    return Err(Fail {
                                        at: keyword.start(),
                                        kind: ErrorKind::Type("keywords must be strings".into()),
                                    });
                                };
                                args.keywords.push((k.to_string(), v.clone()));
                            }
                        }
                    }
                }
                self.call(func, args, at)
            }
            Expr::Starred(_) => not_supported(at, "'*' here"),
            Expr::Slice(_) => not_supported(at, "a slice here"),
            Expr::Named(_) => not_supported(at, "the ':=' operator"),
            Expr::Lambda(_) => not_supported(at, "'lambda' (define a function with 'def')"),
            Expr::Await(_) => not_supported(at, "'await'"),
            Expr::Yield(_) | Expr::YieldFrom(_) => not_supported(at, "'yield'"),
            Expr::TString(_) => not_supported(at, "a template string"),
            Expr::BytesLiteral(_) => not_supported(at, "a bytes literal"),
            Expr::EllipsisLiteral(_) => not_supported(at, "'...'"),
            Expr::IpyEscapeCommand(_) => not_supported(at, "an IPython command"),
        }
    }

    fn eval_elements(&mut self, elts: &'a [Expr]) -> R<Vec<Obj<'a>>> {
        let mut items = Vec::with_capacity(elts.len());
        for e in elts {
            if let Expr::Starred(s) = e {
                let value = self.eval(&s.value)?;
                items.extend(iterate(&value).at(s.start())?);
            } else {
                items.push(self.eval(e)?);
            }
        }
        Ok(items)
    }

    /// Runs `body` once per combination of the generators' items, in a scope of its own (as
    /// Python 3 does) that still sees the enclosing function's variables.
    fn comprehension(
        &mut self,
        generators: &'a [ast::Comprehension],
        body: &mut dyn FnMut(&mut Interp<'a>) -> R<()>,
    ) -> R<()> {
        let scope = self.frames.last().cloned().unwrap_or_default();
        self.frames.push(scope);
        let result = self.comprehension_level(generators, body);
        self.frames.pop();
        result
    }

    fn comprehension_level(
        &mut self,
        generators: &'a [ast::Comprehension],
        body: &mut dyn FnMut(&mut Interp<'a>) -> R<()>,
    ) -> R<()> {
        let Some((first, rest)) = generators.split_first() else {
            return body(self);
        };
        if first.is_async {
            return not_supported(first.start(), "'async for'");
        }
        let iterable = self.eval(&first.iter)?;
        'items: for item in iterate(&iterable).at(first.iter.start())? {
            self.step(first.start())?;
            self.assign(&first.target, item)?;
            for condition in &first.ifs {
                let value = self.eval(condition)?;
                if !truthy(&value).at(condition.start())? {
                    continue 'items;
                }
            }
            self.comprehension_level(rest, body)?;
        }
        Ok(())
    }

    fn fstring(&mut self, f: &'a ast::ExprFString) -> R<String> {
        let mut out = String::new();
        for part in f.value.iter() {
            match part {
                ast::FStringPart::Literal(s) => out.push_str(&s.value),
                ast::FStringPart::FString(fs) => self.fstring_elements(&fs.elements, &mut out)?,
            }
        }
        Ok(out)
    }

    fn fstring_elements(
        &mut self,
        elements: &'a ast::InterpolatedStringElements,
        out: &mut String,
    ) -> R<()> {
        for element in elements.iter() {
            match element {
                ast::InterpolatedStringElement::Literal(l) => out.push_str(&l.value),
                ast::InterpolatedStringElement::Interpolation(i) => {
                    let value = self.eval(&i.expression)?;
                    if i.debug_text.is_some() {
                        return not_supported(i.start(), "the '=' specifier in an f-string");
                    }
                    let mut spec = String::new();
                    if let Some(format_spec) = &i.format_spec {
                        self.fstring_elements(&format_spec.elements, &mut spec)?;
                    }
                    let text = match i.conversion {
                        ast::ConversionFlag::Repr => value.repr(),
                        _ => super::builtins::format_value(&value, &spec).at(i.start())?,
                    };
                    out.push_str(&text);
                }
            }
        }
        Ok(())
    }

    fn call(&mut self, func: Obj<'a>, args: Args<'a>, at: TextSize) -> R<Obj<'a>> {
        self.call_at = at;
        match func {
            Obj::Function(def) => self.call_user(def, args, at),
            Obj::Builtin(b) => {
                let result = self.call_builtin(b, args).at(at)?;
                self.charge(&result, at)?;
                Ok(result)
            }
            Obj::Method(m) => {
                let (receiver, name) = (*m).clone();
                let result = self.call_method(receiver, &name, args).at(at)?;
                self.charge(&result, at)?;
                Ok(result)
            }
            other => Err(Fail {
                at,
                kind: ErrorKind::Type(format!("{} is not callable", other.describe())),
            }),
        }
    }

    /// Calls a function defined in the file, binding arguments as Python does.
    fn call_user(
        &mut self,
        def: &'a ast::StmtFunctionDef,
        args: Args<'a>,
        at: TextSize,
    ) -> R<Obj<'a>> {
        if self.call_depth >= MAX_CALL_DEPTH {
            return Err(Fail {
                at,
                kind: ErrorKind::Limit(format!(
                    "functions call each other too deeply (more than {MAX_CALL_DEPTH} levels)"
                )),
            });
        }
        let name = def.name.id.as_str();
        let params: Vec<&'a ast::ParameterWithDefault> = def
            .parameters
            .args
            .iter()
            .chain(def.parameters.kwonlyargs.iter())
            .collect();
        let n_positional = def.parameters.args.len();
        if args.positional.len() > n_positional {
            return Err(Fail {
                at,
                kind: ErrorKind::Type(format!(
                    "{name}() takes {n_positional} positional arguments but {} were given",
                    args.positional.len()
                )),
            });
        }
        let mut values: Vec<Option<Obj<'a>>> = vec![None; params.len()];
        for (i, v) in args.positional.into_iter().enumerate() {
            values[i] = Some(v);
        }
        for (keyword, v) in args.keywords {
            let Some(i) = params.iter().position(|p| p.name().id.as_str() == keyword) else {
                return Err(Fail {
                    at,
                    kind: ErrorKind::Type(format!(
                        "{name}() got an unexpected keyword argument '{keyword}'"
                    )),
                });
            };
            if values[i].is_some() {
                return Err(Fail {
                    at,
                    kind: ErrorKind::Type(format!(
                        "{name}() got multiple values for argument '{keyword}'"
                    )),
                });
            }
            values[i] = Some(v);
        }
        let mut frame = HashMap::new();
        for (param, value) in params.iter().zip(values) {
            let value = match (value, param.default()) {
                (Some(v), _) => v,
                (None, Some(default)) => self.eval(default)?,
                (None, None) => {
                    return Err(Fail {
                        at,
                        kind: ErrorKind::Type(format!(
                            "{name}() missing required argument '{}'",
                            param.name().id
                        )),
                    });
                }
            };
            frame.insert(param.name().id.to_string(), value);
        }
        self.frames.push(frame);
        self.call_depth += 1;
        // Inner function bodies see only their own variables and the module's (no closures
        // over an enclosing function: definitions do not need them).
        let saved_expr_depth = self.expr_depth;
        let result = self.exec_block(&def.body);
        self.expr_depth = saved_expr_depth;
        self.call_depth -= 1;
        self.frames.pop();
        match result? {
            Flow::Return(v) => Ok(v),
            Flow::Normal => Ok(Obj::None),
            Flow::Break | Flow::Continue => Err(Fail {
                at: def.start(),
                kind: ErrorKind::Invalid("'break' or 'continue' outside a loop".into()),
            }),
        }
    }

    /// The attribute `name` of an importable module.
    fn module_attr(&mut self, module: &Module, name: &str) -> Result<Obj<'a>, ErrorKind> {
        super::builtins::module_attr(self, module, name)
    }
}

/// The module imported by `import name` / `from name import …`.
fn import_module(name: &str) -> Result<Module, ErrorKind> {
    match name {
        "ehrql" => Ok(Module::Ehrql),
        "ehrql.codes" => Ok(Module::Codes),
        "datetime" => Ok(Module::Datetime),
        _ if name == "ehrql.tables" || name.starts_with("ehrql.tables.") => {
            Ok(Module::Tables(name.into()))
        }
        _ => Err(ErrorKind::ImportNotAllowed(name.to_string())),
    }
}

/// Python truthiness of a plain value; ehrQL objects have none (the reference raises too).
pub(super) fn truthy(value: &Obj<'_>) -> Result<bool, ErrorKind> {
    Ok(match value {
        Obj::None => false,
        Obj::Bool(b) => *b,
        Obj::Int(i) => *i != 0,
        Obj::Float(f) => *f != 0.0,
        Obj::Str(s) => !s.is_empty(),
        Obj::List(items) => !items.borrow().is_empty(),
        Obj::Tuple(items) | Obj::Set(items) => !items.is_empty(),
        Obj::Dict(pairs) => !pairs.borrow().is_empty(),
        Obj::Series(_)
        | Obj::Frame(_)
        | Obj::DateDifference(_)
        | Obj::When(_)
        | Obj::WhenThen(_) => {
            return Err(ErrorKind::Type(
                "the truth value of an ehrQL series is not defined: use '&', '|' and '~' instead of 'and', 'or' and 'not', and case(when(...)) instead of 'if'".into(),
            ));
        }
        _ => true,
    })
}

/// The items a `for` loop or comprehension walks over.
pub(super) fn iterate<'a>(value: &Obj<'a>) -> Result<Vec<Obj<'a>>, ErrorKind> {
    match value {
        Obj::Series(_) | Obj::Frame(_) => Err(ErrorKind::Type(
            "ehrQL series and frames cannot be looped over: they hold values for every patient"
                .into(),
        )),
        other => other
            .items()
            .ok_or_else(|| ErrorKind::Type(format!("{} cannot be looped over", other.describe()))),
    }
}

/// Python ordering of plain values (numbers, strings, dates).
pub(super) fn plain_order<'a>(a: &Obj<'a>, b: &Obj<'a>) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Obj::Str(x), Obj::Str(y)) => Some(x.cmp(y)),
        (Obj::Date(x), Obj::Date(y)) => Some(x.cmp(y)),
        (Obj::Tuple(x), Obj::Tuple(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                if !plain_eq(p, q) {
                    return plain_order(p, q);
                }
            }
            Some(x.len().cmp(&y.len()))
        }
        _ => number(a)?.partial_cmp(&number(b)?),
    }
}
