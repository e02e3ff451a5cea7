//! Answers of the HTTP functions (API Gateway's payload format 2.0), and
//! errors as RFC 9457 problems (`application/problem+json`) with stable
//! codes, the same shape from every HTTP function.

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;

/// An answer with `status` and a `content_type` body.
pub fn response(status: u16, content_type: &'static str, body: String) -> ApiGatewayV2httpResponse {
    let mut resp = ApiGatewayV2httpResponse::default();
    resp.status_code = i64::from(status);
    resp.headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.body = Some(Body::Text(body));
    resp
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The stable code clients branch on.
    pub code: &'static str,
}

impl Problem {
    pub fn new(code: &'static str, status: u16, detail: String) -> Self {
        Self { kind: format!("https://prism.dev/problems/{code}"), title: code.replace('_', " "), status, detail, code }
    }
}
