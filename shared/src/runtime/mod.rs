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

/// A function's runtime from the first line of its `main`: tracing is set up
/// and the shutdown extension's registration (a round trip to the Runtime
/// API) has begun on another task, so that it overlaps the function's own
/// set-up (configuration, SDK clients) instead of following it.
#[cfg(feature = "aws")]
#[derive(Debug)]
pub struct Starting {
    registration: tokio::task::JoinHandle<()>,
}

/// Starts a function's runtime; call it first in `main`, inside Tokio.
#[cfg(feature = "aws")]
pub fn start() -> Starting {
    telemetry::init();
    // Registered during init, as Lambda requires, so the instance gets SIGTERM.
    let registration = tokio::spawn(lambda_runtime::spawn_graceful_shutdown_handler(shutdown::on_sigterm));
    Starting { registration }
}

#[cfg(feature = "aws")]
impl Starting {
    /// `lambda_runtime::run` with each invocation's AWS calls written as
    /// metrics ([`calls`]) and Lambda's shutdown phase handled ([`shutdown`]).
    pub async fn run<A, F, R, B, S, D, E>(self, handler: F) -> Result<(), lambda_runtime::Error>
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
        // Init ends with the first request for work: the extension must be registered by then.
        self.registration.await.map_err(|e| lambda_runtime::Error::from(format!("could not register the shutdown extension: {e}")))?;
        lambda_runtime::Runtime::new(handler)
            .layer(lambda_runtime::layers::TracingLayer::new())
            .layer(calls::CallsPerInvocation)
            .layer(shutdown::TrackInFlight)
            .run()
            .await
    }
}
