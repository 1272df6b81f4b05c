//! The PostgreSQL engine: compiles the dataset with [`crate::sql`] and the PostgreSQL dialect,
//! runs the setup statements on one connection (temporary tables live as long as it does),
//! and streams the results query row by row into the sink.
//!
//! The [`Engine`] trait is synchronous, so the engine owns a current-thread tokio runtime and
//! drives `tokio-postgres` with `block_on`; the connection task runs on that runtime whenever
//! the engine is waiting on the server. Results come from `query_raw`: the connection hands
//! rows over through a bounded channel, so a slow sink slows the socket reads and the result
//! is never held in memory. Values arrive in PostgreSQL's binary format and are decoded
//! through the output column types (`numeric` from `SUM`/`AVG` included).

use std::io::Cursor;
use std::str::FromStr;

use futures_util::{SinkExt, StreamExt};
use tokio::runtime::Runtime;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, Config, NoTls};

use super::{Database, EngineError, RowSink, SqlEngine};
use crate::query_model::{Dataset, Date, ScalarType, Value};
use crate::sql::postgres::SESSION_FUNCTIONS;
use crate::sql::{self, Dialect, PostgresDialect, StatementKind};

/// Bytes of `COPY` text sent to the server at a time when loading a [`Database`].
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Days from 1970-01-01 (our epoch) to 2000-01-01 (PostgreSQL's).
const POSTGRES_EPOCH_DAYS: i64 = 10_957;

/// Runs datasets against a PostgreSQL database whose tables are named and shaped like the
/// query-model tables, over one connection.
pub struct PostgresEngine {
    /// Drives the connection task and every query; owned so that dropping the engine closes
    /// the connection (and with it the session's temporary tables).
    runtime: Runtime,
    client: Client,
    /// A backend's views over its raw tables, created at the start of every run (each run
    /// first discards the session's temporary objects).
    table_views: Vec<String>,
    /// A backend's case-insensitive string columns (none by default).
    case_insensitive: sql::CaseInsensitiveColumns,
}

impl std::fmt::Debug for PostgresEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEngine").finish_non_exhaustive()
    }
}

/// Whether `dsn` names a PostgreSQL database (`postgresql://` or `postgres://`).
pub fn is_postgres_dsn(dsn: &str) -> bool {
    dsn.starts_with("postgresql://") || dsn.starts_with("postgres://")
}

impl PostgresEngine {
    /// Connects to the database named by `dsn` (a `postgresql://user:password@host:port/db`
    /// URL or a libpq key-value string), without TLS.
    ///
    /// # Errors
    /// An unparsable DSN, or the server refusing or failing the connection.
    pub fn connect(dsn: &str) -> Result<PostgresEngine, EngineError> {
        let config = Config::from_str(dsn).map_err(EngineError::Postgres)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| EngineError::Unsupported(format!("a tokio runtime ({e})")))?;
        let client = runtime.block_on(async {
            let (client, connection) = config.connect(NoTls).await?;
            // The task ends when the client is dropped or the server closes the socket; a
            // failure shows up as an error on the next query, so its result is only logged.
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "postgres connection closed");
                }
            });
            Ok::<Client, tokio_postgres::Error>(client)
        })?;
        let engine = PostgresEngine {
            runtime,
            client,
            table_views: Vec::new(),
            case_insensitive: sql::CaseInsensitiveColumns::default(),
        };
        // Sorting and comparing must not depend on the server's locale or time zone.
        engine.execute("SET client_min_messages = warning; SET TimeZone = 'UTC'")?;
        Ok(engine)
    }

    /// This engine, creating `views` (`CREATE TEMP VIEW <ehrQL table> AS …`, from a backend)
    /// before each run's queries.
    pub fn with_table_views(self, views: Vec<String>) -> PostgresEngine {
        PostgresEngine {
            table_views: views,
            ..self
        }
    }

    /// This engine, comparing the strings of `columns` case-insensitively (a backend's
    /// collations).
    pub fn with_case_insensitive_columns(
        self,
        columns: sql::CaseInsensitiveColumns,
    ) -> PostgresEngine {
        PostgresEngine {
            case_insensitive: columns,
            ..self
        }
    }

    /// Runs one or more `;`-separated statements (no results), e.g. creating a schema.
    ///
    /// # Errors
    /// The database's error.
    pub fn execute(&self, sql: &str) -> Result<(), EngineError> {
        self.runtime.block_on(self.client.batch_execute(sql))?;
        Ok(())
    }

    /// Creates `database`'s tables in the current schema (replacing tables of the same name),
    /// with `patient_id` indexes, and inserts the rows. Text columns use the "C" collation.
    ///
    /// # Errors
    /// The database's error.
    pub fn load_database(&self, database: &Database) -> Result<(), EngineError> {
        let dialect = PostgresDialect;
        for table in database.tables() {
            let schema = &table.schema;
            let name = dialect.ident(&schema.name);
            let mut columns = vec!["patient_id BIGINT NOT NULL".to_string()];
            columns.extend(
                schema
                    .columns
                    .iter()
                    .map(|c| format!("{} {}", dialect.ident(&c.name), dialect.column_type(c.ty))),
            );
            self.execute(&format!(
                "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} ({}); CREATE INDEX {} ON {name} (patient_id)",
                columns.join(", "),
                dialect.ident(&format!("ix_{}_patient_id", schema.name))
            ))?;
            self.copy_rows(&name, &table.rows)?;
            self.execute(&format!("ANALYZE {name}"))?;
        }
        Ok(())
    }
}

impl PostgresEngine {
    /// Streams `rows` into table `name` (already quoted) with `COPY … FROM STDIN` in text
    /// format, a chunk at a time.
    fn copy_rows(&self, name: &str, rows: &[(i64, Vec<Value>)]) -> Result<(), EngineError> {
        self.runtime.block_on(async {
            let sink = self
                .client
                .copy_in::<_, Cursor<Vec<u8>>>(&format!("COPY {name} FROM STDIN"))
                .await?;
            let mut sink = std::pin::pin!(sink);
            let mut chunk = Vec::with_capacity(COPY_CHUNK_BYTES + 4096);
            for (patient_id, values) in rows {
                chunk.extend_from_slice(patient_id.to_string().as_bytes());
                for value in values {
                    chunk.push(b'\t');
                    copy_text(value, &mut chunk);
                }
                chunk.push(b'\n');
                if chunk.len() >= COPY_CHUNK_BYTES {
                    let full =
                        std::mem::replace(&mut chunk, Vec::with_capacity(COPY_CHUNK_BYTES + 4096));
                    sink.send(Cursor::new(full)).await?;
                }
            }
            if !chunk.is_empty() {
                sink.send(Cursor::new(chunk)).await?;
            }
            sink.as_mut().finish().await?;
            Ok(())
        })
    }
}

/// A value in `COPY` text format: `\N` for NULL; backslash, tab, newline and carriage return
/// escaped in strings.
fn copy_text(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"\\N"),
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Float(f) if f.is_nan() => out.extend_from_slice(b"NaN"),
        Value::Float(f) if f.is_infinite() => out.extend_from_slice(if *f > 0.0 {
            &b"Infinity"[..]
        } else {
            &b"-Infinity"[..]
        }),
        // Debug prints the shortest text that reads back as the same double.
        Value::Float(f) => out.extend_from_slice(format!("{f:?}").as_bytes()),
        Value::Date(d) => out.extend_from_slice(d.to_string().as_bytes()),
        Value::Str(s) | Value::Code(_, s) => {
            for b in s.bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    other => out.push(other),
                }
            }
        }
    }
}

/// The kind of failure a PostgreSQL error is, by SQLSTATE: connection exceptions (class 08),
/// the server shutting down or in recovery (57P01–57P03), no connection slots (53300), and a
/// connection that failed or closed without any SQLSTATE are transient; an undefined table
/// (42P01) names the table from the message; program limits (class 54: statement too complex,
/// too many columns, stack depth), out of memory (53200) and the parser running out of stack
/// mean the query is too complex.
pub fn database_failure(error: &tokio_postgres::Error) -> super::DatabaseFailure {
    use super::DatabaseFailure;
    let Some(db) = error.as_db_error() else {
        let io_failure = std::error::Error::source(error)
            .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some());
        return if error.is_closed() || io_failure {
            DatabaseFailure::Transient
        } else {
            DatabaseFailure::Other
        };
    };
    let code = db.code().code();
    match code {
        "57P01" | "57P02" | "57P03" | "53300" => DatabaseFailure::Transient,
        _ if code.starts_with("08") => DatabaseFailure::Transient,
        // `relation "CodedEvent_SNOMED" does not exist`
        "42P01" => DatabaseFailure::MissingTable(
            db.message()
                .split('"')
                .nth(1)
                .unwrap_or(db.message())
                .to_string(),
        ),
        "53200" => DatabaseFailure::TooComplex,
        // The parser's stack overflowing on SQL nested some 10,000 deep (a syntax error class,
        // but a limit, not a mistake).
        "42601" if db.message().starts_with("memory exhausted") => DatabaseFailure::TooComplex,
        _ if code.starts_with("54") => DatabaseFailure::TooComplex,
        _ => DatabaseFailure::Other,
    }
}

/// The statements `dump-dataset-sql` prints for PostgreSQL (the helper functions of
/// [`SESSION_FUNCTIONS`] are created by the engine, not listed here).
///
/// # Errors
/// Constructs the compiler does not support.
pub fn dataset_sql(
    dataset: &Dataset,
    case_insensitive: &sql::CaseInsensitiveColumns,
) -> Result<Vec<sql::Statement>, sql::CompileError> {
    sql::compile(dataset, &PostgresDialect, case_insensitive)
}

impl SqlEngine for PostgresEngine {
    fn dialect(&self) -> &'static dyn Dialect {
        &PostgresDialect
    }

    fn case_insensitive(&self) -> &sql::CaseInsensitiveColumns {
        &self.case_insensitive
    }

    fn run_statements(
        &mut self,
        statements: &[sql::Statement],
        specs: &[(String, Vec<super::ColumnSpec>)],
        sink: &mut dyn RowSink,
    ) -> Result<(), EngineError> {
        // A previous run that failed half-way leaves its temporary tables behind: start clean.
        self.execute("DISCARD TEMP")?;
        self.execute(&SESSION_FUNCTIONS.join(";\n"))?;
        for view in &self.table_views {
            self.execute(view)?;
        }
        let total = statements.len();
        // Results queries come in `table_specs` order: the dataset, then each event table.
        let mut results_seen = 0;
        let client = &self.client;
        self.runtime.block_on(async {
            for (i, statement) in statements.iter().enumerate() {
                let started = std::time::Instant::now();
                match statement.kind {
                    StatementKind::Setup | StatementKind::Cleanup => {
                        client.batch_execute(&statement.sql).await?
                    }
                    StatementKind::Results => {
                        let (name, columns) = specs.get(results_seen).ok_or_else(|| {
                            EngineError::Unsupported("a results query without a table".into())
                        })?;
                        results_seen += 1;
                        sink.begin_table(name, columns).map_err(EngineError::Sink)?;
                        let rows = client
                            .query_raw(statement.sql.as_str(), std::iter::empty::<i64>())
                            .await?;
                        let mut rows = std::pin::pin!(rows);
                        let mut out: Vec<Value> = Vec::with_capacity(columns.len());
                        while let Some(row) = rows.next().await {
                            let row = row?;
                            out.clear();
                            for (index, column) in columns.iter().enumerate() {
                                let raw: Raw<'_> = row.try_get(index)?;
                                out.push(decode(raw, column.ty, &column.name)?);
                            }
                            sink.row(&out).map_err(EngineError::Sink)?;
                        }
                    }
                }
                tracing::debug!(
                    query = i + 1,
                    of = total,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "ran query"
                );
            }
            Ok::<(), EngineError>(())
        })
    }
}

/// A column value as the server sent it: its type and binary bytes (`None` for NULL).
struct Raw<'a> {
    ty: Type,
    bytes: Option<&'a [u8]>,
}

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Raw<'a>, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw {
            ty: ty.clone(),
            bytes: Some(raw),
        })
    }

    fn from_sql_null(ty: &Type) -> Result<Raw<'a>, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw {
            ty: ty.clone(),
            bytes: None,
        })
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A number decoded from the wire, before it meets the column's type.
enum Number {
    Int(i64),
    Float(f64),
    /// `numeric`: sign, decimal digits and a power of ten.
    Decimal {
        negative: bool,
        digits: String,
        exponent: i32,
    },
}

fn decode(raw: Raw<'_>, ty: ScalarType, column: &str) -> Result<Value, EngineError> {
    let bad = |message: String| EngineError::BadData {
        table: "results".into(),
        column: column.into(),
        message,
    };
    let Some(bytes) = raw.bytes else {
        return Ok(Value::Null);
    };
    let fixed = |n: usize| -> Result<&[u8], EngineError> {
        if bytes.len() == n {
            Ok(bytes)
        } else {
            Err(bad(format!(
                "a {} value of {} bytes",
                raw.ty.name(),
                bytes.len()
            )))
        }
    };
    let text = || std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()));
    let number = match raw.ty {
        Type::BOOL => {
            let b = fixed(1)?[0] != 0;
            return match ty {
                ScalarType::Bool => Ok(Value::Bool(b)),
                ScalarType::Int => Ok(Value::Int(i64::from(b))),
                other => Err(bad(format!("a boolean cannot be read as {other}"))),
            };
        }
        Type::INT2 => Number::Int(i64::from(i16::from_be_bytes([fixed(2)?[0], bytes[1]]))),
        Type::INT4 => {
            let b = fixed(4)?;
            Number::Int(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        }
        Type::INT8 => {
            let b = fixed(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Number::Int(i64::from_be_bytes(a))
        }
        Type::FLOAT4 => {
            let b = fixed(4)?;
            Number::Float(f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        }
        Type::FLOAT8 => {
            let b = fixed(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Number::Float(f64::from_be_bytes(a))
        }
        Type::NUMERIC => decode_numeric(bytes).map_err(bad)?,
        Type::DATE => {
            let b = fixed(4)?;
            let days = i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let date = Date::from_days_since_epoch(days + POSTGRES_EPOCH_DAYS)
                .ok_or_else(|| bad("a date outside years 1-9999".into()))?;
            return match ty {
                ScalarType::Date => Ok(Value::Date(date)),
                other => Err(bad(format!("a date cannot be read as {other}"))),
            };
        }
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            let s = text()?;
            return match ty {
                ScalarType::Str | ScalarType::MultiCodeString(_) => Ok(Value::Str(s.into())),
                ScalarType::Code(system) => Ok(Value::Code(system, s.into())),
                ScalarType::Date => Date::parse_iso(s)
                    .map(Value::Date)
                    .ok_or_else(|| bad(format!("'{s}' is not a date"))),
                other => Err(bad(format!("text cannot be read as {other}"))),
            };
        }
        other => {
            return Err(bad(format!(
                "a {} value cannot be read as {ty}",
                other.name()
            )));
        }
    };
    match (number, ty) {
        (Number::Int(i), ScalarType::Int) => Ok(Value::Int(i)),
        (Number::Int(i), ScalarType::Float) => Ok(Value::Float(i as f64)),
        (Number::Int(i), ScalarType::Bool) => Ok(Value::Bool(i != 0)),
        (Number::Float(f), ScalarType::Float) => Ok(Value::Float(f)),
        (Number::Float(f), ScalarType::Int) if f.fract() == 0.0 && f.abs() < 9.0e18 => {
            Ok(Value::Int(f as i64))
        }
        (
            Number::Decimal {
                negative,
                digits,
                exponent,
            },
            ScalarType::Float,
        ) => {
            let sign = if negative { "-" } else { "" };
            // Parsing the decimal text rounds correctly to the nearest double.
            format!("{sign}0{digits}e{exponent}")
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|e| bad(e.to_string()))
        }
        (
            Number::Decimal {
                negative,
                digits,
                exponent,
            },
            ScalarType::Int,
        ) => decimal_to_int(negative, &digits, exponent)
            .map(Value::Int)
            .ok_or_else(|| {
                bad(format!(
                    "numeric {digits}e{exponent} is not a 64-bit integer"
                ))
            }),
        (_, other) => Err(bad(format!(
            "a {} value cannot be read as {other}",
            raw.ty.name()
        ))),
    }
}

/// PostgreSQL's binary `numeric`: `ndigits`, `weight`, `sign`, `dscale` (16 bits each), then
/// `ndigits` base-10000 digits; the value is `Σ digit[i] × 10000^(weight - i)`.
fn decode_numeric(bytes: &[u8]) -> Result<Number, String> {
    let word = |i: usize| -> Result<u16, String> {
        bytes
            .get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a truncated numeric value".to_string())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        _ => return Err("a NaN or infinite numeric value".into()),
    };
    let mut digits = String::with_capacity(ndigits * 4);
    for i in 0..ndigits {
        let d = word(4 + i)?;
        if d > 9999 {
            return Err("a malformed numeric value".into());
        }
        digits.push_str(&format!("{d:04}"));
    }
    let exponent = 4 * (weight - ndigits as i32 + 1);
    Ok(Number::Decimal {
        negative,
        digits,
        exponent,
    })
}

/// The integer `±digits × 10^exponent`, if it is one and fits 64 bits.
fn decimal_to_int(negative: bool, digits: &str, exponent: i32) -> Option<i64> {
    let (whole, fraction) = if exponent >= 0 {
        (
            format!("{digits}{}", "0".repeat(usize::try_from(exponent).ok()?)),
            "",
        )
    } else {
        let cut = digits.len().checked_sub(usize::try_from(-exponent).ok()?);
        match cut {
            Some(cut) => (digits[..cut].to_string(), &digits[cut..]),
            None => (String::new(), digits),
        }
    };
    if fraction.bytes().any(|b| b != b'0') {
        return None;
    }
    let magnitude: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(words: &[u16]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn numeric_values_decode_to_ints_and_floats() {
        // 12345678 = [1234, 5678], weight 1.
        let bytes = numeric(&[2, 1, 0, 0, 1234, 5678]);
        let raw = Raw {
            ty: Type::NUMERIC,
            bytes: Some(&bytes),
        };
        assert_eq!(
            decode(raw, ScalarType::Int, "v").unwrap(),
            Value::Int(12_345_678)
        );
        // -2.5 = [2, 5000], weight 0, negative.
        let bytes = numeric(&[2, 0, 0x4000, 1, 2, 5000]);
        let raw = Raw {
            ty: Type::NUMERIC,
            bytes: Some(&bytes),
        };
        assert_eq!(
            decode(raw, ScalarType::Float, "v").unwrap(),
            Value::Float(-2.5)
        );
        // 2.5 is not an integer: an error, not a silently truncated value.
        let bytes = numeric(&[2, 0, 0, 1, 2, 5000]);
        let raw = Raw {
            ty: Type::NUMERIC,
            bytes: Some(&bytes),
        };
        assert!(matches!(
            decode(raw, ScalarType::Int, "v"),
            Err(EngineError::BadData { .. })
        ));
        // 20000 = [2], weight 1 (trailing zero groups are dropped on the wire).
        let bytes = numeric(&[1, 1, 0, 0, 2]);
        let raw = Raw {
            ty: Type::NUMERIC,
            bytes: Some(&bytes),
        };
        assert_eq!(
            decode(raw, ScalarType::Int, "v").unwrap(),
            Value::Int(20_000)
        );
    }

    #[test]
    fn dates_count_from_2000() {
        let bytes = 0i32.to_be_bytes();
        let raw = Raw {
            ty: Type::DATE,
            bytes: Some(&bytes),
        };
        assert_eq!(
            decode(raw, ScalarType::Date, "v").unwrap(),
            Value::Date(Date::from_ymd(2000, 1, 1).unwrap())
        );
    }

    #[test]
    fn truncated_values_are_errors() {
        let bytes = [0u8; 3];
        let raw = Raw {
            ty: Type::INT8,
            bytes: Some(&bytes),
        };
        assert!(matches!(
            decode(raw, ScalarType::Int, "v"),
            Err(EngineError::BadData { .. })
        ));
        let raw = Raw {
            ty: Type::NUMERIC,
            bytes: Some(&bytes),
        };
        assert!(decode(raw, ScalarType::Int, "v").is_err());
    }

    #[test]
    fn copy_text_escapes_strings_and_marks_null() {
        let mut out = Vec::new();
        for v in [
            Value::Str("a\tb\\c\nd".into()),
            Value::Null,
            Value::Float(0.1),
            Value::Bool(false),
        ] {
            copy_text(&v, &mut out);
            out.push(b'|');
        }
        assert_eq!(out, b"a\\tb\\\\c\\nd|\\N|0.1|f|");
    }

    #[test]
    fn a_bad_dsn_is_an_error() {
        assert!(matches!(
            PostgresEngine::connect("postgresql://host:notaport/db"),
            Err(EngineError::Postgres(_))
        ));
    }
}
