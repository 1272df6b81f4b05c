//! The SQLite engine: compiles the dataset with [`crate::sql`] and the SQLite dialect, runs the
//! setup statements, and streams the results query row by row into the sink (the result is
//! never held in memory). Values are decoded through the output column types, since SQLite
//! stores bools as 0/1 and dates as ISO text.

use std::path::Path;

use std::cmp::Ordering;

use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags};

use super::{Database, EngineError, RowSink, SqlEngine};
use crate::query_model::{Dataset, Date, ScalarType, Value};
use crate::sql::dialect::{SQLITE_CASE_FOLD, SQLITE_CASE_INSENSITIVE, SQLITE_PICK_AGGREGATE};
use crate::sql::{self, Dialect, SqliteDialect, StatementKind};

/// Runs datasets against a SQLite database whose tables are named and shaped like the
/// query-model tables (the reference's default backend).
pub struct SqliteEngine {
    conn: Connection,
    /// A backend's case-insensitive string columns (none by default).
    case_insensitive: sql::CaseInsensitiveColumns,
}

impl std::fmt::Debug for SqliteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEngine").finish_non_exhaustive()
    }
}

impl SqliteEngine {
    /// Opens an existing database file read-only (temporary tables live in SQLite's separate
    /// temp schema, so the data file is never written).
    ///
    /// # Errors
    /// The file cannot be opened as a SQLite database.
    pub fn open(path: &Path) -> Result<SqliteEngine, EngineError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        SqliteEngine::with_connection(conn)
    }

    /// Runs one or more `;`-separated statements (no results) before the dataset's: a
    /// backend's views over its raw tables.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn execute(&self, sql: &str) -> Result<(), EngineError> {
        self.conn.execute_batch(sql)?;
        Ok(())
    }

    /// Attaches the database file at `path` as schema `name`, opened like the main one
    /// (read-only).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn attach(&self, name: &str, path: &Path) -> Result<(), EngineError> {
        self.conn
            .execute("ATTACH DATABASE ?1 AS ?2", (path.to_string_lossy(), name))?;
        Ok(())
    }

    /// An in-memory SQLite database holding `database`'s tables (tests, conformance).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn from_database(database: &Database) -> Result<SqliteEngine, EngineError> {
        let mut conn = Connection::open_in_memory()?;
        load_database(&mut conn, database)?;
        SqliteEngine::with_connection(conn)
    }

    fn with_connection(conn: Connection) -> Result<SqliteEngine, EngineError> {
        register_functions(&conn)?;
        // Temp tables and sorts spill to disk beyond a fixed cache, keeping memory flat. The
        // cache is small on purpose: every plan reads each source page once, in order, so a
        // larger cache only costs memory (measured: 64 MB gave the same CPU time at 100,000 and
        // 1,000,000 patients as 2 MB, with 65 MB more peak RSS). Memory-mapping the file would
        // save the page copies (about a tenth of the CPU time) but would count every page of
        // the database in the process's resident memory.
        conn.execute_batch("PRAGMA temp_store = FILE; PRAGMA cache_size = -2000;")?;
        Ok(SqliteEngine {
            conn,
            case_insensitive: sql::CaseInsensitiveColumns::default(),
        })
    }

    /// This engine, comparing the strings of `columns` case-insensitively (a backend's
    /// collations).
    pub fn with_case_insensitive_columns(
        self,
        columns: sql::CaseInsensitiveColumns,
    ) -> SqliteEngine {
        SqliteEngine {
            case_insensitive: columns,
            ..self
        }
    }
}

/// Creates `database`'s tables in `conn` (with `patient_id` indexes) and inserts the rows.
///
/// # Errors
/// SQLite errors.
pub fn load_database(conn: &mut Connection, database: &Database) -> Result<(), EngineError> {
    let dialect = SqliteDialect;
    let tx = conn.transaction()?;
    for table in database.tables() {
        let schema = &table.schema;
        let mut columns = vec!["patient_id INTEGER NOT NULL".to_string()];
        columns.extend(
            schema
                .columns
                .iter()
                .map(|c| format!("{} {}", dialect.ident(&c.name), dialect.column_type(c.ty))),
        );
        let name = dialect.ident(&schema.name);
        tx.execute_batch(&format!(
            "CREATE TABLE {name} ({}); CREATE INDEX {} ON {name} (patient_id);",
            columns.join(", "),
            dialect.ident(&format!("ix_{}_patient_id", schema.name))
        ))?;
        let placeholders = vec!["?"; schema.columns.len() + 1].join(", ");
        let mut insert = tx.prepare(&format!("INSERT INTO {name} VALUES ({placeholders})"))?;
        for (patient_id, values) in &table.rows {
            let mut params: Vec<SqlValue> = vec![SqlValue::Integer(*patient_id)];
            params.extend(values.iter().map(to_sql));
            insert.execute(rusqlite::params_from_iter(params))?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// A value as SQLite stores it.
pub fn to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Int(i) => SqlValue::Integer(*i),
        Value::Float(f) => SqlValue::Real(*f),
        Value::Str(s) | Value::Code(_, s) => SqlValue::Text(s.to_string()),
        Value::Date(d) => SqlValue::Text(d.to_string()),
    }
}

/// `FLOOR` and `POW`, as SQLite's math extension names them (the bundled build lacks it).
/// `POW` applies ehrQL's rules: NULL for 0 to a negative power and for a negative base to a
/// fractional power; integer powers stay integers (NULL if they overflow).
fn register_functions(conn: &Connection) -> Result<(), EngineError> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("FLOOR", 1, flags, |ctx| {
        Ok(match ctx.get_raw(0) {
            ValueRef::Integer(i) => SqlValue::Integer(i),
            ValueRef::Real(f) => SqlValue::Real(f.floor()),
            _ => SqlValue::Null,
        })
    })?;
    conn.create_scalar_function("POW", 2, flags, |ctx| {
        let (a, b) = (ctx.get_raw(0), ctx.get_raw(1));
        Ok(match (a, b) {
            (ValueRef::Integer(a), ValueRef::Integer(b)) => match u32::try_from(b) {
                Ok(e) => a.checked_pow(e).map_or(SqlValue::Null, SqlValue::Integer),
                Err(_) => SqlValue::Null,
            },
            (ValueRef::Real(a), ValueRef::Real(b)) => {
                if (a == 0.0 && b < 0.0) || (a < 0.0 && b.fract() != 0.0) {
                    SqlValue::Null
                } else {
                    let r = a.powf(b);
                    if r.is_finite() {
                        SqlValue::Real(r)
                    } else {
                        SqlValue::Null
                    }
                }
            }
            _ => SqlValue::Null,
        })
    })?;
    // Integer +, -, * checked like the in-memory engine: NULL when 64 bits overflow (SQLite's
    // own operators would silently turn the result into a float).
    for (name, op) in [
        (
            "EHRQL_INT_ADD",
            i64::checked_add as fn(i64, i64) -> Option<i64>,
        ),
        ("EHRQL_INT_SUB", i64::checked_sub),
        ("EHRQL_INT_MUL", i64::checked_mul),
    ] {
        conn.create_scalar_function(name, 2, flags, move |ctx| {
            Ok(match (ctx.get_raw(0), ctx.get_raw(1)) {
                (ValueRef::Integer(a), ValueRef::Integer(b)) => {
                    op(a, b).map_or(SqlValue::Null, SqlValue::Integer)
                }
                _ => SqlValue::Null,
            })
        })?;
    }
    conn.create_collation(SQLITE_CASE_INSENSITIVE, compare_case_insensitive)?;
    conn.create_scalar_function(SQLITE_CASE_FOLD, 1, flags, |ctx| {
        Ok(match ctx.get_raw(0) {
            ValueRef::Text(text) => SqlValue::Text(String::from_utf8_lossy(text).to_lowercase()),
            _ => ctx.get::<SqlValue>(0)?,
        })
    })?;
    let pick = SQLITE_PICK_AGGREGATE;
    conn.create_aggregate_function(pick.first, -1, flags, Pick { last: false })?;
    conn.create_aggregate_function(pick.last, -1, flags, Pick { last: true })?;
    conn.create_scalar_function(pick.value, 2, flags, |ctx| {
        let index: i64 = ctx.get(1)?;
        Ok(match (ctx.get_raw(0), usize::try_from(index)) {
            (ValueRef::Blob(packed), Ok(index)) => unpack(packed, index),
            _ => SqlValue::Null,
        })
    })?;
    Ok(())
}

/// The order of [`SQLITE_CASE_INSENSITIVE`]: that of the strings' lower-case forms, so values
/// differing only in case are equal. The same order as comparing [`SQLITE_CASE_FOLD`]'s values.
fn compare_case_insensitive(a: &str, b: &str) -> Ordering {
    a.chars()
        .flat_map(char::to_lowercase)
        .cmp(b.chars().flat_map(char::to_lowercase))
}

/// The pick aggregates `f(key, ...)`: the keys of the row with the smallest (or, `last`,
/// largest) keys, NULL smallest, as a `ROW_NUMBER()` window ordered by the keys would pick it,
/// packed into one blob ([`pack`]). Rows tied on every key are interchangeable, so the first
/// one met is kept.
struct Pick {
    last: bool,
}

impl Aggregate<Vec<SqlValue>, SqlValue> for Pick {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Vec<SqlValue>> {
        Ok(Vec::new())
    }

    fn step(&self, ctx: &mut Context<'_>, best: &mut Vec<SqlValue>) -> rusqlite::Result<()> {
        let wanted = if self.last {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        let better = best.is_empty()
            || best
                .iter()
                .enumerate()
                .map(|(k, key)| compare(ctx.get_raw(k), ValueRef::from(key)))
                .find(|order| *order != Ordering::Equal)
                == Some(wanted);
        if better {
            best.clear();
            for k in 0..ctx.len() {
                best.push(ctx.get::<SqlValue>(k)?);
            }
        }
        Ok(())
    }

    fn finalize(
        &self,
        _: &mut Context<'_>,
        best: Option<Vec<SqlValue>>,
    ) -> rusqlite::Result<SqlValue> {
        Ok(best.map_or(SqlValue::Null, |keys| SqlValue::Blob(pack(&keys))))
    }
}

/// Values as one blob: per value a tag byte (0 NULL, 1 integer, 2 real, 3 text, 4 blob), then
/// 8 little-endian bytes for numbers, or a 4-byte length and the bytes.
fn pack(values: &[SqlValue]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        match value {
            SqlValue::Null => out.push(0),
            SqlValue::Integer(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_le_bytes());
            }
            SqlValue::Real(f) => {
                out.push(2);
                out.extend_from_slice(&f.to_le_bytes());
            }
            SqlValue::Text(t) => {
                out.push(3);
                out.extend_from_slice(&(t.len() as u32).to_le_bytes());
                out.extend_from_slice(t.as_bytes());
            }
            SqlValue::Blob(b) => {
                out.push(4);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// Value `index` of a [`pack`]ed blob (NULL if there is none).
fn unpack(packed: &[u8], index: usize) -> SqlValue {
    let mut rest = packed;
    for position in 0.. {
        let Some((&tag, body)) = rest.split_first() else {
            break;
        };
        let length = match tag {
            1 | 2 => 8,
            3 | 4 => match body.get(..4) {
                Some(bytes) => {
                    4 + u32::from_le_bytes(bytes.try_into().unwrap_or_default()) as usize
                }
                None => break,
            },
            _ => 0,
        };
        let Some(payload) = body.get(..length) else {
            break;
        };
        if position == index {
            let number: [u8; 8] = payload.try_into().unwrap_or_default();
            return match tag {
                1 => SqlValue::Integer(i64::from_le_bytes(number)),
                2 => SqlValue::Real(f64::from_le_bytes(number)),
                3 => SqlValue::Text(String::from_utf8_lossy(&payload[4..]).into_owned()),
                4 => SqlValue::Blob(payload[4..].to_vec()),
                _ => SqlValue::Null,
            };
        }
        rest = &body[length..];
    }
    SqlValue::Null
}

/// SQLite's order of values (BINARY collation): NULL, then numbers compared by value, then
/// text and blobs bytewise.
fn compare(a: ValueRef<'_>, b: ValueRef<'_>) -> Ordering {
    fn class(v: &ValueRef<'_>) -> u8 {
        match v {
            ValueRef::Null => 0,
            ValueRef::Integer(_) | ValueRef::Real(_) => 1,
            ValueRef::Text(_) => 2,
            ValueRef::Blob(_) => 3,
        }
    }
    match (a, b) {
        (ValueRef::Integer(x), ValueRef::Integer(y)) => x.cmp(&y),
        // SQLite stores NaN as NULL, so reals always compare.
        (ValueRef::Real(x), ValueRef::Real(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (ValueRef::Integer(x), ValueRef::Real(y)) => {
            (x as f64).partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (ValueRef::Real(x), ValueRef::Integer(y)) => {
            x.partial_cmp(&(y as f64)).unwrap_or(Ordering::Equal)
        }
        (ValueRef::Text(x), ValueRef::Text(y)) | (ValueRef::Blob(x), ValueRef::Blob(y)) => x.cmp(y),
        (a, b) => class(&a).cmp(&class(&b)),
    }
}

/// SQLite's limits that a large or deeply nested definition can reach, as its messages name
/// them (lower case).
const SQLITE_LIMIT_MESSAGES: [&str; 6] = [
    "expression tree is too large",
    "too many terms in compound select",
    "too many sql variables",
    "too many columns",
    "at most 64 tables in a join",
    // The parser's stack overflowing on deeply nested SQL.
    "recursion limit",
];

/// The kind of failure a SQLite error is: a busy or locked database is transient; a missing
/// table names the table (without the `main.` the TPP views qualify raw tables with); a
/// string or blob over the size limit, running out of memory, or one of
/// [`SQLITE_LIMIT_MESSAGES`] is a query too complex.
pub fn database_failure(error: &rusqlite::Error) -> super::DatabaseFailure {
    use super::DatabaseFailure;
    use rusqlite::ErrorCode;
    let rusqlite::Error::SqliteFailure(failure, message) = error else {
        return DatabaseFailure::Other;
    };
    match failure.code {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => return DatabaseFailure::Transient,
        ErrorCode::TooBig | ErrorCode::OutOfMemory => return DatabaseFailure::TooComplex,
        _ => {}
    }
    let message = message.as_deref().unwrap_or_default();
    if let Some(table) = message.strip_prefix("no such table: ") {
        let table = table.strip_prefix("main.").unwrap_or(table);
        return DatabaseFailure::MissingTable(table.to_string());
    }
    let lower = message.to_ascii_lowercase();
    if SQLITE_LIMIT_MESSAGES.iter().any(|m| lower.contains(m)) {
        return DatabaseFailure::TooComplex;
    }
    DatabaseFailure::Other
}

/// The statements `dump-dataset-sql` prints.
///
/// # Errors
/// Constructs the compiler does not support.
pub fn dataset_sql(
    dataset: &Dataset,
    case_insensitive: &sql::CaseInsensitiveColumns,
) -> Result<Vec<sql::Statement>, sql::CompileError> {
    sql::compile(dataset, &SqliteDialect, case_insensitive)
}

impl SqlEngine for SqliteEngine {
    fn dialect(&self) -> &'static dyn Dialect {
        &SqliteDialect
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
        let total = statements.len();
        // Results queries come in `table_specs` order: the dataset, then each event table.
        let mut results_seen = 0;
        for (i, statement) in statements.iter().enumerate() {
            let started = std::time::Instant::now();
            match statement.kind {
                StatementKind::Setup | StatementKind::Cleanup => {
                    self.conn.execute_batch(&statement.sql)?
                }
                StatementKind::Results => {
                    let (name, columns) = specs.get(results_seen).ok_or_else(|| {
                        EngineError::Unsupported("a results query without a table".into())
                    })?;
                    results_seen += 1;
                    sink.begin_table(name, columns).map_err(EngineError::Sink)?;
                    let mut stmt = self.conn.prepare(&statement.sql)?;
                    let mut rows = stmt.query([])?;
                    let mut out: Vec<Value> = Vec::with_capacity(columns.len());
                    while let Some(row) = rows.next()? {
                        out.clear();
                        for (index, column) in columns.iter().enumerate() {
                            out.push(decode(row.get_ref(index)?, column.ty, &column.name)?);
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
        Ok(())
    }
}

fn decode(value: ValueRef<'_>, ty: ScalarType, column: &str) -> Result<Value, EngineError> {
    let bad = |message: String| EngineError::BadData {
        table: "results".into(),
        column: column.into(),
        message,
    };
    Ok(match (value, ty) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(i), ScalarType::Bool) => Value::Bool(i != 0),
        (ValueRef::Integer(i), ScalarType::Int) => Value::Int(i),
        (ValueRef::Real(f), ScalarType::Int) if f.fract() == 0.0 && f.abs() < 9.0e18 => {
            Value::Int(f as i64)
        }
        (ValueRef::Real(f), ScalarType::Float) => Value::Float(f),
        (ValueRef::Integer(i), ScalarType::Float) => Value::Float(i as f64),
        (ValueRef::Text(t), ScalarType::Date) => {
            let text = std::str::from_utf8(t).map_err(|e| bad(e.to_string()))?;
            Value::Date(
                Date::parse_iso(text).ok_or_else(|| bad(format!("'{text}' is not a date")))?,
            )
        }
        (ValueRef::Text(t), ScalarType::Str | ScalarType::MultiCodeString(_)) => Value::Str(
            std::str::from_utf8(t)
                .map_err(|e| bad(e.to_string()))?
                .into(),
        ),
        (ValueRef::Text(t), ScalarType::Code(system)) => Value::Code(
            system,
            std::str::from_utf8(t)
                .map_err(|e| bad(e.to_string()))?
                .into(),
        ),
        (other, ty) => {
            return Err(bad(format!(
                "a {:?} value cannot be read as {ty}",
                other.data_type()
            )));
        }
    })
}

/// Reads every registry table present in a SQLite database into a [`Database`], so the
/// in-memory engine can run over the same data (`--query-engine in_memory`). Where schemas
/// share a table name (`clinical_events` in core and tpp), the widest one whose columns the
/// table has is read.
///
/// # Errors
/// SQLite errors, or values that do not fit their column types.
pub fn read_database(path: &Path) -> Result<Database, EngineError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let dialect = SqliteDialect;
    let mut database = Database::new();
    let mut by_name: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for schema in crate::tables::all_tables() {
        by_name.entry(schema.name.clone()).or_default().push(schema);
    }
    for (name, mut candidates) in by_name {
        let present: std::collections::HashSet<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")?
            .query_map([&name], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        if present.is_empty() {
            continue;
        }
        // Widest first; when none fits, the narrowest, whose missing column is then an error.
        candidates.sort_by_key(|schema| std::cmp::Reverse(schema.columns.len()));
        let fits = candidates
            .iter()
            .position(|schema| schema.columns.iter().all(|c| present.contains(&c.name)));
        let schema = candidates.swap_remove(fits.unwrap_or(candidates.len() - 1));
        let columns: Vec<String> = schema
            .columns
            .iter()
            .map(|c| dialect.ident(&c.name))
            .collect();
        let mut select = String::from("SELECT patient_id");
        for c in &columns {
            select.push_str(", ");
            select.push_str(c);
        }
        select.push_str(&format!(" FROM {}", dialect.ident(&schema.name)));
        let mut stmt = conn.prepare(&select)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let patient_id: i64 = row.get(0)?;
            let mut values = Vec::with_capacity(schema.columns.len());
            for (i, c) in schema.columns.iter().enumerate() {
                values.push(decode(row.get_ref(i + 1)?, c.ty, &c.name)?);
            }
            out.push((patient_id, values));
        }
        database.insert_table(schema, out)?;
    }
    Ok(database)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_pick_keys_unpack_to_the_same_values() {
        let keys = vec![
            SqlValue::Null,
            SqlValue::Integer(-7),
            SqlValue::Real(18.5),
            SqlValue::Text("2023-01-01".into()),
            SqlValue::Text(String::new()),
            SqlValue::Blob(vec![0, 255]),
        ];
        let packed = pack(&keys);
        for (index, key) in keys.iter().enumerate() {
            assert_eq!(&unpack(&packed, index), key, "key {index}");
        }
        assert_eq!(unpack(&packed, keys.len()), SqlValue::Null);
        assert_eq!(unpack(&packed[..packed.len() - 1], 5), SqlValue::Null);
    }

    #[test]
    fn values_order_as_sqlite_sorts_them() {
        use ValueRef::{Integer, Null, Real, Text};
        assert_eq!(compare(Null, Integer(i64::MIN)), Ordering::Less);
        assert_eq!(compare(Integer(2), Real(1.5)), Ordering::Greater);
        assert_eq!(compare(Real(2.0), Integer(2)), Ordering::Equal);
        assert_eq!(compare(Integer(9), Text(b"0")), Ordering::Less);
        assert_eq!(
            compare(Text(b"2023-01-02"), Text(b"2023-01-10")),
            Ordering::Less
        );
    }
}
