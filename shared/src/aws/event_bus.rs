//! The event bus on an SNS topic, published in batches of ten (`PublishBatch`).
//! Messages carry `event_type` and `job_id` attributes (and `watched`, `run_id`
//! and `step` where they apply) so subscriptions can filter without reading
//! bodies.

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};

use super::boxed;
use crate::ports::error::PublishError;
use crate::ports::{EventBus, Publication};

/// SNS's limit of entries per `PublishBatch`.
const MAX_BATCH: usize = 10;

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

fn attribute(value: &str) -> Result<MessageAttributeValue, aws_sdk_sns::error::BuildError> {
    MessageAttributeValue::builder().data_type("String").string_value(value).build()
}

fn entry(index: usize, publication: &Publication) -> Result<PublishBatchRequestEntry, aws_sdk_sns::error::BuildError> {
    let event = &publication.event;
    let mut entry = PublishBatchRequestEntry::builder()
        .id(index.to_string())
        .message(event.to_json())
        .message_attributes("event_type", attribute(event.body.event_type())?);
    if let Some(job_id) = &event.job_id {
        entry = entry.message_attributes("job_id", attribute(job_id.as_str())?);
    }
    // What the fan-out's subscription filters on: only watched jobs' events reach it.
    if publication.watched {
        entry = entry.message_attributes("watched", attribute("true")?);
    }
    // What the workflow queue's subscription filters on: only a run's jobs reach it.
    if let Some(run) = &event.run {
        entry = entry.message_attributes("run_id", attribute(run.run_id.as_str())?);
        if let Some(step) = &run.step {
            entry = entry.message_attributes("step", attribute(step)?);
        }
    }
    entry.build()
}

#[async_trait]
impl EventBus for SnsEventBus {
    async fn publish(&self, events: &[Publication]) -> Result<(), PublishError> {
        for (chunk_index, chunk) in events.chunks(MAX_BATCH).enumerate() {
            let offset = chunk_index * MAX_BATCH;
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, e)| entry(i, e))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PublishError::Refused { published: offset, reason: e.to_string() })?;
            let out = self
                .client
                .publish_batch()
                .topic_arn(&self.topic_arn)
                .set_publish_batch_request_entries(Some(entries))
                .send()
                .await
                .map_err(|e| PublishError::Unavailable { published: offset, source: boxed(e) })?;
            // Entries fail one by one; the first failed entry is where publishing stopped.
            let Some(failed) =
                out.failed.iter().flatten().filter_map(|f| f.id.parse::<usize>().ok().map(|i| (i, f))).min_by_key(|(i, _)| *i)
            else {
                continue;
            };
            let (index, entry) = failed;
            let reason = format!("{}: {}", entry.code, entry.message.as_deref().unwrap_or_default());
            let published = offset + index;
            return Err(if entry.sender_fault {
                PublishError::Refused { published, reason }
            } else {
                PublishError::Unavailable { published, source: reason.into() }
            });
        }
        Ok(())
    }
}
