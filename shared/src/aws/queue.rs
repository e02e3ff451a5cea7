use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;

use super::boxed;
use crate::ports::Queue;
use crate::ports::error::QueueError;

#[derive(Debug)]
pub struct SqsQueue {
    client: super::LazyClient<Client>,
    /// Queue URLs by ARN: event records name their queue by ARN, but
    /// `ChangeMessageVisibility` wants the URL. Looked up once per queue.
    urls: Mutex<HashMap<String, String>>,
}

impl SqsQueue {
    pub fn new(client: super::LazyClient<Client>) -> Self {
        Self { client, urls: Mutex::default() }
    }

    fn client(&self) -> &Client {
        self.client.get()
    }

    async fn url_of(&self, arn: &str) -> Result<String, QueueError> {
        if let Some(url) = self.urls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(arn) {
            return Ok(url.clone());
        }
        // arn:aws:sqs:{region}:{account}:{name}
        let parts: Vec<&str> = arn.split(':').collect();
        let [_, _, "sqs", _, account, name] = parts[..] else {
            return Err(QueueError::BadArn(arn.to_owned()));
        };
        let out = self
            .client()
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(boxed(e)))?;
        let url = out.queue_url.ok_or_else(|| QueueError::BadArn(arn.to_owned()))?;
        self.urls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(arn.to_owned(), url.clone());
        Ok(url)
    }
}

/// What one `SendMessageBatch` takes: ten messages of 256 KiB together.
const BATCH_MESSAGES: usize = 10;
const BATCH_BYTES: usize = 256 * 1024;

/// `bodies` cut, in order, into runs that each fit one `SendMessageBatch`
/// (a body over the byte limit goes alone, to be refused by itself).
fn batches_within_limits(bodies: &[String]) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, body) in bodies.iter().enumerate() {
        if i > start && (i - start == BATCH_MESSAGES || bytes + body.len() > BATCH_BYTES) {
            batches.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        batches.push(start..bodies.len());
    }
    batches
}

impl SqsQueue {
    /// One `SendMessageBatch` of up to ten `bodies`; an answer per body.
    async fn send_one_batch(&self, queue_url: &str, bodies: &[String]) -> Vec<Result<(), QueueError>> {
        let entries = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(body).build());
        let entries = match entries.collect::<Result<Vec<_>, _>>() {
            Ok(entries) => entries,
            Err(e) => return each_failed(bodies.len(), e),
        };
        let out = match self.client().send_message_batch().queue_url(queue_url).set_entries(Some(entries)).send().await {
            Ok(out) => out,
            Err(e) => return each_failed(bodies.len(), e),
        };
        // Sent only where the answer says so: an entry it does not name
        // (it always names each) is not taken as sent.
        let mut answers: Vec<Result<(), QueueError>> =
            bodies.iter().map(|_| Err(QueueError::Unavailable("SendMessageBatch did not answer for this message".into()))).collect();
        for sent in out.successful {
            if let Some(answer) = sent.id.parse::<usize>().ok().and_then(|i| answers.get_mut(i)) {
                *answer = Ok(());
            }
        }
        for failed in out.failed {
            if let Some(answer) = failed.id.parse::<usize>().ok().and_then(|i| answers.get_mut(i)) {
                *answer = Err(QueueError::Refused {
                    code: failed.code,
                    message: failed.message.unwrap_or_default(),
                    sender_fault: failed.sender_fault,
                });
            }
        }
        answers
    }
}

/// The same error, `count` times: the answer of each message a failed request carried.
fn each_failed<E: std::error::Error + Send + Sync + 'static>(count: usize, error: E) -> Vec<Result<(), QueueError>> {
    let error = std::sync::Arc::new(error);
    (0..count).map(|_| Err(QueueError::Unavailable(Box::new(SharedError(error.clone()))))).collect()
}

/// One request's error, answered to each message the request carried.
#[derive(Debug)]
struct SharedError<E>(std::sync::Arc<E>);

impl<E: std::fmt::Display> std::fmt::Display for SharedError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for SharedError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_after(&self, queue_url: &str, body: String, delay: Duration) -> Result<(), QueueError> {
        let mut request = self.client().send_message().queue_url(queue_url).message_body(body);
        if !delay.is_zero() {
            // SQS takes whole seconds up to 900; a part second rounds up so the wait is never shorter.
            request = request.delay_seconds(delay.as_secs_f64().ceil().min(900.0) as i32);
        }
        request.send().await.map_err(|e| QueueError::Unavailable(boxed(e)))?;
        Ok(())
    }

    async fn send_batch(&self, queue_url: &str, bodies: Vec<String>) -> Vec<Result<(), QueueError>> {
        if let [_] = &bodies[..] {
            let body = bodies.into_iter().next().unwrap_or_default();
            return vec![self.send(queue_url, body).await];
        }
        let requests = batches_within_limits(&bodies);
        let answers = futures::future::join_all(requests.iter().map(|range| self.send_one_batch(queue_url, &bodies[range.clone()]))).await;
        answers.into_iter().flatten().collect()
    }

    async fn send_again(&self, queue_arn: &str, body: String, delay: Duration) -> Result<(), QueueError> {
        let url = self.url_of(queue_arn).await?;
        self.send_after(&url, body, delay).await
    }

    async fn retry_later(&self, queue_arn: &str, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        let url = self.url_of(queue_arn).await?;
        self.client()
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(delay.as_secs()).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(boxed(e)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_ten_messages_or_256_kib_and_keep_their_order() {
        let small: Vec<String> = (0..23).map(|i| i.to_string()).collect();
        assert_eq!(batches_within_limits(&small), [0..10, 10..20, 20..23]);
        let big = |kib: usize| "x".repeat(kib * 1024);
        assert_eq!(batches_within_limits(&[big(100), big(100), big(100), big(10)]), [0..2, 2..4]);
        assert_eq!(batches_within_limits(&[big(300), big(1)]), [0..1, 1..2], "one over the limit goes alone");
        assert!(batches_within_limits(&[]).is_empty());
    }
}
