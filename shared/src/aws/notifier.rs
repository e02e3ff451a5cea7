//! The notifier on API Gateway's `@connections` management API.

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use bytes::Bytes;

use super::boxed;
use crate::ports::Notifier;
use crate::ports::error::NotifyError;

#[derive(Debug, Clone)]
pub struct ApiGatewayNotifier {
    client: Client,
}

impl ApiGatewayNotifier {
    /// `endpoint` is the WebSocket stage's `https://{api}.execute-api.{region}.amazonaws.com/{stage}`.
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: &str) -> Self {
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .interceptor(crate::runtime::calls::CountCalls)
            .build();
        Self { client: Client::from_conf(conf) }
    }
}

#[async_trait]
impl Notifier for ApiGatewayNotifier {
    async fn send(&self, connection_id: &str, message: Bytes) -> Result<(), NotifyError> {
        let size = message.len();
        let result = self.client.post_to_connection().connection_id(connection_id).data(Blob::new(message)).send().await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(PostToConnectionError::GoneException(_)) => Err(NotifyError::Gone(connection_id.to_owned())),
                Some(PostToConnectionError::PayloadTooLargeException(_)) => Err(NotifyError::TooLarge(size)),
                _ => Err(NotifyError::Unavailable(boxed(e))),
            },
        }
    }
}
