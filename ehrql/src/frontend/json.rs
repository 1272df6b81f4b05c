//! Loads ehrQL's serializer JSON (spec §9): a map of node ids to `{"<Class>": {fields}}`, with
//! `{"ref": id}` links, typed values, and tables only as `external_ref`s to the trusted
//! registry ([`crate::tables`]).
//!
//! Never trusts the producer: every node is rebuilt through the validating constructors of
//! [`Graph`], inline table definitions are refused, file paths must stay inside the workspace,
//! sets are read as unordered, and reference cycles or absurd nesting are errors, not crashes.

use std::collections::HashMap;
use std::path::{Component, Path};
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::{Definition, DummyDataConfig};
use crate::query_model::{
    AggregateKind, CodeSystem, Dataset, Date, Domain, FunctionOp, Graph, Literal, NodeId, Position,
    QueryError, ScalarType, Value,
};
use crate::tables;

/// Why a serialized definition was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Not JSON at all.
    #[error("the definition is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON does not have the serializer's shape.
    #[error("node {id}: {message}")]
    Malformed {
        /// The node id (or `root`).
        id: String,
        /// What is wrong.
        message: String,
    },
    /// A node breaks a query-model rule.
    #[error("node {id} ({class}): {source}")]
    Invalid {
        /// The node id.
        id: String,
        /// The node class.
        class: String,
        /// The rule broken.
        source: Box<QueryError>,
    },
    /// The dataset as a whole breaks a rule.
    #[error("{0}")]
    Dataset(Box<QueryError>),
    /// A table that is not in the trusted registry.
    #[error("node {id}: unknown table '{module}.{name}'")]
    UnknownTable {
        /// Where it was referenced.
        id: String,
        /// Its module.
        module: String,
        /// Its name.
        name: String,
    },
    /// An inline table definition (trust boundary: tables come only from the registry).
    #[error(
        "node {id}: inline {class} definitions are not allowed; tables must be external references"
    )]
    InlineTable {
        /// Where.
        id: String,
        /// `SelectTable` or `SelectPatientTable`.
        class: String,
    },
    /// A file path escaping the workspace.
    #[error("node {id}: path '{path}' is outside the workspace")]
    PathOutsideWorkspace {
        /// Where.
        id: String,
        /// The path.
        path: String,
    },
    /// A construct this implementation does not support yet.
    #[error("node {id}: {what} is not supported")]
    Unsupported {
        /// Where.
        id: String,
        /// What.
        what: String,
    },
    /// The producer reported an error in the user's definition.
    #[error("{message}")]
    Definition {
        /// The message.
        message: String,
        /// The exit code to pass through.
        exit_code: i32,
    },
}

/// Deepest chain of nested references accepted; deeper input is refused rather than risking the
/// stack.
const MAX_DEPTH: usize = 500;

/// Loads a dataset from serializer JSON text. `workspace` is the directory file paths must stay
/// inside.
///
/// # Errors
/// See [`LoadError`]: malformed JSON, any validation rule, an unknown or inline table, a path
/// outside the workspace, an unsupported node, or a reported definition error.
pub fn load_dataset(text: &str, workspace: &Path) -> Result<Dataset, LoadError> {
    load_definition(text, workspace).map(|definition| definition.dataset)
}

/// Like [`load_dataset`], also returning what a `ModuleDetails` root declares: the dummy-data
/// settings (`dataset_dummy_data_config`) and `claimed_permissions` (defaults for a bare
/// `Dataset` root).
///
/// # Errors
/// As [`load_dataset`]; also a malformed dummy-data configuration.
pub fn load_definition(text: &str, workspace: &Path) -> Result<Definition, LoadError> {
    let json: Json = serde_json::from_str(text)?;
    let Json::Object(defs) = json else {
        return Err(malformed("root", "expected a JSON object"));
    };
    let mut loader = Loader {
        defs: &defs,
        graph: Graph::new(),
        done: HashMap::new(),
        active: Vec::new(),
        workspace,
    };
    let root = defs
        .get("value")
        .ok_or_else(|| malformed("root", "missing 'value'"))?;
    let (dataset_body, details) = loader.root_dataset(root)?;
    let mut dummy_data_config = DummyDataConfig::default();
    let mut claimed_permissions = Vec::new();
    if let Some(details) = details {
        if let Some(config) = details.get("dataset_dummy_data_config")
            && !config.is_null()
        {
            dummy_data_config = loader.dummy_data_config(config)?;
        }
        if let Some(claimed) = details.get("claimed_permissions")
            && !claimed.is_null()
        {
            for permission in tagged_list(claimed, "tuple", "claimed_permissions")? {
                let Some(permission) = permission.as_str() else {
                    return Err(malformed(
                        "claimed_permissions",
                        "permissions must be strings",
                    ));
                };
                claimed_permissions.push(permission.to_string());
            }
        }
    }
    let dataset = loader.dataset(dataset_body)?;
    Ok(Definition {
        dataset,
        dummy_data_config,
        claimed_permissions,
    })
}

fn malformed(id: &str, message: impl Into<String>) -> LoadError {
    LoadError::Malformed {
        id: id.to_string(),
        message: message.into(),
    }
}

struct Loader<'a> {
    defs: &'a Map<String, Json>,
    graph: Graph,
    done: HashMap<String, NodeId>,
    active: Vec<String>,
    workspace: &'a Path,
}

/// Splits `{"Tag": body}` into its tag and body.
fn tagged<'j>(json: &'j Json, id: &str) -> Result<(&'j str, &'j Json), LoadError> {
    match json {
        Json::Object(m) if m.len() == 1 => {
            let (k, v) = m
                .iter()
                .next()
                .ok_or_else(|| malformed(id, "empty object"))?;
            Ok((k.as_str(), v))
        }
        _ => Err(malformed(
            id,
            format!("expected a single-key object, got {}", short(json)),
        )),
    }
}

fn short(json: &Json) -> String {
    let mut s = json.to_string();
    if s.len() > 80 {
        let mut cut = 80;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn field<'j>(body: &'j Json, name: &str, id: &str) -> Result<&'j Json, LoadError> {
    body.get(name)
        .ok_or_else(|| malformed(id, format!("missing field '{name}'")))
}

fn field_str<'j>(body: &'j Json, name: &str, id: &str) -> Result<&'j str, LoadError> {
    field(body, name, id)?
        .as_str()
        .ok_or_else(|| malformed(id, format!("field '{name}' must be a string")))
}

/// The items of `{"tag": [...]}`.
fn tagged_list<'j>(json: &'j Json, tag: &str, id: &str) -> Result<&'j Vec<Json>, LoadError> {
    match json.get(tag) {
        Some(Json::Array(items)) => Ok(items),
        _ => Err(malformed(
            id,
            format!("expected {{\"{tag}\": [...]}}, got {}", short(json)),
        )),
    }
}

impl<'a> Loader<'a> {
    /// The `Dataset` body under the root, and the `ModuleDetails` body if there is one.
    fn root_dataset(&self, root: &'a Json) -> Result<(&'a Json, Option<&'a Json>), LoadError> {
        let mut current = root;
        let mut details = None;
        // Follow refs and ModuleDetails wrappers to the Dataset body.
        for _ in 0..4 {
            if let Some(Json::String(r)) = current.get("ref") {
                current = self
                    .defs
                    .get(r)
                    .ok_or_else(|| malformed(r, "reference to an undefined node"))?;
                continue;
            }
            let (tag, body) = tagged(current, "root")?;
            match tag {
                "Dataset" => return Ok((body, details)),
                "ModuleDetails" => {
                    if let Some(measures) = body.get("measures")
                        && !measures.is_null()
                    {
                        return Err(LoadError::Unsupported {
                            id: "root".into(),
                            what: "measures".into(),
                        });
                    }
                    details = Some(body);
                    current = field(body, "dataset", "root")?;
                }
                "DefinitionError" => {
                    let message = body
                        .get("message")
                        .and_then(Json::as_str)
                        .unwrap_or("definition error")
                        .to_string();
                    let exit_code = body
                        .get("exit_code")
                        .and_then(Json::as_i64)
                        .and_then(|c| i32::try_from(c).ok())
                        .unwrap_or(10);
                    return Err(LoadError::Definition { message, exit_code });
                }
                other => {
                    return Err(malformed(
                        "root",
                        format!("expected a Dataset, got '{other}'"),
                    ));
                }
            }
        }
        Err(malformed("root", "too many nested wrappers"))
    }

    fn dataset(mut self, body: &Json) -> Result<Dataset, LoadError> {
        let population = self.node(field(body, "population", "Dataset")?, "Dataset.population")?;
        let variables =
            self.named_nodes(field(body, "variables", "Dataset")?, "Dataset.variables")?;
        let events = match body.get("events") {
            None | Some(Json::Null) => vec![],
            Some(e) => self.named_nodes(e, "Dataset.events")?,
        };
        if let Some(m) = body.get("measures")
            && !m.is_null()
        {
            return Err(LoadError::Unsupported {
                id: "Dataset".into(),
                what: "measures".into(),
            });
        }
        Dataset::new(self.graph, population, variables, events)
            .map_err(|e| LoadError::Dataset(Box::new(e)))
    }

    /// `{"DummyDataConfig": {population_size, legacy, timeout, additional_population_constraint}}`.
    fn dummy_data_config(&mut self, json: &'a Json) -> Result<DummyDataConfig, LoadError> {
        const ID: &str = "dataset_dummy_data_config";
        let (tag, body) = tagged(json, ID)?;
        if tag != "DummyDataConfig" {
            return Err(malformed(
                ID,
                format!("expected DummyDataConfig, got '{tag}'"),
            ));
        }
        let mut config = DummyDataConfig::default();
        if let Some(size) = body.get("population_size").filter(|v| !v.is_null()) {
            config.population_size = size
                .as_i64()
                .filter(|n| *n >= 0)
                .ok_or_else(|| malformed(ID, "population_size must be a non-negative integer"))?;
        }
        if let Some(legacy) = body.get("legacy").filter(|v| !v.is_null()) {
            config.legacy = legacy
                .as_bool()
                .ok_or_else(|| malformed(ID, "legacy must be a boolean"))?;
        }
        if let Some(timeout) = body.get("timeout").filter(|v| !v.is_null()) {
            config.timeout = timeout
                .as_i64()
                .ok_or_else(|| malformed(ID, "timeout must be an integer"))?;
        }
        if let Some(constraint) = body
            .get("additional_population_constraint")
            .filter(|v| !v.is_null())
        {
            let id = self.node(constraint, ID)?;
            if self.graph.scalar_type(id) != Some(ScalarType::Bool)
                || self.graph.info(id).domain != Domain::Patient
            {
                return Err(malformed(
                    ID,
                    "additional_population_constraint must be a boolean series with one value per patient",
                ));
            }
            config.additional_population_constraint = Some(id);
        }
        Ok(config)
    }

    fn named_nodes(&mut self, json: &Json, id: &str) -> Result<Vec<(String, NodeId)>, LoadError> {
        let mut out = Vec::new();
        for pair in tagged_list(json, "dict", id)? {
            let Some([Json::String(name), value]) = pair.as_array().map(Vec::as_slice) else {
                return Err(malformed(id, "expected [name, node] pairs"));
            };
            out.push((name.clone(), self.node(value, id)?));
        }
        Ok(out)
    }

    /// Resolves a node position: `{"ref": id}`, `{"external_ref": …}` or an inline node.
    fn node(&mut self, json: &Json, context: &str) -> Result<NodeId, LoadError> {
        if let Some(r) = json.get("ref") {
            let Some(r) = r.as_str() else {
                return Err(malformed(context, "'ref' must be a string"));
            };
            if let Some(id) = self.done.get(r) {
                return Ok(*id);
            }
            if self.active.iter().any(|a| a == r) {
                return Err(malformed(r, "the node refers to itself (reference cycle)"));
            }
            if self.active.len() >= MAX_DEPTH {
                return Err(malformed(r, "nodes are nested too deeply"));
            }
            let defs = self.defs;
            let def = defs
                .get(r)
                .ok_or_else(|| malformed(r, "reference to an undefined node"))?;
            self.active.push(r.to_string());
            let built = self.build(def, r);
            self.active.pop();
            let id = built?;
            self.done.insert(r.to_string(), id);
            return Ok(id);
        }
        if let Some(ext) = json.get("external_ref") {
            let module = field_str(ext, "module", context)?;
            let name = field_str(ext, "name", context)?;
            let Some(table) = tables::lookup(module, name) else {
                return Err(LoadError::UnknownTable {
                    id: context.to_string(),
                    module: module.to_string(),
                    name: name.to_string(),
                });
            };
            return Ok(self.graph.select_table(table));
        }
        if self.active.len() >= MAX_DEPTH {
            return Err(malformed(context, "nodes are nested too deeply"));
        }
        self.active.push(context.to_string());
        let built = self.build(json, context);
        self.active.pop();
        built
    }

    fn opt_node(&mut self, json: &Json, context: &str) -> Result<Option<NodeId>, LoadError> {
        if json.is_null() {
            Ok(None)
        } else {
            self.node(json, context).map(Some)
        }
    }

    fn build(&mut self, def: &Json, id: &str) -> Result<NodeId, LoadError> {
        let (class, body) = tagged(def, id)?;
        let invalid = |source: QueryError| LoadError::Invalid {
            id: id.to_string(),
            class: class.to_string(),
            source: Box::new(source),
        };
        match class {
            "Value" => {
                let literal = literal(body, id)?;
                self.graph.value(literal).map_err(invalid)
            }
            "Parameter" => {
                let name = field_str(body, "name", id)?;
                let ty = type_value(field(body, "type", id)?, id)?;
                Ok(self.graph.parameter(name, ty))
            }
            "SelectTable" | "SelectPatientTable" => Err(LoadError::InlineTable {
                id: id.to_string(),
                class: class.to_string(),
            }),
            "InlinePatientTable" => {
                self.check_paths(body, id)?;
                Err(LoadError::Unsupported {
                    id: id.to_string(),
                    what: "InlinePatientTable (table_from_file)".into(),
                })
            }
            "SelectColumn" => {
                let source = self.node(field(body, "source", id)?, id)?;
                let name = field_str(body, "name", id)?;
                self.graph.select_column(source, name).map_err(invalid)
            }
            "Filter" => {
                let source = self.node(field(body, "source", id)?, id)?;
                let condition = self.node(field(body, "condition", id)?, id)?;
                self.graph.filter(source, condition).map_err(invalid)
            }
            "Sort" => {
                let source = self.node(field(body, "source", id)?, id)?;
                let sort_by = self.node(field(body, "sort_by", id)?, id)?;
                self.graph.sort(source, sort_by).map_err(invalid)
            }
            "PickOneRowPerPatient" => {
                let source = self.node(field(body, "source", id)?, id)?;
                let position = match field(body, "position", id)?
                    .get("Position")
                    .and_then(Json::as_str)
                {
                    Some("first") => Position::First,
                    Some("last") => Position::Last,
                    _ => {
                        return Err(malformed(
                            id,
                            "position must be {\"Position\": \"first\"|\"last\"}",
                        ));
                    }
                };
                self.graph.pick(source, position).map_err(invalid)
            }
            "AggregateByPatient.CountEpisodes" => {
                let source = self.node(field(body, "source", id)?, id)?;
                let gap = field(body, "maximum_gap_days", id)?
                    .as_i64()
                    .filter(|_| body.get("maximum_gap_days").is_some_and(Json::is_i64))
                    .ok_or_else(|| malformed(id, "maximum_gap_days must be an integer"))?;
                self.graph.count_episodes(source, gap).map_err(invalid)
            }
            "Case" => {
                let mut cases = Vec::new();
                for pair in tagged_list(field(body, "cases", id)?, "dict", id)? {
                    let Some([condition, value]) = pair.as_array().map(Vec::as_slice) else {
                        return Err(malformed(id, "cases must be [condition, value] pairs"));
                    };
                    let condition = self.node(condition, id)?;
                    let value = self.opt_node(value, id)?;
                    cases.push((condition, value));
                }
                let default = match body.get("default") {
                    None => None,
                    Some(d) => self.opt_node(d, id)?,
                };
                self.graph.case(cases, default).map_err(invalid)
            }
            "SeriesCollectionFrame" => {
                let members = self.named_nodes(field(body, "members", id)?, id)?;
                let members = members
                    .into_iter()
                    .map(|(n, v)| (Arc::<str>::from(n), v))
                    .collect();
                self.graph.series_collection_frame(members).map_err(invalid)
            }
            "Dataset" | "ModuleDetails" | "GroupedSum" => {
                Err(malformed(id, format!("'{class}' is not allowed here")))
            }
            _ => {
                if let Some(name) = class.strip_prefix("AggregateByPatient.") {
                    let Some(kind) = AggregateKind::ALL
                        .into_iter()
                        .find(|k| k.class_name() == class)
                    else {
                        return Err(malformed(id, format!("unknown aggregation '{name}'")));
                    };
                    let source = self.node(field(body, "source", id)?, id)?;
                    return self.graph.aggregate(kind, source).map_err(invalid);
                }
                if let Some(name) = class.strip_prefix("Function.") {
                    let Some(op) = FunctionOp::ALL.into_iter().find(|o| o.name() == name) else {
                        return Err(malformed(id, format!("unknown function '{name}'")));
                    };
                    let args = match op.arity() {
                        crate::query_model::Arity::Unary => {
                            vec![self.node(field(body, "source", id)?, id)?]
                        }
                        crate::query_model::Arity::Binary => {
                            let lhs = self.node(field(body, "lhs", id)?, id)?;
                            let rhs = self.node(field(body, "rhs", id)?, id)?;
                            vec![lhs, rhs]
                        }
                        crate::query_model::Arity::Variadic => {
                            let mut args = Vec::new();
                            for s in tagged_list(field(body, "sources", id)?, "tuple", id)? {
                                args.push(self.node(s, id)?);
                            }
                            args
                        }
                    };
                    return self.graph.function(op, args).map_err(invalid);
                }
                Err(malformed(id, format!("unknown node type '{class}'")))
            }
        }
    }

    /// Finds every `{"Path": p}` under `json` and checks it stays inside the workspace.
    fn check_paths(&self, json: &Json, id: &str) -> Result<(), LoadError> {
        match json {
            Json::Object(m) => {
                if let Some(Json::String(p)) = m.get("Path")
                    && !path_inside(self.workspace, Path::new(p))
                {
                    return Err(LoadError::PathOutsideWorkspace {
                        id: id.to_string(),
                        path: p.clone(),
                    });
                }
                m.values().try_for_each(|v| self.check_paths(v, id))
            }
            Json::Array(a) => a.iter().try_for_each(|v| self.check_paths(v, id)),
            _ => Ok(()),
        }
    }
}

/// Whether `path` (relative to `workspace`, or absolute) stays inside `workspace`, judged
/// lexically: no `..` may climb above it.
pub fn path_inside(workspace: &Path, path: &Path) -> bool {
    let relative = if path.is_absolute() {
        match path.strip_prefix(workspace) {
            Ok(r) => r,
            Err(_) => return false,
        }
    } else {
        path
    };
    let mut depth: i64 = 0;
    for c in relative.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn type_value(json: &Json, id: &str) -> Result<ScalarType, LoadError> {
    let name = json
        .get("type")
        .and_then(Json::as_str)
        .ok_or_else(|| malformed(id, "expected {\"type\": name}"))?;
    ScalarType::from_name(name).ok_or_else(|| malformed(id, format!("unknown type '{name}'")))
}

/// A `Value` body: a scalar or a frozenset.
fn literal(json: &Json, id: &str) -> Result<Literal, LoadError> {
    if let Some(Json::Array(items)) = json.get("frozenset") {
        let values = items
            .iter()
            .map(|v| scalar(v, id))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Literal::Set {
            element: None,
            values,
        });
    }
    Ok(Literal::Scalar(scalar(json, id)?))
}

/// A typed scalar value (spec §9): JSON primitives, `{"date": iso}`, `{"<CodeClass>": code}`.
pub fn scalar(json: &Json, id: &str) -> Result<Value, LoadError> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            // Keep int and float apart: `1` is an int, `1.0` a float.
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if n.is_f64() {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            } else {
                return Err(malformed(id, format!("integer {n} is out of range")));
            }
        }
        Json::String(s) => Value::Str(s.as_str().into()),
        Json::Object(m) if m.len() == 1 => {
            let (tag, body) = tagged(json, id)?;
            match (tag, body) {
                ("date", Json::String(s)) => Value::Date(
                    Date::parse_iso(s)
                        .ok_or_else(|| malformed(id, format!("invalid date '{s}'")))?,
                ),
                ("float", Json::Number(n)) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                (tag, Json::String(code)) => match CodeSystem::from_class_name(tag) {
                    Some(system) => Value::Code(system, code.as_str().into()),
                    None => return Err(malformed(id, format!("unknown value type '{tag}'"))),
                },
                _ => return Err(malformed(id, format!("unsupported value {}", short(json)))),
            }
        }
        other => return Err(malformed(id, format!("unsupported value {}", short(other)))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_inside_the_workspace() {
        let ws = Path::new("/workspace");
        assert!(path_inside(ws, Path::new("data/x.csv")));
        assert!(path_inside(ws, Path::new("a/../b.csv")));
        assert!(path_inside(ws, Path::new("/workspace/a.csv")));
        assert!(!path_inside(ws, Path::new("../secret.csv")));
        assert!(!path_inside(ws, Path::new("a/../../b.csv")));
        assert!(!path_inside(ws, Path::new("/etc/passwd")));
    }
}
