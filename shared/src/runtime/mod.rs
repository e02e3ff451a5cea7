//! What every function's `main` sets up: configuration, tracing, and the
//! runtime loop with its layers.

#[cfg(feature = "aws")]
pub mod calls;
pub mod config;
pub mod metrics;
pub mod routes;
#[cfg(feature = "aws")]
pub mod shutdown;
pub mod telemetry;

#[cfg(feature = "aws")]
use lambda_runtime::LambdaEvent;
#[cfg(feature = "aws")]
use lambda_runtime::tower::Service;

/// `lambda_runtime::run` with each invocation's AWS calls written as metrics
/// ([`calls`]) and Lambda's shutdown phase handled ([`shutdown`]).
#[cfg(feature = "aws")]
pub async fn run<A, F, R, B, S, D, E>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Service<LambdaEvent<A>, Response = R>,
    F::Future: Future<Output = Result<R, F::Error>>,
    F::Error: Into<lambda_runtime::Diagnostic> + std::fmt::Debug,
    A: for<'de> serde::Deserialize<'de>,
    R: lambda_runtime::IntoFunctionResponse<B, S>,
    B: serde::Serialize,
    S: futures::Stream<Item = Result<D, E>> + Unpin + Send + 'static,
    D: Into<bytes::Bytes> + Send,
    E: Into<lambda_runtime::Error> + Send + std::fmt::Debug,
{
    // Registered during init, as Lambda requires, so the instance gets SIGTERM.
    lambda_runtime::spawn_graceful_shutdown_handler(shutdown::on_sigterm).await;
    lambda_runtime::Runtime::new(handler)
        .layer(lambda_runtime::layers::TracingLayer::new())
        .layer(calls::CallsPerInvocation)
        .layer(shutdown::TrackInFlight)
        .run()
        .await
}
