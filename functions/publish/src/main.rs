use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{LambdaEvent, service_fn};
use prism_shared::aws::{SqsQueue, event_bus, sdk_config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    prism_shared::runtime::telemetry::init();
    let config = publish::Config::from_env()?;
    let sdk = sdk_config().await;
    let bus = std::sync::Arc::new(event_bus(&sdk)?);
    let queue = std::sync::Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk)));
    let deps = publish::Deps { bus, queue, config };
    let handler = |event: LambdaEvent<Event>| async { Ok::<_, std::convert::Infallible>(publish::handle(&deps, event.payload).await) };
    lambda_runtime::run(service_fn(handler)).await
}
