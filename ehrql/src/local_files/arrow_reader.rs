//! Arrow IPC file tables: any integer width for ints, float32/64, bool, date32, utf8 (plain or
//! dictionary-encoded with any integer key), as our writer and the reference's produce.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;

use super::{FileColumn, FileError, check_required_columns, typed_value};
use crate::query_model::{Date, ScalarType, Value};

pub(super) fn read(path: &Path, columns: &[FileColumn]) -> Result<Vec<Vec<Value>>, FileError> {
    let file = std::fs::File::open(path).map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let arrow_error = |source| FileError::Arrow {
        path: path.to_path_buf(),
        source,
    };
    let reader = arrow_ipc::reader::FileReader::try_new(file, None).map_err(arrow_error)?;
    let schema = reader.schema();
    let positions: Vec<Option<usize>> = columns
        .iter()
        .map(|c| schema.index_of(&c.spec.name).ok())
        .collect();
    check_required_columns(path, columns, &positions)?;
    let mut rows: Vec<Vec<Value>> = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow_error)?;
        let first_row = rows.len();
        rows.extend((0..batch.num_rows()).map(|_| Vec::with_capacity(columns.len())));
        for (column, position) in columns.iter().zip(&positions) {
            let values = match position {
                Some(p) => column_values(batch.column(*p), column.spec.ty).ok_or_else(|| {
                    FileError::ArrowType {
                        path: path.to_path_buf(),
                        column: column.spec.name.clone(),
                        found: batch.column(*p).data_type().to_string(),
                        expected: column.spec.ty,
                    }
                })?,
                // A column the file may omit reads as NULL, even where the schema forbids
                // NULL: nothing reads it.
                None => {
                    for row in &mut rows[first_row..] {
                        row.push(Value::Null);
                    }
                    continue;
                }
            };
            for (i, raw) in values.into_iter().enumerate() {
                let value =
                    typed_value(raw, &column.spec).map_err(|problem| FileError::BadValue {
                        path: path.to_path_buf(),
                        place: format!("row {}", first_row + i + 1),
                        column: column.spec.name.clone(),
                        problem,
                    })?;
                rows[first_row + i].push(value);
            }
        }
    }
    Ok(rows)
}

/// The column's values as the primitive type of `ty`, or `None` if the Arrow type cannot hold
/// that type.
fn column_values(array: &ArrayRef, ty: ScalarType) -> Option<Vec<Value>> {
    let n = array.len();
    let each = |f: &dyn Fn(usize) -> Value| -> Vec<Value> {
        (0..n)
            .map(|i| if array.is_null(i) { Value::Null } else { f(i) })
            .collect()
    };
    macro_rules! ints {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            each(&|i| i64::try_from(a.value(i)).map_or(Value::Null, Value::Int))
        }};
    }
    Some(match (ty.primitive(), array.data_type()) {
        (ScalarType::Int, DataType::Int8) => ints!(Int8Type),
        (ScalarType::Int, DataType::Int16) => ints!(Int16Type),
        (ScalarType::Int, DataType::Int32) => ints!(Int32Type),
        (ScalarType::Int, DataType::Int64) => ints!(Int64Type),
        (ScalarType::Int, DataType::UInt8) => ints!(UInt8Type),
        (ScalarType::Int, DataType::UInt16) => ints!(UInt16Type),
        (ScalarType::Int, DataType::UInt32) => ints!(UInt32Type),
        (ScalarType::Int, DataType::UInt64) => ints!(UInt64Type),
        (ScalarType::Float, DataType::Float64) => {
            let a = array.as_primitive::<Float64Type>();
            each(&|i| Value::Float(a.value(i)))
        }
        (ScalarType::Float, DataType::Float32) => {
            let a = array.as_primitive::<Float32Type>();
            each(&|i| Value::Float(f64::from(a.value(i))))
        }
        (ScalarType::Bool, DataType::Boolean) => {
            let a = array.as_boolean();
            each(&|i| Value::Bool(a.value(i)))
        }
        (ScalarType::Date, DataType::Date32) => {
            let a = array.as_primitive::<arrow_array::types::Date32Type>();
            each(&|i| {
                Date::from_days_since_epoch(i64::from(a.value(i))).map_or(Value::Null, Value::Date)
            })
        }
        (ScalarType::Str, DataType::Utf8) => {
            let a = array.as_string::<i32>();
            each(&|i| Value::Str(a.value(i).into()))
        }
        (ScalarType::Str, DataType::LargeUtf8) => {
            let a = array.as_string::<i64>();
            each(&|i| Value::Str(a.value(i).into()))
        }
        (ScalarType::Str, DataType::Dictionary(_, value_type))
            if **value_type == DataType::Utf8 =>
        {
            let dictionary = array.as_any_dictionary();
            let keys = dictionary.normalized_keys();
            let values = dictionary.values().as_string::<i32>();
            each(&|i| Value::Str(values.value(keys[i]).into()))
        }
        _ => return None,
    })
}
