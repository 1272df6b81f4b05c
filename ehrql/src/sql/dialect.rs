//! SQL dialects: everything that differs between databases (spec §5.3) behind one trait, so a
//! PostgreSQL dialect is a second implementation of [`Dialect`], not a rewrite of the compiler.
//!
//! Every method receives already-compiled SQL fragments and returns a fragment; fragments are
//! always parenthesised or atomic so they compose without precedence surprises.

use crate::query_model::{ScalarType, Value};

/// An integer operation that can overflow 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntOp {
    /// `+`.
    Add,
    /// `-`.
    Subtract,
    /// `*`.
    Multiply,
}

impl IntOp {
    /// The SQL operator.
    pub fn symbol(self) -> &'static str {
        match self {
            IntOp::Add => "+",
            IntOp::Subtract => "-",
            IntOp::Multiply => "*",
        }
    }
}

/// A part of a date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatePart {
    /// Year.
    Year,
    /// Month (1–12).
    Month,
    /// Day of month.
    Day,
}

/// What a database needs said differently.
pub trait Dialect {
    /// A name for `dump-dataset-sql` headers.
    fn name(&self) -> &'static str;
    /// Quotes an identifier.
    fn ident(&self, name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
    /// A literal value.
    fn literal(&self, value: &Value) -> String;
    /// The SQL column type used to store `ty` in source tables.
    fn column_type(&self, ty: ScalarType) -> &'static str;
    /// Statements creating temporary table `name` keyed uniquely by `patient_id`, with the
    /// given other columns, filled from `select` (whose columns come in the same order).
    fn create_patient_temp_table(
        &self,
        name: &str,
        columns: &[String],
        select: &str,
    ) -> Vec<String>;
    /// Statements creating temporary table `name` from `select` (rows not unique per patient),
    /// indexed on `index_columns`.
    fn create_temp_table(&self, name: &str, select: &str, index_columns: &[&str]) -> Vec<String>;
    /// Statements creating a one-column temporary table `name(value)` holding `values`
    /// (long `IN` lists); with `case_insensitive`, keyed under [`Dialect::case_insensitive`]'s
    /// collation, values differing only in case kept once.
    fn create_values_table(
        &self,
        name: &str,
        values: &[String],
        case_insensitive: bool,
    ) -> Vec<String>;
    /// Statements creating temporary table `name(value, mask)` from (literal, mask) rows,
    /// keyed by `value` (code maps: one lookup answers many `is_in` tests); with
    /// `case_insensitive`, keyed under [`Dialect::case_insensitive`]'s collation, the masks of
    /// values differing only in case ORed together.
    fn create_code_map(
        &self,
        name: &str,
        rows: &[(String, i64)],
        case_insensitive: bool,
    ) -> Vec<String>;
    /// A string expression whose comparisons (`=`, `<`, `IN`, `MIN`/`MAX`, `DISTINCT`,
    /// `ORDER BY`) ignore case while its value stays as stored: TPP's `Latin1_General_CI_AS`
    /// columns (spec §4.2). Wraps any collation the expression already has.
    fn case_insensitive(&self, expr: &str) -> String;
    /// Statements making [`Dialect::case_insensitive`] available, if the engine does not
    /// provide it on every connection.
    fn case_insensitive_setup(&self) -> Vec<String> {
        Vec::new()
    }
    /// A sort key ordering `expr` ignoring case, for sort-and-pick.
    fn case_insensitive_sort_key(&self, expr: &str) -> String {
        self.case_insensitive(expr)
    }
    /// Case-insensitive substring test with no wildcard characters.
    fn string_contains_case_insensitive(&self, haystack: &str, needle: &str) -> String;
    /// Drops a temporary table.
    fn drop_temp_table(&self, name: &str) -> String {
        format!("DROP TABLE IF EXISTS {}", self.ident(name))
    }
    /// One `ORDER BY` key of a sort-and-pick window, with ehrQL's NULL ordering (NULL
    /// smallest: first ascending, last descending). SQLite already sorts NULL smallest.
    fn order_key(&self, key: &str, descending: bool) -> String {
        if descending {
            format!("{key} DESC")
        } else {
            key.to_string()
        }
    }
    /// The functions computing sort-and-pick as an aggregate, if the database has them: with
    /// them every pick joins its table's single grouped scan; without them each pick needs a
    /// `ROW_NUMBER()` window of its own.
    fn pick_aggregate(&self) -> Option<PickAggregate> {
        None
    }
    /// Whether `GROUP BY GROUPING SETS` and `GROUPING()` exist (else measures use a
    /// `UNION ALL` of one `GROUP BY` per grouping set).
    fn has_grouping_sets(&self) -> bool {
        false
    }
    /// Longest `IN (...)` literal list before a values table is used instead.
    fn max_in_list_len(&self) -> usize {
        32
    }
    /// `date + days`.
    fn date_add_days(&self, date: &str, days: &str) -> String;
    /// `date + months`, rolling an overflowing day to the 1st of the next month.
    fn date_add_months(&self, date: &str, months: &str) -> String;
    /// `date + years` (29 Feb on a non-leap year becomes 1 Mar).
    fn date_add_years(&self, date: &str, years: &str) -> String;
    /// Whole days from `start` to `end`.
    fn date_diff_days(&self, end: &str, start: &str) -> String;
    /// A part of a date as an integer.
    fn date_part(&self, date: &str, part: DatePart) -> String;
    /// 1 January of the date's year.
    fn first_of_year(&self, date: &str) -> String;
    /// The 1st of the date's month.
    fn first_of_month(&self, date: &str) -> String;
    /// Float (or bool) to int, truncating toward zero.
    fn cast_to_int(&self, x: &str) -> String;
    /// Number to float.
    fn cast_to_float(&self, x: &str) -> String;
    /// Integer `+`, `-` or `*` (`op`), NULL when the result does not fit 64 bits, as the
    /// in-memory engine gives (SQLite would turn it into a float, PostgreSQL would raise).
    fn int_arithmetic(&self, lhs: &str, op: IntOp, rhs: &str) -> String;
    /// Float division; NULL when dividing by zero.
    fn true_divide(&self, lhs: &str, rhs: &str) -> String;
    /// Floor division; NULL when dividing by zero. `int_result` keeps an integer type.
    fn floor_divide(&self, lhs: &str, rhs: &str, int_result: bool) -> String;
    /// Power with ehrQL's NULL rules (0 to a negative power, a negative base to a fractional
    /// power).
    fn power(&self, lhs: &str, rhs: &str) -> String;
    /// Case-sensitive substring test with no wildcard characters.
    fn string_contains(&self, haystack: &str, needle: &str) -> String;
    /// Largest (or smallest) of several values, ignoring NULLs.
    fn greatest(&self, args: &[String], largest: bool) -> String;
    /// A boolean expression as a stored value (0/1/NULL or TRUE/FALSE/NULL).
    fn bool_value(&self, predicate: &str) -> String {
        predicate.to_string()
    }
    /// An expression testing a stored bool (`x` in SQLite, `x` in PostgreSQL too).
    fn bool_test(&self, value: &str) -> String {
        value.to_string()
    }
}

/// SQLite: bools are 0/1, dates ISO text, `FLOOR`/`POW` registered by the engine (the same
/// names as SQLite's math extension, so dumped SQL also runs under `sqlean`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SqliteDialect;

impl SqliteDialect {
    fn int(&self, s: &str) -> String {
        format!("CAST({s} AS INTEGER)")
    }
}

/// Sort-and-pick as an aggregate: `first(key, ...)` (or `last`) gives the keys of the row
/// whose keys are smallest (largest) in ehrQL order (NULL smallest), packed in one value;
/// `value(packed, index)` unpacks key `index`. The picked columns are among the keys (the
/// `rewrite_sorts` rule), so one aggregate per pick serves every column it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickAggregate {
    /// The aggregate for `first_for_patient`.
    pub first: &'static str,
    /// The aggregate for `last_for_patient`.
    pub last: &'static str,
    /// The scalar function unpacking one key.
    pub value: &'static str,
}

/// The SQLite engine's pick functions, registered on every connection it opens.
pub const SQLITE_PICK_AGGREGATE: PickAggregate = PickAggregate {
    first: "ehrql_pick_first",
    last: "ehrql_pick_last",
    value: "ehrql_pick_value",
};

/// The collation the SQLite engine registers for case-insensitive strings: the order of the
/// values' lower-case forms (spec §4.2: TPP's `Latin1_General_CI_AS`).
pub const SQLITE_CASE_INSENSITIVE: &str = "ehrql_ci";

/// The scalar function the SQLite engine registers giving a string's lower-case form (other
/// values unchanged): the sort key under [`SQLITE_CASE_INSENSITIVE`].
pub const SQLITE_CASE_FOLD: &str = "ehrql_casefold";

impl Dialect for SqliteDialect {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn pick_aggregate(&self) -> Option<PickAggregate> {
        Some(SQLITE_PICK_AGGREGATE)
    }

    fn literal(&self, value: &Value) -> String {
        match value {
            Value::Null => "NULL".into(),
            Value::Bool(b) => if *b { "1" } else { "0" }.into(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) if f.is_finite() => crate::output::python_float_repr(*f),
            Value::Float(_) => "NULL".into(),
            Value::Str(s) | Value::Code(_, s) => format!("'{}'", s.replace('\'', "''")),
            Value::Date(d) => format!("'{d}'"),
        }
    }

    fn column_type(&self, ty: ScalarType) -> &'static str {
        match ty.primitive() {
            ScalarType::Bool | ScalarType::Int => "INTEGER",
            ScalarType::Float => "REAL",
            _ => "TEXT",
        }
    }

    fn create_patient_temp_table(
        &self,
        name: &str,
        columns: &[String],
        select: &str,
    ) -> Vec<String> {
        let mut cols = String::from("patient_id INTEGER PRIMARY KEY");
        for c in columns {
            cols.push_str(", ");
            cols.push_str(&self.ident(c));
        }
        let name = self.ident(name);
        vec![
            format!("CREATE TEMPORARY TABLE {name} ({cols})"),
            format!("INSERT INTO {name} {select}"),
        ]
    }

    fn create_temp_table(&self, name: &str, select: &str, index_columns: &[&str]) -> Vec<String> {
        let quoted = self.ident(name);
        let cols: Vec<String> = index_columns.iter().map(|c| self.ident(c)).collect();
        vec![
            format!("CREATE TEMPORARY TABLE {quoted} AS {select}"),
            format!(
                "CREATE INDEX {} ON {quoted} ({})",
                self.ident(&format!("ix_{name}")),
                cols.join(", ")
            ),
        ]
    }

    fn create_values_table(
        &self,
        name: &str,
        values: &[String],
        case_insensitive: bool,
    ) -> Vec<String> {
        let quoted = self.ident(name);
        let rows: Vec<String> = values.iter().map(|v| format!("({v})")).collect();
        let collate = if case_insensitive {
            format!(" COLLATE {SQLITE_CASE_INSENSITIVE}")
        } else {
            String::new()
        };
        vec![
            format!("CREATE TEMPORARY TABLE {quoted} (value{collate} PRIMARY KEY) WITHOUT ROWID"),
            format!(
                "INSERT OR IGNORE INTO {quoted} (value) VALUES {}",
                rows.join(", ")
            ),
        ]
    }

    fn create_code_map(
        &self,
        name: &str,
        rows: &[(String, i64)],
        case_insensitive: bool,
    ) -> Vec<String> {
        let quoted = self.ident(name);
        let values: Vec<String> = rows.iter().map(|(v, m)| format!("({v}, {m})")).collect();
        if case_insensitive {
            // Rows differing only in case collide on the key: their masks are merged.
            return vec![
                format!(
                    "CREATE TEMPORARY TABLE {quoted} (value COLLATE {SQLITE_CASE_INSENSITIVE} PRIMARY KEY, mask INTEGER NOT NULL) WITHOUT ROWID"
                ),
                format!(
                    "INSERT INTO {quoted} (value, mask) VALUES {} ON CONFLICT (value) DO UPDATE SET mask = mask | excluded.mask",
                    values.join(", ")
                ),
            ];
        }
        vec![
            format!(
                "CREATE TEMPORARY TABLE {quoted} (value PRIMARY KEY, mask INTEGER NOT NULL) WITHOUT ROWID"
            ),
            format!(
                "INSERT INTO {quoted} (value, mask) VALUES {}",
                values.join(", ")
            ),
        ]
    }

    fn case_insensitive(&self, expr: &str) -> String {
        format!("({expr} COLLATE {SQLITE_CASE_INSENSITIVE})")
    }

    fn case_insensitive_sort_key(&self, expr: &str) -> String {
        // The pick aggregates compare values, not collations: they sort by the folded value.
        format!("{SQLITE_CASE_FOLD}({expr})")
    }

    fn string_contains_case_insensitive(&self, haystack: &str, needle: &str) -> String {
        format!("(instr({SQLITE_CASE_FOLD}({haystack}), {SQLITE_CASE_FOLD}({needle})) > 0)")
    }

    fn date_add_days(&self, date: &str, days: &str) -> String {
        format!("date({date}, ({days}) || ' days')")
    }

    fn date_add_months(&self, date: &str, months: &str) -> String {
        // SQLite normalises 31 Feb to 3 Mar; ehrQL wants 1 Mar. Build the date from the 1st of
        // the target month; if the day overflowed, take the 1st of the month after instead.
        let day = self.date_part(date, DatePart::Day);
        let target = format!(
            "date({date}, 'start of month', ({months}) || ' months', ({day} - 1) || ' days')"
        );
        format!(
            "(CASE WHEN {} = {day} THEN {target} ELSE date({date}, 'start of month', (({months}) + 1) || ' months') END)",
            self.date_part(&target, DatePart::Day)
        )
    }

    fn date_add_years(&self, date: &str, years: &str) -> String {
        self.date_add_months(date, &format!("({years}) * 12"))
    }

    fn date_diff_days(&self, end: &str, start: &str) -> String {
        self.int(&format!("julianday({end}) - julianday({start})"))
    }

    fn date_part(&self, date: &str, part: DatePart) -> String {
        // Dates are ISO text, so a part is a fixed slice: much cheaper than strftime, which
        // parses the whole date.
        let (start, length) = match part {
            DatePart::Year => (1, 4),
            DatePart::Month => (6, 2),
            DatePart::Day => (9, 2),
        };
        self.int(&format!("substr({date}, {start}, {length})"))
    }

    fn first_of_year(&self, date: &str) -> String {
        format!("date({date}, 'start of year')")
    }

    fn first_of_month(&self, date: &str) -> String {
        format!("date({date}, 'start of month')")
    }

    fn cast_to_int(&self, x: &str) -> String {
        self.int(x)
    }

    fn cast_to_float(&self, x: &str) -> String {
        format!("CAST({x} AS REAL)")
    }

    fn int_arithmetic(&self, lhs: &str, op: IntOp, rhs: &str) -> String {
        // Registered by the SQLite engine: checked 64-bit arithmetic.
        let function = match op {
            IntOp::Add => "EHRQL_INT_ADD",
            IntOp::Subtract => "EHRQL_INT_SUB",
            IntOp::Multiply => "EHRQL_INT_MUL",
        };
        format!("{function}({lhs}, {rhs})")
    }

    fn true_divide(&self, lhs: &str, rhs: &str) -> String {
        // SQLite gives NULL for division by zero.
        format!("(CAST({lhs} AS REAL) / {rhs})")
    }

    fn floor_divide(&self, lhs: &str, rhs: &str, int_result: bool) -> String {
        let floor = format!("FLOOR(CAST({lhs} AS REAL) / {rhs})");
        if int_result { self.int(&floor) } else { floor }
    }

    fn power(&self, lhs: &str, rhs: &str) -> String {
        // The registered POW applies ehrQL's NULL rules and keeps integer powers integral.
        format!("POW({lhs}, {rhs})")
    }

    fn string_contains(&self, haystack: &str, needle: &str) -> String {
        // instr is case-sensitive and has no wildcards, unlike LIKE.
        format!("(instr({haystack}, {needle}) > 0)")
    }

    fn greatest(&self, args: &[String], largest: bool) -> String {
        if args.len() == 1 {
            return args[0].clone();
        }
        // SQLite's scalar MAX/MIN return NULL if any argument is NULL; "cyclic COALESCE"
        // makes each argument fall back to the others, so NULLs are skipped.
        let n = args.len();
        let coalesced: Vec<String> = (0..n)
            .map(|i| {
                let rotated: Vec<&str> = (0..n).map(|j| args[(i + j) % n].as_str()).collect();
                format!("COALESCE({})", rotated.join(", "))
            })
            .collect();
        format!(
            "{}({})",
            if largest { "MAX" } else { "MIN" },
            coalesced.join(", ")
        )
    }
}
