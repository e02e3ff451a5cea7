//! template.yaml's policies name only what each function uses: no `*`
//! action (bare or `service:*`), no `*` resource, and only the SAM policy
//! templates whose scope the local cloud models (each scoped to one table,
//! bucket, queue or topic). The local cloud then enforces them call by call
//! (`iam.rs`, and the end-to-end test in `tests/tests/security.rs`). Also:
//! the function properties it does not model are named, not ignored.

use prism_cloud::iam::SAM_TEMPLATES;
use prism_cloud::template::Template;
use serde_json::Value;

fn strings(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

/// Every wildcard-only action or resource in a function's `Policies`, and every policy not scoped as above.
fn violations(template: &Template) -> Vec<String> {
    let mut found = Vec::new();
    for r in template.resources.values().filter(|r| r.kind == "AWS::Serverless::Function") {
        let Some(policies) = r.properties.get("Policies") else {
            found.push(format!("{}: no Policies (SAM would give it only the basic execution role; say so)", r.logical_id));
            continue;
        };
        for policy in strings(policies) {
            let Value::Object(map) = &policy else {
                found.push(format!("{}: policy {policy} by name (managed policies are not scoped)", r.logical_id));
                continue;
            };
            for (name, body) in map {
                if name != "Statement" {
                    if !SAM_TEMPLATES.iter().any(|(known, _, _)| known == name) {
                        found.push(format!("{}: SAM policy template {name} is not one of the scoped ones", r.logical_id));
                    }
                    continue;
                }
                for statement in strings(body) {
                    for action in strings(&statement["Action"]) {
                        if action.as_str().is_none_or(|a| a == "*" || a.ends_with(":*")) {
                            found.push(format!("{}: action {action}", r.logical_id));
                        }
                    }
                    for resource in strings(&statement["Resource"]) {
                        if resource == "*" || resource.is_null() {
                            found.push(format!("{}: resource {resource}", r.logical_id));
                        }
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_function_policy_names_its_actions_and_resources() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
    let template = Template::load(&path).expect("template.yaml");
    let functions = template.resources.values().filter(|r| r.kind == "AWS::Serverless::Function").count();
    assert!(functions >= 15, "all the functions were read: {functions}");
    assert_eq!(violations(&template), Vec::<String>::new());
}

#[test]
fn the_check_finds_wildcards_and_unscoped_policies() {
    let template = Template::parse(
        r#"
Resources:
  Loose:
    Type: AWS::Serverless::Function
    Properties:
      Policies:
        - AmazonS3FullAccess
        - KinesisCrudPolicy: { StreamName: s }
        - Statement:
            - Effect: Allow
              Action: ["sqs:*", "s3:GetObject"]
              Resource: "*"
  Bare:
    Type: AWS::Serverless::Function
    Properties: {}
"#,
    )
    .expect("template");
    let found = violations(&template);
    assert_eq!(found.len(), 5, "{found:#?}");
}

#[test]
fn properties_the_local_cloud_does_not_model_are_named_not_ignored() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
    let template = Template::load(&path).expect("template.yaml");
    // Globals give every function Architectures and Tracing; process-video's ffmpeg layer is a Layer.
    let found = prism_cloud::provision::unmodelled_properties(&template.function_globals);
    assert!(found.contains(&"Architectures") && found.contains(&"Tracing"), "{found:?}");
    let video = &template.resources["ProcessVideoFunction"].properties;
    assert!(prism_cloud::provision::unmodelled_properties(video).contains(&"Layers"), "{video}");
}
