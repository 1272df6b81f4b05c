//! The names a definition can call: ehrQL's functions (`create_dataset`, `case`, `when`,
//! durations, `maximum_of`, `codelist_from_csv`, code constructors), the importable modules'
//! contents, and the small part of Python's builtins and str/list/dict methods definitions use.
//! Every collection a definition builds is bounded in size.

use std::cell::RefCell;
use std::rc::Rc;

use rustpython_ruff_python_ast::{CmpOp, Operator};

use super::error::ErrorKind;
use super::interp::{Args, DatasetState, Interp, MeasuresState, iterate, plain_order, truthy};
use super::ops::fixed;
use super::value::{Builtin, DurationUnit, Module, Obj, number, plain_eq};
use crate::query_model::{CodeSystem, Date, FunctionOp};
use crate::tables;

type Result<T> = std::result::Result<T, ErrorKind>;

/// Largest list, string or range a definition may build.
const MAX_COLLECTION: usize = 1_000_000;

/// ehrQL exports this implementation does not provide, refused by name.
const UNSUPPORTED_EHRQL: &[&str] = &[
    "table_from_file",
    "get_parameter",
    "Error",
    "codelist_from_csv_lines",
];

/// The attribute `name` of an importable module.
pub(super) fn module_attr<'a>(
    interp: &mut Interp<'a>,
    module: &Module,
    name: &str,
) -> Result<Obj<'a>> {
    let found = match module {
        Module::Ehrql => match name {
            "create_dataset" | "Dataset" => Some(Obj::Builtin(Builtin::CreateDataset)),
            "create_measures" | "Measures" => Some(Obj::Builtin(Builtin::CreateMeasures)),
            "INTERVAL" => {
                let start = interp.graph.parameter(
                    crate::measures::INTERVAL_START,
                    crate::query_model::ScalarType::Date,
                );
                let end = interp.graph.parameter(
                    crate::measures::INTERVAL_END,
                    crate::query_model::ScalarType::Date,
                );
                Some(Obj::Interval(start, end))
            }
            "case" => Some(Obj::Builtin(Builtin::Case)),
            "when" => Some(Obj::Builtin(Builtin::When)),
            "days" => Some(Obj::Builtin(Builtin::Duration(DurationUnit::Days))),
            "weeks" => Some(Obj::Builtin(Builtin::Duration(DurationUnit::Weeks))),
            "months" => Some(Obj::Builtin(Builtin::Duration(DurationUnit::Months))),
            "years" => Some(Obj::Builtin(Builtin::Duration(DurationUnit::Years))),
            "maximum_of" => Some(Obj::Builtin(Builtin::MaximumOf)),
            "minimum_of" => Some(Obj::Builtin(Builtin::MinimumOf)),
            "codelist_from_csv" => Some(Obj::Builtin(Builtin::CodelistFromCsv)),
            "claim_permissions" => Some(Obj::Builtin(Builtin::ClaimPermissions)),
            "show" | "debug" => Some(Obj::Builtin(Builtin::Show)),
            "tables" => Some(Obj::Module(Module::Tables("ehrql.tables".into()))),
            "codes" => Some(Obj::Module(Module::Codes)),
            _ if UNSUPPORTED_EHRQL.contains(&name) => {
                return Err(ErrorKind::NotSupported(format!(
                    "'{name}' from ehrql (this implementation does not provide it)"
                )));
            }
            _ => None,
        },
        Module::Codes => CodeSystem::ALL
            .into_iter()
            .find(|c| c.class_name() == name)
            .map(|c| Obj::Builtin(Builtin::CodeType(c))),
        Module::Datetime => (name == "date").then_some(Obj::Builtin(Builtin::DateType)),
        Module::Tables(path) => {
            if let Some(table) = tables::lookup(path, name) {
                return Ok(Obj::Frame(interp.graph.select_table(table)));
            }
            let sub = format!("{path}.{name}");
            if tables::all_tables()
                .iter()
                .any(|t| t.module == sub || t.module.starts_with(&format!("{sub}.")))
            {
                return Ok(Obj::Module(Module::Tables(sub.into())));
            }
            let mut modules: Vec<String> = tables::all_tables()
                .iter()
                .map(|t| t.module.clone())
                .collect();
            modules.dedup();
            return Err(ErrorKind::Invalid(format!(
                "there is no table '{name}' in '{path}' (tables are available from: {})",
                modules.join(", ")
            )));
        }
    };
    let module_name = match module {
        Module::Ehrql => "ehrql".to_string(),
        Module::Codes => "ehrql.codes".to_string(),
        Module::Datetime => "datetime".to_string(),
        Module::Tables(path) => path.to_string(),
    };
    if *module == Module::Datetime {
        return found.ok_or_else(|| {
            ErrorKind::NotSupported(format!(
                "'datetime.{name}' (only datetime.date may be used)"
            ))
        });
    }
    found.ok_or_else(|| ErrorKind::NoAttribute {
        on: format!("module '{module_name}'"),
        name: name.to_string(),
    })
}

impl<'a> Interp<'a> {
    pub(super) fn call_builtin(&mut self, builtin: Builtin, args: Args<'a>) -> Result<Obj<'a>> {
        match builtin {
            Builtin::CreateDataset => {
                fixed::<0>(args.only_positional("create_dataset")?, "create_dataset")?;
                self.datasets.push(DatasetState::default());
                Ok(Obj::Dataset(self.datasets.len() - 1))
            }
            Builtin::CreateMeasures => {
                fixed::<0>(args.only_positional("create_measures")?, "create_measures")?;
                self.measures.push(MeasuresState::default());
                Ok(Obj::Measures(self.measures.len() - 1))
            }
            Builtin::When => {
                let [condition] = fixed::<1>(args.only_positional("when")?, "when")?;
                self.when(&condition)
            }
            Builtin::Case => {
                let otherwise = args
                    .keywords
                    .iter()
                    .find(|(k, _)| k == "otherwise")
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Obj::None);
                if let Some((k, _)) = args.keywords.iter().find(|(k, _)| k != "otherwise") {
                    return Err(ErrorKind::Type(format!(
                        "case() got an unexpected keyword argument '{k}'"
                    )));
                }
                if args.positional.is_empty() {
                    return Err(ErrorKind::Type(
                        "case() needs at least one when(...).then(...)".into(),
                    ));
                }
                let mut clauses = Vec::new();
                for clause in args.positional {
                    let Obj::WhenThen(clause) = clause else {
                        return Err(ErrorKind::Type(format!(
                            "case() arguments must be when(...).then(...), not {}",
                            clause.describe()
                        )));
                    };
                    clauses.push((*clause).clone());
                }
                self.build_case(clauses, otherwise)
            }
            Builtin::Duration(unit) => {
                let [amount] = fixed::<1>(args.only_positional(unit.name())?, unit.name())?;
                match &amount {
                    Obj::Int(_) => {}
                    Obj::Series(n)
                        if self.graph.scalar_type(*n)
                            == Some(crate::query_model::ScalarType::Int) => {}
                    other => {
                        return Err(ErrorKind::Type(format!(
                            "{}() needs an int or an int series, not {}",
                            unit.name(),
                            other.describe()
                        )));
                    }
                }
                Ok(Obj::Duration(unit, Box::new(amount)))
            }
            Builtin::MaximumOf | Builtin::MinimumOf => {
                let name = if builtin == Builtin::MaximumOf {
                    "maximum_of"
                } else {
                    "minimum_of"
                };
                let values = args.only_positional(name)?;
                let op = if builtin == Builtin::MaximumOf {
                    FunctionOp::MaximumOf
                } else {
                    FunctionOp::MinimumOf
                };
                self.horizontal(op, &values)
            }
            Builtin::CodelistFromCsv => {
                let bound = args.bind(
                    "codelist_from_csv",
                    &["filename", "column", "category_column"],
                    1,
                )?;
                let mut bound = bound.into_iter().map(|v| v.unwrap_or(Obj::None));
                let filename = bound.next().unwrap_or(Obj::None);
                let column = bound.next().unwrap_or(Obj::None);
                let category = bound.next().unwrap_or(Obj::None);
                let text = |o: Obj<'a>, what: &str| -> Result<Option<Rc<str>>> {
                    match o {
                        Obj::Str(s) => Ok(Some(s)),
                        Obj::None => Ok(None),
                        other => Err(ErrorKind::Type(format!(
                            "codelist_from_csv() needs {what} as a string, not {}",
                            other.describe()
                        ))),
                    }
                };
                let Some(filename) = text(filename, "the file name")? else {
                    return Err(ErrorKind::Type(
                        "codelist_from_csv() needs the file name as a string".into(),
                    ));
                };
                let column = text(column, "column")?.unwrap_or_else(|| "code".into());
                let category = text(category, "category_column")?;
                let codelist =
                    super::codelist::read(self.base_dir, &filename, &column, category.as_deref())?;
                Ok(match codelist {
                    super::codelist::Codelist::Codes(codes) => {
                        Obj::list(codes.iter().map(|c| Obj::str(c)).collect())
                    }
                    super::codelist::Codelist::Categories(pairs) => {
                        Obj::Dict(Rc::new(RefCell::new(
                            pairs
                                .iter()
                                .map(|(c, k)| (Obj::str(c), Obj::str(k)))
                                .collect(),
                        )))
                    }
                })
            }
            Builtin::ClaimPermissions => {
                for permission in args.only_positional("claim_permissions")? {
                    let Obj::Str(p) = permission else {
                        return Err(ErrorKind::Type(
                            "claim_permissions() needs permission names as strings".into(),
                        ));
                    };
                    self.claimed_permissions.push(p.to_string());
                }
                Ok(Obj::None)
            }
            Builtin::Show | Builtin::Print => Ok(Obj::None),
            Builtin::CodeType(system) => {
                let [code] = fixed::<1>(
                    args.only_positional(system.class_name())?,
                    system.class_name(),
                )?;
                let Obj::Str(code) = code else {
                    return Err(ErrorKind::Type(format!(
                        "{}() needs a string",
                        system.class_name()
                    )));
                };
                if !system.is_valid(&code) {
                    return Err(ErrorKind::Invalid(format!(
                        "'{code}' is not a valid {} code",
                        system.class_name()
                    )));
                }
                Ok(Obj::Code(system, code))
            }
            Builtin::DateType => {
                let [y, m, d] = fixed::<3>(args.only_positional("date")?, "date")?;
                let (Obj::Int(y), Obj::Int(m), Obj::Int(d)) = (y, m, d) else {
                    return Err(ErrorKind::Type("date() needs three ints".into()));
                };
                let date = i32::try_from(y)
                    .ok()
                    .zip(u32::try_from(m).ok())
                    .zip(u32::try_from(d).ok())
                    .and_then(|((y, m), d)| Date::from_ymd(y, m, d));
                date.map(Obj::Date).ok_or_else(|| {
                    ErrorKind::Invalid(format!("date({y}, {m}, {d}) is not a valid date"))
                })
            }
            _ => python_builtin(self, builtin, args),
        }
    }
}

fn python_builtin<'a>(
    interp: &mut Interp<'a>,
    builtin: Builtin,
    args: Args<'a>,
) -> Result<Obj<'a>> {
    let name = format!("{builtin:?}").to_lowercase();
    match builtin {
        Builtin::Len => {
            let [v] = fixed::<1>(args.only_positional("len")?, "len")?;
            let n = match &v {
                Obj::Str(s) => s.chars().count(),
                Obj::List(items) => items.borrow().len(),
                Obj::Tuple(items) | Obj::Set(items) => items.len(),
                Obj::Dict(pairs) => pairs.borrow().len(),
                other => {
                    return Err(ErrorKind::Type(format!(
                        "{} has no len()",
                        other.describe()
                    )));
                }
            };
            Ok(Obj::Int(n as i64))
        }
        Builtin::Range => {
            let values = args.only_positional("range")?;
            let ints = values
                .iter()
                .map(|v| match v {
                    Obj::Int(i) => Ok(*i),
                    other => Err(ErrorKind::Type(format!(
                        "range() needs ints, not {}",
                        other.describe()
                    ))),
                })
                .collect::<Result<Vec<i64>>>()?;
            let (start, stop, step) = match ints.as_slice() {
                [stop] => (0, *stop, 1),
                [start, stop] => (*start, *stop, 1),
                [start, stop, step] => (*start, *stop, *step),
                _ => return Err(ErrorKind::Type("range() takes 1 to 3 arguments".into())),
            };
            if step == 0 {
                return Err(ErrorKind::Invalid("range() step must not be zero".into()));
            }
            let mut out = Vec::new();
            let mut i = start;
            while (step > 0 && i < stop) || (step < 0 && i > stop) {
                if out.len() >= MAX_COLLECTION {
                    return Err(too_big());
                }
                out.push(Obj::Int(i));
                let Some(next) = i.checked_add(step) else {
                    break;
                };
                i = next;
            }
            Ok(Obj::list(out))
        }
        Builtin::Str => {
            let values = args.only_positional("str")?;
            Ok(match values.as_slice() {
                [] => Obj::str(""),
                [v] => Obj::str(&v.to_text()),
                _ => return Err(ErrorKind::Type("str() takes one argument".into())),
            })
        }
        Builtin::Int => {
            let [v] = fixed::<1>(args.only_positional("int")?, "int")?;
            match v {
                Obj::Int(i) => Ok(Obj::Int(i)),
                Obj::Bool(b) => Ok(Obj::Int(i64::from(b))),
                Obj::Float(f) if f.is_finite() && f.abs() < 9.2e18 => {
                    Ok(Obj::Int(f.trunc() as i64))
                }
                Obj::Str(s) => {
                    s.trim().parse::<i64>().map(Obj::Int).map_err(|_| {
                        ErrorKind::Invalid(format!("invalid literal for int(): '{s}'"))
                    })
                }
                other => Err(ErrorKind::Type(format!(
                    "int() cannot convert {}",
                    other.describe()
                ))),
            }
        }
        Builtin::Float => {
            let [v] = fixed::<1>(args.only_positional("float")?, "float")?;
            match v {
                Obj::Str(s) => s.trim().parse::<f64>().map(Obj::Float).map_err(|_| {
                    ErrorKind::Invalid(format!("could not convert string to float: '{s}'"))
                }),
                other => number(&other).map(Obj::Float).ok_or_else(|| {
                    ErrorKind::Type(format!("float() cannot convert {}", other.describe()))
                }),
            }
        }
        Builtin::Bool => {
            let [v] = fixed::<1>(args.only_positional("bool")?, "bool")?;
            truthy(&v).map(Obj::Bool)
        }
        Builtin::List | Builtin::Tuple | Builtin::Set | Builtin::Sorted | Builtin::Reversed => {
            let mut reverse = false;
            let mut positional = args.positional;
            for (k, v) in args.keywords {
                if builtin == Builtin::Sorted && k == "reverse" {
                    reverse = truthy(&v)?;
                } else {
                    return Err(ErrorKind::Type(format!(
                        "{name}() got an unexpected keyword argument '{k}'"
                    )));
                }
            }
            let items = match positional.len() {
                0 if builtin != Builtin::Sorted && builtin != Builtin::Reversed => vec![],
                1 => iterate(&positional.remove(0))?,
                _ => return Err(ErrorKind::Type(format!("{name}() takes one argument"))),
            };
            match builtin {
                Builtin::List => Ok(Obj::list(items)),
                Builtin::Tuple => Ok(Obj::Tuple(items.into())),
                Builtin::Set => make_set(items),
                Builtin::Reversed => Ok(Obj::list(items.into_iter().rev().collect())),
                _ => {
                    let mut items = items;
                    let mut failed = false;
                    items.sort_by(|a, b| {
                        plain_order(a, b).unwrap_or_else(|| {
                            failed = true;
                            std::cmp::Ordering::Equal
                        })
                    });
                    if failed {
                        return Err(ErrorKind::Type(
                            "sorted() needs values that can be compared with each other".into(),
                        ));
                    }
                    if reverse {
                        items.reverse();
                    }
                    Ok(Obj::list(items))
                }
            }
        }
        Builtin::Dict => {
            let mut pairs = Vec::new();
            let mut positional = args.positional;
            match positional.len() {
                0 => {}
                1 => {
                    let source = positional.remove(0);
                    if let Obj::Dict(other) = &source {
                        pairs = other.borrow().clone();
                    } else {
                        for item in iterate(&source)? {
                            let [k, v] = fixed::<2>(iterate(&item)?, "dict")?;
                            dict_insert(&mut pairs, k, v)?;
                        }
                    }
                }
                _ => return Err(ErrorKind::Type("dict() takes one argument".into())),
            }
            for (k, v) in args.keywords {
                dict_insert(&mut pairs, Obj::str(&k), v)?;
            }
            Ok(Obj::Dict(Rc::new(RefCell::new(pairs))))
        }
        Builtin::Enumerate => {
            let bound = args.bind("enumerate", &["iterable", "start"], 1)?;
            let mut bound = bound.into_iter();
            let iterable = bound.next().flatten().unwrap_or(Obj::None);
            let start = match bound.next().flatten() {
                None => 0,
                Some(Obj::Int(i)) => i,
                Some(other) => {
                    return Err(ErrorKind::Type(format!(
                        "enumerate() start must be an int, not {}",
                        other.describe()
                    )));
                }
            };
            let items = iterate(&iterable)?;
            Ok(Obj::list(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        Obj::Tuple(vec![Obj::Int(start.saturating_add(i as i64)), v].into())
                    })
                    .collect(),
            ))
        }
        Builtin::Zip => {
            let lists = args
                .only_positional("zip")?
                .iter()
                .map(iterate)
                .collect::<Result<Vec<_>>>()?;
            let n = lists.iter().map(Vec::len).min().unwrap_or(0);
            Ok(Obj::list(
                (0..n)
                    .map(|i| Obj::Tuple(lists.iter().map(|l| l[i].clone()).collect()))
                    .collect(),
            ))
        }
        Builtin::Min | Builtin::Max => {
            let values = args.only_positional(&name)?;
            let items = if values.len() == 1 {
                iterate(&values[0])?
            } else {
                values
            };
            if items.iter().any(|v| matches!(v, Obj::Series(_))) {
                return Err(ErrorKind::Type(format!(
                    "{name}() cannot compare ehrQL series: use {}() instead",
                    if builtin == Builtin::Min {
                        "minimum_of"
                    } else {
                        "maximum_of"
                    }
                )));
            }
            let mut best: Option<Obj<'a>> = None;
            for item in items {
                best = Some(match best {
                    None => item,
                    Some(b) => {
                        let order = plain_order(&item, &b).ok_or_else(|| {
                            ErrorKind::Type(format!("{name}() needs comparable values"))
                        })?;
                        let better = if builtin == Builtin::Min {
                            order.is_lt()
                        } else {
                            order.is_gt()
                        };
                        if better { item } else { b }
                    }
                });
            }
            best.ok_or_else(|| ErrorKind::Invalid(format!("{name}() of an empty sequence")))
        }
        Builtin::Abs => {
            let [v] = fixed::<1>(args.only_positional("abs")?, "abs")?;
            match v {
                Obj::Series(n) => Ok(Obj::Series(interp.func(FunctionOp::Absolute, vec![n])?)),
                Obj::Int(i) => i.checked_abs().map(Obj::Int).ok_or_else(too_big),
                Obj::Float(f) => Ok(Obj::Float(f.abs())),
                other => Err(ErrorKind::Type(format!("abs() of {}", other.describe()))),
            }
        }
        Builtin::Sum => {
            let [v] = fixed::<1>(args.only_positional("sum")?, "sum")?;
            let mut total = Obj::Int(0);
            for item in iterate(&v)? {
                total = python_binop(Operator::Add, &total, &item)?;
            }
            Ok(total)
        }
        Builtin::Any | Builtin::All => {
            let [v] = fixed::<1>(args.only_positional(&name)?, &name)?;
            let mut result = builtin == Builtin::All;
            for item in iterate(&v)? {
                if truthy(&item)? != result {
                    result = !result;
                    break;
                }
            }
            Ok(Obj::Bool(result))
        }
        Builtin::Getattr => {
            let values = args.only_positional("getattr")?;
            let (object, attr, default) = match <[Obj<'a>; 2]>::try_from(values) {
                Ok([o, a]) => (o, a, None),
                Err(values) => {
                    let [o, a, d] = fixed::<3>(values, "getattr")?;
                    (o, a, Some(d))
                }
            };
            let Obj::Str(attr) = attr else {
                return Err(ErrorKind::Type(
                    "getattr() needs the attribute name as a string".into(),
                ));
            };
            if attr.starts_with('_') {
                return Err(ErrorKind::NotSupported(format!("the attribute '{attr}'")));
            }
            match (interp.get_attr(object, &attr), default) {
                (Ok(v), _) => Ok(v),
                (Err(ErrorKind::NoAttribute { .. }), Some(d)) => Ok(d),
                (Err(e), _) => Err(e),
            }
        }
        _ => Err(ErrorKind::NotSupported(format!("'{name}'"))),
    }
}

fn too_big() -> ErrorKind {
    ErrorKind::Limit(format!(
        "the value is too large (more than {MAX_COLLECTION} items, or an integer overflow)"
    ))
}

/// Whether `name` is a supported method of a plain str, list or dict.
pub(super) fn is_plain_method(object: &Obj<'_>, name: &str) -> bool {
    match object {
        Obj::Str(_) => matches!(
            name,
            "upper" | "lower" | "strip" | "startswith" | "endswith" | "replace" | "split" | "join"
        ),
        Obj::List(_) => matches!(name, "append" | "extend" | "index" | "count"),
        Obj::Dict(_) => matches!(name, "items" | "keys" | "values" | "get" | "update"),
        _ => false,
    }
}

/// Calls a method of a plain str, list or dict.
pub(super) fn plain_method<'a>(object: &Obj<'a>, name: &str, args: Args<'a>) -> Result<Obj<'a>> {
    let args = args.only_positional(name)?;
    let text = |o: &Obj<'a>| -> Result<Rc<str>> {
        match o {
            Obj::Str(s) => Ok(s.clone()),
            other => Err(ErrorKind::Type(format!(
                "{name}() needs a string, not {}",
                other.describe()
            ))),
        }
    };
    match (object, name) {
        (Obj::Str(s), "upper") => Ok(Obj::str(&s.to_uppercase())),
        (Obj::Str(s), "lower") => Ok(Obj::str(&s.to_lowercase())),
        (Obj::Str(s), "strip") => Ok(Obj::str(s.trim())),
        (Obj::Str(s), "startswith" | "endswith") => {
            let [p] = fixed::<1>(args, name)?;
            let p = text(&p)?;
            Ok(Obj::Bool(if name == "startswith" {
                s.starts_with(&*p)
            } else {
                s.ends_with(&*p)
            }))
        }
        (Obj::Str(s), "replace") => {
            let [a, b] = fixed::<2>(args, name)?;
            let out = s.replace(&*text(&a)?, &text(&b)?);
            if out.len() > MAX_COLLECTION {
                return Err(too_big());
            }
            Ok(Obj::str(&out))
        }
        (Obj::Str(s), "split") => {
            let parts: Vec<Obj<'a>> = match args.as_slice() {
                [] => s.split_whitespace().map(Obj::str).collect(),
                [sep] => {
                    let sep = text(sep)?;
                    if sep.is_empty() {
                        return Err(ErrorKind::Invalid("empty separator".into()));
                    }
                    s.split(&*sep).map(Obj::str).collect()
                }
                _ => return Err(ErrorKind::Type("split() takes at most one argument".into())),
            };
            Ok(Obj::list(parts))
        }
        (Obj::Str(s), "join") => {
            let [items] = fixed::<1>(args, name)?;
            let parts = iterate(&items)?
                .iter()
                .map(|p| text(p).map(|t| t.to_string()))
                .collect::<Result<Vec<_>>>()?;
            let out = parts.join(s);
            if out.len() > MAX_COLLECTION {
                return Err(too_big());
            }
            Ok(Obj::str(&out))
        }
        (Obj::List(items), "append") => {
            let [v] = fixed::<1>(args, name)?;
            let mut items = items.borrow_mut();
            if items.len() >= MAX_COLLECTION {
                return Err(too_big());
            }
            items.push(v);
            Ok(Obj::None)
        }
        (Obj::List(items), "extend") => {
            let [v] = fixed::<1>(args, name)?;
            let more = iterate(&v)?;
            let mut items = items.borrow_mut();
            if items.len() + more.len() > MAX_COLLECTION {
                return Err(too_big());
            }
            items.extend(more);
            Ok(Obj::None)
        }
        (Obj::List(items), "index" | "count") => {
            let [v] = fixed::<1>(args, name)?;
            let items = items.borrow();
            if name == "count" {
                return Ok(Obj::Int(
                    items.iter().filter(|i| plain_eq(i, &v)).count() as i64
                ));
            }
            items
                .iter()
                .position(|i| plain_eq(i, &v))
                .map(|i| Obj::Int(i as i64))
                .ok_or_else(|| ErrorKind::Invalid(format!("{} is not in list", v.repr())))
        }
        (Obj::Dict(pairs), "items" | "keys" | "values") => {
            fixed::<0>(args, name)?;
            let pairs = pairs.borrow();
            Ok(Obj::list(
                pairs
                    .iter()
                    .map(|(k, v)| match name {
                        "items" => Obj::Tuple(vec![k.clone(), v.clone()].into()),
                        "keys" => k.clone(),
                        _ => v.clone(),
                    })
                    .collect(),
            ))
        }
        (Obj::Dict(pairs), "get") => {
            let (key, default) = match args.len() {
                1 => (args[0].clone(), Obj::None),
                2 => (args[0].clone(), args[1].clone()),
                _ => return Err(ErrorKind::Type("get() takes one or two arguments".into())),
            };
            Ok(pairs
                .borrow()
                .iter()
                .find(|(k, _)| plain_eq(k, &key))
                .map_or(default, |(_, v)| v.clone()))
        }
        (Obj::Dict(pairs), "update") => {
            let [other] = fixed::<1>(args, name)?;
            let Obj::Dict(other) = other else {
                return Err(ErrorKind::Type("update() needs a dict".into()));
            };
            let other = other.borrow().clone();
            let mut pairs = pairs.borrow_mut();
            for (k, v) in other {
                dict_insert(&mut pairs, k, v)?;
            }
            Ok(Obj::None)
        }
        _ => Err(ErrorKind::NoAttribute {
            on: object.describe().to_string(),
            name: name.to_string(),
        }),
    }
}

/// Inserts or replaces `key` in an insertion-ordered dict.
pub(super) fn dict_insert<'a>(
    pairs: &mut Vec<(Obj<'a>, Obj<'a>)>,
    key: Obj<'a>,
    value: Obj<'a>,
) -> Result<()> {
    if !key.is_plain() {
        return Err(ErrorKind::Type(format!(
            "{} cannot be a dict key",
            key.describe()
        )));
    }
    match pairs.iter_mut().find(|(k, _)| plain_eq(k, &key)) {
        Some(pair) => pair.1 = value,
        None => {
            if pairs.len() >= MAX_COLLECTION {
                return Err(too_big());
            }
            pairs.push((key, value));
        }
    }
    Ok(())
}

/// A set of plain values, duplicates dropped, insertion order kept.
pub(super) fn make_set(items: Vec<Obj<'_>>) -> Result<Obj<'_>> {
    let mut out: Vec<Obj<'_>> = Vec::with_capacity(items.len());
    for item in items {
        if !item.is_plain() {
            return Err(ErrorKind::Type(format!(
                "{} cannot be put in a set",
                item.describe()
            )));
        }
        if !out.iter().any(|o| plain_eq(o, &item)) {
            out.push(item);
        }
    }
    Ok(Obj::Set(out.into()))
}

fn index(len: usize, key: &Obj<'_>) -> Result<usize> {
    let Obj::Int(i) = key else {
        return Err(ErrorKind::Type(format!(
            "indices must be ints, not {}",
            key.describe()
        )));
    };
    let len_i = len as i64;
    let actual = if *i < 0 { i + len_i } else { *i };
    if actual < 0 || actual >= len_i {
        return Err(ErrorKind::Invalid("index out of range".into()));
    }
    Ok(actual as usize)
}

/// `container[key]`.
pub(super) fn get_item<'a>(container: &Obj<'a>, key: &Obj<'a>) -> Result<Obj<'a>> {
    match container {
        Obj::List(items) => {
            let items = items.borrow();
            Ok(items[index(items.len(), key)?].clone())
        }
        Obj::Tuple(items) => Ok(items[index(items.len(), key)?].clone()),
        Obj::Str(s) => {
            let chars: Vec<char> = s.chars().collect();
            let c = chars[index(chars.len(), key)?];
            Ok(Obj::str(c.encode_utf8(&mut [0; 4])))
        }
        Obj::Dict(pairs) => pairs
            .borrow()
            .iter()
            .find(|(k, _)| plain_eq(k, key))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| ErrorKind::Invalid(format!("key {} is not in the dict", key.repr()))),
        Obj::Series(_) | Obj::Frame(_) => Err(ErrorKind::NotSupported(
            "indexing an ehrQL series or frame".into(),
        )),
        other => Err(ErrorKind::Type(format!(
            "{} cannot be indexed",
            other.describe()
        ))),
    }
}

/// `container[lower:upper]`.
pub(super) fn slice<'a>(
    container: &Obj<'a>,
    lower: Option<i64>,
    upper: Option<i64>,
) -> Result<Obj<'a>> {
    let clamp = |len: usize, i: Option<i64>, default: usize| -> usize {
        match i {
            None => default,
            Some(i) if i < 0 => (len as i64 + i).max(0) as usize,
            Some(i) => (i as usize).min(len),
        }
    };
    let items: Vec<Obj<'a>> = match container {
        Obj::Str(s) => {
            let chars: Vec<char> = s.chars().collect();
            let (a, b) = (
                clamp(chars.len(), lower, 0),
                clamp(chars.len(), upper, chars.len()),
            );
            return Ok(Obj::str(&chars[a..b.max(a)].iter().collect::<String>()));
        }
        Obj::List(items) => items.borrow().clone(),
        Obj::Tuple(items) => items.to_vec(),
        other => {
            return Err(ErrorKind::Type(format!(
                "{} cannot be sliced",
                other.describe()
            )));
        }
    };
    let (a, b) = (
        clamp(items.len(), lower, 0),
        clamp(items.len(), upper, items.len()),
    );
    let part = items[a..b.max(a)].to_vec();
    Ok(match container {
        Obj::Tuple(_) => Obj::Tuple(part.into()),
        _ => Obj::list(part),
    })
}

/// `container[key] = value` for lists and dicts.
pub(super) fn set_item<'a>(container: &Obj<'a>, key: Obj<'a>, value: Obj<'a>) -> Result<()> {
    match container {
        Obj::List(items) => {
            let mut items = items.borrow_mut();
            let i = index(items.len(), &key)?;
            items[i] = value;
            Ok(())
        }
        Obj::Dict(pairs) => dict_insert(&mut pairs.borrow_mut(), key, value),
        other => Err(ErrorKind::Type(format!(
            "{} does not support item assignment",
            other.describe()
        ))),
    }
}

/// Python arithmetic on plain values.
pub(super) fn python_binop<'a>(op: Operator, lhs: &Obj<'a>, rhs: &Obj<'a>) -> Result<Obj<'a>> {
    let unsupported = || {
        ErrorKind::Type(format!(
            "unsupported operand types for '{}': {} and {}",
            op.as_str(),
            lhs.describe(),
            rhs.describe()
        ))
    };
    match (lhs, rhs) {
        (Obj::Str(a), Obj::Str(b)) if op == Operator::Add => {
            if a.len() + b.len() > MAX_COLLECTION {
                return Err(too_big());
            }
            return Ok(Obj::str(&format!("{a}{b}")));
        }
        (Obj::List(a), Obj::List(b)) if op == Operator::Add => {
            let mut out = a.borrow().clone();
            out.extend(b.borrow().iter().cloned());
            if out.len() > MAX_COLLECTION {
                return Err(too_big());
            }
            return Ok(Obj::list(out));
        }
        (Obj::Tuple(a), Obj::Tuple(b)) if op == Operator::Add => {
            let out: Vec<Obj<'a>> = a.iter().chain(b.iter()).cloned().collect();
            return Ok(Obj::Tuple(out.into()));
        }
        (Obj::Str(_) | Obj::List(_), Obj::Int(n)) | (Obj::Int(n), Obj::Str(_) | Obj::List(_))
            if op == Operator::Mult =>
        {
            let base = if matches!(lhs, Obj::Int(_)) { rhs } else { lhs };
            let times = usize::try_from(*n).unwrap_or(0);
            return match base {
                Obj::Str(s) => {
                    if s.len().saturating_mul(times) > MAX_COLLECTION {
                        return Err(too_big());
                    }
                    Ok(Obj::str(&s.repeat(times)))
                }
                Obj::List(items) => {
                    let items = items.borrow();
                    if items.len().saturating_mul(times) > MAX_COLLECTION {
                        return Err(too_big());
                    }
                    Ok(Obj::list(
                        std::iter::repeat_n(items.iter().cloned(), times)
                            .flatten()
                            .collect(),
                    ))
                }
                _ => Err(unsupported()),
            };
        }
        (Obj::Bool(a), Obj::Bool(b)) if matches!(op, Operator::BitAnd | Operator::BitOr) => {
            return Ok(Obj::Bool(if op == Operator::BitAnd {
                *a && *b
            } else {
                *a || *b
            }));
        }
        _ => {}
    }
    let as_int = |o: &Obj<'_>| match o {
        Obj::Int(i) => Some(*i),
        Obj::Bool(b) => Some(i64::from(*b)),
        _ => None,
    };
    if let (Some(a), Some(b)) = (as_int(lhs), as_int(rhs)) {
        let result = match op {
            Operator::Add => a.checked_add(b),
            Operator::Sub => a.checked_sub(b),
            Operator::Mult => a.checked_mul(b),
            Operator::Div => {
                if b == 0 {
                    return Err(ErrorKind::Invalid("division by zero".into()));
                }
                return Ok(Obj::Float(a as f64 / b as f64));
            }
            Operator::FloorDiv | Operator::Mod => {
                if b == 0 {
                    return Err(ErrorKind::Invalid("division by zero".into()));
                }
                // Python rounds toward negative infinity; the remainder has the divisor's sign.
                let (q, r) = (a.wrapping_div(b), a.wrapping_rem(b));
                let (q, r) = if r != 0 && ((r < 0) != (b < 0)) {
                    (q - 1, r + b)
                } else {
                    (q, r)
                };
                Some(if op == Operator::FloorDiv { q } else { r })
            }
            Operator::Pow => {
                if b < 0 {
                    return Ok(Obj::Float((a as f64).powf(b as f64)));
                }
                u32::try_from(b).ok().and_then(|b| a.checked_pow(b))
            }
            Operator::BitAnd => Some(a & b),
            Operator::BitOr => Some(a | b),
            Operator::BitXor => Some(a ^ b),
            _ => return Err(unsupported()),
        };
        return result.map(Obj::Int).ok_or_else(too_big);
    }
    let (Some(a), Some(b)) = (number(lhs), number(rhs)) else {
        return Err(unsupported());
    };
    let value = match op {
        Operator::Add => a + b,
        Operator::Sub => a - b,
        Operator::Mult => a * b,
        Operator::Div | Operator::FloorDiv | Operator::Mod if b == 0.0 => {
            return Err(ErrorKind::Invalid("division by zero".into()));
        }
        Operator::Div => a / b,
        Operator::FloorDiv => (a / b).floor(),
        Operator::Mod => a - b * (a / b).floor(),
        Operator::Pow => a.powf(b),
        _ => return Err(unsupported()),
    };
    Ok(Obj::Float(value))
}

/// Python comparison of plain values (and `in`, `is`).
pub(super) fn python_compare<'a>(op: CmpOp, lhs: &Obj<'a>, rhs: &Obj<'a>) -> Result<Obj<'a>> {
    let ordered = |want: fn(std::cmp::Ordering) -> bool| -> Result<Obj<'a>> {
        plain_order(lhs, rhs)
            .map(|o| Obj::Bool(want(o)))
            .ok_or_else(|| {
                ErrorKind::Type(format!(
                    "'{}' is not supported between {} and {}",
                    op.as_str(),
                    lhs.describe(),
                    rhs.describe()
                ))
            })
    };
    match op {
        CmpOp::Eq => Ok(Obj::Bool(plain_eq(lhs, rhs))),
        CmpOp::NotEq => Ok(Obj::Bool(!plain_eq(lhs, rhs))),
        CmpOp::Lt => ordered(std::cmp::Ordering::is_lt),
        CmpOp::LtE => ordered(std::cmp::Ordering::is_le),
        CmpOp::Gt => ordered(std::cmp::Ordering::is_gt),
        CmpOp::GtE => ordered(std::cmp::Ordering::is_ge),
        CmpOp::Is | CmpOp::IsNot => {
            let same = matches!((lhs, rhs), (Obj::None, Obj::None))
                || matches!((lhs, rhs), (Obj::Bool(a), Obj::Bool(b)) if a == b);
            Ok(Obj::Bool(same == (op == CmpOp::Is)))
        }
        CmpOp::In | CmpOp::NotIn => {
            let found = match rhs {
                Obj::Str(s) => match lhs {
                    Obj::Str(needle) => s.contains(&**needle),
                    other => {
                        return Err(ErrorKind::Type(format!(
                            "'in <string>' needs a string, not {}",
                            other.describe()
                        )));
                    }
                },
                Obj::Frame(_) | Obj::Series(_) => {
                    return Err(ErrorKind::NotSupported(
                        "'in' with an ehrQL series (use series.is_in(...))".into(),
                    ));
                }
                other => iterate(other)?.iter().any(|item| plain_eq(item, lhs)),
            };
            Ok(Obj::Bool(found == (op == CmpOp::In)))
        }
    }
}

/// Formats a value for an f-string replacement field with a simple format spec
/// (`[0][width][.precision][d|f|s]`).
pub(super) fn format_value(value: &Obj<'_>, spec: &str) -> Result<String> {
    if spec.is_empty() {
        return Ok(value.to_text());
    }
    let bad = || ErrorKind::NotSupported(format!("the format specifier ':{spec}'"));
    let (body, kind) = match spec.chars().last() {
        Some(c @ ('d' | 'f' | 's')) => (&spec[..spec.len() - 1], Some(c)),
        _ => (spec, None),
    };
    let zero = body.starts_with('0');
    let (width, precision) = match body.split_once('.') {
        Some((w, p)) => (w, Some(p.parse::<usize>().map_err(|_| bad())?)),
        None => (body, None),
    };
    let width: usize = if width.is_empty() {
        0
    } else {
        width.parse().map_err(|_| bad())?
    };
    if width > 1000 || precision.is_some_and(|p| p > 100) {
        return Err(bad());
    }
    let text = match (value, kind, precision) {
        (Obj::Int(i), None | Some('d'), None) => i.to_string(),
        (Obj::Int(_) | Obj::Float(_), None | Some('f'), Some(p)) => {
            format!("{:.p$}", number(value).unwrap_or(0.0))
        }
        (Obj::Float(f), Some('f'), None) => format!("{f:.6}"),
        (_, None | Some('s'), None) if !matches!(value, Obj::Int(_) | Obj::Float(_)) => {
            let t = value.to_text();
            return Ok(format!("{t:<width$}"));
        }
        (Obj::Float(_), None, None) => value.to_text(),
        _ => return Err(bad()),
    };
    Ok(if zero {
        let (sign, digits) = match text.strip_prefix('-') {
            Some(d) => ("-", d),
            None => ("", text.as_str()),
        };
        format!("{sign}{digits:0>w$}", w = width.saturating_sub(sign.len()))
    } else {
        format!("{text:>width$}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_spec_pads_and_rounds_like_python() {
        assert_eq!(format_value(&Obj::Int(3), "02d").unwrap(), "03");
        assert_eq!(format_value(&Obj::Int(-3), "03d").unwrap(), "-03");
        assert_eq!(format_value(&Obj::Float(1.23456), ".2f").unwrap(), "1.23");
        assert_eq!(format_value(&Obj::Int(7), "3").unwrap(), "  7");
        assert!(format_value(&Obj::Int(7), "x").is_err());
    }

    #[test]
    fn python_arithmetic_floors_and_checks_overflow() {
        let floor = python_binop(Operator::FloorDiv, &Obj::Int(-7), &Obj::Int(2)).unwrap();
        assert!(matches!(floor, Obj::Int(-4)));
        let modulo = python_binop(Operator::Mod, &Obj::Int(-7), &Obj::Int(2)).unwrap();
        assert!(matches!(modulo, Obj::Int(1)));
        assert!(python_binop(Operator::Pow, &Obj::Int(10), &Obj::Int(40)).is_err());
        assert!(python_binop(Operator::Div, &Obj::Int(1), &Obj::Int(0)).is_err());
    }
}
