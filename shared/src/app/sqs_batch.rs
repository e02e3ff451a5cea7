//! Running a handler over an SQS batch the way every Prism consumer does:
//! one tracing span per message, failures reported as `batchItemFailures`
//! (ReportBatchItemFailures). The two kinds of failure part ways: a retryable
//! one (the store, S3 or SQS unavailable) is put back with exponential backoff,
//! so it is tried again later and lands in its DLQ after `maxReceiveCount`,
//! never in a hot loop; a permanent one (a body that is not what the queue
//! carries, a stored item that does not decode) cannot succeed by waiting, so
//! it is made visible again at once and spends its receives straight into
//! the DLQ, where `dead-letter` ends its job and operators look.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt as _;
use tracing::Instrument;

use crate::app::budget::Budget;
pub use crate::app::outbox::Outbox;
use crate::ports::Queue;
use crate::ports::error::Retryable;

/// Why a message handler could not finish a message: permanent (see
/// [`Retryable`]) or passing; [`process_batch`] treats the two differently.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("message body is not what this queue carries: {0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] crate::ports::error::StoreError),
    #[error(transparent)]
    Lifecycle(#[from] crate::app::lifecycle::LifecycleError),
    #[error(transparent)]
    Blob(#[from] crate::ports::error::BlobError),
    #[error(transparent)]
    Queue(#[from] crate::ports::error::QueueError),
    /// The work stopped before it finished for a reason outside the job
    /// (the runtime shutting down): the message comes back.
    #[error("the work was interrupted: {0}")]
    Interrupted(String),
    /// A dependency the work needs could not be used (a tool that will not
    /// start): not the input's fault, so retried.
    #[error("{dependency} is unavailable: {reason}")]
    Unavailable { dependency: crate::domain::breakers::Dependency, reason: String },
}

impl HandlerError {
    /// The dependency whose failure this is, for its circuit breaker.
    pub fn dependency(&self) -> Option<crate::domain::breakers::Dependency> {
        match self {
            Self::Blob(e) if e.is_retryable() => Some(crate::domain::breakers::Dependency::S3),
            Self::Unavailable { dependency, .. } => Some(*dependency),
            _ => None,
        }
    }
}

impl From<crate::domain::envelope::EnvelopeError> for HandlerError {
    fn from(e: crate::domain::envelope::EnvelopeError) -> Self {
        Self::Malformed(e.to_string())
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        Self::Malformed(e.to_string())
    }
}

impl Retryable for HandlerError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Malformed(_) => false,
            Self::Store(e) => e.is_retryable(),
            Self::Lifecycle(e) => e.is_retryable(),
            Self::Blob(e) => e.is_retryable(),
            Self::Queue(e) => e.is_retryable(),
            Self::Interrupted(_) | Self::Unavailable { .. } => true,
        }
    }
}

/// Backoff between attempts of a failed message.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(2), max: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// No wait at all: for messages that fail whatever the time.
    pub const NONE: Self = Self { base: Duration::ZERO, max: Duration::ZERO };

    /// `base * 2^(attempt-1)`, capped, plus up to 25 % jitter so a burst of
    /// failures does not come back all at once.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(self.max);
        let jitter_permille = RandomState::new().hash_one(attempt) % 250;
        exp + exp * jitter_permille as u32 / 1000
    }
}

/// How many times SQS has delivered this message, including this time.
pub fn receive_count(msg: &SqsMessage) -> u32 {
    msg.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// How many of a batch's messages a stage handles at once.
///
/// Messages in a batch are independent (a job each, handled idempotently), so
/// stages whose work is waiting on AWS (intake, classify) take the batch
/// [`All`](Self::All): a batch of ten then costs about one message's round
/// trips instead of ten in a row, which made classify the pipeline's
/// narrowest stage under load. Processors hold their input in memory, and
/// their `MemorySize` is sized for one input at its limit: they take theirs
/// [`InTurn`](Self::InTurn), or as many as fit [`WithinBytes`](Self::WithinBytes)
/// where memory follows the input's size (text) or is bounded again inside
/// (images: their decodes share a budget of pixels). The workflow
/// (a run's step results, joined on one item, would only conflict) and
/// dead-letter (rare) go in turn.
#[derive(Debug, Clone, Copy)]
pub enum AtOnce {
    InTurn,
    All,
    /// Messages whose sizes (`size_of`, from the message) add up to at most
    /// `budget` bytes; one larger than that runs alone.
    WithinBytes {
        budget: u64,
        size_of: fn(&SqsMessage) -> u64,
    },
}

/// Runs `handler` on the batch's messages, as many at once as `at_once`
/// says, and reports the ones that failed.
pub async fn process_batch<F, Fut, E>(event: SqsEvent, queue: &dyn Queue, backoff: Backoff, at_once: AtOnce, handler: F) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Retryable,
{
    process_batch_sending(event, &Outbox::new(queue), backoff, at_once, handler).await
}

/// [`process_batch`] for handlers that end by sending a message: what they
/// send through `outbox` (made for this batch) goes in as few
/// `SendMessageBatch`es as the batch allows (see [`crate::app::outbox`]).
pub async fn process_batch_sending<F, Fut, E>(
    event: SqsEvent,
    outbox: &Outbox<'_>,
    backoff: Backoff,
    at_once: AtOnce,
    handler: F,
) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Retryable,
{
    let handler = &handler;
    let queue = outbox.queue();
    // Every message of a batch taken all at once runs from the start, so all
    // are counted now: the first handler to reach its send waits for the
    // others even when it gets there before they are first polled. Otherwise
    // a message counts once it starts (one waiting for its budget share
    // cannot send, and must not be waited for).
    let counted_up_front = matches!(at_once, AtOnce::All);
    if counted_up_front {
        outbox.started(event.records.len());
    }
    let budget = match at_once {
        AtOnce::WithinBytes { budget, size_of } => Some((Budget::new(budget), size_of)),
        AtOnce::InTurn | AtOnce::All => None,
    };
    let budget = budget.as_ref();
    let outcomes: Vec<_> = futures::stream::iter(event.records)
        .map(|msg| async move {
            let _share = match budget {
                Some((budget, size_of)) => Some(budget.take(size_of(&msg)).await),
                None => None,
            };
            let message_id = msg.message_id.clone().unwrap_or_default();
            let attempt = receive_count(&msg);
            let span = tracing::info_span!("message", message_id = %message_id, attempt);
            let (arn, receipt) = (msg.event_source_arn.clone(), msg.receipt_handle.clone());
            if !counted_up_front {
                outbox.started(1);
            }
            let result = handler(msg).instrument(span.clone()).await;
            outbox.finished().instrument(span.clone()).await;
            (message_id, attempt, arn, receipt, span, result)
        })
        .buffer_unordered(if matches!(at_once, AtOnce::InTurn) { 1 } else { usize::MAX })
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    for (message_id, attempt, arn, receipt, span, result) in outcomes {
        let Err(error) = result else { continue };
        if error.is_retryable() {
            tracing::warn!(parent: &span, error = %error, error_chain = ?error, "message failed; retrying after a backoff");
            retry_later(&mut response, queue, backoff, message_id, attempt, arn, receipt).await;
        } else {
            tracing::error!(parent: &span, error = %error, error_chain = ?error, "message failed permanently; on its way to the DLQ");
            retry_later(&mut response, queue, Backoff::NONE, message_id, attempt, arn, receipt).await;
        }
    }
    response
}

/// Reports a message as failed and puts it back with its backoff delay.
pub async fn retry_later(
    response: &mut SqsBatchResponse,
    queue: &dyn Queue,
    backoff: Backoff,
    message_id: String,
    attempt: u32,
    queue_arn: Option<String>,
    receipt_handle: Option<String>,
) {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = message_id;
    response.batch_item_failures.push(failure);
    if let (Some(arn), Some(receipt)) = (queue_arn, receipt_handle)
        && let Err(e) = queue.retry_later(&arn, &receipt, backoff.delay(attempt)).await
    {
        // Not fatal: the message still returns after the queue's visibility timeout.
        tracing::warn!(error = %e, "could not set backoff visibility");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::memory::MemoryQueue;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom {
        retryable: bool,
    }
    impl Retryable for Boom {
        fn is_retryable(&self) -> bool {
            self.retryable
        }
    }

    fn message(id: &str, body: &str, receive_count: u32) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(body.into());
        m.receipt_handle = Some(format!("rh-{id}"));
        m.event_source_arn = Some("arn:aws:sqs:us-east-1:000000000000:q".into());
        m.attributes.insert("ApproximateReceiveCount".into(), receive_count.to_string());
        m
    }

    #[tokio::test]
    async fn reports_only_failed_messages_and_backs_them_off() {
        let mut event = SqsEvent::default();
        event.records = vec![message("a", "ok", 1), message("b", "bad", 3), message("c", "ok", 1)];
        let queue = MemoryQueue::default();
        let resp = process_batch(event, &queue, Backoff::default(), AtOnce::All, |m| async move {
            if m.body.as_deref() == Some("bad") { Err(Boom { retryable: true }) } else { Ok(()) }
        })
        .await;
        let failed: Vec<_> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(failed, ["b"]);
        let retries = queue.retries();
        assert_eq!(retries.len(), 1);
        assert_eq!(retries[0].0, "rh-b");
        assert!(retries[0].1 >= Duration::from_secs(8) && retries[0].1 <= Duration::from_secs(10));
    }

    #[tokio::test]
    async fn permanent_failures_skip_the_backoff_and_head_for_the_dlq() {
        let mut event = SqsEvent::default();
        event.records = vec![message("passing", "unavailable", 1), message("poison", "garbage", 1)];
        let queue = MemoryQueue::default();
        let resp = process_batch(event, &queue, Backoff::default(), AtOnce::InTurn, |m| async move {
            Err::<(), _>(Boom { retryable: m.body.as_deref() == Some("unavailable") })
        })
        .await;
        let failed: Vec<_> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(failed, ["passing", "poison"], "both stay on the queue (a permanent failure must still reach the DLQ)");
        let retries: std::collections::HashMap<String, Duration> = queue.retries().into_iter().collect();
        assert!(retries["rh-passing"] >= Duration::from_secs(2), "a passing failure waits: {retries:?}");
        assert_eq!(retries["rh-poison"], Duration::ZERO, "a permanent one does not");
    }

    /// The most bytes (the messages' bodies, read as numbers) in flight at
    /// once while `at_once` runs five messages of `sizes`.
    async fn most_in_flight(at_once: AtOnce, sizes: &[u64]) -> (usize, u64) {
        use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
        let mut event = SqsEvent::default();
        event.records = sizes.iter().enumerate().map(|(i, size)| message(&i.to_string(), &size.to_string(), 1)).collect();
        let (messages, bytes) = (AtomicUsize::new(0), AtomicU64::new(0));
        let (most_messages, most_bytes) = (AtomicUsize::new(0), AtomicU64::new(0));
        let (messages, bytes, most_messages, most_bytes) = (&messages, &bytes, &most_messages, &most_bytes);
        let resp = process_batch(event, &MemoryQueue::default(), Backoff::default(), at_once, |m| async move {
            let size: u64 = m.body.as_deref().unwrap_or_default().parse().unwrap_or_default();
            most_messages.fetch_max(messages.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            most_bytes.fetch_max(bytes.fetch_add(size, Ordering::SeqCst) + size, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            messages.fetch_sub(1, Ordering::SeqCst);
            bytes.fetch_sub(size, Ordering::SeqCst);
            Ok::<(), Boom>(())
        })
        .await;
        assert!(resp.batch_item_failures.is_empty());
        (most_messages.load(Ordering::SeqCst), most_bytes.load(Ordering::SeqCst))
    }

    fn body_size(m: &SqsMessage) -> u64 {
        m.body.as_deref().unwrap_or_default().parse().unwrap_or(u64::MAX)
    }

    #[tokio::test]
    async fn takes_messages_in_turn_all_at_once_or_as_many_as_fit_the_byte_budget() {
        let small = [100; 5];
        assert_eq!(most_in_flight(AtOnce::InTurn, &small).await.0, 1);
        assert_eq!(most_in_flight(AtOnce::All, &small).await.0, 5);
        let within = AtOnce::WithinBytes { budget: 1000, size_of: body_size };
        assert_eq!(most_in_flight(within, &small).await, (5, 500), "small ones all fit");
        assert_eq!(most_in_flight(within, &[400; 5]).await, (2, 800), "two of 400 fit in 1000, three do not");
        assert_eq!(most_in_flight(within, &[100, 5000, 100]).await.0, 1, "one past the budget runs alone");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff::default();
        assert!(b.delay(1) >= Duration::from_secs(2) && b.delay(1) < Duration::from_secs(3));
        assert!(b.delay(40) <= Duration::from_secs(375));
    }
}
