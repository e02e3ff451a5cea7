//! [`LaneControl`] on Lambda's event-source mappings and SQS's queue attributes.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_lambda::error::SdkError;
use aws_sdk_sqs::types::QueueAttributeName;

use super::{LazyClient, boxed};
use crate::domain::lanes::{MappingState, QueueDepth};
use crate::ports::LaneControl;
use crate::ports::error::ControlError;

#[derive(Debug, Clone)]
pub struct LambdaLaneControl {
    /// Built on the first lane change: only `ops` changes lanes.
    lambda: LazyClient<aws_sdk_lambda::Client>,
    sqs: LazyClient<aws_sdk_sqs::Client>,
}

impl LambdaLaneControl {
    pub fn new(sdk: &SdkConfig, sqs: LazyClient<aws_sdk_sqs::Client>) -> Self {
        Self { lambda: LazyClient::new(sdk, super::lambda_client), sqs }
    }

    fn lambda(&self) -> &aws_sdk_lambda::Client {
        self.lambda.get()
    }
}

/// A service error by its code: a missing resource and a denied call are
/// not worth retrying; everything else (throttling, 5xx, the network) is.
fn control_error<E, R>(what: &str, e: SdkError<E, R>) -> ControlError
where
    E: aws_sdk_lambda::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let service = e.as_service_error();
    match service.and_then(|s| s.code()) {
        Some("ResourceNotFoundException" | "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist") => {
            ControlError::NotFound(what.to_owned())
        }
        Some("AccessDeniedException" | "AccessDenied") => {
            ControlError::Denied(format!("{what}: {}", service.and_then(|s| s.message()).unwrap_or_default()))
        }
        _ => ControlError::Unavailable(boxed(e)),
    }
}

#[async_trait]
impl LaneControl for LambdaLaneControl {
    async fn state(&self, mapping_id: &str) -> Result<MappingState, ControlError> {
        let out = self.lambda().get_event_source_mapping().uuid(mapping_id).send().await.map_err(|e| control_error(mapping_id, e))?;
        Ok(MappingState::from_lambda(out.state().unwrap_or_default()))
    }

    async fn set_enabled(&self, mapping_id: &str, enabled: bool) -> Result<MappingState, ControlError> {
        let out = self
            .lambda()
            .update_event_source_mapping()
            .uuid(mapping_id)
            .enabled(enabled)
            .send()
            .await
            .map_err(|e| control_error(mapping_id, e))?;
        Ok(MappingState::from_lambda(out.state().unwrap_or_default()))
    }

    async fn depth(&self, queue_url: &str) -> Result<QueueDepth, ControlError> {
        let out = self
            .sqs
            .get()
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| control_error(queue_url, e))?;
        let count = |name: QueueAttributeName| -> Result<u64, ControlError> {
            match out.attributes().and_then(|a| a.get(&name)) {
                Some(v) => v.parse().map_err(|_| ControlError::Unavailable(format!("{name} is not a count: {v:?}").into())),
                None => Ok(0),
            }
        };
        Ok(QueueDepth {
            waiting: count(QueueAttributeName::ApproximateNumberOfMessages)?,
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
        })
    }
}
