//! Pipeline definitions, as far as connections care: which nodes reference which `conn_id`.
//!
//! A definition is `{"name": …, "nodes": [{"id", "type", "config": {"conn_id": …, …}}]}`.
//! Only `config.conn_id` of a node is a reference; the rest of the config is kept as it is.
//! Definitions are stored in plain text: they must not hold secrets (that is what
//! connections are for).

use std::collections::HashSet;
use std::fmt;

use broked_core::ConnId;
use serde_json::{Map, Value};

/// A pipeline id: `^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PipelineId(String);

impl PipelineId {
    pub const RULE: &'static str = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$";

    pub fn new(id: impl Into<String>) -> Result<PipelineId, PipelineError> {
        let id = id.into();
        let b = id.as_bytes();
        let ok = b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if ok {
            Ok(PipelineId(id))
        } else {
            Err(PipelineError(vec![format!(
                "pipeline_id must be 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit ({})",
                Self::RULE
            )]))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One node of a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub id: String,
    pub node_type: String,
    pub config: Map<String, Value>,
}

impl Node {
    /// The connection this node references, if any.
    pub fn conn_id(&self) -> Option<ConnId> {
        self.config
            .get("conn_id")
            .and_then(Value::as_str)
            .and_then(|s| ConnId::new(s).ok())
    }
}

/// A pipeline definition.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineDef {
    pub name: String,
    pub nodes: Vec<Node>,
}

/// Every problem found in a pipeline definition, each naming where it is (`nodes[2].id`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid pipeline: {}", .0.join("; "))]
pub struct PipelineError(pub Vec<String>);

impl PipelineDef {
    /// Reads and checks a definition from JSON text.
    pub fn from_json(text: &str) -> Result<PipelineDef, PipelineError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            PipelineError(vec![format!(
                "not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            )])
        })?;
        PipelineDef::from_value(value)
    }

    /// Checks a definition already parsed as JSON.
    pub fn from_value(value: Value) -> Result<PipelineDef, PipelineError> {
        let mut problems = Vec::new();
        let Value::Object(mut top) = value else {
            return Err(PipelineError(vec![
                "a pipeline must be a JSON object".into(),
            ]));
        };
        let name = match top.remove("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            _ => {
                problems.push("name: a non-empty string is required".into());
                String::new()
            }
        };
        let raw_nodes = match top.remove("nodes") {
            Some(Value::Array(nodes)) => nodes,
            None => Vec::new(),
            Some(_) => {
                problems.push("nodes: must be an array".into());
                Vec::new()
            }
        };
        let mut seen = HashSet::new();
        let mut nodes = Vec::with_capacity(raw_nodes.len());
        for (i, node) in raw_nodes.into_iter().enumerate() {
            let Value::Object(mut node) = node else {
                problems.push(format!("nodes[{i}]: must be an object"));
                continue;
            };
            let id = match node.remove("id") {
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => {
                    problems.push(format!("nodes[{i}].id: a non-empty string is required"));
                    String::new()
                }
            };
            if !id.is_empty() && !seen.insert(id.clone()) {
                problems.push(format!("nodes[{i}].id: {id:?} appears twice"));
            }
            let node_type = match node.remove("type") {
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => {
                    problems.push(format!("nodes[{i}].type: a non-empty string is required"));
                    String::new()
                }
            };
            let config = match node.remove("config") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(config)) => config,
                Some(_) => {
                    problems.push(format!("nodes[{i}].config: must be an object"));
                    Map::new()
                }
            };
            match config.get("conn_id") {
                None => {}
                Some(Value::String(s)) if ConnId::new(s.as_str()).is_ok() => {}
                Some(_) => problems.push(format!(
                    "nodes[{i}].config.conn_id: must be a conn_id ({})",
                    ConnId::RULE
                )),
            }
            nodes.push(Node {
                id,
                node_type,
                config,
            });
        }
        if problems.is_empty() {
            Ok(PipelineDef { name, nodes })
        } else {
            Err(PipelineError(problems))
        }
    }

    /// The definition as JSON, in the shape [`PipelineDef::from_json`] reads.
    pub fn to_value(&self) -> Value {
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                let mut node = Map::new();
                node.insert("id".into(), Value::String(n.id.clone()));
                node.insert("type".into(), Value::String(n.node_type.clone()));
                node.insert("config".into(), Value::Object(n.config.clone()));
                Value::Object(node)
            })
            .collect();
        let mut top = Map::new();
        top.insert("name".into(), Value::String(self.name.clone()));
        top.insert("nodes".into(), Value::Array(nodes));
        Value::Object(top)
    }

    /// `(node id, conn_id)` for every node that references a connection.
    pub fn references(&self) -> Vec<(String, ConnId)> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.id.clone(), n.conn_id()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_node_is_a_reference() {
        let def = PipelineDef::from_json(
            r#"{"name": "users sync", "nodes": [
                {"id": "src", "type": "source_db",
                 "config": {"conn_id": "prod-postgres", "query": "SELECT * FROM users"}},
                {"id": "log", "type": "log"}]}"#,
        )
        .unwrap();
        assert_eq!(
            def.references(),
            [("src".to_owned(), ConnId::new("prod-postgres").unwrap())]
        );
        assert_eq!(PipelineDef::from_value(def.to_value()).unwrap(), def);
    }

    #[test]
    fn every_problem_named() {
        let e = PipelineDef::from_json(
            r#"{"nodes": [{"id": "a", "type": "t", "config": {"conn_id": "Bad Id"}},
                          {"id": "a", "type": ""}, 3]}"#,
        )
        .unwrap_err();
        expect_test::expect![[r#"
            [
                "name: a non-empty string is required",
                "nodes[0].config.conn_id: must be a conn_id (^[a-z0-9][a-z0-9_-]{0,127}$)",
                "nodes[1].id: \"a\" appears twice",
                "nodes[1].type: a non-empty string is required",
                "nodes[2]: must be an object",
            ]
        "#]]
        .assert_debug_eq(&e.0);
        assert!(PipelineDef::from_json("[1").is_err());
        assert!(PipelineId::new("etl.daily-1").is_ok());
        assert!(PipelineId::new("-x").is_err());
    }
}
