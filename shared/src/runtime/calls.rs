//! AWS calls per invocation. On AWS a job's cost is mostly its API calls,
//! so every SDK client the adapters build counts each request it sends
//! (retries included: each is billed) and the runtime writes, after every
//! invocation, `Invocations` and `AwsCalls` by `Function` as metrics.
//!
//! One count per process is one count per invocation: a Lambda instance
//! runs one invocation at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use futures::FutureExt as _;
use lambda_runtime::LambdaInvocation;
use lambda_runtime::tower::{Layer, Service};

use super::metrics::{self, Metric};

static SENT: AtomicU64 = AtomicU64::new(0);

/// Counts every request an SDK client sends.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountCalls;

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        SENT.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The requests sent since the last call.
pub fn take() -> u64 {
    SENT.swap(0, Ordering::Relaxed)
}

/// Writes each invocation's calls as metrics (see the module).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallsPerInvocation;

impl<S> Layer<S> for CallsPerInvocation {
    type Service = CountedInvocations<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountedInvocations { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CountedInvocations<S> {
    inner: S,
}

/// The function's name, read once: it never changes in an instance's life.
static FUNCTION: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "unknown".into()));

fn write_calls(_: &Result<(), BoxError>) {
    let calls = take();
    metrics::emit(&[("Function", FUNCTION.as_str())], &[Metric::count("Invocations"), Metric::counted("AwsCalls", calls as f64)]);
}

impl<S> Service<LambdaInvocation> for CountedInvocations<S>
where
    S: Service<LambdaInvocation, Response = (), Error = BoxError>,
{
    type Response = ();
    type Error = BoxError;
    type Future = futures::future::Inspect<S::Future, fn(&Result<(), BoxError>)>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        // Calls made between invocations (set-up) are not this one's.
        take();
        self.inner.call(invocation).inspect(write_calls as fn(&Result<(), BoxError>))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_request_an_sdk_client_sends_is_counted_once() {
        // A client whose requests go nowhere: each of its attempts is counted.
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::for_tests())
            .endpoint_url("http://127.0.0.1:1")
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(2))
            .interceptor(CountCalls)
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(conf);
        take();
        let refused = client.get_item().table_name("t").key("pk", aws_sdk_dynamodb::types::AttributeValue::S("k".into())).send().await;
        assert!(refused.is_err());
        assert_eq!(take(), 2, "two attempts, two requests");
    }
}
