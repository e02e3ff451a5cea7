//! Error answers as RFC 9457 problems (`application/problem+json`) with
//! stable codes, the same shape from every HTTP function.

use serde::Serialize;

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
