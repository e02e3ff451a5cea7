use lambda_runtime::{LambdaEvent, service_fn};
use prism_shared::aws::AwsPorts;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let runtime = prism_shared::runtime::start();
    let config = sweeper::Config::from_env()?;
    let deps = AwsPorts::from_env().await?.with_config(config);
    let handler = |_: LambdaEvent<serde_json::Value>| async { sweeper::handle(&deps).await.map_err(lambda_runtime::Error::from) };
    runtime.run(service_fn(handler)).await
}
