use std::sync::Arc;

use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use lambda_runtime::{LambdaEvent, service_fn};
use prism_shared::aws::AwsPorts;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let runtime = prism_shared::runtime::start();
    let config = stream::Config::from_env()?;
    let deps = Arc::new(AwsPorts::from_env().await?.with_config(config));
    let handler = |event: LambdaEvent<LambdaFunctionUrlRequest>| {
        let deps = Arc::clone(&deps);
        async move { Ok::<_, std::convert::Infallible>(stream::handle(deps, event.payload, event.context.deadline()).await) }
    };
    runtime.run(service_fn(handler)).await
}
