//! The PostgreSQL dialect (spec §5.3): native booleans and dates, temporary tables filled by
//! `CREATE TEMPORARY TABLE … AS`, explicit NULL ordering, and a few helper functions the engine
//! creates in the session's `pg_temp` schema ([`SESSION_FUNCTIONS`]) where a plain expression
//! cannot match the in-memory engine for every argument type.
//!
//! Where PostgreSQL's defaults differ from ehrQL's semantics, and what this dialect does:
//! - NULLs sort last ascending: sort keys say `NULLS FIRST` / `NULLS LAST` explicitly.
//! - `CAST(float AS BIGINT)` rounds: `pg_temp.ehrql_int` truncates toward zero.
//! - `bigint / bigint` truncates and `power()` raises errors: integer floor division and
//!   powers go through `pg_temp` functions giving ehrQL's values (NULL where the reference
//!   gives NULL).
//! - `date + interval '1 month'` clips 31 Jan to 28 Feb: month arithmetic starts from the 1st
//!   of the month, adds the day, and takes the earlier of that and the 1st of the month after,
//!   so an overflowing day rolls to the 1st of the next month as in ehrQL.
//! - String order depends on the collation: string literals carry `COLLATE "C"` and tables
//!   loaded by [`crate::engines::postgres`] declare text columns `COLLATE "C"`, so comparisons
//!   and sorts are by code point, as in SQLite and the in-memory engine.

use super::dialect::{DatePart, Dialect, IntOp};
use crate::query_model::{ScalarType, Value};

/// The session's case-insensitive collation ([`Dialect::case_insensitive_setup`] creates it).
const POSTGRES_CASE_INSENSITIVE: &str = "pg_temp.ehrql_ci";

/// PostgreSQL (tested against version 15).
#[derive(Clone, Copy, Debug, Default)]
pub struct PostgresDialect;

/// Statements creating the helper functions the dialect's SQL calls, in the session's
/// temporary schema (so nothing is written to the database). The engine runs them once per
/// connection; `dump-dataset-sql` output needs them too.
///
/// Overloads are chosen by PostgreSQL's type resolution: each common argument type
/// (`boolean`, `integer`, `bigint`, `numeric` from `SUM`/`AVG`, `double precision`) has an
/// exact match, so no call is ambiguous.
pub const SESSION_FUNCTIONS: &[&str] = &[
    // CastToInt: truncate toward zero; NULL outside the 64-bit range (as the reference).
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_int(x boolean) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT CAST(CAST(x AS integer) AS bigint) $$",
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_int(x integer) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT CAST(x AS bigint) $$",
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_int(x bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT x $$",
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_int(x numeric) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN trunc(x) BETWEEN -9223372036854775808 AND 9223372036854775807 THEN CAST(trunc(x) AS bigint) END $$",
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_int(x double precision) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN x >= CAST('-9223372036854775808' AS double precision) AND x < CAST('9223372036854775808' AS double precision) THEN CAST(trunc(x) AS bigint) END $$",
    // CastToFloat.
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_float(x boolean) RETURNS double precision LANGUAGE sql IMMUTABLE AS $$ SELECT CAST(CAST(x AS integer) AS double precision) $$",
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_float(x integer) RETURNS double precision LANGUAGE sql IMMUTABLE AS $$ SELECT CAST(x AS double precision) $$",
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_float(x bigint) RETURNS double precision LANGUAGE sql IMMUTABLE AS $$ SELECT CAST(x AS double precision) $$",
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_float(x numeric) RETURNS double precision LANGUAGE sql IMMUTABLE AS $$ SELECT CAST(x AS double precision) $$",
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_float(x double precision) RETURNS double precision LANGUAGE sql IMMUTABLE AS $$ SELECT x $$",
    // Integer floor division (exact, in numeric); NULL when dividing by zero or overflowing.
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_floor_div(a numeric, b numeric) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN b = 0 THEN NULL ELSE pg_temp.ehrql_int(floor(div(a, b) - CASE WHEN mod(a, b) <> 0 AND (a < 0) <> (b < 0) THEN 1 ELSE 0 END)) END $$",
    // Integer powers stay integers: NULL for a negative exponent or a result beyond 64 bits.
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_power(a bigint, b bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN b < 0 THEN NULL WHEN a BETWEEN -1 AND 1 THEN CASE WHEN a = 1 OR b = 0 THEN 1 WHEN a = 0 THEN 0 WHEN mod(b, 2) = 0 THEN 1 ELSE -1 END WHEN b > 63 THEN NULL ELSE pg_temp.ehrql_int(power(CAST(a AS numeric), CAST(b AS numeric))) END $$",
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_power(a integer, b integer) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT pg_temp.ehrql_power(CAST(a AS bigint), CAST(b AS bigint)) $$",
    // A SUM of integers is numeric: keep integer semantics.
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_power(a numeric, b numeric) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT pg_temp.ehrql_power(pg_temp.ehrql_int(a), pg_temp.ehrql_int(b)) $$",
    // Float powers: NULL for 0 to a negative power, a negative base to a fractional power, or
    // a result beyond the double range (PostgreSQL raises errors for all three); an
    // underflow gives 0 as in IEEE arithmetic.
    "CREATE OR REPLACE FUNCTION pg_temp.ehrql_power(a double precision, b double precision) RETURNS double precision LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN a = 0 AND b < 0 THEN NULL WHEN a < 0 AND b <> trunc(b) THEN NULL WHEN a = 0 OR b = 0 OR abs(a) = 1 THEN power(a, b) WHEN b * ln(abs(a)) > 709.78 THEN NULL WHEN b * ln(abs(a)) < -745.1 THEN CAST(0 AS double precision) ELSE power(a, b) END $$",
];

impl PostgresDialect {
    fn date_part_int(date: &str, field: &str) -> String {
        format!("CAST(EXTRACT({field} FROM {date}) AS BIGINT)")
    }

    /// `date_trunc` on a timestamp *without* time zone: a bare date would resolve to the
    /// `timestamptz` overload and depend on the session's time zone.
    fn truncate(date: &str, field: &str) -> String {
        format!("CAST(date_trunc('{field}', CAST({date} AS TIMESTAMP)) AS DATE)")
    }

    fn analyze(&self, name: &str) -> String {
        // Temporary tables are never analysed by autovacuum; without statistics the planner
        // guesses row counts and may pick nested loops over large scans.
        format!("ANALYZE {}", self.ident(name))
    }
}

impl Dialect for PostgresDialect {
    fn has_grouping_sets(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "postgresql"
    }

    fn literal(&self, value: &Value) -> String {
        match value {
            Value::Null => "NULL".into(),
            Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
            // i64::MIN's digits alone are out of range, so the negation would make it numeric.
            Value::Int(i64::MIN) => "(-9223372036854775807 - 1)".into(),
            Value::Int(i) => i.to_string(),
            // A bare `1.5` is numeric; the quoted form parses straight to a double.
            Value::Float(f) if f.is_finite() => format!(
                "CAST('{}' AS DOUBLE PRECISION)",
                crate::output::python_float_repr(*f)
            ),
            Value::Float(_) => "NULL".into(),
            Value::Str(s) | Value::Code(_, s) => {
                format!("'{}' COLLATE \"C\"", s.replace('\'', "''"))
            }
            Value::Date(d) => format!("DATE '{d}'"),
        }
    }

    fn column_type(&self, ty: ScalarType) -> &'static str {
        match ty.primitive() {
            ScalarType::Bool => "BOOLEAN",
            ScalarType::Int => "BIGINT",
            ScalarType::Float => "DOUBLE PRECISION",
            ScalarType::Date => "DATE",
            _ => "TEXT COLLATE \"C\"",
        }
    }

    fn create_patient_temp_table(
        &self,
        name: &str,
        columns: &[String],
        select: &str,
    ) -> Vec<String> {
        let mut cols = String::from("patient_id");
        for c in columns {
            cols.push_str(", ");
            cols.push_str(&self.ident(c));
        }
        let quoted = self.ident(name);
        vec![
            format!("CREATE TEMPORARY TABLE {quoted} ({cols}) AS {select}"),
            format!("ALTER TABLE {quoted} ADD PRIMARY KEY (patient_id)"),
            self.analyze(name),
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
            self.analyze(name),
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
        let value = if case_insensitive {
            self.case_insensitive("value")
        } else {
            "value".into()
        };
        vec![
            format!(
                "CREATE TEMPORARY TABLE {quoted} AS SELECT DISTINCT {value} AS value FROM (VALUES {}) AS v (value)",
                rows.join(", ")
            ),
            format!("ALTER TABLE {quoted} ADD PRIMARY KEY (value)"),
            self.analyze(name),
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
        let select = if case_insensitive {
            // Values differing only in case form one group: their masks are merged.
            format!(
                "SELECT {} AS value, CAST(bit_or(mask) AS BIGINT) AS mask FROM (VALUES {}) AS v (value, mask) GROUP BY 1",
                self.case_insensitive("value"),
                values.join(", ")
            )
        } else {
            format!(
                "SELECT value, CAST(mask AS BIGINT) AS mask FROM (VALUES {}) AS v (value, mask)",
                values.join(", ")
            )
        };
        vec![
            format!("CREATE TEMPORARY TABLE {quoted} AS {select}"),
            format!("ALTER TABLE {quoted} ADD PRIMARY KEY (value)"),
            self.analyze(name),
        ]
    }

    fn case_insensitive(&self, expr: &str) -> String {
        // An outer COLLATE overrides the literals' "C".
        format!("({expr} COLLATE {POSTGRES_CASE_INSENSITIVE})")
    }

    fn case_insensitive_setup(&self) -> Vec<String> {
        // ICU's root locale at strength 2 ignores case but not accents, like
        // Latin1_General_CI_AS; a temporary collation disappears with the session.
        vec![format!(
            "CREATE COLLATION IF NOT EXISTS {POSTGRES_CASE_INSENSITIVE} (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
        )]
    }

    fn string_contains_case_insensitive(&self, haystack: &str, needle: &str) -> String {
        // Substring search refuses a nondeterministic collation (before PostgreSQL 18):
        // search the lower-case forms, lowered under ICU's rules, in byte order.
        let lower = |x: &str| format!("lower({}) COLLATE \"C\"", self.case_insensitive(x));
        format!("(strpos({}, {}) > 0)", lower(haystack), lower(needle))
    }

    fn order_key(&self, key: &str, descending: bool) -> String {
        if descending {
            format!("{key} DESC NULLS LAST")
        } else {
            format!("{key} ASC NULLS FIRST")
        }
    }

    fn date_add_days(&self, date: &str, days: &str) -> String {
        format!("({date} + CAST({days} AS INTEGER))")
    }

    fn date_add_months(&self, date: &str, months: &str) -> String {
        // From the 1st of the month: the target month's 1st plus (day - 1) days overflows into
        // the next month exactly when ehrQL rolls over, and then the 1st of the month after
        // the target is the earlier of the two. LEAST skips NULLs, but both arguments are
        // NULL together.
        let first = Self::truncate(date, "month");
        let months = format!("CAST({months} AS INTEGER)");
        let day = Self::date_part_int(date, "DAY");
        format!(
            "LEAST(CAST({first} + make_interval(months => {months}) AS DATE) + CAST({day} - 1 AS INTEGER), CAST({first} + make_interval(months => {months} + 1) AS DATE))"
        )
    }

    fn date_add_years(&self, date: &str, years: &str) -> String {
        self.date_add_months(date, &format!("(({years}) * 12)"))
    }

    fn date_diff_days(&self, end: &str, start: &str) -> String {
        format!("CAST(({end}) - ({start}) AS BIGINT)")
    }

    fn date_part(&self, date: &str, part: DatePart) -> String {
        let field = match part {
            DatePart::Year => "YEAR",
            DatePart::Month => "MONTH",
            DatePart::Day => "DAY",
        };
        Self::date_part_int(date, field)
    }

    fn first_of_year(&self, date: &str) -> String {
        Self::truncate(date, "year")
    }

    fn first_of_month(&self, date: &str) -> String {
        Self::truncate(date, "month")
    }

    fn cast_to_int(&self, x: &str) -> String {
        format!("pg_temp.ehrql_int({x})")
    }

    fn cast_to_float(&self, x: &str) -> String {
        format!("pg_temp.ehrql_float({x})")
    }

    fn true_divide(&self, lhs: &str, rhs: &str) -> String {
        format!("(CAST({lhs} AS DOUBLE PRECISION) / NULLIF(CAST({rhs} AS DOUBLE PRECISION), 0))")
    }

    fn int_arithmetic(&self, lhs: &str, op: IntOp, rhs: &str) -> String {
        // In NUMERIC nothing overflows; ehrql_int gives NULL outside 64 bits.
        format!(
            "pg_temp.ehrql_int(CAST({lhs} AS NUMERIC) {} CAST({rhs} AS NUMERIC))",
            op.symbol()
        )
    }

    fn floor_divide(&self, lhs: &str, rhs: &str, int_result: bool) -> String {
        if int_result {
            format!("pg_temp.ehrql_floor_div(CAST({lhs} AS NUMERIC), CAST({rhs} AS NUMERIC))")
        } else {
            format!(
                "FLOOR(CAST({lhs} AS DOUBLE PRECISION) / NULLIF(CAST({rhs} AS DOUBLE PRECISION), 0))"
            )
        }
    }

    fn power(&self, lhs: &str, rhs: &str) -> String {
        format!("pg_temp.ehrql_power({lhs}, {rhs})")
    }

    fn string_contains(&self, haystack: &str, needle: &str) -> String {
        // strpos is case-sensitive and has no wildcards, unlike LIKE.
        format!("(strpos({haystack}, {needle}) > 0)")
    }

    fn greatest(&self, args: &[String], largest: bool) -> String {
        if args.len() == 1 {
            return args[0].clone();
        }
        // PostgreSQL's GREATEST and LEAST already skip NULLs.
        format!(
            "{}({})",
            if largest { "GREATEST" } else { "LEAST" },
            args.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query_model::Date;

    #[test]
    fn literals_are_typed() {
        let d = PostgresDialect;
        assert_eq!(d.literal(&Value::Bool(true)), "TRUE");
        assert_eq!(d.literal(&Value::Int(-3)), "-3");
        assert_eq!(
            d.literal(&Value::Int(i64::MIN)),
            "(-9223372036854775807 - 1)"
        );
        assert_eq!(
            d.literal(&Value::Float(0.5)),
            "CAST('0.5' AS DOUBLE PRECISION)"
        );
        assert_eq!(d.literal(&Value::Float(f64::NAN)), "NULL");
        assert_eq!(
            d.literal(&Value::Str("it's".into())),
            "'it''s' COLLATE \"C\""
        );
        let date = Date::from_ymd(2024, 2, 29).unwrap();
        assert_eq!(d.literal(&Value::Date(date)), "DATE '2024-02-29'");
    }

    #[test]
    fn sort_keys_put_null_smallest() {
        let d = PostgresDialect;
        assert_eq!(d.order_key("x", false), "x ASC NULLS FIRST");
        assert_eq!(d.order_key("x", true), "x DESC NULLS LAST");
    }
}
