use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{LambdaEvent, service_fn};
use prism_shared::aws::PublishPorts;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let runtime = prism_shared::runtime::start();
    let config = publish::Config::from_env()?;
    let deps = PublishPorts::from_env().await?.with_config(config);
    let handler = |event: LambdaEvent<Event>| async { Ok::<_, std::convert::Infallible>(publish::handle(&deps, event.payload).await) };
    runtime.run(service_fn(handler)).await
}
