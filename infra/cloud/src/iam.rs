//! Least privilege, checked locally: each function's IAM policy as
//! template.yaml gives it (inline statements and the SAM policy templates it
//! uses, expanded as SAM expands them), and what IAM action and resource ARN
//! each AWS call a function makes needs. The function's endpoint proxy asks
//! before forwarding a call; under [`IamMode::Enforce`] a call its policy does
//! not allow is answered `AccessDenied` in the service's own protocol, as AWS
//! would answer it, so a missing permission fails locally instead of after
//! deployment.

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use crate::proxy::Call;

/// What the local cloud does with a call the function's policy does not allow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IamMode {
    /// Nothing is checked.
    Off,
    /// The call goes through and a warning names the missing permission.
    Warn,
    /// The call is refused with `AccessDenied`, as on AWS.
    #[default]
    Enforce,
}

impl std::str::FromStr for IamMode {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "off" => Ok(Self::Off),
            "warn" => Ok(Self::Warn),
            "enforce" => Ok(Self::Enforce),
            other => bail!("IAM mode {other:?} is not off, warn or enforce"),
        }
    }
}

impl std::fmt::Display for IamMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Warn => "warn",
            Self::Enforce => "enforce",
        })
    }
}

/// One `Allow` statement: action and resource patterns (`*` and `?` wildcards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

/// A function's permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub statements: Vec<Statement>,
}

/// The SAM policy templates the local cloud knows, as SAM's
/// `policy_templates.json` defines them: actions, and resources with
/// `{Param}` standing for the template's parameters.
pub const SAM_TEMPLATES: &[(&str, &[&str], &[&str])] = &[
    (
        "DynamoDBCrudPolicy",
        &[
            "dynamodb:GetItem",
            "dynamodb:DeleteItem",
            "dynamodb:PutItem",
            "dynamodb:Scan",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeTable",
            "dynamodb:ConditionCheckItem",
        ],
        &["arn:aws:dynamodb:{region}:{account}:table/{TableName}", "arn:aws:dynamodb:{region}:{account}:table/{TableName}/index/*"],
    ),
    (
        "DynamoDBReadPolicy",
        &["dynamodb:GetItem", "dynamodb:Scan", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:DescribeTable"],
        &["arn:aws:dynamodb:{region}:{account}:table/{TableName}", "arn:aws:dynamodb:{region}:{account}:table/{TableName}/index/*"],
    ),
    (
        "S3CrudPolicy",
        &[
            "s3:GetObject",
            "s3:ListBucket",
            "s3:GetBucketLocation",
            "s3:GetObjectVersion",
            "s3:PutObject",
            "s3:PutObjectAcl",
            "s3:GetLifecycleConfiguration",
            "s3:PutLifecycleConfiguration",
            "s3:DeleteObject",
        ],
        &["arn:aws:s3:::{BucketName}", "arn:aws:s3:::{BucketName}/*"],
    ),
    (
        "S3ReadPolicy",
        &["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation", "s3:GetObjectVersion", "s3:GetLifecycleConfiguration"],
        &["arn:aws:s3:::{BucketName}", "arn:aws:s3:::{BucketName}/*"],
    ),
    ("SQSSendMessagePolicy", &["sqs:SendMessage*"], &["arn:aws:sqs:{region}:{account}:{QueueName}"]),
    (
        "SQSPollerPolicy",
        &[
            "sqs:ChangeMessageVisibility",
            "sqs:ChangeMessageVisibilityBatch",
            "sqs:DeleteMessage",
            "sqs:DeleteMessageBatch",
            "sqs:GetQueueAttributes",
            "sqs:ReceiveMessage",
        ],
        &["arn:aws:sqs:{region}:{account}:{QueueName}"],
    ),
    ("SNSPublishMessagePolicy", &["sns:Publish"], &["arn:aws:sns:{region}:{account}:{TopicName}"]),
];

impl Policy {
    /// The policy of a function from its resolved `Policies` property.
    pub fn from_policies(policies: Option<&Value>, region: &str, account: &str) -> anyhow::Result<Self> {
        let mut statements = Vec::new();
        let items = match policies {
            None => return Ok(Self::default()),
            Some(Value::Array(items)) => items.clone(),
            Some(other) => vec![other.clone()],
        };
        for item in &items {
            let Value::Object(map) = item else { bail!("a policy given by name ({item}) is not modelled locally") };
            for (name, params) in map {
                if name == "Statement" {
                    statements.extend(inline(params)?);
                    continue;
                }
                let (_, actions, resources) = SAM_TEMPLATES
                    .iter()
                    .find(|(template, _, _)| template == name)
                    .ok_or_else(|| anyhow!("the SAM policy template {name} is not modelled by the local cloud yet"))?;
                let mut arns = Vec::new();
                for pattern in *resources {
                    let mut arn = pattern.replace("{region}", region).replace("{account}", account);
                    for (key, value) in params.as_object().into_iter().flatten() {
                        let value = value.as_str().with_context(|| format!("{name}.{key} is not a string after resolving"))?;
                        arn = arn.replace(&format!("{{{key}}}"), value);
                    }
                    anyhow::ensure!(!arn.contains('{'), "{name} is missing a parameter for {pattern}");
                    arns.push(arn);
                }
                statements.push(Statement { actions: actions.iter().map(|a| (*a).to_owned()).collect(), resources: arns });
            }
        }
        Ok(Self { statements })
    }

    /// What an event source grants the function's role, as SAM adds it:
    /// polling its SQS queues (the local cloud polls them itself, but a
    /// function may change a message's visibility).
    pub fn grant(&mut self, actions: &[&str], resource: &str) {
        self.statements
            .push(Statement { actions: actions.iter().map(|a| (*a).to_owned()).collect(), resources: vec![resource.to_owned()] });
    }

    pub fn allows(&self, action: &str, resource: &str) -> bool {
        self.statements.iter().any(|s| {
            s.actions.iter().any(|a| glob(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()))
                && s.resources.iter().any(|r| glob(r, resource))
        })
    }
}

/// Inline statements: `Effect: Allow` only (the template denies nothing).
fn inline(statements: &Value) -> anyhow::Result<Vec<Statement>> {
    let list = match statements {
        Value::Array(list) => list.clone(),
        other => vec![other.clone()],
    };
    let strings = |v: Option<&Value>, what: &str| -> anyhow::Result<Vec<String>> {
        match v {
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => {
                items.iter().map(|i| i.as_str().map(str::to_owned).ok_or_else(|| anyhow!("a {what} that is not a string: {i}"))).collect()
            }
            _ => bail!("a statement without {what}"),
        }
    };
    list.iter()
        .map(|s| {
            anyhow::ensure!(s.get("Effect").and_then(Value::as_str) == Some("Allow"), "only Allow statements are modelled locally: {s}");
            Ok(Statement { actions: strings(s.get("Action"), "Action")?, resources: strings(s.get("Resource"), "Resource")? })
        })
        .collect()
}

/// IAM's wildcard match: `*` any run of characters, `?` any one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Where a call is made in the account: what the proxy needs to name its resource.
#[derive(Debug, Clone)]
pub struct Account {
    pub region: String,
    pub id: String,
    /// The WebSocket API's id, for `@connections` calls.
    pub websocket_api: Option<String>,
}

/// Every IAM action and resource ARN a call needs: DynamoDB's batch and
/// transaction calls need, as on AWS, the permission of each item's own
/// operation on its table (there is no `dynamodb:TransactWriteItems`
/// action); any other call needs what [`required`] names.
pub fn required_all(call: &Call, body: Option<&[u8]>, account: &Account) -> Vec<(String, String)> {
    let table = |name: &str| format!("arn:aws:dynamodb:{}:{}:table/{name}", account.region, account.id);
    let json = || body.and_then(|b| serde_json::from_slice::<Value>(b).ok()).unwrap_or_default();
    match (call.service.as_str(), call.operation.as_str()) {
        ("dynamodb", "TransactWriteItems" | "TransactGetItems") => {
            let items = json().get("TransactItems").and_then(Value::as_array).cloned().unwrap_or_default();
            items
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|item| item.iter())
                .filter_map(|(kind, op)| {
                    let action = match kind.as_str() {
                        "ConditionCheck" => "ConditionCheckItem",
                        "Put" => "PutItem",
                        "Update" => "UpdateItem",
                        "Delete" => "DeleteItem",
                        "Get" => "GetItem",
                        _ => return None,
                    };
                    Some((format!("dynamodb:{action}"), table(op.get("TableName")?.as_str()?)))
                })
                .collect()
        }
        ("dynamodb", operation @ ("BatchWriteItem" | "BatchGetItem")) => {
            let tables = json().get("RequestItems").and_then(Value::as_object).map(|t| t.keys().cloned().collect::<Vec<_>>());
            tables.unwrap_or_default().iter().map(|name| (format!("dynamodb:{operation}"), table(name))).collect()
        }
        _ => required(call, body, account).into_iter().collect(),
    }
}

/// The IAM action and resource ARN a call needs; `None` for calls the local
/// cloud does not know how to name (they go through unchecked).
pub fn required(call: &Call, body: Option<&[u8]>, account: &Account) -> Option<(String, String)> {
    let json = || body.and_then(|b| serde_json::from_slice::<Value>(b).ok()).unwrap_or_default();
    let (region, id) = (account.region.as_str(), account.id.as_str());
    match call.service.as_str() {
        "dynamodb" => {
            let body = json();
            let table = body.get("TableName")?.as_str()?;
            let index = body.get("IndexName").and_then(Value::as_str).map(|i| format!("/index/{i}")).unwrap_or_default();
            Some((format!("dynamodb:{}", call.operation), format!("arn:aws:dynamodb:{region}:{id}:table/{table}{index}")))
        }
        "sqs" => {
            let body = json();
            let queue = match body.get("QueueUrl").and_then(Value::as_str) {
                Some(url) => url.rsplit('/').next()?.to_owned(),
                None => body.get("QueueName")?.as_str()?.to_owned(),
            };
            let action = call.operation.strip_suffix("Batch").unwrap_or(&call.operation);
            Some((format!("sqs:{action}"), format!("arn:aws:sqs:{region}:{id}:{queue}")))
        }
        "sns" => {
            let topic = form_urlencoded::parse(body?).find(|(k, _)| k == "TopicArn").map(|(_, v)| v.into_owned())?;
            let action = if call.operation == "PublishBatch" { "Publish" } else { call.operation.as_str() };
            Some((format!("sns:{action}"), topic))
        }
        // S3 answers preflights from the bucket's CORS rules, unsigned: no identity, no policy.
        "s3" if call.operation == "PreflightRequest" => None,
        "s3" => {
            let path = call.uri.split('?').next().unwrap_or_default().trim_start_matches('/');
            let action = match call.operation.as_str() {
                "GetObject" | "HeadObject" => "GetObject",
                "PutObject" | "CreateMultipartUpload" | "UploadPart" | "CompleteMultipartUpload" | "CopyObject" => "PutObject",
                "DeleteObject" | "DeleteObjects" => "DeleteObject",
                "ListObjects" | "ListObjectsV2" | "HeadBucket" => "ListBucket",
                other => other,
            };
            Some((format!("s3:{action}"), format!("arn:aws:s3:::{path}")))
        }
        "execute-api" => {
            // `/{stage}/@connections/{id}`: API Gateway's management API.
            let path = call.uri.split('?').next().unwrap_or_default().trim_start_matches('/');
            let (stage, rest) = path.split_once('/')?;
            let method = match call.operation.as_str() {
                "PostToConnection" => "POST",
                "DeleteConnection" => "DELETE",
                _ => "GET",
            };
            let api = account.websocket_api.as_deref()?;
            Some(("execute-api:ManageConnections".into(), format!("arn:aws:execute-api:{region}:{id}:{api}/{stage}/{method}/{rest}")))
        }
        "lambda" => {
            let path = call.uri.split('?').next().unwrap_or_default();
            let uuid = path.strip_prefix("/2015-03-31/event-source-mappings").map(|rest| rest.trim_matches('/')).unwrap_or_default();
            // Listing and creating name no mapping: IAM knows them only as `*`.
            let resource =
                if uuid.is_empty() { "*".to_owned() } else { format!("arn:aws:lambda:{region}:{id}:event-source-mapping:{uuid}") };
            Some((format!("lambda:{}", call.operation), resource))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(service: &str, operation: &str, uri: &str) -> Call {
        Call { service: service.into(), operation: operation.into(), presigned: false, uri: uri.into() }
    }

    fn account() -> Account {
        Account { region: "us-east-1".into(), id: "000000000000".into(), websocket_api: Some("local-ws".into()) }
    }

    #[test]
    fn a_browsers_preflight_before_a_presigned_upload_needs_no_permission_but_the_upload_does() {
        let preflight = call("s3", "PreflightRequest", "/uploads-bucket/uploads/o/j/a.jpg");
        assert_eq!(required(&preflight, None, &account()), None);
        let upload = call("s3", "PutObject", "/uploads-bucket/uploads/o/j/a.jpg");
        assert_eq!(required(&upload, None, &account()).map(|(action, _)| action), Some("s3:PutObject".to_owned()));
    }

    #[test]
    fn globs_match_as_iam_does() {
        assert!(glob("sqs:SendMessage*", "sqs:SendMessage"));
        assert!(glob("arn:aws:s3:::b/*", "arn:aws:s3:::b/uploads/a/b.txt"));
        assert!(!glob("arn:aws:s3:::b/*", "arn:aws:s3:::bc/x"));
        assert!(glob("a?c*", "abcdef"));
        assert!(!glob("arn:aws:dynamodb:r:a:table/t", "arn:aws:dynamodb:r:a:table/t/index/i"));
    }

    #[test]
    fn sam_templates_and_inline_statements_expand_and_decide() {
        let policies = serde_json::json!([
            {"DynamoDBReadPolicy": {"TableName": "jobs"}},
            {"S3CrudPolicy": {"BucketName": "uploads"}},
            {"SQSSendMessagePolicy": {"QueueName": "classify"}},
            {"Statement": [{"Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:ChangeMessageVisibility"], "Resource": "arn:aws:sqs:us-east-1:000000000000:intake"}]},
        ]);
        let policy = Policy::from_policies(Some(&policies), "us-east-1", "000000000000").expect("policy");
        let a = account();
        let get = required(&call("dynamodb", "GetItem", "/"), Some(br#"{"TableName":"jobs","Key":{}}"#), &a).expect("named");
        assert_eq!(get, ("dynamodb:GetItem".into(), "arn:aws:dynamodb:us-east-1:000000000000:table/jobs".into()));
        assert!(policy.allows(&get.0, &get.1));
        let put = required(&call("dynamodb", "PutItem", "/"), Some(br#"{"TableName":"jobs"}"#), &a).expect("named");
        assert!(!policy.allows(&put.0, &put.1), "a read policy does not write");
        let query = required(&call("dynamodb", "Query", "/"), Some(br#"{"TableName":"jobs","IndexName":"by-owner"}"#), &a).expect("named");
        assert!(policy.allows(&query.0, &query.1), "its indexes are the table's");
        let head = required(&call("s3", "HeadObject", "/uploads/a/b"), None, &a).expect("named");
        assert_eq!(head, ("s3:GetObject".into(), "arn:aws:s3:::uploads/a/b".into()));
        assert!(policy.allows(&head.0, &head.1));
        let send =
            required(&call("sqs", "SendMessageBatch", "/"), Some(br#"{"QueueUrl":"http://x/000000000000/classify"}"#), &a).expect("named");
        assert!(policy.allows(&send.0, &send.1));
        let other_queue =
            required(&call("sqs", "SendMessage", "/"), Some(br#"{"QueueUrl":"http://x/000000000000/text"}"#), &a).expect("named");
        assert!(!policy.allows(&other_queue.0, &other_queue.1));
        let visibility =
            required(&call("sqs", "ChangeMessageVisibility", "/"), Some(br#"{"QueueUrl":"http://x/000000000000/intake"}"#), &a);
        assert!(visibility.is_some_and(|(action, arn)| policy.allows(&action, &arn)));
        let publish = required(
            &call("sns", "PublishBatch", "/"),
            Some(b"Action=PublishBatch&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A000000000000%3Aevents"),
            &a,
        );
        assert_eq!(publish.as_ref().map(|(action, _)| action.as_str()), Some("sns:Publish"));
        assert!(publish.is_some_and(|(action, arn)| !policy.allows(&action, &arn)));
        let push = required(&call("execute-api", "PostToConnection", "/test/@connections/abc="), None, &a).expect("named");
        assert_eq!(push.1, "arn:aws:execute-api:us-east-1:000000000000:local-ws/test/POST/@connections/abc=");
    }

    #[test]
    fn each_item_of_a_transaction_or_batch_needs_its_own_permission() {
        let a = account();
        let transaction = br#"{"TransactItems":[
            {"ConditionCheck":{"TableName":"jobs","Key":{}}},
            {"Put":{"TableName":"jobs","Item":{}}},
            {"Update":{"TableName":"other","Key":{}}}]}"#;
        let needed = required_all(&call("dynamodb", "TransactWriteItems", "/"), Some(transaction), &a);
        let arn = |t: &str| format!("arn:aws:dynamodb:us-east-1:000000000000:table/{t}");
        assert_eq!(
            needed,
            vec![
                ("dynamodb:ConditionCheckItem".to_owned(), arn("jobs")),
                ("dynamodb:PutItem".to_owned(), arn("jobs")),
                ("dynamodb:UpdateItem".to_owned(), arn("other")),
            ]
        );
        let batch = br#"{"RequestItems":{"jobs":[{"PutRequest":{"Item":{}}}]}}"#;
        let needed = required_all(&call("dynamodb", "BatchWriteItem", "/"), Some(batch), &a);
        assert_eq!(needed, vec![("dynamodb:BatchWriteItem".to_owned(), arn("jobs"))]);
        let single = required_all(&call("dynamodb", "GetItem", "/"), Some(br#"{"TableName":"jobs"}"#), &a);
        assert_eq!(single, vec![("dynamodb:GetItem".to_owned(), arn("jobs"))]);
    }

    #[test]
    fn unknown_policies_are_refused_rather_than_ignored() {
        let by_name = serde_json::json!(["AmazonS3FullAccess"]);
        assert!(Policy::from_policies(Some(&by_name), "r", "a").is_err());
        let unknown = serde_json::json!([{"KinesisCrudPolicy": {"StreamName": "s"}}]);
        assert!(Policy::from_policies(Some(&unknown), "r", "a").is_err());
    }
}
