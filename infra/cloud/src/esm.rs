//! SQS event-source mappings, as Lambda runs them: pollers long-poll the
//! queue, gather a batch (up to `BatchSize`, within the batching window),
//! invoke the function with an `SqsEvent`, and delete what succeeded. With
//! `ReportBatchItemFailures` only the messages the function names stay; a
//! failed invocation deletes nothing. Messages that are not deleted come back
//! after their visibility timeout and, after `maxReceiveCount`, SQS's own
//! redrive moves them to the dead-letter queue.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::provision::SqsSource;
use crate::runtime::{FunctionHandle, InvokeError};

/// Long-poll wait per receive, Lambda's: an idle poller costs the queue one
/// request every 20 s. (Stopping does not wait for it: the poll is dropped.)
pub const WAIT_SECONDS: i32 = 20;

/// How often a batch whose window closes within the second looks for more
/// (a long poll would wait a whole second).
const LAST_SECOND_LOOK: Duration = Duration::from_millis(100);

/// How an event source hands batches to its function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Delivery {
    #[default]
    Once,
    /// Every batch twice (a fault the local cloud can inject: at-least-once
    /// delivery taken at its word).
    Twice,
}

/// How a mapping's pollers run: the queue's client and region, how batches
/// are delivered, and the mapping's `Enabled` flag (see [`crate::mappings`]).
#[derive(Debug, Clone)]
pub struct Pollers {
    pub sqs: aws_sdk_sqs::Client,
    pub region: String,
    pub delivery: Delivery,
    pub enabled: tokio::sync::watch::Receiver<bool>,
}

/// Starts the pollers of one event source: as many as the function may run at once.
///
/// At shutdown a poller stops receiving, but a batch it holds is still
/// delivered and settled (deleted, or released when the function took no
/// more work), so stopping loses nothing and delays nothing.
pub fn start(source: SqsSource, function: FunctionHandle, count: usize, pollers: Pollers, shutdown: CancellationToken) {
    for _ in 0..count.max(1) {
        let (source, function, pollers, shutdown) = (source.clone(), function.clone(), pollers.clone(), shutdown.clone());
        tokio::spawn(async move { poll(&source, &function, pollers, &shutdown).await });
    }
}

async fn poll(source: &SqsSource, function: &FunctionHandle, pollers: Pollers, shutdown: &CancellationToken) {
    let Pollers { sqs, region, delivery, mut enabled } = pollers;
    let (sqs, region) = (&sqs, region.as_str());
    let mut failures = 0u32;
    loop {
        // A disabled mapping receives nothing until it is enabled again (a
        // receive already under way still delivers, as on Lambda).
        let enabled_now = tokio::select! {
            () = shutdown.cancelled() => return,
            // Only whether it is: the watch's value is not held across the receive.
            on = enabled.wait_for(|on| *on) => on.is_ok(),
        };
        if !enabled_now {
            return;
        }
        let received = tokio::select! {
            // A long poll given up: what SQS hands it later returns after the visibility timeout.
            () = shutdown.cancelled() => return,
            received = receive_batch(source, sqs) => received,
        };
        match received {
            Ok(batch) if batch.is_empty() => failures = 0,
            // Disabled while the receive waited (it waits up to 20 s): what it
            // brought goes back to the queue at once, undelivered, so a pause
            // holds everything that arrives after it.
            Ok(batch) if !*enabled.borrow() => {
                failures = 0;
                release(source, sqs, &batch).await;
            }
            Ok(batch) => {
                failures = 0;
                if delivery == Delivery::Twice {
                    // The first delivery's outcome is dropped, as when a consumer dies before deleting.
                    let event = to_event(source, region, &batch);
                    if let Ok(payload) = serde_json::to_vec(&event) {
                        let _ = function.invoke(Bytes::from(payload)).await;
                    }
                }
                deliver(source, function, sqs, region, batch).await;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(queue = %source.queue_url, error = %e, "receive failed");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))).await;
            }
        }
    }
}

/// Up to `batch_size` messages. The first receive long-polls for any; the
/// batching window opens when the first arrive, as Lambda's does, and the
/// batch goes when it is full or the window has run its length, receiving
/// all the while. SQS waits in whole seconds, so in the window's last second
/// the queue is looked into every [`LAST_SECOND_LOOK`] and once more as it closes.
async fn receive_batch(source: &SqsSource, sqs: &aws_sdk_sqs::Client) -> Result<Vec<Message>, aws_sdk_sqs::Error> {
    let mut batch: Vec<Message> = Vec::new();
    let mut window_closes: Option<Instant> = None;
    loop {
        let wait = window_closes.map_or(WAIT_SECONDS, |closes| {
            let left = closes.saturating_duration_since(Instant::now()).as_secs();
            i32::try_from(left).unwrap_or(WAIT_SECONDS).min(WAIT_SECONDS)
        });
        let want = (source.batch_size - batch.len()).min(10) as i32;
        let out = sqs
            .receive_message()
            .queue_url(&source.queue_url)
            .max_number_of_messages(want)
            .wait_time_seconds(wait)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await?;
        let got = out.messages.unwrap_or_default();
        let got_none = got.is_empty();
        batch.extend(got);
        if batch.is_empty() {
            return Ok(batch);
        }
        let closes = *window_closes.get_or_insert_with(|| Instant::now() + source.batching_window);
        let now = Instant::now();
        if batch.len() >= source.batch_size || now >= closes {
            return Ok(batch);
        }
        if got_none && wait == 0 {
            tokio::time::sleep(LAST_SECOND_LOOK.min(closes - now)).await;
        }
    }
}

fn to_event(source: &SqsSource, region: &str, batch: &[Message]) -> SqsEvent {
    let records = batch
        .iter()
        .map(|m| {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id.clone();
            r.receipt_handle = m.receipt_handle.clone();
            r.body = m.body.clone();
            r.md5_of_body = m.md5_of_body.clone();
            r.md5_of_message_attributes = m.md5_of_message_attributes.clone();
            r.attributes = m.attributes.iter().flatten().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect::<HashMap<_, _>>();
            r.message_attributes = m.message_attributes.iter().flatten().map(|(k, v)| (k.clone(), lambda_attribute(v))).collect();
            r.event_source = Some("aws:sqs".into());
            r.event_source_arn = Some(source.queue_arn.clone());
            r.aws_region = Some(region.to_owned());
            r
        })
        .collect();
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

/// A message attribute as Lambda's SQS event carries it (`stringValue`,
/// `binaryValue` in base64, the lists, `dataType`).
fn lambda_attribute(value: &MessageAttributeValue) -> SqsMessageAttribute {
    let mut attribute = SqsMessageAttribute::default();
    attribute.string_value = value.string_value().map(str::to_owned);
    attribute.binary_value = value.binary_value().map(|b| base64_data(b.as_ref()));
    attribute.string_list_values = value.string_list_values().to_vec();
    attribute.binary_list_values = value.binary_list_values().iter().map(|b| base64_data(b.as_ref())).collect();
    attribute.data_type = Some(value.data_type().to_owned());
    attribute
}

/// The event type's bytes (built from its default: the type is `non_exhaustive`).
fn base64_data(bytes: &[u8]) -> Base64Data {
    let mut data = Base64Data::default();
    data.extend_from_slice(bytes);
    data
}

async fn deliver(source: &SqsSource, function: &FunctionHandle, sqs: &aws_sdk_sqs::Client, region: &str, batch: Vec<Message>) {
    let event = to_event(source, region, &batch);
    let payload = match serde_json::to_vec(&event) {
        Ok(p) => Bytes::from(p),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise SQS event");
            return;
        }
    };
    let keep: HashSet<String> = match function.invoke(payload).await {
        Err(InvokeError::ShuttingDown) => {
            // Nothing of it ran: back to the queue at once for the next start.
            release(source, sqs, &batch).await;
            return;
        }
        Err(e) => {
            // Lambda deletes nothing when an invocation fails.
            tracing::warn!(function = %function.name, error = %e, messages = batch.len(), "invocation failed; batch returns after its visibility timeout");
            return;
        }
        Ok(body) if source.report_batch_item_failures => match failed_ids(&body, &batch) {
            Some(ids) => ids,
            None => {
                tracing::warn!(function = %function.name, "invalid batch response; treating the whole batch as failed");
                return;
            }
        },
        Ok(_) => HashSet::new(),
    };
    let entries: Vec<DeleteMessageBatchRequestEntry> = batch
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.message_id.as_ref().is_some_and(|id| keep.contains(id)))
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder().id(i.to_string()).set_receipt_handle(m.receipt_handle.clone()).build().ok()
        })
        .collect();
    if entries.is_empty() {
        return;
    }
    match sqs.delete_message_batch().queue_url(&source.queue_url).set_entries(Some(entries)).send().await {
        Ok(out) if !out.failed.is_empty() => {
            tracing::warn!(failed = out.failed.len(), "some deletes failed; those messages will be redelivered")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "delete failed; the batch will be redelivered"),
    }
}

/// Makes `batch` visible again now instead of after its visibility timeout.
async fn release(source: &SqsSource, sqs: &aws_sdk_sqs::Client, batch: &[Message]) {
    let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .set_receipt_handle(m.receipt_handle.clone())
                .visibility_timeout(0)
                .build()
                .ok()
        })
        .collect();
    match sqs.change_message_visibility_batch().queue_url(&source.queue_url).set_entries(Some(entries)).send().await {
        Ok(out) if !out.failed.is_empty() => {
            tracing::warn!(failed = out.failed.len(), "some released messages return only after their visibility timeout")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "a released batch returns only after its visibility timeout"),
    }
}

/// The message ids the function reported as failed; `None` when the response
/// is malformed or names a message not in the batch (Lambda then fails the whole batch).
fn failed_ids(body: &[u8], batch: &[Message]) -> Option<HashSet<String>> {
    if body.is_empty() || body == b"null" {
        return Some(HashSet::new());
    }
    let response: SqsBatchResponse = serde_json::from_slice(body).ok()?;
    let in_batch: HashSet<&str> = batch.iter().filter_map(|m| m.message_id.as_deref()).collect();
    response.batch_item_failures.into_iter().map(|f| in_batch.contains(f.item_identifier.as_str()).then_some(f.item_identifier)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> Message {
        Message::builder().message_id(id).receipt_handle(format!("rh-{id}")).body("{}").build()
    }

    #[test]
    fn message_attributes_reach_the_function_in_lambdas_shape() {
        let text = MessageAttributeValue::builder().data_type("String").string_value("watched").build().expect("attribute");
        let bytes = MessageAttributeValue::builder()
            .data_type("Binary")
            .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![1, 2]))
            .build()
            .expect("attribute");
        let message =
            Message::builder().message_id("a").body("{}").message_attributes("kind", text).message_attributes("raw", bytes).build();
        let source = SqsSource {
            mapping_id: "m".into(),
            enabled: true,
            queue_url: "http://q".into(),
            queue_arn: "arn:aws:sqs:us-east-1:000000000000:q".into(),
            batch_size: 10,
            batching_window: Duration::ZERO,
            report_batch_item_failures: true,
            max_concurrency: None,
        };
        let event = serde_json::to_value(to_event(&source, "us-east-1", &[message])).expect("JSON");
        let attributes = &event["Records"][0]["messageAttributes"];
        assert_eq!(
            (&attributes["kind"]["stringValue"], &attributes["kind"]["dataType"]),
            (&"watched".into(), &"String".into()),
            "{attributes}"
        );
        assert_eq!((&attributes["raw"]["binaryValue"], &attributes["raw"]["dataType"]), (&"AQI=".into(), &"Binary".into()), "{attributes}");
    }

    #[test]
    fn reads_partial_batch_failures_like_lambda() {
        let batch = [msg("a"), msg("b")];
        let ok = br#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#;
        assert_eq!(failed_ids(ok, &batch), Some(HashSet::from(["b".to_owned()])));
        assert_eq!(failed_ids(br#"{"batchItemFailures":[]}"#, &batch), Some(HashSet::new()));
        assert_eq!(failed_ids(br#"{"batchItemFailures":[{"itemIdentifier":"zzz"}]}"#, &batch), None);
        assert_eq!(failed_ids(b"not json", &batch), None);
    }
}
