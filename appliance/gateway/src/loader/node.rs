//! A YAML document as a tree that remembers the line of every node.
//!
//! Objects are converted through `serde_json::Value` (so every kind is parsed the same way and
//! field paths come from `serde_path_to_error`); this tree keeps the line of each field so an
//! error at `spec.listeners[1].port` can name the line it is on.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

/// One YAML node with its location.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) line: u64,
    pub(crate) value: NodeValue,
}

#[derive(Debug)]
pub(crate) enum NodeValue {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(Spanned<String>, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<NodeValue>::deserialize(deserializer)?;
        Ok(Node { line: spanned.referenced.line(), value: spanned.value })
    }
}

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_none<E>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        NodeValue::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<NodeValue, E> {
        Ok(NodeValue::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<NodeValue, E> {
        Ok(NodeValue::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<NodeValue, E> {
        Number::from_f64(v)
            .map(NodeValue::Number)
            .ok_or_else(|| E::custom("non-finite numbers are not allowed"))
    }

    fn visit_str<E>(self, v: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<NodeValue, E> {
        Ok(NodeValue::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(NodeValue::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(NodeValue::Map(entries))
    }
}

/// Lines of the fields of one document, keyed by field path (`spec.listeners[0].port`).
#[derive(Debug, Default)]
pub(crate) struct Lines(HashMap<String, u64>);

impl Lines {
    /// The line of `path`, or of its closest ancestor that has one.
    pub(crate) fn find(&self, path: &str) -> Option<u64> {
        let mut path = path;
        loop {
            if let Some(line) = self.0.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

impl Node {
    /// Converts to JSON, recording the line of every field path.
    pub(crate) fn into_json(self) -> (Value, Lines) {
        let mut lines = Lines::default();
        let value = convert(self, String::new(), &mut lines);
        (value, lines)
    }

    /// The string at `key` of a mapping node.
    pub(crate) fn str_field(&self, key: &str) -> Option<&str> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find_map(|(k, v)| match &v.value {
                NodeValue::String(s) if k.value == key => Some(s.as_str()),
                _ => None,
            }),
            _ => None,
        }
    }

    /// The node at `key` of a mapping node.
    pub(crate) fn field(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|(k, _)| k.value == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

fn convert(node: Node, path: String, lines: &mut Lines) -> Value {
    lines.0.insert(path.clone(), node.line);
    match node.value {
        NodeValue::Null => Value::Null,
        NodeValue::Bool(b) => Value::Bool(b),
        NodeValue::Number(n) => Value::Number(n),
        NodeValue::String(s) => Value::String(s),
        NodeValue::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| convert(item, format!("{path}[{i}]"), lines))
                .collect(),
        ),
        NodeValue::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let child = if path.is_empty() {
                    key.value.clone()
                } else {
                    format!("{path}.{}", key.value)
                };
                let value = convert(value, child.clone(), lines);
                // The key's own line is better than the value's for nested mappings.
                lines.0.insert(child, key.referenced.line());
                map.insert(key.value, value);
            }
            Value::Object(map)
        }
    }
}
