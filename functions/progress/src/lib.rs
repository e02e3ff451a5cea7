//! progress: pushes job events to the WebSocket connections subscribed to
//! their jobs. Events arrive from the job-events SNS topic through an SQS
//! queue; a batch is grouped by job so a burst of one job's events becomes
//! one claim and a few messages per subscription (see
//! [`prism_shared::app::realtime`] for claim-then-send and coalescing).

use std::collections::BTreeMap;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use prism_shared::app::realtime::Delivery;
use prism_shared::app::sqs_batch::{self, Backoff};
use prism_shared::domain::envelope::{self, JobEventEnvelope};
use prism_shared::{JobEvent, JobId, Retryable};
use tracing::Instrument;

/// progress needs no settings of its own.
pub type Deps = prism_shared::ports::RealtimeDeps<()>;

/// Jobs fanned out at once within one batch.
const JOB_CONCURRENCY: usize = 8;
/// A failed push is retried soon: a progress update is only useful while fresh.
const BACKOFF: Backoff = Backoff { base: std::time::Duration::from_secs(1), max: std::time::Duration::from_secs(30) };

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let mut by_job: BTreeMap<JobId, Vec<(SqsMessage, JobEventEnvelope)>> = BTreeMap::new();
    for msg in event.records {
        match envelope::decode::<JobEvent>(msg.body.as_deref().unwrap_or_default()) {
            Ok(env) if env.job_id.is_some() && env.seq.is_some() => {
                let job_id = env.job_id.clone().unwrap_or_else(|| unreachable!("checked above"));
                by_job.entry(job_id).or_default().push((msg, env));
            }
            // Never deliverable: retried into the DLQ, where operators look.
            Ok(_) => fail(&mut response, deps, msg, "job event without job_id or seq").await,
            Err(e) => fail(&mut response, deps, msg, &e.to_string()).await,
        }
    }
    let delivery = Delivery { jobs: deps.jobs.as_ref(), connections: deps.connections.as_ref(), notifier: deps.notifier.as_ref() };
    let outcomes: Vec<_> = futures::stream::iter(by_job)
        .map(|(job_id, messages)| async move {
            // How old the job's oldest event was when this batch brought it:
            // the delivery path's lag before the fan-out's own time.
            let received_age_ms = envelope::oldest_age_ms(messages.iter().map(|(_, env)| env.timestamp));
            let span = tracing::info_span!("job", job_id = %job_id, messages = messages.len(), received_age_ms);
            let mut events: Vec<JobEventEnvelope> = messages.iter().map(|(_, env)| env.clone()).collect();
            events.sort_by_key(|e| e.seq);
            events.dedup_by_key(|e| e.seq);
            let result = delivery.fan_out(&job_id, &events).instrument(span.clone()).await;
            (span, messages, result)
        })
        .buffer_unordered(JOB_CONCURRENCY)
        .collect()
        .await;
    for (span, messages, result) in outcomes {
        match result {
            Ok(out) => tracing::info!(parent: &span, pushed = out.messages, gone = out.gone, "fanned out"),
            Err(e) if e.is_retryable() => {
                tracing::warn!(parent: &span, error = %e, error_chain = ?e, "fan-out failed; the job's messages will be retried");
                for (msg, _) in messages {
                    retry(&mut response, deps, msg).await;
                }
            }
            Err(e) => {
                // Corrupt items or a message the gateway refuses: retrying cannot help.
                tracing::error!(parent: &span, error = %e, error_chain = ?e, "fan-out failed permanently");
            }
        }
    }
    response
}

/// A message that is not a job event never will be: it heads for the DLQ without waiting.
async fn fail(response: &mut SqsBatchResponse, deps: &Deps, msg: SqsMessage, reason: &str) {
    tracing::error!(message_id = msg.message_id.as_deref().unwrap_or_default(), reason, "message is not a job event");
    put_back(response, deps, msg, Backoff::NONE).await;
}

async fn retry(response: &mut SqsBatchResponse, deps: &Deps, msg: SqsMessage) {
    put_back(response, deps, msg, BACKOFF).await;
}

async fn put_back(response: &mut SqsBatchResponse, deps: &Deps, msg: SqsMessage, backoff: Backoff) {
    let attempt = sqs_batch::receive_count(&msg);
    let id = msg.message_id.unwrap_or_default();
    sqs_batch::retry_later(response, deps.queue.as_ref(), backoff, id, attempt, msg.event_source_arn, msg.receipt_handle).await;
}
