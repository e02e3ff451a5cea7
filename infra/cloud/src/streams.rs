//! DynamoDB Streams event-source mappings, as Lambda runs them: one poller
//! per shard reads records in order (`GetRecords`), drops those the mapping's
//! filters do not match, and invokes the function with batches of up to
//! `BatchSize`, reading the next records while a batch runs. A batch is done
//! when the function succeeds; with `ReportBatchItemFailures` the reported
//! sequence number is the checkpoint (everything before it is done, the rest
//! is retried); a failed invocation is retried with backoff and, with
//! `BisectBatchOnFunctionError`, split in halves until the record that fails
//! stands alone. Past
//! `MaximumRetryAttempts` the batch is skipped with an error in the log; with
//! `-1` it is retried for as long as it takes, as on AWS until the record
//! leaves the stream. moto stores the stream; nothing in it invokes anything.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use aws_lambda_events::event::dynamodb::{Event, EventRecord, StreamRecord, StreamViewType};
use aws_lambda_events::streams::DynamoDbEventResponse;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::provision::{StartingPosition, StreamSource};
use crate::runtime::{FunctionHandle, MAX_SYNC_PAYLOAD};

/// How often a shard is read when its reads come back short. Lambda reads
/// each shard four times a second; ten keeps the emulated table's slower
/// round trips from adding a quarter second to every event's way to its
/// subscribers, for ten requests a second that cost moto little (an empty
/// `GetRecords`). A read that fills a page is followed by the next at once.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Pages read ahead of delivery, as Lambda's pollers read while the function
/// runs: the next `GetRecords` overlaps the batch before it.
const READ_AHEAD_PAGES: usize = 2;
/// Records asked for per `GetRecords`.
const READ_LIMIT: i32 = 1000;
/// The longest wait between retries of a failing batch.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Starts one poller per shard of the source's stream.
pub async fn start(
    source: StreamSource,
    function: FunctionHandle,
    client: aws_sdk_dynamodbstreams::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let described = client.describe_stream().stream_arn(&source.stream_arn).send().await?;
    let shards: Vec<String> =
        described.stream_description.and_then(|d| d.shards).unwrap_or_default().into_iter().filter_map(|s| s.shard_id).collect();
    anyhow::ensure!(!shards.is_empty(), "stream {} has no shards", source.stream_arn);
    for shard_id in shards {
        let poller = ShardPoller { source: source.clone(), function: function.clone(), client: client.clone(), shard_id };
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = poller.run() => {}
                () = stop.cancelled() => {}
            }
        });
    }
    Ok(())
}

struct ShardPoller {
    source: StreamSource,
    function: FunctionHandle,
    client: aws_sdk_dynamodbstreams::Client,
    shard_id: String,
}

impl ShardPoller {
    /// Reads the shard and delivers what it read at the same time. Read then
    /// deliver, one after the other, fell behind a table written at 25 jobs/s:
    /// each event waited out a `GetRecords` and an invocation per cycle.
    async fn run(self) {
        let (pages, received) = mpsc::channel(READ_AHEAD_PAGES);
        tokio::join!(self.read(pages), self.deliver_in_order(received));
    }

    /// Reads the shard in order into `pages`, up to `READ_AHEAD_PAGES` ahead.
    /// Records the filters drop are dropped here, counted as processed as on
    /// Lambda, so a batch carries up to `BatchSize` records the function wants.
    async fn read(&self, pages: mpsc::Sender<Vec<EventRecord>>) {
        // The last sequence number read: where a new iterator resumes. Every
        // record up to it was handed on, so nothing is read twice or skipped.
        let mut read_through: Option<String> = None;
        let mut iterator: Option<String> = None;
        let mut failures = 0u32;
        loop {
            let Some(current) = iterator.take() else {
                match self.iterator(read_through.as_deref()).await {
                    Ok(it) => iterator = Some(it),
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(stream = %self.source.stream_arn, error = %e, "GetShardIterator failed");
                        tokio::time::sleep(backoff(failures)).await;
                    }
                }
                continue;
            };
            let started = Instant::now();
            let out = match self.client.get_records().shard_iterator(current).limit(READ_LIMIT).send().await {
                Ok(out) => out,
                Err(e) => {
                    // An expired or unknown iterator: take a new one after what was read.
                    failures += 1;
                    tracing::warn!(stream = %self.source.stream_arn, error = %e, "GetRecords failed");
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            };
            failures = 0;
            iterator = out.next_shard_iterator;
            let records = out.records.unwrap_or_default();
            if let Some(last) = records.last().and_then(|r| r.dynamodb.as_ref()).and_then(|d| d.sequence_number.clone()) {
                read_through = Some(last);
            }
            let page_was_full = records.len() >= READ_LIMIT as usize;
            let page: Vec<EventRecord> =
                records.iter().map(|r| lambda_record(r, &self.source.stream_arn)).filter(|r| self.wanted(r)).collect();
            if !page.is_empty() && pages.send(page).await.is_err() {
                return;
            }
            if !page_was_full {
                tokio::time::sleep_until((started + POLL_INTERVAL).into()).await;
            }
        }
    }

    /// Hands the records read to the function in order, in batches of up to
    /// `BatchSize` gathered for up to the batching window; a batch is done
    /// (or given up) before the next goes.
    async fn deliver_in_order(&self, mut pages: mpsc::Receiver<Vec<EventRecord>>) {
        let mut pending: VecDeque<EventRecord> = VecDeque::new();
        loop {
            if pending.is_empty() {
                let Some(page) = pages.recv().await else { return };
                pending.extend(page);
            }
            let window_closes = tokio::time::Instant::now() + self.source.batching_window;
            while pending.len() < self.source.batch_size {
                match pages.try_recv() {
                    Ok(page) => pending.extend(page),
                    Err(_) if self.source.batching_window.is_zero() => break,
                    Err(_) => match tokio::time::timeout_at(window_closes, pages.recv()).await {
                        Ok(Some(page)) => pending.extend(page),
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            let take = self.batch_len(&pending);
            self.deliver(pending.drain(..take).collect()).await;
        }
    }

    /// How many of the first pending records make the next batch: up to
    /// `BatchSize`, and no more than fit Lambda's 6 MB synchronous payload
    /// (one at least), as Lambda cuts a stream's batches.
    fn batch_len(&self, pending: &VecDeque<EventRecord>) -> usize {
        // `{"Records":[` and `]}`; a comma between records.
        let mut bytes = 14;
        let mut fits = 0;
        for record in pending.iter().take(self.source.batch_size) {
            bytes += serde_json::to_vec(record).map_or(0, |json| json.len()) + usize::from(fits > 0);
            if fits > 0 && bytes > MAX_SYNC_PAYLOAD {
                break;
            }
            fits += 1;
        }
        fits
    }

    async fn iterator(&self, after: Option<&str>) -> Result<String, aws_sdk_dynamodbstreams::Error> {
        let request = self.client.get_shard_iterator().stream_arn(&self.source.stream_arn).shard_id(&self.shard_id);
        let request = match (after, self.source.starting_position) {
            (Some(seq), _) => request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(seq),
            (None, StartingPosition::TrimHorizon) => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            (None, StartingPosition::Latest) => request.shard_iterator_type(ShardIteratorType::Latest),
        };
        Ok(request.send().await?.shard_iterator.unwrap_or_default())
    }

    fn wanted(&self, record: &EventRecord) -> bool {
        if self.source.filters.is_empty() {
            return true;
        }
        let value = serde_json::to_value(record).unwrap_or_default();
        self.source.filters.iter().any(|f| crate::filter::matches(f, &value))
    }

    /// Invokes the function until the batch is done, retried or split as the
    /// mapping says; returns once every record is done or given up.
    async fn deliver(&self, batch: Vec<EventRecord>) {
        let mut work: Vec<(Vec<EventRecord>, u32)> = vec![(batch, 0)];
        while let Some((batch, attempts)) = work.pop() {
            match self.invoke(&batch).await {
                Outcome::Done => {}
                Outcome::RetryFrom(index) => {
                    let rest = batch[index..].to_vec();
                    self.retry(&mut work, rest, attempts + 1, "the function reported a batch item failure").await;
                }
                Outcome::Failed(reason) if self.source.bisect_on_error && batch.len() > 1 => {
                    tracing::warn!(function = %self.function.name, records = batch.len(), %reason, "invocation failed; bisecting the batch");
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    // Popped from the end: the first half goes first, in order.
                    work.push((second, attempts + 1));
                    work.push((first, attempts + 1));
                }
                Outcome::Failed(reason) => self.retry(&mut work, batch, attempts + 1, &reason).await,
            }
        }
    }

    async fn retry(&self, work: &mut Vec<(Vec<EventRecord>, u32)>, batch: Vec<EventRecord>, attempts: u32, reason: &str) {
        if self.source.max_retry_attempts.is_some_and(|max| attempts > max) {
            let first = batch.first().and_then(|r| r.change.sequence_number.clone());
            tracing::error!(function = %self.function.name, records = batch.len(), first_sequence_number = ?first, %reason, "retries exhausted; records skipped");
            return;
        }
        tracing::warn!(function = %self.function.name, records = batch.len(), attempts, %reason, "stream batch failed; retrying");
        tokio::time::sleep(backoff(attempts)).await;
        work.push((batch, attempts));
    }

    async fn invoke(&self, batch: &[EventRecord]) -> Outcome {
        let mut event = Event::default();
        event.records = batch.to_vec();
        let payload = match serde_json::to_vec(&event) {
            Ok(p) => Bytes::from(p),
            Err(e) => return Outcome::Failed(format!("cannot serialise the event: {e}")),
        };
        let body = match self.function.invoke(payload).await {
            Ok(body) => body,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if !self.source.report_batch_item_failures || body.is_empty() || &body[..] == b"null" {
            return Outcome::Done;
        }
        let Ok(response) = serde_json::from_slice::<DynamoDbEventResponse>(&body) else {
            return Outcome::Failed("invalid batch response".into());
        };
        // The lowest reported sequence number is the checkpoint; one not in
        // the batch (or missing) fails the whole batch, as on Lambda.
        let mut first_failed: Option<usize> = None;
        for failure in &response.batch_item_failures {
            let position = failure
                .item_identifier
                .as_deref()
                .and_then(|id| batch.iter().position(|r| r.change.sequence_number.as_deref() == Some(id)));
            match position {
                Some(i) => first_failed = Some(first_failed.map_or(i, |f| f.min(i))),
                None => return Outcome::RetryFrom(0),
            }
        }
        first_failed.map_or(Outcome::Done, Outcome::RetryFrom)
    }
}

enum Outcome {
    Done,
    /// Records before this index are done.
    RetryFrom(usize),
    Failed(String),
}

fn backoff(attempts: u32) -> Duration {
    crate::backoff::before_retry(attempts, Duration::from_millis(100), MAX_BACKOFF)
}

/// A stream record as Lambda hands it to a function.
fn lambda_record(r: &Record, stream_arn: &str) -> EventRecord {
    let mut record = EventRecord::default();
    record.aws_region = r.aws_region.clone().unwrap_or_default();
    record.event_id = r.event_id.clone().unwrap_or_default();
    record.event_name = r.event_name.as_ref().map(|n| n.as_str().to_owned()).unwrap_or_default();
    record.event_source = r.event_source.clone();
    record.event_version = r.event_version.clone();
    record.event_source_arn = Some(stream_arn.to_owned());
    if let Some(d) = &r.dynamodb {
        let mut change = StreamRecord::default();
        change.approximate_creation_date_time = d
            .approximate_creation_date_time
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
            .unwrap_or_else(Utc::now);
        change.keys = d.keys.clone().map(serde_dynamo::Item::from).unwrap_or_default();
        change.new_image = d.new_image.clone().map(serde_dynamo::Item::from).unwrap_or_default();
        change.old_image = d.old_image.clone().map(serde_dynamo::Item::from).unwrap_or_default();
        change.sequence_number = d.sequence_number.clone();
        change.size_bytes = d.size_bytes.unwrap_or_default();
        change.stream_view_type = d.stream_view_type.as_ref().and_then(|v| match v.as_str() {
            "NEW_IMAGE" => Some(StreamViewType::NewImage),
            "OLD_IMAGE" => Some(StreamViewType::OldImage),
            "NEW_AND_OLD_IMAGES" => Some(StreamViewType::NewAndOldImages),
            "KEYS_ONLY" => Some(StreamViewType::KeysOnly),
            _ => None,
        });
        record.change = change;
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn records_reach_the_function_in_lambdas_shape() {
        use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, StreamRecord as SdkStreamRecord};
        let keys = std::collections::HashMap::from([
            ("pk".to_owned(), AttributeValue::S("JOB#1".into())),
            ("sk".to_owned(), AttributeValue::S("EVT#0000000001".into())),
        ]);
        let record = Record::builder()
            .event_id("e1")
            .event_name(OperationType::Insert)
            .event_source("aws:dynamodb")
            .aws_region("us-east-1")
            .dynamodb(
                SdkStreamRecord::builder()
                    .set_keys(Some(keys.clone()))
                    .set_new_image(Some(keys))
                    .sequence_number("11")
                    .size_bytes(20)
                    .build(),
            )
            .build();
        let value = serde_json::to_value(lambda_record(&record, "arn:stream")).expect("json");
        assert_eq!(value["eventName"], "INSERT");
        assert_eq!(value["eventSourceARN"], "arn:stream");
        assert_eq!(value["dynamodb"]["Keys"]["sk"]["S"], "EVT#0000000001");
        assert_eq!(value["dynamodb"]["SequenceNumber"], "11");
        let pattern = serde_json::json!({"eventName": ["INSERT"], "dynamodb": {"Keys": {"sk": {"S": [{"prefix": "EVT#"}]}}}});
        assert!(crate::filter::matches(&pattern, &value));
    }
}
