use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{LambdaEvent, service_fn};
use prism_shared::aws::RealtimePorts;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let runtime = prism_shared::runtime::start();
    let config = ws::Config::from_env()?;
    let deps = RealtimePorts::from_env().await?.with_config(config);
    let handler = |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async {
        ws::handle(&deps, event.payload).await.map_err(lambda_runtime::Error::from)
    };
    runtime.run(service_fn(handler)).await
}
