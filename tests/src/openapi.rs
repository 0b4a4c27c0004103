//! The API contract in the tests: every answer of the reporting API that a test reads
//! through the harness (`Stack::api` and the helpers built on it) is checked against the
//! OpenAPI document the service serves. A path or a status the document does not list
//! fails the test, and so does a JSON body that breaks its response schema.
//!
//! The document's schemas are made strict before use: `allOf` parts are merged into one
//! object, and an object schema that lists its properties admits no others, so a field an
//! answer gains without being documented is caught as much as one it loses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context};
use serde_json::{Map, Value};

/// The document, its operations and the validators compiled so far.
pub struct Contract {
    document: Value,
    operations: Vec<Operation>,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

struct Operation {
    method: String,
    /// The path template split at `/`; `{name}` segments match any one segment.
    segments: Vec<String>,
    template: String,
    responses: Map<String, Value>,
}

impl Contract {
    /// Reads an OpenAPI document (as `/api/v1/openapi.json` serves it).
    pub fn new(document: Value) -> anyhow::Result<Self> {
        let mut strict = document.clone();
        let components = document["components"]["schemas"].clone();
        make_strict(&mut strict, &components);
        let mut operations = Vec::new();
        for (template, item) in strict["paths"]
            .as_object()
            .context("the document has no paths")?
        {
            for (method, operation) in item.as_object().context("a path item is not an object")? {
                let Some(responses) = operation["responses"].as_object() else {
                    continue;
                };
                operations.push(Operation {
                    method: method.to_ascii_uppercase(),
                    segments: template.split('/').map(String::from).collect(),
                    template: template.clone(),
                    responses: responses.clone(),
                });
            }
        }
        Ok(Self {
            document: strict,
            operations,
            validators: Mutex::new(HashMap::new()),
        })
    }

    /// The document as the contract reads it (strict).
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// The documented operation `method path` answers with, its template.
    fn operation(&self, method: &str, path: &str) -> Option<&Operation> {
        let path = path.split('?').next().unwrap_or(path);
        let segments: Vec<&str> = path.split('/').collect();
        let matches = |op: &&Operation| {
            op.method == method
                && op.segments.len() == segments.len()
                && op
                    .segments
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
        };
        // A literal segment wins over a template one (`/from-template` over `/{id}`).
        self.operations
            .iter()
            .filter(matches)
            .max_by_key(|op| op.segments.iter().filter(|s| !s.starts_with('{')).count())
    }

    /// Checks one answer: `path` (with or without its query) must be a documented
    /// operation of `method`, `status` one of its documented answers, and a JSON body
    /// valid against that answer's schema. `content_type` is the answer's header.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let method = method.to_ascii_uppercase();
        let operation = self.operation(&method, path).ok_or_else(|| {
            anyhow!("{method} {path} is not an operation of the OpenAPI document")
        })?;
        let op = format!("{method} {}", operation.template);
        let response = operation
            .responses
            .get(&status.to_string())
            .or_else(|| operation.responses.get("default"))
            .ok_or_else(|| {
                anyhow!(
                    "{op} answered {status}, which the OpenAPI document does not list (it lists {})",
                    operation.responses.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if mime != "application/json" {
            return Ok(());
        }
        let Some(schema) = response["content"]["application/json"].get("schema") else {
            if response["content"].get("application/json").is_some() {
                return Ok(());
            }
            bail!("{op} answered {status} with JSON, which the OpenAPI document does not describe");
        };
        let json: Value = serde_json::from_slice(body)
            .with_context(|| format!("{op} answered {status} with a body that is not JSON"))?;
        let key = format!("{op} {status}");
        self.validate(&key, schema, &json)
            .map_err(|e| anyhow!("{op} answered {status} with a body that breaks its OpenAPI schema: {e}\nbody: {json}"))
    }

    /// Validates `json` against `schema` (a schema of the document, `$ref`s into its
    /// components); every violation is listed.
    pub fn validate(&self, key: &str, schema: &Value, json: &Value) -> Result<(), String> {
        let validator = {
            let mut validators = self.validators.lock().map_err(|e| e.to_string())?;
            match validators.get(key) {
                Some(v) => v.clone(),
                None => {
                    let mut root = match schema {
                        Value::Object(m) => m.clone(),
                        other => return Err(format!("not a schema: {other}")),
                    };
                    root.insert("components".into(), self.document["components"].clone());
                    let v = Arc::new(
                        jsonschema::draft202012::new(&Value::Object(root))
                            .map_err(|e| format!("the schema does not compile: {e}"))?,
                    );
                    validators.insert(key.to_string(), v.clone());
                    v
                }
            }
        };
        let errors: Vec<String> = validator
            .iter_errors(json)
            .map(|e| format!("at {:?}: {e}", e.instance_path().to_string()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The JSON schema of `method template`'s `status` answer.
    pub fn response_schema(&self, method: &str, template: &str, status: u16) -> Option<&Value> {
        self.document["paths"][template][method.to_ascii_lowercase()]["responses"]
            [status.to_string()]["content"]["application/json"]
            .get("schema")
    }
}

/// Merges `allOf` parts into one object and closes every object schema that lists its
/// properties (`additionalProperties: false`, unless it says otherwise).
fn make_strict(value: &mut Value, components: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(parts)) = map.get("allOf").cloned() {
                let mut properties = Map::new();
                let mut required: Vec<Value> = Vec::new();
                for part in parts {
                    let part = resolve(&part, components);
                    if let Some(p) = part["properties"].as_object() {
                        properties.extend(p.clone());
                    }
                    if let Some(r) = part["required"].as_array() {
                        required.extend(r.iter().cloned());
                    }
                }
                map.remove("allOf");
                map.insert("type".into(), Value::String("object".into()));
                map.insert("properties".into(), Value::Object(properties));
                map.insert("required".into(), Value::Array(required));
            }
            for child in map.values_mut() {
                make_strict(child, components);
            }
            if map.get("properties").is_some_and(Value::is_object)
                && !map.contains_key("additionalProperties")
            {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
        }
        Value::Array(items) => {
            for item in items {
                make_strict(item, components);
            }
        }
        _ => {}
    }
}

/// A schema, or the component its `$ref` names (with nested `allOf`s merged).
fn resolve(schema: &Value, components: &Value) -> Value {
    let mut resolved = match schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        Some(name) => components[name].clone(),
        None => schema.clone(),
    };
    if resolved.get("allOf").is_some() {
        make_strict(&mut resolved, components);
    }
    resolved
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn contract() -> Contract {
        Contract::new(json!({
            "openapi": "3.1.0",
            "paths": {
                "/api/v1/things/{id}": {"get": {"responses": {
                    "200": {"description": "", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                    "404": {"description": ""}
                }}},
                "/api/v1/things/special": {"get": {"responses": {"200": {"description": ""}}}}
            },
            "components": {"schemas": {
                "Base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
                "Thing": {"allOf": [{"$ref": "#/components/schemas/Base"}, {"type": "object", "properties": {"name": {"type": "string"}}}]}
            }}
        }))
        .unwrap()
    }

    #[test]
    fn checks_paths_statuses_and_bodies() {
        let c = contract();
        let ok = br#"{"id": 1, "name": "a"}"#;
        c.check("GET", "/api/v1/things/7?x=1", 200, "application/json", ok)
            .unwrap();
        c.check("GET", "/api/v1/things/special", 200, "text/plain", b"")
            .unwrap();
        let extra = br#"{"id": 1, "name": "a", "undocumented": true}"#;
        let e = c
            .check("GET", "/api/v1/things/7", 200, "application/json", extra)
            .unwrap_err()
            .to_string();
        assert!(e.contains("undocumented"), "{e}");
        let e = c
            .check(
                "GET",
                "/api/v1/things/7",
                200,
                "application/json",
                br#"{"name": "a"}"#,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"id\" is a required property"), "{e}");
        let e = c
            .check("GET", "/api/v1/things/7", 500, "application/json", ok)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not list"), "{e}");
        let e = c
            .check("POST", "/api/v1/things/7", 200, "application/json", ok)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an operation"), "{e}");
    }
}
