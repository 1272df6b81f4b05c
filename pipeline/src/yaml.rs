//! YAML text to a small node tree with positions, built from `saphyr-parser`'s event stream.
//!
//! We build our own tree rather than use `saphyr`'s loaded documents because the rules need
//! things its maps do not keep: keys in file order with their positions, every duplicate key
//! named with both values (the reference's wording), merge keys (`<<`) as the reference's YAML
//! library applies them, and a cap on alias expansion and nesting so that no input can exhaust
//! memory or the stack. Plain scalars resolve by the YAML 1.2 core schema, as the reference's
//! YAML 1.2 parser does; quoted scalars are always strings.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use crate::error::{Failure, Location};
use crate::pytext;

/// Deepest nesting of sequences and mappings we accept. Real files nest four or five levels; the
/// cap keeps recursive walks (and dropping the tree) far from the stack limit.
const MAX_DEPTH: usize = 128;

/// Most nodes a document may expand to, aliases included. Bounds memory against alias bombs
/// ("billion laughs"); a 500-action project has about 10,000 nodes.
const MAX_NODES: usize = 500_000;

/// A YAML value with the position where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) location: Location,
}

/// A resolved YAML value. Mappings keep file order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    pub(crate) fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The key as the reference would print it in a message (Python's `str()` of the value).
    pub(crate) fn key_text(&self) -> String {
        pytext::python_str(&self.value)
    }
}

/// Looks a string key up in a mapping's entries, returning the value node.
pub(crate) fn get<'a>(entries: &'a [(Node, Node)], key: &str) -> Option<&'a Node> {
    entries
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// Parses `text` as a single YAML document. `Ok(None)` means the stream holds no document (an
/// empty file or only comments).
pub(crate) fn parse(text: &str) -> Result<Option<Node>, Failure> {
    let mut builder = Builder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(pair) => pair,
            Err(error) => {
                let marker = error.marker();
                let location = Location {
                    line: marker.line(),
                    column: marker.col() + 1,
                };
                return Err(Failure::yaml(error.info().to_owned(), Some(location)));
            }
        };
        if builder.on_event(event, span)? {
            break;
        }
    }
    Ok(builder.root)
}

fn location_of(span: &Span) -> Location {
    Location {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    n_documents: usize,
    n_nodes: usize,
}

enum Frame {
    Seq {
        items: Vec<Node>,
        anchor: usize,
        location: Location,
    },
    Map {
        entries: Vec<(Node, Node)>,
        /// Explicit keys by hash, built once the mapping is large enough that a linear search
        /// for duplicates would be quadratic (the `actions` mapping of a big project).
        seen: Option<HashMap<u64, Vec<usize>>>,
        merges: Vec<Node>,
        pending_key: Option<(Node, bool)>,
        anchor: usize,
        location: Location,
    },
}

impl Builder {
    /// Handles one event; returns `true` at the end of the stream.
    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<bool, Failure> {
        let location = location_of(&span);
        match event {
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => return Ok(true),
            Event::DocumentStart(_) => {
                self.n_documents += 1;
                if self.n_documents > 1 {
                    return Err(Failure::yaml(
                        "expected a single document in the stream, but found another document",
                        Some(location),
                    ));
                }
            }
            Event::Alias(anchor) => {
                let Some(node) = self.anchors.get(&anchor) else {
                    return Err(Failure::yaml("found undefined alias", Some(location)));
                };
                // Check the budget before cloning: the clone is what an alias bomb would blow up.
                let total = self.n_nodes.saturating_add(count_nodes(node));
                if total > MAX_NODES {
                    return Err(too_many_nodes(location));
                }
                let mut node = node.clone();
                self.n_nodes = total;
                node.location = location;
                self.insert(node, false)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.charge(1, location)?;
                let is_merge_key = style == ScalarStyle::Plain && tag.is_none() && text == "<<";
                let value = resolve_scalar(text, style, tag.as_deref(), location)?;
                let node = Node { value, location };
                if anchor != 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.insert(node, is_merge_key)?;
            }
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "seq", location)?;
                self.open(location)?;
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    anchor,
                    location,
                });
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "map", location)?;
                self.open(location)?;
                self.stack.push(Frame::Map {
                    entries: Vec::new(),
                    seen: None,
                    merges: Vec::new(),
                    pending_key: None,
                    anchor,
                    location,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Err(Failure::yaml(
                        "unexpected end of collection",
                        Some(location),
                    ));
                };
                let (node, anchor) = match frame {
                    Frame::Seq {
                        items,
                        anchor,
                        location,
                    } => (
                        Node {
                            value: Value::Seq(items),
                            location,
                        },
                        anchor,
                    ),
                    Frame::Map {
                        entries,
                        merges,
                        anchor,
                        location,
                        ..
                    } => (
                        Node {
                            value: Value::Map(apply_merges(entries, merges)),
                            location,
                        },
                        anchor,
                    ),
                };
                if anchor != 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.insert(node, false)?;
            }
        }
        Ok(false)
    }

    fn open(&mut self, location: Location) -> Result<(), Failure> {
        self.charge(1, location)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(Failure::yaml(
                format!("nesting is deeper than {MAX_DEPTH} levels"),
                Some(location),
            ));
        }
        Ok(())
    }

    fn charge(&mut self, n_nodes: usize, location: Location) -> Result<(), Failure> {
        self.n_nodes = self.n_nodes.saturating_add(n_nodes);
        if self.n_nodes > MAX_NODES {
            return Err(too_many_nodes(location));
        }
        Ok(())
    }

    fn insert(&mut self, node: Node, is_merge_key: bool) -> Result<(), Failure> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries,
                seen,
                merges,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    if matches!(node.value, Value::Seq(_) | Value::Map(_)) {
                        return Err(Failure::yaml(
                            "found a mapping key that is a list or a mapping; keys must be plain values",
                            Some(node.location),
                        ));
                    }
                    *pending_key = Some((node, is_merge_key));
                    Ok(())
                }
                Some((_, true)) => {
                    if !is_merge_source(&node) {
                        return Err(Failure::yaml(
                            "expected a mapping or list of mappings for merging",
                            Some(node.location),
                        ));
                    }
                    merges.push(node);
                    Ok(())
                }
                Some((key, false)) => {
                    if let Some(index) = find_key(entries, seen.as_ref(), &key.value) {
                        let original = &entries[index].1;
                        return Err(Failure::yaml(
                            format!(
                                "found duplicate key \"{}\" with value \"{}\" (original value: \"{}\")",
                                key.key_text(),
                                pytext::summary(&node.value),
                                pytext::summary(&original.value),
                            ),
                            Some(key.location),
                        ));
                    }
                    if let Some(seen) = seen {
                        seen.entry(key_hash(&key.value))
                            .or_default()
                            .push(entries.len());
                    } else if entries.len() + 1 >= HASHED_FROM {
                        let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
                        for (i, (k, _)) in entries.iter().enumerate() {
                            index.entry(key_hash(&k.value)).or_default().push(i);
                        }
                        index
                            .entry(key_hash(&key.value))
                            .or_default()
                            .push(entries.len());
                        *seen = Some(index);
                    }
                    entries.push((key, node));
                    Ok(())
                }
            },
        }
    }
}

/// Applies `<<` merge keys as the reference's YAML library does: merged entries come first, an
/// earlier merge source wins over a later one, and explicit keys override merged ones in place.
/// Merges are rare and small, so plain linear searches do.
fn apply_merges(entries: Vec<(Node, Node)>, merges: Vec<Node>) -> Vec<(Node, Node)> {
    if merges.is_empty() {
        return entries;
    }
    let mut merged: Vec<(Node, Node)> = Vec::new();
    let mut sources: Vec<Node> = Vec::new();
    for merge in merges {
        match merge.value {
            Value::Seq(items) => sources.extend(items),
            _ => sources.push(merge),
        }
    }
    for source in sources {
        // Non-mapping merge sources were rejected on insertion (`is_merge_source`).
        let Value::Map(source_entries) = source.value else {
            continue;
        };
        for (key, value) in source_entries {
            if find_key(&merged, None, &key.value).is_none() {
                merged.push((key, value));
            }
        }
    }
    for (key, value) in entries {
        match find_key(&merged, None, &key.value) {
            Some(index) => merged[index].1 = value,
            None => merged.push((key, value)),
        }
    }
    merged
}

/// Mappings with at least this many keys get a hash index for duplicate detection.
const HASHED_FROM: usize = 16;

/// The index of the entry whose key equals `key` (Python's equality), if any.
fn find_key(
    entries: &[(Node, Node)],
    index: Option<&HashMap<u64, Vec<usize>>>,
    key: &Value,
) -> Option<usize> {
    match index {
        Some(index) => index
            .get(&key_hash(key))?
            .iter()
            .copied()
            .find(|&i| same_key(&entries[i].0.value, key)),
        None => entries.iter().position(|(k, _)| same_key(&k.value, key)),
    }
}

/// A number as Python compares it: `true == 1 == 1.0`.
fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// Key equality with Python's rules: numbers compare by value across int, float and bool; NaN
/// equals nothing; strings by content; collections are never equal (they cannot be keys).
fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        _ => match (as_number(a), as_number(b)) {
            // An int too large for an exact f64 only equals an int (handled above).
            (Some(x), Some(y)) => x == y && !matches!((a, b), (Value::Int(_), Value::Int(_))),
            _ => false,
        },
    }
}

/// A hash consistent with [`same_key`]: equal keys hash alike.
fn key_hash(value: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match value {
        Value::Null => 0u8.hash(&mut hasher),
        Value::Str(s) => {
            1u8.hash(&mut hasher);
            s.hash(&mut hasher);
        }
        Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
            2u8.hash(&mut hasher);
            // Hash numbers by their f64 value so 1, 1.0 and true collide; -0.0 is 0.0.
            let number = as_number(value).unwrap_or(0.0);
            let number = if number == 0.0 { 0.0 } else { number };
            number.to_bits().hash(&mut hasher);
        }
        Value::Seq(_) | Value::Map(_) => 3u8.hash(&mut hasher),
    }
    hasher.finish()
}

fn too_many_nodes(location: Location) -> Failure {
    Failure::yaml(
        format!("the document expands to more than {MAX_NODES} values (through aliases?)"),
        Some(location),
    )
}

fn count_nodes(node: &Node) -> usize {
    let mut count = 0usize;
    let mut stack = vec![node];
    while let Some(node) = stack.pop() {
        count += 1;
        match &node.value {
            Value::Seq(items) => stack.extend(items.iter()),
            Value::Map(entries) => {
                for (key, value) in entries {
                    stack.push(key);
                    stack.push(value);
                }
            }
            _ => {}
        }
    }
    count
}

fn check_collection_tag(
    tag: Option<&Tag>,
    expected: &str,
    location: Location,
) -> Result<(), Failure> {
    match tag {
        None => Ok(()),
        Some(tag) if is_non_specific(tag) => Ok(()),
        Some(tag) if tag.is_yaml_core_schema() && tag.suffix == expected => Ok(()),
        Some(tag) => Err(unknown_tag(tag, location)),
    }
}

fn is_non_specific(tag: &Tag) -> bool {
    tag.handle.is_empty() && tag.suffix == "!"
}

fn unknown_tag(tag: &Tag, location: Location) -> Failure {
    Failure::yaml(
        format!("could not determine a constructor for the tag '{tag}'"),
        Some(location),
    )
}

/// Resolves a scalar by the YAML 1.2 core schema (plain style) or its explicit core tag.
fn resolve_scalar(
    text: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&Tag>,
    location: Location,
) -> Result<Value, Failure> {
    if let Some(tag) = tag {
        if !tag.is_yaml_core_schema() {
            // `!` alone is the non-specific tag (the parser gives it an empty handle and the
            // suffix `!`): the scalar is a string.
            if is_non_specific(tag) {
                return Ok(Value::Str(text.into_owned()));
            }
            return Err(unknown_tag(tag, location));
        }
        let resolved = match tag.suffix.as_str() {
            "str" => return Ok(Value::Str(text.into_owned())),
            "null" => resolve_null(&text),
            "bool" => resolve_bool(&text),
            "int" => resolve_int(&text),
            "float" => resolve_float(&text).or_else(|| resolve_int(&text).map(int_to_float)),
            _ => return Err(unknown_tag(tag, location)),
        };
        return resolved.ok_or_else(|| {
            Failure::yaml(
                format!("the value '{text}' cannot be read as '{tag}'"),
                Some(location),
            )
        });
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(text.into_owned()));
    }
    // Most plain scalars are words: only these first characters can start a null, bool or number.
    let could_be_special = text
        .chars()
        .next()
        .is_none_or(|c| c.is_ascii_digit() || "~nNtTfF-+.".contains(c));
    if !could_be_special {
        return Ok(Value::Str(text.into_owned()));
    }
    let special = resolve_null(&text)
        .or_else(|| resolve_bool(&text))
        .or_else(|| resolve_int(&text))
        .or_else(|| resolve_float(&text));
    Ok(special.unwrap_or_else(|| Value::Str(text.into_owned())))
}

fn int_to_float(value: Value) -> Value {
    match value {
        Value::Int(i) => Value::Float(i as f64),
        other => other,
    }
}

fn resolve_null(text: &str) -> Option<Value> {
    matches!(text, "" | "~" | "null" | "Null" | "NULL").then_some(Value::Null)
}

fn resolve_bool(text: &str) -> Option<Value> {
    match text {
        "true" | "True" | "TRUE" => Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => Some(Value::Bool(false)),
        _ => None,
    }
}

fn resolve_int(text: &str) -> Option<Value> {
    if let Some(octal) = text.strip_prefix("0o") {
        return parse_radix(octal, 8);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return parse_radix(hex, 16);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match text.parse::<i128>() {
        Ok(i) => Some(Value::Int(i)),
        // Beyond i128: keep the magnitude as a float rather than fail (documented difference).
        Err(_) => text.parse::<f64>().ok().map(Value::Float),
    }
}

fn parse_radix(digits: &str, radix: u32) -> Option<Value> {
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    i128::from_str_radix(digits, radix).ok().map(Value::Int)
}

fn resolve_float(text: &str) -> Option<Value> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Some(Value::Float(f64::INFINITY));
        }
        "-.inf" | "-.Inf" | "-.INF" => return Some(Value::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Some(Value::Float(f64::NAN)),
        _ => {}
    }
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((whole, frac)) => {
            (!whole.is_empty() || !frac.is_empty())
                && whole.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(exp) => {
            let digits = exp.strip_prefix(['-', '+']).unwrap_or(exp);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        }
    };
    if !(mantissa_ok && exponent_ok) {
        return None;
    }
    text.parse::<f64>().ok().map(Value::Float)
}

/// Whether a `<<` value can be merged: a mapping, or a list of mappings.
fn is_merge_source(node: &Node) -> bool {
    match &node.value {
        Value::Map(_) => true,
        Value::Seq(items) => items.iter().all(|item| matches!(item.value, Value::Map(_))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Value {
        parse(text).unwrap().unwrap().value
    }

    #[test]
    fn plain_scalars_resolve_by_the_core_schema() {
        assert_eq!(value("5"), Value::Int(5));
        assert_eq!(value("-5"), Value::Int(-5));
        assert_eq!(value("0x1F"), Value::Int(31));
        assert_eq!(value("0o17"), Value::Int(15));
        assert_eq!(value("4.5"), Value::Float(4.5));
        assert_eq!(value("1e3"), Value::Float(1000.0));
        assert_eq!(value(".5"), Value::Float(0.5));
        assert_eq!(value("5."), Value::Float(5.0));
        assert_eq!(value("-.inf"), Value::Float(f64::NEG_INFINITY));
        assert_eq!(value("true"), Value::Bool(true));
        assert_eq!(value("~"), Value::Null);
        assert_eq!(value("yes"), Value::Str("yes".into()));
        assert_eq!(value("'5'"), Value::Str("5".into()));
        assert_eq!(value("."), Value::Str(".".into()));
        assert_eq!(value("1_000"), Value::Str("1_000".into()));
        assert_eq!(value("!!str 5"), Value::Str("5".into()));
        assert_eq!(value("!!float 5"), Value::Float(5.0));
        assert_eq!(value("! 5"), Value::Str("5".into()));
        assert_eq!(
            value("! [5]"),
            Value::Seq(vec![Node {
                value: Value::Int(5),
                location: Location { line: 1, column: 4 }
            }])
        );
    }

    #[test]
    fn an_empty_stream_has_no_document() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
    }

    #[test]
    fn merge_keys_put_merged_entries_first_and_explicit_keys_win() {
        let text = "base: &b {x: 1, y: 2}\nother:\n  z: 0\n  <<: *b\n  y: 3\n";
        let root = parse(text).unwrap().unwrap();
        let other = get(root.as_map().unwrap(), "other").unwrap();
        let keys: Vec<String> = other
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.key_text())
            .collect();
        assert_eq!(keys, ["x", "y", "z"]);
        assert_eq!(
            get(other.as_map().unwrap(), "y").unwrap().value,
            Value::Int(3)
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let failure = parse(&text).unwrap_err();
        assert!(
            failure.reason.contains("expands to more than"),
            "{failure:?}"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(200) + &"]".repeat(200);
        let failure = parse(&text).unwrap_err();
        assert!(failure.reason.contains("nesting is deeper"), "{failure:?}");
        // Far deeper input stops in the scanner's own limit, still as an error.
        let text = "[".repeat(100_000);
        assert!(parse(&text).is_err());
    }
}
