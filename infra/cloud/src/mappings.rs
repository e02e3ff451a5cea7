//! Lambda's event-source mapping control plane, for the mappings the local
//! cloud runs: `GetEventSourceMapping`, `ListEventSourceMappings` and
//! `UpdateEventSourceMapping` (its `Enabled` flag), answered in Lambda's
//! REST-JSON protocol to the functions' own endpoints, so the unchanged SDK
//! pauses a lane locally as it does on AWS. A disabled mapping's pollers
//! stop receiving, so its messages wait in the queue.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::provision::FunctionSpec;

/// One SQS mapping: its function and queue, and whether it delivers.
#[derive(Debug)]
struct Mapping {
    function_arn: String,
    source_arn: String,
    batch_size: usize,
    enabled: watch::Sender<bool>,
}

/// Every mapping of the stack by UUID.
#[derive(Debug, Default)]
pub struct EventSourceMappings {
    mappings: BTreeMap<String, Mapping>,
}

const PATH: &str = "/2015-03-31/event-source-mappings/";

impl EventSourceMappings {
    pub fn new(functions: &[FunctionSpec], region: &str, account: &str) -> Self {
        let mut mappings = BTreeMap::new();
        for spec in functions {
            let function_arn = format!("arn:aws:lambda:{region}:{account}:function:{}", spec.name);
            for source in &spec.sqs_sources {
                let mapping = Mapping {
                    function_arn: function_arn.clone(),
                    source_arn: source.queue_arn.clone(),
                    batch_size: source.batch_size,
                    enabled: watch::Sender::new(source.enabled),
                };
                mappings.insert(source.mapping_id.clone(), mapping);
            }
        }
        Self { mappings }
    }

    /// Follows a mapping's `Enabled` flag; `None` for an unknown UUID.
    pub fn enabled(&self, uuid: &str) -> Option<watch::Receiver<bool>> {
        self.mappings.get(uuid).map(|m| m.enabled.subscribe())
    }

    /// Answers a call to Lambda's API as Lambda would.
    pub fn answer(&self, method: &Method, path: &str, query: &str, body: &[u8]) -> Response {
        let Some(rest) = path.strip_prefix(PATH).or_else(|| (path == PATH.trim_end_matches('/')).then_some("")) else {
            return error(StatusCode::NOT_FOUND, "UnknownOperationException", &format!("the local cloud does not serve {method} {path}"));
        };
        let uuid = urlencoding::decode(rest.trim_end_matches('/')).map(|u| u.into_owned()).unwrap_or_default();
        match (method.as_str(), uuid.is_empty()) {
            ("GET", true) => self.list(query),
            ("GET", false) => match self.mappings.get(&uuid) {
                Some(m) => (StatusCode::OK, axum::Json(configuration(&uuid, m, None))).into_response(),
                None => not_found(&uuid),
            },
            ("PUT", false) => self.update(&uuid, body),
            _ => error(StatusCode::NOT_FOUND, "UnknownOperationException", &format!("the local cloud does not serve {method} {path}")),
        }
    }

    fn list(&self, query: &str) -> Response {
        let param = |key: &str| form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned());
        let (function, source) = (param("FunctionName"), param("EventSourceArn"));
        let listed: Vec<Value> = self
            .mappings
            .iter()
            .filter(|(_, m)| {
                function.as_deref().is_none_or(|f| m.function_arn == f || m.function_arn.rsplit(':').next() == Some(f))
                    && source.as_deref().is_none_or(|s| m.source_arn == s)
            })
            .map(|(uuid, m)| configuration(uuid, m, None))
            .collect();
        (StatusCode::OK, axum::Json(json!({ "EventSourceMappings": listed }))).into_response()
    }

    fn update(&self, uuid: &str, body: &[u8]) -> Response {
        let Some(mapping) = self.mappings.get(uuid) else { return not_found(uuid) };
        let request: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, "InvalidParameterValueException", &format!("body is not JSON: {e}")),
        };
        let mut transition = None;
        if let Some(enabled) = request.get("Enabled").and_then(Value::as_bool) {
            // Lambda answers with the transition under way; here it is over at once.
            if mapping.enabled.send_replace(enabled) != enabled {
                transition = Some(if enabled { "Enabling" } else { "Disabling" });
            }
            tracing::info!(%uuid, queue = %mapping.source_arn, enabled, "event-source mapping updated");
        }
        (StatusCode::ACCEPTED, axum::Json(configuration(uuid, mapping, transition))).into_response()
    }
}

fn configuration(uuid: &str, m: &Mapping, transition: Option<&str>) -> Value {
    let state = transition.unwrap_or(if *m.enabled.borrow() { "Enabled" } else { "Disabled" });
    json!({
        "UUID": uuid,
        "EventSourceArn": m.source_arn,
        "FunctionArn": m.function_arn,
        "BatchSize": m.batch_size,
        "State": state,
        "StateTransitionReason": "USER_INITIATED",
    })
}

fn not_found(uuid: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        &format!("The resource you requested does not exist. (Service: Lambda; UUID: {uuid})"),
    )
}

/// An error in Lambda's REST-JSON shape: the code in `x-amzn-errortype`.
fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "Type": "User", "message": message }))).into_response();
    response.headers_mut().insert("x-amzn-errortype", axum::http::HeaderValue::from_static(code));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mappings() -> EventSourceMappings {
        let m = |queue: &str| Mapping {
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:prism-test-process-text".into(),
            source_arn: format!("arn:aws:sqs:us-east-1:000000000000:{queue}"),
            batch_size: 10,
            enabled: watch::Sender::new(true),
        };
        EventSourceMappings { mappings: BTreeMap::from([("u-fast".to_owned(), m("text-fast")), ("u-bulk".to_owned(), m("text-bulk"))]) }
    }

    async fn json_of(response: Response) -> (StatusCode, Value) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn disabling_a_mapping_reports_the_transition_then_the_state_and_wakes_its_pollers() {
        let mappings = mappings();
        let mut enabled = mappings.enabled("u-bulk").expect("mapping");
        let path = format!("{PATH}u-bulk");
        let (status, body) = json_of(mappings.answer(&Method::PUT, &path, "", br#"{"Enabled": false}"#)).await;
        assert_eq!((status, body["State"].as_str()), (StatusCode::ACCEPTED, Some("Disabling")));
        assert!(enabled.has_changed().expect("sender alive"));
        assert!(!*enabled.borrow_and_update());
        let (_, body) = json_of(mappings.answer(&Method::GET, &path, "", b"")).await;
        assert_eq!(body["State"], "Disabled");
        let (_, fast) = json_of(mappings.answer(&Method::GET, &format!("{PATH}u-fast"), "", b"")).await;
        assert_eq!(fast["State"], "Enabled", "only the mapping named changes");
    }

    #[tokio::test]
    async fn lists_by_queue_and_answers_unknown_mappings_as_lambda_does() {
        let mappings = mappings();
        let query = "EventSourceArn=arn%3Aaws%3Asqs%3Aus-east-1%3A000000000000%3Atext-fast";
        let (_, listed) = json_of(mappings.answer(&Method::GET, PATH, query, b"")).await;
        assert_eq!(
            listed["EventSourceMappings"].as_array().map(|l| l.iter().map(|m| m["UUID"].clone()).collect::<Vec<_>>()),
            Some(vec![json!("u-fast")])
        );
        let missing = mappings.answer(&Method::GET, &format!("{PATH}nope"), "", b"");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(missing.headers()["x-amzn-errortype"], "ResourceNotFoundException");
    }
}
