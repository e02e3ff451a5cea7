//! The second reference of `prism bench --only cold-start`: the hello-world
//! with a DynamoDB client built before it asks for work, as most functions
//! build theirs (AWS's own anchor for this is about 66 ms on arm64).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let _client = &dynamodb;
        async move { Ok::<_, Error>(event.payload) }
    }))
    .await
}
