//! Arrow IPC *file* output (spec §6.3): zstd-compressed record batches of 64,000 rows;
//! `patient_id` int64 not null; integers narrowed to the smallest type fitting a known range;
//! categorical strings as ordered dictionaries (categories in declaration order, smallest
//! signed index type); dates as date32.

use std::fs::File;
use std::io::BufWriter;
use std::sync::Arc;

use arrow_array::types::{Int8Type, Int16Type, Int32Type};
use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, DictionaryArray, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, RecordBatch, StringArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use arrow_ipc::CompressionType;
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::TableWriter;
use crate::engines::{ColumnSpec, SinkError};
use crate::query_model::{ScalarType, Value};

/// Rows per record batch, as the reference writes them.
pub const BATCH_SIZE: usize = 64_000;

/// Writes an Arrow IPC file.
pub struct ArrowWriter {
    file: Option<File>,
    writer: Option<FileWriter<BufWriter<File>>>,
    schema: Option<SchemaRef>,
    columns: Vec<ColumnSpec>,
    buffered: Vec<Vec<Value>>,
    rows: usize,
}

impl ArrowWriter {
    /// A writer over `file`.
    pub fn new(file: File) -> ArrowWriter {
        ArrowWriter {
            file: Some(file),
            writer: None,
            schema: None,
            columns: vec![],
            buffered: vec![],
            rows: 0,
        }
    }

    fn flush_batch(&mut self) -> Result<(), SinkError> {
        if self.rows == 0 {
            return Ok(());
        }
        let (Some(schema), Some(writer)) = (&self.schema, &mut self.writer) else {
            return Err("arrow writer not started".into());
        };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (column, values) in self.columns.iter().zip(&mut self.buffered) {
            let field = schema.field_with_name(&column.name)?;
            arrays.push(build_array(column, field.data_type(), values)?);
            values.clear();
        }
        let batch = RecordBatch::try_new(schema.clone(), arrays)?;
        writer.write(&batch)?;
        self.rows = 0;
        Ok(())
    }
}

/// The smallest integer type holding `min..=max` (unsigned when `min >= 0`).
pub fn narrowed_int_type(min: i64, max: i64) -> DataType {
    if min >= 0 {
        match max {
            m if m <= i64::from(u8::MAX) => DataType::UInt8,
            m if m <= i64::from(u16::MAX) => DataType::UInt16,
            m if m <= i64::from(u32::MAX) => DataType::UInt32,
            _ => DataType::UInt64,
        }
    } else if min >= i64::from(i8::MIN) && max <= i64::from(i8::MAX) {
        DataType::Int8
    } else if min >= i64::from(i16::MIN) && max <= i64::from(i16::MAX) {
        DataType::Int16
    } else if min >= i64::from(i32::MIN) && max <= i64::from(i32::MAX) {
        DataType::Int32
    } else {
        DataType::Int64
    }
}

/// The Arrow field for an output column.
pub fn field_for(column: &ColumnSpec) -> Field {
    let data_type = match column.ty.primitive() {
        ScalarType::Bool => DataType::Boolean,
        ScalarType::Int => match column.range {
            Some((min, max)) => narrowed_int_type(min, max),
            None => DataType::Int64,
        },
        ScalarType::Float => DataType::Float64,
        ScalarType::Date => DataType::Date32,
        _ => match &column.categories {
            Some(categories) => {
                let key = if categories.len() <= i8::MAX as usize {
                    DataType::Int8
                } else if categories.len() <= i16::MAX as usize {
                    DataType::Int16
                } else {
                    DataType::Int32
                };
                return Field::new_dictionary(&column.name, key, DataType::Utf8, column.nullable)
                    .with_dict_is_ordered(true);
            }
            None => DataType::Utf8,
        },
    };
    Field::new(&column.name, data_type, column.nullable)
}

fn build_array(
    column: &ColumnSpec,
    data_type: &DataType,
    values: &[Value],
) -> Result<ArrayRef, SinkError> {
    let ints = || -> Vec<Option<i64>> {
        values
            .iter()
            .map(|v| match v {
                Value::Int(i) => Some(*i),
                _ => None,
            })
            .collect()
    };
    let narrow = |v: Option<i64>| -> Result<Option<i64>, SinkError> {
        if let (Some(x), Some((min, max))) = (v, column.range)
            && (x < min || x > max)
        {
            return Err(format!(
                "column '{}': value {x} is outside its declared range {min}..={max}",
                column.name
            )
            .into());
        }
        Ok(v)
    };
    macro_rules! narrowed {
        ($array:ty, $t:ty) => {{
            let mut out: Vec<Option<$t>> = Vec::with_capacity(values.len());
            for v in ints() {
                out.push(match narrow(v)? {
                    Some(x) => Some(<$t>::try_from(x)?),
                    None => None,
                });
            }
            Arc::new(<$array>::from(out)) as ArrayRef
        }};
    }
    Ok(match data_type {
        DataType::Boolean => Arc::new(BooleanArray::from(
            values.iter().map(Value::as_bool).collect::<Vec<_>>(),
        )),
        DataType::Int64 => Arc::new(Int64Array::from(ints())),
        DataType::Int8 => narrowed!(Int8Array, i8),
        DataType::Int16 => narrowed!(Int16Array, i16),
        DataType::Int32 => narrowed!(Int32Array, i32),
        DataType::UInt8 => narrowed!(UInt8Array, u8),
        DataType::UInt16 => narrowed!(UInt16Array, u16),
        DataType::UInt32 => narrowed!(UInt32Array, u32),
        DataType::UInt64 => narrowed!(UInt64Array, u64),
        DataType::Float64 => Arc::new(Float64Array::from(
            values
                .iter()
                .map(|v| match v {
                    Value::Float(f) => Some(*f),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        DataType::Date32 => Arc::new(Date32Array::from(
            values
                .iter()
                .map(|v| match v {
                    Value::Date(d) => Some(d.days_since_epoch()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        DataType::Utf8 => Arc::new(StringArray::from(
            values.iter().map(Value::as_str).collect::<Vec<_>>(),
        )),
        DataType::Dictionary(key, _) => {
            let categories = column.categories.as_deref().unwrap_or(&[]);
            let mut indices: Vec<Option<i64>> = Vec::with_capacity(values.len());
            for v in values {
                if v.is_null() {
                    indices.push(None);
                    continue;
                }
                let position = categories
                    .iter()
                    .position(|c| c.as_str() == v.as_str())
                    .ok_or_else(|| {
                        format!(
                            "column '{}': value {v} is not one of its categories",
                            column.name
                        )
                    })?;
                indices.push(Some(i64::try_from(position)?));
            }
            let dictionary: ArrayRef = Arc::new(StringArray::from(
                categories.iter().map(Value::as_str).collect::<Vec<_>>(),
            ));
            match **key {
                DataType::Int8 => {
                    let keys: Int8Array = indices
                        .iter()
                        .map(|i| i.and_then(|i| i8::try_from(i).ok()))
                        .collect();
                    Arc::new(DictionaryArray::<Int8Type>::try_new(keys, dictionary)?)
                }
                DataType::Int16 => {
                    let keys: Int16Array = indices
                        .iter()
                        .map(|i| i.and_then(|i| i16::try_from(i).ok()))
                        .collect();
                    Arc::new(DictionaryArray::<Int16Type>::try_new(keys, dictionary)?)
                }
                _ => {
                    let keys: Int32Array = indices
                        .iter()
                        .map(|i| i.and_then(|i| i32::try_from(i).ok()))
                        .collect();
                    Arc::new(DictionaryArray::<Int32Type>::try_new(keys, dictionary)?)
                }
            }
        }
        other => {
            return Err(format!("column '{}': unsupported Arrow type {other}", column.name).into());
        }
    })
}

impl TableWriter for ArrowWriter {
    fn begin(&mut self, columns: &[ColumnSpec]) -> Result<(), SinkError> {
        let schema = Arc::new(Schema::new(
            columns.iter().map(field_for).collect::<Vec<_>>(),
        ));
        let options =
            IpcWriteOptions::default().try_with_compression(Some(CompressionType::ZSTD))?;
        let file = self.file.take().ok_or("arrow writer already started")?;
        self.writer = Some(FileWriter::try_new_with_options(
            BufWriter::new(file),
            &schema,
            options,
        )?);
        self.schema = Some(schema);
        self.columns = columns.to_vec();
        self.buffered = vec![Vec::with_capacity(BATCH_SIZE); columns.len()];
        Ok(())
    }

    fn row(&mut self, row: &[Value]) -> Result<(), SinkError> {
        for (column, value) in self.buffered.iter_mut().zip(row) {
            column.push(value.clone());
        }
        self.rows += 1;
        if self.rows >= BATCH_SIZE {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.flush_batch()?;
        let mut writer = self.writer.take().ok_or("arrow writer not started")?;
        writer.finish()?;
        let mut inner = writer.into_inner()?;
        std::io::Write::flush(&mut inner)?;
        inner.get_ref().sync_all()?;
        Ok(())
    }
}
