use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use prism_shared::aws::AwsPorts;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let runtime = prism_shared::runtime::start();
    let config = workflow::Config::from_env()?;
    let deps = AwsPorts::from_env().await?.with_config(config);
    let handler = |event: LambdaEvent<SqsEvent>| async { Ok::<_, std::convert::Infallible>(workflow::handle(&deps, event.payload).await) };
    runtime.run(service_fn(handler)).await
}
