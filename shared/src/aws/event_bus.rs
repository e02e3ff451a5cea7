//! The event bus on an SNS topic, published in batches of ten (`PublishBatch`).
//! Messages carry `event_type` and `job_id` attributes (and `watched`, `run_id`
//! and `step` where they apply) so subscriptions can filter without reading
//! bodies.

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use futures::StreamExt;

use super::boxed;
use crate::ports::error::PublishError;
use crate::ports::{EventBus, Publication};

/// SNS's limit of entries per `PublishBatch`.
const MAX_BATCH: usize = 10;
/// `PublishBatch` requests in flight at once: a stream batch of 100 events in one round trip.
const BATCHES_AT_ONCE: usize = 10;

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

impl SnsEventBus {
    /// Publishes one `PublishBatch` of events that start at `offset` in the
    /// caller's list; a failure counts from there.
    async fn publish_batch(&self, offset: usize, chunk: &[Publication]) -> Result<(), PublishError> {
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
        let Some((index, entry)) =
            out.failed.iter().flatten().filter_map(|f| f.id.parse::<usize>().ok().map(|i| (i, f))).min_by_key(|(i, _)| *i)
        else {
            return Ok(());
        };
        let reason = format!("{}: {}", entry.code, entry.message.as_deref().unwrap_or_default());
        let published = offset + index;
        Err(if entry.sender_fault {
            PublishError::Refused { published, reason }
        } else {
            PublishError::Unavailable { published, source: reason.into() }
        })
    }
}

#[async_trait]
impl EventBus for SnsEventBus {
    /// The batches go out at once: a standard topic keeps no order between
    /// messages anyway, and consumers order a job's events by `seq`. Sent one
    /// after another, the hundred events of a stream batch took ten round
    /// trips. The first failure in the events' order is the one reported, so
    /// every event before it went out; batches after it may have gone out too
    /// and go out again on the retry, which consumers dedupe by `(job_id, seq)`.
    async fn publish(&self, events: &[Publication]) -> Result<(), PublishError> {
        // Built before they are streamed: a closure in the stream would need
        // to be general over lifetimes that `async_trait` cannot name.
        let batches: Vec<_> = events.chunks(MAX_BATCH).enumerate().map(|(i, chunk)| self.publish_batch(i * MAX_BATCH, chunk)).collect();
        let outcomes: Vec<Result<(), PublishError>> = futures::stream::iter(batches).buffered(BATCHES_AT_ONCE).collect().await;
        outcomes.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use aws_sdk_sns::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_runtime_api::shared::IntoShared;
    use aws_smithy_types::body::SdkBody;

    use super::*;
    use crate::{JobEvent, JobEventEnvelope, JobId};

    /// Events whose bodies name their place in the list (`phase-<i>-`).
    fn events(count: usize) -> Vec<Publication> {
        (0..count)
            .map(|i| {
                let started = JobEvent::Started { phase: format!("phase-{i}-") };
                Publication {
                    event: JobEventEnvelope::new("test", "trace", Some(JobId::new_random()), Some(i as u64 + 1), started),
                    watched: false,
                }
            })
            .collect()
    }

    /// What the fake topic saw.
    #[derive(Debug, Default)]
    struct Seen {
        /// The first event of every `PublishBatch`.
        firsts: Vec<usize>,
        in_flight: usize,
        most_in_flight: usize,
    }

    /// A topic that answers each `PublishBatch` after a moment, failing the
    /// entry that carries `fail_event`.
    #[derive(Debug, Clone)]
    struct FakeTopic {
        fail_event: Option<usize>,
        seen: Arc<Mutex<Seen>>,
    }

    impl HttpConnector for FakeTopic {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let body = String::from_utf8_lossy(request.body().bytes().unwrap_or_default()).into_owned();
            let in_batch: Vec<usize> = (0..100).filter(|i| body.contains(&format!("phase-{i}-"))).collect();
            let failed = self.fail_event.and_then(|e| in_batch.iter().position(|i| *i == e)).map_or(String::new(), |id| {
                format!("<member><Id>{id}</Id><Code>InternalError</Code><Message>down</Message><SenderFault>false</SenderFault></member>")
            });
            let xml = format!(
                "<PublishBatchResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><PublishBatchResult><Successful/><Failed>{failed}</Failed></PublishBatchResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></PublishBatchResponse>"
            );
            let seen = Arc::clone(&self.seen);
            HttpConnectorFuture::new(async move {
                {
                    let mut seen = seen.lock().expect("lock");
                    seen.firsts.push(in_batch.first().copied().unwrap_or(usize::MAX));
                    seen.in_flight += 1;
                    seen.most_in_flight = seen.most_in_flight.max(seen.in_flight);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                seen.lock().expect("lock").in_flight -= 1;
                Ok(HttpResponse::new(200.try_into().expect("status"), SdkBody::from(xml)))
            })
        }
    }

    impl HttpClient for FakeTopic {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            self.clone().into_shared()
        }
    }

    fn topic(fail_event: Option<usize>) -> (SnsEventBus, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let config = aws_sdk_sns::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .http_client(FakeTopic { fail_event, seen: Arc::clone(&seen) })
            .build();
        (SnsEventBus::new(Client::from_conf(config), "arn:aws:sns:us-east-1:000000000000:events"), seen)
    }

    #[tokio::test]
    async fn the_batches_of_ten_go_out_at_once() {
        let (bus, seen) = topic(None);
        bus.publish(&events(25)).await.expect("published");
        let seen = seen.lock().expect("lock");
        let mut firsts = seen.firsts.clone();
        firsts.sort_unstable();
        assert_eq!(firsts, vec![0, 10, 20]);
        assert_eq!(seen.most_in_flight, 3);
    }

    #[tokio::test]
    async fn a_failure_in_the_second_batch_is_reported_at_its_event_though_the_third_went_out() {
        let (bus, seen) = topic(Some(13));
        let error = bus.publish(&events(25)).await.expect_err("event 13 failed");
        assert!(matches!(error, PublishError::Unavailable { published: 13, .. }), "{error:?}");
        assert!(seen.lock().expect("lock").firsts.contains(&20), "the third batch was sent too");
    }
}
