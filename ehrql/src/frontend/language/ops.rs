//! ehrQL semantics of the evaluator (spec §3.1–3.2): operators, attributes and methods of
//! frames, series, durations, date differences, `when`/`case` clauses and datasets, each mapped
//! to query-model nodes through the validating [`Graph`](crate::query_model::Graph)
//! constructors. Python literals meeting a series are cast the way ehrQL casts them (an int
//! next to a float series becomes a float, `"YYYY-MM-DD"` next to a date series becomes a date,
//! a string next to a code series becomes that code).

use std::rc::Rc;
use std::sync::Arc;

use rustpython_ruff_python_ast::{CmpOp, Operator, UnaryOp};

use super::error::ErrorKind;
use super::interp::{Args, Interp, MeasureArgs, iterate};
use super::value::{DurationUnit, Obj};
use crate::query_model::{
    AggregateKind, Date, Domain, FunctionOp, Kind, Literal, NodeId, Position, QueryError,
    ScalarType, SeriesType, Value, is_valid_variable_name,
};

type Result<T> = std::result::Result<T, ErrorKind>;

/// Names a dataset variable may not have (spec §2.5).
const RESERVED_NAMES: [&str; 3] = ["patient_id", "population", "dummy_data_config"];

/// Output columns of measures, which `group_by` names may not take.
const MEASURE_RESERVED_NAMES: [&str; 6] = [
    "measure",
    "numerator",
    "denominator",
    "ratio",
    "interval_start",
    "interval_end",
];

/// `years(n).starting_on(date)` / `.ending_on(date)`: `n` consecutive intervals of one unit
/// each, from (or up to) `date`, each ending the day before the next starts.
fn intervals<'a>(
    unit: DurationUnit,
    amount: &Obj<'a>,
    date: &Obj<'a>,
    method: &str,
) -> Result<Obj<'a>> {
    let class = unit.name();
    let date = match date {
        Obj::Date(d) => *d,
        Obj::Str(s) => Date::parse_iso(s).ok_or_else(|| {
            ErrorKind::Invalid(format!("'{s}' is not a valid date (expected YYYY-MM-DD)"))
        })?,
        _ => {
            return Err(ErrorKind::Type(format!(
                "{class}.{method}() can only be used with a literal date, not a date series"
            )));
        }
    };
    let Obj::Int(count) = amount else {
        return Err(ErrorKind::Type(format!(
            "{class}.{method}() can only be used with a literal integer value, not an integer series"
        )));
    };
    if *count < 0 {
        return Err(ErrorKind::Invalid(format!(
            "{class}.{method}() can only be used with positive numbers"
        )));
    }
    if *count > 100_000 {
        return Err(ErrorKind::Limit(format!(
            "{class}.{method}() of more than 100000 intervals"
        )));
    }
    let add = |n: i64| -> Result<Date> {
        match unit {
            DurationUnit::Days => date.add_days(n),
            DurationUnit::Weeks => date.add_days(n * 7),
            DurationUnit::Months => date.add_months(n),
            DurationUnit::Years => date.add_years(n),
        }
        .ok_or_else(|| ErrorKind::Invalid("the date is out of range".into()))
    };
    let day_before = |d: Date| {
        d.add_days(-1)
            .ok_or_else(|| ErrorKind::Invalid("the date is out of range".into()))
    };
    let mut out = Vec::new();
    if method == "starting_on" {
        for offset in 0..*count {
            out.push((add(offset)?, day_before(add(offset + 1)?)?));
        }
    } else {
        for offset in (1 - *count)..1 {
            let start = add(offset - 1)?
                .add_days(1)
                .ok_or_else(|| ErrorKind::Invalid("the date is out of range".into()))?;
            out.push((start, add(offset)?));
        }
    }
    Ok(Obj::list(
        out.into_iter()
            .map(|(s, e)| Obj::Tuple(Rc::from(vec![Obj::Date(s), Obj::Date(e)])))
            .collect(),
    ))
}

impl<'a> Interp<'a> {
    /// The scalar type of a series object, if it is one.
    fn series_type(&self, obj: &Obj<'a>) -> Option<ScalarType> {
        match obj {
            Obj::Series(n) => self.graph.scalar_type(*n),
            _ => None,
        }
    }

    /// The node for a series, or for a literal cast to `like` (spec §2.1).
    pub(super) fn node_for(&mut self, obj: &Obj<'a>, like: Option<ScalarType>) -> Result<NodeId> {
        if let Obj::Series(n) = obj {
            return Ok(*n);
        }
        let value = literal_value(obj, like)?;
        Ok(self.graph.value(Literal::Scalar(value))?)
    }

    pub(super) fn func(&mut self, op: FunctionOp, args: Vec<NodeId>) -> Result<NodeId> {
        Ok(self.graph.function(op, args)?)
    }

    fn series_of(&mut self, op: FunctionOp, args: Vec<NodeId>) -> Result<Obj<'a>> {
        self.func(op, args).map(Obj::Series)
    }

    fn column(&mut self, frame: NodeId, name: &str) -> Result<NodeId> {
        Ok(self.graph.select_column(frame, name)?)
    }

    /// `lhs <op> rhs` where at least one side is a series; the literal side is cast to the
    /// series' type.
    fn series_binary(&mut self, op: FunctionOp, lhs: &Obj<'a>, rhs: &Obj<'a>) -> Result<Obj<'a>> {
        let like = self.series_type(lhs).or(self.series_type(rhs));
        if let (Some(ScalarType::MultiCodeString(_)), FunctionOp::Eq | FunctionOp::Ne) = (like, op)
        {
            // The reference's advice: a packed code string is searched, never compared.
            let (is, end) = if op == FunctionOp::Eq {
                ("is", "")
            } else {
                ("is not", ".")
            };
            return Err(ErrorKind::Type(format!(
                "This column contains multiple clinical codes combined together in a single \
                 string. If you want to know if a particular code {is} contained in the string, \
                 please use the `contains()` method{end}"
            )));
        }
        let l = self.node_for(lhs, like)?;
        let r = self.node_for(rhs, like)?;
        self.series_of(op, vec![l, r])
    }

    pub(super) fn binop(&mut self, op: Operator, lhs: Obj<'a>, rhs: Obj<'a>) -> Result<Obj<'a>> {
        // Durations and dates first: they mix plain values and series.
        match (&lhs, &rhs, op) {
            (Obj::Duration(..), Obj::Duration(..), Operator::Add | Operator::Sub) => {
                return duration_arith(op, lhs, rhs);
            }
            (_, Obj::Duration(unit, amount), Operator::Add) => {
                return self.date_add(&lhs, *unit, amount);
            }
            (Obj::Duration(unit, amount), _, Operator::Add) => {
                return self.date_add(&rhs, *unit, amount);
            }
            (_, Obj::Duration(unit, amount), Operator::Sub) => {
                let negated = self.negate(amount)?;
                return self.date_add(&lhs, *unit, &negated);
            }
            _ => {}
        }
        let lhs_is_series = matches!(lhs, Obj::Series(_));
        let rhs_is_series = matches!(rhs, Obj::Series(_));
        let plain_dates = matches!((&lhs, &rhs), (Obj::Date(_), Obj::Date(_)));
        if op == Operator::Sub
            && self.is_date_like(&lhs)
            && self.is_date_like(&rhs)
            && (lhs_is_series || rhs_is_series || plain_dates)
        {
            return Ok(Obj::DateDifference(Box::new((lhs, rhs))));
        }
        if !lhs_is_series && !rhs_is_series {
            if let (Obj::Frame(_), _) | (_, Obj::Frame(_)) = (&lhs, &rhs) {
                return Err(ErrorKind::Type(
                    "frames cannot be used in arithmetic: select a column first".into(),
                ));
            }
            return super::builtins::python_binop(op, &lhs, &rhs);
        }
        let function = match op {
            Operator::Add => FunctionOp::Add,
            Operator::Sub => FunctionOp::Subtract,
            Operator::Mult => FunctionOp::Multiply,
            Operator::Div => FunctionOp::TrueDivide,
            Operator::FloorDiv => FunctionOp::FloorDivide,
            Operator::Pow => FunctionOp::Power,
            Operator::BitAnd => FunctionOp::And,
            Operator::BitOr => FunctionOp::Or,
            other => {
                return Err(ErrorKind::NotSupported(format!(
                    "the '{}' operator with ehrQL series",
                    other.as_str()
                )));
            }
        };
        self.series_binary(function, &lhs, &rhs)
    }

    /// Whether the value is a date, a date series, or a string that reads as a date.
    fn is_date_like(&self, obj: &Obj<'a>) -> bool {
        match obj {
            Obj::Date(_) => true,
            Obj::Str(s) => Date::parse_iso(s).is_some(),
            Obj::Series(_) => self.series_type(obj) == Some(ScalarType::Date),
            _ => false,
        }
    }

    fn negate(&mut self, amount: &Obj<'a>) -> Result<Obj<'a>> {
        match amount {
            Obj::Int(i) => i
                .checked_neg()
                .map(Obj::Int)
                .ok_or_else(|| ErrorKind::Invalid("the duration is too large".into())),
            Obj::Series(n) => self.series_of(FunctionOp::Negate, vec![*n]),
            other => Err(ErrorKind::Type(format!(
                "a duration must be an int or an int series, not {}",
                other.describe()
            ))),
        }
    }

    /// `date + duration`: computed directly for a literal date and int, else a `DateAdd*` node.
    fn date_add(
        &mut self,
        date: &Obj<'a>,
        unit: DurationUnit,
        amount: &Obj<'a>,
    ) -> Result<Obj<'a>> {
        let literal_date = match date {
            Obj::Date(d) => Some(*d),
            Obj::Str(s) => Some(Date::parse_iso(s).ok_or_else(|| {
                ErrorKind::Invalid(format!("'{s}' is not a valid date (expected YYYY-MM-DD)"))
            })?),
            Obj::Series(_) if self.series_type(date) == Some(ScalarType::Date) => None,
            other => {
                return Err(ErrorKind::Type(format!(
                    "a duration can only be added to a date or a date series, not {}",
                    other.describe()
                )));
            }
        };
        if let (Some(d), Obj::Int(n)) = (literal_date, amount) {
            let result = match unit {
                DurationUnit::Days => d.add_days(*n),
                DurationUnit::Weeks => n.checked_mul(7).and_then(|n| d.add_days(n)),
                DurationUnit::Months => d.add_months(*n),
                DurationUnit::Years => d.add_years(*n),
            };
            return result
                .map(Obj::Date)
                .ok_or_else(|| ErrorKind::Invalid("the date is out of range".into()));
        }
        let date_node = self.node_for(date, Some(ScalarType::Date))?;
        let mut amount_node = self.node_for(amount, Some(ScalarType::Int))?;
        let op = match unit {
            DurationUnit::Days => FunctionOp::DateAddDays,
            DurationUnit::Weeks => {
                let seven = self.graph.value(Literal::Scalar(Value::Int(7)))?;
                amount_node = self.func(FunctionOp::Multiply, vec![amount_node, seven])?;
                FunctionOp::DateAddDays
            }
            DurationUnit::Months => FunctionOp::DateAddMonths,
            DurationUnit::Years => FunctionOp::DateAddYears,
        };
        self.series_of(op, vec![date_node, amount_node])
    }

    pub(super) fn unary(&mut self, op: UnaryOp, operand: Obj<'a>) -> Result<Obj<'a>> {
        match (&operand, op) {
            (Obj::Series(n), UnaryOp::USub) => self.series_of(FunctionOp::Negate, vec![*n]),
            (Obj::Series(_), UnaryOp::UAdd) => Ok(operand),
            (Obj::Series(n), UnaryOp::Invert) => self.series_of(FunctionOp::Not, vec![*n]),
            (Obj::Duration(unit, amount), UnaryOp::USub) => {
                let negated = self.negate(amount)?;
                Ok(Obj::Duration(*unit, Box::new(negated)))
            }
            (Obj::Int(i), UnaryOp::USub) => i
                .checked_neg()
                .map(Obj::Int)
                .ok_or_else(|| ErrorKind::Limit("the integer is too large".into())),
            (Obj::Float(f), UnaryOp::USub) => Ok(Obj::Float(-f)),
            (Obj::Bool(b), UnaryOp::USub) => Ok(Obj::Int(-i64::from(*b))),
            (Obj::Int(_) | Obj::Float(_), UnaryOp::UAdd) => Ok(operand),
            (Obj::Int(i), UnaryOp::Invert) => Ok(Obj::Int(!i)),
            _ => Err(ErrorKind::Type(format!(
                "bad operand for unary '{}': {}",
                op.as_str(),
                operand.describe()
            ))),
        }
    }

    pub(super) fn compare(&mut self, op: CmpOp, lhs: Obj<'a>, rhs: Obj<'a>) -> Result<Obj<'a>> {
        let any_series = matches!(lhs, Obj::Series(_)) || matches!(rhs, Obj::Series(_));
        if !any_series {
            return super::builtins::python_compare(op, &lhs, &rhs);
        }
        let (function, swapped) = match op {
            CmpOp::Eq => (FunctionOp::Eq, false),
            CmpOp::NotEq => (FunctionOp::Ne, false),
            CmpOp::Lt => (FunctionOp::Lt, true),
            CmpOp::LtE => (FunctionOp::Le, true),
            CmpOp::Gt => (FunctionOp::Gt, true),
            CmpOp::GtE => (FunctionOp::Ge, true),
            CmpOp::Is | CmpOp::IsNot => {
                return Err(ErrorKind::NotSupported(
                    "'is' with an ehrQL series (use is_null() or is_not_null())".into(),
                ));
            }
            CmpOp::In | CmpOp::NotIn => {
                return Err(ErrorKind::NotSupported(
                    "'in' with an ehrQL series (use series.is_in(...))".into(),
                ));
            }
        };
        // A literal on the left is Python's reflected comparison: `"2020-01-01" < s` is
        // `s > "2020-01-01"`, as ehrQL builds it.
        if swapped && !matches!(lhs, Obj::Series(_)) {
            let reflected = match function {
                FunctionOp::Lt => FunctionOp::Gt,
                FunctionOp::Le => FunctionOp::Ge,
                FunctionOp::Gt => FunctionOp::Lt,
                _ => FunctionOp::Le,
            };
            return self.series_binary(reflected, &rhs, &lhs);
        }
        if !swapped && !matches!(lhs, Obj::Series(_)) {
            return self.series_binary(function, &rhs, &lhs);
        }
        self.series_binary(function, &lhs, &rhs)
    }

    pub(super) fn get_attr(&mut self, object: Obj<'a>, name: &str) -> Result<Obj<'a>> {
        let method = |object: Obj<'a>| Ok(Obj::Method(Rc::new((object, name.to_string()))));
        match &object {
            Obj::Module(m) => {
                let m = m.clone();
                super::builtins::module_attr(self, &m, name)
            }
            Obj::Dataset(index) => match name {
                "define_population" | "add_column" | "configure_dummy_data" | "add_event_table" => {
                    method(object)
                }
                _ => {
                    let found = self.datasets[*index]
                        .variables
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, id)| *id);
                    found.map(Obj::Series).ok_or_else(|| {
                        ErrorKind::Dataset(format!("Variable '{name}' has not been defined"))
                    })
                }
            },
            Obj::Measures(_) => match name {
                "define_measure"
                | "define_defaults"
                | "configure_dummy_data"
                | "configure_disclosure_control" => method(object),
                _ => Err(ErrorKind::NoAttribute {
                    on: "the measures".into(),
                    name: name.to_string(),
                }),
            },
            Obj::Interval(start, end) => match name {
                "start_date" => Ok(Obj::Series(*start)),
                "end_date" => Ok(Obj::Series(*end)),
                _ => Err(ErrorKind::NoAttribute {
                    on: "INTERVAL".into(),
                    name: name.to_string(),
                }),
            },
            Obj::Duration(..) if name == "starting_on" || name == "ending_on" => method(object),
            Obj::Frame(frame) => {
                let frame = *frame;
                if FRAME_METHODS.contains(&name) || self.table_helper(frame, name) {
                    return method(object);
                }
                if matches!(name, "imd_quintile" | "imd_decile")
                    && self.has_column(frame, "imd_rounded")
                {
                    return self.imd_band(frame, if name == "imd_quintile" { 5 } else { 10 });
                }
                let table = self.graph.frame_table(frame).map(|t| t.name.clone());
                match table {
                    Some(t) if name == "patient_id" || self.has_column(frame, name) => {
                        let _ = t;
                        self.column(frame, name).map(Obj::Series)
                    }
                    Some(t) => Err(ErrorKind::NoAttribute {
                        on: format!("table '{t}'"),
                        name: name.to_string(),
                    }),
                    None => Err(ErrorKind::NoAttribute {
                        on: "the frame".into(),
                        name: name.to_string(),
                    }),
                }
            }
            Obj::Series(n) => {
                let n = *n;
                let date_op = match name {
                    "year" => Some(FunctionOp::YearFromDate),
                    "month" => Some(FunctionOp::MonthFromDate),
                    "day" => Some(FunctionOp::DayFromDate),
                    _ => None,
                };
                if let Some(op) = date_op {
                    return self.series_of(op, vec![n]);
                }
                if SERIES_METHODS.contains(&name) {
                    return method(object);
                }
                let ty = self.graph.scalar_type(n).map_or("set", ScalarType::name);
                Err(ErrorKind::NoAttribute {
                    on: format!("a {ty} series"),
                    name: name.to_string(),
                })
            }
            Obj::DateDifference(pair) => {
                let (end, start) = (**pair).clone();
                self.date_difference(&end, &start, name)
            }
            Obj::When(_) if name == "then" => method(object),
            Obj::WhenThen(_) if name == "otherwise" => method(object),
            Obj::Date(d) => {
                let (y, m, day) = d.ymd();
                match name {
                    "year" => Ok(Obj::Int(i64::from(y))),
                    "month" => Ok(Obj::Int(i64::from(m))),
                    "day" => Ok(Obj::Int(i64::from(day))),
                    _ => Err(ErrorKind::NoAttribute {
                        on: "a date".into(),
                        name: name.to_string(),
                    }),
                }
            }
            Obj::Str(_) | Obj::List(_) | Obj::Dict(_)
                if super::builtins::is_plain_method(&object, name) =>
            {
                method(object)
            }
            other => Err(ErrorKind::NoAttribute {
                on: other.describe().to_string(),
                name: name.to_string(),
            }),
        }
    }

    fn has_column(&self, frame: NodeId, name: &str) -> bool {
        self.graph
            .frame_table(frame)
            .is_some_and(|t| t.column(name).is_some())
    }

    /// Whether `name` is a helper method of the frame's table (spec §3.4) that this table has.
    fn table_helper(&self, frame: NodeId, name: &str) -> bool {
        let Some(table) = self.graph.frame_table(frame) else {
            return false;
        };
        let needs = |cols: &[&str]| cols.iter().all(|c| table.column(c).is_some());
        match name {
            "age_on" => needs(&["date_of_birth"]),
            "is_alive_on" | "is_dead_on" => needs(&["date_of_death"]),
            "for_patient_on" => {
                needs(&["start_date", "end_date", "practice_pseudo_id"])
                    || needs(&["start_date", "end_date", "address_id", "has_postcode"])
            }
            "spanning" | "exists_for_patient_on" => {
                needs(&["start_date", "end_date", "practice_pseudo_id"])
            }
            "electronic_frailty_index" => needs(&["algorithm_description", "algorithm_version"]),
            "spanning_with_systmone" => needs(&[
                "start_date",
                "end_date",
                "practice_pseudo_id",
                "practice_systmone_go_live_date",
            ]),
            "cause_of_death_is_in" => needs(&["underlying_cause_of_death", "cause_of_death_01"]),
            _ => false,
        }
    }

    /// `.days`, `.weeks`, `.months`, `.years` of `end - start`.
    fn date_difference(&mut self, end: &Obj<'a>, start: &Obj<'a>, unit: &str) -> Result<Obj<'a>> {
        if let (Some(e), Some(s)) = (plain_date(end)?, plain_date(start)?) {
            return match unit {
                "days" => Ok(Obj::Int(e.days_since(s))),
                "weeks" => Ok(Obj::Int(e.days_since(s).div_euclid(7))),
                "months" => Ok(Obj::Int(e.months_since(s))),
                "years" => Ok(Obj::Int(e.years_since(s))),
                _ => Err(ErrorKind::NoAttribute {
                    on: "a date difference".into(),
                    name: unit.to_string(),
                }),
            };
        }
        let op = match unit {
            "days" | "weeks" => FunctionOp::DateDifferenceInDays,
            "months" => FunctionOp::DateDifferenceInMonths,
            "years" => FunctionOp::DateDifferenceInYears,
            _ => {
                return Err(ErrorKind::NoAttribute {
                    on: "a date difference (use .days, .weeks, .months or .years)".into(),
                    name: unit.to_string(),
                });
            }
        };
        let e = self.node_for(end, Some(ScalarType::Date))?;
        let s = self.node_for(start, Some(ScalarType::Date))?;
        let days = self.func(op, vec![e, s])?;
        if unit == "weeks" {
            // ehrQL's weeks are whole days // 7.
            let seven = self.graph.value(Literal::Scalar(Value::Int(7)))?;
            return self.series_of(FunctionOp::FloorDivide, vec![days, seven]);
        }
        Ok(Obj::Series(days))
    }

    pub(super) fn call_method(
        &mut self,
        receiver: Obj<'a>,
        name: &str,
        args: Args<'a>,
    ) -> Result<Obj<'a>> {
        match receiver {
            Obj::Dataset(index) => self.dataset_method(index, name, args),
            Obj::Measures(index) => self.measures_method(index, name, args),
            Obj::Duration(unit, amount) => {
                let [date] = fixed::<1>(args.only_positional(name)?, name)?;
                intervals(unit, &amount, &date, name)
            }
            Obj::Frame(frame) => self.frame_method(frame, name, args),
            Obj::Series(series) => self.series_method(series, name, args),
            Obj::When(condition) => {
                let [value] = fixed::<1>(args.only_positional("then")?, "then")?;
                Ok(Obj::WhenThen(Rc::new((condition, value))))
            }
            Obj::WhenThen(clause) => {
                let [default] = fixed::<1>(args.only_positional("otherwise")?, "otherwise")?;
                let (condition, value) = (*clause).clone();
                self.build_case(vec![(condition, value)], default)
            }
            other => super::builtins::plain_method(&other, name, args),
        }
    }

    fn dataset_method(&mut self, index: usize, name: &str, args: Args<'a>) -> Result<Obj<'a>> {
        match name {
            "define_population" => {
                let [condition] = fixed::<1>(args.only_positional(name)?, name)?;
                if self.datasets[index].population.is_some() {
                    return Err(ErrorKind::Dataset(
                        "define_population() should be called no more than once".into(),
                    ));
                }
                let node = match condition {
                    Obj::Series(n) => n,
                    other => {
                        return Err(ErrorKind::Dataset(format!(
                            "define_population() needs a boolean series with one value per patient, not {}",
                            other.describe()
                        )));
                    }
                };
                let info = self.graph.info(node);
                if info.domain != Domain::Patient {
                    return Err(ErrorKind::Dataset(
                        "define_population() needs a series with one value per patient: aggregate event-level data first (for example with exists_for_patient())".into(),
                    ));
                }
                if info.kind != Kind::Series(SeriesType::Scalar(ScalarType::Bool)) {
                    return Err(ErrorKind::Dataset(
                        "define_population() needs a boolean series".into(),
                    ));
                }
                self.datasets[index].population = Some((node, self.call_at));
                Ok(Obj::None)
            }
            "add_column" => {
                let bound = args.bind(name, &["column_name", "ehrql_query"], 2)?;
                let [Some(column), Some(value)] = <[Option<Obj<'a>>; 2]>::try_from(bound)
                    .map_err(|_| ErrorKind::Invalid("add_column() needs two arguments".into()))?
                else {
                    return Err(ErrorKind::Invalid(
                        "add_column() needs two arguments".into(),
                    ));
                };
                let Obj::Str(column) = column else {
                    return Err(ErrorKind::Type(format!(
                        "add_column() needs the column name as a string, not {}",
                        column.describe()
                    )));
                };
                self.add_variable(index, &column, value)?;
                Ok(Obj::None)
            }
            "configure_dummy_data" => {
                let bound = args.bind(
                    name,
                    &[
                        "population_size",
                        "legacy",
                        "timeout",
                        "additional_population_constraint",
                    ],
                    0,
                )?;
                configure_dummy_data(&mut self.datasets[index].dummy_data_config, &bound)?;
                let constraint = match &bound[3] {
                    None | Some(Obj::None) => None,
                    Some(Obj::Series(id))
                        if self.graph.scalar_type(*id) == Some(ScalarType::Bool)
                            && self.graph.info(*id).domain == Domain::Patient =>
                    {
                        Some(*id)
                    }
                    Some(_) => {
                        return Err(ErrorKind::Type(
                            "additional_population_constraint must be a boolean series with one value per patient".into(),
                        ));
                    }
                };
                let config = &mut self.datasets[index].dummy_data_config;
                if constraint.is_some() {
                    config.additional_population_constraint = constraint;
                }
                Ok(Obj::None)
            }
            "add_event_table" => {
                let [table] = fixed::<1>(args.positional, name)?;
                let Obj::Str(table) = table else {
                    return Err(ErrorKind::Type(format!(
                        "add_event_table() needs the table name as a string, not {}",
                        table.describe()
                    )));
                };
                self.add_event_table(index, &table, args.keywords)?;
                Ok(Obj::None)
            }
            _ => Err(ErrorKind::NoAttribute {
                on: "the dataset".into(),
                name: name.to_string(),
            }),
        }
    }

    fn measures_method(&mut self, index: usize, name: &str, args: Args<'a>) -> Result<Obj<'a>> {
        match name {
            "define_measure" => {
                let bound = args.bind(
                    name,
                    &["name", "numerator", "denominator", "group_by", "intervals"],
                    1,
                )?;
                let mut bound = bound.into_iter();
                let Some(Obj::Str(measure_name)) = bound.next().flatten() else {
                    return Err(ErrorKind::Type(
                        "define_measure() needs the measure name as a string".into(),
                    ));
                };
                let supplied = self.measure_args(bound.collect())?;
                let defaults = self.measures[index].defaults.clone().unwrap_or_default();
                let missing = |key: &str| {
                    ErrorKind::Dataset(format!(
                        "No value supplied for '{key}' and no default defined"
                    ))
                };
                let numerator = supplied
                    .numerator
                    .or(defaults.numerator)
                    .ok_or_else(|| missing("numerator"))?;
                let denominator = supplied
                    .denominator
                    .or(defaults.denominator)
                    .ok_or_else(|| missing("denominator"))?;
                let group_by = supplied.group_by.or(defaults.group_by).unwrap_or_default();
                let mut intervals = supplied
                    .intervals
                    .or(defaults.intervals)
                    .ok_or_else(|| missing("intervals"))?;
                if !is_valid_variable_name(&measure_name) {
                    return Err(ErrorKind::Dataset(format!(
                        "Measure names must start with a letter and contain only alphanumeric characters and underscores, got: '{measure_name}'"
                    )));
                }
                let state = &self.measures[index];
                if state.measures.iter().any(|m| m.name == *measure_name) {
                    return Err(ErrorKind::Dataset(format!(
                        "Measure already defined with name: {measure_name}"
                    )));
                }
                for (group, id) in &group_by {
                    let clash = state
                        .measures
                        .iter()
                        .flat_map(|m| &m.group_by)
                        .any(|(g, other)| g == group && other != id);
                    if clash {
                        return Err(ErrorKind::Dataset(format!(
                            "Inconsistent definition for `group_by` column: {group}"
                        )));
                    }
                }
                intervals.sort();
                intervals.dedup();
                self.measures[index]
                    .measures
                    .push(crate::measures::Measure {
                        name: measure_name.to_string(),
                        numerator,
                        denominator,
                        group_by,
                        intervals,
                    });
                Ok(Obj::None)
            }
            "define_defaults" => {
                let bound = args.bind(
                    name,
                    &["numerator", "denominator", "group_by", "intervals"],
                    0,
                )?;
                if self.measures[index].defaults.is_some() {
                    return Err(ErrorKind::Dataset(
                        "Defaults already set; cannot call `define_defaults()` more than once"
                            .into(),
                    ));
                }
                let defaults = self.measure_args(bound)?;
                self.measures[index].defaults = Some(defaults);
                Ok(Obj::None)
            }
            "configure_dummy_data" => {
                if let Some((keyword, _)) = args
                    .keywords
                    .iter()
                    .find(|(k, _)| k == "additional_population_constraint")
                {
                    return Err(ErrorKind::NotSupported(format!(
                        "'{keyword}' for measures dummy data"
                    )));
                }
                if !args.positional.is_empty() {
                    return Err(ErrorKind::Type(
                        "configure_dummy_data() takes keyword arguments only".into(),
                    ));
                }
                let bound = args.bind(name, &["population_size", "legacy", "timeout"], 0)?;
                configure_dummy_data(&mut self.measures[index].dummy_data_config, &bound)?;
                Ok(Obj::None)
            }
            "configure_disclosure_control" => {
                if !args.positional.is_empty() {
                    return Err(ErrorKind::Type(
                        "configure_disclosure_control() takes keyword arguments only".into(),
                    ));
                }
                let bound = args.bind(name, &["enabled"], 0)?;
                self.measures[index].disclosure_control = match &bound[0] {
                    Some(v) => super::interp::truthy(v)?,
                    None => true,
                };
                Ok(Obj::None)
            }
            _ => Err(ErrorKind::NoAttribute {
                on: "the measures".into(),
                name: name.to_string(),
            }),
        }
    }

    /// Validates `numerator`, `denominator`, `group_by` and `intervals` (any may be absent)
    /// with the reference's messages.
    fn measure_args(&mut self, values: Vec<Option<Obj<'a>>>) -> Result<MeasureArgs> {
        let [numerator, denominator, group_by, intervals] =
            <[Option<Obj<'a>>; 4]>::try_from(values)
                .map_err(|_| ErrorKind::Invalid("measure arguments".into()))?;
        let mut out = MeasureArgs::default();
        for (value, context, slot) in [
            (numerator, "numerator", &mut out.numerator),
            (denominator, "denominator", &mut out.denominator),
        ] {
            let Some(value) = value.filter(|v| !matches!(v, Obj::None)) else {
                continue;
            };
            let id = self.patient_series(&value, context)?;
            match self.graph.scalar_type(id) {
                Some(ScalarType::Bool | ScalarType::Int) => *slot = Some(id),
                other => {
                    return Err(ErrorKind::Type(format!(
                        "invalid {context}:\nExpecting a boolean or integer series, got series of type '{}'",
                        other.map_or("set", ScalarType::name)
                    )));
                }
            }
        }
        if let Some(intervals) = intervals.filter(|v| !matches!(v, Obj::None)) {
            if let Obj::Duration(unit, amount) = &intervals {
                let repr = format!("{}(value={})", unit.name(), amount.to_text());
                return Err(ErrorKind::Dataset(format!(
                    "You must supply a date using `{repr}.starting_on('<DATE>')` or `{repr}.ending_on('<DATE>')`"
                )));
            }
            let Obj::List(items) = &intervals else {
                return Err(ErrorKind::Dataset(format!(
                    "`intervals` must be a list, got {}",
                    intervals.describe()
                )));
            };
            let mut pairs = Vec::new();
            for item in items.borrow().iter() {
                let pair = match item {
                    Obj::Tuple(pair) => match &pair[..] {
                        [Obj::Date(start), Obj::Date(end)] => Some((*start, *end)),
                        _ => None,
                    },
                    _ => None,
                };
                let Some((start, end)) = pair else {
                    return Err(ErrorKind::Dataset(format!(
                        "`intervals` must contain pairs of dates, got: {}",
                        item.to_text()
                    )));
                };
                if start > end {
                    return Err(ErrorKind::Dataset(format!(
                        "Interval start date must be before end date, got: ({start}, {end})"
                    )));
                }
                pairs.push((start, end));
            }
            out.intervals = Some(pairs);
        }
        if let Some(group_by) = group_by.filter(|v| !matches!(v, Obj::None)) {
            let Obj::Dict(pairs) = &group_by else {
                return Err(ErrorKind::Dataset(format!(
                    "`group_by` must be a dictionary, got {}",
                    group_by.describe()
                )));
            };
            let mut groups = Vec::new();
            for (key, value) in pairs.borrow().iter() {
                let Obj::Str(key) = key else {
                    return Err(ErrorKind::Dataset(format!(
                        "`group_by` names must be strings, got {}",
                        key.describe()
                    )));
                };
                if !is_valid_variable_name(key) {
                    return Err(ErrorKind::Dataset(format!(
                        "`group_by` names must start with a letter and contain only alphanumeric characters and underscores, got: '{key}'"
                    )));
                }
                let id = self.patient_series(value, &format!("`group_by` value for '{key}'"))?;
                groups.push((key.to_string(), id));
            }
            let reserved: Vec<&str> = groups
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| MEASURE_RESERVED_NAMES.contains(k))
                .collect();
            if !reserved.is_empty() {
                return Err(ErrorKind::Dataset(format!(
                    "disallowed `group_by` column name: {}",
                    reserved.join(", ")
                )));
            }
            out.group_by = Some(groups);
        }
        Ok(out)
    }

    /// A one-value-per-patient series, with the reference's messages otherwise.
    fn patient_series(&self, value: &Obj<'a>, context: &str) -> Result<NodeId> {
        let Obj::Series(id) = value else {
            return Err(ErrorKind::Type(format!(
                "invalid {context}:\nExpecting an ehrQL series, got {}",
                value.describe()
            )));
        };
        if self.graph.info(*id).domain != Domain::Patient {
            return Err(ErrorKind::Type(format!(
                "invalid {context}:\nExpecting a series with only one value per patient"
            )));
        }
        Ok(*id)
    }

    /// The naming rules shared by variables, event tables and their columns (`context`),
    /// which share one namespace per dataset (or per event table).
    fn check_attribute_name(name: &str, already_defined: bool, context: &str) -> Result<()> {
        if already_defined {
            return Err(ErrorKind::Dataset(format!(
                "'{name}' is already set and cannot be reassigned"
            )));
        }
        if RESERVED_NAMES.contains(&name) {
            return Err(ErrorKind::Dataset(format!(
                "'{name}' is not an allowed {context} name"
            )));
        }
        if !is_valid_variable_name(name) {
            return Err(ErrorKind::Dataset(format!(
                "{context} names must start with a letter, and contain only alphanumeric characters and underscores (you defined a {context} '{name}')"
            )));
        }
        Ok(())
    }

    /// `dataset.add_event_table(name, column=series, …)`: an event table of many-rows series
    /// from one table (patient-level series are repeated on each row).
    fn add_event_table(
        &mut self,
        index: usize,
        table: &str,
        columns: Vec<(String, Obj<'a>)>,
    ) -> Result<()> {
        let state = &self.datasets[index];
        let defined = state.variables.iter().any(|(n, _)| n == table)
            || state.events.iter().any(|(n, _)| n == table);
        Self::check_attribute_name(table, defined, "table")?;
        if columns.is_empty() {
            return Err(ErrorKind::Dataset(
                "event tables must be defined with at least one column".into(),
            ));
        }
        let mut members: Vec<(Arc<str>, NodeId)> = Vec::new();
        for (column, value) in columns {
            Self::check_attribute_name(&column, false, "column")?;
            let Obj::Series(node) = value else {
                return Err(ErrorKind::Type(format!(
                    "invalid column '{column}':\nExpecting an ehrQL series, got {}",
                    value.describe()
                )));
            };
            members.push((Arc::from(column.as_str()), node));
        }
        let frame = self
            .graph
            .series_collection_frame(members)
            .map_err(|e| match e {
                QueryError::PatientDomain { .. } => ErrorKind::Type(
                    "event tables must have columns with more than one value per patient; for single values per patient use dataset variables".into(),
                ),
                QueryError::DomainMismatch { .. } => ErrorKind::Dataset(
                    "cannot combine series drawn from different tables; create a new event table for these series".into(),
                ),
                other => ErrorKind::Query(other),
            })?;
        self.datasets[index].events.push((table.to_string(), frame));
        Ok(())
    }

    /// `dataset.<name> = value` or `dataset.add_column(name, value)` (spec §2.5 naming rules).
    pub(super) fn add_variable(&mut self, index: usize, name: &str, value: Obj<'a>) -> Result<()> {
        if name == "population" {
            return Err(ErrorKind::Dataset(
                "Cannot set variable 'population'; use define_population() instead".into(),
            ));
        }
        let state = &self.datasets[index];
        let defined = state.variables.iter().any(|(n, _)| n == name)
            || state.events.iter().any(|(n, _)| n == name);
        Self::check_attribute_name(name, defined, "variable")?;
        let node = match value {
            Obj::Series(n) => n,
            Obj::Frame(_) => {
                return Err(ErrorKind::Dataset(format!(
                    "Invalid variable '{name}'. Dataset variables must be values not whole rows"
                )));
            }
            other => {
                return Err(ErrorKind::Dataset(format!(
                    "Invalid variable '{name}'. Dataset variables must be ehrQL series, not {}",
                    other.describe()
                )));
            }
        };
        let info = self.graph.info(node);
        if info.domain != Domain::Patient {
            return Err(ErrorKind::Dataset(format!(
                "Invalid variable '{name}'. Dataset variables must return one row per patient"
            )));
        }
        if !matches!(info.kind, Kind::Series(SeriesType::Scalar(_))) {
            return Err(ErrorKind::Dataset(format!(
                "Invalid variable '{name}'. Dataset variables must hold single values"
            )));
        }
        self.datasets[index]
            .variables
            .push((name.to_string(), node));
        Ok(())
    }

    fn frame_method(&mut self, frame: NodeId, name: &str, args: Args<'a>) -> Result<Obj<'a>> {
        match name {
            "where" | "except_where" => {
                let [condition] = fixed::<1>(args.only_positional(name)?, name)?;
                let mut condition = self.node_for(&condition, Some(ScalarType::Bool))?;
                if name == "except_where" {
                    // Drops rows where the condition is true; NULL conditions keep the row.
                    let not = self.func(FunctionOp::Not, vec![condition])?;
                    let null = self.func(FunctionOp::IsNull, vec![condition])?;
                    condition = self.func(FunctionOp::Or, vec![not, null])?;
                }
                Ok(Obj::Frame(self.graph.filter(frame, condition)?))
            }
            "sort_by" => {
                let keys = args.only_positional(name)?;
                if keys.is_empty() {
                    return Err(ErrorKind::Type(
                        "sort_by() needs at least one series".into(),
                    ));
                }
                // The first key has the highest priority, so it is applied last.
                let mut sorted = frame;
                for key in keys.iter().rev() {
                    let Obj::Series(key) = key else {
                        return Err(ErrorKind::Type(format!(
                            "sort_by() needs series, not {}",
                            key.describe()
                        )));
                    };
                    sorted = self.graph.sort(sorted, *key)?;
                }
                Ok(Obj::Frame(sorted))
            }
            "first_for_patient" | "last_for_patient" => {
                fixed::<0>(args.only_positional(name)?, name)?;
                let position = if name == "first_for_patient" {
                    Position::First
                } else {
                    Position::Last
                };
                Ok(Obj::Frame(self.graph.pick(frame, position)?))
            }
            "exists_for_patient" | "count_for_patient" => {
                fixed::<0>(args.only_positional(name)?, name)?;
                let kind = if name == "exists_for_patient" {
                    AggregateKind::Exists
                } else {
                    AggregateKind::Count
                };
                Ok(Obj::Series(self.graph.aggregate(kind, frame)?))
            }
            "age_on" => {
                let [date] = fixed::<1>(args.only_positional(name)?, name)?;
                let dob = Obj::Series(self.column(frame, "date_of_birth")?);
                self.date_difference(&date, &dob, "years")
            }
            "is_alive_on" | "is_dead_on" => {
                let [date] = fixed::<1>(args.only_positional(name)?, name)?;
                let dod = self.column(frame, "date_of_death")?;
                let date = self.node_for(&date, Some(ScalarType::Date))?;
                let null = self.func(FunctionOp::IsNull, vec![dod])?;
                if name == "is_alive_on" {
                    let after = self.func(FunctionOp::Gt, vec![dod, date])?;
                    self.series_of(FunctionOp::Or, vec![after, null])
                } else {
                    let not_null = self.func(FunctionOp::Not, vec![null])?;
                    let before = self.func(FunctionOp::Lt, vec![dod, date])?;
                    self.series_of(FunctionOp::And, vec![not_null, before])
                }
            }
            "spanning" => {
                let [start, end] = fixed::<2>(args.only_positional(name)?, name)?;
                self.spanning(frame, &start, &end).map(Obj::Frame)
            }
            "exists_for_patient_on" => {
                let [date] = fixed::<1>(args.only_positional(name)?, name)?;
                let spanning = self.spanning(frame, &date, &date)?;
                Ok(Obj::Series(
                    self.graph.aggregate(AggregateKind::Exists, spanning)?,
                ))
            }
            "for_patient_on" => {
                let [date] = fixed::<1>(args.only_positional(name)?, name)?;
                let date = self.node_for(&date, Some(ScalarType::Date))?;
                let start = self.column(frame, "start_date")?;
                let end = self.column(frame, "end_date")?;
                let started = self.func(FunctionOp::Le, vec![start, date])?;
                let mut rows = self.graph.filter(frame, started)?;
                let ended = self.func(FunctionOp::Lt, vec![end, date])?;
                let not = self.func(FunctionOp::Not, vec![ended])?;
                let null = self.func(FunctionOp::IsNull, vec![ended])?;
                let keep = self.func(FunctionOp::Or, vec![not, null])?;
                rows = self.graph.filter(rows, keep)?;
                // Sort keys, least significant first (each sort is applied on top of the
                // previous). Registrations: start, end, practice. Addresses prefer a known
                // postcode, then start, end, address id.
                let keys = if self.has_column(frame, "practice_pseudo_id") {
                    vec![self.column(frame, "practice_pseudo_id")?, end, start]
                } else {
                    let has_postcode = self.column(frame, "has_postcode")?;
                    let one = self.graph.value(Literal::Scalar(Value::Int(1)))?;
                    let zero = self.graph.value(Literal::Scalar(Value::Int(0)))?;
                    let postcode_first = self
                        .graph
                        .case(vec![(has_postcode, Some(one))], Some(zero))?;
                    vec![
                        self.column(frame, "address_id")?,
                        end,
                        start,
                        postcode_first,
                    ]
                };
                for key in keys {
                    rows = self.graph.sort(rows, key)?;
                }
                Ok(Obj::Frame(self.graph.pick(rows, Position::Last)?))
            }
            "electronic_frailty_index" => {
                fixed::<0>(args.only_positional(name)?, name)?;
                let mut rows = frame;
                for (column, value) in [
                    ("algorithm_description", "UK Electronic Frailty Index (eFI)"),
                    ("algorithm_version", "1.0"),
                ] {
                    let column = self.column(frame, column)?;
                    let value = self
                        .graph
                        .value(Literal::Scalar(Value::Str(value.into())))?;
                    let equal = self.func(FunctionOp::Eq, vec![column, value])?;
                    rows = self.graph.filter(rows, equal)?;
                }
                Ok(Obj::Frame(rows))
            }
            "spanning_with_systmone" => {
                let [start, end] = fixed::<2>(args.only_positional(name)?, name)?;
                let spanning = self.spanning(frame, &start, &end)?;
                let start = self.node_for(&start, Some(ScalarType::Date))?;
                let go_live = self.column(frame, "practice_systmone_go_live_date")?;
                let live = self.func(FunctionOp::Le, vec![go_live, start])?;
                Ok(Obj::Frame(self.graph.filter(spanning, live)?))
            }
            "cause_of_death_is_in" => {
                let [codelist] = fixed::<1>(args.only_positional(name)?, name)?;
                let mut columns = vec!["underlying_cause_of_death".to_string()];
                columns.extend((1..=15).map(|i| format!("cause_of_death_{i:02}")));
                let mut combined: Option<NodeId> = None;
                for column in columns {
                    let series = self.column(frame, &column)?;
                    let Obj::Series(test) = self.is_in(series, &codelist)? else {
                        return Err(ErrorKind::Invalid("is_in() did not give a series".into()));
                    };
                    combined = Some(match combined {
                        None => test,
                        Some(c) => self.func(FunctionOp::Or, vec![c, test])?,
                    });
                }
                combined
                    .map(Obj::Series)
                    .ok_or_else(|| ErrorKind::Invalid("no cause of death columns".into()))
            }
            _ => Err(ErrorKind::NoAttribute {
                on: "the frame".into(),
                name: name.to_string(),
            }),
        }
    }

    /// `addresses.imd_quintile` / `imd_decile`: the rounded IMD rank banded into `bands`
    /// labels ("1 (most deprived)" … "N (least deprived)", else "unknown"), on the reference's
    /// boundaries (`int(32844 * k / bands)`).
    fn imd_band(&mut self, frame: NodeId, bands: i64) -> Result<Obj<'a>> {
        let imd = self.column(frame, "imd_rounded")?;
        let mut cases = Vec::new();
        for k in 1..=bands {
            let label = match k {
                1 => "1 (most deprived)".to_string(),
                k if k == bands => format!("{k} (least deprived)"),
                k => k.to_string(),
            };
            let bound = self
                .graph
                .value(Literal::Scalar(Value::Int(32_844 * k / bands)))?;
            let mut condition = self.func(FunctionOp::Le, vec![imd, bound])?;
            if k == 1 {
                let zero = self.graph.value(Literal::Scalar(Value::Int(0)))?;
                let non_negative = self.func(FunctionOp::Ge, vec![imd, zero])?;
                condition = self.func(FunctionOp::And, vec![non_negative, condition])?;
            }
            let label = self
                .graph
                .value(Literal::Scalar(Value::Str(label.into())))?;
            cases.push((condition, Some(label)));
        }
        let unknown = self
            .graph
            .value(Literal::Scalar(Value::Str("unknown".into())))?;
        Ok(Obj::Series(self.graph.case(cases, Some(unknown))?))
    }

    /// Registrations covering the whole of `start`..`end`.
    fn spanning(&mut self, frame: NodeId, start: &Obj<'a>, end: &Obj<'a>) -> Result<NodeId> {
        let start = self.node_for(start, Some(ScalarType::Date))?;
        let end = self.node_for(end, Some(ScalarType::Date))?;
        let start_date = self.column(frame, "start_date")?;
        let end_date = self.column(frame, "end_date")?;
        let started = self.func(FunctionOp::Le, vec![start_date, start])?;
        let after = self.func(FunctionOp::Gt, vec![end_date, end])?;
        let open = self.func(FunctionOp::IsNull, vec![end_date])?;
        let not_ended = self.func(FunctionOp::Or, vec![after, open])?;
        let condition = self.func(FunctionOp::And, vec![started, not_ended])?;
        Ok(self.graph.filter(frame, condition)?)
    }

    fn series_method(&mut self, series: NodeId, name: &str, args: Args<'a>) -> Result<Obj<'a>> {
        let ty = self.graph.scalar_type(series);
        let unary = |me: &mut Interp<'a>, op| me.series_of(op, vec![series]);
        let aggregate = |me: &mut Interp<'a>, kind| -> Result<Obj<'a>> {
            Ok(Obj::Series(me.graph.aggregate(kind, series)?))
        };
        match name {
            "is_null"
            | "is_not_null"
            | "as_int"
            | "as_float"
            | "to_first_of_year"
            | "to_first_of_month"
            | "count_distinct_for_patient"
            | "minimum_for_patient"
            | "maximum_for_patient"
            | "sum_for_patient"
            | "mean_for_patient" => {
                fixed::<0>(args.only_positional(name)?, name)?;
                match name {
                    "is_null" => unary(self, FunctionOp::IsNull),
                    "is_not_null" => {
                        let null = self.func(FunctionOp::IsNull, vec![series])?;
                        self.series_of(FunctionOp::Not, vec![null])
                    }
                    "as_int" => unary(self, FunctionOp::CastToInt),
                    "as_float" => unary(self, FunctionOp::CastToFloat),
                    "to_first_of_year" => unary(self, FunctionOp::ToFirstOfYear),
                    "to_first_of_month" => unary(self, FunctionOp::ToFirstOfMonth),
                    "count_distinct_for_patient" => aggregate(self, AggregateKind::CountDistinct),
                    "minimum_for_patient" => aggregate(self, AggregateKind::Min),
                    "maximum_for_patient" => aggregate(self, AggregateKind::Max),
                    "sum_for_patient" => aggregate(self, AggregateKind::Sum),
                    _ => aggregate(self, AggregateKind::Mean),
                }
            }
            "count_episodes_for_patient" => {
                let [gap] = fixed::<1>(args.only_positional(name)?, name)?;
                let days = match &gap {
                    Obj::Duration(DurationUnit::Days, n) => match **n {
                        Obj::Int(n) => Some(n),
                        _ => None,
                    },
                    Obj::Duration(DurationUnit::Weeks, n) => match **n {
                        Obj::Int(n) => n.checked_mul(7),
                        _ => None,
                    },
                    _ => None,
                };
                let Some(days) = days else {
                    return Err(ErrorKind::Type(
                        "count_episodes_for_patient() needs days(n) or weeks(n) with a whole number"
                            .into(),
                    ));
                };
                Ok(Obj::Series(self.graph.count_episodes(series, days)?))
            }
            "when_null_then" => {
                let [other] = fixed::<1>(args.only_positional(name)?, name)?;
                let null = self.func(FunctionOp::IsNull, vec![series])?;
                let present = self.func(FunctionOp::Not, vec![null])?;
                let default = self.node_for(&other, ty)?;
                Ok(Obj::Series(
                    self.graph
                        .case(vec![(present, Some(series))], Some(default))?,
                ))
            }
            "is_in" | "is_not_in" => {
                if let Some(ScalarType::MultiCodeString(_)) = ty {
                    // The reference's advice: membership of a packed code string is meaningless.
                    return Err(ErrorKind::Type(if name == "is_in" {
                        "You are attempting to use `.is_in()` on a column that contains multiple \
                         clinical codes joined together. This is not allowed. If you want to know \
                         if the field contains any of the codes from a codelist, then please use \
                         `.contains_any_of(codelist)` instead."
                            .into()
                    } else {
                        "You are attempting to use `.is_not_in()` on a column that contains \
                         multiple clinical codes joined together. This is not allowed. If you want \
                         to know if the field does not contain any of the codes from a codelist, \
                         then please use `~column.contains_any_of(codelist)` instead."
                            .into()
                    }));
                }
                let [values] = fixed::<1>(args.only_positional(name)?, name)?;
                let result = self.is_in(series, &values)?;
                if name == "is_in" {
                    return Ok(result);
                }
                let Obj::Series(test) = result else {
                    return Ok(result);
                };
                self.series_of(FunctionOp::Not, vec![test])
            }
            "map_values" | "to_category" => {
                let first = if name == "map_values" {
                    "mapping"
                } else {
                    "categorisation"
                };
                let bound = args.bind(name, &[first, "default"], 1)?;
                let mut bound = bound.into_iter();
                let mapping = bound.next().flatten().unwrap_or(Obj::None);
                let default = bound.next().flatten().unwrap_or(Obj::None);
                let Obj::Dict(pairs) = mapping else {
                    return Err(ErrorKind::Type(format!(
                        "map_values() needs a dict, not {}",
                        mapping.describe()
                    )));
                };
                let pairs = pairs.borrow().clone();
                let mut clauses = Vec::new();
                for (key, value) in pairs {
                    let key = self.node_for(&key, ty)?;
                    let condition = self.func(FunctionOp::Eq, vec![series, key])?;
                    clauses.push((condition, value));
                }
                self.build_case(clauses, default)
            }
            "is_before" | "is_on_or_before" | "is_after" | "is_on_or_after" => {
                let [other] = fixed::<1>(args.only_positional(name)?, name)?;
                let op = match name {
                    "is_before" => FunctionOp::Lt,
                    "is_on_or_before" => FunctionOp::Le,
                    "is_after" => FunctionOp::Gt,
                    _ => FunctionOp::Ge,
                };
                self.series_binary(op, &Obj::Series(series), &other)
            }
            "is_on_or_between" | "is_between_but_not_on" | "is_during" => {
                let (start, end) = if name == "is_during" {
                    let [interval] = fixed::<1>(args.only_positional(name)?, name)?;
                    let items = iterate(&interval)?;
                    let [start, end] = fixed::<2>(items, "is_during")?;
                    (start, end)
                } else {
                    let [start, end] = fixed::<2>(args.only_positional(name)?, name)?;
                    (start, end)
                };
                let (low, high) = if name == "is_between_but_not_on" {
                    (FunctionOp::Gt, FunctionOp::Lt)
                } else {
                    (FunctionOp::Ge, FunctionOp::Le)
                };
                let this = Obj::Series(series);
                let Obj::Series(a) = self.series_binary(low, &this, &start)? else {
                    return Err(ErrorKind::Invalid(
                        "comparison did not give a series".into(),
                    ));
                };
                let Obj::Series(b) = self.series_binary(high, &this, &end)? else {
                    return Err(ErrorKind::Invalid(
                        "comparison did not give a series".into(),
                    ));
                };
                self.series_of(FunctionOp::And, vec![a, b])
            }
            "contains" => {
                let [needle] = fixed::<1>(args.only_positional(name)?, name)?;
                let needle = self.contains_needle(ty, &needle)?;
                self.series_of(FunctionOp::StringContains, vec![series, needle])
            }
            "contains_any_of" => {
                let [needles] = fixed::<1>(args.only_positional(name)?, name)?;
                let mut combined: Option<NodeId> = None;
                for needle in iterate(&needles)? {
                    let needle = self.contains_needle(ty, &needle)?;
                    let test = self.func(FunctionOp::StringContains, vec![series, needle])?;
                    combined = Some(match combined {
                        None => test,
                        Some(c) => self.func(FunctionOp::Or, vec![c, test])?,
                    });
                }
                combined.map(Obj::Series).ok_or_else(|| {
                    ErrorKind::Invalid("contains_any_of() needs at least one value".into())
                })
            }
            _ => Err(ErrorKind::NoAttribute {
                on: "the series".into(),
                name: name.to_string(),
            }),
        }
    }

    /// The string `contains` looks for. On a multi-code string (`apcs.all_diagnoses`) it must
    /// be a code of that system, or a string that is a valid code or prefix of one, as in the
    /// reference; its text is what is searched for.
    fn contains_needle(&mut self, ty: Option<ScalarType>, needle: &Obj<'a>) -> Result<NodeId> {
        let Some(ScalarType::MultiCodeString(multi)) = ty else {
            return self.node_for(needle, Some(ScalarType::Str));
        };
        let system = multi.code_system();
        let text = match needle {
            Obj::Code(s, code) if *s == system => code.to_string(),
            Obj::Str(code) if multi.is_valid_prefix(code) => code.to_string(),
            other => {
                return Err(ErrorKind::Type(format!(
                    "Expecting a {}, or a string prefix of a {}; got {}",
                    system.class_name(),
                    system.class_name(),
                    other.describe()
                )));
            }
        };
        Ok(self.graph.value(Literal::Scalar(Value::Str(text.into())))?)
    }

    /// `series.is_in(values)`: a literal collection becomes a set value cast to the series'
    /// type; an event-level series becomes the set of its values per patient.
    fn is_in(&mut self, series: NodeId, values: &Obj<'a>) -> Result<Obj<'a>> {
        let rhs = match values {
            Obj::Series(other) => self.graph.aggregate(AggregateKind::CombineAsSet, *other)?,
            _ => {
                let ty = self.graph.scalar_type(series);
                let items = values
                    .items()
                    .filter(|_| !matches!(values, Obj::Str(_)))
                    .ok_or_else(|| {
                        ErrorKind::Type(format!(
                            "is_in() needs a list, tuple, set, dict or series, not {}",
                            values.describe()
                        ))
                    })?;
                let values = items
                    .iter()
                    .map(|item| literal_value(item, ty))
                    .collect::<Result<Vec<_>>>()?;
                self.graph.value(Literal::Set {
                    element: None,
                    values,
                })?
            }
        };
        self.series_of(FunctionOp::In, vec![series, rhs])
    }

    /// `case(when(c).then(v), …, otherwise=d)`: literal values take the type of the first
    /// series value, if any.
    pub(super) fn build_case(
        &mut self,
        clauses: Vec<(NodeId, Obj<'a>)>,
        default: Obj<'a>,
    ) -> Result<Obj<'a>> {
        let like = clauses
            .iter()
            .map(|(_, v)| v)
            .chain(std::iter::once(&default))
            .find_map(|v| self.series_type(v));
        let mut cases = Vec::with_capacity(clauses.len());
        for (condition, value) in &clauses {
            if cases.iter().any(|(c, _)| c == condition) {
                return Err(ErrorKind::Invalid(
                    "duplicate condition in case expression".into(),
                ));
            }
            let value = match value {
                Obj::None => None,
                v => Some(self.node_for(v, like)?),
            };
            cases.push((*condition, value));
        }
        let default = match &default {
            Obj::None => None,
            v => Some(self.node_for(v, like)?),
        };
        Ok(Obj::Series(self.graph.case(cases, default)?))
    }

    /// `when(condition)`.
    pub(super) fn when(&mut self, condition: &Obj<'a>) -> Result<Obj<'a>> {
        match condition {
            Obj::Series(n) => Ok(Obj::When(*n)),
            other => Err(ErrorKind::Type(format!(
                "when() needs a boolean series, not {}",
                other.describe()
            ))),
        }
    }

    /// `maximum_of(…)` / `minimum_of(…)`: literals take the type of the first series.
    pub(super) fn horizontal(&mut self, op: FunctionOp, values: &[Obj<'a>]) -> Result<Obj<'a>> {
        let Some(like) = values.iter().find_map(|v| self.series_type(v)) else {
            return Err(ErrorKind::Type(
                "maximum_of() and minimum_of() need at least one series".into(),
            ));
        };
        let nodes = values
            .iter()
            .map(|v| self.node_for(v, Some(like)))
            .collect::<Result<Vec<_>>>()?;
        self.series_of(op, nodes)
    }
}

const FRAME_METHODS: &[&str] = &[
    "where",
    "except_where",
    "sort_by",
    "first_for_patient",
    "last_for_patient",
    "exists_for_patient",
    "count_for_patient",
];

const SERIES_METHODS: &[&str] = &[
    "is_null",
    "is_not_null",
    "when_null_then",
    "is_in",
    "is_not_in",
    "map_values",
    "to_category",
    "as_int",
    "as_float",
    "is_before",
    "is_on_or_before",
    "is_after",
    "is_on_or_after",
    "is_on_or_between",
    "is_between_but_not_on",
    "is_during",
    "to_first_of_year",
    "to_first_of_month",
    "contains",
    "contains_any_of",
    "count_distinct_for_patient",
    "minimum_for_patient",
    "maximum_for_patient",
    "sum_for_patient",
    "mean_for_patient",
    "count_episodes_for_patient",
];

/// A literal as a query-model value, cast to the type of the series it meets (spec §2.1).
pub(super) fn literal_value(obj: &Obj<'_>, like: Option<ScalarType>) -> Result<Value> {
    Ok(match (obj, like) {
        (Obj::Bool(b), _) => Value::Bool(*b),
        (Obj::Int(i), Some(ScalarType::Float)) => Value::Float(*i as f64),
        (Obj::Int(i), _) => Value::Int(*i),
        (Obj::Float(f), _) => Value::Float(*f),
        (Obj::Str(s), Some(ScalarType::Date)) => {
            Value::Date(Date::parse_iso(s).ok_or_else(|| {
                ErrorKind::Invalid(format!("'{s}' is not a valid date (expected YYYY-MM-DD)"))
            })?)
        }
        (Obj::Str(s), Some(ScalarType::Code(system))) => Value::Code(system, s.as_ref().into()),
        (Obj::Str(s), _) => Value::Str(s.as_ref().into()),
        (Obj::Date(d), _) => Value::Date(*d),
        (Obj::Code(system, c), _) => Value::Code(*system, c.as_ref().into()),
        (Obj::None, _) => {
            return Err(ErrorKind::Type(
                "None cannot be used as a value here".into(),
            ));
        }
        (other, _) => {
            return Err(ErrorKind::Type(format!(
                "expected a series or a single value, got {}",
                other.describe()
            )));
        }
    })
}

fn plain_date(obj: &Obj<'_>) -> Result<Option<Date>> {
    Ok(match obj {
        Obj::Date(d) => Some(*d),
        Obj::Str(s) => Some(Date::parse_iso(s).ok_or_else(|| {
            ErrorKind::Invalid(format!("'{s}' is not a valid date (expected YYYY-MM-DD)"))
        })?),
        _ => None,
    })
}

/// `configure_dummy_data()`'s `population_size`, `legacy` and `timeout`, the first three of
/// `bound`, on datasets and measures alike.
fn configure_dummy_data(
    config: &mut crate::frontend::DummyDataConfig,
    bound: &[Option<Obj<'_>>],
) -> Result<()> {
    if let Some(v) = &bound[0] {
        config.population_size = expect_int(v, "population_size")?;
    }
    if let Some(v) = &bound[1] {
        config.legacy = super::interp::truthy(v)?;
    }
    if let Some(v) = &bound[2] {
        config.timeout = expect_int(v, "timeout")?;
    }
    Ok(())
}

fn expect_int(value: &Obj<'_>, name: &str) -> Result<i64> {
    match value {
        Obj::Int(i) => Ok(*i),
        other => Err(ErrorKind::Type(format!(
            "{name} must be an int, not {}",
            other.describe()
        ))),
    }
}

/// Exactly `N` arguments.
pub(super) fn fixed<'a, const N: usize>(
    values: Vec<Obj<'a>>,
    function: &str,
) -> Result<[Obj<'a>; N]> {
    let given = values.len();
    <[Obj<'a>; N]>::try_from(values).map_err(|_| {
        ErrorKind::Type(format!(
            "{function}() takes {N} argument{} but {given} were given",
            if N == 1 { "" } else { "s" }
        ))
    })
}

/// `days(a) ± days(b)` of the same unit.
fn duration_arith<'a>(op: Operator, lhs: Obj<'a>, rhs: Obj<'a>) -> Result<Obj<'a>> {
    if let (Obj::Duration(u, a), Obj::Duration(v, b)) = (&lhs, &rhs)
        && u == v
        && let (Obj::Int(a), Obj::Int(b)) = (&**a, &**b)
    {
        let sum = if op == Operator::Add {
            a.checked_add(*b)
        } else {
            a.checked_sub(*b)
        };
        if let Some(sum) = sum {
            return Ok(Obj::Duration(*u, Box::new(Obj::Int(sum))));
        }
    }
    Err(ErrorKind::NotSupported(
        "adding durations of different units or with series amounts".into(),
    ))
}
