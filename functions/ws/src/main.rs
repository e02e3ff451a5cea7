use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{LambdaEvent, service_fn};
use prism_shared::aws::{AwsPorts, RealtimePorts, sdk_config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    prism_shared::runtime::telemetry::init();
    let config = ws::Config::from_env()?;
    let sdk = sdk_config().await;
    let AwsPorts { jobs, .. } = AwsPorts::from_sdk(&sdk)?;
    let RealtimePorts { connections, notifier } = RealtimePorts::from_sdk(&sdk)?;
    let deps = ws::Deps { jobs, connections, notifier, config };
    let handler = |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async {
        ws::handle(&deps, event.payload).await.map_err(lambda_runtime::Error::from)
    };
    lambda_runtime::run(service_fn(handler)).await
}
