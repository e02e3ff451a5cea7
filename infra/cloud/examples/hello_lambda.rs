//! The reference of `prism bench --only cold-start`: the smallest function
//! `lambda_runtime` makes (it echoes its event), built with the functions'
//! profile, so their cold starts are read against it.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<_, Error>(event.payload) })).await
}
