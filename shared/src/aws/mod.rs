//! The AWS adapters of the ports, and the one place SDK clients are configured.

mod blob_store;
mod breaker_store;
mod connection_store;
mod dead_letter_store;
mod estimate_store;
mod event_bus;
mod job_store;
mod lane_control;
mod notifier;
mod queue;
mod quota_store;
mod schedule_store;
pub mod tls;

pub use blob_store::S3BlobStore;
pub use breaker_store::DynamoBreakerStore;
pub use connection_store::DynamoConnectionStore;
pub use dead_letter_store::DynamoDeadLetterStore;
pub use estimate_store::DynamoEstimateStore;
pub use event_bus::SnsEventBus;
pub use job_store::DynamoJobStore;
pub use lane_control::LambdaLaneControl;
pub use notifier::ApiGatewayNotifier;
pub use queue::SqsQueue;
pub use quota_store::DynamoQuotaStore;
pub use schedule_store::DynamoScheduleStore;

use aws_config::{BehaviorVersion, SdkConfig};

use crate::runtime::calls::CountCalls;

/// One `SdkConfig` from the environment: region, credentials, endpoint
/// overrides (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`) for local
/// clouds, and one HTTPS client for every SDK client built from it, trusting
/// the roots `PRISM_TLS_ROOTS` names ([`tls`]).
pub async fn sdk_config() -> Result<SdkConfig, crate::ports::error::ConfigError> {
    let http = tls::https_client(tls::TrustedRoots::from_env()?)?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    // Lambda (and the local cloud) gives every function its region and its
    // credentials in the environment, where the default chains look first.
    // Named here, the chains' other providers (profile files, IMDS, container
    // credentials) are not built at all (the config took 430–550 µs with them).
    if let Some(region) = crate::runtime::config::optional("AWS_REGION") {
        loader = loader.region(aws_config::Region::new(region));
    }
    if crate::runtime::config::optional("AWS_ACCESS_KEY_ID").is_some() {
        loader = loader.credentials_provider(aws_config::environment::EnvironmentVariableCredentialsProvider::new());
    }
    Ok(loader.load().await)
}

/// An S3 client; path-style addressing whenever an endpoint override is set,
/// since emulators on loopback have no per-bucket host names.
fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let overridden = sdk.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let conf = aws_sdk_s3::config::Builder::from(sdk).force_path_style(overridden).interceptor(CountCalls).build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A client of SDK crate `$sdk` from `SdkConfig` `$config`, counting its calls.
macro_rules! client {
    ($sdk:ident, $config:expr) => {
        $sdk::Client::from_conf($sdk::config::Builder::from($config).interceptor(CountCalls).build())
    };
}

/// A Lambda client counting its calls.
fn lambda_client(sdk: &SdkConfig) -> aws_sdk_lambda::Client {
    client!(aws_sdk_lambda, sdk)
}

/// An SQS client counting its calls.
fn sqs_client(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    client!(aws_sdk_sqs, sdk)
}

/// An SDK client built on its first call. Building a service's first client
/// costs a cold start about 0.15 ms (its endpoint rules compile their
/// regular expressions); a function that never calls the service (only
/// `ops` calls Lambda, the processors call SQS only to delay a retry, the
/// sweeper and the dead-letter function never read or write an object)
/// never pays it, and one that does pays it once, on a call that waits on
/// the network anyway.
#[derive(Clone)]
pub struct LazyClient<C> {
    sdk: SdkConfig,
    build: fn(&SdkConfig) -> C,
    client: std::sync::Arc<std::sync::OnceLock<C>>,
}

impl<C> LazyClient<C> {
    pub fn new(sdk: &SdkConfig, build: fn(&SdkConfig) -> C) -> Self {
        Self { sdk: sdk.clone(), build, client: std::sync::Arc::default() }
    }

    pub fn get(&self) -> &C {
        self.client.get_or_init(|| (self.build)(&self.sdk))
    }
}

impl<C> std::fmt::Debug for LazyClient<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyClient").field("built", &self.client.get().is_some()).finish_non_exhaustive()
    }
}

/// A DynamoDB item.
pub(crate) type Item = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

/// A DynamoDB string attribute.
pub(crate) fn s(v: impl Into<String>) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(v.into())
}

/// Every item of the partition `pk`, through the SDK's paginator: the small
/// partitions (breakers, dead letters, estimate totals) read whole.
pub(crate) async fn partition(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
) -> Result<Vec<Item>, crate::ports::error::StoreError> {
    client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", s(pk))
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| crate::ports::error::StoreError::Unavailable(boxed(e)))
}

/// Keeps an SDK error whole (its source chain names the service's error code).
pub(crate) fn boxed<E: std::error::Error + Send + Sync + 'static>(e: E) -> crate::ports::error::BoxError {
    Box::new(e)
}

/// The AWS adapters of the ports most functions use, built once per cold start from one `SdkConfig`.
#[derive(Debug, Clone)]
pub struct AwsPorts {
    pub jobs: std::sync::Arc<dyn crate::ports::JobStore>,
    pub blobs: std::sync::Arc<dyn crate::ports::BlobStore>,
    pub queue: std::sync::Arc<dyn crate::ports::Queue>,
    pub schedules: std::sync::Arc<dyn crate::ports::ScheduleStore>,
    pub lanes: std::sync::Arc<dyn crate::ports::LaneControl>,
    pub dead_letters: std::sync::Arc<dyn crate::ports::DeadLetterStore>,
    pub quotas: std::sync::Arc<dyn crate::ports::QuotaStore>,
    pub breakers: std::sync::Arc<dyn crate::ports::BreakerStore>,
    pub breaker_policy: crate::domain::breakers::BreakerPolicy,
    pub estimates: std::sync::Arc<dyn crate::ports::EstimateStore>,
}

impl AwsPorts {
    /// Reads `TABLE_NAME` and the SDK's own settings from the environment.
    pub async fn from_env() -> Result<Self, crate::ports::error::ConfigError> {
        Self::from_sdk(&sdk_config().await?)
    }

    /// [`Self::from_env`] with an `SdkConfig` the caller also uses for other clients.
    pub fn from_sdk(sdk: &SdkConfig) -> Result<Self, crate::ports::error::ConfigError> {
        let table = crate::runtime::config::required("TABLE_NAME")?;
        let (dynamodb, sqs) = (client!(aws_sdk_dynamodb, sdk), LazyClient::new(sdk, sqs_client));
        Ok(Self {
            jobs: std::sync::Arc::new(DynamoJobStore::new(dynamodb.clone(), table.clone())),
            schedules: std::sync::Arc::new(DynamoScheduleStore::new(dynamodb.clone(), table.clone())),
            dead_letters: std::sync::Arc::new(DynamoDeadLetterStore::new(dynamodb.clone(), table.clone())),
            breakers: std::sync::Arc::new(crate::app::breakers::CachedBreakers::new(std::sync::Arc::new(DynamoBreakerStore::new(
                dynamodb.clone(),
                table.clone(),
            )))),
            breaker_policy: crate::domain::breakers::BreakerPolicy::from_env()?,
            estimates: std::sync::Arc::new(crate::app::estimates::CachedEstimates::new(
                std::sync::Arc::new(DynamoEstimateStore::new(dynamodb.clone(), table.clone())),
                crate::app::estimates::cache_from_env()?,
            )),
            // Read by `api` on every submission: at most once per half-minute per owner.
            quotas: std::sync::Arc::new(crate::app::quota_cache::CachedQuotas::new(
                std::sync::Arc::new(DynamoQuotaStore::new(dynamodb, table)),
                std::time::Duration::from_secs(30),
            )),
            blobs: std::sync::Arc::new(S3BlobStore::new(LazyClient::new(sdk, s3_client))),
            queue: std::sync::Arc::new(SqsQueue::new(sqs.clone())),
            lanes: std::sync::Arc::new(LambdaLaneControl::new(sdk, sqs)),
        })
    }

    /// The handler dependencies of a function with settings `config`.
    pub fn with_config<C>(self, config: C) -> crate::ports::Deps<C> {
        crate::ports::Deps {
            jobs: self.jobs,
            blobs: self.blobs,
            queue: self.queue,
            schedules: self.schedules,
            lanes: self.lanes,
            dead_letters: self.dead_letters,
            quotas: self.quotas,
            breakers: self.breakers,
            breaker_policy: self.breaker_policy,
            estimates: self.estimates,
            config,
        }
    }
}

/// The adapters `publish` needs: the event bus on the topic in
/// `EVENTS_TOPIC_ARN` (only `publish` holds one) and a queue.
#[derive(Debug, Clone)]
pub struct PublishPorts {
    pub bus: std::sync::Arc<dyn crate::ports::EventBus>,
    pub queue: std::sync::Arc<dyn crate::ports::Queue>,
}

impl PublishPorts {
    pub async fn from_env() -> Result<Self, crate::ports::error::ConfigError> {
        let sdk = sdk_config().await?;
        let topic = crate::runtime::config::required("EVENTS_TOPIC_ARN")?;
        Ok(Self {
            bus: std::sync::Arc::new(SnsEventBus::new(client!(aws_sdk_sns, &sdk), topic)),
            queue: std::sync::Arc::new(SqsQueue::new(LazyClient::new(&sdk, sqs_client))),
        })
    }

    pub fn with_config<C>(self, config: C) -> crate::ports::PublishDeps<C> {
        crate::ports::PublishDeps { bus: self.bus, queue: self.queue, config }
    }
}

/// The adapters the WebSocket functions need: the job and connection
/// stores, the notifier and a queue.
#[derive(Debug, Clone)]
pub struct RealtimePorts {
    pub jobs: std::sync::Arc<dyn crate::ports::JobStore>,
    pub connections: std::sync::Arc<dyn crate::ports::ConnectionStore>,
    pub notifier: std::sync::Arc<dyn crate::ports::Notifier>,
    pub queue: std::sync::Arc<dyn crate::ports::Queue>,
}

impl RealtimePorts {
    /// Reads `TABLE_NAME` and `WEBSOCKET_ENDPOINT` (the stage's management
    /// URL); `AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI` overrides the latter,
    /// as service endpoint variables do for every other client, so a local
    /// cloud can point the unchanged SDK client at itself.
    pub async fn from_env() -> Result<Self, crate::ports::error::ConfigError> {
        let sdk = sdk_config().await?;
        let table = crate::runtime::config::required("TABLE_NAME")?;
        let endpoint = match crate::runtime::config::optional("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI") {
            Some(local) => local,
            None => crate::runtime::config::required("WEBSOCKET_ENDPOINT")?,
        };
        let dynamodb = client!(aws_sdk_dynamodb, &sdk);
        Ok(Self {
            jobs: std::sync::Arc::new(DynamoJobStore::new(dynamodb.clone(), table.clone())),
            connections: std::sync::Arc::new(DynamoConnectionStore::new(dynamodb, table)),
            notifier: std::sync::Arc::new(ApiGatewayNotifier::new(&sdk, &endpoint)),
            queue: std::sync::Arc::new(SqsQueue::new(LazyClient::new(&sdk, sqs_client))),
        })
    }

    pub fn with_config<C>(self, config: C) -> crate::ports::RealtimeDeps<C> {
        crate::ports::RealtimeDeps { jobs: self.jobs, connections: self.connections, notifier: self.notifier, queue: self.queue, config }
    }
}

/// What `ops` is built with: the lanes' controls, the dead letters, the jobs, a queue and the quotas.
#[derive(Debug, Clone)]
pub struct OpsPorts {
    pub lanes: std::sync::Arc<dyn crate::ports::LaneControl>,
    pub dead_letters: std::sync::Arc<dyn crate::ports::DeadLetterStore>,
    pub jobs: std::sync::Arc<dyn crate::ports::JobStore>,
    pub queue: std::sync::Arc<dyn crate::ports::Queue>,
    pub quotas: std::sync::Arc<dyn crate::ports::QuotaStore>,
    pub breakers: std::sync::Arc<dyn crate::ports::BreakerStore>,
}

impl OpsPorts {
    pub async fn from_env() -> Result<Self, crate::ports::error::ConfigError> {
        let sdk = sdk_config().await?;
        let table = crate::runtime::config::required("TABLE_NAME")?;
        let (dynamodb, sqs) = (client!(aws_sdk_dynamodb, &sdk), LazyClient::new(&sdk, sqs_client));
        Ok(Self {
            lanes: std::sync::Arc::new(LambdaLaneControl::new(&sdk, sqs.clone())),
            dead_letters: std::sync::Arc::new(DynamoDeadLetterStore::new(dynamodb.clone(), table.clone())),
            jobs: std::sync::Arc::new(DynamoJobStore::new(dynamodb.clone(), table.clone())),
            quotas: std::sync::Arc::new(DynamoQuotaStore::new(dynamodb.clone(), table.clone())),
            breakers: std::sync::Arc::new(DynamoBreakerStore::new(dynamodb, table)),
            queue: std::sync::Arc::new(SqsQueue::new(sqs)),
        })
    }

    pub fn with_config<C>(self, config: C) -> crate::ports::OpsDeps<C> {
        crate::ports::OpsDeps {
            lanes: self.lanes,
            dead_letters: self.dead_letters,
            jobs: self.jobs,
            queue: self.queue,
            quotas: self.quotas,
            breakers: self.breakers,
            config,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static BUILT: AtomicUsize = AtomicUsize::new(0);

    fn counted(_: &SdkConfig) -> usize {
        BUILT.fetch_add(1, Ordering::SeqCst) + 1
    }

    #[test]
    fn a_lazy_client_is_built_on_its_first_use_once_for_all_its_copies() {
        let lazy = LazyClient::new(&SdkConfig::builder().build(), counted);
        let copy = lazy.clone();
        assert_eq!(BUILT.load(Ordering::SeqCst), 0, "not built before it is used");
        assert_eq!((*lazy.get(), *copy.get(), *lazy.get()), (1, 1, 1), "the first build serves every use");
        assert_eq!(BUILT.load(Ordering::SeqCst), 1);
    }
}
