//! What a dataset reads (spec §6.4 `query_info`): the tables and columns it uses, and the
//! literal values each column is compared with, so generated values can hit the definition's
//! codelists, categories and date thresholds instead of missing them by chance.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::query_model::{Dataset, FunctionOp, Literal, Node, NodeId, Value};
use crate::tables::TableSchema;

/// One table the dataset reads.
#[derive(Clone, Debug)]
pub struct TableInfo {
    /// Its schema.
    pub schema: Arc<TableSchema>,
    /// The columns read (not `patient_id`), by name.
    pub columns: BTreeSet<String>,
    /// Per column, the literal values it is compared with, sorted and distinct.
    pub literals: BTreeMap<String, Vec<Value>>,
}

/// Every table the dataset reads, ordered by table name (a stable order keeps generation
/// deterministic).
pub fn tables_used(dataset: &Dataset) -> Vec<TableInfo> {
    let graph = dataset.graph();
    let mut tables: BTreeMap<String, TableInfo> = BTreeMap::new();
    let mut entry = |schema: &Arc<TableSchema>| -> String {
        tables
            .entry(schema.name.clone())
            .or_insert_with(|| TableInfo {
                schema: schema.clone(),
                columns: BTreeSet::new(),
                literals: BTreeMap::new(),
            });
        schema.name.clone()
    };
    let mut columns: Vec<(String, String)> = Vec::new();
    let mut literals: Vec<(String, String, Value)> = Vec::new();
    // The column a node reads directly, as (table, column).
    let column_of = |id: NodeId| -> Option<(Arc<TableSchema>, String)> {
        match graph.node(id) {
            Node::SelectColumn { source, name } if &**name != "patient_id" => {
                Some((graph.frame_table(*source)?.clone(), name.to_string()))
            }
            _ => None,
        }
    };
    for id in dataset.reachable() {
        match graph.node(id) {
            Node::SelectTable(schema) | Node::SelectPatientTable(schema) => {
                entry(schema);
            }
            Node::SelectColumn { .. } => {
                if let Some((schema, column)) = column_of(id) {
                    let table = entry(&schema);
                    columns.push((table, column));
                }
            }
            Node::Function { op, args } if is_comparison(*op) && args.len() == 2 => {
                for (lhs, rhs) in [(args[0], args[1]), (args[1], args[0])] {
                    let (Some((schema, column)), Node::Value(literal)) =
                        (column_of(lhs), graph.node(rhs))
                    else {
                        continue;
                    };
                    let table = entry(&schema);
                    let values: Vec<Value> = match literal {
                        Literal::Scalar(v) => vec![v.clone()],
                        Literal::Set { values, .. } => values.clone(),
                    };
                    for value in values {
                        literals.push((table.clone(), column.clone(), value));
                    }
                }
            }
            _ => {}
        }
    }
    for (table, column) in columns {
        if let Some(info) = tables.get_mut(&table) {
            info.columns.insert(column);
        }
    }
    for (table, column, value) in literals {
        if let Some(info) = tables.get_mut(&table) {
            let pool = info.literals.entry(column).or_default();
            if !pool.contains(&value) {
                pool.push(value);
            }
        }
    }
    for info in tables.values_mut() {
        for pool in info.literals.values_mut() {
            pool.sort();
        }
    }
    tables.into_values().collect()
}

fn is_comparison(op: FunctionOp) -> bool {
    matches!(
        op,
        FunctionOp::Eq
            | FunctionOp::Ne
            | FunctionOp::Lt
            | FunctionOp::Le
            | FunctionOp::Gt
            | FunctionOp::Ge
            | FunctionOp::In
            | FunctionOp::StringContains
    )
}
