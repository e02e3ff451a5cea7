//! Lambda event filtering (`FilterCriteria`): the EventBridge pattern syntax
//! an event-source mapping applies to each record before invoking, so a
//! record the function's filter does not match is never delivered (and counts
//! as processed). Supported: nested objects, lists of allowed values, and the
//! `prefix`, `suffix`, `equals-ignore-case`, `exists`, `anything-but` and
//! `numeric` operators. A pattern using anything else is refused when the
//! cloud starts, not silently matched.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("filter pattern: {0}")]
pub struct PatternError(String);

/// Checks that `pattern` uses only what [`matches`] understands.
pub fn validate(pattern: &Value) -> Result<(), PatternError> {
    let Value::Object(fields) = pattern else { return Err(PatternError(format!("{pattern} is not an object"))) };
    for (key, value) in fields {
        match value {
            Value::Object(_) => validate(value)?,
            Value::Array(allowed) => {
                for a in allowed {
                    if let Value::Object(op) = a {
                        let known = ["prefix", "suffix", "equals-ignore-case", "exists", "anything-but", "numeric"];
                        if op.len() != 1 || !op.keys().all(|k| known.contains(&k.as_str())) {
                            return Err(PatternError(format!("{key}: unsupported operator {a}")));
                        }
                    }
                }
            }
            other => return Err(PatternError(format!("{key}: {other} must be a list of values or an object"))),
        }
    }
    Ok(())
}

/// Whether `event` matches `pattern`: every field the pattern names matches.
pub fn matches(pattern: &Value, event: &Value) -> bool {
    let Value::Object(fields) = pattern else { return false };
    fields.iter().all(|(key, expected)| {
        let actual = event.get(key);
        match expected {
            Value::Object(_) => actual.is_some_and(|a| matches(expected, a)),
            Value::Array(allowed) => allowed.iter().any(|a| allows(a, actual)),
            _ => false,
        }
    })
}

/// Whether one entry of a list of allowed values accepts the field's value.
fn allows(allowed: &Value, actual: Option<&Value>) -> bool {
    if let Value::Object(op) = allowed
        && let Some((name, arg)) = op.iter().next()
    {
        return match name.as_str() {
            "exists" => arg.as_bool() == Some(actual.is_some()),
            "anything-but" => actual.is_some_and(|a| match arg {
                Value::Array(values) => !values.contains(a),
                value => value != a,
            }),
            _ => actual.is_some_and(|a| scalars(a).any(|v| operator(name, arg, v))),
        };
    }
    actual.is_some_and(|a| scalars(a).any(|v| v == allowed))
}

/// A field's value, or each element of it when it is a list.
fn scalars(v: &Value) -> Box<dyn Iterator<Item = &Value> + '_> {
    match v {
        Value::Array(items) => Box::new(items.iter()),
        other => Box::new(std::iter::once(other)),
    }
}

fn operator(name: &str, arg: &Value, v: &Value) -> bool {
    match (name, arg, v) {
        ("prefix", Value::String(p), Value::String(s)) => s.starts_with(p.as_str()),
        ("suffix", Value::String(p), Value::String(s)) => s.ends_with(p.as_str()),
        ("equals-ignore-case", Value::String(p), Value::String(s)) => s.eq_ignore_ascii_case(p),
        ("numeric", Value::Array(conditions), v) => {
            let Some(x) = v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())) else { return false };
            conditions.chunks(2).all(|c| match (c[0].as_str(), c.get(1).and_then(Value::as_f64)) {
                (Some("<"), Some(n)) => x < n,
                (Some("<="), Some(n)) => x <= n,
                (Some(">"), Some(n)) => x > n,
                (Some(">="), Some(n)) => x >= n,
                (Some("="), Some(n)) => (x - n).abs() < f64::EPSILON,
                _ => false,
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(event_name: &str, sk: &str) -> Value {
        json!({"eventName": event_name, "dynamodb": {"Keys": {"pk": {"S": "JOB#1"}, "sk": {"S": sk}}, "SizeBytes": 120}})
    }

    #[test]
    fn the_publish_filter_keeps_inserted_events_only() {
        let pattern = json!({"eventName": ["INSERT"], "dynamodb": {"Keys": {"sk": {"S": [{"prefix": "EVT#"}]}}}});
        validate(&pattern).expect("valid");
        assert!(matches(&pattern, &record("INSERT", "EVT#0000000001")));
        assert!(!matches(&pattern, &record("MODIFY", "EVT#0000000001")), "only inserts");
        assert!(!matches(&pattern, &record("INSERT", "META")), "only events");
        assert!(!matches(&pattern, &record("REMOVE", "EVT#0000000001")), "TTL deletions are not published");
        assert!(!matches(&pattern, &json!({"eventName": "INSERT"})), "a field the pattern names must exist");
    }

    #[test]
    fn operators_behave_as_lambda_documents_them() {
        let r = record("INSERT", "SUB#c1");
        assert!(matches(&json!({"eventName": [{"anything-but": ["REMOVE"]}]}), &r));
        assert!(!matches(&json!({"eventName": [{"anything-but": "INSERT"}]}), &r));
        assert!(matches(&json!({"dynamodb": {"OldImage": [{"exists": false}]}}), &r));
        assert!(!matches(&json!({"dynamodb": {"Keys": [{"exists": false}]}}), &r));
        assert!(matches(&json!({"dynamodb": {"SizeBytes": [{"numeric": [">", 100, "<=", 120]}]}}), &r));
        assert!(!matches(&json!({"dynamodb": {"SizeBytes": [{"numeric": [">", 120]}]}}), &r));
        assert!(matches(&json!({"eventName": [{"equals-ignore-case": "insert"}, "MODIFY"]}), &r));
        assert!(matches(&json!({"dynamodb": {"Keys": {"sk": {"S": [{"suffix": "c1"}]}}}}), &r));
    }

    #[test]
    fn unsupported_syntax_is_refused_up_front() {
        assert!(validate(&json!({"eventName": "INSERT"})).is_err(), "values come in lists");
        assert!(validate(&json!({"eventName": [{"wildcard": "IN*"}]})).is_err());
        assert!(validate(&json!(["INSERT"])).is_err());
    }
}
