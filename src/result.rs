//! Rows, columns and the seed-shaped [`QueryResult`].

use crate::{Error, Value};
use std::sync::Arc;

/// A result column.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Column {
    /// The name as the engine reports it (may be empty or repeated).
    pub name: String,
    /// The engine's declared type, empty where unknown.
    pub declared_type: String,
}

impl Column {
    /// A column with a name and declared type.
    pub fn new(name: impl Into<String>, declared_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            declared_type: declared_type.into(),
        }
    }
}

/// One row: its values, positionally, with the result's columns shared
/// between all rows (no per-row map is built).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    columns: Arc<[Column]>,
    values: Vec<Value>,
}

impl Row {
    /// A row of `values` under `columns`.
    pub fn new(columns: Arc<[Column]>, values: Vec<Value>) -> Self {
        Self { columns, values }
    }

    /// The value of the first column named `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let i = self.columns.iter().position(|c| c.name == name)?;
        self.values.get(i)
    }

    /// The value at position `index`.
    pub fn get_index(&self, index: usize) -> Option<&Value> {
        self.values.get(index)
    }

    /// The values, in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Takes the values.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// The result's columns.
    pub fn columns(&self) -> &Arc<[Column]> {
        &self.columns
    }

    /// `(column name, value)` pairs in column order (duplicates kept).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.columns
            .iter()
            .map(|c| c.name.as_str())
            .zip(self.values.iter())
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The result of a statement in the shape of the original Python API:
/// `success`, `data`, `row_count`, `error_message`, `execution_time_ms`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResult {
    /// Whether the statement ran.
    pub success: bool,
    /// The rows (empty for statements that return none).
    pub data: Vec<Row>,
    /// The result's columns.
    pub columns: Vec<Column>,
    /// Rows returned, or for a statement without rows the rows affected.
    pub row_count: u64,
    /// Rows inserted, updated or deleted.
    pub rows_affected: u64,
    /// Id of the last inserted row, where the engine has one.
    pub last_insert_id: Option<i64>,
    /// What went wrong, when `success` is false.
    pub error_message: Option<String>,
    /// Time the statement took, in milliseconds.
    pub execution_time_ms: f64,
}

impl QueryResult {
    /// A successful result with rows.
    pub fn with_rows(columns: Vec<Column>, data: Vec<Row>, execution_time_ms: f64) -> Self {
        Self {
            success: true,
            row_count: data.len() as u64,
            data,
            columns,
            execution_time_ms,
            ..Self::default()
        }
    }

    /// A successful result of a statement that changed rows.
    pub fn with_rows_affected(
        rows_affected: u64,
        last_insert_id: Option<i64>,
        execution_time_ms: f64,
    ) -> Self {
        Self {
            success: true,
            row_count: rows_affected,
            rows_affected,
            last_insert_id,
            execution_time_ms,
            ..Self::default()
        }
    }

    /// A failed result carrying the error's message.
    pub fn from_error(error: &Error, execution_time_ms: f64) -> Self {
        Self {
            success: false,
            error_message: Some(error.message().to_owned()),
            execution_time_ms,
            ..Self::default()
        }
    }

    /// The first row, if any.
    pub fn get_first_row(&self) -> Option<&Row> {
        self.data.first()
    }

    /// Every row's value of the column `name` (rows without it are skipped).
    pub fn get_column_values(&self, name: &str) -> Vec<&Value> {
        self.data.iter().filter_map(|r| r.get(name)).collect()
    }
}
