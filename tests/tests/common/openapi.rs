//! Checks real responses against the OpenAPI document the API serves.

use serde_json::Value;

pub struct OpenApi {
    doc: Value,
}

/// A JSON pointer token (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

impl OpenApi {
    pub fn load() -> Self {
        let path = super::project_dir().join("functions/api/openapi.json");
        let doc = serde_json::from_str(&std::fs::read_to_string(path).expect("openapi.json")).expect("valid JSON");
        Self { doc }
    }

    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// Panics unless the document declares `status` for `method path` and `body` matches its schema.
    pub fn check(&self, method: &str, path: &str, status: u16, content_type: &str, body: &Value) {
        let op = format!("/paths/{}/{}", escape(path), method.to_lowercase());
        let mut response = format!("{op}/responses/{status}");
        let declared = self.doc.pointer(&response).unwrap_or_else(|| panic!("{method} {path} does not declare {status}"));
        if let Some(target) = declared.get("$ref").and_then(Value::as_str) {
            response = target.trim_start_matches('#').to_owned();
        }
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let schema_ptr = format!("{response}/content/{}/schema", escape(media));
        assert!(self.doc.pointer(&schema_ptr).is_some(), "{method} {path} {status} declares no {media} body");
        let mut root = self.doc.clone();
        // As a URI fragment, the pointer must percent-encode the braces of path templates.
        root["$ref"] = Value::String(format!("#{}", schema_ptr.replace('{', "%7B").replace('}', "%7D")));
        let validator = jsonschema::validator_for(&root).expect("schema compiles");
        let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{method} {path} {status} does not match the OpenAPI document: {errors:#?}\nbody: {body:#}");
    }
}
