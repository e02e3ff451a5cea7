use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{LambdaEvent, service_fn};
use prism_shared::aws::OpsPorts;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let runtime = prism_shared::runtime::start();
    let config = ops::Config::from_env()?;
    let deps = OpsPorts::from_env().await?.with_config(config);
    let handler =
        |event: LambdaEvent<ApiGatewayV2httpRequest>| async { Ok::<_, std::convert::Infallible>(ops::handle(&deps, event.payload).await) };
    runtime.run(service_fn(handler)).await
}
