//! publish: the table's stream, read by a Lambda event source, becomes the
//! job-events topic. Writers only write the log; every `EVT#` item inserted
//! into the table arrives here (the event source's filter drops everything
//! else) and is published in order with `PublishBatch`.
//!
//! Retryable and permanent failures part ways. When the topic is unavailable,
//! the first event that did not go out is reported as the batch item failure:
//! the event source checkpoints before it and retries from there (the
//! template retries until the record would leave the stream), so a stored
//! event is published at least once; consumers dedupe by `(job_id, seq)`. A
//! record that can never be published (an `EVT#` item that does not decode,
//! an event the topic refuses) would block its shard forever under those
//! retries, so it goes to the publish dead-letter queue at once, where
//! operators look, and the batch moves on.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use prism_shared::ports::Publication;
use prism_shared::ports::error::PublishError;
use prism_shared::{ConfigError, JobEventEnvelope, runtime::config};
use tracing::Instrument;

/// The sort key prefix of job events in the table.
pub const EVENT_SK_PREFIX: &str = "EVT#";
/// The attribute of an event stored while its job was watched.
const WATCHED_ATTRIBUTE: &str = "watched";

#[derive(Debug, Clone)]
pub struct Config {
    /// Where records that can never be published go.
    pub dead_letter_queue_url: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { dead_letter_queue_url: config::required("PUBLISH_DLQ_URL")? })
    }
}

pub type Deps = prism_shared::ports::PublishDeps<Config>;

/// Why a stream record is not a job event that can be published.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("stream record has no sequence number")]
    NoSequenceNumber,
    #[error("stored job event {sk} does not decode: {reason}")]
    Undecodable { sk: String, reason: String },
    #[error("event {seq} of job {job_id} refused by the topic: {reason}")]
    Refused { job_id: String, seq: u64, reason: String },
}

/// A record of the batch, read: not a job event (skipped), a job event, or
/// one that can never be published.
enum Read {
    Skip,
    Event(Box<Publication>),
    Poison(RecordError),
}

fn read(record: &EventRecord) -> Read {
    let sk = match record.change.keys.get("sk") {
        Some(v) => serde_dynamo::from_attribute_value::<_, String>(v.clone()).unwrap_or_default(),
        None => String::new(),
    };
    if record.change.sequence_number.is_none() {
        return Read::Poison(RecordError::NoSequenceNumber);
    }
    if record.event_name != "INSERT" || !sk.starts_with(EVENT_SK_PREFIX) {
        // The event source's filter keeps these away; defence in depth.
        return Read::Skip;
    }
    // Stored while the job was watched: for the live fan-out too.
    let watched = record.change.new_image.get(WATCHED_ATTRIBUTE).is_some_and(|v| matches!(v, serde_dynamo::AttributeValue::Bool(true)));
    match serde_dynamo::from_item::<_, JobEventEnvelope>(record.change.new_image.clone()) {
        Ok(event) => Read::Event(Box::new(Publication { event, watched })),
        Err(e) => Read::Poison(RecordError::Undecodable { sk, reason: e.to_string() }),
    }
}

pub async fn handle(deps: &Deps, event: Event) -> DynamoDbEventResponse {
    let span = tracing::info_span!("stream_batch", records = event.records.len());
    publish_batch(deps, event).instrument(span).await
}

/// Publishes the batch's events in order; the response names the first
/// record that must be retried, if any.
async fn publish_batch(deps: &Deps, event: Event) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    let mut pending: Vec<(usize, Publication)> = Vec::new();
    let mut retry_from = None;
    for (index, record) in event.records.iter().enumerate() {
        match read(record) {
            Read::Skip => {}
            Read::Event(e) => pending.push((index, *e)),
            Read::Poison(error) => {
                // Order matters within a job: what came before goes out first.
                if let Err(at) = publish(deps, &mut pending).await {
                    retry_from = Some(at);
                    break;
                }
                if let Err(at) = dead_letter(deps, index, record, &error).await {
                    retry_from = Some(at);
                    break;
                }
            }
        }
    }
    if retry_from.is_none()
        && let Err(at) = publish(deps, &mut pending).await
    {
        retry_from = Some(at);
    }
    if let Some(index) = retry_from {
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = event.records[index].change.sequence_number.clone();
        response.batch_item_failures.push(failure);
    }
    response
}

/// Publishes `pending` and empties it; on a retryable failure, the index of
/// the record to retry from. An event the topic refuses is dead-lettered and
/// publishing goes on after it.
async fn publish(deps: &Deps, pending: &mut Vec<(usize, Publication)>) -> Result<(), usize> {
    while !pending.is_empty() {
        let envelopes: Vec<Publication> = pending.iter().map(|(_, e)| e.clone()).collect();
        match deps.bus.publish(&envelopes).await {
            Ok(()) => {
                // How far behind its writes the stream's publishing runs.
                let oldest_age_ms = prism_shared::domain::envelope::oldest_age_ms(envelopes.iter().map(|p| p.event.timestamp));
                tracing::info!(published = envelopes.len(), oldest_age_ms, "published");
                pending.clear();
            }
            Err(e @ PublishError::Unavailable { .. }) => {
                let (index, _) = pending[e.published()];
                tracing::warn!(published = e.published(), error = %e, error_chain = ?e, "topic unavailable; the stream retries from the first unpublished event");
                return Err(index);
            }
            Err(PublishError::Refused { published, reason }) => {
                let (index, Publication { event: refused, .. }) = pending[published].clone();
                let body = refused.to_json();
                let error = RecordError::Refused {
                    job_id: refused.job_id.map(|j| j.to_string()).unwrap_or_default(),
                    seq: refused.seq.unwrap_or(0),
                    reason,
                };
                tracing::error!(%error, "event refused by the topic; dead-lettered");
                send_dead_letter(deps, index, body).await?;
                pending.drain(..=published);
            }
        }
    }
    Ok(())
}

async fn dead_letter(deps: &Deps, index: usize, record: &EventRecord, error: &RecordError) -> Result<(), usize> {
    tracing::error!(%error, sequence_number = ?record.change.sequence_number, "stream record cannot be published; dead-lettered");
    let body = serde_json::json!({ "error": error.to_string(), "record": record }).to_string();
    send_dead_letter(deps, index, body).await
}

async fn send_dead_letter(deps: &Deps, index: usize, body: String) -> Result<(), usize> {
    deps.queue.send(&deps.config.dead_letter_queue_url, body).await.map_err(|e| {
        tracing::warn!(error = %e, "could not dead-letter the record; the stream retries it");
        index
    })
}
