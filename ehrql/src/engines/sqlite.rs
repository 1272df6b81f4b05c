//! SQLite engine (being built).
use super::{Database, Engine, EngineError, RowSink};
use crate::query_model::Dataset;

/// SQLite engine.
pub struct SqliteEngine;
impl SqliteEngine {
    /// Loads a database.
    ///
    /// # Errors
    /// Always, for now.
    pub fn from_database(_db: &Database) -> Result<SqliteEngine, EngineError> {
        Err(EngineError::Unsupported("sqlite".into()))
    }
}
impl Engine for SqliteEngine {
    fn run(&mut self, _dataset: &Dataset, _sink: &mut dyn RowSink) -> Result<(), EngineError> {
        Err(EngineError::Unsupported("sqlite".into()))
    }
}
