//! The event bus on an SNS topic. Messages carry `event_type` and `job_id`
//! attributes so subscriptions can filter without reading bodies.

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;

use super::boxed;
use crate::envelope::JobEventEnvelope;
use crate::error::PublishError;
use crate::ports::EventBus;

#[derive(Debug, Clone)]
pub struct SnsEventBus {
    client: Client,
    topic_arn: String,
}

impl SnsEventBus {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        Self { client, topic_arn: topic_arn.into() }
    }
}

fn attribute(value: &str) -> Result<MessageAttributeValue, PublishError> {
    MessageAttributeValue::builder().data_type("String").string_value(value).build().map_err(|e| PublishError::Unavailable(boxed(e)))
}

#[async_trait]
impl EventBus for SnsEventBus {
    async fn publish(&self, event: &JobEventEnvelope) -> Result<(), PublishError> {
        let mut request = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(event.to_json())
            .message_attributes("event_type", attribute(event.body.event_type())?);
        if let Some(job_id) = &event.job_id {
            request = request.message_attributes("job_id", attribute(job_id.as_str())?);
        }
        request.send().await.map_err(|e| PublishError::Unavailable(boxed(e)))?;
        Ok(())
    }
}
