//! Reading template.yaml: resources, parameters, SAM globals, and the
//! CloudFormation intrinsics the local cloud needs (`Ref`, `Fn::GetAtt`,
//! `Fn::Sub`, `Fn::Join`, `Fn::Select`), in short (`!Ref`) or long form.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("template is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("template: {0}")]
    Invalid(String),
    #[error("cannot resolve {0}")]
    Unresolved(String),
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub logical_id: String,
    pub kind: String,
    pub properties: Value,
    pub metadata: Value,
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Template {
    /// Parameter defaults.
    pub parameters: BTreeMap<String, Value>,
    /// `Globals.Function`, merged under every `AWS::Serverless::Function`.
    pub function_globals: Value,
    pub resources: BTreeMap<String, Resource>,
}

impl Template {
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)?;
        let doc = to_json(yaml)?;
        let parameters = doc
            .get("Parameters")
            .and_then(Value::as_object)
            .map(|ps| ps.iter().map(|(k, p)| (k.clone(), p.get("Default").cloned().unwrap_or(Value::Null))).collect())
            .unwrap_or_default();
        let function_globals = doc.pointer("/Globals/Function").cloned().unwrap_or(Value::Object(Map::new()));
        let mut resources = BTreeMap::new();
        let declared = doc.get("Resources").and_then(Value::as_object).ok_or_else(|| TemplateError::Invalid("no Resources".into()))?;
        for (id, r) in declared {
            let kind = r.get("Type").and_then(Value::as_str).ok_or_else(|| TemplateError::Invalid(format!("resource {id} has no Type")))?;
            let depends_on = match r.get("DependsOn") {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
                _ => Vec::new(),
            };
            resources.insert(
                id.clone(),
                Resource {
                    logical_id: id.clone(),
                    kind: kind.to_owned(),
                    properties: r.get("Properties").cloned().unwrap_or(Value::Object(Map::new())),
                    metadata: r.get("Metadata").cloned().unwrap_or(Value::Null),
                    depends_on,
                },
            );
        }
        Ok(Self { parameters, function_globals, resources })
    }

    /// Resource ids in an order where each comes after everything it references.
    pub fn creation_order(&self) -> Result<Vec<String>, TemplateError> {
        let deps: HashMap<&str, BTreeSet<String>> = self
            .resources
            .values()
            .map(|r| {
                let mut d = BTreeSet::new();
                references(&r.properties, &mut d);
                d.extend(r.depends_on.iter().cloned());
                d.retain(|x| self.resources.contains_key(x) && x != &r.logical_id);
                (r.logical_id.as_str(), d)
            })
            .collect();
        let mut order: Vec<String> = Vec::new();
        let mut done: BTreeSet<String> = BTreeSet::new();
        while order.len() < self.resources.len() {
            let ready: Vec<String> = self
                .resources
                .keys()
                .filter(|id| !done.contains(*id) && deps[id.as_str()].iter().all(|d| done.contains(d)))
                .cloned()
                .collect();
            if ready.is_empty() {
                let stuck: Vec<_> = self.resources.keys().filter(|id| !done.contains(*id)).collect();
                return Err(TemplateError::Invalid(format!("circular references among {stuck:?}")));
            }
            done.extend(ready.iter().cloned());
            order.extend(ready);
        }
        Ok(order)
    }
}

/// YAML to JSON, turning short-form intrinsics (`!Ref x`) into long form (`{"Ref": "x"}`).
fn to_json(v: serde_yaml_ng::Value) -> Result<Value, TemplateError> {
    use serde_yaml_ng::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).map_err(|e| TemplateError::Invalid(e.to_string()))?,
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(seq.into_iter().map(to_json).collect::<Result<_, _>>()?),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    other => serde_yaml_ng::to_string(&other)?.trim().to_owned(),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            let name = t.tag.to_string();
            let name = name.trim_start_matches('!');
            let inner = to_json(t.value)?;
            let (key, value) = match name {
                "Ref" => ("Ref".to_owned(), inner),
                "GetAtt" => {
                    let value = match inner {
                        Value::String(s) => {
                            let (a, b) =
                                s.split_once('.').ok_or_else(|| TemplateError::Invalid(format!("!GetAtt {s} needs Resource.Attribute")))?;
                            Value::Array(vec![a.into(), b.into()])
                        }
                        other => other,
                    };
                    ("Fn::GetAtt".to_owned(), value)
                }
                other => (format!("Fn::{other}"), inner),
            };
            Value::Object(Map::from_iter([(key, value)]))
        }
    })
}

/// Every logical id `v` refers to.
fn references(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("Ref") {
                out.insert(r.clone());
            }
            if let Some(Value::Array(a)) = m.get("Fn::GetAtt")
                && let Some(Value::String(id)) = a.first()
            {
                out.insert(id.clone());
            }
            if let Some(sub) = m.get("Fn::Sub") {
                let text = match sub {
                    Value::String(s) => Some(s.as_str()),
                    Value::Array(a) => a.first().and_then(Value::as_str),
                    _ => None,
                };
                for var in text.map(sub_variables).unwrap_or_default() {
                    out.insert(var.split('.').next().unwrap_or_default().to_owned());
                }
            }
            m.values().for_each(|x| references(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

/// The `${Name}` variables of a `Fn::Sub` string (not `${!Literal}`).
fn sub_variables(s: &str) -> Vec<String> {
    let mut vars = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !name.starts_with('!') {
            vars.push(name.to_owned());
        }
        rest = &after[end + 1..];
    }
    vars
}

/// What references resolve to: parameters (pseudo parameters included), the
/// `Ref` value of each created resource, and their attributes.
#[derive(Debug, Default, Clone)]
pub struct Context {
    pub values: HashMap<String, Value>,
    pub attributes: HashMap<(String, String), Value>,
}

impl Context {
    pub fn resolve(&self, v: &Value) -> Result<Value, TemplateError> {
        match v {
            Value::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().map(|(k, a)| (k.as_str(), a)).unwrap_or(("", &Value::Null));
                match k {
                    "Ref" => {
                        let name = arg.as_str().unwrap_or_default();
                        self.values.get(name).cloned().ok_or_else(|| TemplateError::Unresolved(format!("Ref {name}")))
                    }
                    "Fn::GetAtt" => {
                        let parts: Vec<&str> = arg.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                        let [id, attr] = parts[..] else {
                            return Err(TemplateError::Invalid(format!("Fn::GetAtt {arg}")));
                        };
                        self.attribute(id, attr)
                    }
                    "Fn::Sub" => self.substitute(arg).map(Value::String),
                    "Fn::Join" => {
                        let (sep, items) = match arg.as_array().map(Vec::as_slice) {
                            Some([Value::String(sep), items]) => (sep, self.resolve(items)?),
                            _ => return Err(TemplateError::Invalid(format!("Fn::Join {arg}"))),
                        };
                        let parts: Vec<String> = items.as_array().into_iter().flatten().map(scalar_string).collect();
                        Ok(Value::String(parts.join(sep)))
                    }
                    "Fn::Select" => {
                        let (index, list) = match arg.as_array().map(Vec::as_slice) {
                            Some([i, list]) => (self.resolve(i)?, self.resolve(list)?),
                            _ => return Err(TemplateError::Invalid(format!("Fn::Select {arg}"))),
                        };
                        let i = scalar_string(&index).parse::<usize>().map_err(|e| TemplateError::Invalid(e.to_string()))?;
                        list.get(i).cloned().ok_or_else(|| TemplateError::Invalid(format!("Fn::Select index {i}")))
                    }
                    _ => Ok(Value::Object(Map::from_iter([(k.to_owned(), self.resolve(arg)?)]))),
                }
            }
            Value::Object(m) => {
                Ok(Value::Object(m.iter().map(|(k, v)| Ok((k.clone(), self.resolve(v)?))).collect::<Result<_, TemplateError>>()?))
            }
            Value::Array(a) => Ok(Value::Array(a.iter().map(|x| self.resolve(x)).collect::<Result<_, _>>()?)),
            other => Ok(other.clone()),
        }
    }

    /// A resolved value as a string (numbers and booleans as CloudFormation prints them).
    pub fn resolve_string(&self, v: &Value) -> Result<String, TemplateError> {
        Ok(scalar_string(&self.resolve(v)?))
    }

    fn attribute(&self, id: &str, attr: &str) -> Result<Value, TemplateError> {
        self.attributes
            .get(&(id.to_owned(), attr.to_owned()))
            .cloned()
            .ok_or_else(|| TemplateError::Unresolved(format!("Fn::GetAtt {id}.{attr}")))
    }

    fn substitute(&self, arg: &Value) -> Result<String, TemplateError> {
        let (text, locals) = match arg {
            Value::String(s) => (s.as_str(), Map::new()),
            Value::Array(a) => match a.as_slice() {
                [Value::String(s), Value::Object(vars)] => (s.as_str(), vars.clone()),
                _ => return Err(TemplateError::Invalid(format!("Fn::Sub {arg}"))),
            },
            _ => return Err(TemplateError::Invalid(format!("Fn::Sub {arg}"))),
        };
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| TemplateError::Invalid(format!("unclosed ${{ in {text}")))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(local) = locals.get(name) {
                out.push_str(&self.resolve_string(local)?);
            } else if let Some((id, attr)) = name.split_once('.') {
                out.push_str(&scalar_string(&self.attribute(id, attr)?));
            } else {
                let v = self.values.get(name).ok_or_else(|| TemplateError::Unresolved(format!("${{{name}}}")))?;
                out.push_str(&scalar_string(v));
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = r#"
Parameters:
  Stage: { Type: String, Default: dev }
Globals:
  Function: { Timeout: 30 }
Resources:
  Q:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "prism-${Stage}-q"
      RedrivePolicy: { deadLetterTargetArn: !GetAtt D.Arn }
  D:
    Type: AWS::SQS::Queue
  B:
    Type: AWS::S3::Bucket
    DependsOn: Q
    Properties:
      Name: !Join ["-", [!Ref Stage, !Select [1, [a, b]], "${!Literal}"]]
"#;

    #[test]
    fn orders_resources_after_what_they_reference() {
        let t = Template::parse(T).expect("parse");
        let order = t.creation_order().expect("order");
        let pos = |id: &str| order.iter().position(|x| x == id).expect("present");
        assert!(pos("D") < pos("Q"));
        assert!(pos("Q") < pos("B"));
        assert_eq!(t.function_globals["Timeout"], 30);
    }

    #[test]
    fn resolves_short_and_long_form_intrinsics() {
        let t = Template::parse(T).expect("parse");
        let mut ctx = Context::default();
        ctx.values.insert("Stage".into(), "dev".into());
        ctx.attributes.insert(("D".into(), "Arn".into()), "arn:d".into());
        let q = ctx.resolve(&t.resources["Q"].properties).expect("resolve");
        assert_eq!(q["QueueName"], "prism-dev-q");
        assert_eq!(q["RedrivePolicy"]["deadLetterTargetArn"], "arn:d");
        let b = ctx.resolve(&t.resources["B"].properties).expect("resolve");
        assert_eq!(b["Name"], "dev-b-${!Literal}");
        assert!(ctx.resolve(&serde_json::json!({"Ref": "Nope"})).is_err());
    }

    #[test]
    fn reads_the_project_template() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let t = Template::load(&path).expect("template.yaml parses");
        t.creation_order().expect("no cycles");
        assert!(t.resources.values().any(|r| r.kind == "AWS::Serverless::Function"));
    }
}
