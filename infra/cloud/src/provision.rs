//! Creates template.yaml's resources in the emulators through the AWS SDK, in
//! dependency order, and reads back what the local cloud needs to run the
//! functions: their settings, event sources and HTTP routes.

use anyhow::{Context as _, anyhow, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, CorsConfiguration, CorsRule, Event, ExpirationStatus, FilterRule, FilterRuleName, LifecycleExpiration,
    LifecycleRule, LifecycleRuleFilter, NotificationConfiguration, NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::template::{Context, Resource, Template};

/// SDK clients pointed at the emulators.
#[derive(Debug, Clone)]
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub dynamodb_streams: aws_sdk_dynamodbstreams::Client,
    pub sns: aws_sdk_sns::Client,
}

/// Where the functions' SQS events come from, as the template's `SQS` events say.
#[derive(Debug, Clone)]
pub struct SqsSource {
    /// The event-source mapping's UUID (what `!Ref <Function><Event>` gives, as SAM names it).
    pub mapping_id: String,
    /// The template's `Enabled` (default true); `UpdateEventSourceMapping` changes it at run time.
    pub enabled: bool,
    pub queue_url: String,
    pub queue_arn: String,
    pub batch_size: usize,
    pub batching_window: std::time::Duration,
    pub report_batch_item_failures: bool,
    pub max_concurrency: Option<usize>,
}

/// Where a stream event source starts reading a shard it has no checkpoint for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    TrimHorizon,
    Latest,
}

/// A `DynamoDB` event: the table's stream, read as Lambda's event source does.
#[derive(Debug, Clone)]
pub struct StreamSource {
    pub stream_arn: String,
    pub starting_position: StartingPosition,
    pub batch_size: usize,
    pub batching_window: std::time::Duration,
    /// `FilterCriteria.Filters[].Pattern`, parsed: a record is delivered if any matches.
    pub filters: Vec<Value>,
    pub report_batch_item_failures: bool,
    pub bisect_on_error: bool,
    /// `None`: retried until the record leaves the stream (`-1`).
    pub max_retry_attempts: Option<u32>,
}

/// A `ScheduleV2` (EventBridge Scheduler) or `Schedule` event of a function.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSource {
    pub name: String,
    pub every: std::time::Duration,
    /// The `Input` the target is invoked with (`{}` when none).
    pub input: Value,
}

/// An `HttpApi` event: a route of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRoute {
    pub method: String,
    pub path: String,
    pub function: String,
    /// The integration's `TimeoutInMillis`: how long API Gateway waits for
    /// the function before it answers 503 (30 s at most, the default).
    pub timeout: std::time::Duration,
}

/// The WebSocket API (`AWS::ApiGatewayV2::Api` with `ProtocolType: WEBSOCKET`) and its routes.
#[derive(Debug, Clone, Default)]
pub struct WebSocketSpec {
    pub api_id: String,
    /// Only `$request.body.<field>` expressions are evaluated locally.
    pub route_selection: String,
    pub stage: String,
    /// Route key to the name of the function its integration invokes.
    pub routes: Vec<(String, String)>,
    /// The stage's `DefaultRouteSettings` throttling: (requests per second, burst).
    pub throttle: Option<(f64, f64)>,
}

/// A function as the local cloud runs it.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub logical_id: String,
    pub name: String,
    /// The cargo binary (`Metadata.BuildProperties.Binary`).
    pub binary: String,
    pub environment: Vec<(String, String)>,
    pub timeout: std::time::Duration,
    pub memory_mb: u64,
    /// How many instances run at once.
    pub concurrency: usize,
    pub sqs_sources: Vec<SqsSource>,
    pub stream_sources: Vec<StreamSource>,
    pub schedules: Vec<ScheduleSource>,
    /// The function's URL (`FunctionUrlConfig`), when it has one.
    pub url: Option<InvokeMode>,
    /// What its role allows (`Policies`, and what its event sources add).
    pub policy: crate::iam::Policy,
}

/// How a function URL answers (`FunctionUrlConfig.InvokeMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvokeMode {
    Buffered,
    ResponseStream,
}

/// The provisioned stack.
#[derive(Debug, Clone)]
pub struct Stack {
    pub context: Context,
    pub functions: Vec<FunctionSpec>,
    pub http_routes: Vec<HttpRoute>,
    pub buckets: Vec<String>,
    pub tables: Vec<String>,
    /// The HTTP API's `DefaultRouteSettings` throttling: (requests per second, burst).
    pub http_throttle: Option<(f64, f64)>,
    /// The HTTP API's CORS settings, for pages served from another origin (the dashboard).
    pub http_cors: Option<crate::http_api::Cors>,
    /// The HTTP API's `StageName` (`$default` when it has none).
    pub http_stage: String,
    pub websocket: Option<WebSocketSpec>,
    /// Function properties the local cloud does not model, with the
    /// functions that set them: said once at start, never silently ignored.
    pub unmodelled: BTreeMap<&'static str, Vec<String>>,
    /// Resources accepted but not emulated (CloudWatch alarms).
    pub not_emulated: Vec<String>,
}

/// Function properties that change nothing locally: the functions run on
/// this machine's architecture and `ffmpeg`, with its disk, untraced.
const UNMODELLED: &[&str] = &[
    "Architectures",
    "Layers",
    "EphemeralStorage",
    "Tracing",
    "VpcConfig",
    "SnapStart",
    "KmsKeyArn",
    "FileSystemConfigs",
    "ProvisionedConcurrencyConfig",
    "AutoPublishAlias",
];

/// Which of [`UNMODELLED`] a function's (merged) properties set.
pub fn unmodelled_properties(properties: &Value) -> Vec<&'static str> {
    UNMODELLED.iter().copied().filter(|p| properties.get(*p).is_some_and(|v| !v.is_null())).collect()
}

/// Instances of a function with no concurrency setting.
const DEFAULT_CONCURRENCY: usize = 1;

/// Provisions `template`; `values` gives pseudo parameters and parameter values that override defaults.
pub async fn provision(template: &Template, clients: &Clients, values: &[(&str, &str)]) -> anyhow::Result<Stack> {
    let mut ctx = Context::default();
    for (k, v) in &template.parameters {
        ctx.values.insert(k.clone(), v.clone());
    }
    for (k, v) in values {
        ctx.values.insert((*k).to_owned(), Value::String((*v).to_owned()));
    }
    if let Some((name, _)) = template.parameters.iter().find(|(k, _)| ctx.values.get(*k).is_none_or(Value::is_null)) {
        bail!("template parameter {name} has no default and was given no value");
    }
    let mut stack = Stack {
        context: Context::default(),
        functions: Vec::new(),
        http_routes: Vec::new(),
        buckets: Vec::new(),
        tables: Vec::new(),
        http_throttle: None,
        http_cors: None,
        http_stage: crate::http_api::DEFAULT_STAGE.into(),
        websocket: None,
        unmodelled: BTreeMap::new(),
        not_emulated: Vec::new(),
    };
    let mut functions = Vec::new();
    // Integration id to the function it invokes.
    let mut integrations: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for id in template.creation_order()? {
        let r = &template.resources[&id];
        // A function is resolved last (below): its environment and policies may
        // name what other functions' events create.
        let props = if r.kind == "AWS::Serverless::Function" {
            Value::Null
        } else {
            ctx.resolve(&r.properties).with_context(|| format!("resolving {id}"))?
        };
        match r.kind.as_str() {
            "AWS::SQS::Queue" => create_queue(clients, &mut ctx, r, &props).await?,
            "AWS::SQS::QueuePolicy" => set_queue_policy(clients, &props).await?,
            "AWS::S3::Bucket" => {
                let name = create_bucket(clients, &mut ctx, r, &props).await?;
                stack.buckets.push(name);
            }
            "AWS::DynamoDB::Table" => {
                let name = create_table(clients, &mut ctx, r, &props).await?;
                stack.tables.push(name);
            }
            "AWS::Serverless::Function" => {
                let name = match r.properties.get("FunctionName") {
                    Some(v) => ctx.resolve_string(v).with_context(|| format!("{id}: FunctionName"))?,
                    None => id.clone(),
                };
                // SAM creates an event-source mapping per SQS event, `<Function><Event>`,
                // whose Ref is its UUID.
                for (event, spec) in r.properties.get("Events").and_then(Value::as_object).into_iter().flatten() {
                    if spec.get("Type").and_then(Value::as_str) == Some("SQS") {
                        ctx.values.insert(format!("{id}{event}"), Value::String(uuid::Uuid::new_v4().to_string()));
                    }
                }
                let pseudo = |k: &str| ctx.values.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                let arn = format!("arn:aws:lambda:{}:{}:function:{name}", pseudo("AWS::Region"), pseudo("AWS::AccountId"));
                ctx.values.insert(id.clone(), Value::String(name.clone()));
                ctx.attributes.insert((id.clone(), "Arn".into()), Value::String(arn));
                functions.push(id.clone());
            }
            "AWS::Serverless::HttpApi" => {
                ctx.values.insert(id.clone(), Value::String(format!("local-{}", id.to_lowercase())));
                let setting =
                    |k: &str| props.pointer(&format!("/DefaultRouteSettings/{k}")).map(string_of).and_then(|v| v.parse::<f64>().ok());
                if let (Some(rate), Some(burst)) = (setting("ThrottlingRateLimit"), setting("ThrottlingBurstLimit")) {
                    stack.http_throttle = Some((rate, burst));
                }
                stack.http_cors = props.get("CorsConfiguration").map(crate::http_api::Cors::from_template);
                stack.http_stage = str_prop(&props, "StageName").unwrap_or(crate::http_api::DEFAULT_STAGE).to_owned();
            }
            "AWS::SNS::Topic" => create_topic(clients, &mut ctx, r, &props).await?,
            "AWS::SNS::Subscription" => subscribe(clients, &mut ctx, r, &props).await?,
            "AWS::ApiGatewayV2::Api" if str_prop(&props, "ProtocolType") == Some("WEBSOCKET") => {
                let api_id = format!("local-{}", id.to_lowercase());
                ctx.values.insert(id.clone(), Value::String(api_id.clone()));
                let route_selection = str_prop(&props, "RouteSelectionExpression").unwrap_or("$request.body.action").to_owned();
                stack.websocket = Some(WebSocketSpec { api_id, route_selection, ..WebSocketSpec::default() });
            }
            "AWS::ApiGatewayV2::Integration" => {
                let uri = str_prop(&props, "IntegrationUri").unwrap_or_default();
                let function = uri
                    .split("/functions/")
                    .nth(1)
                    .and_then(|rest| rest.split("/invocations").next())
                    .and_then(|arn| arn.rsplit(':').next())
                    .ok_or_else(|| anyhow!("{id}: only Lambda proxy integrations are supported locally, not {uri}"))?;
                let integration_id = format!("integ-{}", id.to_lowercase());
                integrations.insert(integration_id.clone(), function.to_owned());
                ctx.values.insert(id.clone(), Value::String(integration_id));
            }
            "AWS::ApiGatewayV2::Route" => {
                let key = str_prop(&props, "RouteKey").ok_or_else(|| anyhow!("{id}: no RouteKey"))?.to_owned();
                let target = str_prop(&props, "Target").and_then(|t| t.strip_prefix("integrations/")).unwrap_or_default();
                let function = integrations.get(target).ok_or_else(|| anyhow!("{id}: target {target:?} is no integration"))?.clone();
                let api = stack.websocket.as_mut().ok_or_else(|| anyhow!("{id}: a route before its WebSocket API"))?;
                api.routes.push((key, function));
                ctx.values.insert(id.clone(), Value::String(format!("route-{}", id.to_lowercase())));
            }
            "AWS::ApiGatewayV2::Stage" => {
                let api = stack.websocket.as_mut().ok_or_else(|| anyhow!("{id}: a stage before its WebSocket API"))?;
                api.stage = str_prop(&props, "StageName").unwrap_or("$default").to_owned();
                let setting =
                    |k: &str| props.pointer(&format!("/DefaultRouteSettings/{k}")).map(string_of).and_then(|v| v.parse::<f64>().ok());
                if let (Some(rate), Some(burst)) = (setting("ThrottlingRateLimit"), setting("ThrottlingBurstLimit")) {
                    api.throttle = Some((rate, burst));
                }
                ctx.values.insert(id.clone(), Value::String(api.stage.clone()));
            }
            // The local gateway may invoke any function; nothing to grant.
            "AWS::Lambda::Permission" => {
                ctx.values.insert(id.clone(), Value::String(format!("permission-{}", id.to_lowercase())));
            }
            // Schedules are fired by the local cloud itself (see `schedules`); the group only names them.
            "AWS::Scheduler::ScheduleGroup" => {
                let name = str_prop(&props, "Name").unwrap_or(&id).to_owned();
                ctx.values.insert(id.clone(), Value::String(name));
            }
            // CloudWatch is not emulated: the metrics the alarms watch are in the
            // functions' logs, where `prism stats` sums them.
            "AWS::CloudWatch::Alarm" => {
                ctx.values.insert(id.clone(), Value::String(id.clone()));
                stack.not_emulated.push(id.clone());
            }
            other => bail!("the local cloud cannot provision {id}: resource type {other} is not supported yet"),
        }
    }
    if !stack.not_emulated.is_empty() {
        tracing::warn!(resources = %stack.not_emulated.join(", "), "CloudWatch alarms are not emulated locally (`prism stats` sums the metrics they watch)");
    }
    // Functions last: their environment may refer to anything.
    for id in functions {
        let r = &template.resources[&id];
        let (spec, routes) = function_spec(template, &ctx, r).with_context(|| format!("reading function {id}"))?;
        for property in unmodelled_properties(&merged(&template.function_globals, &r.properties)) {
            stack.unmodelled.entry(property).or_default().push(spec.name.clone());
        }
        stack.functions.push(spec);
        stack.http_routes.extend(routes);
    }
    if !stack.unmodelled.is_empty() {
        let listed: Vec<String> = stack.unmodelled.iter().map(|(p, fns)| format!("{p} ({} functions)", fns.len())).collect();
        tracing::warn!(properties = %listed.join(", "), "template properties the local cloud does not model (they change nothing locally)");
    }
    stack.context = ctx;
    Ok(stack)
}

fn str_prop<'a>(props: &'a Value, key: &str) -> Option<&'a str> {
    props.get(key).and_then(Value::as_str)
}

fn string_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn create_queue(clients: &Clients, ctx: &mut Context, r: &Resource, props: &Value) -> anyhow::Result<()> {
    let name = str_prop(props, "QueueName").unwrap_or(&r.logical_id).to_owned();
    let mut req = clients.sqs.create_queue().queue_name(&name);
    let attrs = [
        ("VisibilityTimeout", QueueAttributeName::VisibilityTimeout),
        ("MessageRetentionPeriod", QueueAttributeName::MessageRetentionPeriod),
        ("DelaySeconds", QueueAttributeName::DelaySeconds),
        ("ReceiveMessageWaitTimeSeconds", QueueAttributeName::ReceiveMessageWaitTimeSeconds),
        ("MaximumMessageSize", QueueAttributeName::MaximumMessageSize),
    ];
    for (key, attr) in attrs {
        if let Some(v) = props.get(key) {
            req = req.attributes(attr, string_of(v));
        }
    }
    if let Some(redrive) = props.get("RedrivePolicy") {
        // SQS wants maxReceiveCount as a number inside the JSON string.
        let mut redrive = redrive.clone();
        if let Some(n) = redrive.get("maxReceiveCount").map(string_of) {
            redrive["maxReceiveCount"] = Value::from(n.parse::<u64>().context("maxReceiveCount")?);
        }
        req = req.attributes(QueueAttributeName::RedrivePolicy, redrive.to_string());
    }
    let url =
        req.send().await.with_context(|| format!("creating queue {name}"))?.queue_url.ok_or_else(|| anyhow!("no URL for queue {name}"))?;
    let arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| anyhow!("no ARN for queue {name}"))?;
    let id = r.logical_id.clone();
    ctx.values.insert(id.clone(), Value::String(url));
    ctx.attributes.insert((id.clone(), "Arn".into()), Value::String(arn));
    ctx.attributes.insert((id, "QueueName".into()), Value::String(name));
    Ok(())
}

async fn create_topic(clients: &Clients, ctx: &mut Context, r: &Resource, props: &Value) -> anyhow::Result<()> {
    let name = str_prop(props, "TopicName").unwrap_or(&r.logical_id).to_owned();
    let out = clients.sns.create_topic().name(&name).send().await.with_context(|| format!("creating topic {name}"))?;
    let arn = out.topic_arn.ok_or_else(|| anyhow!("no ARN for topic {name}"))?;
    let id = r.logical_id.clone();
    ctx.values.insert(id.clone(), Value::String(arn.clone()));
    ctx.attributes.insert((id.clone(), "TopicArn".into()), Value::String(arn));
    ctx.attributes.insert((id, "TopicName".into()), Value::String(name));
    Ok(())
}

async fn subscribe(clients: &Clients, ctx: &mut Context, r: &Resource, props: &Value) -> anyhow::Result<()> {
    let topic = str_prop(props, "TopicArn").ok_or_else(|| anyhow!("{}: no TopicArn", r.logical_id))?;
    let mut req = clients
        .sns
        .subscribe()
        .topic_arn(topic)
        .protocol(str_prop(props, "Protocol").unwrap_or("sqs"))
        .set_endpoint(str_prop(props, "Endpoint").map(str::to_owned))
        .return_subscription_arn(true);
    if props.get("RawMessageDelivery").map(string_of).as_deref() == Some("true") {
        req = req.attributes("RawMessageDelivery", "true");
    }
    for key in ["FilterPolicy", "FilterPolicyScope"] {
        match props.get(key) {
            Some(Value::String(v)) => req = req.attributes(key, v),
            Some(v) => req = req.attributes(key, v.to_string()),
            None => {}
        }
    }
    let out = req.send().await.with_context(|| format!("subscribing {}", r.logical_id))?;
    ctx.values.insert(r.logical_id.clone(), Value::String(out.subscription_arn.unwrap_or_default()));
    Ok(())
}

async fn set_queue_policy(clients: &Clients, props: &Value) -> anyhow::Result<()> {
    let policy = props.get("PolicyDocument").map(Value::to_string).unwrap_or_default();
    for url in props.get("Queues").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        clients
            .sqs
            .set_queue_attributes()
            .queue_url(url)
            .attributes(QueueAttributeName::Policy, &policy)
            .send()
            .await
            .with_context(|| format!("setting the policy of {url}"))?;
    }
    Ok(())
}

async fn create_bucket(clients: &Clients, ctx: &mut Context, r: &Resource, props: &Value) -> anyhow::Result<String> {
    let name = str_prop(props, "BucketName").unwrap_or(&r.logical_id).to_lowercase();
    clients.s3.create_bucket().bucket(&name).send().await.with_context(|| format!("creating bucket {name}"))?;
    if let Some(rules) = props.pointer("/LifecycleConfiguration/Rules").and_then(Value::as_array) {
        let mut config = BucketLifecycleConfiguration::builder();
        for rule in rules {
            let days = rule.get("ExpirationInDays").and_then(Value::as_i64).unwrap_or(7) as i32;
            let prefix = str_prop(rule, "Prefix").unwrap_or_default();
            config = config.rules(
                LifecycleRule::builder()
                    .id(str_prop(rule, "Id").unwrap_or("rule"))
                    .status(ExpirationStatus::Enabled)
                    .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
                    .expiration(LifecycleExpiration::builder().days(days).build())
                    .build()?,
            );
        }
        clients
            .s3
            .put_bucket_lifecycle_configuration()
            .bucket(&name)
            .lifecycle_configuration(config.build()?)
            .send()
            .await
            .with_context(|| format!("setting the lifecycle of bucket {name}"))?;
    }
    if let Some(rules) = props.pointer("/CorsConfiguration/CorsRules").and_then(Value::as_array) {
        let strings = |rule: &Value, key: &str| -> Vec<String> {
            rule.get(key).and_then(Value::as_array).into_iter().flatten().map(string_of).collect()
        };
        let mut cors = CorsConfiguration::builder();
        for rule in rules {
            cors = cors.cors_rules(
                CorsRule::builder()
                    .set_allowed_methods(Some(strings(rule, "AllowedMethods")))
                    .set_allowed_origins(Some(strings(rule, "AllowedOrigins")))
                    .set_allowed_headers(Some(strings(rule, "AllowedHeaders")))
                    .build()?,
            );
        }
        clients.s3.put_bucket_cors().bucket(&name).cors_configuration(cors.build()?).send().await?;
    }
    if let Some(queues) = props.pointer("/NotificationConfiguration/QueueConfigurations").and_then(Value::as_array) {
        let mut config = NotificationConfiguration::builder();
        for q in queues {
            let rules: Vec<FilterRule> = q
                .pointer("/Filter/S3Key/Rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|rule| {
                    FilterRule::builder()
                        .name(FilterRuleName::from(str_prop(rule, "Name").unwrap_or("prefix")))
                        .value(str_prop(rule, "Value").unwrap_or_default())
                        .build()
                })
                .collect();
            let mut qc = QueueConfiguration::builder()
                .queue_arn(str_prop(q, "Queue").ok_or_else(|| anyhow!("bucket {name}: notification without Queue"))?)
                .events(Event::from(str_prop(q, "Event").unwrap_or("s3:ObjectCreated:*")));
            if !rules.is_empty() {
                qc = qc.filter(
                    NotificationConfigurationFilter::builder().key(S3KeyFilter::builder().set_filter_rules(Some(rules)).build()).build(),
                );
            }
            config = config.queue_configurations(qc.build()?);
        }
        clients
            .s3
            .put_bucket_notification_configuration()
            .bucket(&name)
            .notification_configuration(config.build())
            .send()
            .await
            .with_context(|| format!("setting the notifications of bucket {name}"))?;
    }
    let id = r.logical_id.clone();
    ctx.values.insert(id.clone(), Value::String(name.clone()));
    ctx.attributes.insert((id, "Arn".into()), Value::String(format!("arn:aws:s3:::{name}")));
    Ok(name)
}

async fn create_table(clients: &Clients, ctx: &mut Context, r: &Resource, props: &Value) -> anyhow::Result<String> {
    let name = str_prop(props, "TableName").unwrap_or(&r.logical_id).to_owned();
    let keys = |v: Option<&Value>| -> anyhow::Result<Vec<KeySchemaElement>> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|k| {
                Ok(KeySchemaElement::builder()
                    .attribute_name(str_prop(k, "AttributeName").unwrap_or_default())
                    .key_type(KeyType::from(str_prop(k, "KeyType").unwrap_or("HASH")))
                    .build()?)
            })
            .collect()
    };
    let mut req = clients
        .dynamodb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(keys(props.get("KeySchema"))?));
    for a in props.get("AttributeDefinitions").and_then(Value::as_array).into_iter().flatten() {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(str_prop(a, "AttributeName").unwrap_or_default())
                .attribute_type(ScalarAttributeType::from(str_prop(a, "AttributeType").unwrap_or("S")))
                .build()?,
        );
    }
    for g in props.get("GlobalSecondaryIndexes").and_then(Value::as_array).into_iter().flatten() {
        let projection = ProjectionType::from(g.pointer("/Projection/ProjectionType").and_then(Value::as_str).unwrap_or("ALL"));
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(str_prop(g, "IndexName").unwrap_or_default())
                .set_key_schema(Some(keys(g.get("KeySchema"))?))
                .projection(Projection::builder().projection_type(projection).build())
                .build()?,
        );
    }
    if let Some(view) = props.pointer("/StreamSpecification/StreamViewType").and_then(Value::as_str) {
        req = req.stream_specification(
            StreamSpecification::builder().stream_enabled(true).stream_view_type(StreamViewType::from(view)).build()?,
        );
    }
    let out = req.send().await.with_context(|| format!("creating table {name}"))?;
    if let Some(ttl) = props.get("TimeToLiveSpecification")
        && ttl.get("Enabled").and_then(Value::as_bool) == Some(true)
    {
        clients
            .dynamodb
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(str_prop(ttl, "AttributeName").unwrap_or("expires_at"))
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await
            .with_context(|| format!("enabling TTL on {name}"))?;
    }
    let description = out.table_description.unwrap_or_else(|| aws_sdk_dynamodb::types::TableDescription::builder().build());
    let id = r.logical_id.clone();
    ctx.values.insert(id.clone(), Value::String(name.clone()));
    ctx.attributes.insert((id.clone(), "Arn".into()), Value::String(description.table_arn.unwrap_or_default()));
    if let Some(stream_arn) = description.latest_stream_arn {
        ctx.attributes.insert((id, "StreamArn".into()), Value::String(stream_arn));
    }
    Ok(name)
}

/// `Globals.Function` under the function's own properties (maps merged, the function's values winning).
fn merged(globals: &Value, own: &Value) -> Value {
    match (globals, own) {
        (Value::Object(g), Value::Object(o)) => {
            let mut out = g.clone();
            for (k, v) in o {
                let value = match out.get(k) {
                    Some(base) => merged(base, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), value);
            }
            Value::Object(out)
        }
        (_, own) => own.clone(),
    }
}

fn function_spec(template: &Template, ctx: &Context, r: &Resource) -> anyhow::Result<(FunctionSpec, Vec<HttpRoute>)> {
    let props = ctx.resolve(&merged(&template.function_globals, &r.properties))?;
    let name = str_prop(&props, "FunctionName").unwrap_or(&r.logical_id).to_owned();
    let binary = r
        .metadata
        .pointer("/BuildProperties/Binary")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{}: Metadata.BuildProperties.Binary names no binary", r.logical_id))?
        .to_owned();
    let number = |key: &str| props.get(key).map(string_of).and_then(|s| s.parse::<u64>().ok());
    let environment = props
        .pointer("/Environment/Variables")
        .and_then(Value::as_object)
        .map(|vars| vars.iter().map(|(k, v)| (k.clone(), string_of(v))).collect())
        .unwrap_or_default();
    let mut sqs_sources = Vec::new();
    let mut stream_sources = Vec::new();
    let mut schedules = Vec::new();
    let mut routes = Vec::new();
    for (event_name, event) in props.get("Events").and_then(Value::as_object).into_iter().flatten() {
        let p = event.get("Properties").cloned().unwrap_or_default();
        match event.get("Type").and_then(Value::as_str) {
            Some("SQS") => {
                let queue_arn = str_prop(&p, "Queue").ok_or_else(|| anyhow!("SQS event without Queue"))?.to_owned();
                let queue_url =
                    queue_url_for_arn(ctx, &queue_arn).ok_or_else(|| anyhow!("no queue in the template has ARN {queue_arn}"))?;
                let n = |key: &str| p.get(key).map(string_of).and_then(|s| s.parse::<u64>().ok());
                let mapping_id = ctx.values.get(&format!("{}{event_name}", r.logical_id)).map(string_of).unwrap_or_default();
                sqs_sources.push(SqsSource {
                    mapping_id,
                    enabled: p.get("Enabled").is_none_or(|e| string_of(e) != "false"),
                    queue_url,
                    queue_arn,
                    batch_size: n("BatchSize").unwrap_or(10) as usize,
                    batching_window: std::time::Duration::from_secs(n("MaximumBatchingWindowInSeconds").unwrap_or(0)),
                    report_batch_item_failures: p
                        .get("FunctionResponseTypes")
                        .and_then(Value::as_array)
                        .is_some_and(|t| t.iter().any(|x| x == "ReportBatchItemFailures")),
                    max_concurrency: p.pointer("/ScalingConfig/MaximumConcurrency").map(string_of).and_then(|s| s.parse().ok()),
                });
            }
            Some("DynamoDB") => stream_sources.push(stream_source(&p)?),
            Some("ScheduleV2" | "Schedule") => {
                let expression = str_prop(&p, "ScheduleExpression").or_else(|| str_prop(&p, "Schedule")).unwrap_or_default();
                let input = match p.get("Input") {
                    Some(Value::String(text)) => serde_json::from_str(text).with_context(|| format!("{event_name}: Input is not JSON"))?,
                    _ => Value::Object(serde_json::Map::new()),
                };
                let every = rate(expression).with_context(|| format!("{}: schedule {event_name}", r.logical_id))?;
                schedules.push(ScheduleSource { name: event_name.clone(), every, input });
            }
            Some("HttpApi") => routes.push(HttpRoute {
                method: str_prop(&p, "Method").unwrap_or("ANY").to_uppercase(),
                path: str_prop(&p, "Path").unwrap_or("/").to_owned(),
                function: name.clone(),
                timeout: p
                    .get("TimeoutInMillis")
                    .map(string_of)
                    .and_then(|ms| ms.parse().ok())
                    .map_or(crate::http_api::MAX_INTEGRATION_TIMEOUT, std::time::Duration::from_millis)
                    .min(crate::http_api::MAX_INTEGRATION_TIMEOUT),
            }),
            other => bail!("event type {other:?} is not supported by the local cloud yet"),
        }
    }
    // Like Lambda: reserved concurrency when set, otherwise what the event
    // sources may use together (each capped by its MaximumConcurrency).
    let concurrency = number("ReservedConcurrentExecutions")
        .map(|n| n as usize)
        .or_else(|| {
            let per_source: Vec<usize> = sqs_sources.iter().map(|s| s.max_concurrency.unwrap_or(DEFAULT_CONCURRENCY)).collect();
            (!per_source.is_empty()).then(|| per_source.iter().sum())
        })
        .unwrap_or(DEFAULT_CONCURRENCY)
        .max(1);
    let url = match props.get("FunctionUrlConfig") {
        None => None,
        Some(config) => {
            anyhow::ensure!(
                str_prop(config, "AuthType") == Some("NONE"),
                "{}: only AuthType NONE function URLs run locally (the function checks its callers)",
                r.logical_id
            );
            Some(match str_prop(config, "InvokeMode") {
                None | Some("BUFFERED") => InvokeMode::Buffered,
                Some("RESPONSE_STREAM") => InvokeMode::ResponseStream,
                Some(other) => bail!("{}: unknown function URL InvokeMode {other}", r.logical_id),
            })
        }
    };
    let value = |name: &str| ctx.values.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (region, account) = (value("AWS::Region"), value("AWS::AccountId"));
    let mut policy = crate::iam::Policy::from_policies(props.get("Policies"), &region, &account)
        .with_context(|| format!("{}: Policies", r.logical_id))?;
    // What SAM adds to the role for each event source.
    for source in &sqs_sources {
        policy.grant(
            &["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"],
            &source.queue_arn,
        );
    }
    for source in &stream_sources {
        policy.grant(
            &["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"],
            &source.stream_arn,
        );
    }
    let spec = FunctionSpec {
        policy,
        url,
        logical_id: r.logical_id.clone(),
        name,
        binary,
        environment,
        timeout: std::time::Duration::from_secs(number("Timeout").unwrap_or(3)),
        memory_mb: number("MemorySize").unwrap_or(128),
        concurrency,
        sqs_sources,
        stream_sources,
        schedules,
    };
    Ok((spec, routes))
}

/// The period of a `rate(N unit)` expression. Locally `second(s)` is allowed
/// too, so tests need not wait a minute; `cron(...)` and `at(...)` are not
/// fired by the local cloud yet and are refused rather than ignored.
pub fn rate(expression: &str) -> anyhow::Result<std::time::Duration> {
    let inner = expression
        .strip_prefix("rate(")
        .and_then(|e| e.strip_suffix(')'))
        .ok_or_else(|| anyhow!("{expression:?}: only rate(...) schedules run on the local cloud"))?;
    let (n, unit) = inner.trim().split_once(' ').ok_or_else(|| anyhow!("{expression:?} is not rate(N unit)"))?;
    let n: u64 = n.parse().with_context(|| format!("{expression:?}: {n} is not a whole number"))?;
    let seconds = match unit.trim_end_matches('s') {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        other => bail!("{expression:?}: unknown unit {other}"),
    };
    anyhow::ensure!(n > 0, "{expression:?}: the rate must be positive");
    Ok(std::time::Duration::from_secs(n * seconds))
}

fn stream_source(p: &Value) -> anyhow::Result<StreamSource> {
    let n = |key: &str| p.get(key).map(string_of).and_then(|s| s.parse::<i64>().ok());
    let filters = p
        .pointer("/FilterCriteria/Filters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|f| {
            let pattern = str_prop(f, "Pattern").ok_or_else(|| anyhow!("a FilterCriteria filter without Pattern"))?;
            let pattern: Value = serde_json::from_str(pattern).with_context(|| format!("filter pattern {pattern} is not JSON"))?;
            crate::filter::validate(&pattern)?;
            Ok(pattern)
        })
        .collect::<anyhow::Result<Vec<Value>>>()?;
    Ok(StreamSource {
        stream_arn: str_prop(p, "Stream").ok_or_else(|| anyhow!("DynamoDB event without Stream"))?.to_owned(),
        starting_position: match str_prop(p, "StartingPosition") {
            Some("LATEST") => StartingPosition::Latest,
            Some("TRIM_HORIZON") => StartingPosition::TrimHorizon,
            other => bail!("StartingPosition {other:?} is not supported locally"),
        },
        batch_size: n("BatchSize").unwrap_or(100).max(1) as usize,
        batching_window: std::time::Duration::from_secs(n("MaximumBatchingWindowInSeconds").unwrap_or(0).max(0) as u64),
        filters,
        report_batch_item_failures: p
            .get("FunctionResponseTypes")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|x| x == "ReportBatchItemFailures")),
        bisect_on_error: p.get("BisectBatchOnFunctionError").is_some_and(|v| v == true || v == "true"),
        max_retry_attempts: n("MaximumRetryAttempts").and_then(|n| u32::try_from(n).ok()),
    })
}

fn queue_url_for_arn(ctx: &Context, arn: &str) -> Option<String> {
    ctx.attributes
        .iter()
        .find(|((_, attr), v)| attr == "Arn" && v.as_str() == Some(arn))
        .and_then(|((id, _), _)| ctx.values.get(id))
        .and_then(Value::as_str)
        .map(str::to_owned)
}
