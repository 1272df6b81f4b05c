//! Arrow IPC file output (being built).
use std::fs::File;

use super::TableWriter;
use crate::engines::{ColumnSpec, SinkError};
use crate::query_model::Value;

/// Writes an Arrow IPC file.
pub struct ArrowWriter {
    _file: File,
}

impl ArrowWriter {
    /// A writer over `file`.
    pub fn new(file: File) -> ArrowWriter {
        ArrowWriter { _file: file }
    }
}

impl TableWriter for ArrowWriter {
    fn begin(&mut self, _columns: &[ColumnSpec]) -> Result<(), SinkError> {
        Err("arrow output is not implemented yet".into())
    }
    fn row(&mut self, _row: &[Value]) -> Result<(), SinkError> {
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        Ok(())
    }
}
