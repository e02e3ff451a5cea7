use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use prism_shared::aws::{AwsPorts, RealtimePorts, sdk_config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    prism_shared::runtime::telemetry::init();
    let sdk = sdk_config().await;
    let AwsPorts { jobs, queue, .. } = AwsPorts::from_sdk(&sdk)?;
    let RealtimePorts { connections, notifier } = RealtimePorts::from_sdk(&sdk)?;
    let deps = progress::Deps { jobs, connections, notifier, queue };
    let handler = |event: LambdaEvent<SqsEvent>| async { Ok::<_, std::convert::Infallible>(progress::handle(&deps, event.payload).await) };
    lambda_runtime::run(service_fn(handler)).await
}
